// Detached containers (-d). A small supervisor process per container (double
// forked, in a session of its own) holds the container: it connects the
// container's stdout and stderr to a log file, records its state in the state
// dir given by the caller, waits for it, records the exit status, and exits.
// The functions below are the API of ps/logs/stop/kill/rm/wait/exec; they work
// from any process, by reading the state dir.
//
// State dir layout (owned by the runner): state.json, container.log, and the
// files the container binds (hosts, hostname, resolv.conf).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "runner/container.h"
#include "runner/process_spec.h"

namespace imgtool::runner {

enum class ContainerStatus { kCreated, kRunning, kExited };
// "created", "running", "exited".
std::string_view ContainerStatusName(ContainerStatus status);

struct ContainerState {
  std::string id;
  ContainerStatus status = ContainerStatus::kCreated;
  pid_t pid = 0;                // the container's first process, as the host sees it
  uint64_t pid_start_time = 0;  // /proc/PID/stat starttime: a reused pid does not match
  pid_t supervisor_pid = 0;
  uint64_t supervisor_start_time = 0;
  int exit_code = -1;
  bool oom_killed = false;
  std::string message;     // why it ended, when that needs saying
  int64_t created_at = 0;  // Unix seconds
  int64_t started_at = 0;
  int64_t finished_at = 0;
  std::vector<std::string> command;
  std::string hostname;
  bool own_cgroup = false;  // exec joins the cgroup named by `id`
  SecuritySpec security;    // exec applies the same
};

struct DetachOptions {
  // Runs in the supervisor after the container ended and its state was
  // written (the CLI's --rm: remove the snapshot and the state dir).
  std::function<void(const ContainerState&)> on_exit;
};

inline constexpr const char* kStateFileName = "state.json";
inline constexpr const char* kLogFileName = "container.log";

// Starts `spec` under a supervisor. `state_dir` is created (it must not hold a
// container yet) and becomes spec.state_dir. Returns once the command runs,
// with the state; a failure before that is an Error, as for Container::Start.
Result<ContainerState> StartDetached(ContainerSpec spec, const std::filesystem::path& state_dir,
                                     DetachOptions options = {});

// The state as recorded, corrected for a supervisor that died without
// recording the end (then: exited, exit code -1, a message saying so).
Result<ContainerState> ReadContainerState(const std::filesystem::path& state_dir);

// The states of every container whose state dir is a direct child of `parent`
// (ps -a); dirs without a readable state are skipped.
Result<std::vector<ContainerState>> ListContainerStates(const std::filesystem::path& parent);

// Sends `sig` to the container's first process. FailedPrecondition when it
// is not running.
Status KillContainer(const std::filesystem::path& state_dir, int sig);

// SIGTERM, then SIGKILL after `timeout`; returns once the supervisor recorded
// the end. Stopping a container that is not running is fine.
Status StopContainer(const std::filesystem::path& state_dir, std::chrono::milliseconds timeout);

// Blocks until the container ended (and its end is recorded); returns the state.
Result<ContainerState> WaitContainer(const std::filesystem::path& state_dir);

// Removes the state dir. A running container is FailedPrecondition unless
// `force`, which kills it first.
Status RemoveContainer(const std::filesystem::path& state_dir, bool force);

// Copies the log to `out_fd`; with `follow`, keeps copying new output until
// the container ended.
Status CopyContainerLogs(const std::filesystem::path& state_dir, int out_fd, bool follow);

// Runs `process` inside the running container (all its namespaces and its
// cgroup, its security settings) and waits for it.
Result<ExitStatus> ExecInContainer(const std::filesystem::path& state_dir,
                                   const ProcessSpec& process, const Stdio& stdio);

// Marks `state` exited now, with the exit code, OOM flag and message of
// `status`, or exit code -1 and the error when waiting failed.
void RecordExit(ContainerState* state, const Result<ExitStatus>& status);

// Pure: state.json text and back.
std::string ContainerStateToJson(const ContainerState& state);
Result<ContainerState> ContainerStateFromJson(std::string_view json);

}  // namespace imgtool::runner
