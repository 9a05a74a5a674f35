// Error values shared by every module: a closed set of codes, the errno where
// there is one, and context prepended at each layer with Wrap().
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace imgtool {

enum class ErrorCode {
  kNotFound,
  kAlreadyExists,
  kInvalidArgument,
  kFailedPrecondition,
  kPermissionDenied,
  kUnavailable,
  kDataLoss,
  kInternal,
};

std::string_view ErrorCodeName(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message, int sys_errno = 0)
      : code_(code), sys_errno_(sys_errno), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  int sys_errno() const { return sys_errno_; }
  // The message with all context, without the errno text.
  const std::string& message() const { return message_; }

  // Prepends "context: " to the message, as each caller adds what it was doing.
  Error& Wrap(std::string_view context) &;
  Error&& Wrap(std::string_view context) &&;

  // "context: message: strerror(errno)", the one line the CLI prints.
  std::string ToString() const;

 private:
  ErrorCode code_;
  int sys_errno_;
  std::string message_;
};

// Builds an error from an errno value, choosing the code from it.
Error ErrnoError(std::string_view what, int sys_errno = errno);
ErrorCode ErrorCodeFromErrno(int sys_errno);

inline Error NotFoundError(std::string message) {
  return Error(ErrorCode::kNotFound, std::move(message));
}
inline Error AlreadyExistsError(std::string message) {
  return Error(ErrorCode::kAlreadyExists, std::move(message));
}
inline Error InvalidArgumentError(std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message));
}
inline Error FailedPreconditionError(std::string message) {
  return Error(ErrorCode::kFailedPrecondition, std::move(message));
}
inline Error PermissionDeniedError(std::string message) {
  return Error(ErrorCode::kPermissionDenied, std::move(message));
}
inline Error UnavailableError(std::string message) {
  return Error(ErrorCode::kUnavailable, std::move(message));
}
inline Error DataLossError(std::string message) {
  return Error(ErrorCode::kDataLoss, std::move(message));
}
inline Error InternalError(std::string message) {
  return Error(ErrorCode::kInternal, std::move(message));
}

// Result<T> holds a T or an Error; shaped like std::expected<T, Error> so that a
// later switch is mechanical (has_value, value, error, operator*, operator->).
template <typename T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  template <typename U = T,
            typename = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                        !std::is_same_v<std::decay_t<U>, Error> &&
                                        !std::is_same_v<std::decay_t<U>, Result>>>
  Result(U&& value) : storage_(std::in_place_index<0>, std::forward<U>(value)) {}
  Result(Error error) : storage_(std::in_place_index<1>, std::move(error)) {}

  bool has_value() const { return storage_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { return std::get<0>(storage_); }
  const T& value() const& { return std::get<0>(storage_); }
  T&& value() && { return std::get<0>(std::move(storage_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  Error& error() & { return std::get<1>(storage_); }
  const Error& error() const& { return std::get<1>(storage_); }
  Error&& error() && { return std::get<1>(std::move(storage_)); }

  Result& Wrap(std::string_view context) & {
    if (!has_value()) error().Wrap(context);
    return *this;
  }
  Result&& Wrap(std::string_view context) && {
    if (!has_value()) error().Wrap(context);
    return std::move(*this);
  }

 private:
  std::variant<T, Error> storage_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;

  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}

  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  void value() const {}

  Error& error() & { return error_; }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }

  Result& Wrap(std::string_view context) & {
    if (!ok_) error_.Wrap(context);
    return *this;
  }
  Result&& Wrap(std::string_view context) && {
    if (!ok_) error_.Wrap(context);
    return std::move(*this);
  }

 private:
  Error error_{ErrorCode::kInternal, ""};
  bool ok_ = true;
};

using Status = Result<void>;

inline Status OkStatus() { return Status(); }

}  // namespace imgtool

#define IMGTOOL_CONCAT_INNER_(a, b) a##b
#define IMGTOOL_CONCAT_(a, b) IMGTOOL_CONCAT_INNER_(a, b)

// Returns the error of a Result/Status expression from the enclosing function.
#define IMGTOOL_TRY(expr)                                    \
  do {                                                       \
    auto imgtool_try_result_ = (expr);                       \
    if (!imgtool_try_result_) {                              \
      return std::move(imgtool_try_result_).error();         \
    }                                                        \
  } while (0)

#define IMGTOOL_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp) return std::move(tmp).error();             \
  lhs = std::move(tmp).value()

// IMGTOOL_ASSIGN_OR_RETURN(auto fd, OpenSomething()); declares or assigns lhs.
#define IMGTOOL_ASSIGN_OR_RETURN(lhs, expr) \
  IMGTOOL_ASSIGN_OR_RETURN_IMPL_(IMGTOOL_CONCAT_(imgtool_result_, __LINE__), lhs, expr)
