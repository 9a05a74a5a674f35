#include "runner/rootfs.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "common/log.h"
#include "common/safe_path.h"
#include "common/signal_block.h"
#include "common/temp_dir.h"

namespace imgtool::runner {

namespace {

constexpr size_t kPathBuffer = 4096;

// ---- parent side ----

Result<std::string> ContainerPath(std::string_view path, std::string_view what) {
  if (path.empty() || path.front() != '/') {
    return InvalidArgumentError(StrCat(what, " \"", path, "\": must be an absolute path"));
  }
  Result<std::string> cleaned = CleanPathInRoot(path);
  if (!cleaned) return std::move(cleaned).error().Wrap(StrCat(what, " \"", path, "\""));
  if (cleaned->empty()) {
    return InvalidArgumentError(StrCat(what, " \"", path, "\": can not be the container's /"));
  }
  if (cleaned->size() >= kPathBuffer) {
    return InvalidArgumentError(StrCat(what, " \"", path, "\": path too long"));
  }
  return cleaned;
}

RootfsOp MountFs(std::string target, std::string fstype, unsigned long flags, std::string data) {
  RootfsOp op;
  op.kind = RootfsOp::Kind::kMountFs;
  op.target = std::move(target);
  op.source = fstype;
  op.fstype = std::move(fstype);
  op.flags = flags;
  op.data = std::move(data);
  return op;
}

RootfsOp Simple(RootfsOp::Kind kind, std::string target, std::string source = "") {
  RootfsOp op;
  op.kind = kind;
  op.target = std::move(target);
  op.source = std::move(source);
  return op;
}

// ---- child side: nothing below allocates ----

int OpenInRoot(int root_fd, const char* path, int flags) noexcept {
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, root_fd, path, &how, sizeof(how)));
}

ChildStatus Fail(int err, const char* what, const char* target) {
  return ChildStatus::Failure(err, what, " /", target);
}

// Copies `path` to `buffer` and splits it at the last '/': `*name` points at
// the last component, and `buffer` holds the parent ("" for the top).
bool SplitParent(const char* path, char (&buffer)[kPathBuffer], const char** name) noexcept {
  size_t length = std::strlen(path);
  if (length >= kPathBuffer) return false;
  std::memcpy(buffer, path, length + 1);
  char* slash = std::strrchr(buffer, '/');
  if (slash == nullptr) {
    *name = path;
    buffer[0] = '\0';
  } else {
    *slash = '\0';
    *name = path + (slash - buffer) + 1;
  }
  return true;
}

// An O_PATH fd on a directory inside the root; "" is the root itself.
int OpenDirInRoot(int root_fd, const char* path) noexcept {
  if (path[0] == '\0') return static_cast<int>(::fcntl(root_fd, F_DUPFD_CLOEXEC, 3));
  return OpenInRoot(root_fd, path, O_PATH | O_DIRECTORY);
}

// The directory the last op created something in ("dev" for the device
// nodes and links): one openat2 for a run of ops instead of one each. A
// cached fd names the directory it was opened on, so a mount at that
// directory or above it drops the cache (ForgetUnder).
class DirCache {
 public:
  DirCache() noexcept { path_[0] = '\0'; }
  ~DirCache() { Forget(); }
  DirCache(const DirCache&) = delete;
  DirCache& operator=(const DirCache&) = delete;

  // An O_PATH fd on `parent` inside the root (owned by the cache), or -1.
  int Get(int root_fd, const char* parent) noexcept {
    if (fd_ >= 0 && std::strcmp(path_, parent) == 0) return fd_;
    Forget();
    size_t length = std::strlen(parent);
    if (length >= kPathBuffer) {
      errno = ENAMETOOLONG;
      return -1;
    }
    fd_ = OpenDirInRoot(root_fd, parent);
    if (fd_ >= 0) std::memcpy(path_, parent, length + 1);
    return fd_;
  }

  // After a mount at `target`: forgets the cached directory if the mount
  // covers it (the same path, or one of its ancestors).
  void ForgetUnder(const char* target) noexcept {
    if (fd_ < 0) return;
    size_t length = std::strlen(target);
    if (std::strncmp(path_, target, length) == 0 &&
        (path_[length] == '\0' || path_[length] == '/')) {
      Forget();
    }
  }

  void Forget() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    path_[0] = '\0';
  }

 private:
  char path_[kPathBuffer];
  int fd_ = -1;
};

// mkdir -p inside the root: each prefix is resolved from the root (so symlinks
// stay inside), and a missing component is made in the directory it resolved to.
ChildStatus MkdirAllInRoot(int root_fd, const char* path, mode_t mode, UniqueFd* out) noexcept {
  char buffer[kPathBuffer];
  size_t length = std::strlen(path);
  if (length >= kPathBuffer) return Fail(ENAMETOOLONG, "create directory", path);
  std::memcpy(buffer, path, length + 1);
  UniqueFd current(static_cast<int>(::fcntl(root_fd, F_DUPFD_CLOEXEC, 3)));
  if (!current) return Fail(errno, "create directory", path);
  size_t start = 0;
  while (start < length) {
    while (start < length && buffer[start] == '/') ++start;
    if (start >= length) break;
    size_t end = start;
    while (end < length && buffer[end] != '/') ++end;
    char saved = buffer[end];
    buffer[end] = '\0';
    int fd = OpenInRoot(root_fd, buffer, O_PATH | O_DIRECTORY);
    if (fd < 0 && errno == ENOENT) {
      if (::mkdirat(current.get(), buffer + start, mode) != 0 && errno != EEXIST) {
        return Fail(errno, "create directory", buffer);
      }
      fd = OpenInRoot(root_fd, buffer, O_PATH | O_DIRECTORY);
    }
    if (fd < 0) return Fail(errno, "create directory", buffer);
    current.reset(fd);
    buffer[end] = saved;
    start = end;
  }
  if (out != nullptr) *out = std::move(current);
  return ChildStatus();
}

// Makes the directory `target` in its parent, taken from the cache (one
// openat2 for a run of dirs in the same parent): the parent's fd, with
// `*name` pointing at the new dir's name, or -1 when the parent is the root
// or missing, or mkdirat failed (the name exists, say).
int MkdirInCachedParent(int root_fd, const char* target, mode_t mode, DirCache* cache,
                        const char** name) noexcept {
  char parent[kPathBuffer];
  if (!SplitParent(target, parent, name) || parent[0] == '\0') return -1;
  int dir = cache->Get(root_fd, parent);
  if (dir < 0 || ::mkdirat(dir, *name, mode) != 0) return -1;
  return dir;
}

// Opens a mount target, creating it (a directory, or an empty file when
// `as_file`) when it is missing.
ChildStatus OpenTarget(int root_fd, const char* target, bool create, bool as_file,
                       UniqueFd* out, DirCache* cache) noexcept {
  int fd = OpenInRoot(root_fd, target, O_PATH);
  if (fd >= 0) {
    out->reset(fd);
    return ChildStatus();
  }
  if (errno != ENOENT || !create) return Fail(errno, "open mount target", target);
  if (!as_file) {
    // A missing directory in a directory that exists (dev/pts in the new
    // /dev): made and opened in the parent, without following a symlink.
    const char* name = nullptr;
    int dir = MkdirInCachedParent(root_fd, target, 0755, cache, &name);
    if (dir >= 0) {
      fd = ::openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd >= 0) {
        out->reset(fd);
        return ChildStatus();
      }
    }
    return MkdirAllInRoot(root_fd, target, 0755, out);
  }
  char parent[kPathBuffer];
  const char* name = nullptr;
  if (!SplitParent(target, parent, &name)) return Fail(ENAMETOOLONG, "open mount target", target);
  UniqueFd parent_fd;
  IMGTOOL_CHILD_TRY(MkdirAllInRoot(root_fd, parent, 0755, &parent_fd));
  int created = ::openat(parent_fd.get(), name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
                         0644);
  if (created < 0 && errno != EEXIST) return Fail(errno, "create mount target", target);
  if (created >= 0) ::close(created);
  fd = OpenInRoot(root_fd, target, O_PATH);
  if (fd < 0) return Fail(errno, "open mount target", target);
  out->reset(fd);
  return ChildStatus();
}

int OpenTree(int dirfd, const char* path, unsigned int flags) noexcept {
  return static_cast<int>(::syscall(SYS_open_tree, dirfd, path, flags));
}

int MoveMount(int from_fd, int to_fd) noexcept {
  return static_cast<int>(::syscall(SYS_move_mount, from_fd, "", to_fd, "",
                                    MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH));
}

int SetReadOnly(int tree_fd, bool recursive) noexcept {
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_RDONLY;
  return static_cast<int>(::syscall(SYS_mount_setattr, tree_fd, "",
                                    AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr,
                                    sizeof(attr)));
}

ChildStatus RunMountFs(int root_fd, const RootfsOp& op, DirCache* cache) noexcept {
  UniqueFd target;
  IMGTOOL_CHILD_TRY(OpenTarget(root_fd, op.target.c_str(), true, false, &target, cache));
  cache->ForgetUnder(op.target.c_str());
  FdPath path(target.get());
  if (::mount(op.source.c_str(), path.c_str(), op.fstype.c_str(), op.flags,
              op.data.empty() ? nullptr : op.data.c_str()) != 0) {
    return ChildStatus::Failure(errno, "mount ", op.fstype.c_str(), " at /", op.target.c_str());
  }
  return ChildStatus();
}

ChildStatus RunBind(int root_fd, const RootfsOp& op, int tree_fd, DirCache* cache) noexcept {
  struct stat st {};
  if (tree_fd < 0 || ::fstat(tree_fd, &st) != 0) {
    return ChildStatus::Failure(tree_fd < 0 ? EBADF : errno, "bind ", op.source.c_str());
  }
  UniqueFd target;
  IMGTOOL_CHILD_TRY(
      OpenTarget(root_fd, op.target.c_str(), true, !S_ISDIR(st.st_mode), &target, cache));
  cache->ForgetUnder(op.target.c_str());
  if (MoveMount(tree_fd, target.get()) != 0) {
    return ChildStatus::Failure(errno, "bind ", op.source.c_str(), " at /", op.target.c_str());
  }
  return ChildStatus();
}

ChildStatus RunMask(int root_fd, const RootfsOp& op, DirCache* cache) noexcept {
  UniqueFd target(OpenInRoot(root_fd, op.target.c_str(), O_PATH));
  if (!target) {
    if (errno == ENOENT) return ChildStatus();
    return Fail(errno, "mask", op.target.c_str());
  }
  struct stat st {};
  if (::fstat(target.get(), &st) != 0) return Fail(errno, "mask", op.target.c_str());
  FdPath path(target.get());
  int rc = S_ISDIR(st.st_mode)
               ? ::mount("tmpfs", path.c_str(), "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         "mode=555")
               : ::mount("/dev/null", path.c_str(), nullptr, MS_BIND, nullptr);
  if (rc != 0) return Fail(errno, "mask", op.target.c_str());
  cache->ForgetUnder(op.target.c_str());
  return ChildStatus();
}

ChildStatus RunReadOnly(int root_fd, const RootfsOp& op, DirCache* cache) noexcept {
  UniqueFd target(OpenInRoot(root_fd, op.target.c_str(), O_PATH));
  if (!target) {
    if (errno == ENOENT) return ChildStatus();
    return Fail(errno, "make read-only", op.target.c_str());
  }
  UniqueFd tree(OpenTree(target.get(), "",
                         OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH));
  if (!tree || SetReadOnly(tree.get(), true) != 0 || MoveMount(tree.get(), target.get()) != 0) {
    return Fail(errno, "make read-only", op.target.c_str());
  }
  cache->ForgetUnder(op.target.c_str());
  return ChildStatus();
}

ChildStatus RunSeal(int root_fd, const RootfsOp& op) noexcept {
  UniqueFd target(OpenInRoot(root_fd, op.target.c_str(), O_PATH));
  if (!target || SetReadOnly(target.get(), false) != 0) {
    return Fail(errno, "make read-only", op.target.c_str());
  }
  return ChildStatus();
}

ChildStatus RunDevice(int root_fd, const RootfsOp& op, bool by_bind, DirCache* cache) noexcept {
  char parent[kPathBuffer];
  const char* name = nullptr;
  if (!SplitParent(op.target.c_str(), parent, &name)) {
    return Fail(ENAMETOOLONG, "create device", op.target.c_str());
  }
  int dir = cache->Get(root_fd, parent);
  if (dir < 0) return Fail(errno, "create device", op.target.c_str());
  if (!by_bind) {
    if (::mknodat(dir, name, S_IFCHR | op.mode, op.device) == 0) return ChildStatus();
    if (errno != EPERM) return Fail(errno, "create device", op.target.c_str());
  }
  int created = ::openat(dir, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0);
  if (created < 0) return Fail(errno, "create device", op.target.c_str());
  ::close(created);
  UniqueFd target(::openat(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!target) return Fail(errno, "create device", op.target.c_str());
  FdPath path(target.get());
  if (::mount(op.source.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return ChildStatus::Failure(errno, "bind host ", op.source.c_str(), " at /",
                                op.target.c_str());
  }
  // Only the node is covered; the cached directory stays what it was.
  return ChildStatus();
}

ChildStatus RunSymlink(int root_fd, const RootfsOp& op, DirCache* cache) noexcept {
  char parent[kPathBuffer];
  const char* name = nullptr;
  if (!SplitParent(op.target.c_str(), parent, &name)) {
    return Fail(ENAMETOOLONG, "create symlink", op.target.c_str());
  }
  int dir = cache->Get(root_fd, parent);
  if (dir < 0 || ::symlinkat(op.source.c_str(), dir, name) != 0) {
    if (errno == EEXIST) return ChildStatus();
    return Fail(errno, "create symlink", op.target.c_str());
  }
  return ChildStatus();
}

// A new directory in a parent that exists (the hierarchies' dirs under
// sys/fs/cgroup) is made in the cached parent instead of by a walk per path
// component. Anything else (a missing parent, a name that exists) takes the
// walk from the root.
ChildStatus RunMkdir(int root_fd, const RootfsOp& op, DirCache* cache) noexcept {
  const char* name = nullptr;
  if (MkdirInCachedParent(root_fd, op.target.c_str(), op.mode, cache, &name) >= 0) {
    return ChildStatus();
  }
  return MkdirAllInRoot(root_fd, op.target.c_str(), op.mode, nullptr);
}

ChildStatus RunOp(int root_fd, size_t index, const RootfsPlan& plan, DirCache* cache) noexcept {
  const RootfsOp& op = plan.ops[index];
  switch (op.kind) {
    case RootfsOp::Kind::kMountFs:
      return RunMountFs(root_fd, op, cache);
    case RootfsOp::Kind::kBind:
      return RunBind(root_fd, op,
                     index < plan.bind_trees.size() ? plan.bind_trees[index].get() : -1, cache);
    case RootfsOp::Kind::kMask:
      return RunMask(root_fd, op, cache);
    case RootfsOp::Kind::kReadOnly:
      return RunReadOnly(root_fd, op, cache);
    case RootfsOp::Kind::kMkdir:
      return RunMkdir(root_fd, op, cache);
    case RootfsOp::Kind::kDevice:
      return RunDevice(root_fd, op, plan.devices_by_bind, cache);
    case RootfsOp::Kind::kSymlink:
      return RunSymlink(root_fd, op, cache);
    case RootfsOp::Kind::kSeal:
      return RunSeal(root_fd, op);
  }
  return ChildStatus::Failure(EINVAL, "unknown rootfs operation");
}

}  // namespace

Result<TmpfsOptions> ParseTmpfsOptions(std::string_view text) {
  struct Flag {
    std::string_view name;
    bool set;
    unsigned long flag;
  };
  static constexpr Flag kFlags[] = {
      {"ro", true, MS_RDONLY},       {"rw", false, MS_RDONLY},     {"noexec", true, MS_NOEXEC},
      {"exec", false, MS_NOEXEC},    {"nosuid", true, MS_NOSUID},  {"suid", false, MS_NOSUID},
      {"nodev", true, MS_NODEV},     {"dev", false, MS_NODEV},     {"noatime", true, MS_NOATIME},
      {"atime", false, MS_NOATIME},  {"strictatime", true, MS_STRICTATIME},
      {"relatime", true, MS_RELATIME}, {"sync", true, MS_SYNCHRONOUS}, {"async", false, MS_SYNCHRONOUS},
  };
  static constexpr std::string_view kDataKeys[] = {"size", "mode", "uid", "gid", "nr_inodes",
                                                   "nr_blocks", "huge", "mpol"};
  TmpfsOptions options;
  options.flags = MS_NOEXEC | MS_NOSUID | MS_NODEV;
  size_t start = 0;
  while (start <= text.size() && !text.empty()) {
    size_t end = text.find(',', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view option = text.substr(start, end - start);
    start = end + 1;
    if (option.empty()) continue;
    bool handled = false;
    for (const Flag& flag : kFlags) {
      if (option != flag.name) continue;
      options.flags = flag.set ? (options.flags | flag.flag) : (options.flags & ~flag.flag);
      handled = true;
    }
    std::string_view key = option.substr(0, option.find('='));
    for (std::string_view data_key : kDataKeys) {
      if (handled || key != data_key || option.size() == key.size()) continue;
      if (!options.data.empty()) options.data += ',';
      options.data += option;
      handled = true;
    }
    if (!handled) {
      return InvalidArgumentError(StrCat("tmpfs option \"", option, "\" is not known"));
    }
    if (end == text.size()) break;
  }
  return options;
}

Result<RootfsPlan> BuildRootfsPlan(const RootfsOptions& options) {
  using Kind = RootfsOp::Kind;
  RootfsPlan plan;
  plan.read_only = options.read_only;
  plan.devices_by_bind = options.user_namespace;
  std::vector<RootfsOp>& ops = plan.ops;
  const unsigned long kSafe = MS_NOSUID | MS_NODEV | MS_NOEXEC;

  ops.push_back(MountFs("proc", "proc", kSafe, ""));
  ops.push_back(MountFs("dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"));
  struct Device {
    const char* name;
    unsigned major, minor;
  };
  for (const Device& device : {Device{"null", 1, 3}, Device{"zero", 1, 5}, Device{"full", 1, 7},
                               Device{"random", 1, 8}, Device{"urandom", 1, 9},
                               Device{"tty", 5, 0}}) {
    RootfsOp op = Simple(Kind::kDevice, StrCat("dev/", device.name), StrCat("/dev/", device.name));
    op.mode = 0666;
    op.device = makedev(device.major, device.minor);
    ops.push_back(std::move(op));
  }
  for (const auto& [name, link] : {std::pair{"fd", "/proc/self/fd"},
                                   std::pair{"stdin", "/proc/self/fd/0"},
                                   std::pair{"stdout", "/proc/self/fd/1"},
                                   std::pair{"stderr", "/proc/self/fd/2"},
                                   std::pair{"core", "/proc/kcore"}, std::pair{"ptmx", "pts/ptmx"}}) {
    ops.push_back(Simple(Kind::kSymlink, StrCat("dev/", name), link));
  }
  ops.push_back(MountFs("dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                        "newinstance,ptmxmode=0666,mode=0620,gid=5"));
  ops.push_back(MountFs("dev/shm", "tmpfs", kSafe, "mode=1777,size=65536k"));
  ops.push_back(MountFs("dev/mqueue", "mqueue", kSafe, ""));

  unsigned long sys_flags = kSafe | (options.privileged ? 0 : MS_RDONLY);
  if (options.new_netns || !options.user_namespace) {
    ops.push_back(MountFs("sys", "sysfs", sys_flags, ""));
  } else {
    // A user namespace may not mount a sysfs for a netns it does not own.
    RootfsOp sys = Simple(Kind::kBind, "sys", "/sys");
    sys.read_only = !options.privileged;
    ops.push_back(std::move(sys));
  }
  if (options.mount_cgroup2) {
    ops.push_back(MountFs("sys/fs/cgroup", "cgroup2",
                          kSafe | (options.privileged ? 0 : MS_RDONLY), ""));
  }
  if (!options.cgroup_v1.empty()) {
    // As docker lays it out: a tmpfs with a dir per hierarchy and a symlink
    // per co-mounted controller, made read-only before the hierarchies are
    // mounted on it (read-only too, unless --privileged).
    ops.push_back(MountFs("sys/fs/cgroup", "tmpfs", kSafe, "mode=755"));
    auto plain_name = [](const std::string& name) {
      return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
    };
    for (const CgroupV1View& view : options.cgroup_v1) {
      if (!plain_name(view.name)) {
        return InvalidArgumentError("cgroup hierarchy name \"" + view.name + "\"");
      }
      RootfsOp dir = Simple(Kind::kMkdir, "sys/fs/cgroup/" + view.name);
      dir.mode = 0555;
      ops.push_back(std::move(dir));
      for (const std::string& alias : view.aliases) {
        if (!plain_name(alias) || alias == view.name) continue;
        ops.push_back(Simple(Kind::kSymlink, "sys/fs/cgroup/" + alias, view.name));
      }
    }
    if (!options.privileged) ops.push_back(Simple(Kind::kSeal, "sys/fs/cgroup"));
    for (const CgroupV1View& view : options.cgroup_v1) {
      ops.push_back(MountFs("sys/fs/cgroup/" + view.name, "cgroup",
                            kSafe | (options.privileged ? 0 : MS_RDONLY), view.controllers));
    }
  }

  for (const auto& [host_file, container_path] : options.file_binds) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string target, ContainerPath(container_path, "file"));
    ops.push_back(Simple(Kind::kBind, std::move(target), host_file));
  }
  for (const VolumeMount& volume : options.volumes) {
    if (volume.source.empty() || volume.source.front() != '/') {
      return InvalidArgumentError("volume \"" + volume.source + "\": host path must be absolute");
    }
    IMGTOOL_ASSIGN_OR_RETURN(std::string target, ContainerPath(volume.destination, "volume"));
    RootfsOp op = Simple(Kind::kBind, std::move(target), volume.source);
    op.read_only = volume.read_only;
    ops.push_back(std::move(op));
  }
  for (const TmpfsMount& tmpfs : options.tmpfs) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string target, ContainerPath(tmpfs.destination, "tmpfs"));
    IMGTOOL_ASSIGN_OR_RETURN(TmpfsOptions parsed, ParseTmpfsOptions(tmpfs.options));
    ops.push_back(MountFs(std::move(target), "tmpfs", parsed.flags, parsed.data));
  }
  if (!options.privileged) {
    // After the user's mounts, so that no volume can uncover a masked path.
    for (std::string_view path : kMaskedPaths) {
      ops.push_back(Simple(Kind::kMask, std::string(path.substr(1))));
    }
    for (std::string_view path : kReadOnlyPaths) {
      ops.push_back(Simple(Kind::kReadOnly, std::string(path.substr(1))));
    }
  }
  IMGTOOL_ASSIGN_OR_RETURN(std::string cwd, CleanPathInRoot(options.cwd));
  if (!cwd.empty()) {
    RootfsOp op = Simple(Kind::kMkdir, std::move(cwd));
    op.mode = 0755;
    ops.push_back(std::move(op));
  }
  return plan;
}

Status PrepareRootfsPlan(RootfsPlan* plan, int root_fd) {
  plan->bind_trees.clear();
  plan->bind_trees.resize(plan->ops.size());
  for (size_t i = 0; i < plan->ops.size(); ++i) {
    const RootfsOp& op = plan->ops[i];
    bool as_file = false;
    if (op.kind == RootfsOp::Kind::kBind) {
      UniqueFd tree(OpenTree(AT_FDCWD, op.source.c_str(),
                             OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
      if (!tree) return ErrnoError("bind " + op.source);
      if (op.read_only && SetReadOnly(tree.get(), true) != 0) {
        return ErrnoError("bind " + op.source + ": make it read-only");
      }
      struct stat st {};
      if (::fstat(tree.get(), &st) != 0) return ErrnoError("bind " + op.source);
      as_file = !S_ISDIR(st.st_mode);
      plan->bind_trees[i] = std::move(tree);
    } else if (op.kind != RootfsOp::Kind::kMountFs && op.kind != RootfsOp::Kind::kMkdir) {
      continue;
    }
    // Targets inside the filesystems the plan mounts itself are made in the
    // child; only those in the image are made here, by the caller, whose
    // ids own the image (a user namespace's root may not write there).
    std::string_view target = op.target;
    std::string_view top = target.substr(0, target.find('/'));
    if ((top == "proc" || top == "dev" || top == "sys") && top.size() != target.size()) continue;
    Result<UniqueFd> existing = SafeOpenAt(root_fd, target, O_PATH);
    if (existing) continue;
    if (existing.error().code() != ErrorCode::kNotFound) {
      return std::move(existing).error().Wrap("mount target /" + op.target);
    }
    if (!as_file) {
      IMGTOOL_TRY(SafeMkdirAll(root_fd, target, 0755).Wrap("create mount target /" + op.target));
      continue;
    }
    size_t slash = target.rfind('/');
    if (slash != std::string_view::npos) {
      IMGTOOL_TRY(SafeMkdirAll(root_fd, target.substr(0, slash), 0755)
                      .Wrap("create mount target /" + op.target));
    }
    Result<UniqueFd> created =
        SafeOpenAt(root_fd, target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
    if (!created && created.error().code() != ErrorCode::kAlreadyExists) {
      return std::move(created).error().Wrap("create mount target /" + op.target);
    }
  }
  return OkStatus();
}

namespace {

// True when the image's /etc, as overlay merges `lowers` (topmost first),
// is a root-owned 0755 directory or missing: then the etc targets layer's
// etc/ (root, 0755) merges with it and shows the same attributes.
bool EtcMergesWithTargetsLayer(const std::vector<std::string>& lowers) {
  for (const std::string& lower : lowers) {
    struct stat st {};
    if (::lstat((lower + "/etc").c_str(), &st) != 0) {
      if (errno == ENOENT) continue;
      return false;
    }
    if (S_ISCHR(st.st_mode) && st.st_rdev == 0) return true;  // a whiteout: /etc was deleted
    return S_ISDIR(st.st_mode) && st.st_uid == 0 && st.st_gid == 0 &&
           (st.st_mode & 07777) == 0755;
  }
  return true;
}

Status MakeEtcTargetsDir(const std::filesystem::path& dir) {
  struct stat st {};
  if (::stat((dir / kEtcFiles[0]).c_str(), &st) == 0) return OkStatus();
  std::string temp_template = dir.string() + ".tmp-XXXXXX";
  if (::mkdtemp(temp_template.data()) == nullptr) {
    return ErrnoError("create " + temp_template);
  }
  std::filesystem::path temp = temp_template;
  auto made = [&]() -> Status {
    if (::chmod(temp.c_str(), 0755) != 0) return ErrnoError("chmod " + temp.string());
    if (::mkdir((temp / "etc").c_str(), 0755) != 0 || ::chmod((temp / "etc").c_str(), 0755) != 0) {
      return ErrnoError("create " + (temp / "etc").string());
    }
    for (const char* name : kEtcFiles) {
      UniqueFd file(::open((temp / name).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      if (!file || ::fchmod(file.get(), 0644) != 0) {
        return ErrnoError("create " + (temp / name).string());
      }
    }
    if (::rename(temp.c_str(), dir.c_str()) != 0 && errno != EEXIST && errno != ENOTEMPTY) {
      return ErrnoError("rename " + temp.string() + " to " + dir.string());
    }
    return OkStatus();
  }();
  // Gone after the rename; another maker's copy won when it failed.
  (void)RemoveTree(temp);
  return made;
}

}  // namespace

Status AddEtcTargetsLayer(std::vector<Mount>* mounts, const std::filesystem::path& dir) {
  if (mounts->size() != 1) return OkStatus();
  std::vector<std::string> lowers = OverlayLowerDirs(mounts->front());
  if (lowers.empty() || lowers.size() + 1 > kMaxOverlayLowerLayers) return OkStatus();
  if (dir.string().find_first_of(":,") != std::string::npos) {
    return InvalidArgumentError("etc targets layer " + dir.string() +
                                ": contains ':' or ',', which overlay mount options can not hold");
  }
  if (!EtcMergesWithTargetsLayer(lowers)) return OkStatus();
  IMGTOOL_TRY(MakeEtcTargetsDir(dir).Wrap("etc targets layer"));
  // Before every other lower: the topmost.
  std::vector<std::string>& options = mounts->front().options;
  options.insert(options.begin(), "lowerdir+=" + dir.string());
  return OkStatus();
}

Result<UniqueFd> DetachRootfs(const std::vector<Mount>& mounts, const std::filesystem::path& dir,
                              const std::function<Status(int root_fd)>& inspect,
                              const MountIdmap* idmap, std::optional<Result<UniqueFd>> ahead) {
  // A lone overlay is made as a detached mount and handed over as it is:
  // nothing is mounted on the host, so nothing has to be unmounted there.
  if (idmap == nullptr && mounts.size() == 1) {
    Result<UniqueFd> detached = ahead ? std::move(*ahead) : MountDetached(mounts.front());
    if (detached) {
      if (inspect) IMGTOOL_TRY(inspect(detached->get()));
      return std::move(*detached);
    }
    if (detached.error().code() != ErrorCode::kNotFound) {
      return std::move(detached).error().Wrap("rootfs " + dir.string());
    }
  }
  std::vector<MountGuard> guards;
  if (!mounts.empty()) {
    std::vector<Mount> first = mounts;
    if (idmap != nullptr) {
      // A "volatile" overlay leaves a marker in its work dir that makes the
      // next mount of the same upper fail: only the second mount gets it.
      for (Mount& mount : first) std::erase(mount.options, "volatile");
    }
    // The mount point is made only here: a lone overlay needs none.
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError("create rootfs mount point " + dir.string());
    }
    IMGTOOL_ASSIGN_OR_RETURN(guards, MountAll(first, dir));
  }
  UniqueFd root(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return ErrnoError("open rootfs " + dir.string());
  if (inspect) IMGTOOL_TRY(inspect(root.get()));
  if (idmap != nullptr && !mounts.empty()) {
    // Overlayfs refuses an upper dir that another overlay still uses: the
    // plain mounts go first (guards are in reverse order already).
    root.reset();
    for (MountGuard& guard : guards) IMGTOOL_TRY(guard.Unmount());
    guards.clear();
    IMGTOOL_ASSIGN_OR_RETURN(guards, MountAll(mounts, dir, idmap));
    root.reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) return ErrnoError("open rootfs " + dir.string());
  }
  UniqueFd tree(OpenTree(root.get(), "",
                         OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH));
  if (!tree) return ErrnoError("clone the rootfs mount of " + dir.string() + " (open_tree)");
  // `guards` unmount (lazily) on return: the clone keeps the filesystem.
  return tree;
}

void RootfsAhead::Begin(const std::vector<Mount>& mounts) {
  if (thread_.joinable() || made_ || mounts.size() != 1) return;
  AllSignalsBlocked blocked;
  try {
    thread_ = std::thread([this, mount = mounts.front()] { made_.emplace(MountDetached(mount)); });
  } catch (const std::system_error& error) {
    LogDebug("rootfs made in line: ", error.what());
  }
}

std::optional<Result<UniqueFd>> RootfsAhead::Take() {
  if (thread_.joinable()) thread_.join();
  std::optional<Result<UniqueFd>> made = std::move(made_);
  made_.reset();
  return made;
}

RootfsAhead::~RootfsAhead() {
  if (thread_.joinable()) thread_.join();
}

ChildStatus SetupRootfs(const RootfsPlan& plan, int tree_fd) noexcept {
  // Nothing mounted from here on may reach the host's mount namespace.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return ChildStatus::Failure(errno, "make / private in the container's mount namespace");
  }
  // Stacked on "/": absolute paths still lead to the old root until the
  // pivot, and the tree itself is reached through its fd only.
  if (::syscall(SYS_move_mount, tree_fd, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return ChildStatus::Failure(errno, "attach the rootfs");
  }
  {
    DirCache cache;
    for (size_t i = 0; i < plan.ops.size(); ++i) IMGTOOL_CHILD_TRY(RunOp(tree_fd, i, plan, &cache));
  }

  // pivot_root(".", "."): the old root ends up on top of the new one, and the
  // unmount takes it off; no directory for it is needed in the image.
  if (::fchdir(tree_fd) != 0) return ChildStatus::Failure(errno, "chdir into the rootfs");
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return ChildStatus::Failure(errno, "pivot_root");
  if (::umount2(".", MNT_DETACH) != 0) return ChildStatus::Failure(errno, "detach the old root");
  if (::chdir("/") != 0) return ChildStatus::Failure(errno, "chdir /");
  if (plan.read_only) {
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_RDONLY;
    if (::syscall(SYS_mount_setattr, AT_FDCWD, "/", 0, &attr, sizeof(attr)) != 0) {
      return ChildStatus::Failure(errno, "make / read-only");
    }
  }
  return ChildStatus();
}

}  // namespace imgtool::runner
