// Layer compression: sniffing, streaming decompression and deterministic
// compressors (a pigz-style parallel gzip and multi-threaded zstd).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "common/byte_sink.h"
#include "common/digest.h"
#include "common/error.h"

namespace imgtool::overlay {

enum class Compression { kNone, kGzip, kZstd };

// "none", "gzip", "zstd".
std::string_view CompressionName(Compression compression);
// The OCI layer media type of a tar with this compression.
std::string_view LayerMediaType(Compression compression);

// Gzip (1f 8b) or zstd (28 b5 2f fd) by magic; anything else, including fewer
// bytes than a magic, is taken as a plain tar.
Compression DetectCompression(std::span<const uint8_t> head);

// Reads a stream that may be gzip (one or more members), zstd (one or more
// frames) or plain, and returns the plain bytes. A stream that ends inside a
// member or frame is DataLoss, corrupt data is DataLoss, bytes after the last
// member that are not another member are DataLoss.
class DecompressingReader {
 public:
  // Sniffs the compression from the first bytes of `fd` (not owned).
  static Result<DecompressingReader> Open(int fd);

  DecompressingReader(DecompressingReader&&) noexcept;
  DecompressingReader& operator=(DecompressingReader&&) noexcept;
  ~DecompressingReader();

  Compression compression() const { return compression_; }

  // Fills up to `size` bytes of `buf`; returns 0 only at the clean end of the stream.
  Result<size_t> Read(void* buf, size_t size);

  // Digest and size of the compressed bytes read from the fd so far; after Read
  // returned 0, of the whole stream.
  Digest FinishCompressedDigest() { return compressed_hasher_.Finish(); }
  // Reads from here on are not hashed (the caller verified the bytes itself):
  // FinishCompressedDigest then covers only what was read before.
  void StopHashingCompressed() { hash_compressed_ = false; }
  int64_t compressed_size() const { return compressed_size_; }

  class Codec;  // the gzip or zstd state, or none

 private:
  DecompressingReader(int fd, Compression compression, std::unique_ptr<Codec> codec);
  Status FillInput();

  int fd_;
  Compression compression_;
  std::unique_ptr<Codec> codec_;
  std::unique_ptr<uint8_t[]> in_buf_;
  size_t in_pos_ = 0;
  size_t in_end_ = 0;
  bool in_eof_ = false;
  Sha256Hasher compressed_hasher_;
  bool hash_compressed_ = true;
  int64_t compressed_size_ = 0;
};

// zlib's level 4 is the last of its fast levels before the lazy-matching ones
// get expensive: on a 100 MiB slice of a Debian rootfs it compresses 1.75x
// faster than level 6 for 2.3% more bytes (pigz -4: 39.3 MB in 1.59 s, -6:
// 38.4 MB in 2.78 s), which is what a build step's commit waits for.
inline constexpr int kDefaultGzipLevel = 4;

struct CompressOptions {
  Compression compression = Compression::kGzip;
  // -1 picks the algorithm's default: kDefaultGzipLevel for gzip, 3 for zstd.
  int level = -1;
  // Worker threads; 0 means one per core. The output never depends on it.
  int threads = 0;
};

// Compressors are sinks: write plain bytes in, call Finish() once, and the
// compressed stream has gone to the output sink.
class Compressor : public ByteSink {
 public:
  // Flushes everything and writes the trailer. Nothing may be written after.
  virtual Status Finish() = 0;
};

// Gzip output is a single member with no name, mtime 0, OS byte 255 (unknown),
// made of 128 KiB blocks each deflated with the previous 32 KiB as dictionary
// and ended by a sync flush, so blocks compress in parallel and the bytes are a
// function of (input, level) only. Zstd output has checksums on, no content
// size field and always uses the multi-threaded engine so that it does not
// depend on the worker count either.
Result<std::unique_ptr<Compressor>> NewCompressor(const CompressOptions& options, ByteSink& out);

// A sink that hashes and counts what passes through to the next sink.
class HashingSink final : public ByteSink {
 public:
  explicit HashingSink(ByteSink& next) : next_(next) {}
  Status Write(const void* data, size_t size) override {
    hasher_.Update(data, size);
    size_ += static_cast<int64_t>(size);
    return next_.Write(data, size);
  }
  Digest Finish() { return hasher_.Finish(); }
  int64_t size() const { return size_; }

 private:
  ByteSink& next_;
  Sha256Hasher hasher_;
  int64_t size_ = 0;
};

}  // namespace imgtool::overlay
