// Pull: resolve a reference on a registry to one platform's image, fetch its
// config and layers (in parallel, verified while streaming, skipping what the
// store has) and tag it only when everything is committed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/digest.h"
#include "common/error.h"
#include "registry/client.h"
#include "store/oci_types.h"
#include "store/reference.h"
#include "store/store.h"

namespace imgtool::registry {

struct BlobProgress {
  enum class State { kWaiting, kExists, kDownloading, kDone };
  std::string kind;  // "config", "layer", "blob"
  Digest digest;
  int64_t size = 0;
  int64_t done = 0;
  State state = State::kWaiting;
};

struct PulledImage {
  store::Reference name;         // the name it is tagged with
  store::Descriptor descriptor;  // of the single-platform manifest
  store::Manifest manifest;
  store::ImageConfig config;
};

// A consumer of a blob's bytes while it downloads (e.g. an unpacker that
// overlaps extraction with the download). The bytes are not verified yet:
// End says whether the blob was complete, verified and committed.
class BlobStream {
 public:
  virtual ~BlobStream() = default;
  virtual void Write(std::string_view bytes) = 0;
  virtual void End(bool committed) = 0;
};

struct PullOptions {
  std::optional<store::Platform> platform;  // default HostPlatform()
  int jobs = 4;                             // blobs fetched at once
  // Progress of each blob; called from worker threads, never concurrently.
  std::function<void(const BlobProgress&)> progress;
  // Called with the chosen manifest before its blobs are fetched (the CLI
  // starts unpacking layers while later ones still download).
  std::function<void(const store::Manifest&)> on_manifest;
  // Called as a blob's download starts (never for a blob the store has): a
  // stream that gets its bytes too, or null. Called from worker threads.
  std::function<std::unique_ptr<BlobStream>(const store::Descriptor&)> stream;
  // Runs after every blob is committed and before the tag is set (the CLI
  // unpacks the layers here, so that a tagged image is ready to run).
  std::function<Status(const PulledImage&)> before_tag;
};

// The manifest descriptor for `platform` in an index (OCI or Docker list).
// NotFound listing the platforms there are.
Result<store::Descriptor> SelectPlatform(const store::Index& index,
                                         const store::Platform& platform);

Result<PulledImage> Pull(store::Store& store, Client& client, const store::Reference& ref,
                         const PullOptions& options = {});

}  // namespace imgtool::registry
