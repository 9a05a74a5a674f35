// What the v1 and v2 managers share: reading and writing cgroupfs files (one
// write() per value, as the kernel parses each write on its own), pid lists,
// removal with retry, and the pure translations of docker-style limits.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "runner/cgroup_manager.h"

namespace imgtool::runner {

// Writes `value` to <dir>/<file> in a single write(); never creates the file.
Status WriteCgroupFile(const std::filesystem::path& dir, std::string_view file,
                       std::string_view value);
// Writes each of `lines` (with a newline) to <dir>/<file>, one write() each
// on one open file, as devices.allow takes one rule per write.
Status WriteCgroupFileLines(const std::filesystem::path& dir, std::string_view file,
                            const std::vector<std::string>& lines);
Result<std::string> ReadCgroupFile(const std::filesystem::path& dir, std::string_view file);
bool CgroupFileExists(const std::filesystem::path& dir, std::string_view file);

// The pids in <dir>/cgroup.procs.
Result<std::vector<pid_t>> ReadCgroupPids(const std::filesystem::path& dir);

// Sends `sig` to every pid of <dir>/cgroup.procs; with SIGKILL repeats a few
// rounds so that processes forked meanwhile go too. Pids already gone are fine.
Status SignalCgroupPids(const std::filesystem::path& dir, int sig);

// The path, relative to its hierarchy's root, of the cgroup that
// /proc/<pid>/cgroup text ("ID:CONTROLLERS:PATH" lines) names for the v1
// hierarchy holding any of `controllers`; nullopt when no line lists one.
std::optional<std::string> V1CgroupPathOf(std::string_view proc_cgroup,
                                          const std::set<std::string>& controllers);

// mkdir that accepts an existing dir.
Status MakeCgroupDir(const std::filesystem::path& dir);

// rmdir, retried for up to `patience` while the kernel still counts exiting
// tasks (EBUSY). A missing dir is success.
Status RemoveCgroupDir(const std::filesystem::path& dir, int patience_ms = 200);

// The value of `key` in a flat-keyed file ("oom_kill 3\nmax 0\n"), if present.
std::optional<int64_t> FindKeyedValue(std::string_view text, std::string_view key);

// Rejects contradictory or out-of-range limits before anything is written.
Status ValidateCgroupResources(const CgroupResources& resources);

// A controller a limit needs, with the flag that set the limit.
struct LimitController {
  std::string_view controller;  // "memory"
  std::string_view flag;        // "--memory"
};
// The controllers the limits in `resources` need, in the order of the flags
// (--memory, --cpus, --cpu-shares, --cpuset-cpus, --pids-limit). Both
// managers refuse a limit whose controller they lack, naming its flag.
std::vector<LimitController> ControllersFor(const CgroupResources& resources);

// --cpus as a CFS quota over a 100 ms period: {quota_us, period_us}.
struct CpuQuota {
  int64_t quota_us;
  int64_t period_us;
};
CpuQuota CpusToQuota(double cpus);

// v1 cpu.shares (2..262144, default 1024) to v2 cpu.weight (1..10000, default
// 100): the log-scale mapping crun uses, so 1024 maps to 100, 2 to 1 and 262144
// to 10000 (the older linear formula of runc maps 1024 to 39).
uint64_t CpuSharesToWeight(uint64_t shares);

// The memory+swap total to apply: the explicit --memory-swap (-1 = unlimited),
// or docker's default of twice the memory limit when only -m is given.
std::optional<int64_t> EffectiveMemorySwap(const CgroupResources& resources);

}  // namespace imgtool::runner
