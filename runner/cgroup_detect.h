// Finding the cgroup hierarchies: pure parsing of /proc/self/mountinfo plus the
// choice of version, kept apart from I/O so tests feed it text.
#pragma once

#include <filesystem>
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

// The controllers imgtool manages; others (devices, freezer, ...) are left to
// the parent's cgroup.
inline constexpr std::string_view kManagedControllers[] = {"cpu",    "cpuacct", "cpuset",
                                                           "memory", "pids",    "devices"};

}  // namespace imgtool::runner
