// pull, push, login, logout: moving images between the store and registries.
#include "cli/registry_cmd.h"

#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cli/context.h"
#include "cli/image_ref.h"
#include "cli/output.h"
#include "common/file_util.h"
#include "common/log.h"
#include "overlay/unpacker.h"
#include "registry/auth_config.h"
#include "registry/client.h"
#include "registry/pull.h"
#include "registry/push.h"

namespace imgtool::cli {

namespace {

// "https://host:5000/v2/" -> "host:5000"; "index.docker.io" -> "docker.io".
std::string NormalizeRegistry(std::string_view text) {
  if (size_t scheme = text.find("://"); scheme != std::string_view::npos) {
    text.remove_prefix(scheme + 3);
  }
  text = text.substr(0, text.find('/'));
  std::string out(text);
  if (out == "index.docker.io" || out == "registry-1.docker.io") out = "docker.io";
  return out;
}

Result<std::unique_ptr<registry::Client>> MakeClient(const std::string& name,
                                                     const RegistryAccess& flags,
                                                     std::optional<registry::Credentials> creds) {
  bool insecure = !flags.tls_verify || registry::IsInsecureRegistry(name);
  registry::TlsOptions tls;
  tls.verify = !insecure;
  tls.cert_dir = flags.cert_dir;
  IMGTOOL_ASSIGN_OR_RETURN(std::shared_ptr<registry::HttpTransport> transport,
                           registry::NewCurlTransport(tls));
  registry::ClientOptions options;
  options.insecure = insecure;
  if (creds) {
    options.credentials = std::move(creds);
  } else if (!flags.creds.empty()) {
    size_t colon = flags.creds.find(':');
    if (colon == std::string::npos) return InvalidArgumentError("--creds: expected USER:PASSWORD");
    options.credentials =
        registry::Credentials{flags.creds.substr(0, colon), flags.creds.substr(colon + 1)};
  } else {
    IMGTOOL_ASSIGN_OR_RETURN(options.credentials,
                             registry::LookupCredentials(name, flags.authfile));
  }
  return std::make_unique<registry::Client>(name, std::move(transport), std::move(options));
}

std::string ShortHex(const Digest& digest) { return digest.hex().substr(0, 12); }

// Per-blob progress on stderr: a live table on a terminal, one line per
// finished blob otherwise, nothing with --quiet.
class ProgressPrinter {
 public:
  ProgressPrinter(bool quiet, std::string verb)
      : quiet_(quiet), tty_(::isatty(STDERR_FILENO) == 1), verb_(std::move(verb)) {}

  void Update(const registry::BlobProgress& blob) {
    if (quiet_) return;
    auto [it, added] = index_.emplace(blob.digest, blobs_.size());
    if (added) {
      blobs_.push_back(blob);
      starts_.push_back(std::chrono::steady_clock::now());
    }
    registry::BlobProgress& known = blobs_[it->second];
    bool finished = blob.state == registry::BlobProgress::State::kDone ||
                    blob.state == registry::BlobProgress::State::kExists;
    bool was_finished = known.state == registry::BlobProgress::State::kDone ||
                        known.state == registry::BlobProgress::State::kExists;
    known = blob;
    if (!tty_) {
      if (finished && !was_finished) (void)WriteAll(STDERR_FILENO, Line(it->second) + "\n");
      return;
    }
    auto now = std::chrono::steady_clock::now();
    if (!finished && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    Draw();
  }

  void Finish() {
    if (!quiet_ && tty_) Draw();
  }

 private:
  std::string Line(size_t i) const {
    const registry::BlobProgress& b = blobs_[i];
    std::string line = verb_ + " " + b.kind + " " + ShortHex(b.digest) + " ";
    switch (b.state) {
      case registry::BlobProgress::State::kWaiting:
        return line + "waiting";
      case registry::BlobProgress::State::kExists:
        return line + "skipped: already exists";
      case registry::BlobProgress::State::kDone:
        return line + "done " + HumanSize(b.size);
      case registry::BlobProgress::State::kDownloading: {
        double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - starts_[i]).count();
        std::string speed =
            seconds > 0.2 ? "  " + HumanSize(static_cast<int64_t>(b.done / seconds)) + "/s" : "";
        return line + HumanSize(b.done) + " / " + HumanSize(b.size) + speed;
      }
    }
    return line;
  }

  void Draw() {
    std::string out;
    if (drawn_ > 0) out += "\x1b[" + std::to_string(drawn_) + "A";
    for (size_t i = 0; i < blobs_.size(); ++i) out += "\x1b[2K" + Line(i) + "\n";
    drawn_ = blobs_.size();
    (void)WriteAll(STDERR_FILENO, out);
  }

  bool quiet_;
  bool tty_;
  std::string verb_;
  std::vector<registry::BlobProgress> blobs_;
  std::vector<std::chrono::steady_clock::time_point> starts_;
  std::map<Digest, size_t> index_;
  size_t drawn_ = 0;
  std::chrono::steady_clock::time_point last_draw_{};
};

// Unpacks the image's layers while the pull downloads them, so that download,
// verification and extraction overlap for every layer. A layer whose download
// starts while fewer than kMaxStreams others stream is applied as its bytes
// arrive (overlay::StreamedLayer: the bytes written to the ingest are teed
// into the applier, into a detached snapshot); one that is not streamed (too
// many applies at once, or its blob was in the store) is unpacked from its
// committed blob. A loop thread commits the layers in order, each on its
// parent: a streamed one only when the ingest committed (verified) its blob
// and its tar's diff ID is the config's; otherwise its snapshot is removed
// and the layer is unpacked from the blob. The final overlay::Unpack before
// tagging finds them committed and does what is left; an error here is left
// for that call to report.
class OverlappedUnpacker {
 public:
  // Layers applied while they download, at most, at once. Each costs a core
  // for gunzip + sha256 + file writes while the downloads (TLS, the ingest's
  // sha256) need CPU too; measured on 2 cores with bench/pull.sh (see
  // bench/BENCHMARKS.md, pull).
  static constexpr size_t kMaxStreams = 4;

  OverlappedUnpacker(store::Store& store, overlay::Snapshotter& snapshotter)
      : store_(store), snapshotter_(snapshotter), thread_([this] { Loop(); }) {}
  // Abandons what is not committed yet (a failed pull): streamed snapshots
  // not committed are removed.
  ~OverlappedUnpacker() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

  void SetManifest(const store::Manifest& manifest) {
    std::lock_guard lock(mu_);
    manifest_ = manifest;
    layers_.resize(manifest.layers.size());
    cv_.notify_one();
  }
  void BlobDone(const Digest& digest) {
    std::lock_guard lock(mu_);
    done_.insert(digest);
    cv_.notify_one();
  }

  // The stream for a layer's download (called from download threads as a
  // blob's download starts), or null: not a layer, or enough streams run.
  std::unique_ptr<registry::BlobStream> StreamFor(const store::Descriptor& blob) {
    size_t i = 0;
    {
      std::lock_guard lock(mu_);
      if (!manifest_ || stop_) return nullptr;
      while (i < layers_.size() &&
             (manifest_->layers[i].digest != blob.digest || layers_[i].tried)) {
        ++i;
      }
      if (i == layers_.size()) return nullptr;
      if (streaming_ >= kMaxStreams) {
        LogDebug("pull: ", Describe(i), " is not streamed: ", streaming_, " layers stream");
        return nullptr;
      }
      layers_[i].tried = true;
      layers_[i].streaming = true;
      ++streaming_;
    }
    auto started = overlay::StreamedLayer::Start(snapshotter_, blob.digest, Describe(i));
    std::lock_guard lock(mu_);
    if (!started) {
      LogDebug("pull: ", Describe(i), " is not streamed: ", started.error().ToString());
      layers_[i].streaming = false;
      --streaming_;
      cv_.notify_one();
      return nullptr;
    }
    layers_[i].stream = std::move(*started);
    return std::make_unique<Feed>(this, i, layers_[i].stream.get());
  }

  // Commits what it can now that every blob is in, then returns: the
  // snapshotter is the caller's again.
  void Finish() {
    {
      std::lock_guard lock(mu_);
      finishing_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Layer {
    std::unique_ptr<overlay::StreamedLayer> stream;  // until the loop took it
    bool tried = false;                              // a stream was made (or refused) for it
    bool streaming = false;                          // its download feeds `stream`
    bool blob_committed = false;                     // that download ended with the blob verified
  };

  // One layer's download, teed into its StreamedLayer.
  class Feed final : public registry::BlobStream {
   public:
    Feed(OverlappedUnpacker* owner, size_t layer, overlay::StreamedLayer* stream)
        : owner_(owner), layer_(layer), stream_(stream) {}
    ~Feed() override {
      if (!ended_) owner_->Ended(layer_, *stream_, false);
    }
    void Write(std::string_view bytes) override { stream_->Write(bytes); }
    void End(bool committed) override {
      ended_ = true;
      owner_->Ended(layer_, *stream_, committed);
    }

   private:
    OverlappedUnpacker* owner_;
    size_t layer_;
    overlay::StreamedLayer* stream_;
    bool ended_ = false;
  };

  void Ended(size_t i, overlay::StreamedLayer& stream, bool committed) {
    stream.End();
    std::lock_guard lock(mu_);
    layers_[i].streaming = false;
    layers_[i].blob_committed = committed;
    --streaming_;
    cv_.notify_one();
  }

  std::string Describe(size_t i) const {
    return StrCat("layer ", i + 1, " of ", manifest_->layers.size(), " (",
                  manifest_->layers[i].digest.ToString(), ")");
  }

  // Whether the loop has something to do: read the config, or commit layer
  // next_ (its stream ended, or its blob is in and nothing streams it).
  bool HasWork() const {
    if (!manifest_ || next_ >= layers_.size()) return false;
    if (!config_) return done_.count(manifest_->config.digest) > 0;
    const Layer& layer = layers_[next_];
    if (layer.streaming) return false;
    return layer.stream || done_.count(manifest_->layers[next_].digest) > 0;
  }

  // Commits layer next_ from its stream; true when that worked.
  bool CommitStreamed(std::unique_lock<std::mutex>& lock) {
    size_t i = next_;
    std::unique_ptr<overlay::StreamedLayer> stream = std::move(layers_[i].stream);
    bool blob_committed = layers_[i].blob_committed;
    std::string what = Describe(i);
    lock.unlock();
    Status status = FailedPreconditionError("its blob was not committed");
    if (blob_committed) {
      status = stream->Commit(config_->rootfs.diff_ids[i], i == 0 ? "" : chain_[i - 1].ToString(),
                              chain_[i].ToString());
    }
    stream.reset();  // removes the snapshot when not committed
    if (status) {
      LogDebug("pull: ", what, " unpacked while it downloaded");
    } else {
      LogDebug("pull: streamed ", what, " not used: ", status.error().ToString());
    }
    lock.lock();
    return status.has_value();
  }

  void Loop() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || finishing_ || (!failed_ && HasWork()); });
      if (stop_ || failed_ || !HasWork()) return;
      if (!config_) {
        Digest digest = manifest_->config.digest;
        size_t layers = layers_.size();
        lock.unlock();
        Result<store::ImageConfig> config = store_.ReadConfig(digest);
        lock.lock();
        if (!config || config->rootfs.diff_ids.size() != layers) {
          failed_ = true;
          continue;
        }
        config_ = std::move(*config);
        chain_ = overlay::ChainIds(config_->rootfs.diff_ids);
        continue;
      }
      if (layers_[next_].stream) {
        if (CommitStreamed(lock)) ++next_;
        continue;  // else the blob is unpacked once it is in
      }
      // Layers not streamed whose blobs are in: unpacked from the blobs.
      size_t end = next_;
      while (end < layers_.size() && !layers_[end].streaming && !layers_[end].stream &&
             done_.count(manifest_->layers[end].digest) > 0) {
        ++end;
      }
      store::Manifest prefix = *manifest_;
      store::ImageConfig partial = *config_;
      lock.unlock();
      prefix.layers.resize(end);
      partial.rootfs.diff_ids.resize(end);
      bool ok = overlay::Unpack(store_, snapshotter_, prefix, partial).has_value();
      lock.lock();
      if (ok) {
        next_ = end;
      } else {
        failed_ = true;
      }
    }
  }

  store::Store& store_;
  overlay::Snapshotter& snapshotter_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<store::Manifest> manifest_;
  std::optional<store::ImageConfig> config_;
  std::vector<Digest> chain_;
  std::vector<Layer> layers_;
  std::set<Digest> done_;
  size_t streaming_ = 0;  // layers whose download feeds a stream now
  size_t next_ = 0;       // the first layer not committed by this loop
  bool failed_ = false;
  bool finishing_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// --- pull ---------------------------------------------------------------------

Result<Digest> PullImpl(const Context& context, const store::Reference& ref,
                        const PullImageOptions& options) {
  registry::PullOptions pull;
  pull.platform = options.platform;
  pull.jobs = options.jobs;
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(auto snapshotter, context.OpenSnapshotter());
  IMGTOOL_ASSIGN_OR_RETURN(auto client, MakeClient(ref.registry(), options.registry, std::nullopt));
  ProgressPrinter printer(options.quiet, "Copying");
  OverlappedUnpacker early(*store, *snapshotter);
  pull.on_manifest = [&](const store::Manifest& manifest) { early.SetManifest(manifest); };
  pull.stream = [&](const store::Descriptor& blob) { return early.StreamFor(blob); };
  pull.progress = [&](const registry::BlobProgress& blob) {
    printer.Update(blob);
    if (blob.state == registry::BlobProgress::State::kDone ||
        blob.state == registry::BlobProgress::State::kExists) {
      early.BlobDone(blob.digest);
    }
  };
  // Unpacked before tagging: a tagged image is ready to run.
  pull.before_tag = [&](const registry::PulledImage& image) -> Status {
    early.Finish();
    auto chain_id = overlay::Unpack(*store, *snapshotter, image.manifest, image.config);
    if (!chain_id) return std::move(chain_id).error().Wrap("unpack");
    return OkStatus();
  };
  IMGTOOL_ASSIGN_OR_RETURN(registry::PulledImage pulled,
                           registry::Pull(*store, *client, ref, pull));
  printer.Finish();
  return pulled.manifest.config.digest;
}

struct PullOptions {
  std::string image;
  std::string platform;
  bool quiet = false;
  int jobs = 4;
  RegistryAccess flags;
};

Result<int> RunPull(const Context& context, const PullOptions& options) {
  IMGTOOL_ASSIGN_OR_RETURN(store::Reference ref, store::ParseReference(options.image).Wrap("pull"));
  PullImageOptions pull;
  if (!options.platform.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(pull.platform,
                             store::Platform::Parse(options.platform).Wrap("pull: --platform"));
  }
  pull.quiet = options.quiet;
  pull.jobs = options.jobs;
  pull.registry = options.flags;
  IMGTOOL_ASSIGN_OR_RETURN(Digest id, PullImpl(context, ref, pull));
  IMGTOOL_TRY(PrintOut(id.hex() + "\n"));
  return 0;
}

// --- push ---------------------------------------------------------------------

struct PushOptions {
  std::string image;
  std::string destination;
  bool quiet = false;
  int jobs = 4;
  std::string digestfile;
  RegistryAccess flags;
};

Result<Digest> PushImpl(const store::Store& store, const FoundImage& found,
                        const store::Reference& dest, const PushImageOptions& options) {
  registry::PushOptions push;
  push.jobs = options.jobs;
  if (found.ref && found.ref->registry() == dest.registry() &&
      found.ref->repository() != dest.repository()) {
    push.mount_from = found.ref->repository();
  }
  IMGTOOL_ASSIGN_OR_RETURN(auto client, MakeClient(dest.registry(), options.registry, std::nullopt));
  ProgressPrinter printer(options.quiet, "Pushing");
  push.progress = [&](const registry::BlobProgress& blob) { printer.Update(blob); };
  store::Descriptor top = CleanDescriptor(found.image.top);
  IMGTOOL_ASSIGN_OR_RETURN(Digest digest, registry::Push(store, *client, top, dest, push));
  printer.Finish();
  return digest;
}

Result<int> RunPush(const Context& context, const PushOptions& options) {
  std::string what = "push " + options.image;
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(FoundImage found, FindImage(*store, options.image).Wrap(what));
  std::optional<store::Reference> dest;
  if (!options.destination.empty()) {
    std::string_view text = options.destination;
    if (text.starts_with("docker://")) text.remove_prefix(9);
    IMGTOOL_ASSIGN_OR_RETURN(dest, store::ParseReference(text).Wrap(what));
  } else if (found.ref) {
    dest = found.ref;
  } else {
    return InvalidArgumentError(what + ": give a destination (IMAGE is an ID, not a name)");
  }
  PushImageOptions push;
  push.quiet = options.quiet;
  push.jobs = options.jobs;
  push.registry = options.flags;
  IMGTOOL_ASSIGN_OR_RETURN(Digest digest, PushImpl(*store, found, *dest, push));
  if (!options.digestfile.empty()) {
    IMGTOOL_TRY(WriteFileAtomic(options.digestfile, digest.ToString()).Wrap("--digestfile"));
  }
  IMGTOOL_TRY(PrintOut(digest.ToString() + "\n"));
  return 0;
}

// --- login / logout -------------------------------------------------------------

struct LoginOptions {
  std::string registry;
  std::string username;
  std::string password;
  bool password_stdin = false;
  RegistryAccess flags;
};

Result<std::string> ReadPassword(bool from_stdin) {
  if (from_stdin) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string text, ReadFdToString(STDIN_FILENO, 1u << 16));
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    return text;
  }
  if (::isatty(STDIN_FILENO) != 1) {
    return InvalidArgumentError("login: no password: give --password-stdin or run on a terminal");
  }
  (void)WriteAll(STDERR_FILENO, "Password: ");
  termios old{};
  bool restore = ::tcgetattr(STDIN_FILENO, &old) == 0;
  if (restore) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string line;
  std::getline(std::cin, line);
  if (restore) ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
  (void)WriteAll(STDERR_FILENO, "\n");
  return line;
}

Result<int> RunLogin(const LoginOptions& options) {
  std::string name = NormalizeRegistry(options.registry);
  std::string what = "login " + name;
  if (options.username.empty()) return InvalidArgumentError(what + ": give --username");
  std::string password = options.password;
  if (password.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(password, ReadPassword(options.password_stdin));
  }
  if (password.empty()) return InvalidArgumentError(what + ": empty password");
  registry::Credentials creds{options.username, password};
  IMGTOOL_ASSIGN_OR_RETURN(auto client, MakeClient(name, options.flags, creds));
  IMGTOOL_TRY(client->CheckLogin().Wrap(what));
  IMGTOOL_TRY(registry::SaveCredentials(name, creds, options.flags.authfile).Wrap(what));
  IMGTOOL_TRY(PrintOut("Login Succeeded!\n"));
  return 0;
}

struct LogoutOptions {
  std::string registry;
  std::string authfile;
};

Result<int> RunLogout(const LogoutOptions& options) {
  std::string name = NormalizeRegistry(options.registry);
  IMGTOOL_TRY(registry::RemoveCredentials(name, options.authfile).Wrap("logout " + name));
  IMGTOOL_TRY(PrintOut("Removed login credentials for " + name + "\n"));
  return 0;
}

}  // namespace

void AddRegistryFlags(CLI::App* cmd, RegistryAccess& access, std::string_view use) {
  std::string for_use = use.empty() ? "" : " for " + std::string(use);
  cmd->add_flag("--tls-verify", access.tls_verify,
                "Verify TLS certificates and require HTTPS" + for_use +
                    " (default true; --tls-verify=false also allows plain HTTP)");
  cmd->add_option("--cert-dir", access.cert_dir,
                  "Directory of extra CA certificates (*.crt) to trust" +
                      (use.empty() ? std::string(" for this registry") : for_use));
  cmd->add_option("--authfile", access.authfile,
                  "Credentials file (default: $XDG_CONFIG_HOME/imgtool/auth.json)");
}

Result<Digest> PullImage(const Context& context, const store::Reference& ref,
                         const PullImageOptions& options) {
  return PullImpl(context, ref, options);
}

Result<Digest> PushImage(const Context& context, const store::Reference& ref,
                         const PushImageOptions& options) {
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(FoundImage found, FindImage(*store, ref.ToString()));
  return PushImpl(*store, found, ref, options);
}

void RegisterRegistryCommands(CLI::App& app, const Context& context, CommandRegistry& registry) {
  {
    auto options = std::make_shared<PullOptions>();
    CLI::App* cmd = app.add_subcommand("pull", "Pull an image from a registry");
    cmd->add_option("IMAGE", options->image, "Reference: NAME[:TAG] or NAME@DIGEST")->required();
    cmd->add_option("--platform", options->platform,
                    "OS/ARCH[/VARIANT] to choose from a multi-platform image (default: this host)");
    cmd->add_flag("-q,--quiet", options->quiet, "No progress output");
    cmd->add_option("--jobs", options->jobs, "Blobs fetched at once (default 4)")
        ->check(CLI::Range(1, 64));
    cmd->add_option("--creds", options->flags.creds, "USER:PASSWORD for this pull");
    AddRegistryFlags(cmd, options->flags);
    registry.Set(cmd, [&context, options] { return RunPull(context, *options); });
  }
  {
    auto options = std::make_shared<PushOptions>();
    CLI::App* cmd = app.add_subcommand("push", "Push an image to a registry");
    cmd->add_option("IMAGE", options->image, "Reference, ID or digest in the store")->required();
    cmd->add_option("DESTINATION", options->destination,
                    "Where to push (default: the image's own name)");
    cmd->add_flag("-q,--quiet", options->quiet, "No progress output");
    cmd->add_option("--jobs", options->jobs, "Blobs uploaded at once (default 4)")
        ->check(CLI::Range(1, 64));
    cmd->add_option("--digestfile", options->digestfile, "Also write the digest to this file");
    cmd->add_option("--creds", options->flags.creds, "USER:PASSWORD for this push");
    AddRegistryFlags(cmd, options->flags);
    registry.Set(cmd, [&context, options] { return RunPush(context, *options); });
  }
  {
    auto options = std::make_shared<LoginOptions>();
    CLI::App* cmd = app.add_subcommand("login", "Store credentials for a registry");
    cmd->add_option("REGISTRY", options->registry, "host[:port]")->required();
    cmd->add_option("-u,--username", options->username, "User name");
    cmd->add_option("-p,--password", options->password,
                    "Password (visible to other users; prefer --password-stdin)");
    cmd->add_flag("--password-stdin", options->password_stdin, "Read the password from stdin");
    AddRegistryFlags(cmd, options->flags);
    registry.Set(cmd, [options] { return RunLogin(*options); });
  }
  {
    auto options = std::make_shared<LogoutOptions>();
    CLI::App* cmd = app.add_subcommand("logout", "Remove stored credentials for a registry");
    cmd->add_option("REGISTRY", options->registry, "host[:port]")->required();
    cmd->add_option("--authfile", options->authfile,
                    "Credentials file (default: $XDG_CONFIG_HOME/imgtool/auth.json)");
    registry.Set(cmd, [options] { return RunLogout(*options); });
  }
}

}  // namespace imgtool::cli
