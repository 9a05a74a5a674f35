// Builds small images and archives in memory for the CLI tests: layer tars,
// configs and manifests, laid out as an oci-archive or docker-archive that a
// test may tamper with before it is tarred.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/digest.h"
#include "store/oci_types.h"

namespace imgtool::cli::testing {

struct TarEntry {
  TarEntry(std::string name_in, std::string data_in = "", char type_in = 'f',
           std::string link_in = "", unsigned mode_in = 0644)
      : name(std::move(name_in)),
        data(std::move(data_in)),
        type(type_in),
        link(std::move(link_in)),
        mode(mode_in) {}

  std::string name;
  std::string data;
  char type = 'f';  // 'f' file, 'd' directory, 'l' symlink, 'h' hardlink, 'c' char device
  std::string link;
  unsigned mode = 0644;
  int uid = 0;
  int gid = 0;
  unsigned dev_major = 0;
  unsigned dev_minor = 0;
};

inline la_ssize_t AppendToString(struct archive*, void* client, const void* buf, size_t size) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buf), size);
  return static_cast<la_ssize_t>(size);
}

// A tar of the entries in the order given; mtime fixed so bytes are stable.
inline std::string MakeTar(const std::vector<TarEntry>& entries) {
  std::string out;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_add_filter_none(a);
  archive_write_set_bytes_in_last_block(a, 1);
  archive_write_open(a, &out, nullptr, AppendToString, nullptr);
  for (const TarEntry& e : entries) {
    struct archive_entry* ae = archive_entry_new();
    archive_entry_set_pathname(ae, e.name.c_str());
    archive_entry_set_mtime(ae, 1700000000, 0);
    archive_entry_set_uid(ae, e.uid);
    archive_entry_set_gid(ae, e.gid);
    archive_entry_set_perm(ae, e.mode);
    switch (e.type) {
      case 'd':
        archive_entry_set_filetype(ae, AE_IFDIR);
        break;
      case 'l':
        archive_entry_set_filetype(ae, AE_IFLNK);
        archive_entry_set_symlink(ae, e.link.c_str());
        break;
      case 'h':
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_hardlink(ae, e.link.c_str());
        break;
      case 'c':
        archive_entry_set_filetype(ae, AE_IFCHR);
        archive_entry_set_rdevmajor(ae, e.dev_major);
        archive_entry_set_rdevminor(ae, e.dev_minor);
        break;
      default:
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_size(ae, static_cast<la_int64_t>(e.data.size()));
    }
    EXPECT_EQ(archive_write_header(a, ae), ARCHIVE_OK) << archive_error_string(a);
    if (e.type == 'f' && !e.data.empty()) {
      EXPECT_EQ(archive_write_data(a, e.data.data(), e.data.size()),
                static_cast<la_ssize_t>(e.data.size()));
    }
    archive_entry_free(ae);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

inline std::string Gzip(const std::string& data) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// Name -> content of every file of an archive; tarred in name order.
using Files = std::map<std::string, std::string>;

inline std::string TarOf(const Files& files) {
  std::vector<TarEntry> entries;
  for (const auto& [name, data] : files) entries.push_back(TarEntry{name, data});
  return MakeTar(entries);
}

struct BuiltImage {
  std::vector<std::string> layer_blobs;  // as stored: plain or gzip
  std::vector<std::string> layer_media_types;
  std::vector<Digest> diff_ids;
  std::string config;
  std::string manifest;

  Digest ConfigDigest() const { return Digest::Sha256Of(config); }
  Digest ManifestDigest() const { return Digest::Sha256Of(manifest); }
};

inline std::string ConfigJson(const std::vector<Digest>& diff_ids, const std::string& marker) {
  nlohmann::ordered_json config;
  config["created"] = "2023-11-14T22:13:20Z";
  config["architecture"] = store::HostPlatform().architecture;
  config["os"] = "linux";
  config["config"] = {{"Env", {"PATH=/bin"}}, {"Labels", {{"marker", marker}}}};
  nlohmann::ordered_json ids = nlohmann::ordered_json::array();
  for (const Digest& d : diff_ids) ids.push_back(d.ToString());
  config["rootfs"] = {{"type", "layers"}, {"diff_ids", ids}};
  nlohmann::ordered_json history = nlohmann::ordered_json::array();
  for (size_t i = 0; i < diff_ids.size(); ++i) {
    history.push_back({{"created", "2023-11-14T22:13:20Z"},
                       {"created_by", "layer " + std::to_string(i) + " of " + marker}});
  }
  config["history"] = history;
  return config.dump();
}

inline std::string DescriptorJson(std::string_view media_type, const std::string& blob) {
  return nlohmann::ordered_json{{"mediaType", media_type},
                                {"digest", Digest::Sha256Of(blob).ToString()},
                                {"size", blob.size()}}
      .dump();
}

// An OCI image of the given layer tars; `config` overrides the generated one.
inline BuiltImage BuildImage(const std::vector<std::string>& layer_tars, bool gzip,
                             const std::string& marker, const std::string& config = "") {
  BuiltImage image;
  for (const std::string& tar : layer_tars) {
    image.diff_ids.push_back(Digest::Sha256Of(tar));
    image.layer_blobs.push_back(gzip ? Gzip(tar) : tar);
    image.layer_media_types.emplace_back(gzip ? store::media_type::kOciLayerTarGzip
                                              : store::media_type::kOciLayerTar);
  }
  image.config = config.empty() ? ConfigJson(image.diff_ids, marker) : config;
  nlohmann::ordered_json manifest;
  manifest["schemaVersion"] = 2;
  manifest["mediaType"] = store::media_type::kOciManifest;
  manifest["config"] =
      nlohmann::ordered_json::parse(DescriptorJson(store::media_type::kOciConfig, image.config));
  manifest["layers"] = nlohmann::ordered_json::array();
  for (size_t i = 0; i < image.layer_blobs.size(); ++i) {
    manifest["layers"].push_back(nlohmann::ordered_json::parse(
        DescriptorJson(image.layer_media_types[i], image.layer_blobs[i])));
  }
  image.manifest = manifest.dump();
  return image;
}

inline std::string BlobPath(const std::string& blob) {
  return "blobs/sha256/" + Digest::Sha256Of(blob).hex();
}

// An OCI layout: one index.json entry per (image, ref.name); "" = no name.
inline Files OciLayout(const std::vector<std::pair<const BuiltImage*, std::string>>& images) {
  Files files;
  files["oci-layout"] = R"({"imageLayoutVersion":"1.0.0"})";
  nlohmann::ordered_json index;
  index["schemaVersion"] = 2;
  index["manifests"] = nlohmann::ordered_json::array();
  for (const auto& [image, name] : images) {
    files[BlobPath(image->config)] = image->config;
    files[BlobPath(image->manifest)] = image->manifest;
    for (const std::string& layer : image->layer_blobs) files[BlobPath(layer)] = layer;
    nlohmann::ordered_json entry = nlohmann::ordered_json::parse(
        DescriptorJson(store::media_type::kOciManifest, image->manifest));
    if (!name.empty()) entry["annotations"] = {{"org.opencontainers.image.ref.name", name}};
    index["manifests"].push_back(entry);
  }
  files["index.json"] = index.dump();
  return files;
}

// A docker-archive as `docker save` writes it (layers in <n>/layer.tar).
inline Files DockerArchive(const std::vector<std::pair<const BuiltImage*, std::string>>& images) {
  Files files;
  nlohmann::ordered_json manifest = nlohmann::ordered_json::array();
  int n = 0;
  for (const auto& [image, tag] : images) {
    std::string config_name = image->ConfigDigest().hex() + ".json";
    files[config_name] = image->config;
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    for (const std::string& layer : image->layer_blobs) {
      std::string name = "layer" + std::to_string(n++) + "/layer.tar";
      files[name] = layer;
      files["layer" + std::to_string(n - 1) + "/VERSION"] = "1.0";
      layers.push_back(name);
    }
    nlohmann::ordered_json entry;
    entry["Config"] = config_name;
    entry["RepoTags"] =
        tag.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json::array({tag});
    entry["Layers"] = layers;
    manifest.push_back(entry);
  }
  files["manifest.json"] = manifest.dump();
  return files;
}

}  // namespace imgtool::cli::testing

namespace imgtool::cli::testing {

struct TarItem {
  char type = 'f';   // as TarEntry::type
  std::string data;  // file content or link target
  unsigned mode = 0;
};

// Every entry of a (possibly compressed) tar, by cleaned name.
inline std::map<std::string, TarItem> ReadTar(const std::string& bytes) {
  std::map<std::string, TarItem> out;
  struct archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_memory(a, bytes.data(), bytes.size()), ARCHIVE_OK);
  struct archive_entry* ae = nullptr;
  while (archive_read_next_header(a, &ae) == ARCHIVE_OK) {
    std::string name = archive_entry_pathname(ae);
    while (name.starts_with("./")) name.erase(0, 2);
    while (!name.empty() && name.back() == '/') name.pop_back();
    TarItem item;
    item.mode = archive_entry_perm(ae);
    if (archive_entry_hardlink(ae) != nullptr) {
      item.type = 'h';
      item.data = archive_entry_hardlink(ae);
    } else if (archive_entry_filetype(ae) == AE_IFDIR) {
      item.type = 'd';
    } else if (archive_entry_filetype(ae) == AE_IFLNK) {
      item.type = 'l';
      item.data = archive_entry_symlink(ae);
    } else if (archive_entry_filetype(ae) == AE_IFCHR) {
      item.type = 'c';
    } else {
      char buf[65536];
      la_ssize_t n;
      while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) item.data.append(buf, n);
    }
    if (!name.empty()) out[name] = std::move(item);
  }
  archive_read_free(a);
  return out;
}

}  // namespace imgtool::cli::testing
