// The worker pool pull and push share: blobs transferred on a few threads,
// progress reported under one lock, the first error stopping the rest.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "common/error.h"
#include "registry/pull.h"

namespace imgtool::registry {

struct BlobTransfer {
  // Called under the lock before blob `i` starts; true skips it as present.
  std::function<bool(size_t i)> already_there;
  // Moves blob `i`; `on_bytes` reports progress, `cancelled` turns true once
  // another blob failed. True when bytes moved, false when the other side
  // had the blob already.
  std::function<Result<bool>(size_t i, const std::function<void(int64_t)>& on_bytes,
                             const std::function<bool()>& cancelled)>
      transfer;
  std::function<void(const BlobProgress&)> progress;
  int jobs = 4;
};

// Runs `work.transfer` for every blob on up to `work.jobs` threads and keeps
// `blobs` (state, bytes done) current; returns the first error.
Status TransferBlobs(std::vector<BlobProgress>& blobs, const BlobTransfer& work);

}  // namespace imgtool::registry
