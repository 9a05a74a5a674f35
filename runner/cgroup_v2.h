// The cgroup v2 manager: <root>/<parent>/<id>, controllers enabled in
// cgroup.subtree_control along the path, clone3(CLONE_INTO_CGROUP) support.
#pragma once

#include <filesystem>
#include <functional>
#include <set>
#include <string>

#include "runner/cgroup_manager.h"

namespace imgtool::runner {

class CgroupV2 : public CgroupManager {
 public:
  // `available`: the controllers of <root>/cgroup.controllers.
  // `attach_device_filter`: AttachDeviceFilter, or a stand-in for a fake tree.
  CgroupV2(std::filesystem::path root, const std::string& parent, const std::string& id,
           std::set<std::string> available,
           std::function<Status(int dir_fd)> attach_device_filter);

  Status Create(const CgroupResources& resources) override;
  Result<UniqueFd> DirFdForCloneIntoCgroup() override;
  Status AddProcess(pid_t pid) override;
  Result<bool> OomKilled() override;
  Status Kill(int sig) override;
  Result<std::vector<pid_t>> Pids() override;
  Status Destroy() override;
  std::string Path() const override { return dir_.string(); }

 private:
  Status EnableControllers(const std::filesystem::path& dir);
  Status WriteLimits(const CgroupResources& resources);

  std::filesystem::path root_;
  std::filesystem::path parent_dir_;
  std::filesystem::path dir_;
  std::set<std::string> available_;
  std::function<Status(int dir_fd)> attach_device_filter_;
};

}  // namespace imgtool::runner
