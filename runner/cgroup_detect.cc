#include "runner/cgroup_detect.h"

#include <algorithm>
#include <mutex>
#include <optional>
#include <sstream>

#include "common/file_util.h"
#include "common/log.h"

namespace imgtool::runner {

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountField(std::string_view field) {
  std::string out;
  out.reserve(field.size());
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && field[i + 1] >= '0' && field[i + 1] <= '3' &&
        field[i + 2] >= '0' && field[i + 2] <= '7' && field[i + 3] >= '0' && field[i + 3] <= '7') {
      out.push_back(static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                                      (field[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(field[i]);
    }
  }
  return out;
}

std::vector<std::string_view> SplitFields(std::string_view line, char sep) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  while (start <= line.size()) {
    size_t end = line.find(sep, start);
    if (end == std::string_view::npos) end = line.size();
    if (end > start) fields.push_back(line.substr(start, end - start));
    start = end + 1;
  }
  return fields;
}

}  // namespace

bool IsManagedController(std::string_view controller) {
  for (std::string_view managed : kManagedControllers) {
    if (managed == controller) return true;
  }
  return false;
}

std::map<std::filesystem::path, std::set<std::string>> ManagedV1Hierarchies(
    const std::map<std::string, std::filesystem::path>& v1_mounts) {
  std::map<std::filesystem::path, std::set<std::string>> all;
  for (const auto& [controller, mount] : v1_mounts) all[mount].insert(controller);
  std::erase_if(all, [](const auto& entry) {
    return std::none_of(entry.second.begin(), entry.second.end(),
                        [](const std::string& c) { return IsManagedController(c); });
  });
  return all;
}

std::vector<CgroupMount> ParseCgroupMounts(std::string_view mountinfo) {
  std::vector<CgroupMount> mounts;
  for (std::string_view line : SplitFields(mountinfo, '\n')) {
    std::vector<std::string_view> fields = SplitFields(line, ' ');
    // id parent maj:min root mount_point options [optional...] - fstype source super_options
    size_t dash = 0;
    for (size_t i = 6; i < fields.size(); ++i) {
      if (fields[i] == "-") {
        dash = i;
        break;
      }
    }
    if (dash == 0 || dash + 1 >= fields.size()) continue;
    std::string_view fstype = fields[dash + 1];
    if (fstype != "cgroup" && fstype != "cgroup2") continue;
    CgroupMount mount;
    mount.mount_point = UnescapeMountField(fields[4]);
    mount.unified = fstype == "cgroup2";
    if (!mount.unified && dash + 3 < fields.size()) {
      for (std::string_view option : SplitFields(fields[dash + 3], ',')) {
        if (option == "rw" || option == "ro" || option.find('=') != std::string_view::npos) {
          continue;
        }
        mount.controllers.emplace(option);
      }
    }
    mounts.push_back(std::move(mount));
  }
  return mounts;
}

Result<CgroupLayout> ChooseCgroupLayout(const std::vector<CgroupMount>& mounts,
                                        std::string_view unified_controllers) {
  CgroupLayout layout;
  const CgroupMount* unified = nullptr;
  for (const CgroupMount& mount : mounts) {
    if (mount.unified) {
      if (unified == nullptr) unified = &mount;
      continue;
    }
    for (const std::string& controller : mount.controllers) {
      // A hierarchy may be mounted twice (bind mounts); the first one wins.
      layout.v1_mounts.emplace(controller, mount.mount_point);
    }
  }
  if (unified != nullptr) {
    layout.unified_root = unified->mount_point;
    std::istringstream words{std::string(unified_controllers)};
    std::string word;
    while (words >> word) layout.unified_controllers.insert(word);
  }
  bool v1_holds_managed = false;
  for (const auto& [controller, path] : layout.v1_mounts) {
    // cpuacct and devices come along with v1 but limit nothing on their own.
    if (IsManagedController(controller) && controller != "cpuacct" && controller != "devices") {
      v1_holds_managed = true;
    }
  }
  if (v1_holds_managed) {
    layout.version = CgroupVersion::kV1;
    return layout;
  }
  if (unified != nullptr) {
    layout.version = CgroupVersion::kV2;
    layout.v1_mounts.clear();
    return layout;
  }
  return FailedPreconditionError(
      "no cgroup hierarchy is mounted (neither cgroup2 nor v1 memory/cpu/pids/cpuset)");
}

Result<CgroupLayout> DetectCgroupLayout() {
  static std::mutex mutex;
  static std::optional<CgroupLayout> cached;
  std::lock_guard<std::mutex> lock(mutex);
  if (cached) return *cached;
  IMGTOOL_ASSIGN_OR_RETURN(std::string mountinfo,
                           ReadFileToString("/proc/self/mountinfo").Wrap("detect cgroups"));
  std::vector<CgroupMount> mounts = ParseCgroupMounts(mountinfo);
  std::string unified_controllers;
  for (const CgroupMount& mount : mounts) {
    if (!mount.unified) continue;
    auto text = ReadFileToString(mount.mount_point / "cgroup.controllers");
    if (text) unified_controllers = *text;
    break;
  }
  IMGTOOL_ASSIGN_OR_RETURN(CgroupLayout layout,
                           ChooseCgroupLayout(mounts, unified_controllers).Wrap("detect cgroups"));
  LogDebug("cgroups: ", layout.version == CgroupVersion::kV1 ? "v1" : "v2",
           layout.version == CgroupVersion::kV1 && !layout.unified_root.empty()
               ? " (hybrid: ignoring the cgroup2 mount at " + layout.unified_root.string() + ")"
               : std::string());
  cached = layout;
  return layout;
}

Status ValidateCgroupName(std::string_view container_id) {
  if (container_id.empty() || container_id == "." || container_id == ".." ||
      container_id.size() > 128 || container_id.find('/') != std::string_view::npos ||
      container_id.find('\0') != std::string_view::npos || container_id.front() == '.') {
    return InvalidArgumentError(
        StrCat("container id \"", container_id, "\": not usable as a cgroup name"));
  }
  return OkStatus();
}

}  // namespace imgtool::runner
