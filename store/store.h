// The image store: one directory that is a valid OCI image layout (oci-layout,
// index.json, blobs/sha256/) plus imgtool's own ingest/ and lock files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/digest.h"
#include "common/error.h"
#include "common/file_lock.h"
#include "store/content_store.h"
#include "store/image_index.h"
#include "store/oci_types.h"
#include "store/reference.h"

namespace imgtool::store {

// $IMGTOOL_ROOT, or /var/lib/imgtool.
std::filesystem::path DefaultRoot();

struct ResolvedImage {
  // The index entry's ref.name ("" when found by ID or digest only).
  std::string name;
  // The top-level descriptor found in index.json (a manifest or an index).
  Descriptor top;
  // The single-platform manifest chosen (== top unless top is an index).
  Descriptor manifest_descriptor;
  Manifest manifest;
  ImageConfig config;
};

struct GcReport {
  int64_t blobs_removed = 0;
  int64_t bytes_freed = 0;
  int64_t blobs_kept = 0;
  std::vector<Digest> removed;  // sorted
};

class Store {
 public:
  // Opens the store at `root`, creating the layout when missing. A root whose
  // oci-layout is not {"imageLayoutVersion":"1.0.0"} is FailedPrecondition.
  static Result<std::unique_ptr<Store>> Open(const std::filesystem::path& root);

  const std::filesystem::path& root() const { return root_; }
  ContentStore& content() { return *content_; }
  const ContentStore& content() const { return *content_; }
  LocalContentStore& local_content() { return *content_; }
  ImageIndex& index() { return *index_; }
  const ImageIndex& index() const { return *index_; }

  // Finds an image by reference ("busybox", "docker.io/library/busybox:1",
  // "a@sha256:...") or by ID ("sha256:<hex>" or a hex prefix of its manifest or
  // config digest, at least 4 digits). References are tried first, as docker
  // does. When the entry is an index, the manifest for `platform` (default:
  // HostPlatform()) is chosen. Checks that config.rootfs.diff_ids has one entry
  // per layer.
  Result<ResolvedImage> ResolveImage(std::string_view ref_or_id,
                                     std::optional<Platform> platform = std::nullopt) const;
  // The same, from a descriptor already in hand (a manifest or index blob).
  Result<ResolvedImage> ResolveDescriptor(const Descriptor& top,
                                          std::optional<Platform> platform = std::nullopt) const;

  // Parses blobs, naming the blob in errors: `manifest sha256:ab..: layers[2]...`.
  Result<Manifest> ReadManifest(const Digest& digest) const;
  Result<Index> ReadIndex(const Digest& digest) const;
  Result<ImageConfig> ReadConfig(const Digest& digest) const;

  // Writes a JSON document (manifest, index, config) as a blob and returns its
  // descriptor.
  Result<Descriptor> WriteJsonBlob(std::string_view media_type, std::string_view json);

  // Held (shared) by anyone who writes blobs that no tag references yet (a
  // pull, a build) until the tag is set; gc takes it exclusively, so it never
  // sweeps blobs that are about to be tagged.
  Result<FileLock> AcquireWriteLease() const;
  // The exclusive side of the write lease, for collectors outside the store
  // (unused snapshots) that must not run while a writer is between writing and
  // tagging. Release it before CollectGarbage, which takes it itself.
  Result<FileLock> AcquireGcLock() const;

  // Marks everything reachable from index.json (index -> manifests -> config
  // and layers) and from `extra_roots` (e.g. images of live containers; a root
  // that is a manifest or index is followed too), then removes every other
  // blob. Waits for write leases and holds the index lock shared throughout.
  Result<GcReport> CollectGarbage(const std::set<Digest>& extra_roots = {});

  // Checks every blob against its name and every index entry for a complete,
  // parseable image. Returns one line per problem (empty = healthy). Leftover
  // ingest files are not problems.
  Result<std::vector<std::string>> Fsck() const;

 private:
  Store(std::filesystem::path root, std::unique_ptr<LocalContentStore> content);

  std::filesystem::path root_;
  std::unique_ptr<LocalContentStore> content_;
  std::unique_ptr<ImageIndex> index_;
};

}  // namespace imgtool::store
