#include "store/image_index.h"

#include <algorithm>
#include <set>

#include "common/file_util.h"

namespace imgtool::store {

namespace {

// index.json of a fresh layout, byte for byte.
constexpr std::string_view kEmptyIndex = R"({"schemaVersion":2,"manifests":[]})";
constexpr size_t kMaxIndexSize = 64u << 20;

bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

void SortEntries(std::vector<ImageEntry>& entries) {
  std::stable_sort(entries.begin(), entries.end(),
                   [](const ImageEntry& a, const ImageEntry& b) { return a.name < b.name; });
}

}  // namespace

ImageIndex::ImageIndex(std::filesystem::path root, const ContentStore* content)
    : root_(std::move(root)), content_(content) {}

Result<FileLock> ImageIndex::Lock(FileLock::Mode mode) const {
  return FileLock::Acquire(LockPath(), mode).Wrap("lock image index");
}

Status ImageIndex::InitIfMissing() {
  std::error_code ec;
  if (std::filesystem::exists(IndexPath(), ec)) return OkStatus();
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, Lock(FileLock::Mode::kExclusive));
  // Another process may have created it while we waited for the lock.
  if (std::filesystem::exists(IndexPath(), ec)) return OkStatus();
  return WriteFileAtomic(IndexPath(), kEmptyIndex).Wrap("create " + IndexPath().string());
}

Result<std::vector<ImageEntry>> ImageIndex::ReadLocked() const {
  auto parse = [this](const std::string& text) -> Result<std::vector<ImageEntry>> {
    Result<Index> index = ParseIndex(text);
    if (!index) return std::move(index).error().Wrap(IndexPath().string());
    std::vector<ImageEntry> entries;
    entries.reserve(index->manifests.size());
    for (Descriptor& d : index->manifests) {
      std::string name = d.RefName();
      entries.push_back(ImageEntry{std::move(name), std::move(d)});
    }
    SortEntries(entries);
    return entries;
  };
  IMGTOOL_ASSIGN_OR_RETURN(std::optional<std::vector<ImageEntry>> entries,
                           cache_.Get(IndexPath(), kMaxIndexSize, parse));
  if (!entries) return std::vector<ImageEntry>();
  return std::move(*entries);
}

Status ImageIndex::WriteLocked(std::vector<ImageEntry> entries) const {
  SortEntries(entries);
  Index index;
  index.manifests.reserve(entries.size());
  for (ImageEntry& e : entries) index.manifests.push_back(std::move(e.descriptor));
  return WriteFileAtomic(IndexPath(), SerializeIndex(index)).Wrap("write " + IndexPath().string());
}

Result<std::vector<ImageEntry>> ImageIndex::List() const {
  // index.json is only ever replaced by rename, so a read without the lock
  // sees one whole version.
  return ReadLocked();
}

Result<Descriptor> ImageIndex::Resolve(const Reference& ref) const {
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageEntry> entries, ReadLocked());
  std::string name = ref.ToString();
  for (const ImageEntry& e : entries) {
    if (e.name == name) return e.descriptor;
  }
  if (ref.digest()) {
    // "repo@sha256:..." names content, not a tag: any tag of the same
    // repository that points at it will do.
    for (const ImageEntry& e : entries) {
      if (e.descriptor.digest != *ref.digest()) continue;
      Result<Reference> entry_ref = ParseReference(e.name);
      if (entry_ref && entry_ref->Name() == ref.Name()) return e.descriptor;
    }
  }
  return NotFoundError("image \"" + name + "\" not found");
}

Status ImageIndex::Set(const Reference& ref, Descriptor descriptor) {
  std::string name = ref.ToString();
  descriptor.annotations[std::string(kAnnotationRefName)] = name;
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, Lock(FileLock::Mode::kExclusive));
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageEntry> entries, ReadLocked());
  std::erase_if(entries, [&](const ImageEntry& e) { return e.name == name; });
  entries.push_back(ImageEntry{name, std::move(descriptor)});
  return WriteLocked(std::move(entries)).Wrap("tag " + name);
}

Status ImageIndex::AddUnnamed(Descriptor descriptor) {
  descriptor.annotations.erase(std::string(kAnnotationRefName));
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, Lock(FileLock::Mode::kExclusive));
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageEntry> entries, ReadLocked());
  for (const ImageEntry& e : entries) {
    if (e.descriptor.digest == descriptor.digest) return OkStatus();
  }
  std::string what = "add image " + descriptor.digest.ToString();
  entries.push_back(ImageEntry{"", std::move(descriptor)});
  return WriteLocked(std::move(entries)).Wrap(what);
}

Status ImageIndex::Remove(const Reference& ref) {
  std::string name = ref.ToString();
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, Lock(FileLock::Mode::kExclusive));
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageEntry> entries, ReadLocked());
  size_t removed = std::erase_if(entries, [&](const ImageEntry& e) { return e.name == name; });
  if (removed == 0) return NotFoundError("image \"" + name + "\" not found");
  return WriteLocked(std::move(entries)).Wrap("untag " + name);
}

Result<int> ImageIndex::RemoveDigest(const Digest& digest) {
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, Lock(FileLock::Mode::kExclusive));
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageEntry> entries, ReadLocked());
  size_t removed =
      std::erase_if(entries, [&](const ImageEntry& e) { return e.descriptor.digest == digest; });
  if (removed > 0) {
    IMGTOOL_TRY(WriteLocked(std::move(entries)).Wrap("remove image " + digest.ToString()));
  }
  return static_cast<int>(removed);
}

Result<std::vector<ImageEntry>> ImageIndex::FindByDigest(const Digest& digest) const {
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageEntry> entries, ReadLocked());
  std::erase_if(entries, [&](const ImageEntry& e) { return e.descriptor.digest != digest; });
  return entries;
}

Digest ImageIndex::ConfigDigestOf(const Descriptor& descriptor) const {
  if (content_ == nullptr || !IsManifestMediaType(descriptor.media_type)) return Digest();
  Result<std::string> text = content_->ReadBlob(descriptor.digest, 4u << 20);
  if (!text) return Digest();
  Result<Manifest> manifest = ParseManifest(*text);
  if (!manifest) return Digest();
  return manifest->config.digest;
}

Result<ImageEntry> ImageIndex::FindByIdPrefix(std::string_view id) const {
  std::string_view prefix = id;
  if (prefix.starts_with("sha256:")) prefix.remove_prefix(7);
  if (prefix.size() < kMinIdPrefix || prefix.size() > 64 || !IsLowerHex(prefix)) {
    return InvalidArgumentError("invalid image ID \"" + std::string(id.substr(0, 80)) +
                                "\": want " + std::to_string(kMinIdPrefix) +
                                " to 64 lowercase hex digits");
  }
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageEntry> entries, ReadLocked());
  std::vector<const ImageEntry*> matches;
  std::set<Digest> distinct;
  for (const ImageEntry& e : entries) {
    bool match = e.descriptor.digest.hex().starts_with(prefix);
    if (!match) {
      Digest config = ConfigDigestOf(e.descriptor);
      match = !config.empty() && config.hex().starts_with(prefix);
    }
    if (match) {
      matches.push_back(&e);
      distinct.insert(e.descriptor.digest);
    }
  }
  if (matches.empty()) {
    return NotFoundError("no image with ID \"" + std::string(id) + "\"");
  }
  if (distinct.size() > 1) {
    std::string list;
    for (const Digest& d : distinct) {
      if (!list.empty()) list += ", ";
      list += d.ToString().substr(0, 19);
    }
    return InvalidArgumentError("image ID \"" + std::string(id) + "\" is ambiguous: matches " +
                                list);
  }
  return *matches.front();
}

}  // namespace imgtool::store
