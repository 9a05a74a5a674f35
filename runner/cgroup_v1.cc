#include "runner/cgroup_v1.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <csignal>

#include "common/file_util.h"
#include "common/log.h"
#include "runner/cgroup_detect.h"
#include "runner/cgroup_devices.h"
#include "runner/cgroup_files.h"

namespace imgtool::runner {

namespace {

// A new cpuset cgroup starts with empty cpus and mems, and a cgroup with empty
// ones accepts no task; fill them from the parent unless already set.
Status InheritCpuset(const std::filesystem::path& parent, const std::filesystem::path& dir) {
  for (std::string_view file : {"cpuset.cpus", "cpuset.mems"}) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string current, ReadCgroupFile(dir, file));
    if (current.find_first_not_of(" \n") != std::string::npos) continue;
    IMGTOOL_ASSIGN_OR_RETURN(std::string inherited, ReadCgroupFile(parent, file));
    while (!inherited.empty() && inherited.back() == '\n') inherited.pop_back();
    if (inherited.empty()) continue;
    IMGTOOL_TRY(WriteCgroupFile(dir, file, inherited));
  }
  return OkStatus();
}

}  // namespace

CgroupV1::CgroupV1(const std::map<std::string, std::filesystem::path>& mounts,
                   const std::string& parent, const std::string& id) {
  for (const auto& [mount, controllers] : ManagedV1Hierarchies(mounts)) {
    Hierarchy h{mount, {}, mount / parent, mount / parent / id};
    for (const std::string& controller : controllers) {
      if (IsManagedController(controller)) h.controllers.insert(controller);
    }
    hierarchies_.push_back(std::move(h));
  }
}

const CgroupV1::Hierarchy* CgroupV1::Find(std::string_view controller) const {
  for (const Hierarchy& h : hierarchies_) {
    if (h.controllers.contains(std::string(controller))) return &h;
  }
  return nullptr;
}

const CgroupV1::Hierarchy* CgroupV1::Primary() const {
  // pids and memory list every task of the container; any managed one would.
  if (const Hierarchy* h = Find("pids")) return h;
  if (const Hierarchy* h = Find("memory")) return h;
  return hierarchies_.empty() ? nullptr : &hierarchies_.front();
}

std::string CgroupV1::Path() const {
  if (const Hierarchy* h = Find("memory")) return h->dir.string();
  return hierarchies_.empty() ? std::string() : hierarchies_.front().dir.string();
}

Status CgroupV1::Create(const CgroupResources& resources) {
  IMGTOOL_TRY(ValidateCgroupResources(resources));
  for (const LimitController& need : ControllersFor(resources)) {
    if (Find(need.controller) == nullptr) {
      return FailedPreconditionError(
          StrCat(need.flag, ": the cgroup v1 ", need.controller, " controller is not mounted"));
    }
  }
  if (hierarchies_.empty()) {
    return FailedPreconditionError("no cgroup v1 hierarchy holds memory, cpu, cpuset or pids");
  }
  if (!resources.all_devices && Find("devices") == nullptr) {
    LogWarning(
        "the cgroup v1 devices controller is not mounted: the container may use any "
        "device node it can make");
  }

  created_ = true;
  for (const Hierarchy& h : hierarchies_) {
    // The parent ("imgtool") exists but for the first container: one mkdir
    // in the common case.
    if (::mkdir(h.dir.c_str(), 0755) != 0 && errno != EEXIST) {
      if (errno != ENOENT) return ErrnoError(StrCat("create cgroup ", h.dir.string()));
      IMGTOOL_TRY(MakeCgroupDir(h.parent_dir));
      IMGTOOL_TRY(MakeCgroupDir(h.dir));
    }
    if (h.controllers.contains("cpuset")) {
      // With cgroup.clone_children set on the parent the kernel copied the
      // parent's cpuset.cpus and cpuset.mems in. A parent just made, made
      // before that was set, or made by another tool leaves them empty (no
      // task could join): copied here then, and clone_children set.
      IMGTOOL_ASSIGN_OR_RETURN(std::string cpus, ReadCgroupFile(h.dir, "cpuset.cpus"));
      IMGTOOL_ASSIGN_OR_RETURN(std::string mems, ReadCgroupFile(h.dir, "cpuset.mems"));
      if (cpus.find_first_not_of(" \n") == std::string::npos ||
          mems.find_first_not_of(" \n") == std::string::npos) {
        IMGTOOL_TRY(InheritCpuset(h.mount, h.parent_dir).Wrap("cpuset " + h.parent_dir.string()));
        IMGTOOL_TRY(InheritCpuset(h.parent_dir, h.dir).Wrap("cpuset " + h.dir.string()));
        (void)WriteCgroupFile(h.parent_dir, "cgroup.clone_children", "1");
      }
    }
  }
  Status limits = WriteLimits(resources);
  if (limits && !resources.all_devices) limits = RestrictDevices();
  if (!limits) {
    (void)Destroy();
    return limits;
  }
  return OkStatus();
}

Status CgroupV1::RestrictDevices() {
  const Hierarchy* devices = Find("devices");
  if (devices == nullptr) return OkStatus();
  // A new devices cgroup starts with its parent's list (all, for imgtool's
  // parent): everything denied first, then docker's list allowed.
  IMGTOOL_TRY(WriteCgroupFile(devices->dir, "devices.deny", "a"));
  std::vector<std::string> rules;
  for (const DeviceRule& rule : DefaultDeviceRules()) rules.push_back(DeviceRuleText(rule));
  return WriteCgroupFileLines(devices->dir, "devices.allow", rules);
}

Status CgroupV1::WriteLimits(const CgroupResources& r) {
  if (r.memory_bytes) {
    const std::filesystem::path& dir = Find("memory")->dir;
    IMGTOOL_TRY(WriteCgroupFile(dir, "memory.limit_in_bytes", std::to_string(*r.memory_bytes)));
    if (std::optional<int64_t> total = EffectiveMemorySwap(r)) {
      // memsw must not be below the memory limit, so it goes second.
      if (CgroupFileExists(dir, "memory.memsw.limit_in_bytes")) {
        IMGTOOL_TRY(WriteCgroupFile(dir, "memory.memsw.limit_in_bytes", std::to_string(*total)));
      } else if (r.memory_swap_bytes && *r.memory_swap_bytes != -1 &&
                 *r.memory_swap_bytes != *r.memory_bytes) {
        return FailedPreconditionError(
            "--memory-swap: swap accounting is not enabled in this kernel "
            "(memory.memsw.limit_in_bytes missing; boot with swapaccount=1)");
      }
    }
  }
  if (r.cpus) {
    const std::filesystem::path& dir = Find("cpu")->dir;
    CpuQuota quota = CpusToQuota(*r.cpus);
    IMGTOOL_TRY(WriteCgroupFile(dir, "cpu.cfs_period_us", std::to_string(quota.period_us)));
    IMGTOOL_TRY(WriteCgroupFile(dir, "cpu.cfs_quota_us", std::to_string(quota.quota_us)));
  }
  if (r.cpu_shares) {
    IMGTOOL_TRY(WriteCgroupFile(Find("cpu")->dir, "cpu.shares", std::to_string(*r.cpu_shares)));
  }
  if (r.cpuset_cpus) {
    IMGTOOL_TRY(WriteCgroupFile(Find("cpuset")->dir, "cpuset.cpus", *r.cpuset_cpus));
  }
  if (r.pids_limit) {
    pids_limit_ = r.pids_limit;
    IMGTOOL_TRY(WritePidsMax(*r.pids_limit, 0));
  }
  return OkStatus();
}

Status CgroupV1::WritePidsMax(int64_t limit, int64_t extra) {
  return WriteCgroupFile(Find("pids")->dir, "pids.max",
                         limit > 0 ? std::to_string(limit + extra) : "max");
}

Result<UniqueFd> CgroupV1::DirFdForCloneIntoCgroup() {
  return NotFoundError("cgroup v1 has no single cgroup dir for CLONE_INTO_CGROUP");
}

Status CgroupV1::AddProcess(pid_t pid) {
  std::string text = std::to_string(pid);
  for (const Hierarchy& h : hierarchies_) {
    IMGTOOL_TRY(
        WriteCgroupFile(h.dir, "cgroup.procs", text).Wrap(StrCat("add pid ", pid, " to cgroup")));
  }
  return OkStatus();
}

Status CgroupV1::PrepareSelfEntry() {
  std::vector<UniqueFd> files;
  for (const Hierarchy& h : hierarchies_) {
    std::filesystem::path tasks = h.dir / "tasks";
    UniqueFd fd(::open(tasks.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return ErrnoError("open " + tasks.string());
    files.push_back(std::move(fd));
  }
  self_entry_ = std::move(files);
  return OkStatus();
}

std::vector<UniqueFd> CgroupV1::TakeSelfEntryFiles() { return std::move(self_entry_); }

Status CgroupV1::EnterWithThisThread() {
  if (!left_dirs_.empty()) return FailedPreconditionError("the thread is in the cgroup already");
  IMGTOOL_ASSIGN_OR_RETURN(std::string own, ReadFileToString("/proc/thread-self/cgroup", 1u << 16));
  std::vector<std::filesystem::path> from;
  for (const Hierarchy& h : hierarchies_) {
    std::optional<std::string> path = V1CgroupPathOf(own, h.controllers);
    if (!path) {
      return FailedPreconditionError("/proc/thread-self/cgroup lists no cgroup of " +
                                     h.mount.string());
    }
    from.push_back(h.mount / *path);
  }
  // "0" is the writing thread itself.
  for (size_t i = 0; i < hierarchies_.size(); ++i) {
    Status moved = WriteCgroupFile(hierarchies_[i].dir, "tasks", "0");
    if (!moved) {
      left_dirs_.assign(from.begin(), from.begin() + static_cast<std::ptrdiff_t>(i));
      (void)LeaveWithThisThread();
      return std::move(moved).error().Wrap("move this thread into the cgroup");
    }
  }
  left_dirs_ = std::move(from);
  // The thread counts against pids.max while it is in. A cgroup this
  // manager did not create (exec joining a container) has its limit read.
  Status raised = RaisePidsMaxForThisThread();
  if (!raised) {
    (void)LeaveWithThisThread();
    return raised;
  }
  return OkStatus();
}

Status CgroupV1::RaisePidsMaxForThisThread() {
  std::optional<int64_t> limit = pids_limit_;
  if (!created_ && Find("pids") != nullptr) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string max, ReadCgroupFile(Find("pids")->dir, "pids.max"));
    int64_t value = 0;
    if (std::from_chars(max.data(), max.data() + max.size(), value).ec == std::errc()) {
      limit = value;
    }
  }
  if (!limit) return OkStatus();
  IMGTOOL_TRY(WritePidsMax(*limit, 1));
  entered_pids_limit_ = limit;
  return OkStatus();
}

Status CgroupV1::LeaveWithThisThread() {
  Status first;
  for (const std::filesystem::path& dir : left_dirs_) {
    Status moved = WriteCgroupFile(dir, "tasks", "0");
    if (!moved && first) first = std::move(moved).error().Wrap("move this thread back");
  }
  left_dirs_.clear();
  if (entered_pids_limit_) {
    Status restored = WritePidsMax(*entered_pids_limit_, 0);
    if (!restored && first) first = std::move(restored);
  }
  entered_pids_limit_.reset();
  return first;
}

Result<bool> CgroupV1::OomKilled() {
  const Hierarchy* memory = Find("memory");
  if (memory == nullptr) return false;
  IMGTOOL_ASSIGN_OR_RETURN(std::string control, ReadCgroupFile(memory->dir, "memory.oom_control"));
  if (std::optional<int64_t> kills = FindKeyedValue(control, "oom_kill")) return *kills > 0;
  // Kernels before 4.13 do not count kills; hitting the limit is the best hint.
  IMGTOOL_ASSIGN_OR_RETURN(std::string failcnt, ReadCgroupFile(memory->dir, "memory.failcnt"));
  return failcnt.find_first_not_of("0\n") != std::string::npos;
}

Status CgroupV1::Kill(int sig) {
  const Hierarchy* primary = Primary();
  if (primary == nullptr) return OkStatus();
  return SignalCgroupPids(primary->dir, sig);
}

Result<std::vector<pid_t>> CgroupV1::Pids() {
  const Hierarchy* primary = Primary();
  if (primary == nullptr) return std::vector<pid_t>{};
  return ReadCgroupPids(primary->dir);
}

Status CgroupV1::Destroy() {
  Status first;
  for (const Hierarchy& h : hierarchies_) {
    // Once one hierarchy proved busy the others are too: no more waiting.
    Status removed = RemoveCgroupDir(h.dir, first ? 200 : 0);
    if (!removed && first) first = std::move(removed);
  }
  return first;
}

}  // namespace imgtool::runner
