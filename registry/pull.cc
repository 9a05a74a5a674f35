#include "registry/pull.h"

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "common/file_lock.h"
#include "common/log.h"
#include "registry/blob_transfers.h"

namespace imgtool::registry {

Result<store::Descriptor> SelectPlatform(const store::Index& index,
                                         const store::Platform& platform) {
  std::string available;
  for (const store::Descriptor& entry : index.manifests) {
    if (!store::IsManifestMediaType(entry.media_type)) continue;
    if (!entry.platform) continue;
    if (entry.platform->Matches(platform)) return entry;
    if (!available.empty()) available += ", ";
    available += entry.platform->ToString();
  }
  return NotFoundError("no image for platform " + platform.ToString() + " (there are: " +
                       (available.empty() ? std::string("none") : available) + ")");
}

namespace {

// Fetches blobs on `jobs` threads; the first error stops the others.
Status FetchAll(Client& client, const std::string& repository, store::ContentStore& content,
                std::vector<BlobProgress>& blobs, const PullOptions& options) {
  BlobTransfer work;
  work.jobs = options.jobs;
  work.progress = options.progress;
  work.already_there = [&](size_t i) { return content.Exists(blobs[i].digest); };
  work.transfer = [&](size_t i, const std::function<void(int64_t)>& on_bytes,
                      const std::function<bool()>& cancelled) -> Result<bool> {
    store::Descriptor descriptor;
    descriptor.digest = blobs[i].digest;
    descriptor.size = blobs[i].size;
    std::unique_ptr<BlobStream> stream = options.stream ? options.stream(descriptor) : nullptr;
    if (!stream) return client.FetchBlob(repository, descriptor, content, on_bytes, cancelled);
    Result<bool> fetched = client.FetchBlob(repository, descriptor, content, on_bytes, cancelled,
                                            [&](std::string_view bytes) { stream->Write(bytes); });
    stream->End(fetched.has_value() && *fetched);
    return fetched;
  };
  return TransferBlobs(blobs, work);
}

}  // namespace

Result<PulledImage> Pull(store::Store& store, Client& client, const store::Reference& ref,
                         const PullOptions& options) {
  std::string what = "pull " + ref.ToString();
  const std::string& repository = ref.repository();
  std::string reference = ref.digest() ? ref.digest()->ToString() : ref.tag();
  IMGTOOL_ASSIGN_OR_RETURN(FetchedManifest top,
                           client.GetManifest(repository, reference).Wrap(what));

  // Blobs written from here on are unreferenced until the tag is set.
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lease, store.AcquireWriteLease());

  FetchedManifest chosen = std::move(top);
  if (store::IsIndexMediaType(chosen.media_type)) {
    IMGTOOL_ASSIGN_OR_RETURN(store::Index index,
                             store::ParseIndex(chosen.body).Wrap(what + ": index"));
    store::Platform platform = options.platform ? *options.platform : store::HostPlatform();
    IMGTOOL_ASSIGN_OR_RETURN(store::Descriptor entry, SelectPlatform(index, platform).Wrap(what));
    LogInfo(what, ": ", platform.ToString(), " is ", entry.digest.ToString());
    IMGTOOL_ASSIGN_OR_RETURN(chosen,
                             client.GetManifest(repository, entry.digest.ToString()).Wrap(what));
    if (!store::IsManifestMediaType(chosen.media_type)) {
      return InvalidArgumentError(what + ": index entry " + entry.digest.ToString() + " is a " +
                                  chosen.media_type + ", not an image manifest");
    }
  }
  IMGTOOL_ASSIGN_OR_RETURN(
      store::Manifest manifest,
      store::ParseManifest(chosen.body).Wrap(what + ": manifest " + chosen.digest.ToString()));

  std::vector<BlobProgress> blobs;
  BlobProgress config_blob;
  config_blob.kind = "config";
  config_blob.digest = manifest.config.digest;
  config_blob.size = manifest.config.size;
  blobs.push_back(config_blob);
  for (const store::Descriptor& layer : manifest.layers) {
    BlobProgress blob;
    blob.kind = "layer";
    blob.digest = layer.digest;
    blob.size = layer.size;
    blobs.push_back(blob);
  }
  if (options.progress) {
    for (const BlobProgress& blob : blobs) options.progress(blob);
  }
  if (options.on_manifest) options.on_manifest(manifest);
  IMGTOOL_TRY(FetchAll(client, repository, store.content(), blobs, options).Wrap(what));

  IMGTOOL_ASSIGN_OR_RETURN(store::ImageConfig config,
                           store.ReadConfig(manifest.config.digest).Wrap(what));
  if (config.rootfs.diff_ids.size() != manifest.layers.size()) {
    return InvalidArgumentError(what + ": config has " +
                                std::to_string(config.rootfs.diff_ids.size()) + " diff_ids for " +
                                std::to_string(manifest.layers.size()) + " layers");
  }
  Digest written;
  IMGTOOL_TRY(store.content().WriteBlob(chosen.body, &written).Wrap(what));

  PulledImage pulled{ref, {}, std::move(manifest), std::move(config)};
  pulled.descriptor.media_type = chosen.media_type;
  pulled.descriptor.digest = chosen.digest;
  pulled.descriptor.size = static_cast<int64_t>(chosen.body.size());
  if (options.before_tag) IMGTOOL_TRY(options.before_tag(pulled).Wrap(what));
  IMGTOOL_TRY(store.index().Set(ref, pulled.descriptor).Wrap(what));
  return pulled;
}

}  // namespace imgtool::registry
