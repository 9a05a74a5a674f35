#include "overlay/compression.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "common/file_util.h"
#include "common/log.h"

namespace imgtool::overlay {

namespace {

constexpr size_t kInputBufferSize = 256 * 1024;
constexpr uint8_t kGzipMagic[] = {0x1f, 0x8b};
constexpr uint8_t kZstdMagic[] = {0x28, 0xb5, 0x2f, 0xfd};

// Pigz's block size: big enough that the per-block sync marker and dictionary
// reset cost well under 1% of ratio, small enough for parallelism on small layers.
constexpr size_t kGzipBlockSize = 128 * 1024;
constexpr size_t kDeflateWindow = 32 * 1024;

int EffectiveThreads(int threads) {
  if (threads > 0) return threads;
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace

std::string_view CompressionName(Compression compression) {
  switch (compression) {
    case Compression::kNone:
      return "none";
    case Compression::kGzip:
      return "gzip";
    case Compression::kZstd:
      return "zstd";
  }
  return "unknown";
}

std::string_view LayerMediaType(Compression compression) {
  switch (compression) {
    case Compression::kNone:
      return "application/vnd.oci.image.layer.v1.tar";
    case Compression::kGzip:
      return "application/vnd.oci.image.layer.v1.tar+gzip";
    case Compression::kZstd:
      return "application/vnd.oci.image.layer.v1.tar+zstd";
  }
  return "";
}

Compression DetectCompression(std::span<const uint8_t> head) {
  if (head.size() >= sizeof(kGzipMagic) &&
      std::memcmp(head.data(), kGzipMagic, sizeof(kGzipMagic)) == 0) {
    return Compression::kGzip;
  }
  if (head.size() >= sizeof(kZstdMagic) &&
      std::memcmp(head.data(), kZstdMagic, sizeof(kZstdMagic)) == 0) {
    return Compression::kZstd;
  }
  return Compression::kNone;
}

// ---------------------------------------------------------------------------
// Decompression

class DecompressingReader::Codec {
 public:
  struct Step {
    size_t consumed = 0;
    size_t produced = 0;
  };
  virtual ~Codec() = default;
  virtual Result<Step> Run(const uint8_t* in, size_t in_size, uint8_t* out, size_t out_size) = 0;
  // Called when the input has ended and Run makes no more progress.
  virtual Status Finish() = 0;
};

namespace {

class GzipCodec final : public DecompressingReader::Codec {
 public:
  static Result<std::unique_ptr<GzipCodec>> Create() {
    auto codec = std::unique_ptr<GzipCodec>(new GzipCodec());
    // 16 + MAX_WBITS: gzip framing only; a zlib or raw stream is corrupt data here.
    if (inflateInit2(&codec->stream_, 16 + MAX_WBITS) != Z_OK) {
      return InternalError("gzip: inflateInit2 failed");
    }
    codec->initialized_ = true;
    return codec;
  }
  ~GzipCodec() override {
    if (initialized_) inflateEnd(&stream_);
  }

  Result<Step> Run(const uint8_t* in, size_t in_size, uint8_t* out, size_t out_size) override {
    if (!in_member_) {
      if (in_size == 0) return Step{};
      // Another member follows: gzip streams may be concatenated (RFC 1952 2.2).
      if (inflateReset(&stream_) != Z_OK) return InternalError("gzip: inflateReset failed");
      in_member_ = true;
    }
    stream_.next_in = const_cast<Bytef*>(in);
    stream_.avail_in = static_cast<uInt>(std::min<size_t>(in_size, UINT32_MAX));
    stream_.next_out = out;
    stream_.avail_out = static_cast<uInt>(std::min<size_t>(out_size, UINT32_MAX));
    uInt avail_in_before = stream_.avail_in;
    uInt avail_out_before = stream_.avail_out;
    int ret = inflate(&stream_, Z_NO_FLUSH);
    Step step{avail_in_before - stream_.avail_in, avail_out_before - stream_.avail_out};
    switch (ret) {
      case Z_STREAM_END:
        in_member_ = false;
        ++members_;
        return step;
      case Z_OK:
      case Z_BUF_ERROR:  // no progress possible with this input; the caller brings more
        return step;
      default: {
        std::string what = stream_.msg != nullptr ? stream_.msg : "corrupt data";
        if (members_ > 0) {
          return DataLossError(
              StrCat("gzip: data after member ", members_, " is not a gzip member: ", what));
        }
        return DataLossError("gzip: " + what);
      }
    }
  }

  Status Finish() override {
    if (in_member_) return DataLossError("gzip: stream truncated (ends inside a member)");
    if (members_ == 0) return DataLossError("gzip: stream is empty");
    return OkStatus();
  }

 private:
  GzipCodec() { std::memset(&stream_, 0, sizeof(stream_)); }
  z_stream stream_;
  bool initialized_ = false;
  bool in_member_ = false;
  int members_ = 0;
};

class ZstdCodec final : public DecompressingReader::Codec {
 public:
  static Result<std::unique_ptr<ZstdCodec>> Create() {
    auto codec = std::unique_ptr<ZstdCodec>(new ZstdCodec());
    codec->ctx_ = ZSTD_createDCtx();
    if (codec->ctx_ == nullptr) return InternalError("zstd: cannot create decompression context");
    return codec;
  }
  ~ZstdCodec() override { ZSTD_freeDCtx(ctx_); }

  Result<Step> Run(const uint8_t* in, size_t in_size, uint8_t* out, size_t out_size) override {
    ZSTD_inBuffer input{in, in_size, 0};
    ZSTD_outBuffer output{out, out_size, 0};
    size_t ret = ZSTD_decompressStream(ctx_, &output, &input);
    if (ZSTD_isError(ret)) return DataLossError(StrCat("zstd: ", ZSTD_getErrorName(ret)));
    // 0 means a frame ended and everything it holds has been flushed. A call
    // that moved nothing says nothing: past the end it hints at the next frame.
    if (input.pos > 0 || output.pos > 0) frame_open_ = ret != 0;
    any_input_ = any_input_ || input.pos > 0;
    return Step{input.pos, output.pos};
  }

  Status Finish() override {
    if (frame_open_) return DataLossError("zstd: stream truncated (ends inside a frame)");
    if (!any_input_) return DataLossError("zstd: stream is empty");
    return OkStatus();
  }

 private:
  ZstdCodec() = default;
  ZSTD_DCtx* ctx_ = nullptr;
  bool frame_open_ = false;
  bool any_input_ = false;
};

}  // namespace

DecompressingReader::DecompressingReader(int fd, Compression compression,
                                         std::unique_ptr<Codec> codec)
    : fd_(fd),
      compression_(compression),
      codec_(std::move(codec)),
      in_buf_(new uint8_t[kInputBufferSize]) {}

DecompressingReader::DecompressingReader(DecompressingReader&&) noexcept = default;
DecompressingReader& DecompressingReader::operator=(DecompressingReader&&) noexcept = default;
DecompressingReader::~DecompressingReader() = default;

Result<DecompressingReader> DecompressingReader::Open(int fd) {
  // Sequential reads of a whole blob: let the kernel read ahead aggressively.
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  uint8_t head[sizeof(kZstdMagic)];
  IMGTOOL_ASSIGN_OR_RETURN(size_t n, ReadFull(fd, head, sizeof(head)));
  Compression compression = DetectCompression(std::span<const uint8_t>(head, n));
  std::unique_ptr<Codec> codec;
  if (compression == Compression::kGzip) {
    IMGTOOL_ASSIGN_OR_RETURN(codec, GzipCodec::Create());
  } else if (compression == Compression::kZstd) {
    IMGTOOL_ASSIGN_OR_RETURN(codec, ZstdCodec::Create());
  }
  DecompressingReader reader(fd, compression, std::move(codec));
  std::memcpy(reader.in_buf_.get(), head, n);
  reader.in_end_ = n;
  reader.in_eof_ = n < sizeof(head);
  reader.compressed_hasher_.Update(head, n);
  reader.compressed_size_ = static_cast<int64_t>(n);
  return reader;
}

Status DecompressingReader::FillInput() {
  while (true) {
    ssize_t n = ::read(fd_, in_buf_.get(), kInputBufferSize);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read layer blob");
    }
    in_pos_ = 0;
    in_end_ = static_cast<size_t>(n);
    in_eof_ = n == 0;
    if (hash_compressed_) compressed_hasher_.Update(in_buf_.get(), in_end_);
    compressed_size_ += n;
    return OkStatus();
  }
}

Result<size_t> DecompressingReader::Read(void* buf, size_t size) {
  uint8_t* out = static_cast<uint8_t*>(buf);
  if (codec_ == nullptr) {
    // Plain stream: hand out the sniffed bytes, then read straight into the caller's buffer.
    if (in_pos_ < in_end_) {
      size_t n = std::min(size, in_end_ - in_pos_);
      std::memcpy(out, in_buf_.get() + in_pos_, n);
      in_pos_ += n;
      return n;
    }
    if (in_eof_) return size_t{0};
    while (true) {
      ssize_t n = ::read(fd_, out, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("read layer blob");
      }
      if (n == 0) in_eof_ = true;
      if (hash_compressed_) compressed_hasher_.Update(out, static_cast<size_t>(n));
      compressed_size_ += n;
      return static_cast<size_t>(n);
    }
  }

  size_t produced = 0;
  while (produced < size) {
    if (in_pos_ == in_end_ && !in_eof_) IMGTOOL_TRY(FillInput());
    IMGTOOL_ASSIGN_OR_RETURN(
        Codec::Step step,
        codec_->Run(in_buf_.get() + in_pos_, in_end_ - in_pos_, out + produced, size - produced));
    in_pos_ += step.consumed;
    produced += step.produced;
    if (step.consumed == 0 && step.produced == 0) {
      if (in_pos_ < in_end_) {
        return DataLossError(
            StrCat(CompressionName(compression_), ": decompressor stalled on corrupt input"));
      }
      if (in_eof_) {
        IMGTOOL_TRY(codec_->Finish());
        break;
      }
    }
  }
  return produced;
}

// ---------------------------------------------------------------------------
// Compression

namespace {

class NoneCompressor final : public Compressor {
 public:
  explicit NoneCompressor(ByteSink& out) : out_(out) {}
  Status Write(const void* data, size_t size) override { return out_.Write(data, size); }
  Status Finish() override { return OkStatus(); }

 private:
  ByteSink& out_;
};

// One raw-deflate engine, reused block after block by one thread.
class DeflateEngine {
 public:
  explicit DeflateEngine(int level) {
    std::memset(&stream_, 0, sizeof(stream_));
    ok_ = deflateInit2(&stream_, level, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK;
  }
  ~DeflateEngine() {
    if (ok_) deflateEnd(&stream_);
  }
  DeflateEngine(const DeflateEngine&) = delete;
  DeflateEngine& operator=(const DeflateEngine&) = delete;

  // Deflates `input` primed with the tail of `previous`; the last block ends the
  // deflate stream, the others end with a sync flush (byte-aligned, not final)
  // so that the blocks concatenate into one valid stream.
  Status Deflate(const std::vector<uint8_t>& input, const std::vector<uint8_t>* previous, bool last,
                 std::vector<uint8_t>* output) {
    if (!ok_) return InternalError("gzip: deflateInit2 failed");
    if (deflateReset(&stream_) != Z_OK) return InternalError("gzip: deflateReset failed");
    if (previous != nullptr && !previous->empty()) {
      size_t n = std::min(kDeflateWindow, previous->size());
      if (deflateSetDictionary(&stream_, previous->data() + previous->size() - n,
                               static_cast<uInt>(n)) != Z_OK) {
        return InternalError("gzip: deflateSetDictionary failed");
      }
    }
    stream_.next_in = const_cast<Bytef*>(input.data());
    stream_.avail_in = static_cast<uInt>(input.size());
    output->resize(deflateBound(&stream_, input.size()) + 64);
    size_t produced = 0;
    int flush = last ? Z_FINISH : Z_SYNC_FLUSH;
    while (true) {
      stream_.next_out = output->data() + produced;
      stream_.avail_out = static_cast<uInt>(output->size() - produced);
      int ret = deflate(&stream_, flush);
      produced = output->size() - stream_.avail_out;
      if (ret == Z_STREAM_ERROR) return InternalError("gzip: deflate failed");
      bool complete = last ? ret == Z_STREAM_END : stream_.avail_out != 0;
      if (complete) break;
      output->resize(output->size() * 2);
    }
    output->resize(produced);
    return OkStatus();
  }

 private:
  z_stream stream_;
  bool ok_ = false;
};

// Deciding per block, from its content alone, that deflate would not pay:
// deflating incompressible data (random bytes, already compressed files) is
// the slowest thing deflate does (about 25 MB/s per core at level 4) and gains
// nothing, so such blocks are copied into stored blocks instead. The decision
// is a pure function of the block and its dictionary, in integer arithmetic,
// so the output still depends only on (input, level). Small blocks are always
// deflated: the probe is not worth it and the tail of every tar (its end
// marker) stays as zlib would write it.
constexpr size_t kMinProbedBlock = 4096;

// Order-0 test: the byte histogram is close to uniform. With n bytes and
// counts c, chi2 = (256 * sum(c^2) - n^2) / n; random data gives about 255 at
// any n. Huffman coding could save at most about chi2 / (11 n) of the size;
// below n / 8 that is under 1.2%, which deflate's whole-bit code lengths do not
// realise on a near-uniform histogram.
bool HistogramLooksUniform(const uint8_t* data, size_t n) {
  uint32_t counts[4][256] = {};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++counts[0][data[i]];
    ++counts[1][data[i + 1]];
    ++counts[2][data[i + 2]];
    ++counts[3][data[i + 3]];
  }
  for (; i < n; ++i) ++counts[0][data[i]];
  uint64_t sum_squares = 0;
  for (int b = 0; b < 256; ++b) {
    uint64_t c = uint64_t{counts[0][b]} + counts[1][b] + counts[2][b] + counts[3][b];
    sum_squares += c * c;
  }
  const uint64_t total = n;
  uint64_t scaled = 256 * sum_squares - total * total;  // >= 0 by Cauchy-Schwarz
  return scaled < total * total / 8;                   // chi2 < n / 8
}

uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// LZ test: few 4-byte sequences of the block occur earlier within deflate's
// window (the dictionary included). Every position is remembered in a small
// hash table and every 4th one is looked up, so any repeat of 7 bytes or more
// is seen; a hit is verified, so random data almost never hits.
bool FewRepeats(const uint8_t* data, size_t n, const uint8_t* dict, size_t dict_size) {
  constexpr int kHashBits = 13;
  thread_local std::vector<uint8_t> joined;
  thread_local std::vector<uint32_t> table;
  joined.assign(dict, dict + dict_size);
  joined.insert(joined.end(), data, data + n);
  table.assign(size_t{1} << kHashBits, UINT32_MAX);
  const uint8_t* p = joined.data();
  const size_t end = joined.size() - 3;  // positions with 4 bytes
  auto hash = [](uint32_t v) { return (v * 2654435761u) >> (32 - kHashBits); };
  size_t pos = 0;
  for (; pos < dict_size && pos < end; ++pos) table[hash(Load32(p + pos))] = static_cast<uint32_t>(pos);
  const size_t limit = n / 64;  // repeats covering over ~6% of the block: deflate
  size_t repeated = 0;
  while (pos < end) {
    uint32_t v = Load32(p + pos);
    uint32_t& slot = table[hash(v)];
    uint32_t candidate = slot;
    slot = static_cast<uint32_t>(pos);
    if (candidate != UINT32_MAX && pos - candidate <= kDeflateWindow &&
        Load32(p + candidate) == v && ++repeated > limit) {
      return false;
    }
    for (size_t k = 1; k < 4 && pos + k < end; ++k) {
      table[hash(Load32(p + pos + k))] = static_cast<uint32_t>(pos + k);
    }
    pos += 4;
  }
  return true;
}

bool LooksIncompressible(const std::vector<uint8_t>& input, const std::vector<uint8_t>* previous) {
  if (input.size() < kMinProbedBlock) return false;
  if (!HistogramLooksUniform(input.data(), input.size())) return false;
  const uint8_t* dict = nullptr;
  size_t dict_size = 0;
  if (previous != nullptr && !previous->empty()) {
    dict_size = std::min(kDeflateWindow, previous->size());
    dict = previous->data() + previous->size() - dict_size;
  }
  return FewRepeats(input.data(), input.size(), dict, dict_size);
}

// The block as deflate stored blocks (at most 65535 bytes each, RFC 1951
// 3.2.4). Every block of ours starts on a byte boundary (the one before ended
// with a sync flush or was stored), so each stored block is its header byte
// (BFINAL, BTYPE 00, padding), LEN and NLEN, then the bytes.
void StoreBlock(const std::vector<uint8_t>& input, bool last, std::vector<uint8_t>* output) {
  constexpr size_t kMaxStored = 65535;
  size_t blocks = (input.size() + kMaxStored - 1) / kMaxStored;
  output->clear();
  output->reserve(input.size() + 5 * blocks);
  for (size_t offset = 0; offset < input.size(); offset += kMaxStored) {
    size_t len = std::min(kMaxStored, input.size() - offset);
    bool final_block = last && offset + len == input.size();
    const uint8_t header[5] = {static_cast<uint8_t>(final_block ? 1 : 0),
                               static_cast<uint8_t>(len), static_cast<uint8_t>(len >> 8),
                               static_cast<uint8_t>(~len), static_cast<uint8_t>(~len >> 8)};
    output->insert(output->end(), header, header + sizeof(header));
    output->insert(output->end(), input.begin() + static_cast<ptrdiff_t>(offset),
                   input.begin() + static_cast<ptrdiff_t>(offset + len));
  }
}

struct GzipJob {
  std::shared_ptr<const std::vector<uint8_t>> input;
  std::shared_ptr<const std::vector<uint8_t>> previous;
  bool last = false;
  std::vector<uint8_t> output;
  uint32_t crc = 0;
  Status status;
  bool done = false;
};

void RunGzipJob(DeflateEngine& engine, GzipJob& job) {
  if (LooksIncompressible(*job.input, job.previous.get())) {
    StoreBlock(*job.input, job.last, &job.output);
  } else {
    job.status = engine.Deflate(*job.input, job.previous.get(), job.last, &job.output);
  }
  job.crc =
      static_cast<uint32_t>(crc32(0, job.input->data(), static_cast<uInt>(job.input->size())));
}

// With more than one thread: workers deflate (or store) blocks in any order,
// and an emitter thread writes them in order (crc combine, then the output
// sink, which for a build step hashes and writes the blob), so the caller's
// thread only produces the tar and the blob side runs beside it.
class GzipCompressor final : public Compressor {
 public:
  GzipCompressor(ByteSink& out, int level, int threads)
      : out_(out), level_(level), threads_(threads) {
    current_ = NewBlock();
    if (threads_ <= 1) {
      inline_engine_ = std::make_unique<DeflateEngine>(level_);
    } else {
      for (int i = 0; i < threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
      emitter_ = std::thread([this] { EmitterLoop(); });
    }
  }

  ~GzipCompressor() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    done_cv_.notify_all();
    if (emitter_.joinable()) emitter_.join();
    for (std::thread& t : workers_) t.join();
  }

  Status WriteHeader() {
    // No FNAME, no FEXTRA, MTIME 0, OS 255: nothing about the machine or the moment.
    uint8_t xfl = level_ == 9 ? 2 : (level_ == 1 ? 4 : 0);
    const uint8_t header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff};
    return out_.Write(header, sizeof(header));
  }

  Status Write(const void* data, size_t size) override {
    if (finished_) return FailedPreconditionError("gzip: write after finish");
    const uint8_t* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
      size_t n = std::min(size, kGzipBlockSize - current_->size());
      current_->insert(current_->end(), p, p + n);
      p += n;
      size -= n;
      if (current_->size() == kGzipBlockSize) IMGTOOL_TRY(Submit(false));
    }
    return OkStatus();
  }

  Status Finish() override {
    if (finished_) return FailedPreconditionError("gzip: finished twice");
    finished_ = true;
    // The final block may be empty; it still carries the end-of-stream marker.
    IMGTOOL_TRY(Submit(true));
    if (inline_engine_ == nullptr) {
      std::unique_lock<std::mutex> lock(mu_);
      space_cv_.wait(lock, [&] { return inflight_.empty(); });
      IMGTOOL_TRY(emit_status_);
    }
    // The emitter is idle now (nothing in flight), so this thread may write.
    uint8_t trailer[8];
    for (int i = 0; i < 4; ++i) {
      trailer[i] = static_cast<uint8_t>(crc_ >> (8 * i));
      trailer[4 + i] = static_cast<uint8_t>(total_in_ >> (8 * i));
    }
    return out_.Write(trailer, sizeof(trailer));
  }

 private:
  static std::shared_ptr<std::vector<uint8_t>> NewBlock() {
    auto block = std::make_shared<std::vector<uint8_t>>();
    block->reserve(kGzipBlockSize);
    return block;
  }

  Status Submit(bool last) {
    auto job = std::make_shared<GzipJob>();
    job->input = current_;
    job->previous = previous_;
    job->last = last;
    previous_ = std::move(current_);
    current_ = NewBlock();
    if (inline_engine_ != nullptr) {
      RunGzipJob(*inline_engine_, *job);
      IMGTOOL_TRY(job->status);
      return Emit(*job);
    }
    // Up to 8 blocks per worker in flight (about 2 MiB each way per worker), so
    // the workers stay busy while this thread is descheduled; beyond that, wait
    // for the emitter, so memory stays bounded whatever the input size.
    std::unique_lock<std::mutex> lock(mu_);
    space_cv_.wait(lock, [&] {
      return !emit_status_.has_value() || inflight_.size() < static_cast<size_t>(threads_) * 8;
    });
    IMGTOOL_TRY(emit_status_);
    queue_.push_back(job);
    inflight_.push_back(std::move(job));
    lock.unlock();
    work_cv_.notify_one();
    return OkStatus();
  }

  // Appends one finished block to the stream.
  Status Emit(const GzipJob& job) {
    crc_ = static_cast<uint32_t>(
        crc32_combine(crc_, job.crc, static_cast<z_off_t>(job.input->size())));
    total_in_ += job.input->size();
    return out_.Write(job.output.data(), job.output.size());
  }

  void EmitterLoop() {
    while (true) {
      std::shared_ptr<GzipJob> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        done_cv_.wait(lock, [&] {
          return stopping_ || (!inflight_.empty() && inflight_.front()->done);
        });
        if (stopping_) return;  // destroyed before Finish: nothing more is written
        job = inflight_.front();
      }
      // The first error stops the output; later blocks are only dropped.
      Status status = emit_failed_ ? OkStatus() : job->status;
      if (!emit_failed_ && status.has_value()) status = Emit(*job);
      {
        std::lock_guard<std::mutex> lock(mu_);
        inflight_.pop_front();
        if (!status.has_value() && emit_status_.has_value()) {
          emit_status_ = std::move(status);
          emit_failed_ = true;
        }
      }
      space_cv_.notify_all();
    }
  }

  void WorkerLoop() {
    DeflateEngine engine(level_);
    while (true) {
      std::shared_ptr<GzipJob> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      RunGzipJob(engine, *job);
      {
        std::lock_guard<std::mutex> lock(mu_);
        job->done = true;
      }
      done_cv_.notify_all();
    }
  }

  ByteSink& out_;
  const int level_;
  const int threads_;
  std::shared_ptr<std::vector<uint8_t>> current_;
  std::shared_ptr<std::vector<uint8_t>> previous_;
  std::unique_ptr<DeflateEngine> inline_engine_;
  // Written by the emitter (or inline), read by Finish once nothing is in flight.
  uint32_t crc_ = 0;
  uint64_t total_in_ = 0;
  bool emit_failed_ = false;  // emitter thread only
  bool finished_ = false;

  std::mutex mu_;
  std::condition_variable work_cv_;   // workers: a job was queued
  std::condition_variable done_cv_;   // emitter: a job is done
  std::condition_variable space_cv_;  // writer: a job was emitted
  std::deque<std::shared_ptr<GzipJob>> queue_;     // waiting for a worker
  std::deque<std::shared_ptr<GzipJob>> inflight_;  // submission order, until emitted
  Status emit_status_;                             // the emitter's first error
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  std::thread emitter_;
};

class ZstdCompressor final : public Compressor {
 public:
  ZstdCompressor(ByteSink& out, ZSTD_CCtx* ctx)
      : out_(out), ctx_(ctx), buffer_(ZSTD_CStreamOutSize()) {}
  ~ZstdCompressor() override { ZSTD_freeCCtx(ctx_); }

  Status Write(const void* data, size_t size) override {
    ZSTD_inBuffer in{data, size, 0};
    while (in.pos < in.size) IMGTOOL_TRY(Step(&in, ZSTD_e_continue));
    return OkStatus();
  }

  Status Finish() override {
    ZSTD_inBuffer in{nullptr, 0, 0};
    while (true) {
      IMGTOOL_ASSIGN_OR_RETURN(size_t remaining, Step(&in, ZSTD_e_end));
      if (remaining == 0) return OkStatus();
    }
  }

 private:
  Result<size_t> Step(ZSTD_inBuffer* in, ZSTD_EndDirective directive) {
    ZSTD_outBuffer out{buffer_.data(), buffer_.size(), 0};
    size_t ret = ZSTD_compressStream2(ctx_, &out, in, directive);
    if (ZSTD_isError(ret)) return InternalError(StrCat("zstd: ", ZSTD_getErrorName(ret)));
    if (out.pos > 0) IMGTOOL_TRY(out_.Write(buffer_.data(), out.pos));
    return ret;
  }

  ByteSink& out_;
  ZSTD_CCtx* ctx_;
  std::vector<uint8_t> buffer_;
};

Status SetZstdParameter(ZSTD_CCtx* ctx, ZSTD_cParameter param, int value, const char* name) {
  size_t ret = ZSTD_CCtx_setParameter(ctx, param, value);
  if (ZSTD_isError(ret)) {
    return InvalidArgumentError(StrCat("zstd: ", name, "=", value, ": ", ZSTD_getErrorName(ret)));
  }
  return OkStatus();
}

Result<std::unique_ptr<Compressor>> NewZstdCompressor(const CompressOptions& options,
                                                      ByteSink& out) {
  int level = options.level < 0 ? 3 : options.level;
  if (level < 1 || level > ZSTD_maxCLevel()) {
    return InvalidArgumentError(
        StrCat("zstd level ", level, " is out of range 1..", ZSTD_maxCLevel()));
  }
  ZSTD_CCtx* ctx = ZSTD_createCCtx();
  if (ctx == nullptr) return InternalError("zstd: cannot create compression context");
  auto compressor = std::make_unique<ZstdCompressor>(out, ctx);
  IMGTOOL_TRY(SetZstdParameter(ctx, ZSTD_c_compressionLevel, level, "level"));
  IMGTOOL_TRY(SetZstdParameter(ctx, ZSTD_c_checksumFlag, 1, "checksum"));
  // Streaming input makes the frame header's content size appear only when the
  // whole input happened to arrive in one call; never write it, so the bytes do
  // not depend on how the input was chunked.
  IMGTOOL_TRY(SetZstdParameter(ctx, ZSTD_c_contentSizeFlag, 0, "content size"));
  // The single-threaded engine (0 workers) produces different bytes from the
  // multi-threaded one, which is identical for any worker count >= 1.
  int workers = EffectiveThreads(options.threads);
  if (ZSTD_isError(ZSTD_CCtx_setParameter(ctx, ZSTD_c_nbWorkers, workers))) {
    return FailedPreconditionError("zstd: libzstd was built without multi-threading");
  }
  return std::unique_ptr<Compressor>(std::move(compressor));
}

}  // namespace

Result<std::unique_ptr<Compressor>> NewCompressor(const CompressOptions& options, ByteSink& out) {
  switch (options.compression) {
    case Compression::kNone:
      return std::unique_ptr<Compressor>(std::make_unique<NoneCompressor>(out));
    case Compression::kGzip: {
      int level = options.level < 0 ? kDefaultGzipLevel : options.level;
      if (level > 9)
        return InvalidArgumentError(StrCat("gzip level ", level, " is out of range 0..9"));
      auto compressor =
          std::make_unique<GzipCompressor>(out, level, EffectiveThreads(options.threads));
      IMGTOOL_TRY(compressor->WriteHeader());
      return std::unique_ptr<Compressor>(std::move(compressor));
    }
    case Compression::kZstd:
      return NewZstdCompressor(options, out);
  }
  return InvalidArgumentError("unknown compression");
}

}  // namespace imgtool::overlay
