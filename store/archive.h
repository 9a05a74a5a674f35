// Image archives in and out of the store: OCI layouts (as a tar, "oci-archive",
// or as a directory, "oci-dir") and docker-archive (what `docker save` writes:
// manifest.json, a config JSON and uncompressed layer tars).
//
// Import streams the archive once: blobs go straight into the content store
// (hashed while written, checked against their names), the few small JSON
// files are kept in memory. Nothing is tagged until the whole image graph has
// been checked, so a bad archive leaves no tag behind (only unreferenced blobs,
// which gc removes).
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/digest.h"
#include "common/error.h"
#include "store/oci_types.h"
#include "store/reference.h"
#include "store/store.h"

namespace imgtool::store {

enum class ArchiveFormat { kOciArchive, kDockerArchive, kOciDir };

// "oci-archive", "docker-archive", "oci-dir".
std::string_view ArchiveFormatName(ArchiveFormat format);
// The inverse of ArchiveFormatName; InvalidArgument names the accepted values.
Result<ArchiveFormat> ParseArchiveFormat(std::string_view text);

// One image found in an archive (several index.json entries or RepoTags that
// name the same manifest are one LoadedImage with several names).
struct LoadedImage {
  // The manifest (or image index) descriptor as stored; for docker-archive it
  // is a manifest that imgtool generated (OCI media types).
  Descriptor descriptor;
  // Full normalized references ("docker.io/library/busybox:latest") that
  // were tagged; empty for an image stored by digest only.
  std::vector<std::string> names;
  // Bare tags ("latest") the archive gave this image that could not become
  // names because no repository was given (ImportOptions::name).
  std::vector<std::string> unnamed_tags;
};

struct ImportOptions {
  // Names what the archive does not name fully: an OCI ref.name that is a bare
  // tag ("latest", as `skopeo copy ... oci-archive:f.tar:latest` writes)
  // becomes name:tag, and an image with no name at all becomes `name` itself.
  // Without it, such images are stored untagged.
  std::optional<Reference> name;
  // Limit for each JSON document read into memory (index.json, manifest.json,
  // configs, manifests).
  size_t max_json_size = 16u << 20;
  // Called once per image after the whole archive has been checked and before
  // any tag is set; an error stops the import with no tag set. The CLI
  // unpacks layers here so that a tagged image is always ready to run.
  std::function<Status(const LoadedImage&)> before_tag;
};

// Reads an oci-archive or docker-archive (optionally gzip/zstd/xz compressed as
// a whole) from `fd`, which may be a pipe.
Result<std::vector<LoadedImage>> ImportArchive(Store& store, int fd,
                                               const ImportOptions& options = {});
// Reads `path`: a directory is taken as an OCI layout (oci-dir), a file or
// anything else as an archive.
Result<std::vector<LoadedImage>> ImportArchivePath(Store& store, const std::filesystem::path& path,
                                                   const ImportOptions& options = {});

// One image to export and the name to record for it.
struct ExportItem {
  // Written as ref.name (OCI, full form) or in RepoTags (docker, familiar
  // form); nullopt exports the image without a name.
  std::optional<Reference> ref;
  // The single-platform image; exports always write that manifest, not the
  // multi-platform index it may have come from.
  ResolvedImage image;
};

// Writes the images to `output` (a file, or a directory for kOciDir) through a
// temporary sibling that is renamed into place when complete, so a failure
// leaves no partial output. Existing files are replaced; an existing non-empty
// directory is AlreadyExists.
//  - oci-archive: a deterministic tar (sorted names, mtime 0, owner 0:0, modes
//    0644/0755) of an OCI layout with only the blobs the images need and an
//    index.json with one entry per item.
//  - oci-dir: the same layout as a directory.
//  - docker-archive: manifest.json [{Config, RepoTags, Layers}], the config as
//    <hex>.json and every layer uncompressed as <diffID hex>.tar, so that the
//    config's diff_ids stay valid and docker/podman load accept it.
Status ExportArchive(Store& store, const std::vector<ExportItem>& images, ArchiveFormat format,
                     const std::filesystem::path& output);
// The same for archive formats into an open fd (e.g. stdout); the output is
// not atomic there. kOciDir is InvalidArgument.
Status ExportArchiveToFd(Store& store, const std::vector<ExportItem>& images, ArchiveFormat format,
                         int fd);

}  // namespace imgtool::store
