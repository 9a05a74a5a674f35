// Blocks every signal for the calling thread until the end of a scope.
#pragma once

#include <pthread.h>
#include <signal.h>

namespace imgtool {

// Threads started within the scope begin with every signal blocked: a signal
// meant for the main thread (a SIGINT the runner forwards to a container)
// never lands on a helper thread whose default action would end imgtool.
class AllSignalsBlocked {
 public:
  AllSignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &saved_);
  }
  ~AllSignalsBlocked() { ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  AllSignalsBlocked(const AllSignalsBlocked&) = delete;
  AllSignalsBlocked& operator=(const AllSignalsBlocked&) = delete;

 private:
  sigset_t saved_;
};

}  // namespace imgtool
