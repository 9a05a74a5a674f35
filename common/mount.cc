#include "common/mount.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <string_view>
#include <utility>

#include "common/log.h"
#include "common/unique_fd.h"

namespace imgtool {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_force_legacy_overlay{false};

// Mount options split into what the VFS takes as flags and what the filesystem parses.
struct ParsedOptions {
  unsigned long flags = 0;        // MS_* for mount(2)
  unsigned long propagation = 0;  // MS_PRIVATE, MS_SLAVE, ... (| MS_REC)
  bool bind = false;
  bool recursive = false;
  bool atime_set = false;  // one of noatime/relatime/strictatime was given
  std::vector<std::string> data;
};

struct FlagOption {
  std::string_view name;
  bool clear;
  unsigned long flag;
};

constexpr FlagOption kFlagOptions[] = {
    {"ro", false, MS_RDONLY},
    {"rw", true, MS_RDONLY},
    {"nosuid", false, MS_NOSUID},
    {"suid", true, MS_NOSUID},
    {"nodev", false, MS_NODEV},
    {"dev", true, MS_NODEV},
    {"noexec", false, MS_NOEXEC},
    {"exec", true, MS_NOEXEC},
    {"noatime", false, MS_NOATIME},
    {"relatime", false, MS_RELATIME},
    {"strictatime", false, MS_STRICTATIME},
    {"nodiratime", false, MS_NODIRATIME},
    {"sync", false, MS_SYNCHRONOUS},
    {"dirsync", false, MS_DIRSYNC},
};

constexpr std::pair<std::string_view, unsigned long> kPropagationOptions[] = {
    {"private", MS_PRIVATE},       {"rprivate", MS_PRIVATE | MS_REC},
    {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
    {"slave", MS_SLAVE},           {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
};

constexpr unsigned long kAtimeFlags = MS_NOATIME | MS_RELATIME | MS_STRICTATIME;

ParsedOptions ParseOptions(const std::vector<std::string>& options) {
  ParsedOptions parsed;
  for (const std::string& option : options) {
    if (option == "bind" || option == "rbind") {
      parsed.bind = true;
      parsed.recursive = parsed.recursive || option == "rbind";
      continue;
    }
    bool handled = false;
    for (const FlagOption& flag : kFlagOptions) {
      if (option != flag.name) continue;
      if (flag.clear) {
        parsed.flags &= ~flag.flag;
      } else {
        if (flag.flag & kAtimeFlags) {
          parsed.flags &= ~kAtimeFlags;
          parsed.atime_set = true;
        }
        parsed.flags |= flag.flag;
      }
      handled = true;
      break;
    }
    for (const auto& [name, flag] : kPropagationOptions) {
      if (handled || option != name) continue;
      parsed.propagation = flag;
      handled = true;
    }
    if (!handled) parsed.data.push_back(option);
  }
  return parsed;
}

std::string Join(const std::vector<std::string>& parts, char separator) {
  std::string out;
  for (const std::string& part : parts) {
    if (!out.empty()) out.push_back(separator);
    out.append(part);
  }
  return out;
}

size_t PageSize() {
  long page = ::sysconf(_SC_PAGESIZE);
  return page > 0 ? static_cast<size_t>(page) : 4096;
}

// mount(2) copies at most one page of options and the kernel cuts the rest off
// without a word; with overlay that silently drops lower layers.
bool FitsLegacyLimit(const std::string& data) { return data.size() <= PageSize() - 1; }

Status CheckLegacyDataSize(const std::string& data, std::string_view what) {
  size_t limit = PageSize() - 1;
  if (FitsLegacyLimit(data)) return OkStatus();
  return InvalidArgumentError(StrCat(what, " is ", data.size(),
                                     " bytes, over the kernel's limit of ", limit,
                                     " bytes (one page) for mount options"));
}

Status ApplyPropagation(const ParsedOptions& options, const fs::path& target) {
  if (options.propagation == 0) return OkStatus();
  if (::mount(nullptr, target.c_str(), nullptr, options.propagation, nullptr) != 0) {
    return ErrnoError("set mount propagation");
  }
  return OkStatus();
}

// Flags a remount of a bind mount has to keep: the kernel refuses (EPERM) to
// clear nosuid/nodev/noexec/atime flags that are locked on the source mount.
unsigned long FlagsToKeep(const fs::path& target, const ParsedOptions& options) {
  struct statvfs info {};
  if (::statvfs(target.c_str(), &info) != 0) return 0;
  unsigned long keep = 0;
  if (info.f_flag & ST_NOSUID) keep |= MS_NOSUID;
  if (info.f_flag & ST_NODEV) keep |= MS_NODEV;
  if (info.f_flag & ST_NOEXEC) keep |= MS_NOEXEC;
  if (!options.atime_set) {
    if (info.f_flag & ST_NOATIME) keep |= MS_NOATIME;
    if (info.f_flag & ST_RELATIME) keep |= MS_RELATIME;
  }
  if (info.f_flag & ST_NODIRATIME) keep |= MS_NODIRATIME;
  return keep;
}

Status MountBind(const Mount& mount, const ParsedOptions& options, const fs::path& target) {
  unsigned long bind_flags = MS_BIND | (options.recursive ? MS_REC : 0);
  if (::mount(mount.source.c_str(), target.c_str(), nullptr, bind_flags, nullptr) != 0) {
    return ErrnoError("bind " + mount.source);
  }
  // Until every flag is in place the mount must not stay behind, least of all
  // writable when "ro" was asked for.
  MountGuard undo(target);
  unsigned long wanted = options.flags & ~(MS_SYNCHRONOUS | MS_DIRSYNC);
  if (wanted != 0) {
    unsigned long remount = MS_REMOUNT | MS_BIND | wanted | FlagsToKeep(target, options);
    if (::mount(nullptr, target.c_str(), nullptr, remount, nullptr) != 0) {
      return ErrnoError("remount bind of " + mount.source + " with its flags");
    }
  }
  if (options.recursive && (options.flags & MS_RDONLY)) {
    // A remount changes only the top mount; submounts of an rbind need mount_setattr.
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_RDONLY;
    if (::syscall(SYS_mount_setattr, AT_FDCWD, target.c_str(), AT_RECURSIVE, &attr, sizeof(attr)) !=
        0) {
      return ErrnoError("make recursive bind of " + mount.source +
                        " read-only (mount_setattr, Linux >= 5.12)");
    }
  }
  IMGTOOL_TRY(ApplyPropagation(options, target));
  undo.Release();
  return OkStatus();
}

Status MountPlain(const Mount& mount, const ParsedOptions& options, const fs::path& target) {
  std::string data = Join(options.data, ',');
  IMGTOOL_TRY(CheckLegacyDataSize(data, "option string"));
  const char* source = mount.source.empty() ? mount.type.c_str() : mount.source.c_str();
  if (::mount(source, target.c_str(), mount.type.c_str(), options.flags,
              data.empty() ? nullptr : data.c_str()) != 0) {
    return ErrnoError(data.empty() ? "mount" : "mount with \"" + data + "\"");
  }
  MountGuard undo(target);
  IMGTOOL_TRY(ApplyPropagation(options, target));
  undo.Release();
  return OkStatus();
}

// ---- overlay ----

struct OverlayConfig {
  std::vector<std::string> lowers;  // topmost first
  // Every other filesystem parameter in order; an empty value is a bare flag.
  std::vector<std::pair<std::string, std::string>> params;
};

// Appends the lower dirs one overlay option names ("lowerdir=A:B", A the
// topmost, or "lowerdir+=C") to `lowers`, empty paths included; false for
// any other option.
bool AppendLowerDirs(std::string_view option, std::vector<std::string>* lowers) {
  if (option.starts_with("lowerdir+=")) {
    lowers->emplace_back(option.substr(10));
    return true;
  }
  if (!option.starts_with("lowerdir=")) return false;
  std::string_view value = option.substr(9);
  while (true) {
    size_t colon = value.find(':');
    lowers->emplace_back(value.substr(0, colon));
    if (colon == std::string_view::npos) return true;
    value.remove_prefix(colon + 1);
  }
}

Result<OverlayConfig> ParseOverlayConfig(const ParsedOptions& options) {
  OverlayConfig config;
  for (const std::string& option : options.data) {
    size_t before = config.lowers.size();
    if (AppendLowerDirs(option, &config.lowers)) {
      for (size_t i = before; i < config.lowers.size(); ++i) {
        if (config.lowers[i].empty()) {
          return InvalidArgumentError("empty path in \"" + option + "\"");
        }
      }
      continue;
    }
    size_t eq = option.find('=');
    std::string key = option.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : option.substr(eq + 1);
    if (eq != std::string::npos && value.empty()) {
      return InvalidArgumentError("empty value in \"" + option + "\"");
    } else {
      config.params.emplace_back(std::move(key), std::move(value));
    }
  }
  if (config.lowers.empty()) return InvalidArgumentError("no lowerdir given");
  if (config.lowers.size() > kMaxOverlayLowerLayers) {
    return InvalidArgumentError(StrCat(config.lowers.size(),
                                       " lower layers, over the kernel's limit of ",
                                       kMaxOverlayLowerLayers, " (flatten or squash the image)"));
  }
  for (const std::string& lower : config.lowers) {
    if (lower.find(',') != std::string::npos) {
      return InvalidArgumentError("lower path \"" + lower + "\" contains ','");
    }
  }
  return config;
}

uint64_t MountAttrs(unsigned long flags) {
  uint64_t attrs = 0;
  if (flags & MS_RDONLY) attrs |= MOUNT_ATTR_RDONLY;
  if (flags & MS_NOSUID) attrs |= MOUNT_ATTR_NOSUID;
  if (flags & MS_NODEV) attrs |= MOUNT_ATTR_NODEV;
  if (flags & MS_NOEXEC) attrs |= MOUNT_ATTR_NOEXEC;
  if (flags & MS_NOATIME) attrs |= MOUNT_ATTR_NOATIME;
  if (flags & MS_STRICTATIME) attrs |= MOUNT_ATTR_STRICTATIME;
  if (flags & MS_NODIRATIME) attrs |= MOUNT_ATTR_NODIRATIME;
  return attrs;
}

int FsOpen(const char* fs_name) {
  return static_cast<int>(::syscall(SYS_fsopen, fs_name, FSOPEN_CLOEXEC));
}

int FsConfig(int fs_fd, unsigned int cmd, const char* key, const char* value) {
  return static_cast<int>(::syscall(SYS_fsconfig, fs_fd, cmd, key, value, 0));
}

// The kernel explains most fsconfig failures in the context's message log
// ("e overlay: ..."), which says far more than the errno alone.
std::string DrainKernelLog(int fs_fd) {
  std::string joined;
  char buf[1024];
  while (true) {
    ssize_t n = ::read(fs_fd, buf, sizeof(buf) - 1);
    if (n <= 0) break;
    std::string_view line(buf, static_cast<size_t>(n));
    while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    if (line.size() > 2 && line[1] == ' ') line.remove_prefix(2);
    if (!joined.empty()) joined.append("; ");
    joined.append(line);
  }
  return joined;
}

Error FsConfigError(int fs_fd, std::string what) {
  int saved = errno;
  std::string log = DrainKernelLog(fs_fd);
  if (!log.empty()) what += " (kernel: " + log + ")";
  return ErrnoError(what, saved);
}

// True when overlayfs takes "lowerdir+" through fsconfig (Linux >= 6.8). Before
// 6.5 overlayfs went through the legacy adapter, which accepts any key at
// fsconfig time and fails only at create, so a made-up key must be refused too.
// This probe has a context of its own, and closing an overlay context that
// made no superblock waits for an expedited RCU grace period (ovl_free_fs),
// about half a millisecond: OpenOverlayContext asks it only when it must.
bool KernelHasLowerdirPlus() {
  static const bool has = [] {
    UniqueFd fs_fd(FsOpen("overlay"));
    if (!fs_fd) return false;
    if (FsConfig(fs_fd.get(), FSCONFIG_SET_STRING, "lowerdir+", "/") != 0) return false;
    bool has_lowerdir_plus =
        FsConfig(fs_fd.get(), FSCONFIG_SET_FLAG, "imgtool-probe-unknown", nullptr) != 0;
    LogDebug("overlay: kernel ", has_lowerdir_plus ? "has" : "lacks", " fsconfig lowerdir+");
    return has_lowerdir_plus;
  }();
  return has;
}

// Set once a context this process went on to use took "lowerdir+".
std::atomic<bool> g_lowerdir_plus_taken{false};

// An overlay filesystem context with `config`'s lowers given through
// "lowerdir+", or an empty fd when this kernel's overlayfs lacks that key.
// The first context of a process is its own probe: a made-up flag must be
// refused (not the legacy adapter), then the first lower taken. Only when
// that lower is refused does the separate probe decide between a kernel
// without the key and a bad path.
Result<UniqueFd> OpenOverlayContext(const OverlayConfig& config) {
  if (g_force_legacy_overlay.load()) return UniqueFd();
  UniqueFd fs_fd(FsOpen("overlay"));
  if (!fs_fd) return ErrnoError("fsopen");
  const bool known = g_lowerdir_plus_taken.load();
  if (!known && FsConfig(fs_fd.get(), FSCONFIG_SET_FLAG, "imgtool-probe-unknown", nullptr) == 0) {
    LogDebug("overlay: kernel lacks fsconfig lowerdir+ (legacy mount adapter)");
    return UniqueFd();
  }
  for (size_t i = 0; i < config.lowers.size(); ++i) {
    const std::string& lower = config.lowers[i];
    if (FsConfig(fs_fd.get(), FSCONFIG_SET_STRING, "lowerdir+", lower.c_str()) != 0) {
      if (i == 0 && !known && errno == EINVAL) {
        int saved = errno;
        if (!KernelHasLowerdirPlus()) return UniqueFd();
        errno = saved;
      }
      return FsConfigError(fs_fd.get(), "lowerdir+ \"" + lower + "\"");
    }
    if (i == 0 && !known) g_lowerdir_plus_taken.store(true);
  }
  return fs_fd;
}

// Every non-layer overlay parameter, in order: a bare flag or key=value.
Status SetOverlayParams(int fs_fd, const std::vector<std::pair<std::string, std::string>>& params) {
  for (const auto& [key, value] : params) {
    int rc = value.empty() ? FsConfig(fs_fd, FSCONFIG_SET_FLAG, key.c_str(), nullptr)
                           : FsConfig(fs_fd, FSCONFIG_SET_STRING, key.c_str(), value.c_str());
    if (rc != 0) return FsConfigError(fs_fd, value.empty() ? key : key + "=" + value);
  }
  return OkStatus();
}

// A detached mount tree attached at `target`, then the options'
// propagation; nothing stays mounted on error.
Status AttachTree(int tree_fd, const ParsedOptions& options, const fs::path& target) {
  if (::syscall(SYS_move_mount, tree_fd, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) !=
      0) {
    return ErrnoError("move_mount");
  }
  MountGuard undo(target);
  IMGTOOL_TRY(ApplyPropagation(options, target));
  undo.Release();
  return OkStatus();
}

// fsmount of a created filesystem context with the options' flags, attached
// at `target`.
Status AttachCreatedMount(int fs_fd, const ParsedOptions& options, const fs::path& target) {
  UniqueFd mount_fd(
      static_cast<int>(::syscall(SYS_fsmount, fs_fd, FSMOUNT_CLOEXEC, MountAttrs(options.flags))));
  if (!mount_fd) return FsConfigError(fs_fd, "fsmount");
  return AttachTree(mount_fd.get(), options, target);
}

// The overlay through the new mount API, as a detached mount, from a context
// OpenOverlayContext made.
Result<UniqueFd> CreateOverlayNewApi(int fs_fd, const OverlayConfig& config,
                                     const ParsedOptions& options) {
  IMGTOOL_TRY(SetOverlayParams(fs_fd, config.params));
  if (FsConfig(fs_fd, FSCONFIG_CMD_CREATE, nullptr, nullptr) != 0) {
    return FsConfigError(fs_fd, StrCat("create with ", config.lowers.size(), " lower layers"));
  }
  UniqueFd mount_fd(
      static_cast<int>(::syscall(SYS_fsmount, fs_fd, FSMOUNT_CLOEXEC, MountAttrs(options.flags))));
  if (!mount_fd) return FsConfigError(fs_fd, "fsmount");
  return mount_fd;
}

std::string LegacyOverlayData(const std::vector<std::string>& lowers, const OverlayConfig& config) {
  std::string data = "lowerdir=" + Join(lowers, ':');
  for (const auto& [key, value] : config.params) {
    data.push_back(',');
    data.append(value.empty() ? key : key + "=" + value);
  }
  return data;
}

// The deepest directory that holds every path (all absolute).
fs::path CommonDirectory(const std::vector<fs::path>& paths) {
  fs::path common = paths.front().parent_path();
  for (const fs::path& path : paths) {
    while (common != common.root_path()) {
      auto [common_end, path_it] =
          std::mismatch(common.begin(), common.end(), path.begin(), path.end());
      if (common_end == common.end() && path_it != path.end()) break;
      common = common.parent_path();
    }
  }
  return common;
}

// mount(2) from a child that first changes into `dir`, so that lower paths
// relative to it stay short; the child keeps the chdir away from this
// process's other threads. Only async-signal-safe calls run in the child.
Status MountFromDirectory(const fs::path& dir, const fs::path& target, unsigned long flags,
                          const std::string& data) {
  UniqueFd dir_fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd) return ErrnoError("open " + dir.string());
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoError("fork to mount from " + dir.string());
  if (pid == 0) {
    if (::fchdir(dir_fd.get()) != 0) ::_exit(errno);
    if (::mount("overlay", target.c_str(), "overlay", flags, data.c_str()) != 0) ::_exit(errno);
    ::_exit(0);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return ErrnoError("wait for mount child");
  }
  if (!WIFEXITED(status)) return InternalError("mount child died by a signal");
  if (WEXITSTATUS(status) != 0) {
    return ErrnoError("mount(2) with lowers relative to " + dir.string(), WEXITSTATUS(status));
  }
  return OkStatus();
}

Status MountOverlayLegacy(const OverlayConfig& config, const ParsedOptions& options,
                          const fs::path& target) {
  for (const std::string& lower : config.lowers) {
    if (lower.find(':') != std::string::npos) {
      return InvalidArgumentError("lower path \"" + lower + "\" contains ':'");
    }
  }
  std::string data = LegacyOverlayData(config.lowers, config);
  if (FitsLegacyLimit(data)) {
    if (::mount("overlay", target.c_str(), "overlay", options.flags, data.c_str()) != 0) {
      return ErrnoError("mount(2)");
    }
  } else {
    // Too long as given: make the lowers relative to the directory they share
    // (a snapshotter root turns "<root>/17/fs" into "17/fs").
    std::vector<fs::path> absolute;
    for (const std::string& lower : config.lowers) {
      fs::path path = fs::absolute(lower).lexically_normal();
      if (path.has_relative_path() && path.filename().empty()) path = path.parent_path();
      absolute.push_back(std::move(path));
    }
    fs::path common = CommonDirectory(absolute);
    std::vector<std::string> relative;
    for (const fs::path& lower : absolute) {
      relative.push_back(lower.lexically_relative(common).string());
    }
    std::string short_data = LegacyOverlayData(relative, config);
    IMGTOOL_TRY(CheckLegacyDataSize(
        short_data, StrCat("option string for ", config.lowers.size(),
                           " lower layers, even relative to ", common.string(), ",")));
    IMGTOOL_TRY(MountFromDirectory(common, fs::absolute(target), options.flags, short_data));
  }
  MountGuard undo(target);
  IMGTOOL_TRY(ApplyPropagation(options, target));
  undo.Release();
  return OkStatus();
}

// A clone of `path` (with its submounts when `recursive`) whose files appear
// with their owners shifted by the id mapping of `userns_fd`, with the mount
// attributes `attrs` as well.
Result<UniqueFd> IdmappedClone(const fs::path& path, int userns_fd, bool recursive = false,
                               uint64_t attrs = 0) {
  unsigned int flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0);
  UniqueFd tree(static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, path.c_str(), flags)));
  if (!tree) return ErrnoError("clone " + path.string() + " (open_tree)");
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_IDMAP | attrs;
  attr.userns_fd = static_cast<uint64_t>(userns_fd);
  if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0),
                &attr, sizeof(attr)) != 0) {
    return ErrnoError("idmap the mount of " + path.string() + " (mount_setattr)");
  }
  return tree;
}

// FSCONFIG_CMD_CREATE with this thread's fs ids set to `uid`/`gid` and its
// effective capabilities unchanged; both restored afterwards. Raw syscalls:
// setfsuid and capset act on the calling thread only.
Status CreateAsIds(int fs_fd, uid_t uid, gid_t gid) {
  struct __user_cap_header_struct header {};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  struct __user_cap_data_struct caps[2] {};
  if (::syscall(SYS_capget, &header, caps) != 0) return ErrnoError("capget");
  uid_t old_uid = static_cast<uid_t>(::syscall(SYS_setfsuid, uid));
  gid_t old_gid = static_cast<gid_t>(::syscall(SYS_setfsgid, gid));
  // A non-zero fsuid drops the file capabilities from the effective set.
  int rc = static_cast<int>(::syscall(SYS_capset, &header, caps));
  int saved = errno;
  if (rc == 0) {
    rc = FsConfig(fs_fd, FSCONFIG_CMD_CREATE, nullptr, nullptr);
    saved = errno;
  }
  ::syscall(SYS_setfsgid, old_gid);
  ::syscall(SYS_setfsuid, old_uid);
  ::syscall(SYS_capset, &header, caps);
  if (rc != 0) {
    errno = saved;
    return FsConfigError(fs_fd, StrCat("as ", uid, ":", gid));
  }
  return OkStatus();
}

// The overlay on idmapped layers. Every layer lives under one directory (the
// snapshotter's root), so one idmapped clone of it serves them all, and the
// layers go to the kernel as fds opened in that clone.
Status MountOverlayIdmapped(const OverlayConfig& config, const ParsedOptions& options,
                            const fs::path& target, const MountIdmap& idmap) {
  std::vector<fs::path> layers;
  for (const std::string& lower : config.lowers) layers.push_back(fs::absolute(lower));
  std::vector<std::pair<std::string, std::string>> params;
  std::vector<std::pair<std::string, size_t>> layer_params;  // upperdir/workdir -> index in layers
  for (const auto& [key, value] : config.params) {
    if (key == "upperdir" || key == "workdir") {
      layer_params.emplace_back(key, layers.size());
      layers.push_back(fs::absolute(value));
    } else {
      params.emplace_back(key, value);
    }
  }
  for (fs::path& layer : layers) {
    layer = layer.lexically_normal();
    if (layer.has_relative_path() && layer.filename().empty()) layer = layer.parent_path();
  }
  fs::path common = layers.size() == 1 ? layers.front() : CommonDirectory(layers);
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd clone, IdmappedClone(common, idmap.userns_fd));
  auto open_layer = [&](const fs::path& layer) -> Result<UniqueFd> {
    fs::path relative = layer.lexically_relative(common);
    UniqueFd fd(::openat(clone.get(), relative.empty() ? "." : relative.c_str(),
                         O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return ErrnoError("open layer " + layer.string());
    return fd;
  };
  UniqueFd fs_fd(FsOpen("overlay"));
  if (!fs_fd) return ErrnoError("fsopen");
  auto set_fd = [&](const char* key, const fs::path& layer) -> Status {
    IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, open_layer(layer));
    if (::syscall(SYS_fsconfig, fs_fd.get(), FSCONFIG_SET_FD, key, nullptr, fd.get()) != 0) {
      std::string what = StrCat(key, " ", layer.string(), " by fd");
      if (errno == EINVAL) what += " (idmapped layers need Linux >= 6.13)";
      return FsConfigError(fs_fd.get(), what);
    }
    return OkStatus();
  };
  for (size_t i = 0; i < config.lowers.size(); ++i) IMGTOOL_TRY(set_fd("lowerdir+", layers[i]));
  for (const auto& [key, index] : layer_params) IMGTOOL_TRY(set_fd(key.c_str(), layers[index]));
  IMGTOOL_TRY(SetOverlayParams(fs_fd.get(), params));
  // Overlayfs does its own work in the upper dir (work/work, copy-up) with
  // the credentials of its creator. The host's root has no id through the
  // idmapped upper (EOVERFLOW, and the overlay would go read-only), so this
  // thread creates it as the namespace's root, with its capabilities kept.
  IMGTOOL_TRY(CreateAsIds(fs_fd.get(), idmap.root_uid, idmap.root_gid)
                  .Wrap(StrCat("create with ", config.lowers.size(), " idmapped lower layers")));
  return AttachCreatedMount(fs_fd.get(), options, target);
}

// An idmapped bind mount of `mount.source` (recursive with "rbind").
Status MountBindIdmapped(const Mount& mount, const ParsedOptions& options, const fs::path& target,
                         const MountIdmap& idmap) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd tree, IdmappedClone(mount.source, idmap.userns_fd,
                                                        options.recursive,
                                                        MountAttrs(options.flags)));
  return AttachTree(tree.get(), options, target);
}

Status MountOverlay(const ParsedOptions& options, const fs::path& target, const MountIdmap* idmap) {
  IMGTOOL_ASSIGN_OR_RETURN(OverlayConfig config, ParseOverlayConfig(options));
  if (idmap != nullptr) return MountOverlayIdmapped(config, options, target, *idmap);
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fs_fd, OpenOverlayContext(config));
  if (!fs_fd) return MountOverlayLegacy(config, options, target);
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd tree, CreateOverlayNewApi(fs_fd.get(), config, options));
  return AttachTree(tree.get(), options, target);
}

}  // namespace

std::vector<std::string> OverlayLowerDirs(const Mount& mount) {
  std::vector<std::string> lowers;
  if (mount.type != "overlay") return lowers;
  for (const std::string& option : mount.options) AppendLowerDirs(option, &lowers);
  return lowers;
}

void SetOverlayLegacyMountForTesting(bool force_legacy) { g_force_legacy_overlay = force_legacy; }

Status MountAt(const Mount& mount, const fs::path& target, const MountIdmap* idmap) {
  ParsedOptions options = ParseOptions(mount.options);
  std::string context = "mount " + mount.type + " at " + target.string();
  if (mount.type == "bind" || options.bind) {
    if (mount.source.empty()) return InvalidArgumentError(context + ": bind without a source");
    if (idmap != nullptr) return MountBindIdmapped(mount, options, target, *idmap).Wrap(context);
    return MountBind(mount, options, target).Wrap(context);
  }
  if (mount.type.empty()) return InvalidArgumentError(context + ": no filesystem type");
  if (mount.type == "overlay") return MountOverlay(options, target, idmap).Wrap(context);
  if (idmap != nullptr) {
    return InvalidArgumentError(context + ": only bind and overlay mounts can be idmapped");
  }
  return MountPlain(mount, options, target).Wrap(context);
}

Result<UniqueFd> MountDetached(const Mount& mount) {
  ParsedOptions options = ParseOptions(mount.options);
  auto none_here = [&] { return NotFoundError("no detached mount of " + mount.type + " here"); };
  if (mount.type != "overlay" || options.bind || options.propagation != 0) return none_here();
  IMGTOOL_ASSIGN_OR_RETURN(OverlayConfig config, ParseOverlayConfig(options));
  Result<UniqueFd> fs_fd = OpenOverlayContext(config);
  if (fs_fd && !*fs_fd) return none_here();
  if (!fs_fd) return std::move(fs_fd).Wrap("mount overlay (detached)");
  return CreateOverlayNewApi(fs_fd->get(), config, options).Wrap("mount overlay (detached)");
}

MountGuard& MountGuard::operator=(MountGuard&& other) noexcept {
  if (this != &other) {
    (void)Unmount();
    target_ = std::move(other.target_);
    other.target_.clear();
  }
  return *this;
}

MountGuard::~MountGuard() {
  Status status = Unmount();
  if (!status) LogWarning(status.error().ToString());
}

Status MountGuard::Unmount() {
  if (target_.empty()) return OkStatus();
  fs::path target = std::move(target_);
  target_.clear();
  if (::umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
    return ErrnoError("unmount " + target.string());
  }
  return OkStatus();
}

fs::path MountGuard::Release() {
  fs::path target = std::move(target_);
  target_.clear();
  return target;
}

Result<std::vector<MountGuard>> MountAll(const std::vector<Mount>& mounts, const fs::path& target,
                                         const MountIdmap* idmap) {
  std::vector<MountGuard> guards;
  guards.reserve(mounts.size());
  for (const Mount& mount : mounts) {
    IMGTOOL_TRY(MountAt(mount, target, idmap));
    guards.emplace_back(target);
  }
  // Last mount first, so that destroying the vector front to back undoes them in reverse.
  std::reverse(guards.begin(), guards.end());
  return guards;
}

}  // namespace imgtool
