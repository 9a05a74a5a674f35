// Unpacks an image's layers into committed snapshots named by chain ID, so
// that a container or build step can stack them with one overlay mount.
#pragma once

#include <string>
#include <vector>

#include "common/digest.h"
#include "common/error.h"
#include "overlay/snapshotter.h"
#include "store/oci_types.h"
#include "store/store.h"

namespace imgtool::overlay {

// OCI chain IDs: ChainID(L0) = DiffID(L0),
// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
std::vector<Digest> ChainIds(const std::vector<Digest>& diff_ids);

// Active snapshots the unpacker works in are named "<kUnpackKeyPrefix><pid>-...",
// so that gc can recognize (and remove) those of processes that died.
inline constexpr std::string_view kUnpackKeyPrefix = "unpack-";

struct UnpackOptions {
  // Layers applied at once. Overlay-mode apply never reads the parent, so
  // layers whose parent is not committed yet are applied into a detached
  // snapshot and attached to their parent in order afterwards.
  int workers = 2;
  // See ApplyOptions::unprivileged.
  bool unprivileged = false;
};

// Makes sure every layer of the image is a committed snapshot named by its
// chain ID ("sha256:<hex>") and returns the top chain ID ("" for an image
// without layers). Layers already committed are skipped; each blob is checked
// against the manifest digest and the config diffID while it is applied. On
// error the snapshots being written are removed (those already committed are
// kept: they are complete and correct). Another process committing the same
// chain ID first is success.
Result<std::string> Unpack(store::Store& store, Snapshotter& snapshotter,
                           const store::Manifest& manifest, const store::ImageConfig& config,
                           const UnpackOptions& options = {});

}  // namespace imgtool::overlay
