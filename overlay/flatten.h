// Squashes an image's layers into one plain rootfs tar (imgtool export).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

#include "common/byte_sink.h"
#include "common/digest.h"
#include "common/error.h"

namespace imgtool::overlay {

struct FlattenOptions {
  // A temporary tree is built under this directory and removed afterwards; it
  // needs room for the whole unpacked image.
  std::filesystem::path scratch_dir;
  // When not empty, one per layer (bottom first): each layer's tar must match.
  std::vector<Digest> expected_diff_ids;
  // Clamps mtimes in the output, as for WriteLayer.
  std::optional<int64_t> source_date_epoch;
};

// Applies the layers in `blob_fds` (bottom first; not owned, each read to its
// end) with whiteouts resolved, then writes the result to `out` as one
// uncompressed tar with no whiteouts. Without root, owners in the output are
// those of the caller (the unpacked tree cannot hold others).
Status FlattenLayers(const std::vector<int>& blob_fds, ByteSink& out,
                     const FlattenOptions& options);

}  // namespace imgtool::overlay
