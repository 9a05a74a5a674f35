// A directory removed with its contents when the owner goes away.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "common/error.h"

namespace imgtool {

class TempDir {
 public:
  // Creates a fresh directory "<parent>/<prefix>XXXXXX".
  static Result<TempDir> Create(const std::filesystem::path& parent, std::string_view prefix);
  // Under $TMPDIR or /tmp.
  static Result<TempDir> Create(std::string_view prefix = "imgtool-");

  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::filesystem::path& path() const { return path_; }
  // Keeps the directory; the caller owns it from now on.
  std::filesystem::path Release();

 private:
  explicit TempDir(std::filesystem::path path) : path_(std::move(path)) {}
  void Remove();

  std::filesystem::path path_;
};

// Removes a tree without following symlinks; makes directories writable first
// so that trees with read-only directories (as in rootfs images) go too.
Status RemoveTree(const std::filesystem::path& path);

}  // namespace imgtool
