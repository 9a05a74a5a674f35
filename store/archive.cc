// Import of oci-archive, oci-dir and docker-archive into the store.
#include "store/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "common/file_util.h"
#include "common/log.h"
#include "common/safe_path.h"
#include "common/unique_fd.h"

namespace imgtool::store {

namespace fs = std::filesystem;

std::string_view ArchiveFormatName(ArchiveFormat format) {
  switch (format) {
    case ArchiveFormat::kOciArchive:
      return "oci-archive";
    case ArchiveFormat::kDockerArchive:
      return "docker-archive";
    case ArchiveFormat::kOciDir:
      return "oci-dir";
  }
  return "unknown";
}

Result<ArchiveFormat> ParseArchiveFormat(std::string_view text) {
  for (ArchiveFormat format :
       {ArchiveFormat::kOciArchive, ArchiveFormat::kDockerArchive, ArchiveFormat::kOciDir}) {
    if (text == ArchiveFormatName(format)) return format;
  }
  return InvalidArgumentError("unknown archive format \"" + std::string(text) +
                              "\": want oci-archive, docker-archive or oci-dir");
}

namespace {

constexpr std::string_view kOciLayoutFile = "oci-layout";
constexpr std::string_view kIndexFile = "index.json";
constexpr std::string_view kDockerManifestFile = "manifest.json";
// Files that are not blobs and at most this big are kept in memory until we
// know whether anything refers to them (docker's <id>/json and VERSION files
// never reach the store that way).
constexpr int64_t kSmallFileSize = 1 << 20;
// Cap on everything kept in memory; past it, files go to the store instead.
constexpr size_t kMemoryBudget = 128u << 20;
constexpr int kMaxLinkHops = 16;
constexpr int kMaxIndexDepth = 4;
constexpr size_t kMagicSize = 4;

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchiveReadPtr = std::unique_ptr<struct archive, ArchiveDeleter>;

struct Entry {
  enum class Kind { kFile, kDirectory, kSymlink, kHardlink, kOther };
  std::string name;  // as in the archive
  Kind kind = Kind::kOther;
  std::string link;  // symlink target or hardlink source
  int64_t size = 0;
};

// A sequence of entries and their data: a tar stream or a directory tree.
class EntrySource {
 public:
  virtual ~EntrySource() = default;
  // False at the end.
  virtual Result<bool> Next(Entry* entry) = 0;
  // Data of the current entry; 0 at its end.
  virtual Result<size_t> Read(void* buf, size_t size) = 0;
};

class TarSource final : public EntrySource {
 public:
  static Result<std::unique_ptr<TarSource>> Open(int fd) {
    ArchiveReadPtr a(archive_read_new());
    if (!a) return InternalError("archive_read_new failed");
    archive_read_support_filter_all(a.get());
    archive_read_support_format_tar(a.get());
    // Zero bytes are an empty archive (reported as such), not an unknown format.
    archive_read_support_format_empty(a.get());
    if (archive_read_open_fd(a.get(), fd, 1 << 16) != ARCHIVE_OK) {
      return InvalidArgumentError(std::string("open archive: ") + archive_error_string(a.get()));
    }
    return std::unique_ptr<TarSource>(new TarSource(std::move(a)));
  }

  Result<bool> Next(Entry* entry) override {
    struct archive_entry* ae = nullptr;
    int r = archive_read_next_header(a_.get(), &ae);
    if (r == ARCHIVE_EOF) return false;
    if (r < ARCHIVE_WARN) {
      return DataLossError(StrCat("read archive after ", entries_, " entries: ", ErrorText()));
    }
    ++entries_;
    const char* name = archive_entry_pathname(ae);
    entry->name = name != nullptr ? name : "";
    entry->size = archive_entry_size(ae);
    entry->link.clear();
    if (const char* hard = archive_entry_hardlink(ae); hard != nullptr) {
      entry->kind = Entry::Kind::kHardlink;
      entry->link = hard;
      return true;
    }
    switch (archive_entry_filetype(ae)) {
      case AE_IFREG:
        entry->kind = Entry::Kind::kFile;
        break;
      case AE_IFDIR:
        entry->kind = Entry::Kind::kDirectory;
        break;
      case AE_IFLNK: {
        entry->kind = Entry::Kind::kSymlink;
        const char* target = archive_entry_symlink(ae);
        entry->link = target != nullptr ? target : "";
        break;
      }
      default:
        entry->kind = Entry::Kind::kOther;
    }
    return true;
  }

  Result<size_t> Read(void* buf, size_t size) override {
    la_ssize_t n = archive_read_data(a_.get(), buf, size);
    if (n < 0) return DataLossError("read archive: " + ErrorText());
    return static_cast<size_t>(n);
  }

 private:
  explicit TarSource(ArchiveReadPtr a) : a_(std::move(a)) {}
  std::string ErrorText() const {
    const char* text = archive_error_string(a_.get());
    return text != nullptr ? text : "unknown libarchive error";
  }

  ArchiveReadPtr a_;
  int64_t entries_ = 0;
};

// An OCI layout directory, walked without following symlinks. Only what an
// OCI layout consists of is read; other files in the directory are ignored.
class DirSource final : public EntrySource {
 public:
  static Result<std::unique_ptr<DirSource>> Open(const fs::path& root) {
    std::error_code ec;
    if (!fs::is_regular_file(fs::symlink_status(root / kIndexFile, ec))) {
      return InvalidArgumentError("not an OCI layout directory (no index.json)");
    }
    std::vector<Entry> entries;
    fs::recursive_directory_iterator it(root, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      Entry e;
      e.name = fs::relative(it->path(), root, ec).generic_string();
      if (ec) break;
      bool wanted = e.name == kIndexFile || e.name == kOciLayoutFile || e.name == "blobs" ||
                    e.name.starts_with("blobs/");
      if (!wanted) {
        if (it->is_directory(ec)) it.disable_recursion_pending();
        continue;
      }
      fs::file_status st = it->symlink_status(ec);
      if (ec) break;
      if (fs::is_symlink(st)) {
        e.kind = Entry::Kind::kSymlink;
        e.link = fs::read_symlink(it->path(), ec).string();
      } else if (fs::is_directory(st)) {
        e.kind = Entry::Kind::kDirectory;
      } else if (fs::is_regular_file(st)) {
        e.kind = Entry::Kind::kFile;
        e.size = static_cast<int64_t>(it->file_size(ec));
      }
      if (ec) break;
      entries.push_back(std::move(e));
    }
    if (ec) return ErrnoError("read directory " + root.string(), ec.value());
    std::sort(entries.begin(), entries.end(),
              [](const Entry& a, const Entry& b) { return a.name < b.name; });
    return std::unique_ptr<DirSource>(new DirSource(root, std::move(entries)));
  }

  Result<bool> Next(Entry* entry) override {
    file_.reset();
    if (next_ >= entries_.size()) return false;
    *entry = entries_[next_++];
    if (entry->kind == Entry::Kind::kFile) {
      fs::path path = root_ / entry->name;
      int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) return ErrnoError("open " + path.string());
      file_.reset(fd);
    }
    return true;
  }

  Result<size_t> Read(void* buf, size_t size) override {
    if (!file_) return size_t{0};
    while (true) {
      ssize_t n = ::read(file_.get(), buf, size);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) return ErrnoError("read " + (root_ / entries_[next_ - 1].name).string());
    }
  }

 private:
  DirSource(fs::path root, std::vector<Entry> entries)
      : root_(std::move(root)), entries_(std::move(entries)) {}

  fs::path root_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  UniqueFd file_;
};

std::string ShortDigest(const Digest& digest) { return "sha256:" + digest.hex().substr(0, 12); }

// The media type a layer blob has, from its first bytes.
std::string_view LayerMediaTypeFromMagic(std::string_view magic) {
  if (magic.size() >= 2 && static_cast<unsigned char>(magic[0]) == 0x1f &&
      static_cast<unsigned char>(magic[1]) == 0x8b) {
    return media_type::kOciLayerTarGzip;
  }
  if (magic.size() >= 4 && magic.substr(0, 4) == std::string_view("\x28\xb5\x2f\xfd", 4)) {
    return media_type::kOciLayerTarZstd;
  }
  return media_type::kOciLayerTar;
}

// A file of the archive, wherever its bytes ended up.
struct ArchiveFile {
  bool in_store = false;
  std::string data;  // when !in_store
  Digest digest;     // when in_store
  int64_t size = 0;
  std::string magic;  // the first kMagicSize bytes
};

class Importer {
 public:
  Importer(Store& store, const ImportOptions& options) : store_(store), options_(options) {}

  Status Consume(EntrySource& source);
  Result<std::vector<LoadedImage>> Finish();

 private:
  Status ConsumeFile(EntrySource& source, const std::string& name, int64_t size);
  Result<ArchiveFile> IngestStream(EntrySource& source, const std::string& name, int64_t size);

  Result<std::vector<LoadedImage>> FinishOci();
  Result<std::vector<LoadedImage>> FinishDocker();

  // Checks that the blob graph under `descriptor` is complete and well formed.
  Status ValidateDescriptor(const Descriptor& descriptor, int depth);
  Status ValidateManifest(const Digest& digest);
  Status CheckBlob(std::string_view what, const Descriptor& descriptor) const;

  // The archive file at `path`, following symlinks and hardlinks.
  Result<const ArchiveFile*> FindFile(std::string_view path) const;
  Result<std::string> FileBytes(const ArchiveFile& file, std::string_view what) const;
  Result<Digest> FileDigest(const ArchiveFile& file, int64_t* size);

  Result<std::optional<Reference>> NameFromRefName(std::string_view ref_name) const;
  Status AddName(std::vector<LoadedImage>* images, const Descriptor& descriptor,
                 std::optional<Reference> ref);
  Result<std::vector<LoadedImage>> Tag(std::vector<LoadedImage> images,
                                       std::vector<std::vector<Reference>> refs);

  Store& store_;
  const ImportOptions& options_;
  std::map<std::string, ArchiveFile> files_;  // by cleaned path
  std::map<std::string, std::string> links_;  // cleaned path -> cleaned target
  size_t memory_used_ = 0;
  int64_t entries_ = 0;
  // Names collected per image, parallel to the image list in Finish*.
  std::vector<std::vector<Reference>> refs_;
};

Status Importer::Consume(EntrySource& source) {
  Entry entry;
  while (true) {
    IMGTOOL_ASSIGN_OR_RETURN(bool more, source.Next(&entry));
    if (!more) break;
    ++entries_;
    auto cleaned = CleanPathInRoot(entry.name);
    if (!cleaned) {
      return InvalidArgumentError("archive entry \"" + entry.name +
                                  "\": path leads outside the archive");
    }
    const std::string& name = *cleaned;
    if (name.empty()) continue;
    switch (entry.kind) {
      case Entry::Kind::kDirectory:
      case Entry::Kind::kOther:
        break;
      case Entry::Kind::kSymlink: {
        // Resolved like the link would be on disk, but only ever as a name
        // inside the archive.
        std::string base = entry.link.starts_with('/')
                               ? std::string()
                               : fs::path(name).parent_path().generic_string();
        auto target = CleanPathInRoot(base.empty() ? entry.link : base + "/" + entry.link);
        if (!target) {
          return InvalidArgumentError("archive entry \"" + entry.name + "\": symlink to \"" +
                                      entry.link + "\" leads outside the archive");
        }
        links_[name] = *target;
        break;
      }
      case Entry::Kind::kHardlink: {
        auto target = CleanPathInRoot(entry.link);
        if (!target) {
          return InvalidArgumentError("archive entry \"" + entry.name + "\": hardlink to \"" +
                                      entry.link + "\" leads outside the archive");
        }
        links_[name] = *target;
        break;
      }
      case Entry::Kind::kFile:
        IMGTOOL_TRY(ConsumeFile(source, name, entry.size));
        break;
    }
  }
  if (entries_ == 0) return InvalidArgumentError("archive is empty");
  return OkStatus();
}

Status Importer::ConsumeFile(EntrySource& source, const std::string& name, int64_t size) {
  bool is_blob = name.starts_with("blobs/");
  bool is_metadata = name == kIndexFile || name == kOciLayoutFile || name == kDockerManifestFile;
  if (is_blob) {
    // blobs/<algorithm>/<encoded>: the name is the digest the content must have.
    std::string_view rest = std::string_view(name).substr(6);
    size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      // Not a blob (e.g. a stray file directly in blobs/): skip it.
      return OkStatus();
    }
    std::string digest_text =
        std::string(rest.substr(0, slash)) + ":" + std::string(rest.substr(slash + 1));
    auto expected = Digest::Parse(digest_text);
    if (!expected) return std::move(expected).error().Wrap("blob " + name);
    IMGTOOL_ASSIGN_OR_RETURN(ArchiveFile file, IngestStream(source, name, size));
    if (file.digest != *expected) {
      // The content is committed under its true digest and is garbage now;
      // gc removes it. Nothing will refer to it: the import fails here.
      return DataLossError("blob " + name + ": digest mismatch: content is " +
                           file.digest.ToString());
    }
    files_[name] = std::move(file);
    return OkStatus();
  }

  bool keep_in_memory;
  if (is_metadata) {
    if (size > static_cast<int64_t>(options_.max_json_size)) {
      return InvalidArgumentError(
          StrCat(name, ": ", size, " bytes is more than the limit of ", options_.max_json_size));
    }
    keep_in_memory = true;
  } else {
    int64_t limit =
        name.ends_with(".json") ? static_cast<int64_t>(options_.max_json_size) : kSmallFileSize;
    keep_in_memory = size <= limit && memory_used_ + static_cast<size_t>(size) <= kMemoryBudget;
  }
  if (!keep_in_memory) {
    IMGTOOL_ASSIGN_OR_RETURN(ArchiveFile file, IngestStream(source, name, size));
    files_[name] = std::move(file);
    return OkStatus();
  }
  ArchiveFile file;
  file.data.resize(static_cast<size_t>(size));
  size_t got = 0;
  while (got < file.data.size()) {
    IMGTOOL_ASSIGN_OR_RETURN(size_t n, source.Read(file.data.data() + got, file.data.size() - got));
    if (n == 0) break;
    got += n;
  }
  if (got != file.data.size()) {
    return DataLossError(
        StrCat("archive entry \"", name, "\": truncated: ", got, " of ", size, " bytes"));
  }
  file.size = size;
  file.magic = file.data.substr(0, kMagicSize);
  memory_used_ += file.data.size();
  files_[name] = std::move(file);
  return OkStatus();
}

Result<ArchiveFile> Importer::IngestStream(EntrySource& source, const std::string& name,
                                           int64_t size) {
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<IngestWriter> writer, store_.content().Writer());
  ArchiveFile file;
  file.in_store = true;
  std::vector<char> buf(1 << 17);
  while (true) {
    auto n = source.Read(buf.data(), buf.size());
    if (!n) return std::move(n).error().Wrap("archive entry \"" + name + "\"");
    if (*n == 0) break;
    if (file.magic.size() < kMagicSize) {
      file.magic.append(buf.data(), std::min(*n, kMagicSize - file.magic.size()));
    }
    IMGTOOL_TRY(writer->Write(buf.data(), *n).Wrap("store " + name));
  }
  if (size >= 0 && writer->written() != size) {
    return DataLossError(StrCat("archive entry \"", name, "\": truncated: ", writer->written(),
                                " of ", size, " bytes"));
  }
  IMGTOOL_TRY(writer->Commit(writer->written(), Digest()).Wrap("store " + name));
  IMGTOOL_ASSIGN_OR_RETURN(file.digest, writer->digest());
  file.size = writer->written();
  LogDebug("archive: stored ", name, " as ", file.digest.ToString(), " (", file.size, " bytes)");
  return file;
}

Result<const ArchiveFile*> Importer::FindFile(std::string_view path) const {
  auto cleaned = CleanPathInRoot(path);
  if (!cleaned)
    return InvalidArgumentError("\"" + std::string(path) + "\" leads outside the archive");
  std::string current = *cleaned;
  for (int hop = 0; hop <= kMaxLinkHops; ++hop) {
    if (auto it = files_.find(current); it != files_.end()) return &it->second;
    auto link = links_.find(current);
    if (link == links_.end()) {
      return NotFoundError("\"" + std::string(path) + "\" is not in the archive");
    }
    current = link->second;
  }
  return InvalidArgumentError("\"" + std::string(path) + "\": too many levels of links");
}

Result<std::string> Importer::FileBytes(const ArchiveFile& file, std::string_view what) const {
  if (!file.in_store) return file.data;
  if (file.size > static_cast<int64_t>(options_.max_json_size)) {
    return InvalidArgumentError(
        StrCat(what, ": ", file.size, " bytes is more than the limit of ", options_.max_json_size));
  }
  return store_.content().ReadBlob(file.digest, options_.max_json_size);
}

Result<Digest> Importer::FileDigest(const ArchiveFile& file, int64_t* size) {
  *size = file.size;
  if (file.in_store) return file.digest;
  Digest digest;
  IMGTOOL_TRY(store_.content().WriteBlob(file.data, &digest));
  return digest;
}

Status Importer::CheckBlob(std::string_view what, const Descriptor& descriptor) const {
  auto size = store_.content().Size(descriptor.digest);
  if (!size) {
    if (size.error().code() == ErrorCode::kNotFound) {
      return NotFoundError(StrCat(what, " ", descriptor.digest.ToString(),
                                  ": not in the archive and not in the store"));
    }
    return std::move(size).error().Wrap(StrCat(what, " ", descriptor.digest.ToString()));
  }
  if (*size != descriptor.size) {
    return DataLossError(StrCat(what, " ", descriptor.digest.ToString(), ": size is ", *size,
                                " bytes, descriptor says ", descriptor.size));
  }
  return OkStatus();
}

Status Importer::ValidateManifest(const Digest& digest) {
  IMGTOOL_ASSIGN_OR_RETURN(Manifest manifest, store_.ReadManifest(digest));
  std::string where = "manifest " + digest.ToString();
  if (!IsConfigMediaType(manifest.config.media_type)) {
    return InvalidArgumentError(where + ": config media type \"" + manifest.config.media_type +
                                "\" is not an image config");
  }
  IMGTOOL_TRY(CheckBlob("config", manifest.config).Wrap(where));
  IMGTOOL_ASSIGN_OR_RETURN(ImageConfig config, store_.ReadConfig(manifest.config.digest));
  if (config.rootfs.diff_ids.size() != manifest.layers.size()) {
    return InvalidArgumentError(StrCat(where, ": config ", manifest.config.digest.ToString(),
                                       ": rootfs.diff_ids has ", config.rootfs.diff_ids.size(),
                                       " entries but the manifest has ", manifest.layers.size(),
                                       " layers"));
  }
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& layer = manifest.layers[i];
    if (!IsLayerMediaType(layer.media_type)) {
      return InvalidArgumentError(
          StrCat(where, ": layers[", i, "]: media type \"", layer.media_type, "\" is not a layer"));
    }
    IMGTOOL_TRY(CheckBlob(StrCat("layers[", i, "]"), layer).Wrap(where));
    // An uncompressed layer is its own diffID, so the config can be checked
    // now; compressed ones are checked when they are unpacked.
    if (layer.media_type == media_type::kOciLayerTar && layer.digest != config.rootfs.diff_ids[i]) {
      return DataLossError(StrCat(where, ": layers[", i, "] ", layer.digest.ToString(),
                                  " does not match config rootfs.diff_ids[", i, "] ",
                                  config.rootfs.diff_ids[i].ToString()));
    }
  }
  return OkStatus();
}

Status Importer::ValidateDescriptor(const Descriptor& descriptor, int depth) {
  if (depth > kMaxIndexDepth) {
    return InvalidArgumentError("image index " + descriptor.digest.ToString() +
                                ": indexes nested too deeply");
  }
  IMGTOOL_TRY(CheckBlob("manifest", descriptor));
  if (IsIndexMediaType(descriptor.media_type)) {
    IMGTOOL_ASSIGN_OR_RETURN(Index index, store_.ReadIndex(descriptor.digest));
    if (index.manifests.empty()) {
      return InvalidArgumentError("image index " + descriptor.digest.ToString() +
                                  ": lists no manifests");
    }
    for (const Descriptor& child : index.manifests) {
      IMGTOOL_TRY(ValidateDescriptor(child, depth + 1)
                      .Wrap("image index " + ShortDigest(descriptor.digest)));
    }
    return OkStatus();
  }
  if (IsManifestMediaType(descriptor.media_type)) return ValidateManifest(descriptor.digest);
  return InvalidArgumentError("descriptor " + descriptor.digest.ToString() + ": media type \"" +
                              descriptor.media_type + "\" is neither a manifest nor an index");
}

Result<std::optional<Reference>> Importer::NameFromRefName(std::string_view ref_name) const {
  if (ref_name.empty()) return std::optional<Reference>();
  bool looks_full = ref_name.find_first_of("/:@") != std::string_view::npos;
  if (!looks_full && IsValidTag(ref_name)) {
    // OCI layouts commonly name images by tag only (skopeo's
    // oci-archive:FILE:TAG); the repository has to come from the caller.
    if (!options_.name) return std::optional<Reference>();
    IMGTOOL_ASSIGN_OR_RETURN(Reference ref, options_.name->WithoutDigest().WithTag(ref_name));
    return std::optional<Reference>(std::move(ref));
  }
  IMGTOOL_ASSIGN_OR_RETURN(Reference ref, ParseReference(ref_name));
  if (ref.digest()) {
    // A tag in the store names a manifest; a digest in the name adds nothing.
    ref = ref.WithoutDigest();
  }
  return std::optional<Reference>(std::move(ref));
}

Status Importer::AddName(std::vector<LoadedImage>* images, const Descriptor& descriptor,
                         std::optional<Reference> ref) {
  size_t i = 0;
  while (i < images->size() && (*images)[i].descriptor.digest != descriptor.digest) ++i;
  if (i == images->size()) {
    Descriptor clean;
    clean.media_type = descriptor.media_type;
    clean.digest = descriptor.digest;
    clean.size = descriptor.size;
    LoadedImage image;
    image.descriptor = std::move(clean);
    images->push_back(std::move(image));
    refs_.emplace_back();
  }
  if (ref) {
    auto& refs = refs_[i];
    if (std::find(refs.begin(), refs.end(), *ref) == refs.end()) refs.push_back(std::move(*ref));
  }
  return OkStatus();
}

Result<std::vector<LoadedImage>> Importer::Finish() {
  if (files_.count(std::string(kDockerManifestFile)) != 0) return FinishDocker();
  if (files_.count(std::string(kIndexFile)) != 0) return FinishOci();
  return InvalidArgumentError(
      "not an image archive: found neither index.json (OCI layout) nor manifest.json "
      "(docker-archive)");
}

Result<std::vector<LoadedImage>> Importer::FinishOci() {
  if (auto it = files_.find(std::string(kOciLayoutFile)); it != files_.end()) {
    nlohmann::json layout = nlohmann::json::parse(it->second.data, nullptr, false);
    if (layout.is_discarded() || !layout.is_object()) {
      return InvalidArgumentError("oci-layout: not a JSON object");
    }
    auto version = layout.find("imageLayoutVersion");
    if (version == layout.end() || !version->is_string() ||
        !version->get<std::string>().starts_with("1.")) {
      return InvalidArgumentError("oci-layout: unsupported imageLayoutVersion " +
                                  (version == layout.end() ? "(missing)" : version->dump()));
    }
  } else {
    LogDebug("archive has index.json but no oci-layout file; reading it as an OCI layout");
  }
  auto index = ParseIndex(files_.at(std::string(kIndexFile)).data);
  if (!index) return std::move(index).error().Wrap("index.json");
  if (index->manifests.empty()) return InvalidArgumentError("index.json: lists no images");

  std::vector<LoadedImage> images;
  for (size_t i = 0; i < index->manifests.size(); ++i) {
    Descriptor descriptor = index->manifests[i];
    std::string where = StrCat("index.json: manifests[", i, "]");
    if (descriptor.media_type.empty()) {
      // Old layouts leave it out; the blob itself says what it is.
      IMGTOOL_TRY(CheckBlob("manifest", descriptor).Wrap(where));
      IMGTOOL_ASSIGN_OR_RETURN(
          std::string json, store_.content().ReadBlob(descriptor.digest, options_.max_json_size));
      auto type = DetectManifestMediaType(json);
      if (!type) return std::move(type).error().Wrap(where + ": " + descriptor.digest.ToString());
      descriptor.media_type = *type;
    }
    IMGTOOL_TRY(ValidateDescriptor(descriptor, 0).Wrap(where));
    auto ref = NameFromRefName(descriptor.RefName());
    if (!ref) {
      return std::move(ref).error().Wrap(where + ": ref.name \"" + descriptor.RefName() + "\"");
    }
    IMGTOOL_TRY(AddName(&images, descriptor, std::move(*ref)));
    if (!*ref && !descriptor.RefName().empty()) {
      // Reported with the result rather than logged now, so that a load that
      // fails later still prints just its one error line.
      for (LoadedImage& image : images) {
        if (image.descriptor.digest == descriptor.digest) {
          image.unnamed_tags.push_back(descriptor.RefName());
        }
      }
    }
  }
  return Tag(std::move(images), std::move(refs_));
}

Result<std::vector<LoadedImage>> Importer::FinishDocker() {
  const std::string& text = files_.at(std::string(kDockerManifestFile)).data;
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded()) return InvalidArgumentError("manifest.json: malformed JSON");
  if (!doc.is_array() || doc.empty()) {
    return InvalidArgumentError("manifest.json: want a non-empty array of images");
  }
  std::vector<LoadedImage> images;
  for (size_t i = 0; i < doc.size(); ++i) {
    const nlohmann::json& item = doc[i];
    std::string where = StrCat("manifest.json: [", i, "]");
    if (!item.is_object()) return InvalidArgumentError(where + ": not an object");
    auto config_it = item.find("Config");
    if (config_it == item.end() || !config_it->is_string()) {
      return InvalidArgumentError(where + ".Config: missing or not a string");
    }
    auto layers_it = item.find("Layers");
    if (layers_it == item.end() || !layers_it->is_array()) {
      return InvalidArgumentError(where + ".Layers: missing or not an array");
    }
    std::vector<std::string> layer_paths;
    for (size_t j = 0; j < layers_it->size(); ++j) {
      if (!(*layers_it)[j].is_string()) {
        return InvalidArgumentError(StrCat(where, ".Layers[", j, "]: not a string"));
      }
      layer_paths.push_back((*layers_it)[j].get<std::string>());
    }
    std::vector<Reference> tags;
    if (auto tags_it = item.find("RepoTags"); tags_it != item.end() && !tags_it->is_null()) {
      if (!tags_it->is_array()) return InvalidArgumentError(where + ".RepoTags: not an array");
      for (size_t j = 0; j < tags_it->size(); ++j) {
        const nlohmann::json& tag = (*tags_it)[j];
        if (!tag.is_string()) {
          return InvalidArgumentError(StrCat(where, ".RepoTags[", j, "]: not a string"));
        }
        auto ref = ParseReference(tag.get<std::string>());
        if (!ref) return std::move(ref).error().Wrap(StrCat(where, ".RepoTags[", j, "]"));
        tags.push_back(ref->digest() ? ref->WithoutDigest() : *ref);
      }
    }

    // The config: kept as the archive has it, so the image ID stays docker's.
    std::string config_path = config_it->get<std::string>();
    std::string config_where = where + ": config \"" + config_path + "\"";
    auto config_file = FindFile(config_path);
    if (!config_file) return std::move(config_file).error().Wrap(where + ".Config");
    auto config_json = FileBytes(**config_file, config_path);
    if (!config_json) return std::move(config_json).error().Wrap(config_where);
    auto config = ParseImageConfig(*config_json);
    if (!config) return std::move(config).error().Wrap(config_where);
    if (config->rootfs.diff_ids.size() != layer_paths.size()) {
      return InvalidArgumentError(StrCat(config_where, ": rootfs.diff_ids has ",
                                         config->rootfs.diff_ids.size(),
                                         " entries but Layers lists ", layer_paths.size()));
    }
    Manifest manifest;
    manifest.schema_version = 2;
    manifest.media_type = std::string(media_type::kOciManifest);
    manifest.config.media_type = std::string(media_type::kOciConfig);
    IMGTOOL_TRY(store_.content().WriteBlob(*config_json, &manifest.config.digest));
    manifest.config.size = static_cast<int64_t>(config_json->size());

    for (size_t j = 0; j < layer_paths.size(); ++j) {
      std::string layer_where = StrCat(where, ".Layers[", j, "] \"", layer_paths[j], "\"");
      auto layer_file = FindFile(layer_paths[j]);
      if (!layer_file) return std::move(layer_file).error().Wrap(StrCat(where, ".Layers[", j, "]"));
      Descriptor layer;
      layer.media_type = std::string(LayerMediaTypeFromMagic((*layer_file)->magic));
      auto digest = FileDigest(**layer_file, &layer.size);
      if (!digest) return std::move(digest).error().Wrap(layer_where);
      layer.digest = *digest;
      if (layer.media_type == media_type::kOciLayerTar &&
          layer.digest != config->rootfs.diff_ids[j]) {
        return DataLossError(StrCat(layer_where, ": content is ", layer.digest.ToString(),
                                    " but config rootfs.diff_ids[", j, "] is ",
                                    config->rootfs.diff_ids[j].ToString()));
      }
      manifest.layers.push_back(std::move(layer));
    }
    std::string manifest_json = SerializeManifest(manifest);
    IMGTOOL_ASSIGN_OR_RETURN(Descriptor descriptor,
                             store_.WriteJsonBlob(media_type::kOciManifest, manifest_json));
    IMGTOOL_TRY(AddName(&images, descriptor, std::nullopt));
    size_t slot = 0;
    while (images[slot].descriptor.digest != descriptor.digest) ++slot;
    for (Reference& tag : tags) {
      auto& refs = refs_[slot];
      if (std::find(refs.begin(), refs.end(), tag) == refs.end()) refs.push_back(std::move(tag));
    }
  }
  return Tag(std::move(images), std::move(refs_));
}

Result<std::vector<LoadedImage>> Importer::Tag(std::vector<LoadedImage> images,
                                               std::vector<std::vector<Reference>> refs) {
  if (options_.name) {
    size_t unnamed = 0;
    for (const auto& r : refs) unnamed += r.empty() ? 1 : 0;
    if (unnamed > 1) {
      return InvalidArgumentError(
          StrCat("a name was given but the archive holds ", unnamed, " unnamed images"));
    }
    for (auto& r : refs) {
      if (r.empty())
        r.push_back(options_.name->digest() ? options_.name->WithoutDigest() : *options_.name);
    }
  }
  for (size_t i = 0; i < images.size(); ++i) {
    for (const Reference& ref : refs[i]) images[i].names.push_back(ref.ToString());
  }
  if (options_.before_tag) {
    for (const LoadedImage& image : images) IMGTOOL_TRY(options_.before_tag(image));
  }
  for (size_t i = 0; i < images.size(); ++i) {
    for (const Reference& ref : refs[i]) {
      IMGTOOL_TRY(store_.index().Set(ref, images[i].descriptor).Wrap("tag " + ref.ToString()));
    }
    if (refs[i].empty()) IMGTOOL_TRY(store_.index().AddUnnamed(images[i].descriptor));
  }
  return images;
}

Result<std::vector<LoadedImage>> RunImport(Store& store, EntrySource& source,
                                           const ImportOptions& options) {
  // Blobs written here are referenced by no tag until the very end; the lease
  // keeps a concurrent gc from sweeping them in between.
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lease, store.AcquireWriteLease());
  Importer importer(store, options);
  IMGTOOL_TRY(importer.Consume(source));
  return importer.Finish();
}

}  // namespace

Result<std::vector<LoadedImage>> ImportArchive(Store& store, int fd, const ImportOptions& options) {
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<TarSource> source, TarSource::Open(fd));
  return RunImport(store, *source, options);
}

Result<std::vector<LoadedImage>> ImportArchivePath(Store& store, const fs::path& path,
                                                   const ImportOptions& options) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    auto source = DirSource::Open(path);
    if (!source) return std::move(source).error().Wrap(path.string());
    return RunImport(store, **source, options).Wrap(path.string());
  }
  auto fd = OpenFile(path, O_RDONLY);
  if (!fd) return std::move(fd).error();
  return ImportArchive(store, fd->get(), options).Wrap(path.string());
}

}  // namespace imgtool::store
