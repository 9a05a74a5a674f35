// Helpers for the layer codec tests: building tars in memory (hostile ones
// included), turning bytes into fds, and describing a tree so two trees can be
// compared entry by entry.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/byte_sink.h"
#include "common/file_util.h"
#include "common/unique_fd.h"
#include "overlay/compression.h"
#include "overlay/tar_writer.h"

namespace imgtool::overlay::testing {

inline constexpr int64_t kTestMtime = 1700000000;

// Builds a tar in memory; names are written exactly as given.
class TarBuilder {
 public:
  TarBuilder& Add(TarHeader header, std::string_view data = "") {
    if (header.type == TarType::kRegular) header.size = static_cast<int64_t>(data.size());
    entries_.push_back({std::move(header), std::string(data)});
    return *this;
  }
  TarBuilder& File(std::string name, std::string_view data, uint32_t mode = 0644) {
    return Add(Header(std::move(name), TarType::kRegular, mode), data);
  }
  TarBuilder& Dir(std::string name, uint32_t mode = 0755) {
    return Add(Header(std::move(name), TarType::kDirectory, mode));
  }
  TarBuilder& Symlink(std::string name, std::string target) {
    TarHeader h = Header(std::move(name), TarType::kSymlink, 0777);
    h.linkname = std::move(target);
    return Add(std::move(h));
  }
  TarBuilder& Hardlink(std::string name, std::string target) {
    TarHeader h = Header(std::move(name), TarType::kHardlink, 0644);
    h.linkname = std::move(target);
    return Add(std::move(h));
  }
  TarBuilder& CharDevice(std::string name, uint32_t major, uint32_t minor) {
    TarHeader h = Header(std::move(name), TarType::kCharDevice, 0666);
    h.dev_major = major;
    h.dev_minor = minor;
    return Add(std::move(h));
  }
  TarBuilder& Fifo(std::string name) { return Add(Header(std::move(name), TarType::kFifo, 0640)); }

  std::string Tar() const {
    StringSink sink;
    TarWriter writer(sink);
    for (const auto& [header, data] : entries_) {
      EXPECT_TRUE(writer.WriteHeader(header).has_value());
      if (!data.empty()) {
        EXPECT_TRUE(writer.WriteData(data.data(), data.size()).has_value());
      }
    }
    EXPECT_TRUE(writer.Finish().has_value());
    return sink.data();
  }

  static TarHeader Header(std::string name, TarType type, uint32_t mode) {
    TarHeader h;
    h.name = std::move(name);
    h.type = type;
    h.mode = mode;
    h.mtime = kTestMtime;
    return h;
  }

 private:
  std::vector<std::pair<TarHeader, std::string>> entries_;
};

inline std::string Compress(std::string_view data, Compression compression, int threads = 0,
                            int level = -1) {
  StringSink sink;
  CompressOptions options;
  options.compression = compression;
  options.threads = threads;
  options.level = level;
  auto compressor = NewCompressor(options, sink);
  EXPECT_TRUE(compressor.has_value()) << compressor.error().ToString();
  if (!compressor) return "";
  EXPECT_TRUE((*compressor)->Write(data.data(), data.size()).has_value());
  EXPECT_TRUE((*compressor)->Finish().has_value());
  return sink.data();
}

// An anonymous file holding `bytes`, positioned at its start.
inline UniqueFd BytesFd(std::string_view bytes) {
  int fd = ::memfd_create("layer", MFD_CLOEXEC);
  EXPECT_GE(fd, 0);
  EXPECT_TRUE(WriteAll(fd, bytes).has_value());
  ::lseek(fd, 0, SEEK_SET);
  return UniqueFd(fd);
}

// Compressible but not trivial bytes: words from a small vocabulary chosen by
// a fixed pseudo-random sequence, with some raw noise mixed in.
inline std::string TestData(size_t size, uint32_t seed = 1) {
  static const char* kWords[] = {"layer ",    "overlay ", "digest ", "sha256 ", "tar ",
                                 "whiteout ", "image ",   "\n",      "config ", "0123456789 "};
  std::string out;
  out.reserve(size + 16);
  uint32_t x = seed * 2654435761u + 1;
  while (out.size() < size) {
    x = x * 1664525u + 1013904223u;
    if ((x >> 28) == 0) {
      out.push_back(static_cast<char>(x >> 8));
    } else {
      out += kWords[(x >> 16) % 10];
    }
  }
  out.resize(size);
  return out;
}

// Reads a whole (possibly compressed) stream through DecompressingReader.
inline Result<std::string> Decompress(std::string_view blob) {
  UniqueFd fd = BytesFd(blob);
  IMGTOOL_ASSIGN_OR_RETURN(DecompressingReader reader, DecompressingReader::Open(fd.get()));
  std::string out;
  std::string buf(1 << 16, '\0');
  while (true) {
    IMGTOOL_ASSIGN_OR_RETURN(size_t n, reader.Read(buf.data(), buf.size()));
    if (n == 0) break;
    out.append(buf.data(), n);
  }
  return out;
}

// One tar entry as libarchive reads it.
struct TarEntryInfo {
  std::string name;
  char type = '?';  // f d l h c b p
  unsigned mode = 0;
  int64_t uid = 0;
  int64_t gid = 0;
  int64_t mtime = 0;
  int64_t size = 0;
  std::string uname;
  std::string gname;
  std::string link;
  bool atime_set = false;
  bool ctime_set = false;
  std::map<std::string, std::string> xattrs;
  std::string data;
};

// Lists a plain tar with libarchive (an independent reader of what we write).
inline std::vector<TarEntryInfo> ListTar(std::string_view tar) {
  std::vector<TarEntryInfo> out;
  std::unique_ptr<struct archive, int (*)(struct archive*)> a(archive_read_new(),
                                                              archive_read_free);
  archive_read_support_format_tar(a.get());
  if (archive_read_open_memory(a.get(), tar.data(), tar.size()) != ARCHIVE_OK) {
    ADD_FAILURE() << archive_error_string(a.get());
    return out;
  }
  struct archive_entry* e;
  int r;
  while ((r = archive_read_next_header(a.get(), &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
    TarEntryInfo info;
    info.name = archive_entry_pathname(e);
    if (archive_entry_hardlink(e) != nullptr) {
      info.type = 'h';
      info.link = archive_entry_hardlink(e);
    } else {
      switch (archive_entry_filetype(e)) {
        case AE_IFREG:
          info.type = 'f';
          break;
        case AE_IFDIR:
          info.type = 'd';
          break;
        case AE_IFLNK:
          info.type = 'l';
          info.link = archive_entry_symlink(e);
          break;
        case AE_IFCHR:
          info.type = 'c';
          break;
        case AE_IFBLK:
          info.type = 'b';
          break;
        case AE_IFIFO:
          info.type = 'p';
          break;
        default:
          break;
      }
    }
    info.mode = archive_entry_perm(e);
    info.uid = archive_entry_uid(e);
    info.gid = archive_entry_gid(e);
    info.mtime = archive_entry_mtime(e);
    info.size = archive_entry_size(e);
    if (archive_entry_uname(e) != nullptr) info.uname = archive_entry_uname(e);
    if (archive_entry_gname(e) != nullptr) info.gname = archive_entry_gname(e);
    info.atime_set = archive_entry_atime_is_set(e) != 0;
    info.ctime_set = archive_entry_ctime_is_set(e) != 0;
    archive_entry_xattr_reset(e);
    const char* name;
    const void* value;
    size_t size;
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
      info.xattrs[name] = std::string(static_cast<const char*>(value), size);
    }
    char buf[65536];
    la_ssize_t n;
    while ((n = archive_read_data(a.get(), buf, sizeof(buf))) > 0) {
      info.data.append(buf, static_cast<size_t>(n));
    }
    out.push_back(std::move(info));
  }
  EXPECT_EQ(r, ARCHIVE_EOF) << archive_error_string(a.get());
  return out;
}

inline std::vector<std::string> TarNames(std::string_view tar) {
  std::vector<std::string> names;
  for (const TarEntryInfo& e : ListTar(tar)) names.push_back(e.name);
  return names;
}

// One entry of a tree as the tests compare it.
struct Node {
  char type = '?';  // f d l c b p s
  unsigned mode = 0;
  unsigned uid = 0;
  unsigned gid = 0;
  int64_t mtime = 0;
  std::string content;  // file bytes or symlink target
  unsigned long rdev = 0;
  std::string link_group;  // for files with nlink > 1: the first path of the inode
  std::map<std::string, std::string> xattrs;

  friend bool operator==(const Node&, const Node&) = default;
};

inline std::ostream& operator<<(std::ostream& os, const Node& n) {
  os << "{" << n.type << " mode=" << std::oct << n.mode << std::dec << " " << n.uid << ":" << n.gid
     << " mtime=" << n.mtime << " size=" << n.content.size() << " rdev=" << n.rdev
     << " group=" << n.link_group << " xattrs=" << n.xattrs.size() << "}";
  return os;
}

struct TreeOptions {
  bool with_dir_mtimes = true;
  bool with_owners = true;
};

// Describes every entry below `root` (not the root itself), keyed by relative path.
inline std::map<std::string, Node> DescribeTree(const std::filesystem::path& root,
                                                TreeOptions options = {}) {
  std::map<std::string, Node> out;
  std::map<std::pair<dev_t, ino_t>, std::string> first;
  std::vector<std::string> paths;
  for (auto it = std::filesystem::recursive_directory_iterator(root);
       it != std::filesystem::recursive_directory_iterator(); ++it) {
    paths.push_back(std::filesystem::relative(it->path(), root).string());
  }
  std::sort(paths.begin(), paths.end());
  for (const std::string& rel : paths) {
    std::string full = (root / rel).string();
    struct stat st;
    if (::lstat(full.c_str(), &st) != 0) {
      ADD_FAILURE() << "lstat " << full;
      continue;
    }
    Node n;
    n.mode = st.st_mode & 07777;
    if (options.with_owners) {
      n.uid = st.st_uid;
      n.gid = st.st_gid;
    }
    n.mtime = st.st_mtim.tv_sec;
    switch (st.st_mode & S_IFMT) {
      case S_IFREG: {
        n.type = 'f';
        std::ifstream in(full, std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        n.content = ss.str();
        break;
      }
      case S_IFDIR:
        n.type = 'd';
        if (!options.with_dir_mtimes) n.mtime = 0;
        break;
      case S_IFLNK: {
        n.type = 'l';
        n.mode = 0;  // meaningless on Linux
        std::string target(PATH_MAX, '\0');
        ssize_t len = ::readlink(full.c_str(), target.data(), target.size());
        target.resize(len > 0 ? static_cast<size_t>(len) : 0);
        n.content = target;
        break;
      }
      case S_IFCHR:
        n.type = 'c';
        n.rdev = st.st_rdev;
        break;
      case S_IFBLK:
        n.type = 'b';
        n.rdev = st.st_rdev;
        break;
      case S_IFIFO:
        n.type = 'p';
        break;
      default:
        n.type = 's';
    }
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto [it, inserted] = first.try_emplace({st.st_dev, st.st_ino}, rel);
      n.link_group = it->second;
    }
    char names[4096];
    ssize_t len = ::llistxattr(full.c_str(), names, sizeof(names));
    for (ssize_t i = 0; i < len;) {
      std::string name(names + i);
      i += static_cast<ssize_t>(name.size()) + 1;
      char value[4096];
      ssize_t vlen = ::lgetxattr(full.c_str(), name.c_str(), value, sizeof(value));
      if (vlen >= 0) n.xattrs[name] = std::string(value, static_cast<size_t>(vlen));
    }
    out[rel] = n;
  }
  return out;
}

// Names of a tree's entries, sorted.
inline std::vector<std::string> TreeNames(const std::filesystem::path& root) {
  std::vector<std::string> names;
  for (const auto& [path, node] : DescribeTree(root)) names.push_back(path);
  return names;
}

}  // namespace imgtool::overlay::testing
