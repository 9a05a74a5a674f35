// load, save, import, export: images and root filesystems in and out as files.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "cli/context.h"
#include "cli/image_ref.h"
#include "cli/output.h"
#include "common/byte_sink.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/scope_guard.h"
#include "common/temp_dir.h"
#include "overlay/differ.h"
#include "overlay/flatten.h"
#include "overlay/unpacker.h"
#include "store/archive.h"

namespace imgtool::cli {

namespace {

namespace fs = std::filesystem;

bool IsStdio(const std::string& path) { return path == "-"; }

// SOURCE_DATE_EPOCH, when set: InvalidArgument unless it is a decimal number.
Result<std::optional<int64_t>> SourceDateEpoch() {
  const char* value = std::getenv("SOURCE_DATE_EPOCH");
  if (value == nullptr || *value == '\0') return std::optional<int64_t>();
  char* end = nullptr;
  errno = 0;
  long long parsed = std::strtoll(value, &end, 10);
  if (errno != 0 || *end != '\0' || parsed < 0) {
    return InvalidArgumentError(std::string("SOURCE_DATE_EPOCH=\"") + value +
                                "\": want seconds since 1970 as a decimal number");
  }
  return std::optional<int64_t>(parsed);
}

// Writes a file through a temporary sibling renamed into place on success, or
// straight to stdout for "-".
class OutputFile {
 public:
  static Result<OutputFile> Open(const std::string& path, std::string_view what) {
    OutputFile out;
    if (IsStdio(path)) {
      if (::isatty(STDOUT_FILENO)) {
        return InvalidArgumentError(std::string(what) +
                                    ": refusing to write a tar to a terminal; give -o FILE or "
                                    "redirect stdout");
      }
      out.fd_ = STDOUT_FILENO;
      return out;
    }
    out.path_ = path;
    fs::path parent = fs::path(path).parent_path();
    if (parent.empty()) parent = ".";
    out.temp_ = (parent / ("." + fs::path(path).filename().string() + ".tmp-XXXXXX")).string();
    int fd = ::mkostemp(out.temp_.data(), O_CLOEXEC);
    if (fd < 0)
      return ErrnoError(std::string(what) + ": create temporary file in " + parent.string());
    out.owned_.reset(fd);
    out.fd_ = fd;
    return out;
  }

  OutputFile(OutputFile&&) = default;
  OutputFile& operator=(OutputFile&&) = default;
  ~OutputFile() {
    if (!temp_.empty()) ::unlink(temp_.c_str());
  }

  int fd() const { return fd_; }

  Status Commit() {
    if (temp_.empty()) return OkStatus();
    if (::fchmod(fd_, 0644) != 0) return ErrnoError("chmod " + temp_);
    if (::fsync(fd_) != 0) return ErrnoError("fsync " + temp_);
    if (::rename(temp_.c_str(), path_.c_str()) != 0) return ErrnoError("rename to " + path_);
    temp_.clear();
    return OkStatus();
  }

 private:
  OutputFile() = default;
  std::string path_;
  std::string temp_;
  UniqueFd owned_;
  int fd_ = -1;
};

// --- load ---------------------------------------------------------------------

struct LoadOptions {
  std::string input;
  std::string name;
  bool quiet = false;
};

// Unpacks a loaded image before its names are set, so every name a load
// creates is ready to run.
Status UnpackLoaded(store::Store& store, overlay::Snapshotter& snapshotter,
                    const store::LoadedImage& loaded) {
  auto image = store.ResolveDescriptor(loaded.descriptor);
  if (!image) {
    if (image.error().code() == ErrorCode::kNotFound &&
        store::IsIndexMediaType(loaded.descriptor.media_type)) {
      // A multi-platform image without this host's platform is still worth
      // keeping (to save or push); there is nothing to unpack.
      LogWarning("image ", loaded.descriptor.digest.ToString(), ": ", image.error().ToString(),
                 "; not unpacked");
      return OkStatus();
    }
    return std::move(image).error();
  }
  auto chain_id = overlay::Unpack(store, snapshotter, image->manifest, image->config);
  if (!chain_id) return std::move(chain_id).error();
  LogInfo("unpacked ", loaded.descriptor.digest.ToString(), " to ", *chain_id);
  return OkStatus();
}

Result<int> RunLoad(const Context& context, const LoadOptions& options) {
  bool from_stdin = options.input.empty() || IsStdio(options.input);
  if (from_stdin && ::isatty(STDIN_FILENO)) {
    return InvalidArgumentError("load: no input: give -i FILE or pipe an archive to stdin");
  }
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(auto snapshotter, context.OpenSnapshotter());
  store::ImportOptions import;
  if (!options.name.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(store::Reference name,
                             store::ParseReference(options.name).Wrap("load: --name"));
    import.name = std::move(name);
  }
  import.before_tag = std::bind_front(&UnpackLoaded, std::ref(*store), std::ref(*snapshotter));
  Result<std::vector<store::LoadedImage>> loaded =
      from_stdin ? store::ImportArchive(*store, STDIN_FILENO, import)
                 : store::ImportArchivePath(*store, options.input, import);
  if (!loaded) return std::move(loaded).error().Wrap("load");
  std::string out;
  for (const store::LoadedImage& image : *loaded) {
    for (const std::string& tag : image.unnamed_tags) {
      LogWarning("image ", image.descriptor.digest.ToString(), " is tagged \"", tag,
                 "\" in the archive, without a repository; load it with --name REPOSITORY to "
                 "name it");
    }
    if (image.names.empty()) out += "Loaded image: " + image.descriptor.digest.ToString() + "\n";
    for (const std::string& name : image.names) out += "Loaded image: " + name + "\n";
  }
  if (!options.quiet) IMGTOOL_TRY(PrintOut(out));
  return 0;
}

// --- save ---------------------------------------------------------------------

struct SaveOptions {
  std::vector<std::string> images;
  std::string output;
  std::string format = "docker-archive";
};

Result<int> RunSave(const Context& context, const SaveOptions& options) {
  IMGTOOL_ASSIGN_OR_RETURN(store::ArchiveFormat format,
                           store::ParseArchiveFormat(options.format).Wrap("save: --format"));
  std::string output = options.output.empty() ? "-" : options.output;
  if (IsStdio(output) && format == store::ArchiveFormat::kOciDir) {
    return InvalidArgumentError("save: --format oci-dir needs -o DIRECTORY");
  }
  if (IsStdio(output) && ::isatty(STDOUT_FILENO)) {
    return InvalidArgumentError(
        "save: refusing to write an archive to a terminal; give -o FILE or redirect stdout");
  }
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  std::vector<store::ExportItem> items;
  for (const std::string& arg : options.images) {
    IMGTOOL_ASSIGN_OR_RETURN(FoundImage found, FindImage(*store, arg).Wrap("save " + arg));
    items.push_back(store::ExportItem{std::move(found.ref), std::move(found.image)});
  }
  if (IsStdio(output)) {
    IMGTOOL_TRY(store::ExportArchiveToFd(*store, items, format, STDOUT_FILENO).Wrap("save"));
  } else {
    IMGTOOL_TRY(store::ExportArchive(*store, items, format, output));
  }
  return 0;
}

// --- import -------------------------------------------------------------------

struct ImportOptions {
  std::string source;
  std::string name;
  std::string message;
};

Result<int> RunImport(const Context& context, const ImportOptions& options) {
  std::string where = "import " + options.source;
  std::optional<store::Reference> ref;
  if (!options.name.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(store::Reference parsed,
                             store::ParseReference(options.name).Wrap(where));
    if (parsed.digest()) {
      return InvalidArgumentError(where + ": name \"" + options.name +
                                  "\" can not contain a digest");
    }
    ref = std::move(parsed);
  }
  IMGTOOL_ASSIGN_OR_RETURN(std::optional<int64_t> epoch, SourceDateEpoch());
  if (IsStdio(options.source) && ::isatty(STDIN_FILENO)) {
    return InvalidArgumentError(where + ": no input: pipe a tar to stdin or give a file");
  }
  UniqueFd file;
  int fd = STDIN_FILENO;
  if (!IsStdio(options.source)) {
    IMGTOOL_ASSIGN_OR_RETURN(file, OpenFile(options.source, O_RDONLY).Wrap("import"));
    fd = file.get();
  }

  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lease, store->AcquireWriteLease());
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<store::IngestWriter> writer, store->content().Writer());
  overlay::DiffOptions diff;
  diff.compression = overlay::Compression::kGzip;
  IMGTOOL_ASSIGN_OR_RETURN(overlay::LayerInfo layer,
                           overlay::CompressTarStream(fd, *writer, diff).Wrap(where));
  IMGTOOL_TRY(writer->Commit(layer.size, layer.digest).Wrap(where));

  int64_t created_at = epoch ? *epoch
                             : std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
  std::string created = FormatRfc3339(created_at);
  store::Platform platform = store::HostPlatform();
  store::ImageConfig config;
  config.created = created;
  config.architecture = platform.architecture;
  config.os = platform.os;
  config.variant = platform.variant;
  config.config.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  config.rootfs.diff_ids = {layer.diff_id};
  store::HistoryEntry history;
  history.created = created;
  // The base name only: the same tar imported from two places is one image.
  history.created_by =
      "imgtool import " +
      (IsStdio(options.source) ? std::string("-") : fs::path(options.source).filename().string());
  history.comment = options.message;
  config.history.push_back(std::move(history));
  IMGTOOL_ASSIGN_OR_RETURN(
      store::Descriptor config_descriptor,
      store->WriteJsonBlob(store::media_type::kOciConfig, store::SerializeImageConfig(config)));

  store::Manifest manifest;
  manifest.media_type = std::string(store::media_type::kOciManifest);
  manifest.config = config_descriptor;
  store::Descriptor layer_descriptor;
  layer_descriptor.media_type = layer.media_type;
  layer_descriptor.digest = layer.digest;
  layer_descriptor.size = layer.size;
  manifest.layers.push_back(std::move(layer_descriptor));
  IMGTOOL_ASSIGN_OR_RETURN(
      store::Descriptor manifest_descriptor,
      store->WriteJsonBlob(store::media_type::kOciManifest, store::SerializeManifest(manifest)));
  if (ref) {
    IMGTOOL_TRY(store->index().Set(*ref, manifest_descriptor).Wrap(where));
  } else {
    IMGTOOL_TRY(store->index().AddUnnamed(manifest_descriptor).Wrap(where));
  }
  IMGTOOL_TRY(PrintOut(config_descriptor.digest.ToString() + "\n"));
  return 0;
}

// --- export -------------------------------------------------------------------

struct ExportOptions {
  std::string image;
  std::string output;
};

Result<int> RunExport(const Context& context, const ExportOptions& options) {
  std::string where = "export " + options.image;
  IMGTOOL_ASSIGN_OR_RETURN(std::optional<int64_t> epoch, SourceDateEpoch());
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(FoundImage found, FindImage(*store, options.image).Wrap(where));
  std::vector<UniqueFd> blobs;
  std::vector<int> fds;
  for (const store::Descriptor& layer : found.image.manifest.layers) {
    IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, store->content().OpenRaw(layer.digest).Wrap(where));
    fds.push_back(fd.get());
    blobs.push_back(std::move(fd));
  }
  std::error_code ec;
  fs::create_directories(context.ScratchRoot(), ec);
  if (ec) {
    return ErrnoError(where + ": create " + context.ScratchRoot().string(), ec.value());
  }
  IMGTOOL_ASSIGN_OR_RETURN(OutputFile out,
                           OutputFile::Open(options.output.empty() ? "-" : options.output, where));
  overlay::FlattenOptions flatten;
  flatten.scratch_dir = context.ScratchRoot();
  flatten.expected_diff_ids = found.image.config.rootfs.diff_ids;
  flatten.source_date_epoch = epoch;
  FdSink sink(out.fd());
  IMGTOOL_TRY(overlay::FlattenLayers(fds, sink, flatten).Wrap(where));
  IMGTOOL_TRY(out.Commit().Wrap(where));
  return 0;
}

}  // namespace

void RegisterArchiveCommands(CLI::App& app, const Context& context, CommandRegistry& registry) {
  {
    auto options = std::make_shared<LoadOptions>();
    CLI::App* cmd = app.add_subcommand(
        "load", "Load images from an oci-archive, docker-archive or OCI layout directory");
    cmd->add_option("-i,--input", options->input,
                    "Archive file or OCI layout directory (default: stdin)");
    cmd->add_option("--name", options->name,
                    "Name for images the archive names by tag only or not at all");
    cmd->add_flag("-q,--quiet", options->quiet, "Print nothing on success");
    registry.Set(cmd, [&context, options] { return RunLoad(context, *options); });
  }
  {
    auto options = std::make_shared<SaveOptions>();
    CLI::App* cmd = app.add_subcommand("save", "Write images to an archive");
    cmd->add_option("IMAGE", options->images, "Reference, ID or digest")->required();
    cmd->add_option("-o,--output", options->output,
                    "Output file (directory for oci-dir); \"-\" or none: stdout");
    cmd->add_option("--format", options->format, "docker-archive (default), oci-archive or oci-dir")
        ->check(CLI::IsMember({"docker-archive", "oci-archive", "oci-dir"}));
    registry.Set(cmd, [&context, options] { return RunSave(context, *options); });
  }
  {
    auto options = std::make_shared<ImportOptions>();
    CLI::App* cmd =
        app.add_subcommand("import", "Make a one-layer image from a root filesystem tar");
    cmd->add_option("SOURCE", options->source, "Tar file, plain or compressed; \"-\" for stdin")
        ->required();
    cmd->add_option("NAME", options->name, "NAME[:TAG] to give the image");
    cmd->add_option("-m,--message", options->message, "Comment for the history entry");
    registry.Set(cmd, [&context, options] { return RunImport(context, *options); });
  }
  {
    auto options = std::make_shared<ExportOptions>();
    CLI::App* cmd =
        app.add_subcommand("export", "Write an image's flattened root filesystem as a tar");
    cmd->add_option("IMAGE", options->image, "Reference, ID or digest")->required();
    cmd->add_option("-o,--output", options->output, "Output file; \"-\" or none: stdout");
    registry.Set(cmd, [&context, options] { return RunExport(context, *options); });
  }
}

}  // namespace imgtool::cli
