#include "runner/sync_channel.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace imgtool::runner {

namespace {

// On the wire. Both ends are the same binary, so a plain struct is fine.
enum WireKind : uint32_t {
  kWireContinue = 1,
  kWireSetupFailed = 2,
  kWireExecFailed = 3,
  kWirePtyMaster = 4,
  kWirePid = 5,
};

struct WireMessage {
  uint32_t kind;
  int32_t sys_errno;
  int32_t value;
  char text[ChildStatus::kMaxMessage];
};

}  // namespace

Error ChildReport::ToError() const {
  ErrorCode code = sys_errno != 0 ? ErrorCodeFromErrno(sys_errno) : ErrorCode::kInternal;
  return Error(code, message, sys_errno);
}

Result<SyncChannelPair> NewSyncChannel() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    return ErrnoError("sync channel: socketpair");
  }
  SyncChannelPair pair;
  pair.parent = ParentChannel(UniqueFd(fds[0]));
  pair.child = ChildChannel(UniqueFd(fds[1]));
  return pair;
}

Status ParentChannel::AllowChildToContinue() {
  WireMessage message{};
  message.kind = kWireContinue;
  while (::send(fd_.get(), &message, sizeof(message), MSG_NOSIGNAL) < 0) {
    if (errno != EINTR) return ErrnoError("sync channel: tell the child to go on");
  }
  return OkStatus();
}

Result<ChildReport> ParentChannel::ReceiveReport() {
  WireMessage message{};
  struct iovec iov = {&message, sizeof(message)};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  struct msghdr header {};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof(control);
  ssize_t n;
  while ((n = ::recvmsg(fd_.get(), &header, MSG_CMSG_CLOEXEC)) < 0) {
    if (errno != EINTR) return ErrnoError("sync channel: receive from the child");
  }
  ChildReport report;
  if (n == 0) return report;  // kExecuted
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&header); c != nullptr; c = CMSG_NXTHDR(&header, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof(fd));
      report.fd.reset(fd);
    }
  }
  if (static_cast<size_t>(n) != sizeof(message)) {
    return InternalError("sync channel: short message from the child");
  }
  message.text[sizeof(message.text) - 1] = '\0';
  report.sys_errno = message.sys_errno;
  report.message = message.text;
  switch (message.kind) {
    case kWireSetupFailed:
      report.kind = ChildReportKind::kSetupFailed;
      break;
    case kWireExecFailed:
      report.kind = ChildReportKind::kExecFailed;
      break;
    case kWirePtyMaster:
      if (!report.fd) return InternalError("sync channel: terminal message without an fd");
      report.kind = ChildReportKind::kPtyMaster;
      break;
    case kWirePid:
      report.kind = ChildReportKind::kPid;
      report.pid = message.value;
      break;
    default:
      return InternalError("sync channel: unknown message from the child");
  }
  return report;
}

bool ChildChannel::WaitForParent() noexcept {
  WireMessage message{};
  ssize_t n;
  while ((n = ::recv(fd_.get(), &message, sizeof(message), 0)) < 0) {
    if (errno != EINTR) return false;
  }
  return n == sizeof(message) && message.kind == kWireContinue;
}

bool ChildChannel::Send(int kind, const ChildStatus* status, int passed_fd, int value) noexcept {
  WireMessage message{};
  message.kind = static_cast<uint32_t>(kind);
  message.value = value;
  if (status != nullptr) {
    message.sys_errno = status->sys_errno();
    FixedString(message.text, sizeof(message.text)).Append(status->message());
  }
  struct iovec iov = {&message, sizeof(message)};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  struct msghdr header {};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  if (passed_fd >= 0) {
    header.msg_control = control;
    header.msg_controllen = sizeof(control);
    struct cmsghdr* c = CMSG_FIRSTHDR(&header);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &passed_fd, sizeof(int));
  }
  while (::sendmsg(fd_.get(), &header, MSG_NOSIGNAL) < 0) {
    if (errno != EINTR) return false;
  }
  return true;
}

void ChildChannel::ReportSetupFailure(const ChildStatus& status) noexcept {
  Send(kWireSetupFailed, &status, -1, 0);
}

void ChildChannel::ReportExecFailure(const ChildStatus& status) noexcept {
  Send(kWireExecFailed, &status, -1, 0);
}

bool ChildChannel::SendPtyMaster(int master_fd) noexcept {
  return Send(kWirePtyMaster, nullptr, master_fd, 0);
}

bool ChildChannel::SendPid(pid_t pid, int pidfd) noexcept {
  return Send(kWirePid, nullptr, pidfd, pid);
}

}  // namespace imgtool::runner
