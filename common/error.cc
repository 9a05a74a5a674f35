#include "common/error.h"

#include <cstring>

namespace imgtool {

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNotFound:
      return "NotFound";
    case ErrorCode::kAlreadyExists:
      return "AlreadyExists";
    case ErrorCode::kInvalidArgument:
      return "InvalidArgument";
    case ErrorCode::kFailedPrecondition:
      return "FailedPrecondition";
    case ErrorCode::kPermissionDenied:
      return "PermissionDenied";
    case ErrorCode::kUnavailable:
      return "Unavailable";
    case ErrorCode::kDataLoss:
      return "DataLoss";
    case ErrorCode::kInternal:
      return "Internal";
  }
  return "Unknown";
}

Error& Error::Wrap(std::string_view context) & {
  std::string wrapped;
  wrapped.reserve(context.size() + 2 + message_.size());
  wrapped.append(context);
  if (!message_.empty()) {
    wrapped.append(": ");
    wrapped.append(message_);
  }
  message_ = std::move(wrapped);
  return *this;
}

Error&& Error::Wrap(std::string_view context) && {
  Wrap(context);
  return std::move(*this);
}

std::string Error::ToString() const {
  if (sys_errno_ == 0) return message_;
  return message_ + ": " + std::strerror(sys_errno_);
}

ErrorCode ErrorCodeFromErrno(int sys_errno) {
  switch (sys_errno) {
    case ENOENT:
    case ENOTDIR:
    case ESRCH:
      return ErrorCode::kNotFound;
    case EEXIST:
    case ENOTEMPTY:
      return ErrorCode::kAlreadyExists;
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
    case EXDEV:
      return ErrorCode::kInvalidArgument;
    case EACCES:
    case EPERM:
    case EROFS:
      return ErrorCode::kPermissionDenied;
    case EAGAIN:
    case EBUSY:
    case EINTR:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ECONNREFUSED:
    case ECONNRESET:
    case ETIMEDOUT:
      return ErrorCode::kUnavailable;
    case EIO:
      return ErrorCode::kDataLoss;
    default:
      return ErrorCode::kInternal;
  }
}

Error ErrnoError(std::string_view what, int sys_errno) {
  return Error(ErrorCodeFromErrno(sys_errno), std::string(what), sys_errno);
}

}  // namespace imgtool
