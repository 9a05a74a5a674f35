// Layer unpacking runs on two threads joined by a bounded queue of 1 MiB
// chunks: the reader thread reads the blob, hashes it, decompresses it and
// hashes the tar; the calling thread parses the tar (libarchive, fed from the
// queue) and writes files. Memory stays at a few chunks whatever the layer size.
#include "overlay/applier.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/file_util.h"
#include "common/log.h"
#include "common/safe_path.h"
#include "common/scope_guard.h"
#include "common/unique_fd.h"

namespace imgtool::overlay {

namespace {

constexpr size_t kChunkSize = 1 << 20;
constexpr size_t kChunkCount = 8;
constexpr size_t kMaxCachedDirs = 256;
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kMetaPrefix = ".wh..wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr char kOverlayOpaqueXattr[] = "trusted.overlay.opaque";
constexpr char kUserOpaqueXattr[] = "user.overlay.opaque";

// ---------------------------------------------------------------------------
// The queue between the reader thread and the tar thread.

class ChunkPipe {
 public:
  struct Chunk {
    std::unique_ptr<uint8_t[]> data;
    size_t size = 0;
  };

  ChunkPipe() : storage_(kChunkCount) {
    for (Chunk& c : storage_) {
      c.data.reset(new uint8_t[kChunkSize]);
      free_.push_back(&c);
    }
  }

  // Producer side. Null once the consumer has cancelled.
  Chunk* AcquireFree() {
    std::unique_lock<std::mutex> lock(mu_);
    free_cv_.wait(lock, [&] { return cancelled_ || !free_.empty(); });
    if (cancelled_) return nullptr;
    Chunk* c = free_.front();
    free_.pop_front();
    return c;
  }
  void PushFull(Chunk* c) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      full_.push_back(c);
    }
    full_cv_.notify_one();
  }
  void Close(Status status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      status_ = std::move(status);
    }
    full_cv_.notify_all();
  }

  // Consumer side. Null at the end of the stream (check failed()).
  Chunk* PopFull() {
    std::unique_lock<std::mutex> lock(mu_);
    full_cv_.wait(lock, [&] { return closed_ || !full_.empty(); });
    if (full_.empty()) return nullptr;
    Chunk* c = full_.front();
    full_.pop_front();
    return c;
  }
  void Release(Chunk* c) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      free_.push_back(c);
    }
    free_cv_.notify_one();
  }
  void Cancel() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
    }
    free_cv_.notify_all();
  }
  bool failed() {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_ && !status_.has_value();
  }
  Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  std::vector<Chunk> storage_;
  std::mutex mu_;
  std::condition_variable free_cv_;
  std::condition_variable full_cv_;
  std::deque<Chunk*> free_;
  std::deque<Chunk*> full_;
  bool closed_ = false;
  bool cancelled_ = false;
  Status status_;
};

struct StreamResult {
  Compression compression = Compression::kNone;
  Digest digest;
  int64_t size = 0;
  Digest diff_id;
  int64_t tar_size = 0;
};

// The reader thread: blob -> sha256 -> decompress -> sha256 -> queue.
void RunReader(int blob_fd, bool hash_blob, ChunkPipe& pipe, StreamResult* result) {
  auto reader = DecompressingReader::Open(blob_fd);
  if (!reader) {
    pipe.Close(std::move(reader).error());
    return;
  }
  if (!hash_blob) reader->StopHashingCompressed();
  result->compression = reader->compression();
  Sha256Hasher tar_hasher;
  bool eof = false;
  while (!eof) {
    ChunkPipe::Chunk* chunk = pipe.AcquireFree();
    if (chunk == nullptr) return;  // the tar side gave up; nobody reads the result
    size_t filled = 0;
    while (filled < kChunkSize) {
      auto n = reader->Read(chunk->data.get() + filled, kChunkSize - filled);
      if (!n) {
        pipe.Release(chunk);
        pipe.Close(std::move(n).error());
        return;
      }
      if (*n == 0) {
        eof = true;
        break;
      }
      filled += *n;
    }
    tar_hasher.Update(chunk->data.get(), filled);
    result->tar_size += static_cast<int64_t>(filled);
    if (filled == 0) {
      pipe.Release(chunk);
      break;
    }
    chunk->size = filled;
    pipe.PushFull(chunk);
  }
  if (hash_blob) result->digest = reader->FinishCompressedDigest();
  result->size = reader->compressed_size();
  result->diff_id = tar_hasher.Finish();
  pipe.Close(OkStatus());
}

// libarchive's view of the queue: each callback hands out the next chunk, which
// stays valid until the following callback, as libarchive requires.
struct TarSource {
  ChunkPipe* pipe;
  ChunkPipe::Chunk* current = nullptr;

  void ReleaseCurrent() {
    if (current != nullptr) pipe->Release(current);
    current = nullptr;
  }
  // Reads what is left of the stream so that both digests cover all of it.
  void Drain() {
    ReleaseCurrent();
    while (ChunkPipe::Chunk* c = pipe->PopFull()) pipe->Release(c);
  }
};

la_ssize_t ReadTarChunk(struct archive* a, void* client, const void** buffer) {
  auto* source = static_cast<TarSource*>(client);
  source->ReleaseCurrent();
  ChunkPipe::Chunk* next = source->pipe->PopFull();
  if (next == nullptr) {
    if (source->pipe->failed()) {
      archive_set_error(a, EIO, "layer stream failed");
      return -1;
    }
    return 0;
  }
  source->current = next;
  *buffer = next->data.get();
  return static_cast<la_ssize_t>(next->size);
}

Error ArchiveError(struct archive* a) {
  const char* msg = archive_error_string(a);
  std::string text = msg != nullptr ? msg : "unknown libarchive error";
  if (text.find("Unrecognized archive format") != std::string::npos) {
    return InvalidArgumentError("not a tar archive");
  }
  return DataLossError("tar: " + text);
}

// ---------------------------------------------------------------------------
// Paths

std::string_view Basename(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string_view Dirname(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}

std::string Join(std::string_view dir, std::string_view name) {
  std::string out;
  out.reserve(dir.size() + 1 + name.size());
  out.append(dir);
  if (!dir.empty()) out += '/';
  out.append(name);
  return out;
}

bool HasDotDotComponent(std::string_view path) {
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (path.substr(i, j - i) == "..") return true;
    i = j + 1;
  }
  return false;
}

std::string ProcPath(int dir_fd, std::string_view name) {
  return StrCat("/proc/self/fd/", dir_fd, "/", name);
}

bool IsMissing(const Error& e) {
  return e.sys_errno() == ENOENT || e.sys_errno() == ENOTDIR || e.sys_errno() == ELOOP;
}

// ---------------------------------------------------------------------------
// Entries

enum class Kind {
  kFile,
  kDirectory,
  kSymlink,
  kHardlink,
  kCharDevice,
  kBlockDevice,
  kFifo,
  kSocket
};

struct Entry {
  std::string name;  // as in the tar
  std::string path;  // cleaned; "" is the root
  Kind kind = Kind::kFile;
  std::string link;  // symlink target, or the tar name of a hardlink's target
  mode_t perm = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  struct timespec times[2] = {};  // atime, mtime
  dev_t rdev = 0;
  int64_t size = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;
};

Status ReadEntry(struct archive_entry* ae, Entry* e) {
  const char* name = archive_entry_pathname(ae);
  if (name == nullptr) return InvalidArgumentError("tar entry without a name");
  e->name = name;
  IMGTOOL_ASSIGN_OR_RETURN(e->path, SanitizeEntryPath(e->name));
  e->link.clear();
  if (const char* hardlink = archive_entry_hardlink(ae); hardlink != nullptr) {
    e->kind = Kind::kHardlink;
    e->link = hardlink;
  } else {
    switch (archive_entry_filetype(ae)) {
      case AE_IFREG:
        e->kind = Kind::kFile;
        break;
      case AE_IFDIR:
        e->kind = Kind::kDirectory;
        break;
      case AE_IFLNK: {
        e->kind = Kind::kSymlink;
        const char* target = archive_entry_symlink(ae);
        if (target != nullptr) e->link = target;
        break;
      }
      case AE_IFCHR:
        e->kind = Kind::kCharDevice;
        break;
      case AE_IFBLK:
        e->kind = Kind::kBlockDevice;
        break;
      case AE_IFIFO:
        e->kind = Kind::kFifo;
        break;
      case AE_IFSOCK:
        e->kind = Kind::kSocket;
        break;
      default:
        return InvalidArgumentError(
            StrCat("unsupported entry type 0", std::oct, archive_entry_filetype(ae)));
    }
  }
  e->perm = archive_entry_perm(ae) & 07777;
  la_int64_t uid = archive_entry_uid(ae);
  la_int64_t gid = archive_entry_gid(ae);
  if (uid < 0 || gid < 0 || uid >= UINT32_MAX || gid >= UINT32_MAX) {
    return InvalidArgumentError(StrCat("owner ", uid, ":", gid, " is out of range"));
  }
  e->uid = static_cast<uid_t>(uid);
  e->gid = static_cast<gid_t>(gid);
  e->times[1].tv_sec = archive_entry_mtime(ae);
  e->times[1].tv_nsec = archive_entry_mtime_nsec(ae);
  if (archive_entry_atime_is_set(ae)) {
    e->times[0].tv_sec = archive_entry_atime(ae);
    e->times[0].tv_nsec = archive_entry_atime_nsec(ae);
  } else {
    e->times[0] = e->times[1];
  }
  e->rdev = makedev(archive_entry_rdevmajor(ae), archive_entry_rdevminor(ae));
  e->size = archive_entry_size(ae);
  e->xattrs.clear();
  archive_entry_xattr_reset(ae);
  const char* xname;
  const void* value;
  size_t size;
  while (archive_entry_xattr_next(ae, &xname, &value, &size) == ARCHIVE_OK) {
    e->xattrs.emplace_back(xname, std::string(static_cast<const char*>(value), size));
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Writing entries into the target

class EntryWriter {
 public:
  EntryWriter(int root_fd, WhiteoutMode mode, bool privileged)
      : root_fd_(root_fd), mode_(mode), privileged_(privileged) {}

  Status Apply(const Entry& e, struct archive* a) {
    retired_.clear();  // fds evicted while applying the previous entry
    if (e.kind == Kind::kSocket) {
      LogDebug("layer: skipping socket entry ", e.name);
      return OkStatus();
    }
    std::string_view base = Basename(e.path);
    std::string_view parent = Dirname(e.path);
    if (base.starts_with(kWhiteoutPrefix)) return ApplyWhiteout(parent, base);
    if (e.path.empty()) {
      if (e.kind != Kind::kDirectory) {
        return InvalidArgumentError("the root of the layer must be a directory");
      }
      return ApplyRootDirectory(e);
    }
    if (mode_ == WhiteoutMode::kFlatten) MarkTouched(e.path);
    switch (e.kind) {
      case Kind::kFile:
        return CreateFile(e, parent, base, a);
      case Kind::kDirectory:
        return CreateDirectory(e, parent, base);
      case Kind::kSymlink:
        return CreateSymlink(e, parent, base);
      case Kind::kHardlink:
        return CreateHardlink(e, parent, base);
      case Kind::kCharDevice:
      case Kind::kBlockDevice:
      case Kind::kFifo:
        return CreateNode(e, parent, base);
      case Kind::kSocket:
        break;
    }
    return OkStatus();
  }

  // Work that must wait for the whole layer: opaque directories (kFlatten), then
  // directory modes and mtimes, which writing their children kept changing.
  Status Finish() {
    retired_.clear();
    dir_cache_.clear();
    std::unordered_set<std::string> done;
    for (const std::string& dir : opaque_dirs_) {
      if (!done.insert(dir).second) continue;
      auto fd = OpenExistingDirNoFollow(dir);
      if (!fd) {
        if (IsMissing(fd.error())) continue;
        return std::move(fd).error().Wrap(StrCat("opaque directory \"", dir, "\""));
      }
      IMGTOOL_TRY(PruneUntouched(fd->get(), dir).Wrap(StrCat("opaque directory \"", dir, "\"")));
    }
    for (const DirFixup& fix : dir_fixups_) {
      auto fd = OpenExistingDirNoFollow(fix.path);
      if (!fd) {
        if (IsMissing(fd.error())) continue;  // replaced later in the layer
        return std::move(fd).error().Wrap(StrCat("directory \"", fix.path, "\""));
      }
      if (::fchmod(fd->get(), fix.perm) != 0) {
        return ErrnoError(StrCat("directory \"", fix.path, "\": chmod"));
      }
      if (::futimens(fd->get(), fix.times) != 0) {
        return ErrnoError(StrCat("directory \"", fix.path, "\": set times"));
      }
    }
    return OkStatus();
  }

 private:
  struct DirFixup {
    std::string path;
    mode_t perm;
    struct timespec times[2];
  };

  struct Replaced {
    bool kept_directory = false;  // an existing directory stays (dir over dir merges)
    bool was_whiteout = false;    // the old entry was an overlay whiteout device
  };

  // -- directory lookup ------------------------------------------------------

  // The fd of directory `path` inside the root, from the cache when it holds it.
  // With `create`, missing directories are made (0755, as tar does for parents
  // a layer does not list). Every miss resolves with RESOLVE_IN_ROOT.
  Result<int> OpenDir(std::string_view path, bool create) {
    if (path.empty()) return root_fd_;
    std::string key(path);
    if (auto it = dir_cache_.find(key); it != dir_cache_.end()) return it->second.get();
    auto fd = SafeOpenAt(root_fd_, key, O_RDONLY | O_DIRECTORY);
    if (!fd && create && fd.error().sys_errno() == ENOENT) {
      fd = SafeMkdirAll(root_fd_, key, 0755);
    }
    if (!fd) return std::move(fd).error();
    return CacheDir(std::move(key), std::move(fd).value());
  }

  int CacheDir(std::string path, UniqueFd fd) {
    if (dir_cache_.size() >= kMaxCachedDirs) InvalidateDirCache();
    int raw = fd.get();
    dir_cache_.insert_or_assign(std::move(path), std::move(fd));
    return raw;
  }

  // A directory or symlink was removed or replaced, which can change what any
  // cached path resolves to: forget them all. The fds stay open until the next
  // entry because the caller may still be using one.
  void InvalidateDirCache() {
    for (auto& [path, fd] : dir_cache_) retired_.push_back(std::move(fd));
    dir_cache_.clear();
  }

  Result<UniqueFd> OpenExistingDirNoFollow(const std::string& path) {
    if (path.empty()) {
      int fd = ::openat(root_fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) return ErrnoError("open root");
      return UniqueFd(fd);
    }
    return SafeOpenAt(root_fd_, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  }

  // -- replacing what is there ----------------------------------------------

  // Clears the way for a new entry `name` in `dir_fd`, by OCI rules: a directory
  // stays when the new entry is one too; anything else goes, directories with
  // everything in them.
  Result<Replaced> RemoveExisting(int dir_fd, std::string_view name, bool new_is_dir) {
    std::string n(name);
    struct stat st;
    if (::fstatat(dir_fd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return Replaced{};
      return ErrnoError("stat existing entry");
    }
    Replaced r;
    if (S_ISDIR(st.st_mode)) {
      if (new_is_dir) {
        r.kept_directory = true;
        return r;
      }
      IMGTOOL_TRY(RemoveTreeAt(dir_fd, n));
      InvalidateDirCache();
      return r;
    }
    r.was_whiteout = S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
    if (::unlinkat(dir_fd, n.c_str(), 0) != 0) return ErrnoError("remove existing entry");
    if (S_ISLNK(st.st_mode)) InvalidateDirCache();
    return r;
  }

  // Removes a directory and its contents without following any symlink in it.
  Status RemoveTreeAt(int dir_fd, const std::string& name) {
    int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open " + name);
    UniqueFd dir(fd);
    // Without root, a read-only directory from a lower layer would refuse unlinks.
    if (!privileged_) (void)::fchmod(dir.get(), 0700);
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> children, ListDirNames(dir.get()));
    for (const std::string& child : children) IMGTOOL_TRY(RemoveEntryAt(dir.get(), child));
    if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0) return ErrnoError("remove " + name);
    return OkStatus();
  }

  Status RemoveEntryAt(int dir_fd, const std::string& name) {
    struct stat st;
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return OkStatus();
      return ErrnoError("stat " + name);
    }
    if (S_ISDIR(st.st_mode)) return RemoveTreeAt(dir_fd, name);
    if (::unlinkat(dir_fd, name.c_str(), 0) != 0) return ErrnoError("remove " + name);
    return OkStatus();
  }

  // -- kFlatten bookkeeping ----------------------------------------------------

  // Records `path` and its ancestors as written by this layer; opaque markers
  // and whiteouts spare them.
  void MarkTouched(std::string_view path) {
    while (!path.empty() && touched_.emplace(path).second) path = Dirname(path);
  }
  bool Touched(const std::string& path) const { return touched_.count(path) != 0; }

  // Removes everything under `dir_fd` that this layer did not write.
  Status PruneUntouched(int dir_fd, const std::string& dir) {
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirNames(dir_fd));
    for (const std::string& name : names) {
      std::string path = Join(dir, name);
      if (!Touched(path)) {
        IMGTOOL_TRY(RemoveEntryAt(dir_fd, name));
        continue;
      }
      int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) {
        if (errno == ENOTDIR || errno == ELOOP) continue;  // a file or link of this layer
        return ErrnoError("open " + path);
      }
      UniqueFd child(fd);
      IMGTOOL_TRY(PruneUntouched(child.get(), path));
    }
    return OkStatus();
  }

  // -- metadata ----------------------------------------------------------------

  enum class XattrTarget { kFd, kPath };

  // Which xattrs of a layer we write: user.* and POSIX ACLs always; trusted.*
  // and security.capability with root. Never overlay's own (a layer could
  // otherwise fake opaque dirs, redirects or metacopy in an overlay stack), and
  // never other security.* (host labels and IMA/EVM belong to the host).
  bool AllowXattr(std::string_view name) const {
    if (name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")) return false;
    if (name.starts_with("user.") || name.starts_with("system.posix_acl_")) return true;
    if (name.starts_with("trusted.") || name == "security.capability") return privileged_;
    return false;
  }

  Status SetXattrs(const Entry& e, int fd, const std::string& path) {
    for (const auto& [name, value] : e.xattrs) {
      if (!AllowXattr(name)) {
        LogDebug("layer: entry ", e.name, ": skipping xattr ", name);
        continue;
      }
      int rc = fd >= 0 ? ::fsetxattr(fd, name.c_str(), value.data(), value.size(), 0)
                       : ::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0);
      if (rc == 0) continue;
      // The filesystem may not do xattrs, and symlinks take no user.* ones.
      // trusted.* needs root of the initial user namespace, not just uid 0.
      bool denied = errno == EPERM && (fd < 0 || name.starts_with("trusted."));
      if (errno == ENOTSUP || errno == EOPNOTSUPP || denied) {
        LogDebug("layer: entry ", e.name, ": cannot set xattr ", name, ": ", strerror(errno));
        continue;
      }
      return ErrnoError("set xattr " + name);
    }
    return OkStatus();
  }

  // Owner, xattrs, mode in this order: chown clears setuid/setgid bits and
  // security.capability, so both come after it.
  Status SetFdMetadata(const Entry& e, int fd, bool set_mode) {
    if (privileged_ && ::fchown(fd, e.uid, e.gid) != 0) return ErrnoError("chown");
    IMGTOOL_TRY(SetXattrs(e, fd, ""));
    if (set_mode && ::fchmod(fd, e.perm) != 0) return ErrnoError("chmod");
    return OkStatus();
  }

  // -- entry kinds ---------------------------------------------------------------

  Status WriteFileData(int fd, const Entry& e, struct archive* a) {
    const void* buf;
    size_t size;
    la_int64_t offset;
    int64_t pos = 0;
    while (true) {
      int r = archive_read_data_block(a, &buf, &size, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return ArchiveError(a).Wrap("read data");
      if (offset != pos) {
        // A hole in a sparse entry.
        if (::lseek(fd, offset, SEEK_SET) < 0) return ErrnoError("seek");
        pos = offset;
      }
      const char* p = static_cast<const char*>(buf);
      size_t left = size;
      while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0) {
          if (errno == EINTR) continue;
          return ErrnoError("write");
        }
        p += n;
        left -= static_cast<size_t>(n);
      }
      pos += static_cast<int64_t>(size);
    }
    if (pos < e.size && ::ftruncate(fd, e.size) != 0) return ErrnoError("truncate");
    return OkStatus();
  }

  Status CreateFile(const Entry& e, std::string_view parent, std::string_view base,
                    struct archive* a) {
    IMGTOOL_ASSIGN_OR_RETURN(int dir_fd, OpenDir(parent, true));
    std::string name(base);
    // O_EXCL|O_NOFOLLOW: a new inode every time, so nothing already in the tree
    // (a symlink, a hardlink to another file) is ever written through.
    constexpr int kFlags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = ::openat(dir_fd, name.c_str(), kFlags, 0600);
    if (fd < 0 && errno == EEXIST) {
      IMGTOOL_TRY(RemoveExisting(dir_fd, base, false));
      fd = ::openat(dir_fd, name.c_str(), kFlags, 0600);
    }
    if (fd < 0) return ErrnoError("create file");
    UniqueFd file(fd);
    IMGTOOL_TRY(WriteFileData(file.get(), e, a));
    IMGTOOL_TRY(SetFdMetadata(e, file.get(), true));
    if (::futimens(file.get(), e.times) != 0) return ErrnoError("set times");
    return OkStatus();
  }

  Status CreateDirectory(const Entry& e, std::string_view parent, std::string_view base) {
    IMGTOOL_ASSIGN_OR_RETURN(int dir_fd, OpenDir(parent, true));
    std::string name(base);
    bool make_opaque = false;
    // Owner-only until Finish() sets the real mode: a read-only directory would
    // refuse its own children otherwise.
    if (::mkdirat(dir_fd, name.c_str(), 0700) != 0) {
      if (errno != EEXIST) return ErrnoError("mkdir");
      IMGTOOL_ASSIGN_OR_RETURN(Replaced r, RemoveExisting(dir_fd, base, true));
      if (!r.kept_directory && ::mkdirat(dir_fd, name.c_str(), 0700) != 0) {
        return ErrnoError("mkdir");
      }
      // A directory written over a whiteout of the same layer hides the lower
      // directory's contents, as overlayfs itself marks such a directory.
      make_opaque = r.was_whiteout && mode_ == WhiteoutMode::kOverlay;
    }
    int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open directory");
    UniqueFd dir(fd);
    IMGTOOL_TRY(SetFdMetadata(e, dir.get(), false));
    if (make_opaque) IMGTOOL_TRY(SetOpaque(dir.get()));
    dir_fixups_.push_back(DirFixup{e.path, e.perm, {e.times[0], e.times[1]}});
    CacheDir(e.path, std::move(dir));
    return OkStatus();
  }

  Status ApplyRootDirectory(const Entry& e) {
    IMGTOOL_TRY(SetFdMetadata(e, root_fd_, false));
    dir_fixups_.push_back(DirFixup{"", e.perm, {e.times[0], e.times[1]}});
    return OkStatus();
  }

  Status CreateSymlink(const Entry& e, std::string_view parent, std::string_view base) {
    IMGTOOL_ASSIGN_OR_RETURN(int dir_fd, OpenDir(parent, true));
    std::string name(base);
    // The target is stored as written; it is never followed while unpacking.
    if (::symlinkat(e.link.c_str(), dir_fd, name.c_str()) != 0) {
      if (errno != EEXIST) return ErrnoError("symlink");
      IMGTOOL_TRY(RemoveExisting(dir_fd, base, false));
      if (::symlinkat(e.link.c_str(), dir_fd, name.c_str()) != 0) return ErrnoError("symlink");
    }
    return SetPathMetadata(e, dir_fd, name, /*set_mode=*/false);
  }

  // For entries we cannot hold an ordinary fd to (symlinks, devices, fifos):
  // every call names the entry relative to its directory without following it.
  Status SetPathMetadata(const Entry& e, int dir_fd, const std::string& name, bool set_mode) {
    if (privileged_ && ::fchownat(dir_fd, name.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("chown");
    }
    IMGTOOL_TRY(SetXattrs(e, -1, ProcPath(dir_fd, name)));
    if (set_mode) {
      // fchmodat cannot refuse to follow a symlink; an O_PATH fd of the node can.
      int fd = ::openat(dir_fd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) return ErrnoError("open");
      UniqueFd node(fd);
      if (::chmod(StrCat("/proc/self/fd/", node.get()).c_str(), e.perm) != 0) {
        return ErrnoError("chmod");
      }
    }
    if (::utimensat(dir_fd, name.c_str(), e.times, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("set times");
    }
    return OkStatus();
  }

  Status CreateNode(const Entry& e, std::string_view parent, std::string_view base) {
    bool device = e.kind != Kind::kFifo;
    if (device && !privileged_) {
      LogDebug("layer: skipping device node ", e.name, " (needs root)");
      return OkStatus();
    }
    IMGTOOL_ASSIGN_OR_RETURN(int dir_fd, OpenDir(parent, true));
    std::string name(base);
    mode_t type = e.kind == Kind::kCharDevice    ? S_IFCHR
                  : e.kind == Kind::kBlockDevice ? S_IFBLK
                                                 : S_IFIFO;
    dev_t rdev = device ? e.rdev : 0;
    if (::mknodat(dir_fd, name.c_str(), type | 0600, rdev) != 0) {
      if (errno != EEXIST) return ErrnoError("mknod");
      IMGTOOL_TRY(RemoveExisting(dir_fd, base, false));
      if (::mknodat(dir_fd, name.c_str(), type | 0600, rdev) != 0) return ErrnoError("mknod");
    }
    return SetPathMetadata(e, dir_fd, name, /*set_mode=*/true);
  }

  Status CreateHardlink(const Entry& e, std::string_view parent, std::string_view base) {
    auto target = SanitizeEntryPath(e.link);
    if (!target) return std::move(target).error().Wrap(StrCat("hardlink target \"", e.link, "\""));
    if (target->empty()) return InvalidArgumentError("hardlink to the root directory");
    if (*target == e.path) return InvalidArgumentError("hardlink to itself");
    auto not_found = [&] {
      return NotFoundError(StrCat("hardlink target \"", e.link, "\" does not exist in the tree"));
    };
    auto target_dir = OpenDir(Dirname(*target), false);
    if (!target_dir) {
      if (IsMissing(target_dir.error())) return not_found();
      return std::move(target_dir).error().Wrap("hardlink target");
    }
    std::string target_name(Basename(*target));
    struct stat st;
    if (::fstatat(*target_dir, target_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return not_found();
      return ErrnoError("stat hardlink target");
    }
    if (S_ISDIR(st.st_mode)) {
      return InvalidArgumentError(StrCat("hardlink target \"", e.link, "\" is a directory"));
    }
    IMGTOOL_ASSIGN_OR_RETURN(int dir_fd, OpenDir(parent, true));
    std::string name(base);
    // Flags 0: a symlink target is linked as the symlink itself, never followed.
    if (::linkat(*target_dir, target_name.c_str(), dir_fd, name.c_str(), 0) != 0) {
      if (errno != EEXIST) return ErrnoError("link");
      IMGTOOL_TRY(RemoveExisting(dir_fd, base, false));
      if (::linkat(*target_dir, target_name.c_str(), dir_fd, name.c_str(), 0) != 0) {
        return ErrnoError("link");
      }
    }
    return OkStatus();
  }

  // -- whiteouts -----------------------------------------------------------------

  // overlayfs reads trusted.overlay.* when mounted by real root and user.overlay.*
  // when mounted with "userxattr" (rootless, in a user namespace). Only real root
  // may set trusted.* xattrs, so whoever cannot set one is in the second case.
  Status SetOpaque(int dir_fd) {
    if (privileged_) {
      if (::fsetxattr(dir_fd, kOverlayOpaqueXattr, "y", 1, 0) == 0) return OkStatus();
      if (errno != EPERM) return ErrnoError(StrCat("set ", kOverlayOpaqueXattr));
    }
    if (::fsetxattr(dir_fd, kUserOpaqueXattr, "y", 1, 0) != 0) {
      return ErrnoError(StrCat("set ", kUserOpaqueXattr));
    }
    return OkStatus();
  }

  Status ApplyWhiteout(std::string_view parent, std::string_view base) {
    if (base == kOpaqueMarker) {
      if (mode_ == WhiteoutMode::kFlatten) {
        opaque_dirs_.emplace_back(parent);
        return OkStatus();
      }
      IMGTOOL_ASSIGN_OR_RETURN(int dir_fd, OpenDir(parent, true));
      return SetOpaque(dir_fd);
    }
    if (base.starts_with(kMetaPrefix)) {
      LogDebug("layer: ignoring aufs metadata entry ", Join(parent, base));
      return OkStatus();
    }
    std::string_view victim = base.substr(kWhiteoutPrefix.size());
    if (victim.empty() || victim == "." || victim == "..") {
      return InvalidArgumentError(StrCat("whiteout \"", base, "\" names no entry"));
    }
    std::string victim_path = Join(parent, victim);
    std::string victim_name(victim);
    if (mode_ == WhiteoutMode::kOverlay) {
      IMGTOOL_ASSIGN_OR_RETURN(int dir_fd, OpenDir(parent, true));
      // Since Linux 5.8 anyone may create a 0/0 char device (a whiteout).
      if (::mknodat(dir_fd, victim_name.c_str(), S_IFCHR, makedev(0, 0)) == 0) return OkStatus();
      if (errno == EPERM) {
        return PermissionDeniedError("a whiteout (char device 0/0) needs root or Linux 5.8+");
      }
      if (errno != EEXIST) return ErrnoError("mknod whiteout");
      // The same layer also has the entry: it stays (whiteouts hide only lower
      // layers), but a directory must then hide the lower one's contents.
      int fd =
          ::openat(dir_fd, victim_name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) return OkStatus();
      UniqueFd dir(fd);
      return SetOpaque(dir.get());
    }
    if (Touched(victim_path)) {
      // Written by this layer: keep it, but drop what lower layers have under it.
      opaque_dirs_.push_back(std::move(victim_path));
      return OkStatus();
    }
    auto dir_fd = OpenDir(parent, false);
    if (!dir_fd) {
      if (IsMissing(dir_fd.error())) return OkStatus();  // nothing there to delete
      return std::move(dir_fd).error();
    }
    struct stat st;
    if (::fstatat(*dir_fd, victim_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return OkStatus();
      return ErrnoError("stat whiteout target");
    }
    if (S_ISDIR(st.st_mode)) {
      IMGTOOL_TRY(RemoveTreeAt(*dir_fd, victim_name));
      InvalidateDirCache();
    } else {
      if (::unlinkat(*dir_fd, victim_name.c_str(), 0) != 0) return ErrnoError("remove");
      if (S_ISLNK(st.st_mode)) InvalidateDirCache();
    }
    return OkStatus();
  }

  const int root_fd_;
  const WhiteoutMode mode_;
  const bool privileged_;
  std::unordered_map<std::string, UniqueFd> dir_cache_;
  std::vector<UniqueFd> retired_;
  std::vector<DirFixup> dir_fixups_;
  std::vector<std::string> opaque_dirs_;
  std::unordered_set<std::string> touched_;
};

std::string LayerLabel(const ApplyOptions& options) {
  if (!options.description.empty()) return options.description;
  if (options.expected_digest) return "layer " + options.expected_digest->ToString();
  return "layer";
}

// Parses the tar from `source` and applies each entry.
Result<int64_t> ApplyTar(TarSource& source, int root_fd, const ApplyOptions& options) {
  std::unique_ptr<struct archive, int (*)(struct archive*)> a(archive_read_new(),
                                                              archive_read_free);
  if (a == nullptr) return InternalError("libarchive: out of memory");
  // Tar only (ustar, pax, GNU): no other format, no filter; we decompressed already.
  archive_read_support_format_tar(a.get());
  if (archive_read_open(a.get(), &source, nullptr, ReadTarChunk, nullptr) != ARCHIVE_OK) {
    return ArchiveError(a.get());
  }
  bool privileged = ::geteuid() == 0 && !options.unprivileged;
  EntryWriter writer(root_fd, options.whiteouts, privileged);
  Entry entry;
  int64_t count = 0;
  while (true) {
    struct archive_entry* ae = nullptr;
    int r = archive_read_next_header(a.get(), &ae);
    if (r == ARCHIVE_EOF) break;
    // ARCHIVE_RETRY (a damaged header libarchive could skip) is an error too: a
    // layer is exactly what its digest says, never a best-effort read.
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      return ArchiveError(a.get()).Wrap(StrCat("after entry ", count));
    }
    if (r == ARCHIVE_WARN) {
      LogDebug("layer: tar warning: ", archive_error_string(a.get()));
    }
    ++count;
    Status s = ReadEntry(ae, &entry);
    if (s) s = writer.Apply(entry, a.get());
    if (!s) {
      const char* name = archive_entry_pathname(ae);
      return std::move(s).error().Wrap(StrCat("entry \"", name != nullptr ? name : "", "\""));
    }
  }
  IMGTOOL_TRY(writer.Finish());
  return count;
}

}  // namespace

Result<std::string> SanitizeEntryPath(std::string_view name) {
  if (name.empty()) return InvalidArgumentError("empty path");
  // Absolute names are refused, not made relative. Docker and umoci read "/a" as
  // "a" and GNU tar strips the "/" with a warning, but no layer producer we know
  // (Go's archive/tar in docker, buildah, containerd; umoci; this tool) writes
  // one, so a leading "/" marks a hand-made or hostile tar, and guessing what
  // it meant would hide that. A leading "./" (tar -C dir .) is fine.
  if (name.front() == '/') return InvalidArgumentError("absolute path refused");
  auto cleaned = CleanPathInRoot(name);
  if (!cleaned) return InvalidArgumentError("path leads outside the root");
  // ".." that stays inside is refused too: no producer writes it, and its
  // lexical meaning differs from the kernel's when a component is a symlink.
  if (HasDotDotComponent(name)) return InvalidArgumentError("path contains \"..\"");
  return std::move(cleaned).value();
}

Result<ApplyResult> ApplyLayer(int blob_fd, const std::filesystem::path& target_dir,
                               const ApplyOptions& options) {
  std::string label = LayerLabel(options);
  int fd = ::open(target_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open target " + target_dir.string()).Wrap(label);
  UniqueFd root(fd);

  ChunkPipe pipe;
  StreamResult stream;
  if (!options.hash_blob && options.expected_digest) {
    return InvalidArgumentError("expected_digest without hash_blob").Wrap(label);
  }
  std::thread reader([&] { RunReader(blob_fd, options.hash_blob, pipe, &stream); });
  TarSource source{&pipe};
  // On error the reader is told to stop; otherwise it is drained to the end so
  // that both digests cover the whole blob (bytes after the tar's end included).
  bool reader_done = false;
  auto stop_reader = [&](bool drain) {
    if (reader_done) return;
    reader_done = true;
    if (drain) {
      source.Drain();
    } else {
      source.ReleaseCurrent();
      pipe.Cancel();
    }
    reader.join();
  };
  ScopeGuard join_reader([&] { stop_reader(false); });

  auto entries = ApplyTar(source, root.get(), options);
  if (!entries) {
    // A failed stream (bad gzip, I/O) is what made the tar fail: report that.
    bool stream_failed = pipe.failed();
    stop_reader(false);
    if (stream_failed) return pipe.status().error().Wrap(label);
    return std::move(entries).error().Wrap(label);
  }
  stop_reader(true);
  IMGTOOL_TRY(pipe.status().Wrap(label));

  ApplyResult result;
  result.digest = stream.digest;
  result.size = stream.size;
  result.diff_id = stream.diff_id;
  result.tar_size = stream.tar_size;
  result.compression = stream.compression;
  result.entries = *entries;
  if (options.expected_digest && *options.expected_digest != result.digest) {
    return DataLossError(StrCat("blob digest mismatch: expected ",
                                options.expected_digest->ToString(), ", got ",
                                result.digest.ToString()))
        .Wrap(label);
  }
  if (options.expected_diff_id && *options.expected_diff_id != result.diff_id) {
    return DataLossError(StrCat("diffID mismatch: expected ", options.expected_diff_id->ToString(),
                                ", got ", result.diff_id.ToString()))
        .Wrap(label);
  }
  return result;
}

}  // namespace imgtool::overlay
