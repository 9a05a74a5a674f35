// Builders for small but complete images in a store, shared by the store tests.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "store/store.h"

namespace imgtool::store::testing {

struct TestImage {
  Descriptor manifest;  // what goes in index.json
  Descriptor config;
  std::vector<Descriptor> layers;
};

// Writes `layer_contents` as uncompressed layer blobs (diff_id = digest), a
// config and an OCI manifest. Nothing is tagged.
inline TestImage WriteTestImage(Store& store, const std::vector<std::string>& layer_contents,
                                const std::string& arch = "amd64", const std::string& marker = "") {
  TestImage out;
  ImageConfig config;
  config.architecture = arch;
  config.os = "linux";
  config.config.cmd = {"/bin/sh"};
  if (!marker.empty()) config.config.labels["marker"] = marker;
  Manifest manifest;
  manifest.media_type = std::string(media_type::kOciManifest);
  for (const std::string& content : layer_contents) {
    Result<Descriptor> layer = store.WriteJsonBlob(media_type::kOciLayerTar, content);
    EXPECT_TRUE(layer) << layer.error().ToString();
    if (!layer) return out;
    config.rootfs.diff_ids.push_back(layer->digest);
    manifest.layers.push_back(*layer);
    out.layers.push_back(*layer);
  }
  Result<Descriptor> c = store.WriteJsonBlob(media_type::kOciConfig, SerializeImageConfig(config));
  EXPECT_TRUE(c) << c.error().ToString();
  if (!c) return out;
  out.config = *c;
  manifest.config = *c;
  Result<Descriptor> m = store.WriteJsonBlob(media_type::kOciManifest, SerializeManifest(manifest));
  EXPECT_TRUE(m) << m.error().ToString();
  if (m) out.manifest = *m;
  return out;
}

inline Reference Ref(std::string_view text) {
  Result<Reference> ref = ParseReference(text);
  EXPECT_TRUE(ref) << ref.error().ToString();
  return *ref;
}

}  // namespace imgtool::store::testing
