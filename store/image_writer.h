// Writes a small tree of files (an OCI layout, a docker-archive) either as a
// deterministic tar or into a directory, so that one exporter serves
// oci-archive, docker-archive and oci-dir.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>

#include "common/byte_sink.h"
#include "common/error.h"

namespace imgtool::store {

class ImageWriter {
 public:
  // Produces a file's bytes into the sink it is given.
  using Producer = std::function<Status(ByteSink&)>;

  virtual ~ImageWriter() = default;

  // A tar on `fd` (not owned): entries in the order added, mtime 0, owner
  // 0:0 without names, mode 0755 for directories and 0644 for files, ustar
  // headers (pax only for names that need it). Callers add entries sorted.
  static Result<std::unique_ptr<ImageWriter>> ForTar(int fd);
  // Files created inside the existing directory `dir`, each fsynced.
  static Result<std::unique_ptr<ImageWriter>> ForDirectory(const std::filesystem::path& dir);

  // `name` is relative, "/"-separated, without "." or ".." components.
  virtual Status AddDirectory(std::string_view name) = 0;
  // The producer must write exactly `size` bytes; fewer or more is Internal.
  virtual Status AddFile(std::string_view name, int64_t size, const Producer& produce) = 0;
  Status AddFile(std::string_view name, std::string_view data);
  // Ends the tar (trailer blocks) or syncs the directory.
  virtual Status Finish() = 0;
};

}  // namespace imgtool::store
