// --init: a tiny reaper built into imgtool. The container's first process,
// once set up, stays as PID 1 and forks the command (PID 2); it forwards every
// signal it gets to the command, reaps every child (orphans end up with it),
// and exits with the command's status (128+N when a signal N ended it).
// Nothing is exec'd for it: no host binary enters the container.
#pragma once

#include "runner/process_exec.h"
#include "runner/sync_channel.h"

namespace imgtool::runner {

// Runs in the container's first process after DropPrivileges. Allocation-free.
[[noreturn]] void RunInit(const ProcessPlan& plan, ChildChannel* channel) noexcept;

}  // namespace imgtool::runner
