// The copy step: sources found in the build context (globs allowed) or in
// another stage's root, hashed for the cache key by content and the metadata
// they will get (never host mtimes or umask), and written into a rootfs with
// every destination path resolved inside it.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace imgtool::builder {

struct CopySource {
  std::string path;  // inside the source root, cleaned, "" = the root itself
  bool is_dir = false;
};

// Expands `patterns` (relative to the context, globs * ? [..]) into sources.
// A source, or a symlink on its way, that leads outside the context is
// InvalidArgument; a pattern that matches nothing is NotFound.
Result<std::vector<CopySource>> FindContextSources(const std::filesystem::path& context_dir,
                                                   const std::vector<std::string>& patterns);

// Expands `patterns` inside the tree at `root_fd` (another stage's rootfs),
// globs * ? [..] matched one path component at a time against the sorted
// entries of each directory, every directory opened inside the root (its
// symlinks resolve as if the root were "/"). `what` names the tree in errors.
// A pattern that matches nothing, or a plain path that is missing, is NotFound.
Result<std::vector<CopySource>> FindRootSources(int root_fd,
                                                const std::vector<std::string>& patterns,
                                                std::string_view what);

// Checks that `path` (relative to the context) resolves inside it, following
// symlinks as the host would.
Status CheckInsideContext(const std::filesystem::path& context_dir, std::string_view path);

struct CopyMetadata {
  std::optional<uid_t> uid;  // chown; else 0 (context) or the source's (stage)
  std::optional<gid_t> gid;
  std::optional<mode_t> mode;  // else normalized (context) or the source's (stage)
  bool from_context = true;
  int64_t mtime = 0;  // every copied file gets this mtime
};

// Parses "UID[:GID]" and "0755" as the recipe gives them.
Result<CopyMetadata> CopyMetadataFor(const std::string& chown, const std::string& mode,
                                     bool from_context, int64_t mtime);

// Feeds a description of the sources' content and the metadata they will get
// into `out` (one line per file), for the cache key.
Status HashSources(int root_fd, const std::vector<CopySource>& sources, const CopyMetadata& meta,
                   std::vector<std::pair<std::string, std::string>>* out);

// Copies the sources into the rootfs at `rootfs_fd`. `dest` is absolute
// (relative ones are joined to the workdir by the caller); with a trailing
// "/", several sources or a directory source it is a directory.
Status CopyInto(int source_root_fd, const std::vector<CopySource>& sources, int rootfs_fd,
                const std::string& dest, const CopyMetadata& meta);

}  // namespace imgtool::builder
