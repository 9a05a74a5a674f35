#include "runner/cgroup_manager.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <set>
#include <system_error>

#include "common/file_util.h"
#include "common/log.h"
#include "runner/cgroup_detect.h"
#include "runner/cgroup_files.h"
#include "runner/cgroup_devices.h"
#include "runner/cgroup_v1.h"
#include "runner/cgroup_v2.h"

namespace imgtool::runner {

namespace {

// The <root>/<parent> dirs that hold imgtool's cgroups, one per hierarchy.
std::vector<std::filesystem::path> ParentDirs(const CgroupLayout& layout) {
  std::vector<std::filesystem::path> dirs;
  if (layout.version == CgroupVersion::kV2) {
    dirs.push_back(layout.unified_root / layout.parent);
    return dirs;
  }
  std::set<std::filesystem::path> seen;
  for (const auto& [controller, mount] : layout.v1_mounts) {
    bool managed = false;
    for (std::string_view name : kManagedControllers) managed |= name == controller;
    if (managed && seen.insert(mount).second) dirs.push_back(mount / layout.parent);
  }
  return dirs;
}

Result<std::vector<std::string>> ListChildCgroups(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  std::unique_ptr<DIR, int (*)(DIR*)> stream(::opendir(dir.c_str()), ::closedir);
  if (!stream) {
    if (errno == ENOENT) return names;
    return ErrnoError("list " + dir.string());
  }
  while (dirent* entry = ::readdir(stream.get())) {
    std::string_view name = entry->d_name;
    if (entry->d_type != DT_DIR || name == "." || name == "..") continue;
    names.emplace_back(name);
  }
  return names;
}

}  // namespace

Result<std::unique_ptr<CgroupManager>> NewCgroupManager(const std::string& container_id,
                                                        const CgroupLayout& layout) {
  IMGTOOL_TRY(ValidateCgroupName(container_id));
  IMGTOOL_TRY(ValidateCgroupName(layout.parent).Wrap("cgroup parent"));
  if (layout.version == CgroupVersion::kV2) {
    if (layout.unified_root.empty()) return InvalidArgumentError("cgroup v2 layout without a root");
    return std::unique_ptr<CgroupManager>(std::make_unique<CgroupV2>(
        layout.unified_root, layout.parent, container_id, layout.unified_controllers,
        layout.attach_device_filter ? layout.attach_device_filter : AttachDeviceFilter));
  }
  return std::unique_ptr<CgroupManager>(
      std::make_unique<CgroupV1>(layout.v1_mounts, layout.parent, container_id));
}

Result<std::vector<std::string>> CleanupStaleCgroups(
    const CgroupLayout& layout, const std::function<bool(std::string_view id)>& is_live) {
  std::set<std::string> stale;
  for (const std::filesystem::path& dir : ParentDirs(layout)) {
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> names,
                             ListChildCgroups(dir).Wrap("clean up stale cgroups"));
    for (std::string& name : names) {
      if (!is_live(name)) stale.insert(std::move(name));
    }
  }
  std::vector<std::string> removed;
  Status first;
  for (const std::string& id : stale) {
    auto manager = NewCgroupManager(id, layout);
    if (!manager) continue;  // not a name imgtool would have made
    // Whatever is left of a container whose imgtool died goes with it; a kill
    // needs the processes to exit, hence Destroy's patience.
    Status status = (*manager)->Kill(SIGKILL);
    if (status) status = (*manager)->Destroy();
    if (status) {
      LogDebug("removed stale cgroup ", (*manager)->Path());
      removed.push_back(id);
    } else if (first) {
      first = std::move(status).error().Wrap("clean up stale cgroups");
    }
  }
  if (!first) return std::move(first).error();
  return removed;
}

Result<CgroupClaim> CgroupClaim::Acquire(const std::filesystem::path& dir, const std::string& id) {
  IMGTOOL_TRY(ValidateCgroupName(id));
  std::string what = "claim the cgroup of container " + id;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return ErrnoError(what + ": create " + dir.string(), ec.value());
  }
  CgroupClaim claim;
  claim.path_ = dir / id;
  std::filesystem::path temp = dir / ("." + id + ".tmp");
  claim.fd_.reset(::open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!claim.fd_) return ErrnoError(what + ": create " + temp.string());
  if (::flock(claim.fd_.get(), LOCK_EX | LOCK_NB) != 0 ||
      ::rename(temp.c_str(), claim.path_.c_str()) != 0) {
    Error error = ErrnoError(what + ": lock " + temp.string());
    ::unlink(temp.c_str());
    return error;
  }
  return claim;
}

void CgroupClaim::Release() {
  if (!fd_) return;
  ::unlink(path_.c_str());
  fd_.reset();
}

Result<std::vector<std::string>> CleanupUnclaimedCgroups(const CgroupLayout& layout,
                                                         const std::filesystem::path& claim_dir) {
  std::vector<std::string> removed;
  std::unique_ptr<DIR, int (*)(DIR*)> stream(::opendir(claim_dir.c_str()), ::closedir);
  if (!stream) {
    if (errno == ENOENT) return removed;
    return ErrnoError("clean up stale cgroups: list " + claim_dir.string());
  }
  Status first;
  while (dirent* entry = ::readdir(stream.get())) {
    std::string name = entry->d_name;
    if (entry->d_type != DT_REG) continue;
    bool temp = name.starts_with(".");  // ".<id>.tmp": its creator died before renaming it
    UniqueFd fd(::openat(::dirfd(stream.get()), name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // held: its owner lives
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || st.st_nlink == 0) continue;  // released meanwhile
    Status status;
    if (!temp) {
      auto manager = NewCgroupManager(name, layout);
      if (!manager) continue;  // not a name imgtool would have made
      status = (*manager)->Kill(SIGKILL);
      if (status) status = (*manager)->Destroy();
      if (status) {
        LogDebug("removed stale cgroup ", (*manager)->Path());
        removed.push_back(name);
      }
    }
    if (status) {
      ::unlinkat(::dirfd(stream.get()), name.c_str(), 0);
    } else if (first) {
      first = std::move(status).error().Wrap("clean up stale cgroups");
    }
  }
  if (!first) return std::move(first).error();
  return removed;
}

}  // namespace imgtool::runner
