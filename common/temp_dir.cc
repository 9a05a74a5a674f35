#include "common/temp_dir.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdlib>
#include <system_error>

namespace imgtool {

namespace fs = std::filesystem;

Result<TempDir> TempDir::Create(const fs::path& parent, std::string_view prefix) {
  std::string tmpl = (parent / (std::string(prefix) + "XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return ErrnoError("create temporary directory in " + parent.string());
  }
  return TempDir(fs::path(tmpl));
}

Result<TempDir> TempDir::Create(std::string_view prefix) {
  const char* tmp = std::getenv("TMPDIR");
  return Create(fs::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp"), prefix);
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) {
  other.path_.clear();
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    Remove();
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

TempDir::~TempDir() { Remove(); }

fs::path TempDir::Release() {
  fs::path released = std::move(path_);
  path_.clear();
  return released;
}

void TempDir::Remove() {
  if (path_.empty()) return;
  (void)RemoveTree(path_);
  path_.clear();
}

Status RemoveTree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (!ec) return OkStatus();
  // A read-only directory inside the tree: open up every directory, then retry.
  for (auto it = fs::recursive_directory_iterator(
           path, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      ::chmod(it->path().c_str(), 0700);
    }
  }
  ::chmod(path.c_str(), 0700);
  ec.clear();
  fs::remove_all(path, ec);
  if (ec) return ErrnoError("remove " + path.string(), ec.value());
  return OkStatus();
}

}  // namespace imgtool
