#include "runner/pty.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

#include "common/file_util.h"

namespace imgtool::runner {

namespace {

constexpr size_t kChunk = 16384;
// Input piles up only while the container is not reading; past this the relay
// stops reading the user's side until the container catches up.
constexpr size_t kMaxPendingInput = 1u << 20;

}  // namespace

ChildStatus OpenContainerPty(UniqueFd* master, UniqueFd* slave) noexcept {
  master->reset(::open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!*master) return ChildStatus::Failure(errno, "open /dev/pts/ptmx in the container");
  int unlock = 0;
  if (::ioctl(master->get(), TIOCSPTLCK, &unlock) != 0) {
    return ChildStatus::Failure(errno, "unlock the container's pty");
  }
  slave->reset(::ioctl(master->get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!*slave) return ChildStatus::Failure(errno, "open the container's pty slave");
  return ChildStatus();
}

ChildStatus AttachToTerminal(int slave, unsigned short rows, unsigned short columns) noexcept {
  if (rows != 0 && columns != 0) {
    struct winsize size {};
    size.ws_row = rows;
    size.ws_col = columns;
    if (::ioctl(slave, TIOCSWINSZ, &size) != 0) {
      return ChildStatus::Failure(errno, "set the terminal size");
    }
  }
  if (::setsid() < 0) return ChildStatus::Failure(errno, "start a session for the terminal");
  if (::ioctl(slave, TIOCSCTTY, 0) != 0) {
    return ChildStatus::Failure(errno, "make the pty the controlling terminal");
  }
  for (int fd = 0; fd < 3; ++fd) {
    if (::dup2(slave, fd) < 0) return ChildStatus::Failure(errno, "connect stdio to the pty");
  }
  return ChildStatus();
}

std::optional<TerminalSize> GetTerminalSize(int fd) {
  struct winsize size {};
  if (fd < 0 || ::ioctl(fd, TIOCGWINSZ, &size) != 0) return std::nullopt;
  return TerminalSize{size.ws_row, size.ws_col};
}

Result<RawTerminalMode> RawTerminalMode::Enter(int fd) {
  RawTerminalMode mode;
  if (fd < 0 || !::isatty(fd)) return mode;
  if (::tcgetattr(fd, &mode.saved_) != 0) return ErrnoError("read the terminal's settings");
  struct termios raw = mode.saved_;
  ::cfmakeraw(&raw);
  // Keep output post-processing off too: the container's pty does its own.
  if (::tcsetattr(fd, TCSADRAIN, &raw) != 0) return ErrnoError("put the terminal in raw mode");
  mode.fd_ = fd;
  return mode;
}

RawTerminalMode::RawTerminalMode(RawTerminalMode&& other) noexcept
    : fd_(other.fd_), saved_(other.saved_) {
  other.fd_ = -1;
}

RawTerminalMode::~RawTerminalMode() {
  if (fd_ >= 0) ::tcsetattr(fd_, TCSADRAIN, &saved_);
}

PtyRelay::PtyRelay(UniqueFd master, int in_fd, int out_fd)
    : master_(std::move(master)),
      in_fd_(in_fd),
      out_fd_(out_fd),
      size_fd_(in_fd >= 0 && ::isatty(in_fd) ? in_fd : out_fd),
      input_open_(in_fd >= 0) {
  // The master never blocks the loop: a full pty leaves input pending instead.
  int flags = ::fcntl(master_.get(), F_GETFL);
  if (flags >= 0) ::fcntl(master_.get(), F_SETFL, flags | O_NONBLOCK);
}

void PtyRelay::AddPollFds(std::vector<struct pollfd>* fds) const {
  short master_events = 0;
  if (output_open_) master_events |= POLLIN;
  if (!pending_input_.empty()) master_events |= POLLOUT;
  if (master_events != 0) fds->push_back({master_.get(), master_events, 0});
  if (input_open_ && pending_input_.size() < kMaxPendingInput) {
    fds->push_back({in_fd_, POLLIN, 0});
  }
}

Status PtyRelay::HandleEvents(const std::vector<struct pollfd>& fds) {
  for (const struct pollfd& p : fds) {
    if (p.revents == 0) continue;
    if (p.fd == master_.get()) {
      if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        bool eof = false;
        IMGTOOL_TRY(CopyOutput(&eof));
        if (eof) output_open_ = false;
      }
      if (p.revents & POLLOUT) IMGTOOL_TRY(WritePendingInput());
    } else if (p.fd == in_fd_ && input_open_) {
      IMGTOOL_TRY(ReadInput());
    }
  }
  return OkStatus();
}

Status PtyRelay::ReadInput() {
  char buffer[kChunk];
  ssize_t n = ::read(in_fd_, buffer, sizeof(buffer));
  if (n < 0) {
    if (errno == EINTR || errno == EAGAIN) return OkStatus();
    input_open_ = false;
    return OkStatus();
  }
  if (n == 0) {
    // End of the user's input: the container's terminal sees end-of-file
    // (VEOF at the start of a line), as when a user types ^D.
    input_open_ = false;
    if (!sent_eof_) {
      struct termios settings {};
      char eof = 4;
      if (::tcgetattr(master_.get(), &settings) == 0 && settings.c_cc[VEOF] != 0) {
        eof = static_cast<char>(settings.c_cc[VEOF]);
      }
      if (!pending_input_.empty() && pending_input_.back() != '\n') pending_input_ += eof;
      pending_input_ += eof;
      sent_eof_ = true;
    }
  } else {
    pending_input_.append(buffer, static_cast<size_t>(n));
  }
  return WritePendingInput();
}

Status PtyRelay::WritePendingInput() {
  while (!pending_input_.empty()) {
    ssize_t n = ::write(master_.get(), pending_input_.data(), pending_input_.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return OkStatus();
      if (errno == EIO) {  // the container closed its side
        pending_input_.clear();
        input_open_ = false;
        return OkStatus();
      }
      return ErrnoError("write to the container's terminal");
    }
    pending_input_.erase(0, static_cast<size_t>(n));
  }
  return OkStatus();
}

Status PtyRelay::CopyOutput(bool* eof) {
  char buffer[kChunk];
  while (true) {
    ssize_t n = ::read(master_.get(), buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return OkStatus();
      // EIO: every slave fd is closed, which is how a pty says end-of-file.
      *eof = true;
      return OkStatus();
    }
    if (n == 0) {
      *eof = true;
      return OkStatus();
    }
    Status written = WriteAll(out_fd_, buffer, static_cast<size_t>(n));
    if (!written) return std::move(written).error().Wrap("copy the container's terminal output");
  }
}

void PtyRelay::ResizeFromInput() {
  std::optional<TerminalSize> size = GetTerminalSize(size_fd_);
  if (!size) return;
  struct winsize ws {};
  ws.ws_row = size->rows;
  ws.ws_col = size->columns;
  ::ioctl(master_.get(), TIOCSWINSZ, &ws);
}

Status PtyRelay::Drain() {
  if (!output_open_) return OkStatus();
  bool eof = false;
  IMGTOOL_TRY(CopyOutput(&eof));
  output_open_ = false;
  return OkStatus();
}

}  // namespace imgtool::runner
