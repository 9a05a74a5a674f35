// The last steps before the user's command runs, shared by `run` (after the
// rootfs is set up) and `exec` (after joining a running container): stdio or
// the terminal, the user switch, capabilities, no_new_privs, seccomp, the
// working dir, and execve with a PATH lookup. The parent builds a ProcessPlan;
// the child only reads it.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "runner/caps.h"
#include "runner/child_status.h"
#include "runner/process_spec.h"
#include "runner/seccomp.h"
#include "runner/sync_channel.h"
#include "runner/user.h"

namespace imgtool::runner {

struct ProcessPlan {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::vector<char*> argv;  // into args, NULL-terminated
  std::vector<char*> envp;  // into env, NULL-terminated
  std::string path;         // the container's PATH, for looking up args[0]
  std::string cwd;
  ResolvedUser user;
  CapabilitySet caps;
  int last_cap = 0;
  bool no_new_privileges = true;
  std::optional<SeccompProgram> seccomp;
  bool terminal = false;
  unsigned short rows = 0;
  unsigned short columns = 0;
  std::vector<ResourceLimit> rlimits;  // --ulimit
  int stdio[3] = {-1, -1, -1};  // become fds 0, 1, 2 when there is no terminal
  sigset_t signal_mask{};       // the mask the command starts with
};

struct ProcessPlanInput {
  const ProcessSpec* process = nullptr;
  std::string hostname;
  ResolvedUser user;
  CapabilitySet caps;
  bool no_new_privileges = true;
  std::optional<SeccompProgram> seccomp;
  Stdio stdio;
  int dev_null = -1;  // used for stdin when stdio.in < 0
};

// The plan holds pointers into itself, so it lives on the heap and never moves.
Result<std::unique_ptr<ProcessPlan>> BuildProcessPlan(ProcessPlanInput input);

// ---- child side (allocation-free) ----

// Terminal (a pty from the container's devpts, whose master goes to the
// parent over `channel`) or the planned stdio fds.
ChildStatus ConnectStdio(const ProcessPlan& plan, ChildChannel* channel) noexcept;
// --ulimit's limits (first: raising a hard limit needs CAP_SYS_RESOURCE), then
// user, groups, capabilities, no_new_privs, seccomp, in the order the kernel
// needs: seccomp goes in last when no_new_privs allows it, first otherwise
// (then it needs CAP_SYS_ADMIN, which only the setup still has).
ChildStatus DropPrivileges(const ProcessPlan& plan) noexcept;
// chdir, default signal dispositions, the command's signal mask, umask 022,
// every fd past stdio close-on-exec, then execve. Does not return: an exec
// failure goes to the parent and the process exits 127 (not found) or 126.
[[noreturn]] void ExecProcess(const ProcessPlan& plan, ChildChannel* channel) noexcept;

}  // namespace imgtool::runner
