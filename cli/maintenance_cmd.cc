// gc, fsck, version: keeping a store healthy and saying what built it.
#include <archive.h>
#include <dlfcn.h>
#include <signal.h>
#include <zlib.h>
#include <zstd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "cli/containers.h"
#include "cli/context.h"
#include "cli/git_commit.h"
#include "cli/output.h"
#include "common/log.h"
#include "common/temp_dir.h"
#include "overlay/unpacker.h"
#include "runner/cgroup_manager.h"
#include "runner/network.h"

#ifndef IMGTOOL_VERSION
#define IMGTOOL_VERSION "unknown"
#endif

namespace imgtool::cli {

namespace {

constexpr int kMaxIndexDepth = 4;

// Chain IDs of every manifest reachable from `descriptor` (all platforms of an
// index: any of them may have been unpacked).
Status CollectChainIds(const store::Store& store, const store::Descriptor& descriptor, int depth,
                       std::set<std::string>* out) {
  if (depth > kMaxIndexDepth) return OkStatus();
  if (store::IsIndexMediaType(descriptor.media_type)) {
    IMGTOOL_ASSIGN_OR_RETURN(store::Index index, store.ReadIndex(descriptor.digest));
    for (const store::Descriptor& child : index.manifests) {
      // Children are optional in a store (a pull may fetch one platform only).
      if (!store.content().Exists(child.digest)) continue;
      IMGTOOL_TRY(CollectChainIds(store, child, depth + 1, out));
    }
    return OkStatus();
  }
  if (!store::IsManifestMediaType(descriptor.media_type)) return OkStatus();
  IMGTOOL_ASSIGN_OR_RETURN(store::Manifest manifest, store.ReadManifest(descriptor.digest));
  if (!store::IsConfigMediaType(manifest.config.media_type)) return OkStatus();
  IMGTOOL_ASSIGN_OR_RETURN(store::ImageConfig config, store.ReadConfig(manifest.config.digest));
  for (const Digest& chain_id : overlay::ChainIds(config.rootfs.diff_ids)) {
    out->insert(chain_id.ToString());
  }
  return OkStatus();
}

Result<std::set<std::string>> ChainIdsInUse(const store::Store& store) {
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<store::ImageEntry> entries, store.index().List());
  std::set<std::string> used;
  for (const store::ImageEntry& entry : entries) {
    // Removing snapshots of an image whose layers can not be listed could take
    // ones it needs: stop instead, as blob gc does.
    IMGTOOL_TRY(CollectChainIds(store, entry.descriptor, 0, &used)
                    .Wrap("gc stopped, image \"" +
                          (entry.name.empty() ? entry.descriptor.digest.ToString() : entry.name) +
                          "\" is damaged (fix or remove it)"));
  }
  return used;
}

// The pid in "unpack-<pid>-...", or 0.
pid_t UnpackOwner(std::string_view key) {
  if (!key.starts_with(overlay::kUnpackKeyPrefix)) return 0;
  key.remove_prefix(overlay::kUnpackKeyPrefix.size());
  pid_t pid = 0;
  size_t i = 0;
  for (; i < key.size() && key[i] >= '0' && key[i] <= '9'; ++i) pid = pid * 10 + (key[i] - '0');
  return i > 0 && i < key.size() && key[i] == '-' ? pid : 0;
}

struct SnapshotGcReport {
  int64_t removed = 0;
  int64_t bytes = 0;
  int64_t kept = 0;
};

// The containers that stay: their ids (a container's snapshot without a
// record was left by a run that died while removing it), and the snapshots
// under writable layers kept in container dirs, which must stay too.
struct KeptContainers {
  std::set<std::string> ids;
  std::set<std::string> rootfs_parents;
};

Result<SnapshotGcReport> CollectSnapshots(const store::Store& store,
                                          overlay::Snapshotter& snapshotter,
                                          const KeptContainers& kept) {
  const std::set<std::string>& containers = kept.ids;
  IMGTOOL_ASSIGN_OR_RETURN(std::set<std::string> used, ChainIdsInUse(store));
  used.insert(kept.rootfs_parents.begin(), kept.rootfs_parents.end());
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<overlay::SnapshotInfo> infos, snapshotter.List());
  SnapshotGcReport report;
  std::map<std::string, int> children;
  for (const overlay::SnapshotInfo& info : infos) {
    if (!info.parent.empty()) ++children[info.parent];
  }
  auto remove = [&](const overlay::SnapshotInfo& info) -> Result<bool> {
    auto usage = snapshotter.GetUsage(info.name);
    Status removed = snapshotter.Remove(info.name);
    if (!removed) {
      // Something was stacked on it meanwhile (a build step, a container).
      if (removed.error().code() == ErrorCode::kFailedPrecondition ||
          removed.error().code() == ErrorCode::kNotFound) {
        return false;
      }
      return std::move(removed).error().Wrap("gc: remove snapshot " + info.name);
    }
    ++report.removed;
    if (usage) report.bytes += usage->size;
    if (!info.parent.empty()) --children[info.parent];
    LogDebug("gc: removed snapshot ", info.name);
    return true;
  };

  // Leftovers of unpacks whose process died, and writable layers of
  // containers that are gone.
  for (const overlay::SnapshotInfo& info : infos) {
    if (info.kind != overlay::Kind::kActive) continue;
    if (std::string id = ContainerIdOfSnapshot(info.name); !id.empty()) {
      if (!containers.contains(id)) IMGTOOL_TRY(remove(info));
      continue;
    }
    pid_t owner = UnpackOwner(info.name);
    if (owner <= 0 || ::kill(owner, 0) == 0 || errno != ESRCH) continue;
    IMGTOOL_TRY(remove(info));
  }

  // Committed layers no image needs, children before parents. Only chain-ID
  // names are judged: snapshots named otherwise belong to someone else.
  std::vector<const overlay::SnapshotInfo*> candidates;
  int64_t committed = 0;
  for (const overlay::SnapshotInfo& info : infos) {
    if (info.kind != overlay::Kind::kCommitted) continue;
    ++committed;
    if (used.contains(info.name) || !Digest::Parse(info.name)) continue;
    candidates.push_back(&info);
  }
  std::set<std::string> done;
  int64_t removed_committed = 0;
  bool progress = true;
  while (progress) {
    progress = false;
    for (const overlay::SnapshotInfo* info : candidates) {
      if (done.contains(info->name) || children[info->name] > 0) continue;
      done.insert(info->name);
      IMGTOOL_ASSIGN_OR_RETURN(bool removed, remove(*info));
      if (removed) {
        ++removed_committed;
        progress = true;
      }
    }
  }
  report.kept = committed - removed_committed;
  auto cleaned = snapshotter.Cleanup();
  if (!cleaned) LogWarning("gc: snapshot cleanup: ", cleaned.error().ToString());
  return report;
}

// Containers run with --rm whose imgtool died (their end recorded, or the
// process gone) are removed, with what the kernel still holds for them
// (cgroups, IPAM entries, port rules). Returns the containers that stay:
// their snapshots, and the image layers under them, are kept.
Result<KeptContainers> CollectContainers(const Context& context,
                                         overlay::Snapshotter& snapshotter) {
  ContainerStore containers(context.ContainersRoot());
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ContainerView> views, containers.List());
  KeptContainers kept;
  std::set<std::string> ended;
  for (const ContainerView& view : views) {
    if (view.state && view.state->status == runner::ContainerStatus::kExited) {
      ended.insert(view.record.id);
      if (view.record.auto_remove) {
        IMGTOOL_TRY(containers.Remove(view.record, snapshotter).Wrap("gc"));
        continue;
      }
    }
    kept.ids.insert(view.record.id);
    if (!view.record.rootfs_parent.empty()) kept.rootfs_parents.insert(view.record.rootfs_parent);
  }
  // Only ids of this store's ended containers are judged: cgroups and
  // network entries of other stores and of build steps are not ours.
  auto live = [&](std::string_view id) { return !ended.contains(std::string(id)); };
  if (!ended.empty()) {
    if (auto layout = runner::DetectCgroupLayout(); layout) {
      auto cleaned = runner::CleanupStaleCgroups(*layout, live);
      if (!cleaned) LogWarning("gc: ", cleaned.error().ToString());
    }
    const char* network_dir = ::getenv("IMGTOOL_NETWORK_STATE_DIR");
    std::filesystem::path dir = network_dir && *network_dir
                                    ? std::filesystem::path(network_dir)
                                    : std::filesystem::path(runner::kDefaultNetworkStateDir);
    std::error_code ec;
    if (std::filesystem::exists(dir, ec)) {
      Status cleaned = runner::CleanupStaleNetworks(dir, live);
      if (!cleaned) LogWarning("gc: ", cleaned.error().ToString());
    }
  }
  return kept;
}

// --userns=auto keeps the highest id each image uses in
// StateDir()/userns-ids/<top chain ID, ':' as '-'> (userns_auto.cc); an
// entry whose snapshot is gone goes too. Returns how many went.
int PruneUsernsIdCache(const std::filesystem::path& dir, overlay::Snapshotter& snapshotter) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return 0;
  auto committed = snapshotter.CommittedNames();
  if (!committed) {
    LogWarning("gc: userns id cache: ", committed.error().ToString());
    return 0;
  }
  int removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    size_t dash = name.find('-');
    std::string chain_id = dash == std::string::npos ? name : name.replace(dash, 1, ":");
    if (committed->contains(chain_id)) continue;
    if (std::filesystem::remove(entry.path(), ec)) ++removed;
  }
  if (removed > 0) LogDebug("gc: removed ", removed, " userns id cache entries");
  return removed;
}

Result<int> RunGc(const Context& context) {
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(auto snapshotter, context.OpenSnapshotter());
  SnapshotGcReport snapshots;
  {
    // No load or build may be between unpacking and tagging while we decide
    // which snapshots are unused.
    IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, store->AcquireGcLock());
    IMGTOOL_ASSIGN_OR_RETURN(KeptContainers containers, CollectContainers(context, *snapshotter));
    IMGTOOL_ASSIGN_OR_RETURN(snapshots, CollectSnapshots(*store, *snapshotter, containers));
    PruneUsernsIdCache(context.StateDir() / "userns-ids", *snapshotter);
  }
  IMGTOOL_ASSIGN_OR_RETURN(store::GcReport blobs, store->CollectGarbage());
  // Scratch holds only TempDirs, each locked by its live owner: what is
  // unlocked was left by a crash (an export killed midway).
  IMGTOOL_ASSIGN_OR_RETURN(int scratch, RemoveAbandonedTempDirs(context.ScratchRoot(), ""));
  std::string scratch_note =
      scratch > 0 ? StrCat(" and ", scratch, " abandoned scratch dirs") : std::string();
  IMGTOOL_TRY(PrintOut(StrCat("Removed ", blobs.blobs_removed, " blobs (",
                              HumanSize(blobs.bytes_freed), ") and ", snapshots.removed,
                              " snapshots (", HumanSize(snapshots.bytes), ")", scratch_note,
                              "; kept ", blobs.blobs_kept, " blobs and ", snapshots.kept,
                              " snapshots\n")));
  return 0;
}

// Problems in the snapshot metadata: broken parent links and missing trees.
std::vector<std::string> CheckSnapshots(overlay::Snapshotter& snapshotter) {
  std::vector<std::string> problems;
  auto infos = snapshotter.List();
  if (!infos) {
    problems.push_back("snapshots: " + infos.error().ToString());
    return problems;
  }
  std::map<std::string, const overlay::SnapshotInfo*> by_name;
  for (const overlay::SnapshotInfo& info : *infos) by_name[info.name] = &info;
  for (const overlay::SnapshotInfo& info : *infos) {
    std::string who = "snapshot \"" + info.name + "\"";
    if (!info.parent.empty()) {
      auto parent = by_name.find(info.parent);
      if (parent == by_name.end()) {
        problems.push_back(who + ": parent \"" + info.parent + "\" is missing");
      } else if (parent->second->kind != overlay::Kind::kCommitted) {
        problems.push_back(who + ": parent \"" + info.parent + "\" is not committed");
      }
    }
    if (auto usage = snapshotter.GetUsage(info.name); !usage) {
      problems.push_back(who + ": " + usage.error().ToString());
    }
  }
  return problems;
}

Result<int> RunFsck(const Context& context) {
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> problems, store->Fsck());
  IMGTOOL_ASSIGN_OR_RETURN(auto snapshotter, context.OpenSnapshotter());
  for (std::string& problem : CheckSnapshots(*snapshotter)) problems.push_back(std::move(problem));
  if (problems.empty()) {
    IMGTOOL_TRY(PrintOut("no problems\n"));
    return 0;
  }
  std::string out;
  for (std::string& problem : problems) {
    for (char& c : problem) {
      if (c == '\n') c = ' ';
    }
    out += problem + "\n";
  }
  IMGTOOL_TRY(PrintOut(out));
  return 1;
}

// The OpenSSL that TLS to registries uses (libcurl's). imgtool links no
// OpenSSL itself (digests are its own), so it is looked up only here.
std::string OpenSslVersion() {
  void* lib = ::dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return "not installed (libcrypto.so.3)";
  using VersionFn = const char* (*)(int);
  auto version = reinterpret_cast<VersionFn>(::dlsym(lib, "OpenSSL_version"));
  std::string text = version ? version(0) : "unknown";  // 0: OPENSSL_VERSION
  if (text.starts_with("OpenSSL ")) text.erase(0, 8);
  return text;
}

Result<int> RunVersion(const std::string& format) {
  std::string libarchive = archive_version_string();
  if (libarchive.starts_with("libarchive ")) libarchive.erase(0, 11);
  std::string openssl = OpenSslVersion();
  if (format == "json") {
    nlohmann::ordered_json out;
    out["Version"] = IMGTOOL_VERSION;
    out["GitCommit"] = IMGTOOL_GIT_COMMIT;
    out["Libarchive"] = libarchive;
    out["OpenSSL"] = openssl;
    out["Zlib"] = zlibVersion();
    out["Zstd"] = ZSTD_versionString();
    IMGTOOL_TRY(PrintJson(out));
    return 0;
  }
  IMGTOOL_TRY(PrintOut(
      StrCat("imgtool version ", IMGTOOL_VERSION, "\n", "git commit:  ", IMGTOOL_GIT_COMMIT, "\n",
             "libarchive:  ", libarchive, "\n", "openssl:     ", openssl, "\n",
             "zlib:        ", zlibVersion(), "\n", "zstd:        ", ZSTD_versionString(), "\n")));
  return 0;
}

}  // namespace

void RegisterMaintenanceCommands(CLI::App& app, const Context& context, CommandRegistry& registry) {
  {
    CLI::App* cmd =
        app.add_subcommand("gc", "Remove blobs and unpacked layers that no image name needs");
    registry.Set(cmd, [&context] { return RunGc(context); });
  }
  {
    CLI::App* cmd = app.add_subcommand(
        "fsck", "Check every blob and snapshot; exit 1 and list problems if any");
    registry.Set(cmd, [&context] { return RunFsck(context); });
  }
  {
    auto format = std::make_shared<std::string>("text");
    CLI::App* cmd = app.add_subcommand("version", "Show the version and library versions");
    cmd->add_option("--format", *format, "text or json")->check(CLI::IsMember({"text", "json"}));
    registry.Set(cmd, [format] { return RunVersion(*format); });
  }
}

}  // namespace imgtool::cli
