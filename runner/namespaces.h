// Namespaces: clone3 into new ones, user namespace id maps (--userns=auto
// takes them from runner/userns_alloc.h), and joining a running container's
// (exec).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "runner/child_status.h"

namespace imgtool::runner {

// The namespaces a container gets at clone time: pid, uts, mnt, ipc, time, plus
// net and user when asked. The cgroup namespace is not among them: the child
// unshares it once it sits in its own cgroup, so that that cgroup is its root.
uint64_t ContainerCloneFlags(bool new_net, bool new_user);

struct ClonedChild {
  pid_t pid = 0;  // 0 in the child
  UniqueFd pidfd;  // parent only
};

// clone3 with `flags` (CLONE_NEW*), CLONE_PIDFD, and CLONE_INTO_CGROUP when
// `cgroup_fd` >= 0. Returns twice, like fork(): in the child `pid` is 0. The
// child must keep to allocation-free code (see child_status.h).
Result<ClonedChild> CloneChild(uint64_t flags, int cgroup_fd);

// Starts `fn(arg)` in a child that shares this process's memory and runs on
// a stack of its own until it execs or exits, while the calling thread waits
// (CLONE_VM | CLONE_VFORK, as posix_spawn does), with `flags` (CLONE_NEW*,
// not CLONE_NEWTIME: unshare it in the child, it takes effect at exec) and
// CLONE_PIDFD. Unlike CloneChild no copy of the address space is made,
// written to page by page (copy-on-write) by both sides, and torn down at
// the exec. `fn` must never return, must write nothing but its own stack
// (the memory is the caller's) and must take no lock (see child_status.h).
Result<ClonedChild> VforkChild(uint64_t flags, int (*fn)(void*), void* arg);

// One line of /proc/PID/uid_map: `size` ids from `container_id` map to `host_id`.
struct IdMap {
  uint32_t container_id = 0;
  uint32_t host_id = 0;
  uint32_t size = 0;
  friend bool operator==(const IdMap&, const IdMap&) = default;
};

struct IdMappings {
  std::vector<IdMap> uids;
  std::vector<IdMap> gids;
  friend bool operator==(const IdMappings&, const IdMappings&) = default;
};

// The same, allocation-free for use in a child: returns the pid (0 in the new
// child) or -errno, and stores the pidfd in *pidfd.
long CloneChildRaw(uint64_t flags, int cgroup_fd, int* pidfd) noexcept;

// The host id that container id 0 maps to (overflow id 65534 when unmapped).
uint32_t HostIdOfRoot(const std::vector<IdMap>& map);

// "0 100000 65536\n" lines.
std::string FormatIdMap(const std::vector<IdMap>& map);

// Parent side: writes /proc/PID/uid_map and gid_map of a waiting child.
Status WriteIdMappings(pid_t pid, const IdMappings& mappings);

// A new user namespace with `mappings`, held only by the returned fd (its
// short-lived creator has exited): the template for idmapped mounts, which
// take their id mapping from a user namespace.
Result<UniqueFd> NewUserNamespaceFd(const IdMappings& mappings);

// Joins every namespace of the process behind `pidfd` that differs from the
// caller's (setns on a pidfd, Linux >= 5.8). CLONE_NEWPID applies to children
// of the caller only. Allocation-free; for the helper process of exec.
ChildStatus JoinNamespacesOf(int pidfd, uint64_t flags) noexcept;

// Which of the container's namespaces differ from the caller's (by inode of
// /proc/PID/ns/*): the flags to pass to JoinNamespacesOf.
Result<uint64_t> NamespacesToJoin(pid_t pid);

}  // namespace imgtool::runner
