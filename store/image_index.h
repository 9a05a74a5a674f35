// The store root's index.json: one entry per tagged image, the descriptor of
// its manifest (or image index) annotated with the full normalized reference
// (org.opencontainers.image.ref.name). Every change is a read-modify-write
// under an exclusive flock on <root>/index.lock, written atomically, so many
// processes can tag at once and readers always see a whole file.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/file_cache.h"
#include "common/file_lock.h"
#include "store/content_store.h"
#include "store/oci_types.h"
#include "store/reference.h"

namespace imgtool::store {

struct ImageEntry {
  std::string name;       // the ref.name annotation: "docker.io/library/busybox:latest"
  Descriptor descriptor;  // of the manifest or index, annotations included
};

class ImageIndex {
 public:
  // `root` holds index.json and index.lock. `content` (may be null) lets
  // digest-prefix lookup match config digests too, like docker's image IDs.
  explicit ImageIndex(std::filesystem::path root, const ContentStore* content = nullptr);

  std::filesystem::path IndexPath() const { return root_ / "index.json"; }
  std::filesystem::path LockPath() const { return root_ / "index.lock"; }

  // Writes an empty index.json if there is none.
  Status InitIfMissing();

  // Every entry, sorted by name. Entries without a ref.name come first ("").
  Result<std::vector<ImageEntry>> List() const;

  // The entry whose name is ref.ToString(). For a reference with a digest and
  // no exact entry, any entry of the same repository whose manifest has that
  // digest. NotFound: `image "docker.io/library/x:latest" not found`.
  Result<Descriptor> Resolve(const Reference& ref) const;

  // Adds the entry, replacing the one with the same name. The descriptor's
  // ref.name annotation is set to ref.ToString().
  Status Set(const Reference& ref, Descriptor descriptor);
  // NotFound when there is no such entry.
  Status Remove(const Reference& ref);
  // Keeps an image that has no name (an unnamed image loaded from an archive):
  // adds an entry without ref.name unless an entry with the same digest exists,
  // so that gc keeps it and it can be found by ID.
  Status AddUnnamed(Descriptor descriptor);
  // Removes every entry whose descriptor has `digest`; returns how many.
  Result<int> RemoveDigest(const Digest& digest);

  // Entries whose manifest digest is `digest`.
  Result<std::vector<ImageEntry>> FindByDigest(const Digest& digest) const;
  // Docker-style short IDs: `id` is hex (optionally "sha256:"-prefixed), at
  // least kMinIdPrefix digits; it matches an entry whose manifest digest or
  // config digest starts with it. NotFound when nothing matches,
  // InvalidArgument when entries with different digests match.
  Result<ImageEntry> FindByIdPrefix(std::string_view id) const;
  static constexpr size_t kMinIdPrefix = 4;

  // The lock every change takes (exclusive); gc holds it shared so that no
  // tag moves while it marks and sweeps.
  Result<FileLock> Lock(FileLock::Mode mode) const;

 private:
  Result<std::vector<ImageEntry>> ReadLocked() const;
  Status WriteLocked(std::vector<ImageEntry> entries) const;
  // The config digest of a manifest entry, if it can be read; empty otherwise.
  Digest ConfigDigestOf(const Descriptor& descriptor) const;

  std::filesystem::path root_;
  const ContentStore* content_;

  // The last index.json read (the file is only ever replaced by rename).
  mutable FileContentCache<std::vector<ImageEntry>> cache_;
};

}  // namespace imgtool::store
