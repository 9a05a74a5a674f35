// Layer format choices, each for determinism or for what peers do:
// - Order: a depth-first walk with each directory's names sorted bytewise (the
//   order of Go's filepath.WalkDir, which docker and buildah layers follow). It
//   is total and stable, keeps every directory right before its contents, and
//   streams with one directory listing in memory at a time.
// - No entry for the walked directory itself: docker, buildah and umoci emit no
//   "./" entry either, and one would make every layer reset the permissions and
//   mtime of "/" when applied on top of its parents.
// - Names are relative ("etc/passwd", directories "etc/"), uid/gid numeric with
//   empty uname/gname, mtime in whole seconds, no atime/ctime.
// - Hardlinks: the first path of an inode in walk order holds the data; later
//   ones are hardlink entries naming it.
// - Xattrs as SCHILY.xattr PAX records, without overlay's own (trusted.overlay.*,
//   user.overlay.*) and without security.selinux (a host label, which the
//   runtime sets, not the image).
// - Whiteout entries (kOverlayUpper) are empty regular files, mode 0, owner 0:0,
//   mtime 0: they carry no metadata of their own, so none is recorded.
#include "overlay/differ.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "common/file_util.h"
#include "common/log.h"
#include "common/unique_fd.h"
#include "overlay/tar_writer.h"

namespace imgtool::overlay {

namespace {

constexpr size_t kCopyBufferSize = 1 << 20;
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

using Xattrs = std::vector<std::pair<std::string, std::string>>;

bool IsOverlayXattr(std::string_view name) {
  return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
}

bool KeepXattr(std::string_view name) {
  return !IsOverlayXattr(name) && name != "security.selinux";
}

// Reads every xattr of one file, through an fd when we hold one, otherwise
// through a path that does not follow the last component (symlinks, devices).
class XattrReader {
 public:
  static XattrReader ForFd(int fd) { return XattrReader(fd, ""); }
  static XattrReader ForPath(std::string path) { return XattrReader(-1, std::move(path)); }

  Result<Xattrs> ReadAll() {
    Xattrs out;
    std::string names;
    while (true) {
      ssize_t size = List(nullptr, 0);
      if (size < 0) {
        if (errno == ENOTSUP || errno == EOPNOTSUPP) return out;
        return ErrnoError("list xattrs");
      }
      if (size == 0) return out;
      names.resize(static_cast<size_t>(size));
      ssize_t n = List(names.data(), names.size());
      if (n < 0 && errno == ERANGE) continue;  // grew meanwhile
      if (n < 0) return ErrnoError("list xattrs");
      names.resize(static_cast<size_t>(n));
      break;
    }
    for (size_t i = 0; i < names.size();) {
      size_t end = names.find('\0', i);
      if (end == std::string::npos) end = names.size();
      std::string name = names.substr(i, end - i);
      i = end + 1;
      if (name.empty()) continue;
      std::string value;
      while (true) {
        ssize_t size = Get(name.c_str(), nullptr, 0);
        if (size < 0 && errno == ENODATA) break;  // removed meanwhile
        if (size < 0) return ErrnoError("read xattr " + name);
        value.resize(static_cast<size_t>(size));
        ssize_t n = Get(name.c_str(), value.data(), value.size());
        if (n < 0 && errno == ERANGE) continue;
        if (n < 0) return ErrnoError("read xattr " + name);
        value.resize(static_cast<size_t>(n));
        out.emplace_back(std::move(name), std::move(value));
        break;
      }
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  XattrReader(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ssize_t List(char* buf, size_t size) {
    return fd_ >= 0 ? ::flistxattr(fd_, buf, size) : ::llistxattr(path_.c_str(), buf, size);
  }
  ssize_t Get(const char* name, void* buf, size_t size) {
    return fd_ >= 0 ? ::fgetxattr(fd_, name, buf, size)
                    : ::lgetxattr(path_.c_str(), name, buf, size);
  }

  int fd_;
  std::string path_;
};

bool IsOpaque(const Xattrs& xattrs) {
  for (const auto& [name, value] : xattrs) {
    if ((name == "trusted.overlay.opaque" || name == "user.overlay.opaque") && value == "y") {
      return true;
    }
  }
  return false;
}

Xattrs Filtered(Xattrs xattrs) {
  std::erase_if(xattrs, [](const auto& kv) { return !KeepXattr(kv.first); });
  return xattrs;
}

std::string ProcPath(int dir_fd, const std::string& name) {
  return StrCat("/proc/self/fd/", dir_fd, "/", name);
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

class TreeWalker {
 public:
  TreeWalker(const DiffOptions& options, TarWriter& tar)
      : options_(options), tar_(tar), buffer_(new char[kCopyBufferSize]) {}

  Status WalkRoot(int root_fd) {
    if (options_.whiteouts == WhiteoutSource::kOverlayUpper) {
      IMGTOOL_ASSIGN_OR_RETURN(Xattrs xattrs, XattrReader::ForFd(root_fd).ReadAll());
      if (IsOpaque(xattrs)) IMGTOOL_TRY(WriteWhiteout(std::string(kOpaqueMarker)));
    }
    return WalkDir(root_fd, "");
  }

 private:
  int64_t Mtime(const struct stat& st) const {
    int64_t mtime = st.st_mtim.tv_sec;
    if (options_.source_date_epoch && mtime > *options_.source_date_epoch) {
      mtime = *options_.source_date_epoch;
    }
    return mtime;
  }

  TarHeader BaseHeader(const std::string& path, const struct stat& st, TarType type) const {
    TarHeader h;
    h.name = path;
    h.type = type;
    h.mode = st.st_mode & 07777;
    h.uid = st.st_uid;
    h.gid = st.st_gid;
    h.mtime = Mtime(st);
    return h;
  }

  Status WriteWhiteout(const std::string& path) {
    TarHeader h;
    h.name = path;
    h.type = TarType::kRegular;
    h.mode = 0;
    return tar_.WriteHeader(h);
  }

  Status WalkDir(int dir_fd, const std::string& rel) {
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirNames(dir_fd));
    for (const std::string& name : names) {
      std::string path = JoinPath(rel, name);
      Status status = WriteEntry(dir_fd, rel, name, path);
      if (!status) return std::move(status).Wrap(StrCat("entry \"", path, "\""));
    }
    return OkStatus();
  }

  Status WriteEntry(int dir_fd, const std::string& rel, const std::string& name,
                    const std::string& path) {
    if (std::string_view(name).starts_with(kWhiteoutPrefix)) {
      // An OCI consumer would read such a name as a whiteout, not as a file.
      return InvalidArgumentError("name uses the reserved whiteout prefix \".wh.\"");
    }
    struct stat st;
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("stat");
    }
    bool overlay = options_.whiteouts == WhiteoutSource::kOverlayUpper;
    if (overlay && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
      // Checked before hardlinks: overlayfs may share one whiteout inode among many names.
      return WriteWhiteout(JoinPath(rel, std::string(kWhiteoutPrefix) + name));
    }
    if (!S_ISDIR(st.st_mode) && !S_ISSOCK(st.st_mode) && st.st_nlink > 1) {
      auto [it, inserted] = first_paths_.try_emplace({st.st_dev, st.st_ino}, path);
      if (!inserted) {
        TarHeader h = BaseHeader(path, st, TarType::kHardlink);
        h.linkname = it->second;
        return tar_.WriteHeader(h);
      }
    }
    switch (st.st_mode & S_IFMT) {
      case S_IFDIR:
        return WriteDirectory(dir_fd, name, path, st);
      case S_IFREG:
        return WriteRegular(dir_fd, name, path, st);
      case S_IFLNK: {
        std::string target(PATH_MAX, '\0');
        ssize_t n = ::readlinkat(dir_fd, name.c_str(), target.data(), target.size());
        if (n < 0) return ErrnoError("readlink");
        target.resize(static_cast<size_t>(n));
        TarHeader h = BaseHeader(path, st, TarType::kSymlink);
        h.linkname = std::move(target);
        IMGTOOL_ASSIGN_OR_RETURN(Xattrs xattrs,
                                 XattrReader::ForPath(ProcPath(dir_fd, name)).ReadAll());
        h.xattrs = Filtered(std::move(xattrs));
        return tar_.WriteHeader(h);
      }
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO: {
        TarType type = S_ISCHR(st.st_mode)   ? TarType::kCharDevice
                       : S_ISBLK(st.st_mode) ? TarType::kBlockDevice
                                             : TarType::kFifo;
        TarHeader h = BaseHeader(path, st, type);
        if (type != TarType::kFifo) {
          h.dev_major = major(st.st_rdev);
          h.dev_minor = minor(st.st_rdev);
        }
        IMGTOOL_ASSIGN_OR_RETURN(Xattrs xattrs,
                                 XattrReader::ForPath(ProcPath(dir_fd, name)).ReadAll());
        h.xattrs = Filtered(std::move(xattrs));
        return tar_.WriteHeader(h);
      }
      case S_IFSOCK:
        // Tar has no socket type; a socket only makes sense to a live process anyway.
        LogDebug("layer: skipping socket ", path);
        return OkStatus();
      default:
        return InvalidArgumentError("unsupported file type");
    }
  }

  Status WriteDirectory(int dir_fd, const std::string& name, const std::string& path,
                        const struct stat& st) {
    int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open directory");
    UniqueFd child(fd);
    IMGTOOL_ASSIGN_OR_RETURN(Xattrs xattrs, XattrReader::ForFd(child.get()).ReadAll());
    bool opaque = options_.whiteouts == WhiteoutSource::kOverlayUpper && IsOpaque(xattrs);
    TarHeader h = BaseHeader(path, st, TarType::kDirectory);
    h.xattrs = Filtered(std::move(xattrs));
    IMGTOOL_TRY(tar_.WriteHeader(h));
    if (opaque) IMGTOOL_TRY(WriteWhiteout(path + "/" + std::string(kOpaqueMarker)));
    return WalkDir(child.get(), path);
  }

  Status WriteRegular(int dir_fd, const std::string& name, const std::string& path,
                      const struct stat& st) {
    int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open");
    UniqueFd file(fd);
    IMGTOOL_ASSIGN_OR_RETURN(Xattrs xattrs, XattrReader::ForFd(file.get()).ReadAll());
    TarHeader h = BaseHeader(path, st, TarType::kRegular);
    h.size = st.st_size;
    h.xattrs = Filtered(std::move(xattrs));
    IMGTOOL_TRY(tar_.WriteHeader(h));
    int64_t left = st.st_size;
    while (left > 0) {
      size_t want = static_cast<size_t>(std::min<int64_t>(left, kCopyBufferSize));
      ssize_t n = ::read(file.get(), buffer_.get(), want);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("read");
      }
      if (n == 0) {
        return DataLossError(StrCat("file shrank while being read (", st.st_size - left, " of ",
                                    st.st_size, " bytes)"));
      }
      IMGTOOL_TRY(tar_.WriteData(buffer_.get(), static_cast<size_t>(n)));
      left -= n;
    }
    return OkStatus();
  }

  const DiffOptions& options_;
  TarWriter& tar_;
  std::unique_ptr<char[]> buffer_;
  std::map<std::pair<dev_t, ino_t>, std::string> first_paths_;
};

CompressOptions ToCompressOptions(const DiffOptions& options) {
  CompressOptions c;
  c.compression = options.compression;
  c.level = options.level;
  c.threads = options.threads;
  return c;
}

// True for a ustar/GNU/v7 header block with a valid checksum, or an all-zero
// block (an empty archive).
bool LooksLikeTarHeader(const uint8_t* block) {
  bool all_zero = std::all_of(block, block + 512, [](uint8_t b) { return b == 0; });
  if (all_zero) return true;
  int64_t stored = 0;
  size_t i = 148;
  while (i < 156 && block[i] == ' ') ++i;
  for (; i < 156 && block[i] >= '0' && block[i] <= '7'; ++i) stored = stored * 8 + (block[i] - '0');
  int64_t unsigned_sum = 0, signed_sum = 0;
  for (size_t j = 0; j < 512; ++j) {
    uint8_t b = (j >= 148 && j < 156) ? ' ' : block[j];
    unsigned_sum += b;
    signed_sum += static_cast<int8_t>(b);
  }
  return stored == unsigned_sum || stored == signed_sum;
}

}  // namespace

namespace {

// Counts what passes through to the next sink.
class CountingSink final : public ByteSink {
 public:
  explicit CountingSink(ByteSink& next) : next_(next) {}
  Status Write(const void* data, size_t size) override {
    size_ += static_cast<int64_t>(size);
    return next_.Write(data, size);
  }
  int64_t size() const { return size_; }

 private:
  ByteSink& next_;
  int64_t size_ = 0;
};

// The walk, the tar and the compressor; `blob` is the sink the compressed
// bytes go to. Fills diff_id and media_type.
Status WriteLayerInto(const std::filesystem::path& dir, ByteSink& blob, const DiffOptions& options,
                      LayerInfo* info) {
  auto wrap = [&](Error e) { return std::move(e.Wrap("write layer from " + dir.string())); };
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return wrap(ErrnoError("open"));
  UniqueFd root(fd);
  auto compressor = NewCompressor(ToCompressOptions(options), blob);
  if (!compressor) return wrap(std::move(compressor).error());
  HashingSink tar_bytes(**compressor);
  TarWriter tar(tar_bytes);
  TreeWalker walker(options, tar);
  if (Status s = walker.WalkRoot(root.get()); !s) return wrap(std::move(s).error());
  if (Status s = tar.Finish(); !s) return wrap(std::move(s).error());
  if (Status s = (*compressor)->Finish(); !s) return wrap(std::move(s).error());
  info->diff_id = tar_bytes.Finish();
  info->media_type = std::string(LayerMediaType(options.compression));
  return OkStatus();
}

}  // namespace

Result<LayerInfo> WriteLayer(const std::filesystem::path& dir, ByteSink& out,
                             const DiffOptions& options) {
  HashingSink blob(out);
  LayerInfo info;
  IMGTOOL_TRY(WriteLayerInto(dir, blob, options, &info));
  info.digest = blob.Finish();
  info.size = blob.size();
  return info;
}

Result<LayerInfo> WriteLayerToStore(const std::filesystem::path& dir, store::IngestWriter& writer,
                                    const DiffOptions& options) {
  CountingSink blob(writer);
  LayerInfo info;
  IMGTOOL_TRY(WriteLayerInto(dir, blob, options, &info));
  IMGTOOL_TRY(writer.Commit(blob.size(), Digest()).Wrap("store layer"));
  IMGTOOL_ASSIGN_OR_RETURN(info.digest, writer.digest());
  info.size = blob.size();
  return info;
}

Result<LayerInfo> CompressTarStream(int tar_fd, ByteSink& out, const DiffOptions& options) {
  auto wrap = [](Error e) { return std::move(e.Wrap("compress tar")); };
  auto reader = DecompressingReader::Open(tar_fd);
  if (!reader) return wrap(std::move(reader).error());
  HashingSink blob(out);
  auto compressor = NewCompressor(ToCompressOptions(options), blob);
  if (!compressor) return wrap(std::move(compressor).error());
  HashingSink tar_bytes(**compressor);
  std::unique_ptr<uint8_t[]> buffer(new uint8_t[kCopyBufferSize]);
  bool first = true;
  while (true) {
    auto n = reader->Read(buffer.get(), kCopyBufferSize);
    if (!n) return wrap(std::move(n).error());
    if (*n == 0) break;
    size_t filled = *n;
    if (first) {
      // Fill the first header so a non-tar input fails here rather than in every
      // later reader of the image.
      while (filled < 512) {
        auto more = reader->Read(buffer.get() + filled, 512 - filled);
        if (!more) return wrap(std::move(more).error());
        if (*more == 0) break;
        filled += *more;
      }
      if (filled < 512 || !LooksLikeTarHeader(buffer.get())) {
        return wrap(InvalidArgumentError("input is not a tar archive"));
      }
      first = false;
    }
    if (Status s = tar_bytes.Write(buffer.get(), filled); !s) return wrap(std::move(s).error());
  }
  if (first) return wrap(InvalidArgumentError("input is empty, not a tar archive"));
  if (Status s = (*compressor)->Finish(); !s) return wrap(std::move(s).error());
  LayerInfo info;
  info.diff_id = tar_bytes.Finish();
  info.digest = blob.Finish();
  info.size = blob.size();
  info.media_type = std::string(LayerMediaType(options.compression));
  return info;
}

}  // namespace imgtool::overlay
