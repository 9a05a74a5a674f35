#include "runner/init.h"

#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace imgtool::runner {

void RunInit(const ProcessPlan& plan, ChildChannel* channel) noexcept {
  // Everything blocked: signals are taken one at a time with sigwaitinfo, and
  // a blocked signal reaches PID 1 even without a handler.
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  // PID 1 never execs, so close-on-exec does not apply to it: everything it
  // inherited from imgtool goes now, but stdio and the channel (which the
  // command needs to report an exec failure).
  unsigned channel_fd = static_cast<unsigned>(channel->fd());
  if (channel_fd > 3) ::syscall(SYS_close_range, 3u, channel_fd - 1, 0u);
  ::syscall(SYS_close_range, channel_fd + 1, ~0u, 0u);

  // A raw clone: glibc's fork() would run atfork handlers that may take locks
  // another thread of imgtool held at the first clone.
  long pid = ::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
  if (pid < 0) {
    channel->ReportSetupFailure(ChildStatus::Failure(errno, "--init: fork the command"));
    ::_exit(125);
  }
  if (pid == 0) {
    // The command gets a process group of its own, and the terminal's
    // foreground with it, so that ^C reaches it once and not the reaper.
    ::setpgid(0, 0);
    if (plan.terminal) ::tcsetpgrp(0, ::getpid());
    ExecProcess(plan, channel);
  }
  // Only the command's copy of the channel may remain, so that its exec shows
  // up in the parent as end-of-file.
  channel->Close();

  int exit_code = 0;
  while (true) {
    siginfo_t info;
    int sig = ::sigwaitinfo(&all, &info);
    if (sig < 0) continue;
    if (sig != SIGCHLD) {
      ::kill(static_cast<pid_t>(pid), sig);
      continue;
    }
    while (true) {
      int status = 0;
      pid_t reaped = ::waitpid(-1, &status, WNOHANG);
      if (reaped <= 0) break;
      if (reaped != pid) continue;
      exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      // The other processes of the container die with PID 1.
      ::_exit(exit_code);
    }
  }
}

}  // namespace imgtool::runner
