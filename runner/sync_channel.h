// The typed channel between the runner (parent) and the container's first
// process (child): a SOCK_SEQPACKET socketpair, one fixed-size message per
// send, file descriptors passed with SCM_RIGHTS.
//
// The child's end is close-on-exec, so a successful execve shows up in the
// parent as end-of-file: no "started" message is needed. Errors raised in the
// child travel to the parent, which turns them into one Error; the child itself
// prints nothing.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>

#include "common/error.h"
#include "common/unique_fd.h"
#include "runner/child_status.h"

namespace imgtool::runner {

enum class ChildReportKind {
  kExecuted,      // the child's end closed: execve succeeded (or the child died)
  kSetupFailed,   // an error before exec; the child exits with 125
  kExecFailed,    // execve failed; the child exits with 126 or 127
  kPtyMaster,     // the master side of the container's terminal, in `fd`
  kPid,           // a pid (exec: the process started in the container), in `pid`,
                  // with its pidfd in `fd` when one was sent
};

struct ChildReport {
  ChildReportKind kind = ChildReportKind::kExecuted;
  int sys_errno = 0;
  std::string message;
  UniqueFd fd;
  pid_t pid = 0;

  // For kSetupFailed/kExecFailed: the report as an Error.
  Error ToError() const;
};

class ParentChannel {
 public:
  ParentChannel() = default;
  explicit ParentChannel(UniqueFd fd) : fd_(std::move(fd)) {}

  // Lets a child that waits in WaitForParent() go on (after the parent wrote the
  // id maps, joined the cgroup, attached the network).
  Status AllowChildToContinue();
  // Blocks for the next report; kExecuted when the child's end is closed.
  Result<ChildReport> ReceiveReport();

  int fd() const { return fd_.get(); }
  void Close() { fd_.reset(); }

 private:
  UniqueFd fd_;
};

// Every method is allocation-free and safe in the child after clone.
class ChildChannel {
 public:
  ChildChannel() = default;
  explicit ChildChannel(UniqueFd fd) : fd_(std::move(fd)) {}

  // Blocks until the parent says go on. False when the parent went away.
  bool WaitForParent() noexcept;
  void ReportSetupFailure(const ChildStatus& status) noexcept;
  void ReportExecFailure(const ChildStatus& status) noexcept;
  bool SendPtyMaster(int master_fd) noexcept;
  // A pid, with a pidfd for it when `pidfd` >= 0.
  bool SendPid(pid_t pid, int pidfd = -1) noexcept;

  int fd() const { return fd_.get(); }
  void Close() { fd_.reset(); }

 private:
  bool Send(int kind, const ChildStatus* status, int passed_fd, int value) noexcept;

  UniqueFd fd_;
};

struct SyncChannelPair {
  ParentChannel parent;
  ChildChannel child;
};

Result<SyncChannelPair> NewSyncChannel();

}  // namespace imgtool::runner
