// -t: the container's terminal. The child opens it in the container's own
// devpts (so that `tty` inside names a device that exists there) and passes the
// master to the parent; the parent puts the user's terminal in raw mode,
// copies bytes both ways and forwards window size changes (SIGWINCH).
#pragma once

#include <poll.h>
#include <termios.h>

#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "runner/child_status.h"

namespace imgtool::runner {

// ---- child side (allocation-free) ----

// Opens a new pty pair from /dev/pts/ptmx (the container's devpts, after
// pivot_root). The slave is opened through the master (TIOCGPTPEER), never by
// a path.
ChildStatus OpenContainerPty(UniqueFd* master, UniqueFd* slave) noexcept;

// Makes `slave` the controlling terminal of a new session and stdin, stdout
// and stderr; sets its size when rows and columns are given.
ChildStatus AttachToTerminal(int slave, unsigned short rows, unsigned short columns) noexcept;

// ---- parent side ----

struct TerminalSize {
  unsigned short rows = 0;
  unsigned short columns = 0;
};
// The size of the terminal at `fd`; nullopt when `fd` is not a terminal.
std::optional<TerminalSize> GetTerminalSize(int fd);

// Puts a terminal in raw mode and restores it when destroyed. A no-op when
// `fd` is not a terminal.
class RawTerminalMode {
 public:
  static Result<RawTerminalMode> Enter(int fd);
  RawTerminalMode(RawTerminalMode&& other) noexcept;
  RawTerminalMode& operator=(RawTerminalMode&&) = delete;
  RawTerminalMode(const RawTerminalMode&) = delete;
  ~RawTerminalMode();

 private:
  RawTerminalMode() = default;
  int fd_ = -1;
  struct termios saved_ {};
};

// Copies between the user's side (in_fd -> master, master -> out_fd) inside
// the runner's poll loop, without blocking on a full pty.
class PtyRelay {
 public:
  // `in_fd` < 0: nothing is sent to the container (-t without -i). The size
  // of the user's terminal is read from in_fd, or out_fd when in_fd is no tty.
  PtyRelay(UniqueFd master, int in_fd, int out_fd);

  // Appends the fds to watch now.
  void AddPollFds(std::vector<struct pollfd>* fds) const;
  // Handles what poll reported for the fds AddPollFds added.
  Status HandleEvents(const std::vector<struct pollfd>& fds);
  // SIGWINCH: copies the size of the user's terminal to the container's.
  void ResizeFromInput();
  // After the container ended: copies what is left in the pty to out_fd.
  Status Drain();
  int master() const { return master_.get(); }

 private:
  Status ReadInput();
  Status WritePendingInput();
  Status CopyOutput(bool* eof);

  UniqueFd master_;
  int in_fd_;
  int out_fd_;
  int size_fd_;
  bool input_open_;
  bool sent_eof_ = false;
  bool output_open_ = true;
  std::string pending_input_;
};

}  // namespace imgtool::runner
