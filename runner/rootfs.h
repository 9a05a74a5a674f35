// The container's filesystem. The parent assembles the rootfs (the caller's
// mounts, e.g. the snapshotter's overlay) and keeps it only as a detached mount
// tree (open_tree clone): the host is left with no mount to clean up. It also
// builds a plan, a list of mount operations, opens the host side of every bind
// as a detached tree too, and makes sure every mount target exists in the
// image. The child, in its new mount namespace, stacks the tree on "/", runs
// the plan relative to the tree (/proc, /dev, /sys, binds, masked and read-only
// paths), pivots into it and detaches the old root. It never looks up a host
// path but /dev/null and friends, so it works from a user namespace whose root
// can not enter the caller's private directories.
//
// Every target is resolved inside the rootfs with openat2(RESOLVE_IN_ROOT), so
// a symlink in an image can not send a mount to a host path; the mount calls
// then go through /proc/self/fd/N or the fd itself (move_mount).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/mount.h"
#include "common/unique_fd.h"
#include "runner/child_status.h"
#include "runner/process_spec.h"

namespace imgtool::runner {

struct RootfsOp {
  enum class Kind {
    kMountFs,   // a new `fstype` filesystem at target (created as a dir when missing)
    kBind,      // host `source` (file or dir, recursively) at target; ro if `read_only`
    kMask,      // /dev/null over a file, an empty read-only tmpfs over a dir; skipped if missing
    kReadOnly,  // target becomes a read-only bind of itself; skipped if missing
    kMkdir,     // mkdir -p target with `mode`
    kDevice,    // char device `device` at target with `mode` (a bind of host `source`
                // where mknod is not allowed, as in a user namespace)
    kSymlink,   // target -> source
    kSeal,      // the mount at target (itself, not what is mounted below) becomes read-only
  };
  Kind kind = Kind::kMkdir;
  std::string target;  // inside the rootfs, relative: "dev/pts"
  std::string source;
  std::string fstype;
  unsigned long flags = 0;  // MS_* for kMountFs
  std::string data;         // filesystem options for kMountFs
  bool read_only = false;
  mode_t mode = 0755;
  dev_t device = 0;

  friend bool operator==(const RootfsOp&, const RootfsOp&) = default;
};

// One cgroup v1 hierarchy as a container sees it under /sys/fs/cgroup (docker's
// layout): a dir named as on the host ("cpu,cpuacct"), the hierarchy mounted
// there (rooted at the container's cgroup by its cgroup namespace), and a
// symlink per co-mounted controller ("cpu" -> "cpu,cpuacct").
struct CgroupV1View {
  std::string name;
  std::string controllers;  // the mount's options: "cpu,cpuacct"
  std::vector<std::string> aliases;

  friend bool operator==(const CgroupV1View&, const CgroupV1View&) = default;
};

struct RootfsOptions {
  bool privileged = false;    // no masked or read-only paths, /sys writable
  bool read_only = false;     // --read-only: / itself read-only
  bool new_netns = true;      // a sysfs of our own needs a netns of our own
  bool user_namespace = false;
  bool mount_cgroup2 = false;  // a cgroup2 view at /sys/fs/cgroup (cgroup v2 hosts)
  // cgroup v1 hosts: a tmpfs at /sys/fs/cgroup holding these hierarchies.
  std::vector<CgroupV1View> cgroup_v1;
  std::vector<VolumeMount> volumes;
  std::vector<TmpfsMount> tmpfs;
  // Host file -> container path (absolute): /etc/hosts, /etc/hostname, ...
  std::vector<std::pair<std::string, std::string>> file_binds;
  std::string cwd = "/";  // created when missing
};

struct RootfsPlan {
  std::vector<RootfsOp> ops;
  // Per op: for kBind, the detached tree of the source (PrepareRootfsPlan).
  std::vector<UniqueFd> bind_trees;
  bool read_only = false;
  bool devices_by_bind = false;
};

// runc's lists.
inline constexpr std::string_view kMaskedPaths[] = {
    "/proc/acpi",          "/proc/asound",    "/proc/kcore",       "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi",          "/sys/firmware",   "/sys/devices/virtual/powercap",
};
inline constexpr std::string_view kReadOnlyPaths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

// Builds the plan. Pure: no I/O.
Result<RootfsPlan> BuildRootfsPlan(const RootfsOptions& options);

// Parent side, with the assembled rootfs open at `root_fd`: opens the source
// of every bind as a detached tree (read-only ones made read-only there), and
// creates the mount targets that are missing in the image (directories, or
// empty files for file binds), resolved inside the rootfs.
Status PrepareRootfsPlan(RootfsPlan* plan, int root_fd);

struct TmpfsOptions {
  unsigned long flags = 0;
  std::string data;
};
// "--tmpfs PATH:OPTIONS" options; empty is docker's "rw,noexec,nosuid,nodev".
Result<TmpfsOptions> ParseTmpfsOptions(std::string_view options);

// The /etc files every container gets bound over (hosts, hostname,
// resolv.conf; see Container::Start), relative to the rootfs.
inline constexpr const char* kEtcFiles[] = {"etc/hosts", "etc/hostname", "etc/resolv.conf"};

// A directory holding empty kEtcFiles, made once at `dir` (atomically: a
// concurrent maker's copy is as good), and stacked by `mounts`' lone overlay
// as its topmost lower layer, so that the bind targets exist without being
// created in the container's writable layer: an image without /etc/hosts
// would otherwise cost a copy-up of /etc and a new file there on every run,
// and their removal after. As docker's init layer, which holds the same
// files. Left out (mounts unchanged) when `mounts` is not one overlay, or
// when the image's /etc is not a directory (a symlink, say), which the
// layer's etc/ would hide.
Status AddEtcTargetsLayer(std::vector<Mount>* mounts, const std::filesystem::path& dir);

// Parent side: mounts `mounts` in order at `dir` (none: `dir` is the rootfs),
// calls `inspect` with an fd on the assembled root (to read /etc/passwd), and
// returns a detached clone of the tree; the mounts at `dir` are undone before
// returning, so nothing stays mounted on the host. A lone overlay is made as a
// detached mount (MountDetached) and never appears at `dir` at all.
//
// With an `idmap`, the tree returned is assembled again after `inspect`
// with idmapped mounts (see MountAt), so that the image's files belong to the
// container's root in a user namespace with that mapping; `inspect` itself
// runs on the plain mounts, where the host's root may create mount targets.
//
// `ahead` is a lone overlay's MountDetached result made beforehand
// (RootfsAhead), taken instead of making it here.
Result<UniqueFd> DetachRootfs(const std::vector<Mount>& mounts, const std::filesystem::path& dir,
                              const std::function<Status(int root_fd)>& inspect,
                              const MountIdmap* idmap = nullptr,
                              std::optional<Result<UniqueFd>> ahead = std::nullopt);

// Makes a lone overlay rootfs (MountDetached) on a thread of its own while
// the caller plans the rest of the container: the new overlay's superblock,
// its work dirs and the lookups of its layers are about 0.4 ms of kernel
// work on the way to the clone. Begins nothing for anything else (several
// mounts, or none), or when no thread can be made; DetachRootfs then makes
// the rootfs itself. The thread starts with every signal blocked.
class RootfsAhead {
 public:
  RootfsAhead() = default;
  RootfsAhead(const RootfsAhead&) = delete;
  RootfsAhead& operator=(const RootfsAhead&) = delete;
  ~RootfsAhead();  // waits for the thread; an untaken mount is closed

  void Begin(const std::vector<Mount>& mounts);
  // Waits for the thread; what it made (for DetachRootfs's `ahead`), or
  // nullopt when nothing was begun.
  std::optional<Result<UniqueFd>> Take();

 private:
  std::thread thread_;
  std::optional<Result<UniqueFd>> made_;
};

// Child side, in the new mount namespace: makes / private, stacks `tree_fd`
// on /, runs the plan, pivots into it and detaches the old root; then
// --read-only. Allocation-free.
ChildStatus SetupRootfs(const RootfsPlan& plan, int tree_fd) noexcept;

}  // namespace imgtool::runner
