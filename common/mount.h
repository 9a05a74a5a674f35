// Mounts as plain data, and the one place that turns them into mount calls.
// The snapshotter returns these; the runner and the tests mount them.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"

namespace imgtool {

struct Mount {
  std::string type;                  // "overlay", "bind", "tmpfs", ...
  std::string source;                // "overlay", a directory for "bind", ...
  std::vector<std::string> options;  // "lowerdir=a:b", "upperdir=...", "workdir=...", "ro", "rbind"

  friend bool operator==(const Mount&, const Mount&) = default;
};

// Performs one mount at `target`. Overlay mounts with many lower layers use the
// new mount API (fsconfig "lowerdir+" one layer at a time) where the kernel has
// it, so that no option string reaches the page-size limit, past which the
// kernel would silently drop layers; otherwise short lower paths must fit.
Status MountAt(const Mount& mount, const std::filesystem::path& target);

// Unmounts on destruction (lazily, MNT_DETACH) unless Release()d.
class MountGuard {
 public:
  MountGuard() = default;
  explicit MountGuard(std::filesystem::path target) : target_(std::move(target)) {}
  MountGuard(MountGuard&& other) noexcept : target_(std::move(other.target_)) {
    other.target_.clear();
  }
  MountGuard& operator=(MountGuard&& other) noexcept;
  MountGuard(const MountGuard&) = delete;
  MountGuard& operator=(const MountGuard&) = delete;
  ~MountGuard();

  // Unmounts now and reports failure.
  Status Unmount();
  std::filesystem::path Release();
  const std::filesystem::path& target() const { return target_; }

 private:
  std::filesystem::path target_;
};

// Mounts every entry in order at `target` and returns guards that undo them in
// reverse order.
Result<std::vector<MountGuard>> MountAll(const std::vector<Mount>& mounts,
                                         const std::filesystem::path& target);

}  // namespace imgtool
