// A directory removed with its contents when the owner goes away.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/unique_fd.h"

namespace imgtool {

// The owner holds an flock on the directory while it lives, so that a later
// process can tell a directory abandoned by a crash (lock free) from one in
// use (RemoveAbandonedTempDirs).
class TempDir {
 public:
  // Creates a fresh directory "<parent>/<prefix>XXXXXX".
  static Result<TempDir> Create(const std::filesystem::path& parent, std::string_view prefix);
  // Under $TMPDIR or /tmp.
  static Result<TempDir> Create(std::string_view prefix = "imgtool-");

  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::filesystem::path& path() const { return path_; }
  // Keeps the directory; the caller owns it from now on.
  std::filesystem::path Release();

 private:
  TempDir(std::filesystem::path path, UniqueFd lock) : path_(std::move(path)), lock_(std::move(lock)) {}
  void Remove();

  std::filesystem::path path_;
  UniqueFd lock_;  // flock on the directory itself
};

// Removes the directories directly under `parent` whose names start with
// `prefix` and that no live TempDir holds (their owner crashed). Ones younger
// than `grace` are left alone: a creator locks its directory right after
// mkdtemp, and a sweep must not slip in between. Returns how many went.
Result<int> RemoveAbandonedTempDirs(const std::filesystem::path& parent, std::string_view prefix,
                                    std::chrono::seconds grace = std::chrono::seconds(10));

// Removes a tree without following symlinks; makes directories writable first
// so that trees with read-only directories (as in rootfs images) go too.
Status RemoveTree(const std::filesystem::path& path);

}  // namespace imgtool
