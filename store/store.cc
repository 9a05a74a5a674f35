#include "store/store.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/log.h"

namespace imgtool::store {

namespace {

constexpr std::string_view kLayoutFile = R"({"imageLayoutVersion":"1.0.0"})";
constexpr size_t kMaxManifestSize = 8u << 20;
constexpr size_t kMaxConfigSize = 64u << 20;
constexpr int kMaxIndexDepth = 4;

// Fsck only wants the reader's verdict, not the bytes.
class DiscardSink final : public ByteSink {
 public:
  Status Write(const void*, size_t) override { return OkStatus(); }
};

std::string Short(const Digest& d) { return d.ToString().substr(0, 19); }

bool IsHexId(std::string_view s) {
  if (s.starts_with("sha256:")) s.remove_prefix(7);
  return s.size() >= ImageIndex::kMinIdPrefix && s.size() <= 64 &&
         std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Checks the store's oci-layout file, written first when there is none.
Status CheckLayout(const std::filesystem::path& root) {
  std::filesystem::path path = root / "oci-layout";
  Result<std::string> text = ReadFileToString(path, 1 << 16);
  if (!text && text.error().code() == ErrorCode::kNotFound) {
    // Concurrent creators write identical bytes, so the race is harmless,
    // and what is there now is what was just written.
    IMGTOOL_TRY(WriteFileAtomic(path, kLayoutFile).Wrap("create store " + root.string()));
    text = std::string(kLayoutFile);
  }
  if (!text) {
    return FailedPreconditionError("store " + root.string() + ": " + text.error().ToString());
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  bool ok = j.is_object() && j.contains("imageLayoutVersion") &&
            j["imageLayoutVersion"].is_string() && j["imageLayoutVersion"] == "1.0.0";
  if (!ok) {
    return FailedPreconditionError(
        "store " + root.string() +
        ": oci-layout is not {\"imageLayoutVersion\":\"1.0.0\"}; not an OCI image layout this "
        "version can use");
  }
  return OkStatus();
}

}  // namespace

std::filesystem::path DefaultRoot() {
  const char* env = std::getenv("IMGTOOL_ROOT");
  if (env != nullptr && env[0] != '\0') return env;
  return "/var/lib/imgtool";
}

Store::Store(std::filesystem::path root, std::unique_ptr<LocalContentStore> content)
    : root_(std::move(root)),
      content_(std::move(content)),
      index_(std::make_unique<ImageIndex>(root_, content_.get())) {}

Result<std::unique_ptr<Store>> Store::Open(const std::filesystem::path& root_in) {
  if (root_in.empty()) return InvalidArgumentError("store root is empty");
  std::error_code ec;
  std::filesystem::path root = std::filesystem::absolute(root_in, ec);
  if (ec) root = root_in;
  std::filesystem::file_status status = std::filesystem::status(root, ec);
  if (status.type() == std::filesystem::file_type::not_found) {
    std::filesystem::create_directories(root, ec);
    if (ec) {
      return Error(ErrorCodeFromErrno(ec.value()),
                   "create store " + root.string() + ": " + ec.message());
    }
    // Image content may be private; only the owner reads the store.
    ::chmod(root.c_str(), 0700);
  } else if (ec) {
    return Error(ErrorCodeFromErrno(ec.value()), "store " + root.string() + ": " + ec.message());
  } else if (status.type() != std::filesystem::file_type::directory) {
    return FailedPreconditionError("store " + root.string() + " is not a directory");
  }

  IMGTOOL_TRY(CheckLayout(root));

  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<LocalContentStore> content,
                           LocalContentStore::Open(root).Wrap("open store " + root.string()));
  std::unique_ptr<Store> store(new Store(root, std::move(content)));
  // Fail early (and clearly) on a damaged index.json rather than on first use;
  // the entries read are kept for that use (ImageIndex).
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageEntry> entries,
                           store->index_->List().Wrap("open store " + root.string()));
  if (entries.empty()) IMGTOOL_TRY(store->index_->InitIfMissing());
  return store;
}

Result<Manifest> Store::ReadManifest(const Digest& digest) const {
  std::string what = "manifest " + digest.ToString();
  IMGTOOL_ASSIGN_OR_RETURN(std::string text,
                           content_->ReadBlob(digest, kMaxManifestSize).Wrap(what));
  return ParseManifest(text).Wrap(what);
}

Result<Index> Store::ReadIndex(const Digest& digest) const {
  std::string what = "image index " + digest.ToString();
  IMGTOOL_ASSIGN_OR_RETURN(std::string text,
                           content_->ReadBlob(digest, kMaxManifestSize).Wrap(what));
  return ParseIndex(text).Wrap(what);
}

Result<ImageConfig> Store::ReadConfig(const Digest& digest) const {
  std::string what = "config " + digest.ToString();
  IMGTOOL_ASSIGN_OR_RETURN(std::string text, content_->ReadBlob(digest, kMaxConfigSize).Wrap(what));
  return ParseImageConfig(text).Wrap(what);
}

Result<Descriptor> Store::WriteJsonBlob(std::string_view media_type, std::string_view json) {
  Descriptor d;
  d.media_type = std::string(media_type);
  IMGTOOL_TRY(content_->WriteBlob(json, &d.digest));
  d.size = static_cast<int64_t>(json.size());
  return d;
}

Result<FileLock> Store::AcquireWriteLease() const {
  return FileLock::Acquire(root_ / "gc.lock", FileLock::Mode::kShared).Wrap("write lease");
}

Result<FileLock> Store::AcquireGcLock() const {
  return FileLock::Acquire(root_ / "gc.lock", FileLock::Mode::kExclusive).Wrap("gc lock");
}

Result<ResolvedImage> Store::ResolveDescriptor(const Descriptor& top,
                                               std::optional<Platform> platform) const {
  Platform wanted = platform ? *platform : HostPlatform();
  ResolvedImage out;
  out.top = top;
  out.name = top.RefName();

  Descriptor current = top;
  for (int depth = 0;; ++depth) {
    if (depth > kMaxIndexDepth) {
      return InvalidArgumentError("image " + top.digest.ToString() +
                                  ": image indexes nested more "
                                  "than " +
                                  std::to_string(kMaxIndexDepth) + " deep");
    }
    IMGTOOL_ASSIGN_OR_RETURN(
        int64_t size,
        content_->Size(current.digest).Wrap("manifest of image " + top.digest.ToString()));
    if (size != current.size) {
      return DataLossError("blob " + current.digest.ToString() + " is " + std::to_string(size) +
                           " bytes, its descriptor says " + std::to_string(current.size));
    }
    if (current.media_type.empty()) {
      // Entries written by other tools may omit the media type; the blob knows.
      IMGTOOL_ASSIGN_OR_RETURN(std::string text,
                               content_->ReadBlob(current.digest, kMaxManifestSize));
      IMGTOOL_ASSIGN_OR_RETURN(current.media_type,
                               DetectManifestMediaType(text).Wrap(current.digest.ToString()));
    }
    if (IsManifestMediaType(current.media_type)) break;
    if (!IsIndexMediaType(current.media_type)) {
      return InvalidArgumentError("image " + top.digest.ToString() + ": media type \"" +
                                  current.media_type + "\" is neither a manifest nor an index");
    }
    IMGTOOL_ASSIGN_OR_RETURN(Index index, ReadIndex(current.digest));
    const Descriptor* chosen = nullptr;
    std::string available;
    for (const Descriptor& d : index.manifests) {
      if (!d.platform) continue;
      if (d.platform->Matches(wanted)) {
        chosen = &d;
        break;
      }
      if (d.platform->os != "unknown") {  // skip attestation manifests in the list
        if (!available.empty()) available += ", ";
        available += d.platform->ToString();
      }
    }
    if (chosen == nullptr) {
      return NotFoundError("image index " + current.digest.ToString() + ": no manifest for " +
                           wanted.ToString() + " (has " + (available.empty() ? "none" : available) +
                           ")");
    }
    current = *chosen;
  }

  out.manifest_descriptor = current;
  IMGTOOL_ASSIGN_OR_RETURN(out.manifest, ReadManifest(current.digest));
  IMGTOOL_ASSIGN_OR_RETURN(
      out.config,
      ReadConfig(out.manifest.config.digest).Wrap("image " + current.digest.ToString()));
  if (out.config.rootfs.diff_ids.size() != out.manifest.layers.size()) {
    return InvalidArgumentError(
        "image " + current.digest.ToString() + ": config " + Short(out.manifest.config.digest) +
        " has " + std::to_string(out.config.rootfs.diff_ids.size()) + " diff_ids for " +
        std::to_string(out.manifest.layers.size()) + " layers");
  }
  return out;
}

Result<ResolvedImage> Store::ResolveImage(std::string_view ref_or_id,
                                          std::optional<Platform> platform) const {
  if (ref_or_id.starts_with("sha256:")) {
    IMGTOOL_ASSIGN_OR_RETURN(Digest digest, Digest::Parse(ref_or_id));
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageEntry> entries, index_->FindByDigest(digest));
    if (!entries.empty()) return ResolveDescriptor(entries.front().descriptor, platform);
    // Not a tagged manifest; it may be a config digest (docker's image ID).
    IMGTOOL_ASSIGN_OR_RETURN(ImageEntry entry, index_->FindByIdPrefix(ref_or_id));
    Result<ResolvedImage> out = ResolveDescriptor(entry.descriptor, platform);
    return out;
  }

  Result<Reference> ref = ParseReference(ref_or_id);
  if (ref) {
    Result<Descriptor> found = index_->Resolve(*ref);
    if (found) return ResolveDescriptor(*found, platform);
    if (found.error().code() != ErrorCode::kNotFound || !IsHexId(ref_or_id)) {
      return std::move(found).error();
    }
    Result<ImageEntry> by_id = index_->FindByIdPrefix(ref_or_id);
    if (by_id) return ResolveDescriptor(by_id->descriptor, platform);
    if (by_id.error().code() != ErrorCode::kNotFound) return std::move(by_id).error();
    return NotFoundError("image \"" + std::string(ref_or_id) + "\" not found");
  }
  if (IsHexId(ref_or_id)) {
    IMGTOOL_ASSIGN_OR_RETURN(ImageEntry entry, index_->FindByIdPrefix(ref_or_id));
    return ResolveDescriptor(entry.descriptor, platform);
  }
  return std::move(ref).error();
}

Result<GcReport> Store::CollectGarbage(const std::set<Digest>& extra_roots) {
  // Lock order (gc.lock, then index.lock) is the same as a writer's (lease,
  // then Set), so the two never deadlock.
  IMGTOOL_ASSIGN_OR_RETURN(
      FileLock lease_lock,
      FileLock::Acquire(root_ / "gc.lock", FileLock::Mode::kExclusive).Wrap("gc"));
  IMGTOOL_ASSIGN_OR_RETURN(FileLock index_lock, index_->Lock(FileLock::Mode::kShared));
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageEntry> entries, index_->List().Wrap("gc"));

  struct Pending {
    Digest digest;
    std::string media_type;  // "" = find out from the blob
    std::string owner;       // for errors
  };
  std::deque<Pending> queue;
  for (const ImageEntry& e : entries) {
    queue.push_back(
        {e.descriptor.digest, e.descriptor.media_type,
         "image \"" + (e.name.empty() ? e.descriptor.digest.ToString() : e.name) + "\""});
  }
  for (const Digest& d : extra_roots) queue.push_back({d, "", "root " + d.ToString()});

  std::set<Digest> marked;
  while (!queue.empty()) {
    Pending p = std::move(queue.front());
    queue.pop_front();
    if (!marked.insert(p.digest).second) continue;
    if (!content_->Exists(p.digest)) continue;  // dangling: nothing below it to keep
    std::string media_type = p.media_type;
    bool maybe_json =
        media_type.empty() || IsManifestMediaType(media_type) || IsIndexMediaType(media_type);
    if (!maybe_json) continue;
    if (media_type.empty()) {
      // An extra root of unknown kind: follow it only if it is a small
      // manifest-like document; anything else (a layer, a config) is a leaf.
      Result<int64_t> size = content_->Size(p.digest);
      if (!size || *size > static_cast<int64_t>(kMaxManifestSize)) continue;
      Result<std::string> text = content_->ReadBlob(p.digest, kMaxManifestSize);
      if (!text) continue;
      Result<std::string> detected = DetectManifestMediaType(*text);
      if (!detected) continue;
      media_type = *detected;
    }
    // An unreadable manifest hides which blobs it needs: sweeping anyway could
    // delete the rest of a damaged image, so stop and say which one.
    std::string stop = "gc stopped, " + p.owner + " is damaged (fix or remove it)";
    if (IsManifestMediaType(media_type)) {
      Result<Manifest> m = ReadManifest(p.digest);
      if (!m) {
        return std::move(m).error().Wrap(stop);
      }
      queue.push_back({m->config.digest, m->config.media_type, p.owner});
      for (const Descriptor& l : m->layers) queue.push_back({l.digest, l.media_type, p.owner});
      if (m->subject) marked.insert(m->subject->digest);
    } else if (IsIndexMediaType(media_type)) {
      Result<Index> index = ReadIndex(p.digest);
      if (!index) {
        return std::move(index).error().Wrap(stop);
      }
      for (const Descriptor& d : index->manifests) {
        queue.push_back({d.digest, d.media_type, p.owner});
      }
    }
  }

  GcReport report;
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<BlobInfo> blobs, content_->List().Wrap("gc"));
  for (const BlobInfo& blob : blobs) {
    if (marked.contains(blob.digest)) {
      ++report.blobs_kept;
      continue;
    }
    Status deleted = content_->Delete(blob.digest);
    if (!deleted && deleted.error().code() != ErrorCode::kNotFound) {
      return std::move(deleted).error().Wrap("gc");
    }
    ++report.blobs_removed;
    report.bytes_freed += blob.size;
    report.removed.push_back(blob.digest);
  }
  Result<int> cleaned = content_->CleanStaleIngests(LocalContentStore::kStaleIngestAge);
  if (!cleaned) LogWarning("gc: ", cleaned.error().ToString());
  LogDebug("gc: removed ", report.blobs_removed, " blobs (", report.bytes_freed, " bytes), kept ",
           report.blobs_kept);
  return report;
}

Result<std::vector<std::string>> Store::Fsck() const {
  std::vector<std::string> problems;

  IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> strays, content_->StrayFiles());
  for (const std::string& name : strays) {
    problems.push_back("stray file blobs/sha256/" + name +
                       ": not a blob (name is not a sha256 "
                       "digest or not a regular file)");
  }

  IMGTOOL_ASSIGN_OR_RETURN(std::vector<BlobInfo> blobs, content_->List());
  std::set<Digest> damaged;
  for (const BlobInfo& blob : blobs) {
    Result<BlobReader> reader = content_->Open(blob.digest);
    if (!reader) {
      if (reader.error().code() == ErrorCode::kNotFound) continue;  // removed meanwhile
      problems.push_back(reader.error().ToString());
      damaged.insert(blob.digest);
      continue;
    }
    DiscardSink discard;
    Status verified = reader->CopyTo(discard);
    if (!verified) {
      problems.push_back(verified.error().ToString());
      damaged.insert(blob.digest);
    }
  }

  Result<std::vector<ImageEntry>> entries = index_->List();
  if (!entries) {
    problems.push_back(entries.error().ToString());
    return problems;
  }

  // Checks one descriptor's blob: present, the size the descriptor says.
  auto check_blob = [&](const std::string& who, std::string_view kind,
                        const Descriptor& d) -> bool {
    Result<int64_t> size = content_->Size(d.digest);
    if (!size) {
      problems.push_back(who + ": " + std::string(kind) + " " + d.digest.ToString() +
                         (size.error().code() == ErrorCode::kNotFound
                              ? " is missing"
                              : ": " + size.error().ToString()));
      return false;
    }
    if (*size != d.size) {
      problems.push_back(who + ": " + std::string(kind) + " " + d.digest.ToString() + " is " +
                         std::to_string(*size) + " bytes, descriptor says " +
                         std::to_string(d.size));
      return false;
    }
    return !damaged.contains(d.digest);
  };

  auto check_manifest = [&](const std::string& who, const Descriptor& d) {
    if (!check_blob(who, "manifest", d)) return;
    Result<Manifest> m = ReadManifest(d.digest);
    if (!m) {
      problems.push_back(who + ": " + m.error().ToString());
      return;
    }
    if (check_blob(who, "config", m->config)) {
      Result<ImageConfig> config = ReadConfig(m->config.digest);
      if (!config) {
        problems.push_back(who + ": " + config.error().ToString());
      } else if (config->rootfs.diff_ids.size() != m->layers.size()) {
        problems.push_back(who + ": config " + m->config.digest.ToString() + " has " +
                           std::to_string(config->rootfs.diff_ids.size()) + " diff_ids for " +
                           std::to_string(m->layers.size()) + " layers");
      }
    }
    for (size_t i = 0; i < m->layers.size(); ++i) {
      check_blob(who, "layer " + std::to_string(i), m->layers[i]);
    }
  };

  for (const ImageEntry& e : *entries) {
    std::string who =
        "image \"" + (e.name.empty() ? e.descriptor.digest.ToString() : e.name) + "\"";
    std::string media_type = e.descriptor.media_type;
    if (IsIndexMediaType(media_type)) {
      if (!check_blob(who, "image index", e.descriptor)) continue;
      Result<Index> index = ReadIndex(e.descriptor.digest);
      if (!index) {
        problems.push_back(who + ": " + index.error().ToString());
        continue;
      }
      for (const Descriptor& d : index->manifests) {
        if (IsManifestMediaType(d.media_type)) {
          check_manifest(who, d);
        } else {
          check_blob(who, "index entry", d);
        }
      }
    } else if (IsManifestMediaType(media_type)) {
      check_manifest(who, e.descriptor);
    } else {
      problems.push_back(who + ": unknown media type \"" + media_type + "\"");
    }
  }
  return problems;
}

}  // namespace imgtool::store
