#include "overlay/snapshotter.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "common/file_cache.h"
#include "common/file_lock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/scope_guard.h"
#include "common/temp_dir.h"

namespace imgtool::overlay {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kActive:
      return "active";
    case Kind::kView:
      return "view";
    case Kind::kCommitted:
      return "committed";
  }
  return "unknown";
}

Result<std::set<std::string>> Snapshotter::CommittedNames() {
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<SnapshotInfo> infos, List());
  std::set<std::string> names;
  for (const SnapshotInfo& info : infos) {
    if (info.kind == Kind::kCommitted) names.insert(info.name);
  }
  return names;
}

namespace {

// metadata.json, as read and written under the lock.
struct Metadata {
  struct Entry {
    std::string id;  // directory name under the root
    Kind kind = Kind::kActive;
    std::string parent;
    Labels labels;
    int64_t created = 0;
  };
  uint64_t next_id = 1;
  std::map<std::string, Entry> snapshots;
};

constexpr int kMetadataVersion = 1;
constexpr std::string_view kMetadataTempPrefix = ".tmp-metadata.json-";

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<Kind> ParseKind(const std::string& text) {
  if (text == "active") return Kind::kActive;
  if (text == "view") return Kind::kView;
  if (text == "committed") return Kind::kCommitted;
  return DataLossError("unknown snapshot kind \"" + text + "\"");
}

bool IsDecimal(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

Result<Metadata> ParseMetadata(const fs::path& path, const std::string& text) {
  Metadata metadata;
  try {
    json doc = json::parse(text);
    if (doc.at("version").get<int>() != kMetadataVersion) {
      return DataLossError("snapshot metadata " + path.string() + ": unsupported version " +
                           doc.at("version").dump());
    }
    metadata.next_id = doc.at("next_id").get<uint64_t>();
    for (const auto& [name, item] : doc.at("snapshots").items()) {
      Metadata::Entry entry;
      entry.id = item.at("id").get<std::string>();
      Result<Kind> kind = ParseKind(item.at("kind").get<std::string>());
      if (!kind) return std::move(kind).error().Wrap("snapshot metadata " + path.string());
      entry.kind = *kind;
      entry.parent = item.value("parent", "");
      entry.labels = item.value("labels", Labels{});
      entry.created = item.value("created", int64_t{0});
      if (!IsDecimal(entry.id)) {
        return DataLossError("snapshot metadata " + path.string() + ": snapshot \"" + name +
                             "\" has a bad id \"" + entry.id + "\"");
      }
      metadata.snapshots.emplace(name, std::move(entry));
    }
  } catch (const json::exception& e) {
    return DataLossError("snapshot metadata " + path.string() + ": " + e.what());
  }
  return metadata;
}

// Per path, the last metadata.json read: `imgtool run` reads it twice (the
// layers' state, then the stack over them), the second time from here.
std::mutex g_metadata_caches_mutex;
std::map<std::string, FileContentCache<Metadata>> g_metadata_caches;

Result<Metadata> LoadMetadata(const fs::path& path) {
  FileContentCache<Metadata>* cache = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_metadata_caches_mutex);
    cache = &g_metadata_caches[path.string()];  // map nodes stay put
  }
  IMGTOOL_ASSIGN_OR_RETURN(std::optional<Metadata> metadata,
                           cache->Get(path, 64u << 20, [&](const std::string& text) {
                             return ParseMetadata(path, text);
                           }));
  if (!metadata) return Metadata();
  return std::move(*metadata);
}

Status SaveMetadata(const fs::path& path, const Metadata& metadata) {
  json snapshots = json::object();
  for (const auto& [name, entry] : metadata.snapshots) {
    snapshots[name] = {{"id", entry.id},
                       {"kind", KindName(entry.kind)},
                       {"parent", entry.parent},
                       {"labels", entry.labels},
                       {"created", entry.created}};
  }
  json doc = {{"version", kMetadataVersion},
              {"next_id", metadata.next_id},
              {"snapshots", std::move(snapshots)}};
  return WriteFileAtomic(path, doc.dump(1) + "\n", 0600);
}

SnapshotInfo InfoOf(const std::string& name, const Metadata::Entry& entry) {
  return SnapshotInfo{name, entry.parent, entry.kind, entry.labels, entry.created};
}

// Inside a user namespace overlayfs keeps its whiteout and opaque markers in
// user.overlay.* xattrs, and only with "userxattr".
// The initial user namespace's nsfs inode is fixed (PROC_USER_INIT_INO):
// one stat instead of reading and parsing uid_map.
bool InUserNamespace() {
  constexpr ino_t kInitialUserNamespaceInode = 0xEFFFFFFDu;
  struct stat st {};
  if (::stat("/proc/self/ns/user", &st) != 0) return false;
  return st.st_ino != kInitialUserNamespaceInode;
}

Result<Usage> DiskUsage(const fs::path& dir) {
  Usage usage;
  std::set<std::pair<dev_t, ino_t>> linked;
  auto add = [&](const fs::path& path) -> Status {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return ErrnoError("stat " + path.string());
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.emplace(st.st_dev, st.st_ino).second) {
      return OkStatus();
    }
    usage.inodes += 1;
    usage.size += static_cast<int64_t>(st.st_blocks) * 512;
    return OkStatus();
  };
  IMGTOOL_TRY(add(dir));
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    IMGTOOL_TRY(add(it->path()));
  }
  if (ec) return ErrnoError("walk " + dir.string(), ec.value());
  return usage;
}

std::string Quote(const std::string& name) { return "\"" + name + "\""; }

// The "fs" dirs of `parent` and its ancestors, nearest first, as overlay
// wants its lowers. `key` names the snapshot on top, for errors.
Result<std::vector<std::string>> LowerDirs(const fs::path& root, const Metadata& metadata,
                                           const std::string& key, std::string parent) {
  std::vector<std::string> lowers;
  while (!parent.empty()) {
    auto it = metadata.snapshots.find(parent);
    if (it == metadata.snapshots.end()) {
      return DataLossError("snapshot metadata: parent " + Quote(parent) + " is missing");
    }
    if (lowers.size() >= metadata.snapshots.size()) {
      return DataLossError("snapshot metadata: parent chain of " + Quote(key) + " loops");
    }
    lowers.push_back((root / it->second.id / "fs").string());
    parent = it->second.parent;
  }
  return lowers;
}

std::string LowerDirOption(const std::vector<std::string>& lowers) {
  std::string lowerdir = "lowerdir=";
  for (size_t i = 0; i < lowers.size(); ++i) {
    if (i > 0) lowerdir.push_back(':');
    lowerdir += lowers[i];
  }
  return lowerdir;
}

Result<std::vector<Mount>> MountsFor(const fs::path& root,
                                     const std::vector<std::string>& overlay_options,
                                     const Metadata& metadata, const std::string& key) {
  const Metadata::Entry& entry = metadata.snapshots.at(key);
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> lowers,
                           LowerDirs(root, metadata, key, entry.parent));
  std::string own = (root / entry.id / "fs").string();
  std::string lowerdir = LowerDirOption(lowers);

  switch (entry.kind) {
    case Kind::kActive: {
      if (lowers.empty()) return std::vector<Mount>{Mount{"bind", own, {"rbind", "rw"}}};
      Mount mount{"overlay",
                  "overlay",
                  {lowerdir, "upperdir=" + own, "workdir=" + (root / entry.id / "work").string()}};
      mount.options.insert(mount.options.end(), overlay_options.begin(), overlay_options.end());
      return std::vector<Mount>{std::move(mount)};
    }
    case Kind::kView: {
      // Overlay without an upper dir needs two lowers; one layer is a plain
      // read-only bind, and no parent at all is the view's own empty dir.
      if (lowers.size() <= 1) {
        return std::vector<Mount>{
            Mount{"bind", lowers.empty() ? own : lowers.front(), {"rbind", "ro"}}};
      }
      Mount mount{"overlay", "overlay", {lowerdir}};
      mount.options.insert(mount.options.end(), overlay_options.begin(), overlay_options.end());
      mount.options.push_back("ro");
      return std::vector<Mount>{std::move(mount)};
    }
    case Kind::kCommitted:
      break;
  }
  return FailedPreconditionError("is committed; View or Prepare on top of it to mount it");
}

}  // namespace

Result<std::unique_ptr<OverlaySnapshotter>> OverlaySnapshotter::Open(const fs::path& root) {
  std::error_code ec;
  fs::path absolute = fs::absolute(root, ec).lexically_normal();
  if (ec) return ErrnoError("snapshot root " + root.string(), ec.value());
  if (absolute.has_relative_path() && absolute.filename().empty()) {
    absolute = absolute.parent_path();
  }
  if (absolute.string().find_first_of(":,") != std::string::npos) {
    return InvalidArgumentError("snapshot root " + absolute.string() +
                                ": contains ':' or ',', which overlay mount options can not hold");
  }
  if (!fs::exists(absolute, ec)) {
    fs::create_directories(absolute, ec);
    if (ec) return ErrnoError("create snapshot root " + absolute.string(), ec.value());
    // Layer trees hold setuid files and device nodes; only root looks inside.
    if (::chmod(absolute.c_str(), 0700) != 0) {
      return ErrnoError("chmod snapshot root " + absolute.string());
    }
  } else if (!fs::is_directory(absolute, ec)) {
    return FailedPreconditionError("snapshot root " + absolute.string() + ": not a directory");
  }
  std::vector<std::string> options = {"index=off", "redirect_dir=off", "metacopy=off"};
  if (InUserNamespace()) options.push_back("userxattr");
  return std::unique_ptr<OverlaySnapshotter>(
      new OverlaySnapshotter(std::move(absolute), std::move(options)));
}

Result<std::vector<Mount>> OverlaySnapshotter::DoPrepare(const std::string& key,
                                                         const std::string& parent,
                                                         const Labels& labels) {
  return Create(Kind::kActive, key, parent, labels).Wrap("prepare snapshot " + Quote(key));
}

Result<std::vector<Mount>> OverlaySnapshotter::DoView(const std::string& key,
                                                      const std::string& parent,
                                                      const Labels& labels) {
  return Create(Kind::kView, key, parent, labels).Wrap("create view " + Quote(key));
}

Result<std::vector<Mount>> OverlaySnapshotter::Create(Kind kind, const std::string& key,
                                                      const std::string& parent,
                                                      const Labels& labels) {
  if (key.empty()) return InvalidArgumentError("empty key");
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock,
                           FileLock::Acquire(LockPath(), FileLock::Mode::kExclusive));
  IMGTOOL_ASSIGN_OR_RETURN(Metadata metadata, LoadMetadata(MetadataPath()));
  if (metadata.snapshots.count(key) != 0) return AlreadyExistsError("already exists");
  if (!parent.empty()) {
    auto it = metadata.snapshots.find(parent);
    if (it == metadata.snapshots.end()) {
      return NotFoundError("parent " + Quote(parent) + " not found");
    }
    if (it->second.kind != Kind::kCommitted) {
      return FailedPreconditionError(
          StrCat("parent ", Quote(parent), " is ", KindName(it->second.kind), ", not committed"));
    }
  }

  // A directory that exists but has no metadata entry is left from a crash;
  // skip its id rather than trust its contents.
  uint64_t id = metadata.next_id;
  while (::mkdir(SnapshotDir(std::to_string(id)).c_str(), 0700) != 0) {
    if (errno != EEXIST) return ErrnoError("create " + SnapshotDir(std::to_string(id)).string());
    ++id;
  }
  std::string id_text = std::to_string(id);
  fs::path dir = SnapshotDir(id_text);
  ScopeGuard remove_dir([&] { (void)RemoveTree(dir); });
  if (::mkdir((dir / "fs").c_str(), 0755) != 0)
    return ErrnoError("create " + (dir / "fs").string());
  if (kind == Kind::kActive && ::mkdir((dir / "work").c_str(), 0700) != 0) {
    return ErrnoError("create " + (dir / "work").string());
  }

  metadata.next_id = id + 1;
  metadata.snapshots[key] = Metadata::Entry{id_text, kind, parent, labels, NowSeconds()};
  IMGTOOL_TRY(SaveMetadata(MetadataPath(), metadata));
  remove_dir.Cancel();
  return MountsFor(root_, overlay_options_, metadata, key);
}

Result<std::vector<Mount>> OverlaySnapshotter::Mounts(const std::string& key) {
  std::string context = "mounts of snapshot " + Quote(key);
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(LockPath(), FileLock::Mode::kShared));
  IMGTOOL_ASSIGN_OR_RETURN(Metadata metadata, LoadMetadata(MetadataPath()).Wrap(context));
  if (metadata.snapshots.count(key) == 0) return NotFoundError(context + ": not found");
  return MountsFor(root_, overlay_options_, metadata, key).Wrap(context);
}

Result<std::vector<Mount>> OverlaySnapshotter::MountsOver(const std::string& parent,
                                                          const fs::path& upper,
                                                          const fs::path& work) {
  std::string context = "mounts over snapshot " + Quote(parent);
  for (const fs::path& dir : {upper, work}) {
    if (dir.string().find_first_of(":,") != std::string::npos) {
      return InvalidArgumentError(context + ": " + dir.string() +
                                  " contains ':' or ',', which overlay mount options can not hold");
    }
  }
  if (parent.empty()) return std::vector<Mount>{Mount{"bind", upper.string(), {"rbind", "rw"}}};
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(LockPath(), FileLock::Mode::kShared));
  IMGTOOL_ASSIGN_OR_RETURN(Metadata metadata, LoadMetadata(MetadataPath()).Wrap(context));
  auto it = metadata.snapshots.find(parent);
  if (it == metadata.snapshots.end()) return NotFoundError(context + ": not found");
  if (it->second.kind != Kind::kCommitted) {
    return FailedPreconditionError(
        StrCat(context, ": it is ", KindName(it->second.kind), ", not committed"));
  }
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> lowers,
                           LowerDirs(root_, metadata, "(unrecorded)", parent).Wrap(context));
  Mount mount{"overlay",
              "overlay",
              {LowerDirOption(lowers), "upperdir=" + upper.string(), "workdir=" + work.string()}};
  mount.options.insert(mount.options.end(), overlay_options_.begin(), overlay_options_.end());
  return std::vector<Mount>{std::move(mount)};
}

Status OverlaySnapshotter::DoCommit(const std::string& name, const std::string& key,
                                    const Labels& labels) {
  std::string context = "commit snapshot " + Quote(key) + " as " + Quote(name);
  if (name.empty()) return InvalidArgumentError(context + ": empty name");
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock,
                           FileLock::Acquire(LockPath(), FileLock::Mode::kExclusive));
  IMGTOOL_ASSIGN_OR_RETURN(Metadata metadata, LoadMetadata(MetadataPath()).Wrap(context));
  auto it = metadata.snapshots.find(key);
  if (it == metadata.snapshots.end())
    return NotFoundError(context + ": " + Quote(key) + " not found");
  if (it->second.kind != Kind::kActive) {
    return FailedPreconditionError(
        StrCat(context, ": ", Quote(key), " is ", KindName(it->second.kind), ", not active"));
  }
  if (metadata.snapshots.count(name) != 0) {
    return AlreadyExistsError(context + ": " + Quote(name) + " already exists");
  }
  Metadata::Entry entry = std::move(it->second);
  metadata.snapshots.erase(it);
  entry.kind = Kind::kCommitted;
  entry.created = NowSeconds();
  for (const auto& [label, value] : labels) entry.labels[label] = value;
  std::string id = entry.id;
  metadata.snapshots.emplace(name, std::move(entry));
  IMGTOOL_TRY(SaveMetadata(MetadataPath(), metadata).Wrap(context));
  // A committed snapshot is never an upper dir again; Cleanup() retries this.
  Status removed = RemoveTree(SnapshotDir(id) / "work");
  if (!removed) LogDebug(context, ": ", removed.error().ToString());
  return OkStatus();
}

Status OverlaySnapshotter::Remove(const std::string& key) {
  std::string context = "remove snapshot " + Quote(key);
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock,
                           FileLock::Acquire(LockPath(), FileLock::Mode::kExclusive));
  IMGTOOL_ASSIGN_OR_RETURN(Metadata metadata, LoadMetadata(MetadataPath()).Wrap(context));
  auto it = metadata.snapshots.find(key);
  if (it == metadata.snapshots.end()) return NotFoundError(context + ": not found");
  size_t children = 0;
  std::string child;
  for (const auto& [name, entry] : metadata.snapshots) {
    if (entry.parent != key) continue;
    if (children++ == 0) child = name;
  }
  if (children > 0) {
    return FailedPreconditionError(
        StrCat(context, ": it is the parent of ", children, " snapshot(s), e.g. ", Quote(child)));
  }
  std::string id = it->second.id;
  metadata.snapshots.erase(it);
  IMGTOOL_TRY(SaveMetadata(MetadataPath(), metadata).Wrap(context));
  // The entry is gone, so the snapshot is; files that resist now are garbage
  // for Cleanup(). Removal happens under the lock so Cleanup never races it.
  Status removed = RemoveTree(SnapshotDir(id));
  if (!removed) LogWarning(context, ": ", removed.error().ToString());
  return OkStatus();
}

Result<SnapshotInfo> OverlaySnapshotter::Stat(const std::string& key) {
  std::string context = "stat snapshot " + Quote(key);
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(LockPath(), FileLock::Mode::kShared));
  IMGTOOL_ASSIGN_OR_RETURN(Metadata metadata, LoadMetadata(MetadataPath()).Wrap(context));
  auto it = metadata.snapshots.find(key);
  if (it == metadata.snapshots.end()) return NotFoundError(context + ": not found");
  return InfoOf(it->first, it->second);
}

Result<std::vector<SnapshotInfo>> OverlaySnapshotter::List() {
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(LockPath(), FileLock::Mode::kShared));
  IMGTOOL_ASSIGN_OR_RETURN(Metadata metadata, LoadMetadata(MetadataPath()).Wrap("list snapshots"));
  std::vector<SnapshotInfo> infos;
  infos.reserve(metadata.snapshots.size());
  for (const auto& [name, entry] : metadata.snapshots) infos.push_back(InfoOf(name, entry));
  return infos;
}

Result<Usage> OverlaySnapshotter::GetUsage(const std::string& key) {
  std::string context = "usage of snapshot " + Quote(key);
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(LockPath(), FileLock::Mode::kShared));
  IMGTOOL_ASSIGN_OR_RETURN(Metadata metadata, LoadMetadata(MetadataPath()).Wrap(context));
  auto it = metadata.snapshots.find(key);
  if (it == metadata.snapshots.end()) return NotFoundError(context + ": not found");
  return DiskUsage(SnapshotDir(it->second.id) / "fs").Wrap(context);
}

Result<fs::path> OverlaySnapshotter::UpperDir(const std::string& key) {
  std::string context = "upper dir of snapshot " + Quote(key);
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(LockPath(), FileLock::Mode::kShared));
  IMGTOOL_ASSIGN_OR_RETURN(Metadata metadata, LoadMetadata(MetadataPath()).Wrap(context));
  auto it = metadata.snapshots.find(key);
  if (it == metadata.snapshots.end()) return NotFoundError(context + ": not found");
  if (it->second.kind != Kind::kActive) {
    return FailedPreconditionError(
        StrCat(context, ": it is ", KindName(it->second.kind), ", only active ones are writable"));
  }
  return SnapshotDir(it->second.id) / "fs";
}

Result<size_t> OverlaySnapshotter::Cleanup() {
  std::string context = "clean up snapshots in " + root_.string();
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock,
                           FileLock::Acquire(LockPath(), FileLock::Mode::kExclusive));
  IMGTOOL_ASSIGN_OR_RETURN(Metadata metadata, LoadMetadata(MetadataPath()).Wrap(context));
  std::map<std::string, Kind> owned;
  for (const auto& [name, entry] : metadata.snapshots) owned[entry.id] = entry.kind;

  size_t removed = 0;
  std::error_code ec;
  std::vector<fs::path> garbage;
  for (auto it = fs::directory_iterator(root_, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.rfind(kMetadataTempPrefix, 0) == 0) {
      garbage.push_back(it->path());
      continue;
    }
    if (!IsDecimal(name) || !it->is_directory(ec) || it->is_symlink(ec)) continue;
    auto owner = owned.find(name);
    if (owner == owned.end()) {
      garbage.push_back(it->path());
    } else if (owner->second == Kind::kCommitted && fs::exists(it->path() / "work", ec)) {
      garbage.push_back(it->path() / "work");
    }
  }
  if (ec) return ErrnoError(context + ": list", ec.value());
  for (const fs::path& path : garbage) {
    LogDebug(context, ": removing ", path.string());
    IMGTOOL_TRY(RemoveTree(path).Wrap(context));
    ++removed;
  }
  return removed;
}

}  // namespace imgtool::overlay
