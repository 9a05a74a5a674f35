// imgtool build --verify-reproducible: a second build from nothing, in a store
// of its own, compared with the first file by file.
#include <archive.h>
#include <archive_entry.h>
#include <unistd.h>

#include <map>
#include <memory>

#include "builder/builder.h"
#include "common/digest.h"
#include "common/temp_dir.h"
#include "store/store.h"

namespace imgtool::builder {

namespace fs = std::filesystem;

namespace {

struct FileFacts {
  std::string type;
  unsigned mode = 0;
  int64_t uid = 0;
  int64_t gid = 0;
  int64_t mtime = 0;
  std::string content;  // digest of the data, or the link target
};

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};

Result<std::map<std::string, FileFacts>> ListLayer(const store::Store& store, const Digest& blob) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, store.content().OpenRaw(blob));
  std::unique_ptr<archive, ArchiveDeleter> reader(archive_read_new());
  archive_read_support_filter_all(reader.get());
  archive_read_support_format_tar(reader.get());
  if (archive_read_open_fd(reader.get(), fd.get(), 1 << 16) != ARCHIVE_OK) {
    return DataLossError("layer " + blob.ToString() + ": " + archive_error_string(reader.get()));
  }
  std::map<std::string, FileFacts> files;
  archive_entry* entry = nullptr;
  while (true) {
    int rc = archive_read_next_header(reader.get(), &entry);
    if (rc == ARCHIVE_EOF) break;
    if (rc < ARCHIVE_WARN) {
      return DataLossError("layer " + blob.ToString() + ": " + archive_error_string(reader.get()));
    }
    FileFacts facts;
    mode_t type = archive_entry_filetype(entry);
    facts.type = S_ISDIR(type)   ? "directory"
                 : S_ISLNK(type) ? "symlink"
                 : S_ISREG(type) ? "file"
                                 : "special";
    if (archive_entry_hardlink(entry) != nullptr) {
      facts.type = "hardlink";
      facts.content = archive_entry_hardlink(entry);
    }
    facts.mode = archive_entry_perm(entry);
    facts.uid = archive_entry_uid(entry);
    facts.gid = archive_entry_gid(entry);
    facts.mtime = archive_entry_mtime(entry);
    if (S_ISLNK(type))
      facts.content = archive_entry_symlink(entry) ? archive_entry_symlink(entry) : "";
    if (S_ISREG(type) && facts.type == "file") {
      Sha256Hasher hasher;
      const void* buf = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      while (archive_read_data_block(reader.get(), &buf, &size, &offset) == ARCHIVE_OK) {
        hasher.Update(buf, size);
      }
      facts.content = hasher.Finish().ToString();
    }
    files[archive_entry_pathname(entry)] = std::move(facts);
  }
  return files;
}

std::vector<std::string> CompareLayers(const std::map<std::string, FileFacts>& a,
                                       const std::map<std::string, FileFacts>& b) {
  std::vector<std::string> out;
  for (const auto& [path, fa] : a) {
    auto it = b.find(path);
    if (it == b.end()) {
      out.push_back(path + ": only in the first build");
      continue;
    }
    const FileFacts& fb = it->second;
    std::string how;
    auto add = [&](const std::string& what) { how += (how.empty() ? "" : ", ") + what; };
    if (fa.type != fb.type) add("type " + fa.type + " vs " + fb.type);
    if (fa.content != fb.content) add("content");
    if (fa.mtime != fb.mtime)
      add("mtime " + std::to_string(fa.mtime) + " vs " + std::to_string(fb.mtime));
    if (fa.mode != fb.mode) {
      char m[64];
      std::snprintf(m, sizeof(m), "mode %04o vs %04o", fa.mode, fb.mode);
      add(m);
    }
    if (fa.uid != fb.uid || fa.gid != fb.gid) {
      add("owner " + std::to_string(fa.uid) + ":" + std::to_string(fa.gid) + " vs " +
          std::to_string(fb.uid) + ":" + std::to_string(fb.gid));
    }
    if (!how.empty()) out.push_back(path + ": " + how);
  }
  for (const auto& [path, fb] : b) {
    if (!a.count(path)) out.push_back(path + ": only in the second build");
  }
  return out;
}

}  // namespace

Result<ReproducibilityReport> VerifyReproducible(const BuildOptions& options) {
  IMGTOOL_ASSIGN_OR_RETURN(BuildResult first, Build(options));
  std::error_code ec;
  fs::create_directories(options.state_dir / "tmp", ec);
  IMGTOOL_ASSIGN_OR_RETURN(TempDir scratch, TempDir::Create(options.state_dir / "tmp", "verify-"));
  BuildOptions again = options;
  again.store_root = scratch.path() / "root";
  again.state_dir = scratch.path() / "root-state";
  again.no_cache = true;
  again.outputs.clear();
  again.tags = {"localhost/imgtool-verify:second"};
  IMGTOOL_ASSIGN_OR_RETURN(BuildResult second, Build(again).Wrap("second build"));

  ReproducibilityReport report;
  report.first = first.manifest_digest;
  report.second = second.manifest_digest;
  report.same = first.manifest_digest == second.manifest_digest;
  if (report.same) return report;
  IMGTOOL_ASSIGN_OR_RETURN(auto store_a, store::Store::Open(options.store_root));
  IMGTOOL_ASSIGN_OR_RETURN(auto store_b, store::Store::Open(again.store_root));
  IMGTOOL_ASSIGN_OR_RETURN(store::Manifest manifest_a,
                           store_a->ReadManifest(first.manifest_digest));
  IMGTOOL_ASSIGN_OR_RETURN(store::Manifest manifest_b,
                           store_b->ReadManifest(second.manifest_digest));
  if (first.config_digest != second.config_digest) {
    report.differences.push_back("image config: " + first.config_digest.ToString() + " vs " +
                                 second.config_digest.ToString());
  }
  if (manifest_a.layers.size() != manifest_b.layers.size()) {
    report.differences.push_back("layer count: " + std::to_string(manifest_a.layers.size()) +
                                 " vs " + std::to_string(manifest_b.layers.size()));
    return report;
  }
  for (size_t i = 0; i < manifest_a.layers.size(); ++i) {
    if (manifest_a.layers[i].digest == manifest_b.layers[i].digest) continue;
    IMGTOOL_ASSIGN_OR_RETURN(auto files_a, ListLayer(*store_a, manifest_a.layers[i].digest));
    IMGTOOL_ASSIGN_OR_RETURN(auto files_b, ListLayer(*store_b, manifest_b.layers[i].digest));
    std::vector<std::string> diffs = CompareLayers(files_a, files_b);
    if (diffs.empty()) diffs.push_back("same files, different tar bytes (entry order or headers)");
    for (const std::string& line : diffs) {
      report.differences.push_back("layer " + std::to_string(i + 1) + ": " + line);
    }
  }
  return report;
}

}  // namespace imgtool::builder
