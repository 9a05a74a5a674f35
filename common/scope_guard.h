// Runs a callable when the scope ends unless Cancel() was called first.
#pragma once

#include <utility>

namespace imgtool {

template <typename F>
class [[nodiscard]] ScopeGuard {
 public:
  explicit ScopeGuard(F fn) : fn_(std::move(fn)) {}
  ScopeGuard(ScopeGuard&& other) noexcept : fn_(std::move(other.fn_)), active_(other.active_) {
    other.active_ = false;
  }
  ScopeGuard(const ScopeGuard&) = delete;
  ScopeGuard& operator=(const ScopeGuard&) = delete;
  ScopeGuard& operator=(ScopeGuard&&) = delete;
  ~ScopeGuard() {
    if (active_) fn_();
  }

  void Cancel() { active_ = false; }

 private:
  F fn_;
  bool active_ = true;
};

}  // namespace imgtool
