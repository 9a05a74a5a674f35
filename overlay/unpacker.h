// Unpacks an image's layers into committed snapshots named by chain ID, so
// that a container or build step can stack them with one overlay mount.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/digest.h"
#include "common/error.h"
#include "common/unique_fd.h"
#include "overlay/applier.h"
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

// Snapshotter calls below come from several threads at once: the snapshotter
// must be safe for that (OverlaySnapshotter is: every call takes its metadata
// flock on an fd of its own, as separate processes do).

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

// Moves the tree of `detached`, an active snapshot prepared on "" (overlay-mode
// apply never reads the parent, so a layer can be applied before its parent
// is committed), into a new active snapshot `key` prepared on the committed
// `parent`, and removes `detached`. Swapping the two upper directories keeps
// the root directory's own mode, owner and xattrs, which a copy of its
// children would not. On error `key` is gone and the caller still owns
// `detached`.
Status AttachDetached(Snapshotter& snapshotter, const std::string& detached,
                      const std::string& parent, const std::string& key);

// A layer applied while its blob arrives (a pull teeing its download), into a
// detached active snapshot "<kUnpackKeyPrefix><pid>-<nonce>-stream-<hex>": the
// bytes given to Write go through a socket pair to ApplyLayer on a thread of
// this object, so memory stays flat in the layer's size and a slow apply
// slows the writer instead of buffering. The blob's bytes are not hashed here
// (ApplyOptions::hash_blob is false): the caller verifies them and commits
// the tree only when it did. Write and End come from one thread, Commit and
// the destructor from one thread (possibly another) after End.
class StreamedLayer {
 public:
  // Prepares the snapshot and starts the apply. `description` names the layer
  // in errors.
  static Result<std::unique_ptr<StreamedLayer>> Start(Snapshotter& snapshotter,
                                                      const Digest& blob_digest,
                                                      std::string description,
                                                      bool unprivileged = false);
  StreamedLayer(const StreamedLayer&) = delete;
  StreamedLayer& operator=(const StreamedLayer&) = delete;
  // Stops the apply (it sees a short stream) and removes the snapshot unless
  // Commit made it a committed one.
  ~StreamedLayer();

  // Hands bytes to the apply, waiting while it is behind. Once it gave up
  // (bad data), bytes are dropped: Commit reports why.
  void Write(std::string_view bytes);
  // The blob ended: the apply reads to the end of the stream.
  void End();

  // Waits for the apply, then commits its tree as the committed snapshot
  // `name` on `parent` ("" for a first layer; else it must be committed),
  // when the tar's digest is `diff_id`. DataLoss for another diff ID, the
  // apply's error when it failed; the snapshot is removed then (at the
  // latest by the destructor). Another process committing `name` first is
  // success. Call only when the blob was verified and committed.
  Status Commit(const Digest& diff_id, const std::string& parent, const std::string& name);

 private:
  StreamedLayer(Snapshotter& snapshotter, std::string key, std::string description)
      : snapshotter_(snapshotter), key_(std::move(key)), description_(std::move(description)) {}
  void Stop();

  Snapshotter& snapshotter_;
  std::string key_;  // the active snapshot holding the tree; "" once committed or removed
  std::string description_;
  UniqueFd write_end_;
  Result<ApplyResult> applied_ = InternalError("not applied");
  std::thread thread_;
};

}  // namespace imgtool::overlay
