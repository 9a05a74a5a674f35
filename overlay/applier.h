// Unpacks one OCI layer blob (gzip, zstd or plain tar) into a directory, never
// writing outside it, and computes the blob digest and the diffID on the way.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "common/digest.h"
#include "common/error.h"
#include "overlay/compression.h"

namespace imgtool::overlay {

enum class WhiteoutMode {
  // The target is a snapshot dir used as an overlay lower: ".wh.NAME" becomes a
  // 0/0 char device NAME, ".wh..wh..opq" the xattr trusted.overlay.opaque=y
  // (user.overlay.opaque=y without root, for overlay mounts with "userxattr").
  kOverlay,
  // The target already holds the layers below (export): ".wh.NAME" deletes NAME,
  // ".wh..wh..opq" deletes what lower layers put in its directory; entries of
  // this layer stay, wherever the marker is in the tar.
  kFlatten,
};

struct ApplyOptions {
  WhiteoutMode whiteouts = WhiteoutMode::kOverlay;
  // When set, a blob or tar with another digest fails with DataLoss. Checked at
  // the end of the stream: on any error the caller must discard the target.
  std::optional<Digest> expected_digest;
  std::optional<Digest> expected_diff_id;
  // False when the caller verifies the blob's bytes itself (a pull that
  // applies a layer while the verified ingest writes it): no sha256 of the
  // compressed stream here, ApplyResult::digest stays empty, and
  // expected_digest must not be set.
  bool hash_blob = true;
  // Names the layer in errors; defaults to the expected digest.
  std::string description;
  // Acts as an unprivileged user even as root: no chown, no device nodes, no
  // trusted.* or security.* xattrs (rootless stores; tests of that path).
  bool unprivileged = false;
};

struct ApplyResult {
  Digest digest;         // sha256 of the blob as read
  int64_t size = 0;      // bytes of the blob
  Digest diff_id;        // sha256 of the uncompressed tar
  int64_t tar_size = 0;  // bytes of the uncompressed tar
  Compression compression = Compression::kNone;
  int64_t entries = 0;  // tar entries read
};

// Applies the layer read from `blob_fd` (not owned, read to its end) onto
// `target_dir`, which must exist. Refused, with an error naming the entry:
// absolute names, names with "..", hardlinks to paths that are missing or not
// inside the tree, whiteouts that name "." or "..". Symlinks are created as
// they are but every path is resolved inside the target, so a link that points
// out is never followed out. Without root, ownership and device nodes are
// skipped (debug log).
Result<ApplyResult> ApplyLayer(int blob_fd, const std::filesystem::path& target_dir,
                               const ApplyOptions& options = {});

// The cleaned relative path ("" for the root) that a tar entry name stands for,
// or InvalidArgument when the name is refused (see ApplyLayer).
Result<std::string> SanitizeEntryPath(std::string_view name);

}  // namespace imgtool::overlay
