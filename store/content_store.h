// A containerd-shaped content store: blobs named by their SHA-256, written
// through an ingest that hashes as it streams and only becomes visible (by
// rename) once size and digest check out, read back through readers that
// verify the content against its name at EOF.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/byte_sink.h"
#include "common/digest.h"
#include "common/error.h"
#include "common/unique_fd.h"

namespace imgtool::store {

// Streams one blob in. Write() hashes as it goes. Exactly one of Commit() or
// Abort() ends it; the destructor aborts an ingest that was not committed.
class IngestWriter : public ByteSink {
 public:
  ~IngestWriter() override = default;

  // Flushes to disk and checks: `expected_size` (-1 = unknown) against the
  // bytes written, `expected` (empty = unknown) against the hash. On mismatch
  // the ingest is removed and the error is DataLoss naming both values. A blob
  // that already exists under the digest is success (content is identical by
  // construction). After success digest() returns the blob's digest.
  virtual Status Commit(int64_t expected_size, const Digest& expected) = 0;
  // Drops the ingest; safe to call more than once or after a failed Commit.
  virtual void Abort() = 0;

  // Bytes written so far.
  virtual int64_t written() const = 0;
  // The committed digest; FailedPrecondition before a successful Commit().
  virtual Result<Digest> digest() const = 0;
};

// A verified, sequential reader of one blob. Read() returns 0 at EOF only when
// the content hashed to the blob's digest and had the recorded size; otherwise
// the final Read() is DataLoss.
class BlobReader {
 public:
  // Takes an open fd positioned at the blob's start; `size` is the file's size.
  BlobReader(UniqueFd fd, Digest expected, int64_t size);
  BlobReader(BlobReader&&) noexcept = default;
  BlobReader& operator=(BlobReader&&) noexcept = default;

  const Digest& digest() const { return expected_; }
  int64_t size() const { return size_; }

  // Up to `size` bytes; 0 = verified EOF.
  Result<size_t> Read(void* buf, size_t size);
  // Reads everything into `sink`, verified.
  Status CopyTo(ByteSink& sink);
  // Reads everything into a string (at most `max_size` bytes), verified.
  Result<std::string> ReadAll(size_t max_size);

 private:
  UniqueFd fd_;
  Digest expected_;
  int64_t size_ = 0;
  int64_t offset_ = 0;
  Sha256Hasher hasher_;
  bool verified_ = false;
};

struct BlobInfo {
  Digest digest;
  int64_t size = 0;
};

class ContentStore {
 public:
  virtual ~ContentStore() = default;

  // A new ingest. Many may be open at once, in one process or many.
  virtual Result<std::unique_ptr<IngestWriter>> Writer() = 0;

  // NotFound when the blob is missing.
  virtual Result<BlobReader> Open(const Digest& digest) const = 0;
  // The blob's fd without verification, for readers that hash the stream
  // themselves (the layer applier hashes while decompressing).
  virtual Result<UniqueFd> OpenRaw(const Digest& digest) const = 0;
  virtual bool Exists(const Digest& digest) const = 0;
  virtual Result<int64_t> Size(const Digest& digest) const = 0;
  // NotFound when the blob is missing.
  virtual Status Delete(const Digest& digest) = 0;
  // Every committed blob, sorted by digest.
  virtual Result<std::vector<BlobInfo>> List() const = 0;

  // Writes a whole buffer as one blob; `out` (optional) gets its digest.
  Status WriteBlob(std::string_view data, Digest* out = nullptr);
  // Reads and verifies a whole blob; InvalidArgument when it is larger than
  // `max_size`.
  Result<std::string> ReadBlob(const Digest& digest, size_t max_size = 64u << 20) const;
};

// The on-disk store: <root>/blobs/sha256/<hex> and <root>/ingest/<name>.
class LocalContentStore final : public ContentStore {
 public:
  static constexpr std::chrono::seconds kStaleIngestAge{3600};

  // Creates blobs/sha256 and ingest/ when missing. Ingest files older than
  // kStaleIngestAge that no live writer holds are removed by the first
  // Writer() (and by gc): a store opened only to read (`imgtool run`) does not
  // list ingest/ on its way.
  static Result<std::unique_ptr<LocalContentStore>> Open(const std::filesystem::path& root);

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path BlobPath(const Digest& digest) const;
  std::filesystem::path IngestDir() const { return root_ / "ingest"; }

  Result<std::unique_ptr<IngestWriter>> Writer() override;
  Result<BlobReader> Open(const Digest& digest) const override;
  Result<UniqueFd> OpenRaw(const Digest& digest) const override;
  bool Exists(const Digest& digest) const override;
  Result<int64_t> Size(const Digest& digest) const override;
  Status Delete(const Digest& digest) override;
  Result<std::vector<BlobInfo>> List() const override;

  // Names in blobs/sha256 that are not 64 lowercase hex digits, or not regular
  // files (fsck reports them; List() skips them).
  Result<std::vector<std::string>> StrayFiles() const;
  // Removes ingest files older than `max_age` that no live writer holds.
  // Returns how many were removed.
  Result<int> CleanStaleIngests(std::chrono::seconds max_age);

 private:
  LocalContentStore(std::filesystem::path root, UniqueFd blobs_dir, UniqueFd ingest_dir)
      : root_(std::move(root)),
        blobs_dir_(std::move(blobs_dir)),
        ingest_dir_(std::move(ingest_dir)) {}

  std::filesystem::path root_;
  UniqueFd blobs_dir_;   // <root>/blobs/sha256
  UniqueFd ingest_dir_;  // <root>/ingest
  std::once_flag ingests_cleaned_;
};

}  // namespace imgtool::store
