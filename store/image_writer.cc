// ImageWriter (tar and directory) and the exporters built on it.
#include "store/image_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "common/digest.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/safe_path.h"
#include "common/scope_guard.h"
#include "common/temp_dir.h"
#include "store/archive.h"

namespace imgtool::store {

namespace fs = std::filesystem;

namespace {

struct ArchiveWriteDeleter {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
struct ArchiveReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
struct EntryDeleter {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};

// Counts what passes through, so a producer that writes the wrong amount is
// caught before the tar or file is corrupt.
class CountingSink final : public ByteSink {
 public:
  explicit CountingSink(ByteSink& inner) : inner_(inner) {}
  Status Write(const void* data, size_t size) override {
    written_ += static_cast<int64_t>(size);
    return inner_.Write(data, size);
  }
  int64_t written() const { return written_; }

 private:
  ByteSink& inner_;
  int64_t written_ = 0;
};

class TarImageWriter final : public ImageWriter {
 public:
  explicit TarImageWriter(std::unique_ptr<struct archive, ArchiveWriteDeleter> a)
      : a_(std::move(a)) {}
  ~TarImageWriter() override {
    // Freeing an open writer would write the end-of-archive blocks and make a
    // partial stream (save to stdout) look like a complete tar.
    if (!finished_) archive_write_fail(a_.get());
  }

  Status AddDirectory(std::string_view name) override {
    return WriteHeader(std::string(name) + "/", AE_IFDIR, 0755, 0);
  }

  Status AddFile(std::string_view name, int64_t size, const Producer& produce) override {
    IMGTOOL_TRY(WriteHeader(std::string(name), AE_IFREG, 0644, size));
    DataSink sink(a_.get());
    CountingSink counter(sink);
    IMGTOOL_TRY(produce(counter).Wrap(std::string(name)));
    if (counter.written() != size) {
      return InternalError(
          StrCat(name, ": wrote ", counter.written(), " bytes, header says ", size));
    }
    if (archive_write_finish_entry(a_.get()) != ARCHIVE_OK)
      return Fail("write " + std::string(name));
    return OkStatus();
  }

  Status Finish() override {
    finished_ = true;
    if (archive_write_close(a_.get()) != ARCHIVE_OK) return Fail("finish tar");
    return OkStatus();
  }

 private:
  class DataSink final : public ByteSink {
   public:
    explicit DataSink(struct archive* a) : a_(a) {}
    Status Write(const void* data, size_t size) override {
      const char* p = static_cast<const char*>(data);
      while (size > 0) {
        la_ssize_t n = archive_write_data(a_, p, size);
        if (n <= 0) {
          const char* text = archive_error_string(a_);
          return ErrnoError(std::string("write tar data: ") + (text != nullptr ? text : ""),
                            archive_errno(a_) != 0 ? archive_errno(a_) : EIO);
        }
        p += n;
        size -= static_cast<size_t>(n);
      }
      return OkStatus();
    }

   private:
    struct archive* a_;
  };

  Status WriteHeader(const std::string& name, unsigned type, unsigned perm, int64_t size) {
    std::unique_ptr<struct archive_entry, EntryDeleter> entry(archive_entry_new());
    archive_entry_set_pathname(entry.get(), name.c_str());
    archive_entry_set_filetype(entry.get(), type);
    archive_entry_set_perm(entry.get(), perm);
    archive_entry_set_size(entry.get(), size);
    archive_entry_set_mtime(entry.get(), 0, 0);
    archive_entry_set_uid(entry.get(), 0);
    archive_entry_set_gid(entry.get(), 0);
    if (archive_write_header(a_.get(), entry.get()) != ARCHIVE_OK) return Fail("write " + name);
    return OkStatus();
  }

  Error Fail(const std::string& what) {
    const char* text = archive_error_string(a_.get());
    int err = archive_errno(a_.get());
    return ErrnoError(what + ": " + (text != nullptr ? text : "libarchive error"),
                      err != 0 ? err : EIO);
  }

  std::unique_ptr<struct archive, ArchiveWriteDeleter> a_;
  bool finished_ = false;
};

class DirectoryImageWriter final : public ImageWriter {
 public:
  DirectoryImageWriter(fs::path dir, UniqueFd dir_fd)
      : dir_(std::move(dir)), dir_fd_(std::move(dir_fd)) {}

  Status AddDirectory(std::string_view name) override {
    IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, SafeMkdirAll(dir_fd_.get(), name, 0755));
    directories_.emplace_back(name);
    return OkStatus();
  }

  Status AddFile(std::string_view name, int64_t size, const Producer& produce) override {
    std::string where = (dir_ / name).string();
    IMGTOOL_ASSIGN_OR_RETURN(ParentDir parent, SafeOpenParent(dir_fd_.get(), name));
    int raw = ::openat(parent.fd.get(), parent.name.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (raw < 0) return ErrnoError("create " + where);
    UniqueFd fd(raw);
    FdSink sink(fd.get());
    CountingSink counter(sink);
    IMGTOOL_TRY(produce(counter).Wrap(where));
    if (counter.written() != size) {
      return InternalError(StrCat(where, ": wrote ", counter.written(), " bytes, expected ", size));
    }
    if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + where);
    return OkStatus();
  }

  Status Finish() override {
    for (const std::string& name : directories_) IMGTOOL_TRY(FsyncPath(dir_ / name));
    return FsyncPath(dir_);
  }

 private:
  fs::path dir_;
  UniqueFd dir_fd_;
  std::vector<std::string> directories_;
};

// --- Export -----------------------------------------------------------------

// Feeds libarchive from a verified blob reader, so decompression reads the
// blob through the same digest check as everything else.
struct BlobReadState {
  BlobReader* reader;
  std::vector<char> buffer;
  std::optional<Error> error;
};

la_ssize_t ReadBlobCallback(struct archive* a, void* client, const void** buffer) {
  auto* state = static_cast<BlobReadState*>(client);
  auto n = state->reader->Read(state->buffer.data(), state->buffer.size());
  if (!n) {
    state->error = std::move(n).error();
    archive_set_error(a, EIO, "%s", state->error->ToString().c_str());
    return -1;
  }
  *buffer = state->buffer.data();
  return static_cast<la_ssize_t>(*n);
}

// Writes the uncompressed form of a gzip/zstd layer to `out` and returns its
// digest (the layer's diffID).
Result<Digest> DecompressBlob(const ContentStore& content, const Digest& digest, ByteSink& out) {
  IMGTOOL_ASSIGN_OR_RETURN(BlobReader reader, content.Open(digest));
  BlobReadState state{&reader, std::vector<char>(1 << 17), std::nullopt};
  std::unique_ptr<struct archive, ArchiveReadDeleter> a(archive_read_new());
  if (!a) return InternalError("archive_read_new failed");
  archive_read_support_filter_all(a.get());
  archive_read_support_format_raw(a.get());
  auto fail = [&](std::string_view what) -> Error {
    if (state.error) return std::move(*state.error);
    const char* text = archive_error_string(a.get());
    return DataLossError(StrCat("decompress layer ", digest.ToString(), ": ", what, ": ",
                                text != nullptr ? text : "libarchive error"));
  };
  if (archive_read_open(a.get(), &state, nullptr, ReadBlobCallback, nullptr) != ARCHIVE_OK) {
    return fail("open");
  }
  struct archive_entry* entry = nullptr;
  if (archive_read_next_header(a.get(), &entry) != ARCHIVE_OK) return fail("read");
  Sha256Hasher hasher;
  std::vector<char> buf(1 << 17);
  while (true) {
    la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
    if (n < 0) return fail("read");
    if (n == 0) break;
    hasher.Update(buf.data(), static_cast<size_t>(n));
    IMGTOOL_TRY(out.Write(buf.data(), static_cast<size_t>(n)));
  }
  // libarchive may stop before the compressed stream's last bytes (the gzip
  // trailer); drain the reader so that its digest check runs.
  while (true) {
    auto n = reader.Read(buf.data(), buf.size());
    if (!n) return std::move(n).error().Wrap("layer " + digest.ToString());
    if (*n == 0) break;
  }
  return hasher.Finish();
}

ImageWriter::Producer CopyBlob(const ContentStore& content, Digest digest) {
  return [&content, digest](ByteSink& sink) -> Status {
    IMGTOOL_ASSIGN_OR_RETURN(BlobReader reader, content.Open(digest));
    return reader.CopyTo(sink).Wrap("blob " + digest.ToString());
  };
}

ImageWriter::Producer CopyFd(int fd) {
  return [fd](ByteSink& sink) -> Status {
    if (::lseek(fd, 0, SEEK_SET) < 0) return ErrnoError("seek temporary file");
    std::vector<char> buf(1 << 17);
    while (true) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("read temporary file");
      }
      if (n == 0) return OkStatus();
      IMGTOOL_TRY(sink.Write(buf.data(), static_cast<size_t>(n)));
    }
  };
}

Status WriteOciLayout(const Store& store, const std::vector<ExportItem>& images,
                      ImageWriter& writer) {
  Index index;
  index.schema_version = 2;
  index.media_type = std::string(media_type::kOciIndex);
  std::map<Digest, int64_t> blobs;  // sorted by digest = sorted by file name
  for (const ExportItem& item : images) {
    const ResolvedImage& image = item.image;
    Descriptor entry;
    entry.media_type = image.manifest_descriptor.media_type;
    entry.digest = image.manifest_descriptor.digest;
    entry.size = image.manifest_descriptor.size;
    if (item.ref) entry.annotations[std::string(kAnnotationRefName)] = item.ref->ToString();
    index.manifests.push_back(std::move(entry));
    blobs[image.manifest_descriptor.digest] = image.manifest_descriptor.size;
    blobs[image.manifest.config.digest] = image.manifest.config.size;
    for (const Descriptor& layer : image.manifest.layers) blobs[layer.digest] = layer.size;
  }
  IMGTOOL_TRY(writer.AddDirectory("blobs"));
  IMGTOOL_TRY(writer.AddDirectory("blobs/sha256"));
  for (const auto& [digest, size] : blobs) {
    IMGTOOL_ASSIGN_OR_RETURN(int64_t stored, store.content().Size(digest));
    if (stored != size) {
      return DataLossError(StrCat("blob ", digest.ToString(), ": stored size ", stored,
                                  " differs from the descriptor's ", size));
    }
    IMGTOOL_TRY(
        writer.AddFile("blobs/sha256/" + digest.hex(), size, CopyBlob(store.content(), digest)));
  }
  IMGTOOL_TRY(writer.AddFile("index.json", SerializeIndex(index)));
  return writer.AddFile("oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
}

Status WriteDockerArchive(const Store& store, const std::vector<ExportItem>& images,
                          ImageWriter& writer, const fs::path& temp_parent) {
  struct DockerImage {
    Digest config;
    std::vector<std::string> repo_tags;
    std::vector<Digest> diff_ids;
  };
  struct LayerFile {
    Digest blob;
    std::string media_type;
  };
  std::vector<DockerImage> out_images;
  std::map<Digest, int64_t> configs;
  std::map<Digest, LayerFile> layers;  // by diffID
  for (const ExportItem& item : images) {
    const ResolvedImage& image = item.image;
    const std::vector<Digest>& diff_ids = image.config.rootfs.diff_ids;
    if (diff_ids.size() != image.manifest.layers.size()) {
      return InvalidArgumentError(StrCat("image ", image.manifest_descriptor.digest.ToString(),
                                         ": config has ", diff_ids.size(), " diff_ids for ",
                                         image.manifest.layers.size(), " layers"));
    }
    DockerImage* target = nullptr;
    for (DockerImage& existing : out_images) {
      if (existing.config == image.manifest.config.digest) target = &existing;
    }
    if (target == nullptr) {
      out_images.push_back(DockerImage{image.manifest.config.digest, {}, diff_ids});
      target = &out_images.back();
    }
    if (item.ref) {
      std::string tag = item.ref->WithoutDigest().FamiliarName();
      if (std::find(target->repo_tags.begin(), target->repo_tags.end(), tag) ==
          target->repo_tags.end()) {
        target->repo_tags.push_back(tag);
      }
    }
    configs[image.manifest.config.digest] = image.manifest.config.size;
    for (size_t i = 0; i < diff_ids.size(); ++i) {
      layers.emplace(diff_ids[i], LayerFile{image.manifest.layers[i].digest,
                                            image.manifest.layers[i].media_type});
    }
  }

  // Every file name is <hex>.json, <hex>.tar or manifest.json; writing in
  // name order keeps the tar deterministic.
  std::map<std::string, std::function<Status()>> files;
  for (const auto& [digest, size] : configs) {
    int64_t config_size = size;
    Digest config_digest = digest;
    files[digest.hex() + ".json"] = [&writer, &store, config_digest, config_size]() {
      return writer.AddFile(config_digest.hex() + ".json", config_size,
                            CopyBlob(store.content(), config_digest));
    };
  }
  for (const auto& [diff_id, layer] : layers) {
    std::string name = diff_id.hex() + ".tar";
    Digest want = diff_id;
    LayerFile file = layer;
    files[name] = [&writer, &store, &temp_parent, name, want, file]() -> Status {
      IMGTOOL_ASSIGN_OR_RETURN(Compression compression, LayerCompression(file.media_type));
      if (compression == Compression::kNone) {
        if (file.blob != want) {
          return DataLossError(StrCat("layer ", file.blob.ToString(),
                                      ": uncompressed layer does not match its diffID ",
                                      want.ToString()));
        }
        IMGTOOL_ASSIGN_OR_RETURN(int64_t size, store.content().Size(file.blob));
        return writer.AddFile(name, size, CopyBlob(store.content(), file.blob));
      }
      // The tar header needs the uncompressed size up front, so the layer is
      // decompressed into a temporary file first.
      std::string tmpl = (temp_parent / ".imgtool-layer-XXXXXX").string();
      int raw = ::mkostemp(tmpl.data(), O_CLOEXEC);
      if (raw < 0) return ErrnoError("create temporary file in " + temp_parent.string());
      UniqueFd fd(raw);
      ::unlink(tmpl.c_str());
      FdSink sink(fd.get());
      IMGTOOL_ASSIGN_OR_RETURN(Digest got, DecompressBlob(store.content(), file.blob, sink));
      if (got != want) {
        return DataLossError(StrCat("layer ", file.blob.ToString(), ": uncompressed content is ",
                                    got.ToString(), " but the config's diffID is ",
                                    want.ToString()));
      }
      struct stat st;
      if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat temporary file");
      return writer.AddFile(name, st.st_size, CopyFd(fd.get()));
    };
  }
  for (auto& [name, write] : files) IMGTOOL_TRY(write());

  nlohmann::ordered_json manifest = nlohmann::ordered_json::array();
  for (const DockerImage& image : out_images) {
    nlohmann::ordered_json entry;
    entry["Config"] = image.config.hex() + ".json";
    if (image.repo_tags.empty()) {
      entry["RepoTags"] = nullptr;
    } else {
      entry["RepoTags"] = image.repo_tags;
    }
    nlohmann::ordered_json layer_names = nlohmann::ordered_json::array();
    for (const Digest& diff_id : image.diff_ids) layer_names.push_back(diff_id.hex() + ".tar");
    entry["Layers"] = std::move(layer_names);
    manifest.push_back(std::move(entry));
  }
  return writer.AddFile("manifest.json", manifest.dump());
}

Status WriteArchive(Store& store, const std::vector<ExportItem>& images, ArchiveFormat format,
                    ImageWriter& writer, const fs::path& temp_parent) {
  if (images.empty()) return InvalidArgumentError("no images to export");
  if (format == ArchiveFormat::kDockerArchive) {
    IMGTOOL_TRY(WriteDockerArchive(store, images, writer, temp_parent));
  } else {
    IMGTOOL_TRY(WriteOciLayout(store, images, writer));
  }
  return writer.Finish();
}

fs::path TempParentFor(const fs::path& output) {
  fs::path parent = output.parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

Status ExportToDirectory(Store& store, const std::vector<ExportItem>& images,
                         const fs::path& output) {
  std::error_code ec;
  fs::file_status st = fs::symlink_status(output, ec);
  if (fs::exists(st)) {
    if (!fs::is_directory(st)) {
      return AlreadyExistsError(output.string() + ": exists and is not a directory");
    }
    if (!fs::is_empty(output, ec)) {
      return AlreadyExistsError(output.string() + ": directory exists and is not empty");
    }
  }
  fs::path parent = TempParentFor(output);
  IMGTOOL_ASSIGN_OR_RETURN(TempDir temp,
                           TempDir::Create(parent, "." + output.filename().string() + ".tmp-"));
  if (::chmod(temp.path().c_str(), 0755) != 0) return ErrnoError("chmod " + temp.path().string());
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> writer,
                           ImageWriter::ForDirectory(temp.path()));
  IMGTOOL_TRY(WriteArchive(store, images, ArchiveFormat::kOciDir, *writer, parent));
  // rename(2) replaces an empty directory atomically and refuses a non-empty one.
  if (::rename(temp.path().c_str(), output.c_str()) != 0) {
    return ErrnoError("rename to " + output.string());
  }
  temp.Release();
  return FsyncPath(parent);
}

}  // namespace

Result<std::unique_ptr<ImageWriter>> ImageWriter::ForTar(int fd) {
  std::unique_ptr<struct archive, ArchiveWriteDeleter> a(archive_write_new());
  if (!a) return InternalError("archive_write_new failed");
  // pax_restricted writes plain ustar headers unless an entry needs more.
  if (archive_write_set_format_pax_restricted(a.get()) != ARCHIVE_OK ||
      archive_write_add_filter_none(a.get()) != ARCHIVE_OK ||
      archive_write_open_fd(a.get(), fd) != ARCHIVE_OK) {
    const char* text = archive_error_string(a.get());
    return InternalError(std::string("open tar writer: ") + (text != nullptr ? text : ""));
  }
  return std::unique_ptr<ImageWriter>(new TarImageWriter(std::move(a)));
}

Result<std::unique_ptr<ImageWriter>> ImageWriter::ForDirectory(const fs::path& dir) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(dir, O_RDONLY | O_DIRECTORY));
  return std::unique_ptr<ImageWriter>(new DirectoryImageWriter(dir, std::move(fd)));
}

Status ImageWriter::AddFile(std::string_view name, std::string_view data) {
  return AddFile(name, static_cast<int64_t>(data.size()),
                 [data](ByteSink& sink) { return sink.Write(data.data(), data.size()); });
}

Status ExportArchive(Store& store, const std::vector<ExportItem>& images, ArchiveFormat format,
                     const fs::path& output) {
  if (format == ArchiveFormat::kOciDir) {
    return ExportToDirectory(store, images, output).Wrap("save " + output.string());
  }
  fs::path parent = TempParentFor(output);
  std::string tmpl = (parent / ("." + output.filename().string() + ".tmp-XXXXXX")).string();
  int raw = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (raw < 0) return ErrnoError("save " + output.string() + ": create temporary file");
  UniqueFd fd(raw);
  ScopeGuard remove_temp([&] { ::unlink(tmpl.c_str()); });
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> writer, ImageWriter::ForTar(fd.get()));
  IMGTOOL_TRY(WriteArchive(store, images, format, *writer, parent).Wrap("save " + output.string()));
  if (::fchmod(fd.get(), 0644) != 0) return ErrnoError("chmod " + tmpl);
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + tmpl);
  if (::rename(tmpl.c_str(), output.c_str()) != 0) {
    return ErrnoError("save: rename to " + output.string());
  }
  remove_temp.Cancel();
  return FsyncPath(parent);
}

Status ExportArchiveToFd(Store& store, const std::vector<ExportItem>& images, ArchiveFormat format,
                         int fd) {
  if (format == ArchiveFormat::kOciDir) {
    return InvalidArgumentError("oci-dir can only be written to a directory, not a stream");
  }
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> writer, ImageWriter::ForTar(fd));
  const char* tmp = std::getenv("TMPDIR");
  fs::path temp_parent = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  return WriteArchive(store, images, format, *writer, temp_parent);
}

}  // namespace imgtool::store
