#include "builder/copy.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>

#include "common/digest.h"
#include "common/file_util.h"
#include "common/safe_path.h"

namespace imgtool::builder {

namespace fs = std::filesystem;

namespace {

bool HasGlob(std::string_view path) { return path.find_first_of("*?[") != std::string_view::npos; }

std::string Join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "/" + b;
}

std::string BaseName(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

std::string DirName(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return "";
  return std::string(path.substr(0, slash));
}

struct Entry {
  std::string rel;  // relative to the source's top; "" for the top
  struct stat st {};
  std::string link;
  int content_fd = -1;  // regular files only
};

using Visitor = std::function<Status(const Entry&)>;

Status WalkDir(int dir_fd, const std::string& rel, const Visitor& visit) {
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirNames(dir_fd));
  for (const std::string& name : names) {
    Entry entry;
    entry.rel = Join(rel, name);
    if (::fstatat(dir_fd, name.c_str(), &entry.st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("stat " + entry.rel);
    }
    UniqueFd fd;
    if (S_ISREG(entry.st.st_mode)) {
      fd.reset(::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) return ErrnoError("open " + entry.rel);
      entry.content_fd = fd.get();
    } else if (S_ISLNK(entry.st.st_mode)) {
      char buf[PATH_MAX];
      ssize_t n = ::readlinkat(dir_fd, name.c_str(), buf, sizeof(buf));
      if (n < 0) return ErrnoError("readlink " + entry.rel);
      entry.link.assign(buf, static_cast<size_t>(n));
    }
    IMGTOOL_TRY(visit(entry));
    if (S_ISDIR(entry.st.st_mode)) {
      UniqueFd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) return ErrnoError("open " + entry.rel);
      IMGTOOL_TRY(WalkDir(sub.get(), entry.rel, visit));
    }
  }
  return OkStatus();
}

// Visits the source's top (rel "") and, for a directory, everything below it
// in sorted depth-first order. The top is resolved inside the root.
Status WalkSource(int root_fd, const CopySource& source, const Visitor& visit) {
  std::string what = source.path.empty() ? "/" : source.path;
  Entry top;
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, SafeOpenAt(root_fd, source.path, O_RDONLY | O_NONBLOCK));
  if (::fstat(fd.get(), &top.st) != 0) return ErrnoError("stat " + what);
  if (S_ISREG(top.st.st_mode)) top.content_fd = fd.get();
  if (!S_ISREG(top.st.st_mode) && !S_ISDIR(top.st.st_mode)) {
    return InvalidArgumentError(what + ": not a regular file or directory");
  }
  IMGTOOL_TRY(visit(top));
  if (S_ISDIR(top.st.st_mode)) IMGTOOL_TRY(WalkDir(fd.get(), "", visit).Wrap(what));
  return OkStatus();
}

mode_t ModeFor(const Entry& entry, const CopyMetadata& meta) {
  if (S_ISLNK(entry.st.st_mode)) return 0777;
  if (meta.mode) return *meta.mode;
  if (!meta.from_context) return entry.st.st_mode & 07777;
  if (S_ISDIR(entry.st.st_mode) || (entry.st.st_mode & 0111) != 0) return 0755;
  return 0644;
}

uid_t UidFor(const Entry& entry, const CopyMetadata& meta) {
  if (meta.uid) return *meta.uid;
  return meta.from_context ? 0 : entry.st.st_uid;
}

gid_t GidFor(const Entry& entry, const CopyMetadata& meta) {
  if (meta.gid) return *meta.gid;
  return meta.from_context ? 0 : entry.st.st_gid;
}

Result<Digest> HashFd(int fd) {
  Sha256Hasher hasher;
  char buf[1 << 16];
  off_t offset = 0;
  while (true) {
    ssize_t n = ::pread(fd, buf, sizeof(buf), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read");
    }
    if (n == 0) break;
    hasher.Update(buf, static_cast<size_t>(n));
    offset += n;
  }
  return hasher.Finish();
}

Status RemoveAt(int dir_fd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return OkStatus();
    return ErrnoError("stat " + name);
  }
  if (S_ISDIR(st.st_mode)) {
    UniqueFd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) return ErrnoError("open " + name);
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirNames(sub.get()));
    for (const std::string& child : names) IMGTOOL_TRY(RemoveAt(sub.get(), child));
    if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0) return ErrnoError("rmdir " + name);
    return OkStatus();
  }
  if (::unlinkat(dir_fd, name.c_str(), 0) != 0) return ErrnoError("unlink " + name);
  return OkStatus();
}

Status CopyData(int from, int to) {
  off_t offset = 0;
  while (true) {
    ssize_t n = ::copy_file_range(from, &offset, to, nullptr, 1 << 30, 0);
    if (n > 0) continue;
    if (n == 0) return OkStatus();
    if (errno == EINTR) continue;
    if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
      return ErrnoError("copy");
    }
    break;
  }
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::pread(from, buf, sizeof(buf), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read");
    }
    if (n == 0) return OkStatus();
    IMGTOOL_TRY(WriteAll(to, buf, static_cast<size_t>(n)));
    offset += n;
  }
}

// Creates `name` in `dir_fd` as a copy of `entry`; returns the fd of a new
// directory (to create its children in), else an empty fd.
Result<UniqueFd> CreateEntry(int dir_fd, const std::string& name, const Entry& entry,
                             const CopyMetadata& meta) {
  const mode_t type = entry.st.st_mode & S_IFMT;
  mode_t mode = ModeFor(entry, meta);
  uid_t uid = UidFor(entry, meta);
  gid_t gid = GidFor(entry, meta);
  struct timespec times[2] = {{meta.mtime, 0}, {meta.mtime, 0}};
  struct stat existing {};
  bool exists = ::fstatat(dir_fd, name.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0;
  if (exists && !(type == S_IFDIR && S_ISDIR(existing.st_mode))) {
    IMGTOOL_TRY(RemoveAt(dir_fd, name));
  }
  switch (type) {
    case S_IFDIR: {
      if (!exists || !S_ISDIR(existing.st_mode)) {
        if (::mkdirat(dir_fd, name.c_str(), 0700) != 0) return ErrnoError("mkdir " + name);
      }
      UniqueFd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) return ErrnoError("open " + name);
      if (::fchown(fd.get(), uid, gid) != 0) return ErrnoError("chown " + name);
      if (::fchmod(fd.get(), mode) != 0) return ErrnoError("chmod " + name);
      return fd;
    }
    case S_IFREG: {
      UniqueFd fd(::openat(dir_fd, name.c_str(),
                           O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd) return ErrnoError("create " + name);
      IMGTOOL_TRY(CopyData(entry.content_fd, fd.get()).Wrap("copy " + name));
      if (::fchown(fd.get(), uid, gid) != 0) return ErrnoError("chown " + name);
      if (::fchmod(fd.get(), mode) != 0) return ErrnoError("chmod " + name);
      if (::futimens(fd.get(), times) != 0) return ErrnoError("set times of " + name);
      return UniqueFd();
    }
    case S_IFLNK:
      if (::symlinkat(entry.link.c_str(), dir_fd, name.c_str()) != 0) {
        return ErrnoError("symlink " + name);
      }
      break;
    case S_IFIFO:
      if (::mkfifoat(dir_fd, name.c_str(), 0600) != 0) return ErrnoError("mkfifo " + name);
      break;
    case S_IFCHR:
    case S_IFBLK:
      if (::mknodat(dir_fd, name.c_str(), type | 0600, entry.st.st_rdev) != 0) {
        return ErrnoError("mknod " + name);
      }
      break;
    default:
      return UniqueFd();  // sockets are not copied
  }
  if (::fchownat(dir_fd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoError("chown " + name);
  }
  if (type != S_IFLNK && ::fchmodat(dir_fd, name.c_str(), mode, 0) != 0) {
    return ErrnoError("chmod " + name);
  }
  if (::utimensat(dir_fd, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoError("set times of " + name);
  }
  return UniqueFd();
}

}  // namespace

Status CheckInsideContext(const fs::path& context_dir, std::string_view path) {
  std::error_code ec;
  fs::path root = fs::canonical(context_dir, ec);
  if (ec) return ErrnoError("build context " + context_dir.string(), ec.value());
  IMGTOOL_ASSIGN_OR_RETURN(std::string clean, CleanPathInRoot(path));
  fs::path resolved = fs::weakly_canonical(root / clean, ec);
  if (ec) return ErrnoError("resolve " + std::string(path), ec.value());
  std::string r = resolved.string();
  std::string top = root.string();
  if (r != top && !(r.starts_with(top) && (top == "/" || r[top.size()] == '/'))) {
    return InvalidArgumentError("\"" + std::string(path) +
                                "\" leads outside the build context (to " + r + ")");
  }
  return OkStatus();
}

Result<std::vector<CopySource>> FindContextSources(const fs::path& context_dir,
                                                   const std::vector<std::string>& patterns) {
  std::error_code ec;
  fs::path root = fs::canonical(context_dir, ec);
  if (ec) return ErrnoError("build context " + context_dir.string(), ec.value());
  std::vector<CopySource> out;
  for (const std::string& pattern : patterns) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string clean, CleanPathInRoot(pattern));
    std::vector<std::string> matches;
    if (HasGlob(clean)) {
      glob_t g{};
      std::string full = (root / clean).string();
      int rc = ::glob(full.c_str(), GLOB_NOSORT, nullptr, &g);
      if (rc == 0) {
        for (size_t i = 0; i < g.gl_pathc; ++i) {
          std::string match = g.gl_pathv[i];
          matches.push_back(match.size() > root.string().size()
                                ? match.substr(root.string().size() + (root == "/" ? 0 : 1))
                                : "");
        }
      }
      ::globfree(&g);
      std::sort(matches.begin(), matches.end());
      if (matches.empty()) {
        return NotFoundError("\"" + pattern + "\" matches nothing in the build context");
      }
    } else {
      matches.push_back(clean);
    }
    for (const std::string& match : matches) {
      IMGTOOL_TRY(CheckInsideContext(root, match));
      struct stat st {};
      if (::stat((root / match).c_str(), &st) != 0) {
        return ErrnoError("\"" + match + "\" in the build context");
      }
      out.push_back(CopySource{match, S_ISDIR(st.st_mode)});
    }
  }
  return out;
}

Result<std::vector<CopySource>> FindRootSources(int root_fd,
                                                const std::vector<std::string>& patterns,
                                                std::string_view what) {
  std::vector<CopySource> out;
  for (const std::string& pattern : patterns) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string clean, CleanPathInRoot(pattern));
    std::vector<std::string> parts;
    for (size_t start = 0; start < clean.size();) {
      size_t slash = clean.find('/', start);
      if (slash == std::string::npos) slash = clean.size();
      parts.push_back(clean.substr(start, slash - start));
      start = slash + 1;
    }
    std::vector<std::string> matches;
    // Depth first over the components; a glob component lists its directory.
    std::function<Status(const std::string&, size_t)> expand = [&](const std::string& prefix,
                                                                   size_t i) -> Status {
      if (i == parts.size()) {
        matches.push_back(prefix);
        return OkStatus();
      }
      if (!HasGlob(parts[i])) return expand(Join(prefix, parts[i]), i + 1);
      auto dir = SafeOpenAt(root_fd, prefix, O_RDONLY | O_DIRECTORY);
      if (!dir) return OkStatus();  // not a directory: nothing below it matches
      IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirNames(dir->get()));
      for (const std::string& name : names) {
        if (::fnmatch(parts[i].c_str(), name.c_str(), FNM_PERIOD) == 0) {
          IMGTOOL_TRY(expand(Join(prefix, name), i + 1));
        }
      }
      return OkStatus();
    };
    IMGTOOL_TRY(expand("", 0));
    bool globbed = HasGlob(clean);
    std::vector<CopySource> found;
    for (const std::string& match : matches) {
      auto probe = SafeOpenAt(root_fd, match, O_PATH);
      if (!probe) {
        // A glob's intermediate match that is not a directory leads nowhere.
        if (globbed && probe.error().code() == ErrorCode::kNotFound) continue;
        if (globbed && probe.error().sys_errno() == ENOTDIR) continue;
        return std::move(probe).error().Wrap(std::string(what) + ": " + pattern);
      }
      struct stat st {};
      if (::fstat(probe->get(), &st) != 0) return ErrnoError(std::string(what) + ": stat " + match);
      found.push_back(CopySource{match, S_ISDIR(st.st_mode)});
    }
    if (found.empty()) {
      return NotFoundError("\"" + pattern + "\" matches nothing in " + std::string(what));
    }
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

Result<CopyMetadata> CopyMetadataFor(const std::string& chown, const std::string& mode,
                                     bool from_context, int64_t mtime) {
  CopyMetadata meta;
  meta.from_context = from_context;
  meta.mtime = mtime;
  if (!chown.empty()) {
    size_t colon = chown.find(':');
    meta.uid = static_cast<uid_t>(std::stoul(chown.substr(0, colon)));
    meta.gid = colon == std::string::npos ? static_cast<gid_t>(*meta.uid)
                                          : static_cast<gid_t>(std::stoul(chown.substr(colon + 1)));
  }
  if (!mode.empty()) meta.mode = static_cast<mode_t>(std::stoul(mode, nullptr, 8));
  return meta;
}

Status HashSources(int root_fd, const std::vector<CopySource>& sources, const CopyMetadata& meta,
                   std::vector<std::pair<std::string, std::string>>* out) {
  for (const CopySource& source : sources) {
    IMGTOOL_TRY(WalkSource(root_fd, source, [&](const Entry& entry) -> Status {
      char head[64];
      std::snprintf(head, sizeof(head), "%o %o %u:%u ", entry.st.st_mode & S_IFMT,
                    ModeFor(entry, meta), UidFor(entry, meta), GidFor(entry, meta));
      std::string value = head;
      if (entry.content_fd >= 0) {
        IMGTOOL_ASSIGN_OR_RETURN(Digest digest, HashFd(entry.content_fd));
        value += digest.ToString();
      } else if (S_ISLNK(entry.st.st_mode)) {
        value += "-> " + entry.link;
      } else if (S_ISCHR(entry.st.st_mode) || S_ISBLK(entry.st.st_mode)) {
        value +=
            std::to_string(major(entry.st.st_rdev)) + "," + std::to_string(minor(entry.st.st_rdev));
      }
      out->emplace_back("file " + Join(source.path, entry.rel), value);
      return OkStatus();
    }));
  }
  return OkStatus();
}

Status CopyInto(int source_root_fd, const std::vector<CopySource>& sources, int rootfs_fd,
                const std::string& dest, const CopyMetadata& meta) {
  bool dest_is_dir = dest.ends_with("/") || sources.size() > 1 ||
                     (sources.size() == 1 && sources[0].is_dir) ||
                     SafeOpenAt(rootfs_fd, dest, O_PATH | O_DIRECTORY).has_value();
  for (const CopySource& source : sources) {
    std::string where = "copy " + (source.path.empty() ? "/" : source.path) + " to " + dest;
    UniqueFd dest_dir;
    std::string top_name;
    if (source.is_dir) {
      IMGTOOL_ASSIGN_OR_RETURN(dest_dir, SafeMkdirAll(rootfs_fd, dest, 0755).Wrap(where));
    } else if (dest_is_dir) {
      IMGTOOL_ASSIGN_OR_RETURN(dest_dir, SafeMkdirAll(rootfs_fd, dest, 0755).Wrap(where));
      top_name = BaseName(source.path);
    } else {
      std::string parent = DirName(dest);
      IMGTOOL_ASSIGN_OR_RETURN(
          dest_dir, SafeMkdirAll(rootfs_fd, parent.empty() ? "/" : parent, 0755).Wrap(where));
      top_name = BaseName(dest);
      if (top_name.empty() || top_name == "/" || top_name == "." || top_name == "..") {
        return InvalidArgumentError(where + ": invalid destination");
      }
    }
    // Directories created so far, by their path relative to the source top.
    std::map<std::string, UniqueFd> dirs;
    IMGTOOL_TRY(WalkSource(source_root_fd, source, [&](const Entry& entry) -> Status {
                  if (entry.rel.empty() && source.is_dir)
                    return OkStatus();  // its contents go into dest
                  int parent_fd = dest_dir.get();
                  std::string name = top_name;
                  if (!entry.rel.empty()) {
                    std::string parent = DirName(entry.rel);
                    name = BaseName(entry.rel);
                    if (!parent.empty()) {
                      auto it = dirs.find(parent);
                      if (it == dirs.end())
                        return InternalError("copy: parent of " + entry.rel + " not made");
                      parent_fd = it->second.get();
                    }
                  }
                  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd made,
                                           CreateEntry(parent_fd, name, entry, meta));
                  if (made) dirs[entry.rel] = std::move(made);
                  return OkStatus();
                }).Wrap(where));
  }
  return OkStatus();
}

}  // namespace imgtool::builder
