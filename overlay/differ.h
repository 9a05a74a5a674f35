// Turns a directory (an overlay upper dir, or a plain rootfs) into an OCI layer
// blob in one pass: tar bytes -> sha256 (diffID) -> compressor -> sha256 (digest)
// -> sink. The same tree and options always give the same bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "common/byte_sink.h"
#include "common/digest.h"
#include "common/error.h"
#include "overlay/compression.h"
#include "store/content_store.h"

namespace imgtool::overlay {

enum class WhiteoutSource {
  // An overlay upper dir: a 0/0 char device becomes ".wh.NAME", a directory with
  // trusted.overlay.opaque=y (or user.overlay.opaque=y) gets a ".wh..wh..opq" entry.
  kOverlayUpper,
  // A plain tree (import/export): devices are devices, no whiteouts are made.
  kPlainTree,
};

struct DiffOptions {
  Compression compression = Compression::kGzip;
  int level = -1;   // -1: the algorithm's default
  int threads = 0;  // compression workers; 0: one per core; never changes the output
  // Mtimes later than this (seconds) are clamped to it (SOURCE_DATE_EPOCH).
  std::optional<int64_t> source_date_epoch;
  WhiteoutSource whiteouts = WhiteoutSource::kOverlayUpper;
};

struct LayerInfo {
  Digest digest;     // of the compressed bytes (the blob)
  int64_t size = 0;  // of the blob
  Digest diff_id;    // of the uncompressed tar
  std::string media_type;
};

// Writes `dir` as a layer tar. Entries are in depth-first order with the names
// of each directory sorted bytewise, each directory right before its contents;
// there is no entry for `dir` itself. See differ.cc for the exact format.
Result<LayerInfo> WriteLayer(const std::filesystem::path& dir, ByteSink& out,
                             const DiffOptions& options);

// WriteLayer into a store ingest, which it commits: the blob's digest is the
// one the ingest computes as it writes, so the blob is hashed once, not twice.
Result<LayerInfo> WriteLayerToStore(const std::filesystem::path& dir, store::IngestWriter& writer,
                                    const DiffOptions& options);

// Compresses an existing tar (plain, or gzip/zstd which is decompressed first)
// from `tar_fd`, computing the diffID over the plain tar. Only compression and
// level/threads of `options` apply; the tar's entries are kept as they are.
Result<LayerInfo> CompressTarStream(int tar_fd, ByteSink& out, const DiffOptions& options);

}  // namespace imgtool::overlay
