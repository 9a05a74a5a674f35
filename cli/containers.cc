#include "cli/containers.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/file_lock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/temp_dir.h"
#include "runner/userns_alloc.h"

namespace imgtool::cli {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

bool IsHex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Container records are boot-scoped bookkeeping, rewritten on every run: a
// rename makes them atomic for readers, and no fsync is paid on the run path
// (after a power loss a record may be lost; gc then drops its snapshot).
Status WriteRecord(const fs::path& path, std::string_view text) {
  fs::path temp = path;
  temp += ".tmp";
  UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return ErrnoError("write " + temp.string());
  IMGTOOL_TRY(WriteAll(fd.get(), text).Wrap("write " + temp.string()));
  fd.reset();
  if (::rename(temp.c_str(), path.c_str()) != 0) return ErrnoError("rename to " + path.string());
  return OkStatus();
}

}  // namespace

std::string SnapshotKeyForContainer(std::string_view id) {
  return std::string(kContainerSnapshotPrefix) + std::string(id);
}

std::string ContainerIdOfSnapshot(std::string_view key) {
  if (!key.starts_with(kContainerSnapshotPrefix)) return "";
  key.remove_prefix(kContainerSnapshotPrefix.size());
  return key.size() == 64 && IsHex(key) ? std::string(key) : "";
}

Result<std::string> NewContainerId() {
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = ::getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("getrandom");
    got += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (unsigned char b : bytes) {
    id += kHex[b >> 4];
    id += kHex[b & 15];
  }
  return id;
}

std::string ContainerRecordToJson(const ContainerRecord& record) {
  Json json = {
      {"id", record.id},
      {"name", record.name},
      {"image", record.image},
      {"image_id", record.image_id},
      {"snapshot", record.snapshot},
      {"rootfs_parent", record.rootfs_parent},
      {"auto_remove", record.auto_remove},
      {"detached", record.detached},
      {"created", record.created},
      {"command", record.command},
      {"env", record.env},
      {"cwd", record.cwd},
      {"user", record.user},
      {"ulimits", record.ulimits},
  };
  if (!record.userns_state_dir.empty()) {
    auto lines = [](const std::vector<runner::IdMap>& map) {
      Json out = Json::array();
      for (const runner::IdMap& line : map) {
        out.push_back({line.container_id, line.host_id, line.size});
      }
      return out;
    };
    json["userns"] = {{"state_dir", record.userns_state_dir},
                      {"uid_map", lines(record.id_mappings.uids)},
                      {"gid_map", lines(record.id_mappings.gids)}};
  }
  return json.dump(2) + "\n";
}

Result<ContainerRecord> ContainerRecordFromJson(std::string_view text) {
  ContainerRecord record;
  try {
    Json json = Json::parse(text);
    record.id = json.at("id").get<std::string>();
    record.name = json.value("name", std::string());
    record.image = json.value("image", std::string());
    record.image_id = json.value("image_id", std::string());
    record.snapshot = json.value("snapshot", std::string());
    record.rootfs_parent = json.value("rootfs_parent", std::string());
    record.auto_remove = json.value("auto_remove", false);
    record.detached = json.value("detached", false);
    record.created = json.value("created", int64_t{0});
    record.command = json.value("command", std::vector<std::string>{});
    record.env = json.value("env", std::vector<std::string>{});
    record.cwd = json.value("cwd", std::string("/"));
    record.user = json.value("user", std::string());
    record.ulimits = json.value("ulimits", std::vector<std::string>{});
    if (json.contains("userns")) {
      const Json& userns = json.at("userns");
      record.userns_state_dir = userns.at("state_dir").get<std::string>();
      for (const auto& [key, map] : {std::pair{"uid_map", &record.id_mappings.uids},
                                     std::pair{"gid_map", &record.id_mappings.gids}}) {
        for (const Json& line : userns.at(key)) {
          map->push_back(
              {line.at(0).get<uint32_t>(), line.at(1).get<uint32_t>(), line.at(2).get<uint32_t>()});
        }
      }
    }
  } catch (const Json::exception& e) {
    return DataLossError(StrCat("container record: ", e.what()));
  }
  if (record.id.size() != 64 || !IsHex(record.id)) {
    return DataLossError("container record: invalid id \"" + record.id + "\"");
  }
  return record;
}

Status ContainerStore::Create(const ContainerRecord& record) const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return ErrnoError("create " + dir_.string(), ec.value());
  std::optional<FileLock> lock;
  if (!record.name.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(lock, FileLock::Acquire(LockPath(), FileLock::Mode::kExclusive));
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<ContainerView> all, List());
    for (const ContainerView& other : all) {
      if (other.record.name == record.name) {
        return AlreadyExistsError(
            "the container name \"" + record.name + "\" is already in use by container " +
            other.record.id.substr(0, 12) + " (remove it with imgtool rm, or pick another name)");
      }
    }
  }
  fs::path dir = DirOf(record.id);
  if (::mkdir(dir.c_str(), 0700) != 0) return ErrnoError("create " + dir.string());
  if (!record.rootfs_parent.empty()) {
    // The root of the container's files: as a snapshot's "fs" dir would be.
    if (::mkdir(UpperDirOf(record.id).c_str(), 0755) != 0) {
      return ErrnoError("create " + UpperDirOf(record.id).string());
    }
    if (::mkdir(WorkDirOf(record.id).c_str(), 0700) != 0) {
      return ErrnoError("create " + WorkDirOf(record.id).string());
    }
  }
  return WriteRecord(dir / kContainerRecordName, ContainerRecordToJson(record));
}

Result<ContainerView> ContainerStore::Read(std::string_view id) const {
  fs::path dir = DirOf(id);
  ContainerView view;
  IMGTOOL_ASSIGN_OR_RETURN(std::string text,
                           ReadFileToString(dir / kContainerRecordName, 1u << 20));
  IMGTOOL_ASSIGN_OR_RETURN(
      view.record, ContainerRecordFromJson(text).Wrap((dir / kContainerRecordName).string()));
  if (Result<runner::ContainerState> state = runner::ReadContainerState(dir); state) {
    view.state = std::move(*state);
  } else if (state.error().code() != ErrorCode::kNotFound) {
    return std::move(state).error();
  }
  return view;
}

Result<std::vector<ContainerView>> ContainerStore::List() const {
  std::vector<ContainerView> views;
  std::error_code ec;
  fs::directory_iterator it(dir_, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return views;
    return ErrnoError("list " + dir_.string(), ec.value());
  }
  for (const fs::directory_entry& entry : it) {
    std::string id = entry.path().filename().string();
    if (id.size() != 64 || !IsHex(id)) continue;
    Result<ContainerView> view = Read(id);
    if (!view) {
      // Being created or removed right now, or damaged: not a container to list.
      if (view.error().code() != ErrorCode::kNotFound) {
        LogDebug("container ", id, ": ", view.error().ToString());
      }
      continue;
    }
    views.push_back(std::move(*view));
  }
  std::sort(views.begin(), views.end(), [](const ContainerView& a, const ContainerView& b) {
    return a.record.created != b.record.created ? a.record.created < b.record.created
                                                : a.record.id < b.record.id;
  });
  return views;
}

Result<ContainerView> ContainerStore::Find(std::string_view name_or_id) const {
  if (name_or_id.empty()) return InvalidArgumentError("empty container name");
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ContainerView> all, List());
  for (ContainerView& view : all) {
    if (view.record.name == name_or_id || view.record.id == name_or_id) return std::move(view);
  }
  std::vector<ContainerView*> matches;
  if (IsHex(name_or_id)) {
    for (ContainerView& view : all) {
      if (view.record.id.starts_with(name_or_id)) matches.push_back(&view);
    }
  }
  if (matches.size() == 1) return std::move(*matches.front());
  if (matches.size() > 1) {
    std::string list;
    for (const ContainerView* view : matches) {
      list += (list.empty() ? "" : ", ") + view->record.id.substr(0, 12);
    }
    return InvalidArgumentError("container id prefix \"" + std::string(name_or_id) +
                                "\" is ambiguous: " + list);
  }
  return NotFoundError("no such container \"" + std::string(name_or_id) + "\"");
}

Status ContainerStore::Remove(const ContainerRecord& record,
                              overlay::Snapshotter& snapshotter) const {
  if (!record.snapshot.empty()) {
    Status removed = snapshotter.Remove(record.snapshot);
    if (!removed && removed.error().code() != ErrorCode::kNotFound) {
      return std::move(removed).error().Wrap("remove container " + record.id.substr(0, 12));
    }
  }
  IMGTOOL_TRY(RemoveTree(DirOf(record.id)).Wrap("remove container " + record.id.substr(0, 12)));
  if (!record.userns_state_dir.empty()) {
    // Without its directory the slice is stale anyway: the next allocation
    // would take it back.
    runner::UsernsAllocator allocator({.state_dir = record.userns_state_dir});
    Status freed = allocator.Free(record.id);
    if (!freed) LogWarning("container ", record.id.substr(0, 12), ": ", freed.error().ToString());
  }
  return OkStatus();
}

}  // namespace imgtool::cli
