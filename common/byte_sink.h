// Where a producer of bytes (a layer writer, an archive writer, a download)
// puts them, so that producers know nothing of where bytes end up: a store
// ingest, a file, a hash, a test buffer.
#pragma once

#include <cstddef>
#include <string>

#include "common/error.h"
#include "common/file_util.h"

namespace imgtool {

class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual Status Write(const void* data, size_t size) = 0;
};

// Writes to a file descriptor it does not own.
class FdSink final : public ByteSink {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  Status Write(const void* data, size_t size) override { return WriteAll(fd_, data, size); }

 private:
  int fd_;
};

// Appends to a string (tests, small blobs).
class StringSink final : public ByteSink {
 public:
  Status Write(const void* data, size_t size) override {
    out_.append(static_cast<const char*>(data), size);
    return OkStatus();
  }
  const std::string& data() const { return out_; }

 private:
  std::string out_;
};

}  // namespace imgtool
