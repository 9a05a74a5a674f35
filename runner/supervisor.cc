#include "runner/supervisor.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/log.h"
#include "common/temp_dir.h"
#include "runner/ipam.h"

namespace imgtool::runner {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

int64_t Now() { return static_cast<int64_t>(::time(nullptr)); }

// A pidfd on `pid`, only when it is still the process that started at
// `start_time` (pids get reused).
Result<UniqueFd> OpenProcess(pid_t pid, uint64_t start_time, std::string_view what) {
  if (pid <= 0) return NotFoundError(StrCat(what, " has no pid"));
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!fd) {
    if (errno == ESRCH) return NotFoundError(StrCat(what, " (pid ", pid, ") is gone"));
    return ErrnoError(StrCat("pidfd_open ", what, " (pid ", pid, ")"));
  }
  if (ProcessStartTime(pid) != start_time) {
    return NotFoundError(StrCat(what, " (pid ", pid, ") is gone"));
  }
  return fd;
}

Status WaitForExit(int pidfd, int timeout_ms, bool* exited) {
  struct pollfd p = {pidfd, POLLIN, 0};
  while (true) {
    int rc = ::poll(&p, 1, timeout_ms);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return ErrnoError("wait for the supervisor");
    *exited = rc > 0;
    return OkStatus();
  }
}

Status WriteState(const fs::path& state_dir, const ContainerState& state) {
  return WriteFileAtomic(state_dir / kStateFileName, ContainerStateToJson(state), 0644)
      .Wrap("container " + state.id + ": record state");
}

Status WriteAllToFd(int fd, std::string_view data) {
  return WriteAll(fd, data.data(), data.size());
}

// The readiness message from the supervisor to StartDetached: "K" when the
// command runs, "E<code> <errno> <message>" when it could not start.
std::string EncodeError(const Error& error) {
  return StrCat("E", static_cast<int>(error.code()), " ", error.sys_errno(), " ", error.message());
}

Error DecodeError(std::string_view text) {
  int code = static_cast<int>(ErrorCode::kInternal);
  int sys_errno = 0;
  char message[4096] = {};
  std::string copy(text.substr(1));
  if (std::sscanf(copy.c_str(), "%d %d %4095[^\n]", &code, &sys_errno, message) < 2) {
    return InternalError("the supervisor sent a malformed error");
  }
  return Error(static_cast<ErrorCode>(code), message, sys_errno);
}

[[noreturn]] void SupervisorMain(const ContainerSpec& spec, const fs::path& state_dir,
                                 ContainerState state, int ready_fd, const DetachOptions& options) {
  // A daemon holds nothing of its caller: not its terminal, not its fds.
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  for (int fd = 0; fd < 3 && null; ++fd) ::dup2(null.get(), fd);
  null.release();
  if (ready_fd > 3) ::syscall(SYS_close_range, 3u, static_cast<unsigned>(ready_fd - 1), 0u);
  ::syscall(SYS_close_range, static_cast<unsigned>(ready_fd + 1), ~0u, 0u);
  if (::chdir("/") != 0) ::_exit(1);
  ::signal(SIGPIPE, SIG_IGN);

  auto fail = [&](const Error& error) {
    state.status = ContainerStatus::kExited;
    state.exit_code = 125;
    state.message = error.ToString();
    state.finished_at = Now();
    (void)WriteState(state_dir, state);
    (void)WriteAllToFd(ready_fd, EncodeError(error));
    ::_exit(1);
  };
  fs::path log_path = state_dir / kLogFileName;
  UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (!log) fail(ErrnoError("open " + log_path.string()));
  Result<std::unique_ptr<Container>> container =
      Container::Start(spec, Stdio{-1, log.get(), log.get()});
  if (!container) fail(container.error());

  state.status = ContainerStatus::kRunning;
  state.pid = (*container)->pid();
  state.pid_start_time = ProcessStartTime(state.pid);
  state.supervisor_pid = ::getpid();
  state.supervisor_start_time = ProcessStartTime(state.supervisor_pid);
  state.started_at = Now();
  if (Status written = WriteState(state_dir, state); !written) fail(written.error());
  (void)WriteAllToFd(ready_fd, "K");
  ::close(ready_fd);

  Result<ExitStatus> status = (*container)->Wait();
  container->reset();
  RecordExit(&state, status);
  (void)WriteState(state_dir, state);
  if (options.on_exit) options.on_exit(state);
  ::_exit(0);
}

}  // namespace

std::string_view ContainerStatusName(ContainerStatus status) {
  switch (status) {
    case ContainerStatus::kCreated:
      return "created";
    case ContainerStatus::kRunning:
      return "running";
    case ContainerStatus::kExited:
      return "exited";
  }
  return "unknown";
}

void RecordExit(ContainerState* state, const Result<ExitStatus>& status) {
  state->status = ContainerStatus::kExited;
  state->finished_at = Now();
  if (status) {
    state->exit_code = status->exit_code;
    state->oom_killed = status->oom_killed;
    state->message = status->message;
  } else {
    state->exit_code = -1;
    state->message = status.error().ToString();
  }
}

std::string ContainerStateToJson(const ContainerState& state) {
  Json security = {
      {"privileged", state.security.privileged},
      {"cap_add", state.security.cap_add},
      {"cap_drop", state.security.cap_drop},
      {"seccomp", state.security.seccomp == SeccompMode::kDefault      ? "default"
                  : state.security.seccomp == SeccompMode::kUnconfined ? "unconfined"
                                                                       : "profile"},
      {"seccomp_profile", state.security.seccomp_profile},
      {"no_new_privileges", state.security.no_new_privileges},
  };
  Json json = {
      {"id", state.id},
      {"status", std::string(ContainerStatusName(state.status))},
      {"pid", state.pid},
      {"pid_start_time", state.pid_start_time},
      {"supervisor_pid", state.supervisor_pid},
      {"supervisor_start_time", state.supervisor_start_time},
      {"exit_code", state.exit_code},
      {"oom_killed", state.oom_killed},
      {"message", state.message},
      {"created_at", state.created_at},
      {"started_at", state.started_at},
      {"finished_at", state.finished_at},
      {"command", state.command},
      {"hostname", state.hostname},
      {"own_cgroup", state.own_cgroup},
      {"security", security},
  };
  return json.dump(2) + "\n";
}

Result<ContainerState> ContainerStateFromJson(std::string_view text) {
  ContainerState state;
  try {
    Json json = Json::parse(text);
    state.id = json.at("id").get<std::string>();
    std::string status = json.at("status").get<std::string>();
    if (status == "created") {
      state.status = ContainerStatus::kCreated;
    } else if (status == "running") {
      state.status = ContainerStatus::kRunning;
    } else if (status == "exited") {
      state.status = ContainerStatus::kExited;
    } else {
      return DataLossError("unknown status \"" + status + "\"");
    }
    state.pid = json.value("pid", 0);
    state.pid_start_time = json.value("pid_start_time", uint64_t{0});
    state.supervisor_pid = json.value("supervisor_pid", 0);
    state.supervisor_start_time = json.value("supervisor_start_time", uint64_t{0});
    state.exit_code = json.value("exit_code", -1);
    state.oom_killed = json.value("oom_killed", false);
    state.message = json.value("message", std::string());
    state.created_at = json.value("created_at", int64_t{0});
    state.started_at = json.value("started_at", int64_t{0});
    state.finished_at = json.value("finished_at", int64_t{0});
    state.command = json.value("command", std::vector<std::string>{});
    state.hostname = json.value("hostname", std::string());
    state.own_cgroup = json.value("own_cgroup", false);
    if (json.contains("security")) {
      const Json& security = json.at("security");
      state.security.privileged = security.value("privileged", false);
      state.security.cap_add = security.value("cap_add", std::vector<std::string>{});
      state.security.cap_drop = security.value("cap_drop", std::vector<std::string>{});
      std::string seccomp = security.value("seccomp", std::string("default"));
      state.security.seccomp = seccomp == "unconfined" ? SeccompMode::kUnconfined
                               : seccomp == "profile"  ? SeccompMode::kProfile
                                                       : SeccompMode::kDefault;
      state.security.seccomp_profile = security.value("seccomp_profile", std::string());
      state.security.no_new_privileges = security.value("no_new_privileges", true);
    }
  } catch (const Json::exception& e) {
    return DataLossError(StrCat("container state: ", e.what()));
  }
  return state;
}

Result<ContainerState> StartDetached(ContainerSpec spec, const fs::path& state_dir,
                                     DetachOptions options) {
  IMGTOOL_TRY(ValidateContainerSpec(spec));
  std::error_code ec;
  if (fs::exists(state_dir / kStateFileName, ec)) {
    return AlreadyExistsError("container state dir " + state_dir.string() + " is in use");
  }
  fs::create_directories(state_dir, ec);
  if (ec) return ErrnoError("create " + state_dir.string(), ec.value());
  spec.state_dir = state_dir;

  ContainerState state;
  state.id = spec.id;
  state.command = spec.process.args;
  state.hostname = spec.hostname.empty() ? spec.id.substr(0, 12) : spec.hostname;
  state.own_cgroup = spec.own_cgroup;
  state.security = spec.security;
  state.created_at = Now();
  IMGTOOL_TRY(WriteState(state_dir, state));

  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return ErrnoError("pipe");
  UniqueFd ready_read(ready[0]), ready_write(ready[1]);
  pid_t first = ::fork();
  if (first < 0) return ErrnoError("fork the supervisor");
  if (first == 0) {
    ready_read.reset();
    ::setsid();
    pid_t second = ::fork();
    if (second != 0) ::_exit(second < 0 ? 1 : 0);
    SupervisorMain(spec, state_dir, state, ready_write.release(), options);
  }
  ready_write.reset();
  int status = 0;
  while (::waitpid(first, &status, 0) < 0 && errno == EINTR) {
  }
  // One message, written at once: no need to wait for every copy of the
  // write end to close.
  char buffer[8192];
  ssize_t n;
  while ((n = ::read(ready_read.get(), buffer, sizeof(buffer))) < 0 && errno == EINTR) {
  }
  std::string message(buffer, n > 0 ? static_cast<size_t>(n) : 0);
  if (message == "K") return ReadContainerState(state_dir);
  if (!message.empty() && message[0] == 'E') return DecodeError(message);
  return InternalError("container " + spec.id + ": the supervisor ended before the container ran");
}

Result<ContainerState> ReadContainerState(const fs::path& state_dir) {
  fs::path path = state_dir / kStateFileName;
  auto read = [&]() -> Result<ContainerState> {
    Result<std::string> text = ReadFileToString(path, 1u << 20);
    if (!text) return std::move(text).error().Wrap("container state");
    return ContainerStateFromJson(*text).Wrap(path.string());
  };
  IMGTOOL_ASSIGN_OR_RETURN(ContainerState state, read());
  if (state.status != ContainerStatus::kRunning) return state;
  if (ProcessStartTime(state.supervisor_pid) == state.supervisor_start_time) return state;
  // The supervisor is gone: it recorded the end just now, or it died.
  IMGTOOL_ASSIGN_OR_RETURN(state, read());
  if (state.status == ContainerStatus::kRunning) {
    state.status = ContainerStatus::kExited;
    state.exit_code = -1;
    state.message = "the supervisor ended without recording how the container ended";
  }
  return state;
}

Result<std::vector<ContainerState>> ListContainerStates(const fs::path& parent) {
  std::vector<ContainerState> states;
  std::error_code ec;
  fs::directory_iterator it(parent, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return states;
    return ErrnoError("list " + parent.string(), ec.value());
  }
  for (const fs::directory_entry& entry : it) {
    if (!entry.is_directory(ec)) continue;
    Result<ContainerState> state = ReadContainerState(entry.path());
    if (state) states.push_back(std::move(*state));
  }
  std::sort(states.begin(), states.end(), [](const ContainerState& a, const ContainerState& b) {
    return a.created_at != b.created_at ? a.created_at < b.created_at : a.id < b.id;
  });
  return states;
}

Status KillContainer(const fs::path& state_dir, int sig) {
  IMGTOOL_ASSIGN_OR_RETURN(ContainerState state, ReadContainerState(state_dir));
  if (state.status != ContainerStatus::kRunning) {
    return FailedPreconditionError("container " + state.id + " is not running");
  }
  Result<UniqueFd> pidfd = OpenProcess(state.pid, state.pid_start_time, "container " + state.id);
  if (!pidfd) {
    if (pidfd.error().code() == ErrorCode::kNotFound) {
      return FailedPreconditionError("container " + state.id + " is not running");
    }
    return std::move(pidfd).error();
  }
  if (::syscall(SYS_pidfd_send_signal, pidfd->get(), sig, nullptr, 0) != 0) {
    return ErrnoError(StrCat("send signal ", sig, " to container ", state.id));
  }
  return OkStatus();
}

Result<ContainerState> WaitContainer(const fs::path& state_dir) {
  IMGTOOL_ASSIGN_OR_RETURN(ContainerState state, ReadContainerState(state_dir));
  if (state.status != ContainerStatus::kRunning) return state;
  Result<UniqueFd> supervisor =
      OpenProcess(state.supervisor_pid, state.supervisor_start_time, "supervisor");
  if (supervisor) {
    bool exited = false;
    IMGTOOL_TRY(WaitForExit(supervisor->get(), -1, &exited));
  }
  return ReadContainerState(state_dir);
}

Status StopContainer(const fs::path& state_dir, std::chrono::milliseconds timeout) {
  IMGTOOL_ASSIGN_OR_RETURN(ContainerState state, ReadContainerState(state_dir));
  if (state.status != ContainerStatus::kRunning) return OkStatus();
  Result<UniqueFd> supervisor =
      OpenProcess(state.supervisor_pid, state.supervisor_start_time, "supervisor");
  if (!supervisor) return OkStatus();
  Status term = KillContainer(state_dir, SIGTERM);
  if (!term && term.error().code() != ErrorCode::kFailedPrecondition) return term;
  bool exited = false;
  IMGTOOL_TRY(WaitForExit(supervisor->get(), static_cast<int>(timeout.count()), &exited));
  if (exited) return OkStatus();
  Status kill = KillContainer(state_dir, SIGKILL);
  if (!kill && kill.error().code() != ErrorCode::kFailedPrecondition) return kill;
  return WaitForExit(supervisor->get(), -1, &exited);
}

Status RemoveContainer(const fs::path& state_dir, bool force) {
  IMGTOOL_ASSIGN_OR_RETURN(ContainerState state, ReadContainerState(state_dir));
  if (state.status == ContainerStatus::kRunning) {
    if (!force) {
      return FailedPreconditionError("container " + state.id +
                                     " is running: stop it first, or remove it with force");
    }
    IMGTOOL_TRY(StopContainer(state_dir, std::chrono::milliseconds(0)));
  }
  return RemoveTree(state_dir).Wrap("remove container " + state.id);
}

Status CopyContainerLogs(const fs::path& state_dir, int out_fd, bool follow) {
  fs::path path = state_dir / kLogFileName;
  UniqueFd inotify;
  UniqueFd supervisor;
  if (follow) {
    IMGTOOL_ASSIGN_OR_RETURN(ContainerState state, ReadContainerState(state_dir));
    if (state.status == ContainerStatus::kRunning) {
      Result<UniqueFd> pidfd =
          OpenProcess(state.supervisor_pid, state.supervisor_start_time, "supervisor");
      if (pidfd) supervisor = std::move(*pidfd);
    }
    if (supervisor) {
      // The watch goes in before the first read, so no write falls between.
      inotify.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
      if (!inotify) return ErrnoError("inotify_init1");
      if (::inotify_add_watch(inotify.get(), path.c_str(), IN_MODIFY) < 0) {
        return ErrnoError("watch " + path.string());
      }
    }
  }
  UniqueFd log(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!log) {
    if (errno == ENOENT) return OkStatus();  // nothing logged yet
    return ErrnoError("open " + path.string());
  }
  auto copy_available = [&]() -> Status {
    char buffer[65536];
    while (true) {
      ssize_t n = ::read(log.get(), buffer, sizeof(buffer));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError("read " + path.string());
      if (n == 0) return OkStatus();
      IMGTOOL_TRY(WriteAll(out_fd, buffer, static_cast<size_t>(n)).Wrap("copy the log"));
    }
  };
  IMGTOOL_TRY(copy_available());
  if (!supervisor) return OkStatus();
  while (true) {
    struct pollfd fds[2] = {{inotify.get(), POLLIN, 0}, {supervisor.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("follow " + path.string());
    }
    if (fds[0].revents & POLLIN) {
      char events[4096];
      while (::read(inotify.get(), events, sizeof(events)) > 0) {
      }
    }
    IMGTOOL_TRY(copy_available());
    if (fds[1].revents & POLLIN) return copy_available();
  }
}

Result<ExitStatus> ExecInContainer(const fs::path& state_dir, const ProcessSpec& process,
                                   const Stdio& stdio) {
  IMGTOOL_ASSIGN_OR_RETURN(ContainerState state, ReadContainerState(state_dir));
  if (state.status != ContainerStatus::kRunning) {
    return FailedPreconditionError("container " + state.id + " is not running");
  }
  // Checked right before: the pid still names the container's process.
  IMGTOOL_TRY(OpenProcess(state.pid, state.pid_start_time, "container " + state.id));
  IMGTOOL_ASSIGN_OR_RETURN(
      std::unique_ptr<Container> exec,
      Container::Exec(state.pid, state.own_cgroup ? state.id : "", process, state.security, stdio)
          .Wrap("container " + state.id));
  return exec->Wait();
}

}  // namespace imgtool::runner
