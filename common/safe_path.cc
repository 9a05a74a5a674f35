#include "common/safe_path.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <vector>

namespace imgtool {

namespace {

std::atomic<bool> g_force_fallback{false};
std::atomic<bool> g_openat2_missing{false};
constexpr int kMaxSymlinks = 40;

std::vector<std::string> SplitComponents(std::string_view path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) parts.emplace_back(path.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

// Component walk used where openat2 is missing: every step is an O_PATH|O_NOFOLLOW
// open of one name, symlinks are read and their targets walked from the root
// (absolute) or the current directory (relative), ".." pops but never past root.
Result<UniqueFd> WalkInRoot(int root_fd, std::string_view path, int flags, mode_t mode) {
  std::vector<std::string> pending = SplitComponents(path);
  std::reverse(pending.begin(), pending.end());  // back() is the next component
  std::vector<UniqueFd> stack;                     // directories below the root
  int symlinks = 0;
  auto current = [&]() { return stack.empty() ? root_fd : stack.back().get(); };

  while (!pending.empty()) {
    std::string name = std::move(pending.back());
    pending.pop_back();
    bool last = pending.empty();
    if (name == ".") {
      if (last) break;
      continue;
    }
    if (name == "..") {
      if (!stack.empty()) stack.pop_back();
      if (last) break;
      continue;
    }
    if (last) {
      // Resolve a trailing symlink unless the caller asked not to follow it.
      if (!(flags & O_NOFOLLOW)) {
        struct stat st;
        if (::fstatat(current(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(st.st_mode)) {
          // fall through to the symlink handling below
        } else {
          int fd = ::openat(current(), name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
          if (fd < 0) return ErrnoError("open " + std::string(path));
          return UniqueFd(fd);
        }
      } else {
        int fd = ::openat(current(), name.c_str(), flags | O_CLOEXEC, mode);
        if (fd < 0) return ErrnoError("open " + std::string(path));
        return UniqueFd(fd);
      }
    }
    int fd = ::openat(current(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open " + std::string(path));
    UniqueFd step(fd);
    struct stat st;
    if (::fstat(step.get(), &st) != 0) return ErrnoError("stat " + std::string(path));
    if (S_ISLNK(st.st_mode)) {
      if (++symlinks > kMaxSymlinks) return ErrnoError("resolve " + std::string(path), ELOOP);
      std::string target(PATH_MAX, '\0');
      ssize_t n = ::readlinkat(step.get(), "", target.data(), target.size());
      if (n < 0) return ErrnoError("readlink in " + std::string(path));
      target.resize(static_cast<size_t>(n));
      if (!target.empty() && target[0] == '/') stack.clear();
      std::vector<std::string> parts = SplitComponents(target);
      if (parts.empty() && last) break;  // link to "/" itself
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) pending.push_back(*it);
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      if (last) return UniqueFd();  // unreachable: last handled above
      return ErrnoError("open " + std::string(path), ENOTDIR);
    }
    stack.push_back(std::move(step));
  }
  // The path resolved to a directory (the root, or one on the stack).
  int fd = ::openat(current(), ".", (flags & ~(O_CREAT | O_EXCL | O_NOFOLLOW)) | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open " + std::string(path));
  return UniqueFd(fd);
}

}  // namespace

void SetSafePathFallbackForTesting(bool force_fallback) { g_force_fallback = force_fallback; }

Result<UniqueFd> SafeOpenAt(int root_fd, std::string_view path, int flags, mode_t mode) {
  if (!g_force_fallback && !g_openat2_missing) {
    struct open_how how = {};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    std::string p(path.empty() ? "." : path);
    for (int attempt = 0; attempt < 16; ++attempt) {
      long fd = ::syscall(SYS_openat2, root_fd, p.c_str(), &how, sizeof(how));
      if (fd >= 0) return UniqueFd(static_cast<int>(fd));
      if (errno == EAGAIN) continue;  // a concurrent rename raced the walk; retry
      if (errno == ENOSYS) {
        g_openat2_missing = true;
        break;
      }
      return ErrnoError("open " + std::string(path));
    }
    if (!g_openat2_missing) return ErrnoError("open " + std::string(path), EAGAIN);
  }
  return WalkInRoot(root_fd, path, flags, mode);
}

Result<std::string> CleanPathInRoot(std::string_view path) {
  std::vector<std::string> out;
  for (std::string& part : SplitComponents(path)) {
    if (part == ".") continue;
    if (part == "..") {
      if (out.empty()) {
        return InvalidArgumentError("path \"" + std::string(path) + "\" leads outside the root");
      }
      out.pop_back();
      continue;
    }
    out.push_back(std::move(part));
  }
  std::string joined;
  for (size_t i = 0; i < out.size(); ++i) {
    if (i > 0) joined += '/';
    joined += out[i];
  }
  return joined;
}

Result<ParentDir> SafeOpenParent(int root_fd, std::string_view path) {
  std::vector<std::string> parts = SplitComponents(path);
  while (!parts.empty() && parts.back() == ".") parts.pop_back();
  if (parts.empty() || parts.back() == "..") {
    return InvalidArgumentError("path \"" + std::string(path) + "\" names no entry");
  }
  std::string name = parts.back();
  parts.pop_back();
  std::string dir;
  for (const std::string& part : parts) {
    dir += part;
    dir += '/';
  }
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd,
                           SafeOpenAt(root_fd, dir.empty() ? "." : dir, O_DIRECTORY | O_RDONLY));
  return ParentDir{std::move(fd), std::move(name)};
}

Result<UniqueFd> SafeMkdirAll(int root_fd, std::string_view path, mode_t mode) {
  std::vector<std::string> pending = SplitComponents(path);
  std::reverse(pending.begin(), pending.end());
  std::string prefix;  // resolved so far, relative to the root, no symlinks in it
  int symlinks = 0;
  while (!pending.empty()) {
    std::string name = std::move(pending.back());
    pending.pop_back();
    if (name == ".") continue;
    if (name == "..") {
      size_t slash = prefix.rfind('/');
      prefix = slash == std::string::npos ? "" : prefix.substr(0, slash);
      continue;
    }
    IMGTOOL_ASSIGN_OR_RETURN(UniqueFd parent,
                             SafeOpenAt(root_fd, prefix.empty() ? "." : prefix,
                                        O_DIRECTORY | O_RDONLY));
    std::string next = prefix.empty() ? name : prefix + "/" + name;
    struct stat st;
    if (::fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) return ErrnoError("stat " + next);
      if (::mkdirat(parent.get(), name.c_str(), mode) != 0 && errno != EEXIST) {
        return ErrnoError("mkdir " + next);
      }
      prefix = std::move(next);
      continue;
    }
    if (S_ISLNK(st.st_mode)) {
      // Walk the link's target from the root (absolute) or from here (relative), so
      // that missing directories behind it are created inside the root too.
      if (++symlinks > kMaxSymlinks) return ErrnoError("mkdir " + std::string(path), ELOOP);
      std::string target(PATH_MAX, '\0');
      ssize_t n = ::readlinkat(parent.get(), name.c_str(), target.data(), target.size());
      if (n < 0) return ErrnoError("readlink " + next);
      target.resize(static_cast<size_t>(n));
      if (!target.empty() && target[0] == '/') prefix.clear();
      std::vector<std::string> parts = SplitComponents(target);
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) pending.push_back(*it);
      continue;
    }
    if (!S_ISDIR(st.st_mode)) return ErrnoError("mkdir " + next, ENOTDIR);
    prefix = std::move(next);
  }
  return SafeOpenAt(root_fd, prefix.empty() ? "." : prefix, O_DIRECTORY | O_RDONLY);
}

}  // namespace imgtool
