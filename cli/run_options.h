// `imgtool run` flags as plain data, and the pure functions that turn them and
// an image config into the runner's ContainerSpec the docker way. No I/O here
// but what is named (env files are read by the caller), so all of it is unit
// tested without root.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "runner/process_spec.h"
#include "store/oci_types.h"

namespace imgtool::cli {

struct RunFlags {
  bool remove = false;       // --rm
  bool interactive = false;  // -i
  bool tty = false;          // -t
  bool detach = false;       // -d
  std::string name;
  std::vector<std::string> env;        // -e K=V or -e K (from imgtool's environment)
  std::vector<std::string> env_files;  // --env-file
  std::vector<std::string> volumes;    // -v SRC:DST[:ro|rw]
  std::vector<std::string> tmpfs;      // --tmpfs PATH[:OPTIONS]
  std::string workdir;                 // -w
  std::optional<std::string> user;     // -u
  std::optional<std::string> entrypoint;
  std::string network = "bridge";
  std::vector<std::string> publish;  // -p
  std::string memory;                // -m
  std::string memory_swap;
  std::string cpus;
  std::optional<uint64_t> cpu_shares;
  std::string cpuset_cpus;
  std::optional<int64_t> pids_limit;
  std::string hostname;
  bool read_only = false;
  std::vector<std::string> cap_add;
  std::vector<std::string> cap_drop;
  bool privileged = false;
  std::vector<std::string> security_opts;
  std::string userns;  // "", "host", "auto[:OPTIONS]" (ParseUsernsFlag)
  bool init = false;
  std::vector<std::string> add_hosts;
  std::vector<std::string> ulimits;  // --ulimit NAME=SOFT[:HARD] (runner::ParseUlimit)
  std::string pull = "missing";  // --pull: missing (pull when not in the store), never
  std::string image;
  std::vector<std::string> command;
};

// --ulimit values, parsed; a later one for the same limit replaces an earlier.
Result<std::vector<runner::ResourceLimit>> ParseUlimits(const std::vector<std::string>& texts);

// "64m", "1g", "512k", "100b", "1048576" (binary units, as docker). Must be > 0.
Result<int64_t> ParseByteSize(std::string_view text);

// "KILL", "SIGKILL", "kill", "9". Unknown names are InvalidArgument.
Result<int> ParseSignal(std::string_view text);

// -v SRC:DST[:ro|rw]: SRC and DST absolute.
Result<runner::VolumeMount> ParseVolume(std::string_view text);
// --tmpfs PATH[:OPTIONS].
Result<runner::TmpfsMount> ParseTmpfs(std::string_view text);

// Lines of an --env-file: "K=V" kept as is, "K" taken from `lookup` (dropped
// when unset there), blank lines and "#" comments skipped.
std::vector<std::string> ParseEnvFile(std::string_view text,
                                      const std::function<const char*(const char*)>& lookup);

// A container name as docker allows: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64.
Status ValidateContainerName(std::string_view name);

// --userns as podman takes it: "host" (or "") or "auto[:OPTIONS]", OPTIONS
// comma-separated: size=N (the number of container ids, 0..N-1),
// uidmapping=CONTAINER:HOST:N and gidmapping=CONTAINER:HOST:N (lines forced
// into the map; repeatable).
struct UsernsFlag {
  runner::UserNamespaceMode mode = runner::UserNamespaceMode::kHost;
  std::optional<uint32_t> size;
  std::vector<runner::IdMap> extra_uids;
  std::vector<runner::IdMap> extra_gids;
};
Result<UsernsFlag> ParseUsernsFlag(std::string_view text);

// What the process gets: the image config overridden by the flags, docker's
// way: --entrypoint replaces Entrypoint and drops the image's Cmd; CMD
// arguments replace Cmd; Env is the image's, then the env files', then -e
// (later wins); -w and -u override WorkingDir and User. `env_from_files` are
// the parsed --env-file lines; `lookup` resolves "-e K" without a value.
Result<runner::ProcessSpec> MergeProcess(const store::ContainerConfig& image, const RunFlags& flags,
                                         const std::vector<std::string>& env_from_files,
                                         const std::function<const char*(const char*)>& lookup);

// Everything but the rootfs, the id and the network's private settings: the
// resources, security, volumes, tmpfs, ports and the rest from the flags.
// `process` comes from MergeProcess.
Result<runner::ContainerSpec> BuildContainerSpec(const RunFlags& flags,
                                                 runner::ProcessSpec process);

// The cgroup limits of -m, --memory-swap, --cpus, --cpu-shares, --cpuset-cpus
// and --pids-limit (BuildContainerSpec's resources).
Result<runner::CgroupResources> ParseResourceFlags(const RunFlags& flags);

}  // namespace imgtool::cli
