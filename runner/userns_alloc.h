// --userns=auto: every container gets a slice of the subordinate ids of
// /etc/subuid and /etc/subgid that no other container has, as podman's
// --userns=auto does, so that a process escaping one container owns nothing
// of another's.
//
// The slices of all imgtool processes on the host are in one directory
// (default /run/imgtool/userns; a reboot ends every container and every slice):
//
//   allocations.json   every slice: its owner, what keeps it, its uid and gid maps
//   allocations.lock   flocked while allocations.json is read and rewritten
//   claims/<owner>     flocked (shared) by every process that runs the owner's
//                      container: imgtool run from the allocation on, and the
//                      runner for the life of the container (a detached
//                      container's supervisor too)
//
// A slice is live while its claim is locked or while its `keep_while` path
// exists (a container kept after its end: its directory, until rm). Any other
// slice is stale (its imgtool was killed, or the container was removed
// without Free) and the next Allocate takes it back, as the cgroups of dead
// claims are removed at the next start.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "runner/namespaces.h"

namespace imgtool::runner {

inline constexpr const char* kUsernsStateDir = "/run/imgtool/userns";
// The kernel takes at most this many lines per uid_map or gid_map.
inline constexpr size_t kMaxIdMapLines = 340;

// Host ids [start, start + count).
struct IdRange {
  uint32_t start = 0;
  uint32_t count = 0;
  uint64_t end() const { return uint64_t{start} + count; }
  friend bool operator==(const IdRange&, const IdRange&) = default;
};

// Every range of `user` (by name, or by `uid` as a number) in /etc/subuid (or
// subgid) text, in file order. Comments and malformed lines are skipped.
std::vector<IdRange> ParseSubordinateRanges(std::string_view content, std::string_view user,
                                            uid_t uid);

struct SubordinateIds {
  std::string user;  // whose ranges they are
  std::vector<IdRange> ranges;
};

// The ranges the calling user's containers take from `file`: as root those of
// "containers" when it has any, else those of "root"; any other user its own.
// NotFound naming the file and the users when there are none.
Result<SubordinateIds> SubordinateIdsOfCaller(const std::filesystem::path& file);

// Sorted, overlaps and neighbours merged, empty ranges dropped.
std::vector<IdRange> NormalizeRanges(std::vector<IdRange> ranges);

// A map for container ids [0, size) and the `extra` lines: the container ids
// that no `extra` line maps go, in order, to the lowest ids of `available`
// that are neither `used` nor host ids of `extra`. Unavailable when too few
// are free (the message counts them); InvalidArgument for a map of more lines
// than the kernel takes. Pure.
Result<std::vector<IdMap>> PickIdMap(const std::vector<IdRange>& available,
                                     const std::vector<IdRange>& used, uint32_t size,
                                     const std::vector<IdMap>& extra);

// Lines of uidmapping=/gidmapping=: not empty, inside 32 bits (id 4294967295
// is not an id), no two overlapping inside or outside (the kernel refuses a map
// with overlaps). `what` names the option in the error.
Status ValidateExtraIdMaps(const std::vector<IdMap>& extra, std::string_view what);

// A share of a slice's claim: while any share is held, the slice is live.
class UsernsClaim {
 public:
  UsernsClaim() = default;
  UsernsClaim(UsernsClaim&&) noexcept = default;
  UsernsClaim& operator=(UsernsClaim&&) noexcept = default;

  // Takes a share of the claim file at `path`. NotFound when the slice is gone
  // (freed, or taken back because nobody held it).
  static Result<UsernsClaim> Join(const std::filesystem::path& path);
  bool held() const { return static_cast<bool>(fd_); }

 private:
  explicit UsernsClaim(UniqueFd fd) : fd_(std::move(fd)) {}
  friend class UsernsAllocator;
  UniqueFd fd_;
};

struct UsernsRequest {
  std::string owner;                 // the container id: [A-Za-z0-9_.-], names the claim
  std::filesystem::path keep_while;  // the slice stays while this exists; empty: none
  uint32_t size = 0;                 // container ids 0..size-1 (with the extra lines')
  std::vector<IdMap> extra_uids;     // uidmapping=: forced lines, host ids as given
  std::vector<IdMap> extra_gids;     // gidmapping=
};

struct UsernsAllocation {
  std::string owner;
  std::filesystem::path keep_while;
  IdMappings mappings;
};

// What Allocate hands out: the maps, and the caller's share of the claim.
struct UsernsLease {
  IdMappings mappings;
  std::filesystem::path claim_path;  // for others to Join (the runner, a supervisor)
  UsernsClaim claim;
};

struct UsernsAllocatorOptions {
  std::filesystem::path state_dir = kUsernsStateDir;
  std::filesystem::path subuid_file = "/etc/subuid";
  std::filesystem::path subgid_file = "/etc/subgid";
};

class UsernsAllocator {
 public:
  explicit UsernsAllocator(UsernsAllocatorOptions options) : options_(std::move(options)) {}

  // A slice for `request.owner` (AlreadyExists when it has one), after taking
  // back the stale ones. Unavailable, naming the subuid or subgid file, when
  // the ranges have too few free ids.
  Result<UsernsLease> Allocate(const UsernsRequest& request);
  // Gives the owner's slice back (no slice is fine).
  Status Free(std::string_view owner);
  // The live slices, after taking back the stale ones.
  Result<std::vector<UsernsAllocation>> List();

  std::filesystem::path ClaimPath(std::string_view owner) const;

 private:
  Result<std::vector<UsernsAllocation>> LoadLive(bool* changed);
  Status Store(const std::vector<UsernsAllocation>& allocations);
  bool IsLive(const UsernsAllocation& allocation) const;
  std::filesystem::path TablePath() const { return options_.state_dir / "allocations.json"; }
  std::filesystem::path LockPath() const { return options_.state_dir / "allocations.lock"; }

  UsernsAllocatorOptions options_;
};

}  // namespace imgtool::runner
