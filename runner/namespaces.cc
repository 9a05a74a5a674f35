#include "runner/namespaces.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "common/log.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

namespace imgtool::runner {

uint64_t ContainerCloneFlags(bool new_net, bool new_user) {
  uint64_t flags = CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWTIME;
  if (new_net) flags |= CLONE_NEWNET;
  if (new_user) flags |= CLONE_NEWUSER;
  return flags;
}

long CloneChildRaw(uint64_t flags, int cgroup_fd, int* pidfd) noexcept {
  struct clone_args args {};
  args.flags = flags | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(pidfd);
  // With CLONE_PARENT the child inherits the caller's own exit signal, and
  // clone3 refuses any other.
  args.exit_signal = (flags & CLONE_PARENT) ? 0 : SIGCHLD;
  if (cgroup_fd >= 0) {
    args.flags |= CLONE_INTO_CGROUP;
    args.cgroup = static_cast<uint64_t>(cgroup_fd);
  }
  long pid = ::syscall(SYS_clone3, &args, sizeof(args));
  return pid < 0 ? -errno : pid;
}

Result<ClonedChild> CloneChild(uint64_t flags, int cgroup_fd) {
  int pidfd = -1;
  long pid = CloneChildRaw(flags, cgroup_fd, &pidfd);
  if (pid < 0) {
    return ErrnoError(StrCat("clone3 with flags 0x", std::hex, flags,
                             cgroup_fd >= 0 ? " into a cgroup" : ""),
                      static_cast<int>(-pid));
  }
  ClonedChild child;
  child.pid = static_cast<pid_t>(pid);
  if (pid != 0) child.pidfd.reset(pidfd);
  return child;
}

Result<ClonedChild> VforkChild(uint64_t flags, int (*fn)(void*), void* arg) {
  // Legacy clone() takes 32 flag bits, the low 8 being the exit signal.
  if ((flags & ~uint64_t{0xffffff00}) != 0 || (flags & (CLONE_VM | CLONE_VFORK)) != 0) {
    return InvalidArgumentError(StrCat("vfork child: flags 0x", std::hex, flags, " not allowed"));
  }
  // The child's frames hold a few path buffers of 4 KB; a guard page below.
  constexpr size_t kStackSize = 256 * 1024;
  constexpr size_t kGuard = 4096;
  void* stack = ::mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
  if (stack == MAP_FAILED) return ErrnoError("map a stack for the child");
  if (::mprotect(stack, kGuard, PROT_NONE) != 0) {
    Status failed = ErrnoError("guard the child's stack");
    ::munmap(stack, kStackSize);
    return std::move(failed).error();
  }
  int pidfd = -1;
  int pid = ::clone(fn, static_cast<char*>(stack) + kStackSize,
                    static_cast<int>(flags) | CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, arg,
                    &pidfd);
  int err = errno;
  // The child has exec'd or exited: its stack is no one's now.
  ::munmap(stack, kStackSize);
  if (pid < 0) {
    return ErrnoError(StrCat("clone with flags 0x", std::hex, flags, " (vfork)"), err);
  }
  ClonedChild child;
  child.pid = static_cast<pid_t>(pid);
  child.pidfd.reset(pidfd);
  return child;
}

Result<UniqueFd> NewUserNamespaceFd(const IdMappings& mappings) {
  int ready[2];
  int hold[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return ErrnoError("pipe");
  UniqueFd ready_read(ready[0]), ready_write(ready[1]);
  if (::pipe2(hold, O_CLOEXEC) != 0) return ErrnoError("pipe");
  UniqueFd hold_read(hold[0]), hold_write(hold[1]);
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoError("fork for a user namespace");
  if (pid == 0) {
    // Async-signal-safe only: the caller may have other threads.
    ::close(hold[1]);
    char result = ::unshare(CLONE_NEWUSER) == 0 ? 0 : static_cast<char>(errno);
    if (::write(ready[1], &result, 1) != 1) ::_exit(1);
    char byte;
    while (::read(hold[0], &byte, 1) < 0 && errno == EINTR) {
    }
    ::_exit(0);
  }
  ready_write.reset();
  hold_read.reset();
  auto reap = [pid] {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  };
  char result = 1;
  ssize_t n;
  do {
    n = ::read(ready_read.get(), &result, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1 || result != 0) {
    hold_write.reset();
    reap();
    return ErrnoError("unshare a user namespace", n == 1 ? result : EIO);
  }
  Status written = WriteIdMappings(pid, mappings);
  UniqueFd ns;
  if (written) {
    ns.reset(::open(StrCat("/proc/", pid, "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) written = ErrnoError(StrCat("open /proc/", pid, "/ns/user"));
  }
  hold_write.reset();
  reap();
  IMGTOOL_TRY(std::move(written));
  return ns;
}

uint32_t HostIdOfRoot(const std::vector<IdMap>& map) {
  for (const IdMap& entry : map) {
    if (entry.container_id == 0 && entry.size > 0) return entry.host_id;
  }
  return 65534;
}

std::string FormatIdMap(const std::vector<IdMap>& map) {
  std::string out;
  for (const IdMap& entry : map) {
    out += StrCat(entry.container_id, " ", entry.host_id, " ", entry.size, "\n");
  }
  return out;
}

Status WriteIdMappings(pid_t pid, const IdMappings& mappings) {
  for (const auto& [file, map] : {std::pair{"uid_map", &mappings.uids},
                                  std::pair{"gid_map", &mappings.gids}}) {
    std::string path = StrCat("/proc/", pid, "/", file);
    std::string text = FormatIdMap(*map);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return ErrnoError("open " + path);
    // The kernel takes the whole map in one write, or nothing.
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      return ErrnoError("write " + path + " \"" + text.substr(0, text.size() - 1) + "\"");
    }
  }
  return OkStatus();
}

ChildStatus JoinNamespacesOf(int pidfd, uint64_t flags) noexcept {
  if (flags == 0) return ChildStatus();
  if (::setns(pidfd, static_cast<int>(flags)) != 0) {
    return ChildStatus::Failure(errno, "join the container's namespaces (setns on its pidfd)");
  }
  return ChildStatus();
}

Result<uint64_t> NamespacesToJoin(pid_t pid) {
  struct Entry {
    const char* name;
    uint64_t flag;
  };
  static constexpr Entry kEntries[] = {
      {"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS},       {"pid", CLONE_NEWPID},
      {"uts", CLONE_NEWUTS},   {"ipc", CLONE_NEWIPC},      {"net", CLONE_NEWNET},
      {"cgroup", CLONE_NEWCGROUP}, {"time", CLONE_NEWTIME},
  };
  uint64_t flags = 0;
  for (const Entry& entry : kEntries) {
    std::string theirs = StrCat("/proc/", pid, "/ns/", entry.name);
    std::string ours = StrCat("/proc/self/ns/", entry.name);
    struct stat their_stat {}, our_stat {};
    if (::stat(theirs.c_str(), &their_stat) != 0) {
      if (errno == ENOENT && std::strcmp(entry.name, "time") == 0) continue;
      return ErrnoError("stat " + theirs);
    }
    if (::stat(ours.c_str(), &our_stat) != 0) return ErrnoError("stat " + ours);
    if (their_stat.st_ino != our_stat.st_ino || their_stat.st_dev != our_stat.st_dev) {
      flags |= entry.flag;
    }
  }
  return flags;
}

}  // namespace imgtool::runner
