// Path resolution confined to a root directory, for every path that comes from
// an untrusted tree (a layer tar, a rootfs, a recipe). Symlinks are resolved as
// if the root were "/", and ".." never climbs above it: openat2 with
// RESOLVE_IN_ROOT where the kernel has it, a checked component walk otherwise.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/error.h"
#include "common/unique_fd.h"

namespace imgtool {

// Opens `path` inside the tree at `root_fd`. A leading "/" means the root.
// O_CLOEXEC is always added. Magic links (/proc/self/fd/...) are refused.
Result<UniqueFd> SafeOpenAt(int root_fd, std::string_view path, int flags, mode_t mode = 0);

struct ParentDir {
  UniqueFd fd;       // the directory that holds the last component
  std::string name;  // the last component, never "", "." or ".."
};

// Opens the directory that holds `path` (resolved inside the root) so that the
// caller can create, replace or remove the last component with *at() calls
// without following it. The root itself has no parent: InvalidArgument.
Result<ParentDir> SafeOpenParent(int root_fd, std::string_view path);

// Creates every missing directory of `path` inside the root with `mode`, and
// returns the last one opened (O_DIRECTORY). Existing symlinks along the way are
// resolved inside the root; a non-directory in the way is an error.
Result<UniqueFd> SafeMkdirAll(int root_fd, std::string_view path, mode_t mode);

// Lexically cleans a relative path inside a tree: strips leading "/" and "./",
// collapses "//" and "." and applies "..". A ".." that would climb above the top
// is InvalidArgument. The top itself is returned as "".
Result<std::string> CleanPathInRoot(std::string_view path);

// Tests use this to exercise the fallback walk on kernels that have openat2.
void SetSafePathFallbackForTesting(bool force_fallback);

}  // namespace imgtool
