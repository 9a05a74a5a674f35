#include "common/temp_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <system_error>

namespace imgtool {

namespace fs = std::filesystem;

Result<TempDir> TempDir::Create(const fs::path& parent, std::string_view prefix) {
  std::string tmpl = (parent / (std::string(prefix) + "XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return ErrnoError("create temporary directory in " + parent.string());
  }
  UniqueFd lock(::open(tmpl.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!lock || ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    Status failed = ErrnoError("lock temporary directory " + tmpl);
    ::rmdir(tmpl.c_str());
    return std::move(failed).error();
  }
  return TempDir(fs::path(tmpl), std::move(lock));
}

Result<TempDir> TempDir::Create(std::string_view prefix) {
  const char* tmp = std::getenv("TMPDIR");
  return Create(fs::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp"), prefix);
}

TempDir::TempDir(TempDir&& other) noexcept
    : path_(std::move(other.path_)), lock_(std::move(other.lock_)) {
  other.path_.clear();
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    Remove();
    path_ = std::move(other.path_);
    lock_ = std::move(other.lock_);
    other.path_.clear();
  }
  return *this;
}

TempDir::~TempDir() { Remove(); }

fs::path TempDir::Release() {
  fs::path released = std::move(path_);
  path_.clear();
  lock_.reset();
  return released;
}

void TempDir::Remove() {
  if (path_.empty()) return;
  (void)RemoveTree(path_);
  path_.clear();
  lock_.reset();
}

Result<int> RemoveAbandonedTempDirs(const fs::path& parent, std::string_view prefix,
                                    std::chrono::seconds grace) {
  std::error_code ec;
  fs::directory_iterator it(parent, ec);
  if (ec == std::errc::no_such_file_or_directory) return 0;
  if (ec) return ErrnoError("list " + parent.string(), ec.value());
  int removed = 0;
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return ErrnoError("list " + parent.string(), ec.value());
    std::string name = it->path().filename().string();
    if (!name.starts_with(prefix)) continue;
    UniqueFd dir(::open(it->path().c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) continue;  // not a directory, or gone already
    struct stat st {};
    if (::fstat(dir.get(), &st) != 0 || now.tv_sec - st.st_ctim.tv_sec < grace.count()) continue;
    if (::flock(dir.get(), LOCK_EX | LOCK_NB) != 0) continue;  // its owner lives
    IMGTOOL_TRY(RemoveTree(it->path()));
    ++removed;
  }
  return removed;
}

namespace {

struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

// Deeper trees (each level holds a buffer on the stack) take the fallback.
constexpr int kMaxTreeDepth = 128;

// Empties the directory `dir_fd` with *at() calls on fds: no path is walked
// again from the top for each entry, and d_type saves a stat per entry.
// Returns 0 or the first errno; the caller falls back to the slower remover,
// which also deals with read-only directories, on any error.
int RemoveContentsAt(int dir_fd, int depth) {
  if (depth > kMaxTreeDepth) return ELOOP;
  alignas(LinuxDirent64) char buffer[4096];
  // One pass: a directory whose entries shifted under the removal is left
  // non-empty, its rmdir fails, and the caller's fallback finishes the job.
  while (true) {
    long n = ::syscall(SYS_getdents64, dir_fd, buffer, sizeof(buffer));
    if (n < 0) return errno;
    if (n == 0) break;
    for (long offset = 0; offset < n;) {
      const auto* entry = reinterpret_cast<const LinuxDirent64*>(buffer + offset);
      offset += entry->d_reclen;
      const char* name = entry->d_name;
      if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
      if (entry->d_type != DT_DIR) {
        if (::unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT) continue;
        // DT_UNKNOWN (some filesystems) may still be a directory.
        if (entry->d_type != DT_UNKNOWN || (errno != EISDIR && errno != EPERM)) return errno;
      } else if (::unlinkat(dir_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) {
        // An empty directory goes at once: no open and listing of it.
        continue;
      }
      int child = ::openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (child < 0) return errno;
      int error = RemoveContentsAt(child, depth + 1);
      ::close(child);
      if (error != 0) return error;
      if (::unlinkat(dir_fd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) return errno;
    }
  }
  return 0;
}

}  // namespace

Status RemoveTree(const fs::path& path) {
  {
    UniqueFd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir && errno == ENOENT) return OkStatus();
    if (dir && RemoveContentsAt(dir.get(), 0) == 0) {
      dir.reset();
      if (::rmdir(path.c_str()) == 0 || errno == ENOENT) return OkStatus();
    }
  }
  // Not a directory (a file or a symlink goes as it is), or an entry that
  // would not go: the slow way, which opens up read-only directories.
  std::error_code ec;
  fs::remove_all(path, ec);
  if (!ec) return OkStatus();
  // A read-only directory inside the tree: open up every directory, then retry.
  for (auto it = fs::recursive_directory_iterator(
           path, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      ::chmod(it->path().c_str(), 0700);
    }
  }
  ::chmod(path.c_str(), 0700);
  ec.clear();
  fs::remove_all(path, ec);
  if (ec) return ErrnoError("remove " + path.string(), ec.value());
  return OkStatus();
}

}  // namespace imgtool
