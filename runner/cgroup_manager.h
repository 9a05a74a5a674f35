// One container's cgroup, behind one interface with an implementation per
// hierarchy version (cgroup_v1.cc, cgroup_v2.cc). The layout of the machine's
// hierarchies is detected once (cgroup_detect.h) and passed in, so tests point
// the managers at a fake tree in a temp dir.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace imgtool::runner {

// Limits as given on the command line; unset fields are left at the kernel's
// default (unlimited / inherited).
struct CgroupResources {
  std::optional<int64_t> memory_bytes;       // -m; > 0
  std::optional<int64_t> memory_swap_bytes;  // --memory-swap: memory+swap total, -1 = unlimited
  std::optional<double> cpus;                // --cpus, e.g. 0.5
  std::optional<uint64_t> cpu_shares;        // --cpu-shares, v1 scale 2..262144
  std::optional<std::string> cpuset_cpus;    // --cpuset-cpus, e.g. "0-1,3"
  std::optional<int64_t> pids_limit;         // --pids-limit; <= 0 = unlimited
  // --privileged: every device node may be used. Otherwise only docker's
  // default list (cgroup_devices.h): devices.allow on v1, a BPF program on v2.
  bool all_devices = false;

  bool empty() const {
    return !memory_bytes && !memory_swap_bytes && !cpus && !cpu_shares && !cpuset_cpus &&
           !pids_limit;
  }
  friend bool operator==(const CgroupResources&, const CgroupResources&) = default;
};

enum class CgroupVersion { kV1, kV2 };

// Where the hierarchies are. On a hybrid machine (v1 controllers plus a cgroup2
// mount holding few or none) the version is kV1 and `unified_root` is only
// informative: the controllers live in v1.
struct CgroupLayout {
  CgroupVersion version = CgroupVersion::kV2;
  // v2: the cgroup2 mount point (or a fake root in tests).
  std::filesystem::path unified_root;
  // v2: the controllers listed in <unified_root>/cgroup.controllers.
  std::set<std::string> unified_controllers;
  // v1: controller name ("memory", "cpu", "cpuacct", "cpuset", "pids", ...) to the
  // mount point of the hierarchy holding it; co-mounted controllers share one.
  std::map<std::string, std::filesystem::path> v1_mounts;
  // Relative dir under each root that holds imgtool's cgroups: <root>/<parent>/<id>.
  std::string parent = "imgtool";
  // v2: attaches the device filter to a new cgroup's dir (AttachDeviceFilter);
  // tests of a fake tree, which no BPF program attaches to, record the call.
  std::function<Status(int dir_fd)> attach_device_filter;
};

class CgroupManager {  // one per container
 public:
  virtual ~CgroupManager() = default;

  // Makes the cgroup (and its parents) and writes the limits. Call before the
  // container's process runs. Limits the hierarchy cannot express (e.g. swap
  // without swap accounting) are InvalidArgument/FailedPrecondition, never
  // silently dropped.
  virtual Status Create(const CgroupResources& resources) = 0;
  // v2: an fd on the cgroup dir for clone3(CLONE_INTO_CGROUP). v1: NotFound
  // (there is no single dir), so the caller uses AddProcess after clone.
  virtual Result<UniqueFd> DirFdForCloneIntoCgroup() = 0;
  // Moves `pid` into the cgroup (every v1 hierarchy we manage; v2 fallback when
  // CLONE_INTO_CGROUP is unavailable; `exec` joining a running container).
  virtual Status AddProcess(pid_t pid) = 0;
  // v1: moves the calling thread alone into the cgroup, so that the
  // processes it clones until LeaveWithThisThread start there, as
  // CLONE_INTO_CGROUP does on v2. A thread moving itself is the one move the
  // kernel makes without first waiting for an RCU grace period (about 10 ms,
  // more on a busy machine); AddProcess, like any move of another task, waits.
  // Meanwhile pids.max is one higher, as the thread counts. On failure the
  // thread is where it was. v2: NotFound (use CLONE_INTO_CGROUP).
  virtual Status EnterWithThisThread() {
    return NotFoundError("only cgroup v1 moves a thread alone");
  }
  // v1, optional: opens ahead, from any thread, the `tasks` file of each of
  // the cgroup's hierarchies, so that a newly cloned process moves itself in
  // with one write of "0" to each (TakeSelfEntryFiles) before it does anything
  // else: a move of oneself, without the RCU wait of AddProcess, and without
  // the cloning thread entering before the clone and leaving after it (one
  // write per hierarchy each way, on the path to the container's start). The
  // clone itself is not counted against pids.max, as it happens outside.
  // v2: nothing to do (CLONE_INTO_CGROUP).
  virtual Status PrepareSelfEntry() { return OkStatus(); }
  // Hands over the files PrepareSelfEntry opened (close-on-exec), in
  // hierarchy order; empty when it opened none (or they were taken).
  virtual std::vector<UniqueFd> TakeSelfEntryFiles() { return {}; }
  // Moves the calling thread back to the cgroups it left in
  // EnterWithThisThread and restores pids.max.
  virtual Status LeaveWithThisThread() { return OkStatus(); }
  // True when the kernel's OOM killer killed a process of this cgroup
  // (v2 memory.events oom_kill; v1 memory.oom_control oom_kill).
  virtual Result<bool> OomKilled() = 0;
  // Sends `sig` to every process in the cgroup (cgroup.kill on v2 for SIGKILL).
  virtual Status Kill(int sig) = 0;
  // The pids in the cgroup (cgroup.procs).
  virtual Result<std::vector<pid_t>> Pids() = 0;
  // Removes the cgroup dirs. The processes must be gone; a cgroup that still
  // has processes is FailedPrecondition (kill and reap first). Missing dirs are
  // fine, so Destroy is idempotent.
  virtual Status Destroy() = 0;
  // The cgroup's path: the v2 dir, or the v1 memory (else first) hierarchy's dir.
  virtual std::string Path() const = 0;
};

// Detects the machine's layout once per process (later calls return the cached
// value). Reads /proc/self/mountinfo.
Result<CgroupLayout> DetectCgroupLayout();

// A manager for <root>/<layout.parent>/<container_id>. Nothing is created until
// Create(); to join an existing container's cgroup, construct and AddProcess.
Result<std::unique_ptr<CgroupManager>> NewCgroupManager(const std::string& container_id,
                                                        const CgroupLayout& layout);

// Removes imgtool's cgroups of containers that are gone (after a crash of
// imgtool): every <root>/<parent>/<id> for which `is_live(id)` is false is
// emptied (SIGKILL to what is left in it) and removed. Cgroups of live
// containers are left alone. Returns the ids it removed.
Result<std::vector<std::string>> CleanupStaleCgroups(
    const CgroupLayout& layout, const std::function<bool(std::string_view id)>& is_live);

// Where the creators of imgtool's cgroups hold their claims: /run, so that a
// reboot, which ends every cgroup, ends every claim too.
inline constexpr const char* kCgroupClaimDir = "/run/imgtool/cgroups";

// A process's claim on the cgroup it made for a container: the file
// <dir>/<id>, flocked for as long as the cgroup exists. The file appears
// only once it is locked (created under a temp name, then renamed), so an
// unlocked claim means its creator died (imgtool killed with SIGKILL, a
// crash) and left the cgroup behind.
class CgroupClaim {
 public:
  CgroupClaim() = default;
  CgroupClaim(CgroupClaim&&) noexcept = default;
  CgroupClaim& operator=(CgroupClaim&&) noexcept = default;
  ~CgroupClaim() = default;  // an unreleased claim stays, unlocked, for cleanup

  static Result<CgroupClaim> Acquire(const std::filesystem::path& dir, const std::string& id);
  // Gives the claim up: call once the cgroup is removed.
  void Release();
  bool held() const { return static_cast<bool>(fd_); }

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
};

// Removes the cgroups whose claims in `claim_dir` nobody holds (their
// creators died), after SIGKILL to what is left in them, and those claims.
// Cheap when there is nothing to do: one listing and a non-blocking flock per
// live container. Returns the ids it removed.
Result<std::vector<std::string>> CleanupUnclaimedCgroups(const CgroupLayout& layout,
                                                         const std::filesystem::path& claim_dir);

// A container id usable as a cgroup dir name (no '/', not "." or "..", short).
Status ValidateCgroupName(std::string_view container_id);

}  // namespace imgtool::runner
