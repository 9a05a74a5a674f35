// imgtool's default seccomp profile, as data: an allow-list, with the
// syscalls that need a capability allowed only when the container has it.
#include <sched.h>

#include <cerrno>

#include "runner/seccomp.h"

namespace imgtool::runner {

namespace {

// Syscalls any container may make. The kernel still checks permissions on each;
// what is left out is attack surface a container has no business reaching.
constexpr std::string_view kAllowed[] = {
    "accept", "accept4", "access", "adjtimex", "alarm", "arch_prctl", "bind", "brk", "cachestat",
    "capget", "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime",
    "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
    "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
    "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
    "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group",
    "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark",
    "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl",
    "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
    "futex_wake", "futimesat", "get_mempolicy", "get_robust_list", "get_thread_area", "getcpu",
    "getcwd", "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
    "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
    "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "getrusage", "getsid", "getsockname", "getsockopt", "gettid",
    "gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit", "ioctl",
    "ioprio_get", "ioprio_set", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listxattr", "listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr",
    "lstat", "lstat64", "madvise", "map_shadow_stack", "mbind", "membarrier", "memfd_create",
    "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
    "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap",
    "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2",
    "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
    "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev",
    "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom",
    "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
    "removexattrat", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq",
    "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg",
    "sendto", "set_mempolicy", "set_mempolicy_home_node", "set_robust_list", "set_thread_area",
    "set_tid_address", "setdomainname", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32",
    "setgid", "setgid32", "setgroups", "setgroups32", "sethostname", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "setsid", "setsockopt", "setuid",
    "setuid32", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
    "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socket", "socketcall",
    "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink",
    "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
    "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
    "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
    "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
};

struct CapabilityGated {
  const char* capability;
  std::vector<std::string> names;
};

// The namespace flags an unprivileged clone may not pass.
constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                     CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;

}  // namespace

SeccompProfile DefaultSeccompProfile() {
  SeccompProfile profile;
  profile.default_action = SeccompAction::kErrno;
  profile.default_errno = EPERM;
  // Only the native architecture: 32-bit syscalls (int 0x80 on x86_64) kill
  // the caller. Half the filter to build, and syscalls newer than libseccomp
  // can be allowed by number.
  profile.architectures = {};

  SeccompRule allowed;
  allowed.names.assign(std::begin(kAllowed), std::end(kAllowed));
  profile.rules.push_back(std::move(allowed));

  // personality(2): only the harmless personas and the query.
  for (uint64_t persona : {0x0ull, 0x8ull, 0x20000ull, 0x20008ull, 0xffffffffull}) {
    SeccompRule rule;
    rule.names = {"personality"};
    rule.args = {{0, persona, 0, SeccompOp::kEqual}};
    profile.rules.push_back(std::move(rule));
  }

  const CapabilityGated gated[] = {
      {"CAP_SYS_ADMIN",
       {"bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "listmount", "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree",
        "perf_event_open", "pivot_root", "quotactl", "quotactl_fd", "setns", "statmount",
        "swapoff", "swapon", "syslog", "umount", "umount2", "unshare"}},
      {"CAP_SYS_BOOT", {"kexec_file_load", "kexec_load", "reboot"}},
      {"CAP_SYS_CHROOT", {"chroot"}},
      {"CAP_SYS_MODULE", {"delete_module", "finit_module", "init_module"}},
      {"CAP_SYS_PACCT", {"acct"}},
      {"CAP_SYS_PTRACE",
       {"kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
        "ptrace"}},
      {"CAP_SYS_RAWIO", {"ioperm", "iopl"}},
      {"CAP_SYS_TIME", {"clock_settime", "clock_settime64", "settimeofday", "stime"}},
      {"CAP_SYS_TTY_CONFIG", {"vhangup"}},
      {"CAP_SYSLOG", {"syslog"}},
      {"CAP_BPF", {"bpf"}},
      {"CAP_PERFMON", {"perf_event_open"}},
      {"CAP_DAC_READ_SEARCH", {"open_by_handle_at"}},
  };
  for (const CapabilityGated& group : gated) {
    SeccompRule rule;
    rule.names = group.names;
    rule.includes.caps = {group.capability};
    profile.rules.push_back(std::move(rule));
  }

  // Without CAP_SYS_ADMIN: clone only without namespace flags (the flags are
  // the first argument everywhere but s390), clone3 "missing" so that libc
  // falls back to clone.
  SeccompRule plain_clone;
  plain_clone.names = {"clone"};
  plain_clone.args = {{0, kNamespaceFlags, 0, SeccompOp::kMaskedEqual}};
  plain_clone.excludes.caps = {"CAP_SYS_ADMIN"};
  profile.rules.push_back(std::move(plain_clone));

  SeccompRule no_clone3;
  no_clone3.names = {"clone3"};
  no_clone3.action = SeccompAction::kErrno;
  no_clone3.errno_ret = ENOSYS;
  no_clone3.excludes.caps = {"CAP_SYS_ADMIN"};
  profile.rules.push_back(std::move(no_clone3));
  return profile;
}

}  // namespace imgtool::runner
