#include "store/content_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <random>

#include "common/file_util.h"
#include "common/log.h"

namespace imgtool::store {

namespace {

constexpr size_t kCopyBufferSize = 1 << 20;

bool IsBlobName(std::string_view name) {
  return name.size() == 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

Result<UniqueFd> DupFd(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return ErrnoError("dup");
  return UniqueFd(copy);
}

struct DirCloser {
  void operator()(DIR* dir) const { ::closedir(dir); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

// Opens a directory stream over a copy of `dir_fd`, so the caller's fd keeps
// its own offset and stays open.
Result<DirPtr> OpenDirStream(int dir_fd, std::string_view what) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd copy, DupFd(dir_fd));
  DIR* dir = ::fdopendir(copy.get());
  if (dir == nullptr) return ErrnoError("read directory " + std::string(what));
  copy.release();  // the DIR owns it now
  ::rewinddir(dir);
  return DirPtr(dir);
}

// Calls fn(name) for every entry but "." and "..".
template <typename Fn>
Status ForEachEntry(int dir_fd, std::string_view what, Fn fn) {
  IMGTOOL_ASSIGN_OR_RETURN(DirPtr dir, OpenDirStream(dir_fd, what));
  while (true) {
    errno = 0;
    struct dirent* entry = ::readdir(dir.get());
    if (entry == nullptr) {
      if (errno != 0) return ErrnoError("read directory " + std::string(what));
      return OkStatus();
    }
    std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    IMGTOOL_TRY(fn(name));
  }
}

Result<UniqueFd> OpenOrCreateDir(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) return UniqueFd(fd);
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec)
    return Error(ErrorCodeFromErrno(ec.value()), "create " + path.string() + ": " + ec.message());
  return OpenFile(path, O_RDONLY | O_DIRECTORY);
}

std::string RandomSuffix() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

class LocalIngestWriter final : public IngestWriter {
 public:
  LocalIngestWriter(UniqueFd ingest_dir, UniqueFd blobs_dir, UniqueFd fd, std::string name)
      : ingest_dir_(std::move(ingest_dir)),
        blobs_dir_(std::move(blobs_dir)),
        fd_(std::move(fd)),
        name_(std::move(name)) {}
  ~LocalIngestWriter() override { Abort(); }

  Status Write(const void* data, size_t size) override {
    if (!fd_) return FailedPreconditionError("write to a closed ingest " + name_);
    IMGTOOL_TRY(WriteAll(fd_.get(), data, size).Wrap("ingest " + name_));
    hasher_.Update(data, size);
    written_ += static_cast<int64_t>(size);
    // Start writeback of what is written so far, so that the fsync in Commit
    // waits for the last few MiB rather than the whole blob (a 400 MB layer
    // otherwise spends over a second there). Failure only costs that gain.
    if (written_ - flushed_ >= kWritebackChunk) {
      (void)::sync_file_range(fd_.get(), flushed_, written_ - flushed_, SYNC_FILE_RANGE_WRITE);
      flushed_ = written_;
    }
    return OkStatus();
  }

  Status Commit(int64_t expected_size, const Digest& expected) override {
    if (!fd_) return FailedPreconditionError("commit of a closed ingest " + name_);
    Digest actual = hasher_.Finish();
    if (expected_size >= 0 && expected_size != written_) {
      Abort();
      return DataLossError("blob " + (expected.empty() ? actual : expected).ToString() +
                           ": size mismatch: expected " + std::to_string(expected_size) +
                           " bytes, got " + std::to_string(written_));
    }
    if (!expected.empty() && expected != actual) {
      Abort();
      return DataLossError("blob digest mismatch: expected " + expected.ToString() + ", got " +
                           actual.ToString() + " (" + std::to_string(written_) + " bytes)");
    }
    if (::fsync(fd_.get()) != 0) {
      Error err = ErrnoError("fsync ingest " + name_);
      Abort();
      return err;
    }
    IMGTOOL_TRY(MoveIntoPlace(actual));
    fd_.reset();  // releases the ingest's flock
    committed_ = actual;
    return OkStatus();
  }

  void Abort() override {
    if (!fd_) return;
    ::unlinkat(ingest_dir_.get(), name_.c_str(), 0);
    fd_.reset();
  }

  int64_t written() const override { return written_; }

  Result<Digest> digest() const override {
    if (committed_.empty()) return FailedPreconditionError("ingest " + name_ + " is not committed");
    return committed_;
  }

 private:
  Status MoveIntoPlace(const Digest& digest) {
    const std::string& hex = digest.hex();
    // RENAME_NOREPLACE leaves an existing blob (and its readers) alone: same
    // name means same content, so the existing file already is the result.
    int rc = ::renameat2(ingest_dir_.get(), name_.c_str(), blobs_dir_.get(), hex.c_str(),
                         RENAME_NOREPLACE);
    if (rc != 0 && errno == EEXIST) {
      struct stat st {};
      if (::fstatat(blobs_dir_.get(), hex.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISREG(st.st_mode) && st.st_size == written_) {
        Abort();
        return OkStatus();
      }
      // The existing file is damaged (wrong size or type): replace it.
      LogWarning("blob ", digest.ToString(), " on disk is damaged; replacing it");
      rc = ::renameat(ingest_dir_.get(), name_.c_str(), blobs_dir_.get(), hex.c_str());
    } else if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
      // Filesystems without RENAME_NOREPLACE: a plain rename over an identical
      // blob is still correct.
      rc = ::renameat(ingest_dir_.get(), name_.c_str(), blobs_dir_.get(), hex.c_str());
    }
    if (rc != 0) {
      Error err = ErrnoError("commit blob " + digest.ToString() + ": rename ingest " + name_);
      Abort();
      return err;
    }
    if (::fsync(blobs_dir_.get()) != 0) {
      return ErrnoError("commit blob " + digest.ToString() + ": fsync blobs directory");
    }
    return OkStatus();
  }

  UniqueFd ingest_dir_;
  UniqueFd blobs_dir_;
  UniqueFd fd_;
  std::string name_;
  Sha256Hasher hasher_;
  static constexpr int64_t kWritebackChunk = 8 << 20;
  int64_t written_ = 0;
  int64_t flushed_ = 0;  // writeback started up to here
  Digest committed_;
};

}  // namespace

BlobReader::BlobReader(UniqueFd fd, Digest expected, int64_t size)
    : fd_(std::move(fd)), expected_(std::move(expected)), size_(size) {}

Result<size_t> BlobReader::Read(void* buf, size_t size) {
  if (verified_) return size_t{0};
  if (!fd_) return FailedPreconditionError("blob " + expected_.ToString() + ": reader is closed");
  while (true) {
    ssize_t n = ::read(fd_.get(), buf, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read blob " + expected_.ToString());
    }
    if (n > 0) {
      hasher_.Update(buf, static_cast<size_t>(n));
      offset_ += n;
      if (offset_ > size_) {
        fd_.reset();
        return DataLossError("blob " + expected_.ToString() + ": longer than its " +
                             std::to_string(size_) + " bytes");
      }
      return static_cast<size_t>(n);
    }
    if (size == 0) return size_t{0};
    Digest actual = hasher_.Finish();
    fd_.reset();
    if (offset_ != size_) {
      return DataLossError("blob " + expected_.ToString() + ": ended after " +
                           std::to_string(offset_) + " of " + std::to_string(size_) + " bytes");
    }
    if (actual != expected_) {
      return DataLossError("blob " + expected_.ToString() + ": content hashes to " +
                           actual.ToString());
    }
    verified_ = true;
    return size_t{0};
  }
}

Status BlobReader::CopyTo(ByteSink& sink) {
  std::string buf(kCopyBufferSize, '\0');
  while (true) {
    IMGTOOL_ASSIGN_OR_RETURN(size_t n, Read(buf.data(), buf.size()));
    if (n == 0) return OkStatus();
    IMGTOOL_TRY(sink.Write(buf.data(), n));
  }
}

Result<std::string> BlobReader::ReadAll(size_t max_size) {
  if (size_ > 0 && static_cast<uint64_t>(size_) > max_size) {
    return InvalidArgumentError("blob " + expected_.ToString() + " is " + std::to_string(size_) +
                                " bytes, more than the " + std::to_string(max_size) +
                                " allowed here");
  }
  std::string out(static_cast<size_t>(size_), '\0');
  size_t filled = 0;
  while (filled < out.size()) {
    IMGTOOL_ASSIGN_OR_RETURN(size_t n, Read(out.data() + filled, out.size() - filled));
    if (n == 0) break;  // Read() only returns 0 here after verification
    filled += n;
  }
  // The final read confirms EOF and the digest.
  char probe;
  IMGTOOL_ASSIGN_OR_RETURN(size_t extra, Read(&probe, 1));
  if (extra != 0) {
    return DataLossError("blob " + expected_.ToString() + ": longer than its " +
                         std::to_string(size_) + " bytes");
  }
  out.resize(filled);
  return out;
}

Status ContentStore::WriteBlob(std::string_view data, Digest* out) {
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<IngestWriter> writer, Writer());
  IMGTOOL_TRY(writer->Write(data.data(), data.size()));
  IMGTOOL_TRY(writer->Commit(static_cast<int64_t>(data.size()), Digest()));
  if (out != nullptr) {
    IMGTOOL_ASSIGN_OR_RETURN(*out, writer->digest());
  }
  return OkStatus();
}

Result<std::string> ContentStore::ReadBlob(const Digest& digest, size_t max_size) const {
  IMGTOOL_ASSIGN_OR_RETURN(BlobReader reader, Open(digest));
  return reader.ReadAll(max_size);
}

Result<std::unique_ptr<LocalContentStore>> LocalContentStore::Open(
    const std::filesystem::path& root) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd blobs, OpenOrCreateDir(root / "blobs" / "sha256"));
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd ingest, OpenOrCreateDir(root / "ingest"));
  return std::unique_ptr<LocalContentStore>(
      new LocalContentStore(root, std::move(blobs), std::move(ingest)));
}

std::filesystem::path LocalContentStore::BlobPath(const Digest& digest) const {
  return root_ / "blobs" / "sha256" / digest.hex();
}

Result<std::unique_ptr<IngestWriter>> LocalContentStore::Writer() {
  std::call_once(ingests_cleaned_, [this] {
    Result<int> cleaned = CleanStaleIngests(kStaleIngestAge);
    if (!cleaned) {
      // A failed cleanup costs disk space, not correctness.
      LogWarning("content store ", root_.string(), ": ", cleaned.error().ToString());
    } else if (*cleaned > 0) {
      LogDebug("content store ", root_.string(), ": removed ", *cleaned, " stale ingest files");
    }
  });
  std::string name = std::to_string(::getpid()) + "-" + RandomSuffix();
  // Blobs are immutable: created read-only; the fd we hold is still writable.
  int fd = ::openat(ingest_dir_.get(), name.c_str(),
                    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
  if (fd < 0) return ErrnoError("create ingest " + (IngestDir() / name).string());
  UniqueFd file(fd);
  // Held until commit or abort, so a cleaner in another process can tell a live
  // ingest from one left by a killed process.
  if (::flock(file.get(), LOCK_EX | LOCK_NB) != 0) {
    Error err = ErrnoError("lock ingest " + name);
    ::unlinkat(ingest_dir_.get(), name.c_str(), 0);
    return err;
  }
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd ingest_dir, DupFd(ingest_dir_.get()));
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd blobs_dir, DupFd(blobs_dir_.get()));
  return std::unique_ptr<IngestWriter>(new LocalIngestWriter(
      std::move(ingest_dir), std::move(blobs_dir), std::move(file), std::move(name)));
}

Result<UniqueFd> LocalContentStore::OpenRaw(const Digest& digest) const {
  if (digest.empty()) return InvalidArgumentError("open blob: empty digest");
  int fd = ::openat(blobs_dir_.get(), digest.hex().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return NotFoundError("blob " + digest.ToString() + " not found");
    return ErrnoError("open blob " + digest.ToString());
  }
  return UniqueFd(fd);
}

Result<BlobReader> LocalContentStore::Open(const Digest& digest) const {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenRaw(digest));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat blob " + digest.ToString());
  if (!S_ISREG(st.st_mode)) {
    return DataLossError("blob " + digest.ToString() + " is not a regular file");
  }
  return BlobReader(std::move(fd), digest, st.st_size);
}

bool LocalContentStore::Exists(const Digest& digest) const {
  if (digest.empty()) return false;
  struct stat st {};
  return ::fstatat(blobs_dir_.get(), digest.hex().c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         S_ISREG(st.st_mode);
}

Result<int64_t> LocalContentStore::Size(const Digest& digest) const {
  if (digest.empty()) return InvalidArgumentError("stat blob: empty digest");
  struct stat st {};
  if (::fstatat(blobs_dir_.get(), digest.hex().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return NotFoundError("blob " + digest.ToString() + " not found");
    return ErrnoError("stat blob " + digest.ToString());
  }
  return static_cast<int64_t>(st.st_size);
}

Status LocalContentStore::Delete(const Digest& digest) {
  if (digest.empty()) return InvalidArgumentError("delete blob: empty digest");
  if (::unlinkat(blobs_dir_.get(), digest.hex().c_str(), 0) != 0) {
    if (errno == ENOENT) return NotFoundError("blob " + digest.ToString() + " not found");
    return ErrnoError("delete blob " + digest.ToString());
  }
  return OkStatus();
}

Result<std::vector<BlobInfo>> LocalContentStore::List() const {
  std::vector<BlobInfo> out;
  IMGTOOL_TRY(ForEachEntry(blobs_dir_.get(), "blobs/sha256", [&](std::string_view name) -> Status {
    if (!IsBlobName(name)) return OkStatus();
    struct stat st {};
    std::string n(name);
    if (::fstatat(blobs_dir_.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return OkStatus();  // deleted while we listed
      return ErrnoError("stat blob " + n);
    }
    if (!S_ISREG(st.st_mode)) return OkStatus();
    Result<Digest> digest = Digest::Parse("sha256:" + n);
    if (!digest) return OkStatus();
    out.push_back(BlobInfo{std::move(digest).value(), static_cast<int64_t>(st.st_size)});
    return OkStatus();
  }));
  std::sort(out.begin(), out.end(),
            [](const BlobInfo& a, const BlobInfo& b) { return a.digest < b.digest; });
  return out;
}

Result<std::vector<std::string>> LocalContentStore::StrayFiles() const {
  std::vector<std::string> out;
  IMGTOOL_TRY(ForEachEntry(blobs_dir_.get(), "blobs/sha256", [&](std::string_view name) -> Status {
    std::string n(name);
    struct stat st {};
    bool regular = ::fstatat(blobs_dir_.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                   S_ISREG(st.st_mode);
    if (!IsBlobName(name) || !regular) out.push_back(std::move(n));
    return OkStatus();
  }));
  std::sort(out.begin(), out.end());
  return out;
}

Result<int> LocalContentStore::CleanStaleIngests(std::chrono::seconds max_age) {
  int removed = 0;
  time_t now = ::time(nullptr);
  IMGTOOL_TRY(ForEachEntry(ingest_dir_.get(), "ingest", [&](std::string_view name) -> Status {
    std::string n(name);
    struct stat st {};
    if (::fstatat(ingest_dir_.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return OkStatus();
    if (!S_ISREG(st.st_mode)) return OkStatus();
    if (now - st.st_mtime < max_age.count()) return OkStatus();
    int fd = ::openat(ingest_dir_.get(), n.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return OkStatus();
    UniqueFd file(fd);
    // A live writer holds its ingest's lock; only abandoned ones are free.
    if (::flock(file.get(), LOCK_EX | LOCK_NB) != 0) return OkStatus();
    if (::unlinkat(ingest_dir_.get(), n.c_str(), 0) == 0) ++removed;
    return OkStatus();
  }));
  return removed;
}

}  // namespace imgtool::store
