#include "common/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>

#include "common/file_util.h"

namespace imgtool {

Result<FileLock> FileLock::Acquire(const std::filesystem::path& path, Mode mode) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT, 0644));
  int op = mode == Mode::kExclusive ? LOCK_EX : LOCK_SH;
  while (::flock(fd.get(), op) != 0) {
    if (errno != EINTR) return ErrnoError("lock " + path.string());
  }
  return FileLock(std::move(fd));
}

Result<FileLock> FileLock::TryAcquire(const std::filesystem::path& path, Mode mode) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT, 0644));
  int op = (mode == Mode::kExclusive ? LOCK_EX : LOCK_SH) | LOCK_NB;
  while (::flock(fd.get(), op) != 0) {
    if (errno == EWOULDBLOCK) return UnavailableError("lock " + path.string() + " is held");
    if (errno != EINTR) return ErrnoError("lock " + path.string());
  }
  return FileLock(std::move(fd));
}

}  // namespace imgtool
