#include "runner/child_status.h"

#include <initializer_list>

namespace imgtool::runner {

ChildStatus ChildStatus::Failure(int sys_errno, const char* p1, const char* p2, const char* p3,
                                 const char* p4) {
  ChildStatus status;
  status.failed_ = true;
  status.sys_errno_ = sys_errno;
  FixedString text(status.message_, sizeof(status.message_));
  for (const char* part : {p1, p2, p3, p4}) {
    if (part != nullptr) text.Append(part);
  }
  return status;
}

FixedString& FixedString::Append(const char* text) {
  if (size_ == 0) return *this;
  while (*text != '\0') {
    if (length_ + 1 >= size_) {
      truncated_ = true;
      break;
    }
    buffer_[length_++] = *text++;
  }
  buffer_[length_] = '\0';
  return *this;
}

FixedString& FixedString::AppendInt(int64_t value) {
  char digits[24];
  size_t n = 0;
  bool negative = value < 0;
  // Work on the unsigned magnitude so that INT64_MIN does not overflow.
  uint64_t magnitude = negative ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
  do {
    digits[n++] = static_cast<char>('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude != 0);
  char text[26];
  size_t i = 0;
  if (negative) text[i++] = '-';
  while (n > 0) text[i++] = digits[--n];
  text[i] = '\0';
  return Append(text);
}

FdPath::FdPath(int fd) {
  FixedString text(path, sizeof(path));
  text.Append("/proc/self/fd/").AppendInt(fd);
}

}  // namespace imgtool::runner
