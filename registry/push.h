// Push: upload an image's blobs (skipping those the registry has, mounting
// those it has in another repository), then its manifest with the exact
// media type and bytes, so the digest on the registry is the store's.
#pragma once

#include <functional>
#include <string>

#include "common/digest.h"
#include "common/error.h"
#include "registry/client.h"
#include "registry/pull.h"
#include "store/reference.h"
#include "store/store.h"

namespace imgtool::registry {

struct PushOptions {
  int jobs = 4;
  // A repository of the destination registry that may already hold the blobs
  // (the image's own name there): blobs are mounted from it, not uploaded.
  std::string mount_from;
  std::function<void(const BlobProgress&)> progress;
};

// Pushes the manifest (or index, with every manifest of it the store has)
// `top` to `dest` (a tag, or the digest when dest has none). Returns the
// digest of what was pushed.
Result<Digest> Push(const store::Store& store, Client& client, const store::Descriptor& top,
                    const store::Reference& dest, const PushOptions& options = {});

}  // namespace imgtool::registry
