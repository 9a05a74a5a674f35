// Snapshots in containerd's shape: a snapshot is a directory tree that is
// either active (writable, on top of a committed parent chain), a read-only
// view of a chain, or committed (immutable, usable as a parent). Mounts come
// back as plain data; common/mount.h turns them into mount calls.
//
// The common unpack path: Prepare(key, parent), apply the layer straight into
// UpperDir(key), Commit(chain_id, key).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/mount.h"

namespace imgtool::overlay {

enum class Kind { kActive, kView, kCommitted };

// "active", "view", "committed".
std::string_view KindName(Kind kind);

using Labels = std::map<std::string, std::string>;

struct SnapshotInfo {
  std::string name;    // the key of an active snapshot or view, the name of a committed one
  std::string parent;  // "" for none
  Kind kind = Kind::kActive;
  Labels labels;
  int64_t created = 0;  // Unix seconds; for a committed snapshot, when it was committed
};

struct Usage {
  int64_t size = 0;    // bytes on disk (allocated blocks), hard links counted once
  int64_t inodes = 0;  // every file, directory and link, the snapshot's root included
};

class Snapshotter {
 public:
  virtual ~Snapshotter() = default;

  // Creates an active snapshot `key` on top of the committed `parent` ("" for
  // none). AlreadyExists when `key` exists; NotFound for a missing parent;
  // FailedPrecondition when the parent is not committed.
  Result<std::vector<Mount>> Prepare(const std::string& key, const std::string& parent,
                                     const Labels& labels = {}) {
    return DoPrepare(key, parent, labels);
  }

  // Creates a read-only view `key` of the committed `parent` ("" for an empty one).
  Result<std::vector<Mount>> View(const std::string& key, const std::string& parent,
                                  const Labels& labels = {}) {
    return DoView(key, parent, labels);
  }

  // The mounts of an active snapshot or a view. FailedPrecondition for a
  // committed one: commit it, then View or Prepare on top.
  virtual Result<std::vector<Mount>> Mounts(const std::string& key) = 0;

  // The mounts of a writable layer the snapshotter does not keep: `upper` and
  // `work` (empty directories of the caller's on one filesystem, e.g. a
  // throwaway container's) on top of the committed `parent` ("" for none).
  // Nothing is recorded, so nothing is written: the caller keeps gc from
  // removing `parent` while it is mounted (see cli/containers.h). NotFound
  // for a missing parent; FailedPrecondition when it is not committed.
  virtual Result<std::vector<Mount>> MountsOver(const std::string& parent,
                                                const std::filesystem::path& upper,
                                                const std::filesystem::path& work) = 0;

  // Turns the active snapshot `key` into the committed snapshot `name`; `key`
  // is gone afterwards. Labels are the active snapshot's, overridden by
  // `labels`. AlreadyExists when `name` exists (someone else committed the
  // same content first: the caller removes its own `key`).
  Status Commit(const std::string& name, const std::string& key, const Labels& labels = {}) {
    return DoCommit(name, key, labels);
  }

  // Removes a snapshot of any kind with its files. FailedPrecondition when
  // other snapshots have it as their parent.
  virtual Status Remove(const std::string& key) = 0;

  virtual Result<SnapshotInfo> Stat(const std::string& key) = 0;
  // Every snapshot, ordered by name.
  virtual Result<std::vector<SnapshotInfo>> List() = 0;
  // What the snapshot's own directory holds (not its parents').
  virtual Result<Usage> GetUsage(const std::string& key) = 0;

  // The writable directory of an active snapshot, so that a layer can be
  // applied into it without a mount. FailedPrecondition for views and
  // committed snapshots.
  virtual Result<std::filesystem::path> UpperDir(const std::string& key) = 0;

  // Removes what a crash left behind: directories no snapshot owns and
  // half-written metadata. Returns how many entries went.
  virtual Result<size_t> Cleanup() = 0;

  // The names of all committed snapshots, for gc.
  Result<std::set<std::string>> CommittedNames();

 protected:
  virtual Result<std::vector<Mount>> DoPrepare(const std::string& key, const std::string& parent,
                                               const Labels& labels) = 0;
  virtual Result<std::vector<Mount>> DoView(const std::string& key, const std::string& parent,
                                            const Labels& labels) = 0;
  virtual Status DoCommit(const std::string& name, const std::string& key,
                          const Labels& labels) = 0;
};

// Snapshots as OverlayFS layers under one root directory:
//
//   <root>/metadata.json   every snapshot: kind, parent, labels, directory id
//   <root>/metadata.lock   flock: exclusive to change metadata, shared to read
//   <root>/<id>/fs         the snapshot's files (the upperdir while active)
//   <root>/<id>/work       overlay's workdir, active snapshots only
//
// Ids are small decimal numbers, never reused, so every path handed out is
// short. Mounts carry absolute paths: MountAt passes lowers one by one with
// fsconfig "lowerdir+" (Linux >= 6.8), and on older kernels mounts from
// <root> with "<id>/fs" lowers, which fits 500 layers in one page. That is
// why there is no "l/" directory of short links as in podman's driver.
//
// Directories are created before their metadata entry and removed after it,
// so a crash leaves at most an unowned directory, which Cleanup() removes.
// Many processes can share one root.
class OverlaySnapshotter : public Snapshotter {
 public:
  // Creates `root` if missing. Its absolute path may not contain ':' or ','
  // (they separate overlay mount options).
  static Result<std::unique_ptr<OverlaySnapshotter>> Open(const std::filesystem::path& root);

  const std::filesystem::path& root() const { return root_; }

  Result<std::vector<Mount>> Mounts(const std::string& key) override;
  Result<std::vector<Mount>> MountsOver(const std::string& parent,
                                        const std::filesystem::path& upper,
                                        const std::filesystem::path& work) override;
  Status Remove(const std::string& key) override;
  Result<SnapshotInfo> Stat(const std::string& key) override;
  Result<std::vector<SnapshotInfo>> List() override;
  Result<Usage> GetUsage(const std::string& key) override;
  Result<std::filesystem::path> UpperDir(const std::string& key) override;
  Result<size_t> Cleanup() override;

 protected:
  Result<std::vector<Mount>> DoPrepare(const std::string& key, const std::string& parent,
                                       const Labels& labels) override;
  Result<std::vector<Mount>> DoView(const std::string& key, const std::string& parent,
                                    const Labels& labels) override;
  Status DoCommit(const std::string& name, const std::string& key, const Labels& labels) override;

 private:
  OverlaySnapshotter(std::filesystem::path root, std::vector<std::string> overlay_options)
      : root_(std::move(root)), overlay_options_(std::move(overlay_options)) {}

  Result<std::vector<Mount>> Create(Kind kind, const std::string& key, const std::string& parent,
                                    const Labels& labels);

  std::filesystem::path MetadataPath() const { return root_ / "metadata.json"; }
  std::filesystem::path LockPath() const { return root_ / "metadata.lock"; }
  std::filesystem::path SnapshotDir(const std::string& id) const { return root_ / id; }

  std::filesystem::path root_;
  // Added to every overlay mount: index=off, redirect_dir=off, metacopy=off
  // (so the upper dir holds only plain files and whiteouts the differ
  // understands), and userxattr inside a user namespace.
  std::vector<std::string> overlay_options_;
};

}  // namespace imgtool::overlay
