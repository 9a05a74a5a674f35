#include "builder/normalize.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/safe_path.h"
#include "common/unique_fd.h"

namespace imgtool::builder {

namespace {

bool IsOpaque(const std::string& path) {
  char value[4];
  return ::lgetxattr(path.c_str(), "trusted.overlay.opaque", value, sizeof(value)) > 0 ||
         ::lgetxattr(path.c_str(), "user.overlay.opaque", value, sizeof(value)) > 0;
}

// Removes `path` when it is an empty regular file or an empty plain directory.
bool RemoveIfEmpty(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return false;
  if (S_ISREG(st.st_mode) && st.st_size == 0 && st.st_nlink == 1) {
    return ::unlink(path.c_str()) == 0;
  }
  if (S_ISDIR(st.st_mode) && !IsOpaque(path)) return ::rmdir(path.c_str()) == 0;
  return false;
}

// True when every directory on the way to `relative` is a real directory (no
// symlink a step made can lead the removal out of the upper dir).
bool PlainPath(const std::string& upper, const std::string& relative) {
  size_t pos = 0;
  while ((pos = relative.find('/', pos)) != std::string::npos) {
    struct stat st {};
    if (::lstat((upper + "/" + relative.substr(0, pos)).c_str(), &st) != 0 ||
        !S_ISDIR(st.st_mode)) {
      return false;
    }
    ++pos;
  }
  return true;
}

}  // namespace

Status NormalizeUpperDir(const std::filesystem::path& upper) {
  UniqueFd root(::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return ErrnoError("open " + upper.string());
  auto regular = [&](std::string_view path) -> UniqueFd {
    auto fd = SafeOpenAt(root.get(), path, O_PATH | O_NOFOLLOW);
    if (!fd) return UniqueFd();
    struct stat st {};
    if (::fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode)) return UniqueFd();
    return std::move(*fd);
  };
  for (std::string_view path : kTruncatedFiles) {
    if (!regular(path)) continue;
    auto fd = SafeOpenAt(root.get(), path, O_WRONLY | O_TRUNC | O_NOFOLLOW);
    if (!fd) return std::move(fd).error().Wrap("truncate " + std::string(path));
  }
  for (std::string_view path : kRemovedFiles) {
    if (!regular(path)) continue;
    auto parent = SafeOpenParent(root.get(), path);
    if (!parent) continue;
    if (::unlinkat(parent->fd.get(), parent->name.c_str(), 0) != 0) {
      return ErrnoError("remove " + std::string(path));
    }
  }
  return OkStatus();
}

Status RemoveRunnerMountTargets(const std::filesystem::path& upper,
                                const std::vector<std::string>& extra_targets) {
  std::vector<std::string> targets = {"etc/hosts", "etc/hostname", "etc/resolv.conf",
                                      "proc",      "sys",          "dev"};
  for (const std::string& target : extra_targets) {
    auto clean = CleanPathInRoot(target);
    if (clean && !clean->empty()) targets.push_back(*clean);
  }
  for (const std::string& target : targets) {
    // Only paths whose every component is a real directory in the upper dir:
    // never follow a symlink the step made.
    std::string path = upper.string() + "/" + target;
    if (!PlainPath(upper.string(), target) || !RemoveIfEmpty(path)) continue;
    std::string parent = target;
    while (true) {
      size_t slash = parent.rfind('/');
      if (slash == std::string::npos) break;
      parent.resize(slash);
      if (!RemoveIfEmpty(upper.string() + "/" + parent)) break;
    }
  }
  return OkStatus();
}

}  // namespace imgtool::builder
