// Finding the cgroup hierarchies: pure parsing of /proc/self/mountinfo plus the
// choice of version, kept apart from I/O so tests feed it text.
#pragma once

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "runner/cgroup_manager.h"

namespace imgtool::runner {

struct CgroupMount {
  std::filesystem::path mount_point;
  bool unified = false;               // cgroup2
  std::set<std::string> controllers;  // v1: from the super options ("name=" ones excluded)
};

// The cgroup and cgroup2 mounts listed in a mountinfo text.
std::vector<CgroupMount> ParseCgroupMounts(std::string_view mountinfo);

// Picks the version: v1 as soon as a v1 hierarchy holds memory, pids, cpu or
// cpuset (legacy and hybrid machines); otherwise v2 on the cgroup2 mount,
// whose controllers are given as the text of its cgroup.controllers.
Result<CgroupLayout> ChooseCgroupLayout(const std::vector<CgroupMount>& mounts,
                                        std::string_view unified_controllers);

// The controllers imgtool manages; others (freezer, blkio, ...) are left to
// the parent's cgroup.
inline constexpr std::string_view kManagedControllers[] = {"cpu",    "cpuacct", "cpuset",
                                                           "memory", "pids",    "devices"};
bool IsManagedController(std::string_view controller);

// The v1 hierarchies in which a container gets a cgroup of its own (those
// holding a managed controller), from CgroupLayout::v1_mounts: mount point
// to every controller the hierarchy holds (co-mounted ones share one).
std::map<std::filesystem::path, std::set<std::string>> ManagedV1Hierarchies(
    const std::map<std::string, std::filesystem::path>& v1_mounts);

}  // namespace imgtool::runner
