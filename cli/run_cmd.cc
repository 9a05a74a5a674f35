// run: an image from the store as a container. The image's layers are
// unpacked into committed snapshots (once; later runs find them), an active
// snapshot on top becomes the container's rootfs, and the runner does the
// rest. Foreground runs wait and exit with the command's code; -d hands the
// container to a supervisor.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <ctime>
#include <string>
#include <vector>

#include "cli/containers.h"
#include "cli/context.h"
#include "cli/image_ref.h"
#include "cli/output.h"
#include "cli/registry_cmd.h"
#include "cli/run_options.h"
#include "cli/userns_auto.h"
#include "common/file_lock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/temp_dir.h"
#include "overlay/unpacker.h"
#include "runner/container.h"
#include "runner/ipam.h"
#include "runner/rootfs.h"
#include "runner/supervisor.h"

namespace imgtool::cli {

namespace {

namespace fs = std::filesystem;

const char* LookupHostEnv(const char* key) { return ::getenv(key); }

// `--log-level debug` shows where a run spends its time.
class PhaseTimer {
 public:
  void Mark(std::string_view phase) {
    auto now = std::chrono::steady_clock::now();
    LogDebug("run: ", phase, ": ",
             std::chrono::duration_cast<std::chrono::microseconds>(now - last_).count() / 1000.0,
             " ms");
    last_ = now;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

PhaseTimer& Timer() {
  static PhaseTimer timer;
  return timer;
}

// As docker does: an image that is not in the store is pulled (with the
// registry settings of `imgtool pull`: auth.json, insecure registries), then
// looked up again.
Result<FoundImage> FindImageForRun(const Context& context, const store::Store& store,
                                   const std::string& image, const std::string& policy) {
  Result<FoundImage> found = FindImage(store, image);
  if (found || found.error().code() != ErrorCode::kNotFound) return found;
  if (policy == "never") {
    return NotFoundError("image \"" + image + "\" not found in the store (--pull=never)");
  }
  Result<store::Reference> ref = store::ParseReference(image);
  if (!ref) return found;
  (void)WriteAll(STDERR_FILENO, "Unable to find image '" + image + "' locally\n");
  Result<Digest> pulled = PullImage(context, *ref);
  if (!pulled) {
    return std::move(pulled).error().Wrap("image \"" + image + "\" is not in the store; pull");
  }
  return FindImage(store, image);
}

// Bridge settings a test (or a second bridge on one host) overrides with the
// environment: IMGTOOL_BRIDGE, IMGTOOL_BRIDGE_SUBNET, IMGTOOL_NETWORK_STATE_DIR.
void ApplyNetworkEnvironment(runner::NetworkSpec* network) {
  if (const char* bridge = ::getenv("IMGTOOL_BRIDGE"); bridge && *bridge) {
    network->bridge_name = bridge;
  }
  if (const char* subnet = ::getenv("IMGTOOL_BRIDGE_SUBNET"); subnet && *subnet) {
    network->subnet = subnet;
  }
  const char* dir = ::getenv("IMGTOOL_NETWORK_STATE_DIR");
  network->state_dir = dir && *dir ? fs::path(dir) : fs::path(runner::kDefaultNetworkStateDir);
}

// One line on stderr for an end that needs explaining (exec failure, OOM).
void ReportExit(const runner::ExitStatus& status) {
  if (status.message.empty()) return;
  std::string line = "imgtool: " + status.message;
  for (char& c : line) {
    if (c == '\n') c = ' ';
  }
  (void)WriteAll(STDERR_FILENO, line + "\n");
}

// state.json for a foreground container, in the runner's format, so that ps,
// stop, kill and exec treat it like a detached one; this imgtool process
// plays the supervisor. Not fsynced: it describes a live process.
Status WriteForegroundState(const fs::path& dir, const runner::ContainerState& state) {
  fs::path path = dir / runner::kStateFileName;
  fs::path temp = dir / "state.json.tmp";
  UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return ErrnoError("write " + temp.string());
  IMGTOOL_TRY(WriteAll(fd.get(), runner::ContainerStateToJson(state)));
  fd.reset();
  if (::rename(temp.c_str(), path.c_str()) != 0) return ErrnoError("rename to " + path.string());
  return OkStatus();
}

struct Prepared {
  ContainerRecord record;
  runner::ContainerSpec spec;
  std::shared_ptr<runner::UsernsLease> userns;  // --userns=auto: held until the container runs
};

// Everything up to the container's start: image, snapshots, record, spec.
// `flag_spec` holds what the flags say (BuildContainerSpec); the image's config
// fills in the process here.
Result<Prepared> Prepare(const Context& context, const RunFlags& flags,
                         runner::ContainerSpec flag_spec,
                         const std::string& id, const ContainerStore& containers,
                         overlay::Snapshotter& snapshotter) {
  if (flags.detach && flags.interactive) {
    // Docker allows -di (stdin kept open for attach); imgtool has no attach.
    return InvalidArgumentError("-d and -i can not be combined (imgtool has no attach)");
  }
  if (!flags.name.empty()) IMGTOOL_TRY(ValidateContainerName(flags.name));
  std::vector<std::string> env_from_files;
  for (const std::string& file : flags.env_files) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string text,
                             ReadFileToString(file, 1u << 20).Wrap("--env-file " + file));
    std::vector<std::string> lines = ParseEnvFile(text, LookupHostEnv);
    env_from_files.insert(env_from_files.end(), lines.begin(), lines.end());
  }

  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(FoundImage image,
                           FindImageForRun(context, *store, flags.image, flags.pull));
  Timer().Mark("open the store, find the image");
  IMGTOOL_ASSIGN_OR_RETURN(
      runner::ProcessSpec process,
      MergeProcess(image.image.config.config, flags, env_from_files, LookupHostEnv));
  Prepared prepared;
  process.rlimits = std::move(flag_spec.process.rlimits);  // --ulimit
  prepared.spec = std::move(flag_spec);
  prepared.spec.process = std::move(process);

  ContainerRecord& record = prepared.record;
  record.id = id;
  record.name = flags.name;
  record.image = flags.image;
  record.image_id = image.image.manifest.config.digest.ToString();
  // A --rm container's writable layer lives and dies in its own directory
  // (see containers.h): no write to the snapshot metadata on the way in or
  // out, which cost two fsynced rewrites of metadata.json per run.
  if (!flags.remove) record.snapshot = SnapshotKeyForContainer(id);
  record.auto_remove = flags.remove;
  record.detached = flags.detach;
  record.created = static_cast<int64_t>(::time(nullptr));
  record.command = prepared.spec.process.args;
  record.env = prepared.spec.process.env;
  record.cwd = prepared.spec.process.cwd;
  record.user = prepared.spec.process.user;
  record.ulimits = flags.ulimits;

  {
    // gc must not take the layers between unpacking and stacking on them.
    IMGTOOL_ASSIGN_OR_RETURN(FileLock lease, store->AcquireWriteLease());
    IMGTOOL_ASSIGN_OR_RETURN(
        std::string top,
        overlay::Unpack(*store, snapshotter, image.image.manifest, image.image.config)
            .Wrap("unpack " + flags.image));
    Timer().Mark("unpack (or find unpacked) layers");
    if (flags.remove) record.rootfs_parent = top;
    if (prepared.spec.userns == runner::UserNamespaceMode::kAuto) {
      IMGTOOL_ASSIGN_OR_RETURN(prepared.userns,
                               AllocateRunUserns(flags, context.StateDir(), containers, snapshotter,
                                                 top, &record, &prepared.spec));
    }
    IMGTOOL_TRY(containers.Create(record));
    Timer().Mark("container record");
    Result<std::vector<Mount>> mounts =
        flags.remove
            ? snapshotter.MountsOver(top, containers.UpperDirOf(id), containers.WorkDirOf(id))
            : snapshotter.Prepare(record.snapshot, top, {{"imgtool.container", id}});
    if (!mounts) {
      (void)RemoveTree(containers.DirOf(id));
      return std::move(mounts).error().Wrap("container " + id.substr(0, 12) + ": snapshot");
    }
    prepared.spec.rootfs_mounts = std::move(*mounts);
    if (prepared.spec.userns != runner::UserNamespaceMode::kAuto) {
      // (An idmapped rootfs would show the layer's files as nobody's.)
      Status added = runner::AddEtcTargetsLayer(&prepared.spec.rootfs_mounts,
                                                context.StateDir() / "etc-targets");
      if (!added) {
        if (!flags.remove) (void)snapshotter.Remove(record.snapshot);
        (void)RemoveTree(containers.DirOf(id));
        return std::move(added).error().Wrap("container " + id.substr(0, 12));
      }
    }
    if (flags.remove) {
      // The writable layer goes away with the container: overlay need not
      // sync it when the container's mount namespace ends. Without
      // "volatile" that sync (a syncfs of the whole upper filesystem, run as
      // the namespace is torn down) is what the removal right after waits
      // for: tens of ms on every run.
      for (Mount& mount : prepared.spec.rootfs_mounts) {
        if (mount.type == "overlay") mount.options.push_back("volatile");
      }
    }
  }
  Timer().Mark("prepare the snapshot");

  runner::ContainerSpec& spec = prepared.spec;
  spec.id = id;
  spec.rootfs_dir = containers.DirOf(id) / "rootfs";
  spec.state_dir = containers.DirOf(id);
  spec.network.container_id = id;
  ApplyNetworkEnvironment(&spec.network);
  return prepared;
}

Result<int> RunDetached(Prepared prepared, const ContainerStore& containers,
                        const fs::path& snapshot_root) {
  runner::DetachOptions options;
  if (prepared.record.auto_remove) {
    options.on_exit = [record = prepared.record, containers,
                       snapshot_root](const runner::ContainerState&) {
      auto snapshotter = overlay::OverlaySnapshotter::Open(snapshot_root);
      if (!snapshotter) return;
      Status removed = containers.Remove(record, **snapshotter);
      if (!removed) LogWarning(removed.error().ToString());
    };
  }
  Result<runner::ContainerState> state =
      runner::StartDetached(prepared.spec, containers.DirOf(prepared.record.id), options);
  if (!state) return std::move(state).error();
  IMGTOOL_TRY(PrintOut(prepared.record.id + "\n"));
  return 0;
}

Result<int> RunForeground(const Prepared& prepared, bool interactive,
                          std::unique_ptr<runner::EarlyStart> early_start,
                          const ContainerStore& containers, overlay::Snapshotter& snapshotter) {
  const ContainerRecord& record = prepared.record;
  fs::path dir = containers.DirOf(record.id);
  runner::ContainerState state;
  state.id = record.id;
  state.command = record.command;
  state.hostname =
      prepared.spec.hostname.empty() ? record.id.substr(0, 12) : prepared.spec.hostname;
  state.own_cgroup = prepared.spec.own_cgroup;
  state.security = prepared.spec.security;
  state.created_at = record.created;

  auto remove = [&]() {
    Status removed = containers.Remove(record, snapshotter);
    if (!removed) LogWarning(removed.error().ToString());
  };

  runner::Stdio stdio{interactive ? STDIN_FILENO : -1, STDOUT_FILENO, STDERR_FILENO};
  Result<std::unique_ptr<runner::Container>> container =
      runner::Container::Start(prepared.spec, stdio, std::move(early_start));
  Timer().Mark("start the container");
  if (!container) {
    if (record.auto_remove) {
      remove();
    } else {
      state.status = runner::ContainerStatus::kExited;
      state.exit_code = 125;
      state.message = container.error().ToString();
      state.finished_at = static_cast<int64_t>(::time(nullptr));
      (void)WriteForegroundState(dir, state);
    }
    return std::move(container).error();
  }

  state.status = runner::ContainerStatus::kRunning;
  state.pid = (*container)->pid();
  state.pid_start_time = runner::ProcessStartTime(state.pid);
  state.supervisor_pid = ::getpid();
  state.supervisor_start_time = runner::ProcessStartTime(state.supervisor_pid);
  state.started_at = static_cast<int64_t>(::time(nullptr));
  if (Status written = WriteForegroundState(dir, state); !written) {
    LogWarning("container ", record.id.substr(0, 12), ": ", written.error().ToString());
  }

  Timer().Mark("record the state");
  Result<runner::ExitStatus> status = (*container)->Wait();
  Timer().Mark("the command ran");
  runner::RecordExit(&state, status);
  if (record.auto_remove) {
    remove();
  } else if (Status written = WriteForegroundState(dir, state); !written) {
    LogWarning("container ", record.id.substr(0, 12), ": ", written.error().ToString());
  }
  Timer().Mark(record.auto_remove ? "remove the container" : "record the end");
  container->reset();  // and its cgroup, removed meanwhile
  Timer().Mark("the cgroup removed");
  if (!status) return std::move(status).error();
  ReportExit(*status);
  return status->exit_code;
}

Result<int> RunRun(const Context& context, RunFlags flags, std::vector<std::string> rest) {
  // IMAGE and CMD come from CLI11's leftovers (the command is not parsed as
  // imgtool's flags); a flag before the image that run does not know lands
  // there too.
  if (rest.empty()) return InvalidArgumentError("run: an IMAGE is required");
  if (rest.front().starts_with("-")) {
    return InvalidArgumentError("run: unknown flag \"" + rest.front() + "\"");
  }
  flags.image = rest.front();
  flags.command.assign(rest.begin() + 1, rest.end());
  if (!flags.command.empty() && flags.command.front() == "--") {
    flags.command.erase(flags.command.begin());
  }
  // Every flag is checked before an image is looked for (or pulled).
  IMGTOOL_ASSIGN_OR_RETURN(runner::ContainerSpec spec,
                           BuildContainerSpec(flags, runner::ProcessSpec{}).Wrap("run"));
  Timer();  // phases are timed from here
  IMGTOOL_ASSIGN_OR_RETURN(std::string id, NewContainerId());
  std::unique_ptr<runner::EarlyStart> early_start;
  if (!flags.detach) {
    // The cgroup and the network namespace are made on a thread of their
    // own while the image and the snapshot are prepared (see
    // runner/container.h). A detached container's are made by its supervisor.
    bool network_namespace = spec.network.mode != runner::NetworkMode::kHost &&
                             spec.userns != runner::UserNamespaceMode::kAuto;
    early_start = runner::EarlyStart::Begin(id, runner::CgroupResourcesOf(spec), network_namespace);
    Timer().Mark("begin the cgroup and netns");
  }
  ContainerStore containers(context.ContainersRoot());
  IMGTOOL_ASSIGN_OR_RETURN(auto snapshotter, context.OpenSnapshotter());
  IMGTOOL_ASSIGN_OR_RETURN(Prepared prepared,
                           Prepare(context, flags, std::move(spec), id, containers, *snapshotter)
                               .Wrap("run"));
  if (flags.detach) {
    Result<int> started = RunDetached(prepared, containers, context.SnapshotRoot());
    if (!started) {
      // The supervisor recorded why; without --rm the container stays to be
      // inspected, as docker keeps one that failed to start.
      if (flags.remove) {
        Status removed = containers.Remove(prepared.record, *snapshotter);
        if (!removed) LogWarning(removed.error().ToString());
      }
      return std::move(started).error().Wrap("run");
    }
    return started;
  }
  Result<int> code =
      RunForeground(prepared, flags.interactive, std::move(early_start), containers, *snapshotter);
  if (!code) return std::move(code).error().Wrap("run");
  return code;
}

}  // namespace

void RegisterRunCommand(CLI::App& app, const Context& context, CommandRegistry& registry) {
  auto flags = std::make_shared<RunFlags>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Run a command in a new container: imgtool run [OPTIONS] IMAGE [COMMAND [ARG...]]");
  // Everything from IMAGE on is the container's (ls -p is not -p); global
  // flags go before "run".
  cmd->prefix_command();
  cmd->fallthrough(false);
  cmd->set_help_flag("--help", "Print this help message and exit");  // -h is --hostname
  // Only the options this command line may name (cli/option_filter.h).
  const OptionFilter& wanted = context.options;
  auto flag = [&](const char* names, bool& value, const char* description) {
    if (wanted.Wants(names)) cmd->add_flag(names, value, description);
  };
  auto option = [&](const char* names, auto& value, const char* description) -> CLI::Option* {
    return wanted.Wants(names) ? cmd->add_option(names, value, description) : nullptr;
  };
  auto list = [&](const char* names, std::vector<std::string>& values, const char* description) {
    if (wanted.Wants(names)) cmd->add_option(names, values, description)->allow_extra_args(false);
  };
  flag("--rm", flags->remove, "Remove the container when it exits");
  if (CLI::Option* pull = option("--pull", flags->pull,
                                 "missing (default: pull an image not in the store) or never")) {
    pull->check(CLI::IsMember({"missing", "never"}));
  }
  flag("-i,--interactive", flags->interactive, "Pass stdin to the container");
  flag("-t,--tty", flags->tty, "Allocate a pseudo-terminal");
  flag("-d,--detach", flags->detach, "Run in the background and print the container ID");
  option("--name", flags->name, "Name the container");
  list("-e,--env", flags->env, "Set an environment variable (K=V, or K from here)");
  list("--env-file", flags->env_files, "Read environment variables from a file");
  list("-v,--volume", flags->volumes, "Bind a host path: SRC:DST[:ro]");
  list("--tmpfs", flags->tmpfs, "Mount a tmpfs: PATH[:OPTIONS]");
  option("-w,--workdir", flags->workdir, "Working directory inside the container");
  option("-u,--user", flags->user, "USER[:GROUP] (names from the image's /etc/passwd)");
  option("--entrypoint", flags->entrypoint, "Override the image's entrypoint");
  option("--net,--network", flags->network, "none, host or bridge (default)");
  list("-p,--publish", flags->publish, "Publish a port: [IP:]HOST:CTR[/tcp|udp]");
  option("-m,--memory", flags->memory, "Memory limit (64m, 1g)");
  option("--memory-swap", flags->memory_swap, "Memory plus swap limit; -1 unlimited");
  option("--cpus", flags->cpus, "CPU quota in CPUs (0.5)");
  option("--cpu-shares", flags->cpu_shares, "Relative CPU weight (2..262144)");
  option("--cpuset-cpus", flags->cpuset_cpus, "CPUs to run on (0-1,3)");
  option("--pids-limit", flags->pids_limit, "Maximum number of processes");
  option("-h,--hostname", flags->hostname, "Container hostname");
  flag("--read-only", flags->read_only, "Mount the container's root read-only");
  list("--cap-add", flags->cap_add, "Add a capability (or ALL)");
  list("--cap-drop", flags->cap_drop, "Drop a capability (or ALL)");
  flag("--privileged", flags->privileged, "Every capability, no seccomp, no masked paths");
  list("--security-opt", flags->security_opts,
       "seccomp=unconfined|PROFILE.json, no-new-privileges[=false]");
  option("--userns", flags->userns,
         "host, or auto[:size=N,uidmapping=C:H:N,gidmapping=C:H:N] (ids of the "
         "container's own from /etc/subuid)");
  flag("--init", flags->init, "Run a tiny init as PID 1 that reaps and forwards signals");
  list("--add-host", flags->add_hosts, "Add NAME:IP to /etc/hosts");
  list("--ulimit", flags->ulimits,
       "Set a resource limit: NAME=SOFT[:HARD] (nofile=1024:2048, core=0); "
       "the others are inherited");
  registry.Set(cmd, [&context, flags, cmd] { return RunRun(context, *flags, cmd->remaining()); });
}

}  // namespace imgtool::cli
