// Small file helpers: full reads and writes, and atomic replace (temp, fsync, rename).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace imgtool {

// Writes all bytes, retrying short writes and EINTR.
Status WriteAll(int fd, const void* data, size_t size);
inline Status WriteAll(int fd, std::string_view data) {
  return WriteAll(fd, data.data(), data.size());
}
// Reads until `size` bytes or EOF; returns how many were read.
Result<size_t> ReadFull(int fd, void* data, size_t size);

// Reads a whole file; files larger than `max_size` are InvalidArgument.
Result<std::string> ReadFileToString(const std::filesystem::path& path,
                                     size_t max_size = 64u << 20);
// The same, with the stat of the very fd read in `*st` (for caches that go
// by SameFileUnchanged).
Result<std::string> ReadFileToStringWithStat(const std::filesystem::path& path, size_t max_size,
                                             struct stat* st);
Result<std::string> ReadFdToString(int fd, size_t max_size = 64u << 20);

// Replaces `path` atomically: writes a temp file beside it, fsyncs it, renames it
// over `path` and fsyncs the directory. Readers see the old or the new file.
Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data,
                       mode_t mode = 0644);

Status FsyncPath(const std::filesystem::path& path);

// True when `a` and `b` describe the same file, unchanged between them: the
// same device, inode, size, mtime and ctime. For files only ever replaced by
// rename (index.json, snapshot metadata), a new version is a new inode, and
// an in-place write changes the times (to the nanosecond where the kernel
// hands out fine-grained ctimes to a file whose ctime was looked at).
bool SameFileUnchanged(const struct stat& a, const struct stat& b);

Result<UniqueFd> OpenFile(const std::filesystem::path& path, int flags, mode_t mode = 0);

// The names in the directory open at `dir_fd`, without "." and "..", sorted
// by byte value (the same order on every filesystem, for reproducible
// output). Reads through a descriptor of its own, so `dir_fd` keeps its
// offset and stays open.
Result<std::vector<std::string>> ListDirNames(int dir_fd);

}  // namespace imgtool
