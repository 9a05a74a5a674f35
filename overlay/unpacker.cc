#include "overlay/unpacker.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "common/log.h"
#include "common/scope_guard.h"
#include "overlay/applier.h"

namespace imgtool::overlay {

std::vector<Digest> ChainIds(const std::vector<Digest>& diff_ids) {
  std::vector<Digest> chain;
  chain.reserve(diff_ids.size());
  for (const Digest& diff_id : diff_ids) {
    if (chain.empty()) {
      chain.push_back(diff_id);
    } else {
      chain.push_back(Digest::Sha256Of(chain.back().ToString() + " " + diff_id.ToString()));
    }
  }
  return chain;
}

namespace {

struct Job {
  size_t layer = 0;
  std::string key;        // the active snapshot that holds the applied layer
  bool attached = false;  // prepared on its real parent (else on "")
  bool done = false;
  bool committed = false;
  Status status;
};

std::string RandomNonce() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::random_device rd;
  std::string out;
  for (int i = 0; i < 8; ++i) out += kHex[rd() % 16];
  return out;
}

class Unpacker {
 public:
  Unpacker(store::Store& store, Snapshotter& snapshotter, const store::Manifest& manifest,
           std::vector<Digest> diff_ids, const UnpackOptions& options)
      : store_(store),
        snapshotter_(snapshotter),
        manifest_(manifest),
        diff_ids_(std::move(diff_ids)),
        chain_(ChainIds(diff_ids_)),
        options_(options),
        key_prefix_(StrCat(kUnpackKeyPrefix, ::getpid(), "-", RandomNonce(), "-")) {}

  Result<std::string> Run();

 private:
  void Work();
  Status Apply(Job& job);
  Status Attach(Job& job);
  Status CommitJob(Job& job);
  std::string Describe(size_t layer) const {
    return StrCat("layer ", layer + 1, " of ", chain_.size(), " (",
                  manifest_.layers[layer].digest.ToString(), ")");
  }

  store::Store& store_;
  Snapshotter& snapshotter_;
  const store::Manifest& manifest_;
  std::vector<Digest> diff_ids_;
  std::vector<Digest> chain_;
  const UnpackOptions& options_;
  std::string key_prefix_;

  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::vector<Job> jobs_;
  size_t next_job_ = 0;
  bool stop_ = false;
  std::set<std::string> committed_;
};

void Unpacker::Work() {
  while (true) {
    Job* job;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ || next_job_ >= jobs_.size()) return;
      job = &jobs_[next_job_++];
      job->attached = job->layer == 0 || committed_.contains(chain_[job->layer - 1].ToString());
    }
    Status status = Apply(*job);
    {
      std::lock_guard<std::mutex> lock(mu_);
      job->status = std::move(status);
      job->done = true;
    }
    cv_.notify_all();
  }
}

Status Unpacker::Apply(Job& job) {
  size_t i = job.layer;
  std::string parent = job.attached && i > 0 ? chain_[i - 1].ToString() : "";
  std::string key = StrCat(key_prefix_, i, job.attached ? "" : "-detached");
  IMGTOOL_TRY(snapshotter_.Prepare(key, parent));
  job.key = key;
  IMGTOOL_ASSIGN_OR_RETURN(std::filesystem::path upper, snapshotter_.UpperDir(key));
  const store::Descriptor& layer = manifest_.layers[i];
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd blob, store_.content().OpenRaw(layer.digest));
  ApplyOptions apply;
  apply.whiteouts = WhiteoutMode::kOverlay;
  apply.expected_digest = layer.digest;
  apply.expected_diff_id = diff_ids_[i];
  apply.description = "layer " + layer.digest.ToString();
  apply.unprivileged = options_.unprivileged;
  IMGTOOL_ASSIGN_OR_RETURN(ApplyResult result, ApplyLayer(blob.get(), upper, apply));
  LogDebug("unpack: applied ", Describe(i), ": ", result.entries, " entries, ", result.tar_size,
           " bytes");
  return OkStatus();
}

Status Unpacker::Attach(Job& job) {
  size_t i = job.layer;
  std::string key = StrCat(key_prefix_, i);
  IMGTOOL_TRY(AttachDetached(snapshotter_, job.key, chain_[i - 1].ToString(), key));
  job.key = key;
  LogDebug("unpack: attached ", Describe(i), " to its parent");
  return OkStatus();
}

Status Unpacker::CommitJob(Job& job) {
  if (!job.attached) IMGTOOL_TRY(Attach(job));
  std::string name = chain_[job.layer].ToString();
  Status status = snapshotter_.Commit(name, job.key);
  if (!status) {
    if (status.error().code() != ErrorCode::kAlreadyExists) return status;
    // Another process unpacked the same layer first; its snapshot is as good.
    LogDebug("unpack: ", name, " was committed meanwhile by another process");
    IMGTOOL_TRY(snapshotter_.Remove(job.key));
  }
  job.committed = true;
  std::lock_guard<std::mutex> lock(mu_);
  committed_.insert(name);
  return OkStatus();
}

Result<std::string> Unpacker::Run() {
  IMGTOOL_ASSIGN_OR_RETURN(committed_, snapshotter_.CommittedNames());
  // A committed snapshot implies its whole parent chain is committed.
  size_t first_missing = 0;
  for (size_t i = chain_.size(); i > 0; --i) {
    if (committed_.contains(chain_[i - 1].ToString())) {
      first_missing = i;
      break;
    }
  }
  if (first_missing == chain_.size()) return chain_.back().ToString();
  for (size_t i = first_missing; i < chain_.size(); ++i) {
    jobs_.emplace_back();
    jobs_.back().layer = i;
  }

  Status failure;
  {
    size_t workers =
        std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(options_.workers), jobs_.size()));
    std::vector<std::jthread> threads;
    for (size_t w = 0; w < workers; ++w) threads.emplace_back([this] { Work(); });

    for (Job& job : jobs_) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return job.done; });
      }
      Status status = job.status ? CommitJob(job) : job.status;
      if (!status) {
        failure = std::move(status).Wrap("unpack " + Describe(job.layer));
        break;
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    // jthreads join here; a worker finishes the layer it is on first.
  }
  if (!failure) {
    for (Job& job : jobs_) {
      if (job.committed || job.key.empty()) continue;
      Status removed = snapshotter_.Remove(job.key);
      if (!removed) LogWarning("unpack: remove ", job.key, ": ", removed.error().ToString());
    }
    return failure.error();
  }
  return chain_.back().ToString();
}

}  // namespace

Result<std::string> Unpack(store::Store& store, Snapshotter& snapshotter,
                           const store::Manifest& manifest, const store::ImageConfig& config,
                           const UnpackOptions& options) {
  if (config.rootfs.diff_ids.size() != manifest.layers.size()) {
    return InvalidArgumentError(StrCat("unpack: config has ", config.rootfs.diff_ids.size(),
                                       " diff_ids for ", manifest.layers.size(), " layers"));
  }
  if (manifest.layers.empty()) return std::string();
  Unpacker unpacker(store, snapshotter, manifest, config.rootfs.diff_ids, options);
  return unpacker.Run();
}

Status AttachDetached(Snapshotter& snapshotter, const std::string& detached,
                      const std::string& parent, const std::string& key) {
  IMGTOOL_TRY(snapshotter.Prepare(key, parent));
  ScopeGuard drop([&] { (void)snapshotter.Remove(key); });
  IMGTOOL_ASSIGN_OR_RETURN(std::filesystem::path from, snapshotter.UpperDir(detached));
  IMGTOOL_ASSIGN_OR_RETURN(std::filesystem::path to, snapshotter.UpperDir(key));
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) != 0) {
    return ErrnoError("exchange " + from.string() + " and " + to.string());
  }
  // From here `detached` holds the empty directory: an error removing it
  // drops the attached tree too, and the caller's removal of `detached`
  // tries again.
  IMGTOOL_TRY(snapshotter.Remove(detached).Wrap("remove " + detached));
  drop.Cancel();
  return OkStatus();
}

Result<std::unique_ptr<StreamedLayer>> StreamedLayer::Start(Snapshotter& snapshotter,
                                                            const Digest& blob_digest,
                                                            std::string description,
                                                            bool unprivileged) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return ErrnoError("socketpair for " + description);
  }
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  std::string key = StrCat(kUnpackKeyPrefix, ::getpid(), "-", RandomNonce(), "-stream-",
                           blob_digest.hex().substr(0, 12));
  IMGTOOL_TRY(snapshotter.Prepare(key, ""));
  std::unique_ptr<StreamedLayer> layer(
      new StreamedLayer(snapshotter, std::move(key), std::move(description)));
  IMGTOOL_ASSIGN_OR_RETURN(std::filesystem::path upper, snapshotter.UpperDir(layer->key_));
  layer->write_end_ = std::move(write_end);
  layer->thread_ =
      std::thread([self = layer.get(), fd = std::move(read_end), upper, unprivileged]() mutable {
        ApplyOptions apply;
        apply.whiteouts = WhiteoutMode::kOverlay;
        apply.hash_blob = false;  // the caller verifies these bytes
        apply.description = self->description_;
        apply.unprivileged = unprivileged;
        self->applied_ = ApplyLayer(fd.get(), upper, apply);
        // Closing the read end makes further writes fail at once (EPIPE).
        fd.reset();
      });
  return layer;
}

StreamedLayer::~StreamedLayer() {
  Stop();
  if (key_.empty()) return;
  Status removed = snapshotter_.Remove(key_);
  if (!removed) LogWarning("remove ", key_, ": ", removed.error().ToString());
}

void StreamedLayer::Stop() {
  write_end_.reset();
  if (thread_.joinable()) thread_.join();
}

void StreamedLayer::Write(std::string_view bytes) {
  while (write_end_ && !bytes.empty()) {
    ssize_t n = ::send(write_end_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      write_end_.reset();  // the apply gave up; Commit reports its error
      return;
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

void StreamedLayer::End() { write_end_.reset(); }

Status StreamedLayer::Commit(const Digest& diff_id, const std::string& parent,
                             const std::string& name) {
  Stop();
  if (key_.empty()) return FailedPreconditionError(description_ + ": no snapshot to commit");
  if (!applied_) return applied_.error();
  if (applied_->diff_id != diff_id) {
    return DataLossError(StrCat(description_, ": diff ID is ", applied_->diff_id.ToString(),
                                ", the config says ", diff_id.ToString()));
  }
  if (!parent.empty()) {
    std::string attached = key_ + "-attached";
    IMGTOOL_TRY(AttachDetached(snapshotter_, key_, parent, attached).Wrap(description_));
    key_ = attached;
  }
  Status status = snapshotter_.Commit(name, key_);
  if (!status) {
    if (status.error().code() != ErrorCode::kAlreadyExists) {
      return std::move(status).Wrap(description_);
    }
    // Another process unpacked the same layer first; its snapshot is as good.
    LogDebug("unpack: ", name, " was committed meanwhile by another process");
    IMGTOOL_TRY(snapshotter_.Remove(key_));
  }
  key_.clear();
  return OkStatus();
}

}  // namespace imgtool::overlay
