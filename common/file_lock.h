// An advisory lock (flock) on a lock file, held for the owner's lifetime, so
// that many imgtool processes can share one store root.
#pragma once

#include <filesystem>

#include "common/error.h"
#include "common/unique_fd.h"

namespace imgtool {

class FileLock {
 public:
  enum class Mode { kShared, kExclusive };

  // Creates the lock file if missing and blocks until the lock is granted.
  static Result<FileLock> Acquire(const std::filesystem::path& path, Mode mode);
  // Like Acquire, but Unavailable at once when another holder conflicts.
  static Result<FileLock> TryAcquire(const std::filesystem::path& path, Mode mode);

  FileLock(FileLock&&) noexcept = default;
  FileLock& operator=(FileLock&&) noexcept = default;

 private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // closing it releases the lock
};

}  // namespace imgtool
