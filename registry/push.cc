#include "registry/push.h"

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "common/log.h"
#include "registry/blob_transfers.h"

namespace imgtool::registry {

namespace {

Status PushBlobs(const store::Store& store, Client& client, const std::string& repository,
                 std::vector<BlobProgress>& blobs, const PushOptions& options) {
  BlobTransfer work;
  work.jobs = options.jobs;
  work.progress = options.progress;
  work.transfer = [&](size_t i, const std::function<void(int64_t)>& on_bytes,
                      const std::function<bool()>&) -> Result<bool> {
    store::Descriptor descriptor;
    descriptor.digest = blobs[i].digest;
    descriptor.size = blobs[i].size;
    Result<std::string> how =
        client.PushBlob(repository, descriptor, store.content(), options.mount_from, on_bytes);
    if (!how) return std::move(how).error();
    return *how == "uploaded";
  };
  return TransferBlobs(blobs, work);
}

Status PushManifest(const store::Store& store, Client& client, const std::string& repository,
                    const store::Descriptor& descriptor, const PushOptions& options) {
  std::string what = "manifest " + descriptor.digest.ToString();
  IMGTOOL_ASSIGN_OR_RETURN(store::Manifest manifest, store.ReadManifest(descriptor.digest));
  std::vector<BlobProgress> blobs;
  std::set<Digest> seen;
  auto add = [&](const store::Descriptor& d, const char* kind) {
    if (!seen.insert(d.digest).second) return;
    BlobProgress blob;
    blob.kind = kind;
    blob.digest = d.digest;
    blob.size = d.size;
    blobs.push_back(blob);
  };
  add(manifest.config, "config");
  for (const store::Descriptor& layer : manifest.layers) add(layer, "layer");
  if (options.progress) {
    for (const BlobProgress& blob : blobs) options.progress(blob);
  }
  IMGTOOL_TRY(PushBlobs(store, client, repository, blobs, options));
  IMGTOOL_ASSIGN_OR_RETURN(std::string body, store.content().ReadBlob(descriptor.digest));
  IMGTOOL_ASSIGN_OR_RETURN(
      Digest pushed,
      client.PutManifest(repository, descriptor.digest.ToString(), descriptor.media_type, body));
  (void)pushed;
  return OkStatus();
}

}  // namespace

Result<Digest> Push(const store::Store& store, Client& client, const store::Descriptor& top,
                    const store::Reference& dest, const PushOptions& options) {
  std::string what = "push " + dest.ToString();
  const std::string& repository = dest.repository();
  std::string reference = dest.tag().empty() ? top.digest.ToString() : dest.tag();
  if (dest.digest() && *dest.digest() != top.digest) {
    return InvalidArgumentError(what + ": the image's digest is " + top.digest.ToString());
  }
  IMGTOOL_TRY(client.Ping().Wrap(what));
  if (store::IsIndexMediaType(top.media_type)) {
    IMGTOOL_ASSIGN_OR_RETURN(store::Index index, store.ReadIndex(top.digest).Wrap(what));
    for (const store::Descriptor& entry : index.manifests) {
      if (!store.content().Exists(entry.digest)) {
        return FailedPreconditionError(
            what + ": the store holds only some platforms of this multi-platform image (" +
            entry.digest.ToString() + " is missing); push one platform's manifest by digest");
      }
    }
    for (const store::Descriptor& entry : index.manifests) {
      if (!store::IsManifestMediaType(entry.media_type)) continue;
      IMGTOOL_TRY(PushManifest(store, client, repository, entry, options).Wrap(what));
    }
  } else {
    IMGTOOL_ASSIGN_OR_RETURN(store::Manifest manifest, store.ReadManifest(top.digest).Wrap(what));
    std::vector<BlobProgress> blobs;
    std::set<Digest> seen;
    for (const store::Descriptor* d : {&manifest.config}) {
      seen.insert(d->digest);
      blobs.push_back(BlobProgress{"config", d->digest, d->size, 0, BlobProgress::State::kWaiting});
    }
    for (const store::Descriptor& layer : manifest.layers) {
      if (!seen.insert(layer.digest).second) continue;
      blobs.push_back(
          BlobProgress{"layer", layer.digest, layer.size, 0, BlobProgress::State::kWaiting});
    }
    if (options.progress) {
      for (const BlobProgress& blob : blobs) options.progress(blob);
    }
    IMGTOOL_TRY(PushBlobs(store, client, repository, blobs, options).Wrap(what));
  }
  IMGTOOL_ASSIGN_OR_RETURN(std::string body, store.content().ReadBlob(top.digest).Wrap(what));
  IMGTOOL_ASSIGN_OR_RETURN(Digest digest,
                           client.PutManifest(repository, reference, top.media_type, body));
  if (digest != top.digest) {
    return InternalError(what + ": manifest digest changed to " + digest.ToString());
  }
  LogInfo(what, ": ", digest.ToString());
  return digest;
}

}  // namespace imgtool::registry
