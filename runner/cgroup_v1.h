// The cgroup v1 manager: one dir <mount>/<parent>/<id> in each hierarchy that
// holds a controller imgtool manages (memory, cpu, cpuacct, cpuset, pids,
// devices).
// Also used on hybrid machines, whose cgroup2 mount holds none of them.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runner/cgroup_manager.h"

namespace imgtool::runner {

class CgroupV1 : public CgroupManager {
 public:
  // `mounts`: controller -> hierarchy mount point (CgroupLayout::v1_mounts).
  CgroupV1(const std::map<std::string, std::filesystem::path>& mounts, const std::string& parent,
           const std::string& id);

  Status Create(const CgroupResources& resources) override;
  Result<UniqueFd> DirFdForCloneIntoCgroup() override;
  Status AddProcess(pid_t pid) override;
  Status EnterWithThisThread() override;
  Status PrepareSelfEntry() override;
  std::vector<UniqueFd> TakeSelfEntryFiles() override;
  Status LeaveWithThisThread() override;
  Result<bool> OomKilled() override;
  Status Kill(int sig) override;
  Result<std::vector<pid_t>> Pids() override;
  Status Destroy() override;
  std::string Path() const override;

 private:
  struct Hierarchy {
    std::filesystem::path mount;
    std::set<std::string> controllers;  // the managed ones it holds
    std::filesystem::path parent_dir;
    std::filesystem::path dir;
  };

  // The hierarchy holding `controller`, or nullptr when it is not mounted.
  const Hierarchy* Find(std::string_view controller) const;
  // The hierarchy whose cgroup.procs lists the container's processes.
  const Hierarchy* Primary() const;
  Status WriteLimits(const CgroupResources& resources);
  // devices.deny and devices.allow: docker's default list (cgroup_devices.h).
  Status RestrictDevices();

  // Writes pids.max for a limit of `limit` container processes.
  Status WritePidsMax(int64_t limit, int64_t extra);
  // EnterWithThisThread's pids.max one higher (entered_pids_limit_).
  Status RaisePidsMaxForThisThread();

  std::vector<Hierarchy> hierarchies_;
  bool created_ = false;               // by Create (else joined, as by exec)
  std::optional<int64_t> pids_limit_;  // as given to Create
  std::optional<int64_t> entered_pids_limit_;  // pids.max while the thread is in, less one
  // Where EnterWithThisThread found the thread, one dir per hierarchy it left.
  std::vector<std::filesystem::path> left_dirs_;
  // Opened by PrepareSelfEntry: the tasks file of each hierarchy's dir.
  std::vector<UniqueFd> self_entry_;
};

}  // namespace imgtool::runner
