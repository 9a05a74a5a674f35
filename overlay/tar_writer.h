// A small deterministic ustar/PAX writer: the same headers in give the same
// bytes out, with no user or group names, no atime/ctime and PAX records only
// where ustar cannot hold a value (long names, big numbers, xattrs).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/byte_sink.h"
#include "common/error.h"

namespace imgtool::overlay {

enum class TarType : char {
  kRegular = '0',
  kHardlink = '1',
  kSymlink = '2',
  kCharDevice = '3',
  kBlockDevice = '4',
  kDirectory = '5',
  kFifo = '6',
};

struct TarHeader {
  // The archive path, written as given (directories get a trailing "/" if they
  // lack one). The writer does not judge names, so tests can write hostile ones.
  std::string name;
  TarType type = TarType::kRegular;
  uint32_t mode = 0644;  // permission bits incl. setuid/setgid/sticky (07777)
  int64_t uid = 0;
  int64_t gid = 0;
  int64_t size = 0;      // bytes of data that follow (regular files only)
  int64_t mtime = 0;     // whole seconds
  std::string linkname;  // symlink target or hardlink target path
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  // Written as SCHILY.xattr.NAME records, sorted by name; values are raw bytes.
  std::vector<std::pair<std::string, std::string>> xattrs;
};

class TarWriter {
 public:
  explicit TarWriter(ByteSink& out);
  ~TarWriter();
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;

  // Starts an entry; the previous entry's data must be complete.
  Status WriteHeader(const TarHeader& header);
  // Appends data to the current entry; never more than its header's size.
  Status WriteData(const void* data, size_t size);
  // Writes the end-of-archive marker (two zero blocks) and flushes.
  Status Finish();

  int64_t bytes_written() const { return bytes_written_; }

 private:
  Status Append(const void* data, size_t size);
  Status Flush();
  Status WritePaxHeader(const std::string& name, const std::string& records);

  ByteSink& out_;
  std::unique_ptr<char[]> buffer_;
  size_t buffered_ = 0;
  int64_t remaining_ = 0;  // data bytes still owed to the current entry
  int64_t padding_ = 0;    // zero bytes that complete its last block
  int64_t bytes_written_ = 0;
  bool finished_ = false;
};

}  // namespace imgtool::overlay
