// Errors raised in the container's child process between clone and exec.
//
// The child is a copy of a process that may have had other threads; one of them
// may have held the malloc lock at the moment of the clone, and that lock never
// gets released in the copy. So child-side code allocates nothing: messages live
// in a fixed buffer, and the parent turns them into an Error once they reach it
// over the sync channel.
#pragma once

#include <cstddef>
#include <cstdint>

namespace imgtool::runner {

class [[nodiscard]] ChildStatus {
 public:
  static constexpr size_t kMaxMessage = 440;

  ChildStatus() = default;  // success

  // "part1part2..." (truncated to fit) with `sys_errno` (0 for none).
  static ChildStatus Failure(int sys_errno, const char* p1, const char* p2 = nullptr,
                             const char* p3 = nullptr, const char* p4 = nullptr);

  bool ok() const { return !failed_; }
  int sys_errno() const { return sys_errno_; }
  const char* message() const { return message_; }

 private:
  bool failed_ = false;
  int sys_errno_ = 0;
  char message_[kMaxMessage] = {};
};

// Appends to a fixed buffer without allocating; keeps it NUL-terminated and
// truncates what does not fit.
class FixedString {
 public:
  FixedString(char* buffer, size_t size) : buffer_(buffer), size_(size) {
    if (size_ > 0) buffer_[0] = '\0';
  }
  FixedString& Append(const char* text);
  FixedString& AppendInt(int64_t value);
  const char* c_str() const { return buffer_; }
  bool truncated() const { return truncated_; }

 private:
  char* buffer_;
  size_t size_;
  size_t length_ = 0;
  bool truncated_ = false;
};

// "/proc/self/fd/N" for mount(2) calls on a target opened with openat2.
struct FdPath {
  explicit FdPath(int fd);
  const char* c_str() const { return path; }
  char path[32];
};

}  // namespace imgtool::runner

// Returns a failed ChildStatus from the enclosing child-side function.
#define IMGTOOL_CHILD_TRY(expr)                          \
  do {                                                   \
    ::imgtool::runner::ChildStatus child_try_ = (expr);  \
    if (!child_try_.ok()) return child_try_;             \
  } while (0)
