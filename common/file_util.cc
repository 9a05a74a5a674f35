#include "common/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <random>

#include "common/scope_guard.h"

namespace imgtool {

Status WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write");
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return OkStatus();
}

Result<size_t> ReadFull(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  size_t total = 0;
  while (total < size) {
    ssize_t n = ::read(fd, p + total, size - total);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read");
    }
    if (n == 0) break;
    total += static_cast<size_t>(n);
  }
  return total;
}

Result<UniqueFd> OpenFile(const std::filesystem::path& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError("open " + path.string());
  return UniqueFd(fd);
}

Result<std::vector<std::string>> ListDirNames(int dir_fd) {
  int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open directory");
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    int saved = errno;
    ::close(fd);
    return ErrnoError("open directory", saved);
  }
  std::unique_ptr<DIR, int (*)(DIR*)> owner(dir, ::closedir);
  std::vector<std::string> names;
  while (true) {
    errno = 0;
    struct dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      if (errno != 0) return ErrnoError("read directory");
      std::sort(names.begin(), names.end());
      return names;
    }
    std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
}

Result<std::string> ReadFdToString(int fd, size_t max_size) {
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read");
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_size) {
      return InvalidArgumentError("file is larger than " + std::to_string(max_size) + " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<std::string> ReadFileToString(const std::filesystem::path& path, size_t max_size) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  return ReadFdToString(fd.get(), max_size).Wrap("read " + path.string());
}

Result<std::string> ReadFileToStringWithStat(const std::filesystem::path& path, size_t max_size,
                                             struct stat* st) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  if (::fstat(fd.get(), st) != 0) return ErrnoError("stat " + path.string());
  return ReadFdToString(fd.get(), max_size).Wrap("read " + path.string());
}

Status FsyncPath(const std::filesystem::path& path) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + path.string());
  return OkStatus();
}

bool SameFileUnchanged(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data, mode_t mode) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::filesystem::path tmp =
      dir / (".tmp-" + path.filename().string() + "-" + std::to_string(rng() % 1000000000));
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tmp, O_WRONLY | O_CREAT | O_EXCL, mode));
  ScopeGuard unlink_tmp([&] { ::unlink(tmp.c_str()); });
  IMGTOOL_TRY(WriteAll(fd.get(), data).Wrap("write " + tmp.string()));
  if (::fchmod(fd.get(), mode) != 0) return ErrnoError("chmod " + tmp.string());
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + tmp.string());
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("rename to " + path.string());
  unlink_tmp.Cancel();
  return FsyncPath(dir);
}

}  // namespace imgtool
