// The containers of one store: a directory per container under
// <root>-state/containers/<id>/ (see docs/store.md), holding imgtool's record
// (container.json: name, image, snapshot, exec defaults) beside the runner's
// state (state.json, container.log, hosts, hostname, resolv.conf) and, when
// the runner needs one, the mount point the rootfs is assembled at (rootfs/,
// made by runner::DetachRootfs). The container's
// writable layer is the active snapshot "container-<id>" on top of the
// image's top chain ID; a container run with --rm keeps it in its own
// directory instead (upper/ and work/ over that chain ID, named in the
// record as rootfs_parent), so that creating and removing it writes nothing
// to the snapshotter's shared metadata. gc keeps the rootfs_parent of every
// container that still has a record, and removes the directory of one whose
// imgtool died.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "overlay/snapshotter.h"
#include "runner/supervisor.h"

namespace imgtool::cli {

inline constexpr std::string_view kContainerSnapshotPrefix = "container-";
inline constexpr const char* kContainerRecordName = "container.json";

struct ContainerRecord {
  std::string id;        // 64 hex digits
  std::string name;      // --name, else "" (ps shows the short id)
  std::string image;     // as given on the command line
  std::string image_id;  // "sha256:<config digest>"
  std::string snapshot;  // the snapshot key, "container-<id>"; "" with a layer of its own
  // The committed snapshot under the writable layer in the container's own
  // directory (upper/, work/); "" when the layer is `snapshot`.
  std::string rootfs_parent;
  bool auto_remove = false;
  bool detached = false;
  int64_t created = 0;  // Unix seconds
  std::vector<std::string> command;
  // What exec runs with unless told otherwise: the container's process's.
  std::vector<std::string> env;
  std::string cwd = "/";
  std::string user;
  std::vector<std::string> ulimits;  // --ulimit, as given (exec applies them too)
  // --userns=auto: the container's id maps, and the directory of the slice
  // they came from (runner/userns_alloc.h), which Remove gives back.
  runner::IdMappings id_mappings;
  std::string userns_state_dir;
};

// The record plus the runner's view of the process (absent when the
// container never started: status "created").
struct ContainerView {
  ContainerRecord record;
  std::optional<runner::ContainerState> state;
  bool running() const { return state && state->status == runner::ContainerStatus::kRunning; }
};

std::string SnapshotKeyForContainer(std::string_view id);
// The id in "container-<id>", or "" for other keys.
std::string ContainerIdOfSnapshot(std::string_view key);

// 64 random hex digits.
Result<std::string> NewContainerId();

std::string ContainerRecordToJson(const ContainerRecord& record);
Result<ContainerRecord> ContainerRecordFromJson(std::string_view json);

class ContainerStore {
 public:
  explicit ContainerStore(std::filesystem::path dir) : dir_(std::move(dir)) {}

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path DirOf(std::string_view id) const { return dir_ / std::string(id); }
  // The writable layer of a container with a rootfs_parent.
  std::filesystem::path UpperDirOf(std::string_view id) const { return DirOf(id) / "upper"; }
  std::filesystem::path WorkDirOf(std::string_view id) const { return DirOf(id) / "work"; }

  // Creates the container's directory and record (and, for a record with a
  // rootfs_parent, the empty upper/ and work/ dirs). The name must be free
  // (checked under a lock, so two runs can not both take it).
  Status Create(const ContainerRecord& record) const;

  Result<ContainerView> Read(std::string_view id) const;
  // Every container, oldest first; directories without a record are skipped.
  Result<std::vector<ContainerView>> List() const;
  // By exact name, full id, or unique id prefix. NotFound with the argument.
  Result<ContainerView> Find(std::string_view name_or_id) const;

  // Removes the snapshot (missing is fine) and then the directory, with a
  // writable layer kept there, and frees its --userns=auto slice. The
  // container must not be running.
  Status Remove(const ContainerRecord& record, overlay::Snapshotter& snapshotter) const;

 private:
  std::filesystem::path LockPath() const { return dir_ / ".lock"; }
  std::filesystem::path dir_;
};

}  // namespace imgtool::cli
