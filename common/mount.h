// Mounts as plain data, and the one place that turns them into mount calls.
// The snapshotter returns these; the runner and the tests mount them.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace imgtool {

struct Mount {
  std::string type;                  // "overlay", "bind", "tmpfs", ...
  std::string source;                // "overlay", a directory for "bind", ...
  std::vector<std::string> options;  // "lowerdir=a:b", "upperdir=...", "workdir=...", "ro", "rbind"

  friend bool operator==(const Mount&, const Mount&) = default;
};

// OverlayFS refuses more lower layers than this (OVL_MAX_STACK); MountAt says so
// up front instead of passing the kernel's bare EINVAL on.
inline constexpr size_t kMaxOverlayLowerLayers = 500;

// Performs one mount at `target`. Overlay mounts with many lower layers use the
// new mount API (fsconfig "lowerdir+" one layer at a time) where the kernel has
// it, so that no option string reaches the page-size limit, past which the
// kernel would silently drop layers; otherwise short lower paths must fit.
//
// Options: "ro", "rw", "nosuid", "nodev", "noexec", "noatime", "relatime",
// "strictatime", "nodiratime" become mount flags; "bind"/"rbind" make a bind
// mount of `source` (read-only via a remount, recursively via mount_setattr);
// "private", "rslave", ... set propagation afterwards. Everything else goes to
// the filesystem: for "overlay", "lowerdir=A:B" (A is the topmost lower, so
// paths can not contain ':' or ','), "upperdir=", "workdir=", "key=value" and
// bare flags such as "userxattr". Errors name the type and the target.
//
// With an `idmap`, files appear with their owners shifted by the id mapping
// of its user namespace, as for a container in such a namespace: a bind mount
// becomes an idmapped mount, and an overlay is built on idmapped layers
// (overlayfs itself can not be idmapped), which the kernel takes only by file
// descriptor (fsconfig FSCONFIG_SET_FD, Linux >= 6.13 for lower layers). The
// overlay is created with the fs ids of the namespace's root, which overlayfs
// keeps for its own work in the upper dir: the host's root is not mapped
// there. Other types, or a kernel without that, are refused.
struct MountIdmap {
  int userns_fd = -1;
  uid_t root_uid = 0;  // the host ids of the namespace's root
  gid_t root_gid = 0;
};
Status MountAt(const Mount& mount, const std::filesystem::path& target,
               const MountIdmap* idmap = nullptr);

// The filesystem `mount` describes as a detached mount (fsmount) attached
// nowhere, for a caller that moves it elsewhere itself (into a container's
// mount namespace): nothing is mounted, or has to be unmounted, on the host.
// Overlay through the new mount API only; NotFound for other types, kernels
// without "lowerdir+", and propagation options (MountAt does those).
Result<UniqueFd> MountDetached(const Mount& mount);

// The lower layers an overlay `mount` names, topmost first: its "lowerdir=A:B"
// and "lowerdir+=C" options in order. Empty for any other type.
std::vector<std::string> OverlayLowerDirs(const Mount& mount);

// Tests use this to exercise the legacy mount(2) path for overlay, the one
// taken on kernels without "lowerdir+" (before Linux 6.8).
void SetOverlayLegacyMountForTesting(bool force_legacy);

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
                                         const std::filesystem::path& target,
                                         const MountIdmap* idmap = nullptr);

}  // namespace imgtool
