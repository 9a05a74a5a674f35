#include "runner/process_exec.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runner/pty.h"

namespace imgtool::runner {

namespace {

constexpr size_t kPathBuffer = 4096;

void ResetSignalDispositions() noexcept {
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &action, nullptr);  // glibc's own signals fail with EINVAL: fine
  }
}

// Tries execve on `dir/name` for each PATH entry, the way a shell does: ENOENT
// and friends move on, EACCES is remembered, anything else stops the search.
int ExecWithPath(const ProcessPlan& plan) noexcept {
  const char* name = plan.argv[0];
  if (std::strchr(name, '/') != nullptr) {
    ::execve(name, plan.argv.data(), plan.envp.data());
    return errno;
  }
  const char* path = plan.path.c_str();
  int result = ENOENT;
  char candidate[kPathBuffer];
  size_t name_length = std::strlen(name);
  while (true) {
    const char* end = std::strchr(path, ':');
    size_t dir_length = end == nullptr ? std::strlen(path) : static_cast<size_t>(end - path);
    // An empty entry means the current directory.
    const char* dir = dir_length == 0 ? "." : path;
    if (dir_length == 0) dir_length = 1;
    if (dir_length + 1 + name_length < sizeof(candidate)) {
      std::memcpy(candidate, dir, dir_length);
      candidate[dir_length] = '/';
      std::memcpy(candidate + dir_length + 1, name, name_length + 1);
      ::execve(candidate, plan.argv.data(), plan.envp.data());
      switch (errno) {
        case EACCES:
          result = EACCES;
          break;
        case ENOENT:
        case ENOTDIR:
        case ENAMETOOLONG:
        case ELOOP:
        case ESTALE:
          break;
        default:
          return errno;
      }
    }
    if (end == nullptr) break;
    path = end + 1;
  }
  return result;
}

}  // namespace

Result<std::unique_ptr<ProcessPlan>> BuildProcessPlan(ProcessPlanInput input) {
  const ProcessSpec& process = *input.process;
  auto plan = std::make_unique<ProcessPlan>();
  plan->args = process.args;
  plan->env = EnvWithDefaults(process.env, input.hostname, input.user.home, process.terminal);
  for (std::string& arg : plan->args) plan->argv.push_back(arg.data());
  plan->argv.push_back(nullptr);
  for (std::string& entry : plan->env) plan->envp.push_back(entry.data());
  plan->envp.push_back(nullptr);
  plan->path = LookupEnv(plan->env, "PATH").value_or("");
  plan->cwd = process.cwd.empty() ? "/" : process.cwd;
  plan->rlimits = process.rlimits;
  plan->user = std::move(input.user);
  plan->caps = input.caps;
  plan->last_cap = LastCapability();
  plan->no_new_privileges = input.no_new_privileges;
  plan->seccomp = std::move(input.seccomp);
  plan->terminal = process.terminal;
  plan->rows = process.rows;
  plan->columns = process.columns;
  if (plan->terminal && (plan->rows == 0 || plan->columns == 0)) {
    std::optional<TerminalSize> size = GetTerminalSize(input.stdio.in);
    if (!size) size = GetTerminalSize(input.stdio.out);
    if (size) {
      plan->rows = size->rows;
      plan->columns = size->columns;
    }
  }
  plan->stdio[0] = input.stdio.in >= 0 ? input.stdio.in : input.dev_null;
  plan->stdio[1] = input.stdio.out;
  plan->stdio[2] = input.stdio.err;
  if (!plan->terminal) {
    for (int fd : plan->stdio) {
      if (fd < 0) return InvalidArgumentError("stdio: a closed fd for the container's stdio");
    }
  }
  sigemptyset(&plan->signal_mask);
  return plan;
}

ChildStatus ConnectStdio(const ProcessPlan& plan, ChildChannel* channel) noexcept {
  if (plan.terminal) {
    UniqueFd master, slave;
    IMGTOOL_CHILD_TRY(OpenContainerPty(&master, &slave));
    if (!channel->SendPtyMaster(master.get())) {
      return ChildStatus::Failure(errno, "send the terminal to imgtool");
    }
    return AttachToTerminal(slave.get(), plan.rows, plan.columns);
  }
  // Move the sources above 2 first, so that dup2 into 0..2 can not clobber a
  // source that happens to sit there already.
  int moved[3];
  for (int i = 0; i < 3; ++i) {
    moved[i] = ::fcntl(plan.stdio[i], F_DUPFD_CLOEXEC, 3);
    if (moved[i] < 0) return ChildStatus::Failure(errno, "connect the container's stdio");
  }
  for (int i = 0; i < 3; ++i) {
    if (::dup2(moved[i], i) < 0)
      return ChildStatus::Failure(errno, "connect the container's stdio");
    ::close(moved[i]);
  }
  return ChildStatus();
}

ChildStatus DropPrivileges(const ProcessPlan& plan) noexcept {
  for (const ResourceLimit& limit : plan.rlimits) {
    struct rlimit value {};
    value.rlim_cur = limit.soft;
    value.rlim_max = limit.hard;
    if (::setrlimit(static_cast<__rlimit_resource_t>(limit.resource), &value) != 0) {
      return ChildStatus::Failure(errno, "--ulimit ", UlimitName(limit.resource));
    }
  }
  bool seccomp_first = plan.seccomp && !plan.no_new_privileges;
  if (seccomp_first) IMGTOOL_CHILD_TRY(InstallSeccompProgram(*plan.seccomp));
  IMGTOOL_CHILD_TRY(DropBoundingCapabilities(plan.caps, plan.last_cap));
  // Raw system calls, not glibc's wrappers: in a process that ever had a
  // second thread those broadcast the change to every thread glibc knows of
  // (__nptl_setxid), under a lock that another thread of imgtool may have
  // held at the clone, and waiting for threads the child does not have. The
  // child is one thread, so the raw call changes all there is.
  const std::vector<gid_t>& groups = plan.user.additional_gids;
  if (::syscall(SYS_setgroups, groups.size(), groups.data()) != 0) {
    return ChildStatus::Failure(errno, "set the supplementary groups");
  }
  if (::syscall(SYS_setresgid, plan.user.gid, plan.user.gid, plan.user.gid) != 0) {
    return ChildStatus::Failure(errno, "switch to the group");
  }
  if (::syscall(SYS_setresuid, plan.user.uid, plan.user.uid, plan.user.uid) != 0) {
    return ChildStatus::Failure(errno, "switch to the user");
  }
  IMGTOOL_CHILD_TRY(SetProcessCapabilities(plan.caps));
  if (plan.no_new_privileges && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return ChildStatus::Failure(errno, "set no_new_privs");
  }
  if (plan.seccomp && !seccomp_first) IMGTOOL_CHILD_TRY(InstallSeccompProgram(*plan.seccomp));
  return ChildStatus();
}

void ExecProcess(const ProcessPlan& plan, ChildChannel* channel) noexcept {
  if (::chdir(plan.cwd.c_str()) != 0) {
    channel->ReportSetupFailure(
        ChildStatus::Failure(errno, "change to the working dir ", plan.cwd.c_str()));
    ::_exit(125);
  }
  ResetSignalDispositions();
  ::umask(022);
  ::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
  ::sigprocmask(SIG_SETMASK, &plan.signal_mask, nullptr);
  int err = ExecWithPath(plan);
  // Signals are the command's now; the report must still get out.
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  const char* name = plan.argv[0];
  bool has_slash = std::strchr(name, '/') != nullptr;
  if (err == ENOENT && !has_slash) {
    channel->ReportExecFailure(
        ChildStatus::Failure(0, "exec \"", name, "\": executable file not found in $PATH"));
  } else {
    channel->ReportExecFailure(ChildStatus::Failure(err, "exec \"", name, "\""));
  }
  ::_exit(err == ENOENT || err == ENOTDIR ? 127 : 126);
}

}  // namespace imgtool::runner
