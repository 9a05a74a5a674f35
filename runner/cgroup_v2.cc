#include "runner/cgroup_v2.h"

#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <sstream>

#include "common/log.h"
#include "runner/cgroup_files.h"

namespace imgtool::runner {

namespace {

constexpr std::string_view kV2Controllers[] = {"cpu", "cpuset", "memory", "pids"};

std::set<std::string> SplitWords(std::string_view text) {
  std::set<std::string> words;
  std::istringstream in{std::string(text)};
  std::string word;
  while (in >> word) words.insert(word);
  return words;
}

}  // namespace

CgroupV2::CgroupV2(std::filesystem::path root, const std::string& parent, const std::string& id,
                   std::set<std::string> available,
                   std::function<Status(int dir_fd)> attach_device_filter)
    : root_(std::move(root)),
      parent_dir_(root_ / parent),
      dir_(parent_dir_ / id),
      available_(std::move(available)),
      attach_device_filter_(std::move(attach_device_filter)) {}

// Enables in `dir`'s subtree_control the managed controllers it lacks, in one
// write, so that its children get the interface files.
Status CgroupV2::EnableControllers(const std::filesystem::path& dir) {
  std::set<std::string> enabled;
  if (auto text = ReadCgroupFile(dir, "cgroup.subtree_control")) {
    enabled = SplitWords(*text);
  } else {
    return std::move(text).error().Wrap("enable cgroup controllers");
  }
  std::string request;
  for (std::string_view controller : kV2Controllers) {
    std::string name(controller);
    if (!available_.contains(name) || enabled.contains(name)) continue;
    if (!request.empty()) request += ' ';
    request += '+';
    request += name;
  }
  if (request.empty()) return OkStatus();
  return WriteCgroupFile(dir, "cgroup.subtree_control", request).Wrap("enable cgroup controllers");
}

Status CgroupV2::Create(const CgroupResources& resources) {
  IMGTOOL_TRY(ValidateCgroupResources(resources));
  for (const LimitController& need : ControllersFor(resources)) {
    if (!available_.contains(std::string(need.controller))) {
      return FailedPreconditionError(StrCat(need.flag, ": the ", need.controller,
                                            " controller is not available in ", root_.string()));
    }
  }

  IMGTOOL_TRY(EnableControllers(root_));
  IMGTOOL_TRY(MakeCgroupDir(parent_dir_));
  IMGTOOL_TRY(EnableControllers(parent_dir_));
  IMGTOOL_TRY(MakeCgroupDir(dir_));
  Status limits = WriteLimits(resources);
  if (limits && !resources.all_devices) {
    // Before any process is in it: no window with every device open.
    UniqueFd dir(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    limits =
        dir ? attach_device_filter_(dir.get()) : ErrnoError(StrCat("open cgroup ", dir_.string()));
    if (!limits) limits = std::move(limits).error().Wrap("cgroup " + dir_.string());
  }
  if (!limits) {
    (void)RemoveCgroupDir(dir_, 0);
    return limits;
  }
  return OkStatus();
}

Status CgroupV2::WriteLimits(const CgroupResources& r) {
  if (r.memory_bytes) {
    IMGTOOL_TRY(WriteCgroupFile(dir_, "memory.max", std::to_string(*r.memory_bytes)));
  }
  if (std::optional<int64_t> total = EffectiveMemorySwap(r)) {
    // v2 limits swap alone; docker's --memory-swap is memory plus swap.
    bool swap_accounting = CgroupFileExists(dir_, "memory.swap.max");
    if (*total == -1) {
      if (swap_accounting) IMGTOOL_TRY(WriteCgroupFile(dir_, "memory.swap.max", "max"));
    } else if (swap_accounting) {
      IMGTOOL_TRY(
          WriteCgroupFile(dir_, "memory.swap.max", std::to_string(*total - *r.memory_bytes)));
    } else if (r.memory_swap_bytes && *r.memory_swap_bytes != *r.memory_bytes) {
      return FailedPreconditionError(
          "--memory-swap: swap accounting is not enabled in this kernel (memory.swap.max missing)");
    }
  }
  if (r.cpus) {
    CpuQuota quota = CpusToQuota(*r.cpus);
    IMGTOOL_TRY(WriteCgroupFile(dir_, "cpu.max", StrCat(quota.quota_us, " ", quota.period_us)));
  }
  if (r.cpu_shares) {
    IMGTOOL_TRY(
        WriteCgroupFile(dir_, "cpu.weight", std::to_string(CpuSharesToWeight(*r.cpu_shares))));
  }
  if (r.cpuset_cpus) {
    IMGTOOL_TRY(WriteCgroupFile(dir_, "cpuset.cpus", *r.cpuset_cpus));
  }
  if (r.pids_limit) {
    IMGTOOL_TRY(WriteCgroupFile(dir_, "pids.max",
                                *r.pids_limit > 0 ? std::to_string(*r.pids_limit) : "max"));
  }
  return OkStatus();
}

Result<UniqueFd> CgroupV2::DirFdForCloneIntoCgroup() {
  UniqueFd fd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return ErrnoError(StrCat("open cgroup ", dir_.string()));
  return fd;
}

Status CgroupV2::AddProcess(pid_t pid) {
  return WriteCgroupFile(dir_, "cgroup.procs", std::to_string(pid))
      .Wrap(StrCat("add pid ", pid, " to cgroup"));
}

Result<bool> CgroupV2::OomKilled() {
  IMGTOOL_ASSIGN_OR_RETURN(std::string events, ReadCgroupFile(dir_, "memory.events"));
  std::optional<int64_t> kills = FindKeyedValue(events, "oom_kill");
  return kills.has_value() && *kills > 0;
}

Status CgroupV2::Kill(int sig) {
  // cgroup.kill (Linux 5.14) kills everything at once, forks in flight included.
  if (sig == SIGKILL && CgroupFileExists(dir_, "cgroup.kill")) {
    return WriteCgroupFile(dir_, "cgroup.kill", "1");
  }
  return SignalCgroupPids(dir_, sig);
}

Result<std::vector<pid_t>> CgroupV2::Pids() { return ReadCgroupPids(dir_); }

Status CgroupV2::Destroy() { return RemoveCgroupDir(dir_); }

}  // namespace imgtool::runner
