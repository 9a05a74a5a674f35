// A file's parsed contents, kept while the file stays the same.
#pragma once

#include <sys/stat.h>

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "common/error.h"
#include "common/file_util.h"

namespace imgtool {

// For files only ever replaced by rename (index.json, snapshot metadata), so
// that a new version is a new inode: Get reads and parses the file once, and
// while a stat finds the same file unchanged (SameFileUnchanged, against the
// stat of the fd it was read from) hands out the parsed copy. Thread-safe.
template <typename T>
class FileContentCache {
 public:
  // The contents of `path` as `parse` (std::string -> Result<T>) makes them,
  // or nullopt when there is no such file.
  template <typename Parse>
  Result<std::optional<T>> Get(const std::filesystem::path& path, size_t max_size,
                               const Parse& parse) {
    struct stat st {};
    bool cached = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cached = value_.has_value();
    }
    // Nothing kept yet (a process's first read): no stat before the read,
    // which takes the stat of the very fd it reads anyway.
    if (cached) {
      if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return std::optional<T>();
        return ErrnoError("stat " + path.string());
      }
      std::lock_guard<std::mutex> lock(mutex_);
      if (value_ && SameFileUnchanged(st_, st)) return value_;
    }
    Result<std::string> text = ReadFileToStringWithStat(path, max_size, &st);
    if (!text) {
      if (text.error().code() == ErrorCode::kNotFound) return std::optional<T>();
      return std::move(text).error();
    }
    Result<T> parsed = parse(*text);
    if (!parsed) return std::move(parsed).error();
    std::lock_guard<std::mutex> lock(mutex_);
    st_ = st;
    value_ = *parsed;
    return value_;
  }

 private:
  std::mutex mutex_;
  struct stat st_ {};  // of the fd value_ was read from
  std::optional<T> value_;
};

}  // namespace imgtool
