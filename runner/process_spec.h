// What the runner is asked to run, as plain data. The runner knows no images:
// the caller (cli/, builder/) fills these from an image config and flags.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/mount.h"
#include "runner/cgroup_manager.h"
#include "runner/namespaces.h"
#include "runner/network.h"

namespace imgtool::runner {

// One resource limit (--ulimit): RLIMIT_* with its soft and hard values
// (RLIM_INFINITY: unlimited).
struct ResourceLimit {
  int resource = 0;
  uint64_t soft = 0;
  uint64_t hard = 0;

  friend bool operator==(const ResourceLimit&, const ResourceLimit&) = default;
};

// "nofile=1024:2048", "nofile=1024" (hard = soft), "core=unlimited" or -1:
// docker's --ulimit. Names: core, cpu, data, fsize, locks, memlock, msgqueue,
// nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack, as.
Result<ResourceLimit> ParseUlimit(std::string_view text);
// The --ulimit name of an RLIMIT_* ("nofile"), or "?"; allocation-free.
const char* UlimitName(int resource) noexcept;

// The process: what runs, with which environment, where and as whom.
struct ProcessSpec {
  std::vector<std::string> args;  // args[0] is looked up in the container's PATH
  std::vector<std::string> env;   // "KEY=VALUE"; PATH, HOSTNAME, HOME (and TERM with a tty)
                                  // get defaults when missing
  std::string cwd = "/";          // created when missing, as docker does for WORKDIR
  std::string user;               // "USER[:GROUP]", names resolved in the rootfs; "" is root
  bool terminal = false;          // -t: a pty from the container's own devpts
  // -t: the initial size; when 0, the size of the caller's stdin if that is a tty.
  unsigned short rows = 0;
  unsigned short columns = 0;
  // --ulimit: set in the container before the command starts; every other
  // limit is imgtool's own, inherited (docker keeps its daemon's defaults).
  std::vector<ResourceLimit> rlimits;
};

// -v HOST:CTR[:ro]
struct VolumeMount {
  std::string source;       // host path (file or directory)
  std::string destination;  // absolute path in the container
  bool read_only = false;
};

// --tmpfs PATH[:OPTIONS]
struct TmpfsMount {
  std::string destination;
  // Mount flags (ro, rw, exec, noexec, suid, nosuid, dev, nodev) and tmpfs
  // options (size=, mode=, uid=, gid=, nr_inodes=), comma-separated. Empty:
  // docker's default "rw,noexec,nosuid,nodev".
  std::string options;
};

enum class UserNamespaceMode {
  kHost,  // share the host's user namespace (the default when root)
  kAuto,  // a new user namespace with ContainerSpec::id_mappings (a slice of the
          // subordinate ids from runner/userns_alloc.h)
};

enum class SeccompMode { kDefault, kUnconfined, kProfile };

struct SecuritySpec {
  bool privileged = false;  // every capability, no seccomp, no masked paths, rw /sys
  std::vector<std::string> cap_add;
  std::vector<std::string> cap_drop;
  SeccompMode seccomp = SeccompMode::kDefault;
  std::string seccomp_profile;  // kProfile: path of a docker-format JSON profile
  bool no_new_privileges = true;
  // Where compiled seccomp filters are cached (runner/seccomp.h); empty: no
  // cache on disk.
  std::filesystem::path seccomp_cache_dir = "/run/imgtool/seccomp";
};

struct ContainerSpec {
  // Unique among running containers; names the cgroup, the network attachment,
  // and (first 12 characters) the default hostname. [A-Za-z0-9_.-], <= 64.
  std::string id;

  // The rootfs: `rootfs_mounts` (e.g. the snapshotter's overlay) are mounted in
  // order at `rootfs_dir`; with no mounts, `rootfs_dir` is the rootfs itself.
  // The host keeps no mount: the container holds the only one, and it goes
  // away with the container.
  std::filesystem::path rootfs_dir;
  std::vector<Mount> rootfs_mounts;

  ProcessSpec process;
  std::string hostname;  // default: the id's first 12 characters
  std::vector<VolumeMount> volumes;
  std::vector<TmpfsMount> tmpfs;
  bool read_only_rootfs = false;
  bool init = false;  // --init: imgtool's own reaper as PID 1, the command as PID 2

  UserNamespaceMode userns = UserNamespaceMode::kHost;
  // kAuto: the container's uid and gid maps (both required).
  IdMappings id_mappings;
  // kAuto: the claim of the slice those maps came from (runner/userns_alloc.h),
  // held while the container runs; empty: none.
  std::filesystem::path userns_claim;

  SecuritySpec security;

  // Networking. `network.mode` none gets a netns with lo up; host shares the
  // host's; bridge goes through runner/network.h. container_id and hostname
  // of `network` are filled from this spec when empty.
  NetworkSpec network;
  std::vector<std::string> extra_hosts;  // --add-host "NAME:IP" lines for /etc/hosts

  // A cgroup of its own (created before the process runs, removed after).
  bool own_cgroup = true;
  CgroupResources resources;

  // Per-container directory for the files the runner writes (hosts, hostname,
  // resolv.conf). Empty: a temporary directory removed when the container ends.
  std::filesystem::path state_dir;
  // Bind /etc/hosts, /etc/hostname and /etc/resolv.conf from state_dir.
  bool write_etc_files = true;
};

// How the container's stdio is connected. The fds stay owned by the caller.
struct Stdio {
  int in = -1;  // -1: /dev/null (no -i)
  int out = 1;
  int err = 2;
};

// How the command ended, as a shell would report it.
struct ExitStatus {
  int exit_code = 0;        // the command's; 128+N for signal N; 126/127 exec failures
  int signal = 0;           // N when killed by a signal
  bool oom_killed = false;  // exit_code is then 137
  // One line for the user when the end needs explaining: the exec failure
  // (126/127) or the OOM kill; empty otherwise.
  std::string message;
};

// Env helpers, pure.
// The value of KEY in a "KEY=VALUE" list, or nullopt.
std::optional<std::string> LookupEnv(const std::vector<std::string>& env, std::string_view key);
// Sets KEY=VALUE, replacing an existing KEY.
void SetEnv(std::vector<std::string>* env, std::string_view key, std::string_view value);
// Adds PATH, HOSTNAME, HOME and (with a terminal) TERM when missing.
std::vector<std::string> EnvWithDefaults(std::vector<std::string> env, std::string_view hostname,
                                         std::string_view home, bool terminal);

inline constexpr std::string_view kDefaultPath =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Validates an id for ContainerSpec::id.
Status ValidateContainerId(std::string_view id);

// Checks a spec before anything is set up: command, paths, volumes, tmpfs.
Status ValidateContainerSpec(const ContainerSpec& spec);

}  // namespace imgtool::runner
