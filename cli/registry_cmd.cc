// pull, push, login, logout: moving images between the store and registries.
#include "cli/registry_cmd.h"

#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
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
#include "overlay/applier.h"
#include "overlay/unpacker.h"
#include "registry/auth_config.h"
#include "registry/client.h"
#include "registry/pull.h"
#include "registry/push.h"

namespace imgtool::cli {

namespace {

struct RegistryFlags {
  bool tls_verify = true;
  std::string cert_dir;
  std::string authfile;
  std::string creds;  // USER:PASSWORD
};

void AddRegistryFlags(CLI::App* cmd, RegistryFlags& flags) {
  cmd->add_flag("--tls-verify", flags.tls_verify,
                "Verify TLS certificates and require HTTPS (default true; "
                "--tls-verify=false also allows plain HTTP)");
  cmd->add_option("--cert-dir", flags.cert_dir,
                  "Directory of extra CA certificates (*.crt) to trust for this registry");
  cmd->add_option("--authfile", flags.authfile,
                  "Credentials file (default: $XDG_CONFIG_HOME/imgtool/auth.json)");
}

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
                                                     const RegistryFlags& flags,
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

// The image's first layer applied while its blob downloads: the bytes the
// pull writes to the ingest also go through a socket to ApplyLayer on a
// thread of this object (the ingest verifies the blob digest). Once the
// download ended and the config is known (its first diff ID), Finish commits
// the snapshot under that chain ID, or removes it: any failure leaves the
// layer to the ordinary unpack from the committed blob. Snapshotter calls
// happen on the threads that construct and finish it, one at a time.
class StreamedFirstLayer final : public registry::BlobStream {
 public:
  StreamedFirstLayer(overlay::Snapshotter& snapshotter, const store::Descriptor& layer)
      : snapshotter_(snapshotter),
        layer_(layer),
        key_(StrCat(overlay::kUnpackKeyPrefix, ::getpid(), "-stream-",
                    layer.digest.hex().substr(0, 12))) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return;
    UniqueFd read_end(fds[0]);
    write_end_.reset(fds[1]);
    Result<std::vector<Mount>> prepared = snapshotter_.Prepare(key_, "");
    if (!prepared) {
      LogDebug("pull: no streamed unpack: ", prepared.error().ToString());
      write_end_.reset();
      return;
    }
    prepared_ = true;
    Result<std::filesystem::path> upper = snapshotter_.UpperDir(key_);
    if (!upper) {
      write_end_.reset();
      return;
    }
    thread_ = std::thread([this, fd = std::move(read_end), dir = *upper]() mutable {
      overlay::ApplyOptions apply;
      apply.whiteouts = overlay::WhiteoutMode::kOverlay;
      // The ingest hashes and verifies these same bytes; Finish commits
      // nothing unless it did.
      apply.hash_blob = false;
      apply.description = "layer " + layer_.digest.ToString();
      applied_ = overlay::ApplyLayer(fd.get(), dir, apply);
      // Closing the read end makes further writes fail at once (EPIPE).
      fd.reset();
    });
  }

  ~StreamedFirstLayer() override {
    write_end_.reset();
    if (thread_.joinable()) thread_.join();
    if (prepared_ && !committed_) (void)snapshotter_.Remove(key_);
  }

  void Write(std::string_view bytes) override {
    while (write_end_ && !bytes.empty()) {
      ssize_t n = ::send(write_end_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        write_end_.reset();  // the apply gave up: the ordinary unpack will do
        return;
      }
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }

  void End(bool committed) override {
    blob_committed_ = committed;
    write_end_.reset();
  }

  // Commits the applied layer as the snapshot of `diff_id` (the chain ID of a
  // first layer) when the blob was committed and the tar's digest matches;
  // true when that snapshot exists afterwards.
  bool Finish(const Digest& diff_id) {
    write_end_.reset();
    if (thread_.joinable()) thread_.join();
    if (!prepared_ || !blob_committed_ || !applied_) {
      if (applied_.has_value() == false && prepared_ && blob_committed_) {
        LogDebug("pull: streamed unpack failed: ", applied_.error().ToString());
      }
      return false;
    }
    if (applied_->diff_id != diff_id) return false;
    Status status = snapshotter_.Commit(diff_id.ToString(), key_);
    if (!status && status.error().code() != ErrorCode::kAlreadyExists) return false;
    committed_ = status.has_value();
    LogDebug("pull: ", layer_.digest.ToString(), " unpacked while it downloaded");
    return true;
  }

  const Digest& digest() const { return layer_.digest; }

 private:
  overlay::Snapshotter& snapshotter_;
  store::Descriptor layer_;
  std::string key_;
  UniqueFd write_end_;
  bool prepared_ = false;
  std::atomic<bool> blob_committed_ = false;
  bool committed_ = false;
  Result<overlay::ApplyResult> applied_ = InternalError("not applied");
  std::thread thread_;
};

// Unpacks the leading layers whose blobs are in while later ones still
// download, so that download, verification and extraction overlap; the first
// layer is even applied while it downloads (StreamedFirstLayer). The final
// overlay::Unpack before tagging finds those snapshots committed and does the
// rest; an error here is left for that call to report.
class OverlappedUnpacker {
 public:
  OverlappedUnpacker(store::Store& store, overlay::Snapshotter& snapshotter)
      : store_(store), snapshotter_(snapshotter), thread_([this] { Loop(); }) {}
  ~OverlappedUnpacker() { Finish(); }

  void SetManifest(const store::Manifest& manifest) {
    std::lock_guard lock(mu_);
    manifest_ = manifest;
    cv_.notify_one();
  }
  void BlobDone(const Digest& digest) {
    std::lock_guard lock(mu_);
    done_.insert(digest);
    cv_.notify_one();
  }
  // The stream for the first layer's download (called once per blob, from a
  // download thread, before the loop can touch the snapshotter: the loop
  // waits for that blob); null for any other blob.
  std::unique_ptr<registry::BlobStream> StreamFor(const store::Descriptor& blob) {
    std::lock_guard lock(mu_);
    if (!manifest_ || manifest_->layers.empty() || streamed_ ||
        blob.digest != manifest_->layers[0].digest) {
      return nullptr;
    }
    auto stream = std::make_unique<StreamedFirstLayer>(snapshotter_, manifest_->layers[0]);
    streamed_ = stream.get();
    return std::make_unique<Forward>(std::move(stream), this);
  }
  // Waits for the unpack under way; the snapshotter is the caller's again.
  void Finish() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
    std::unique_ptr<StreamedFirstLayer> stream;
    std::optional<store::Manifest> manifest;
    bool config_in = false;
    {
      std::lock_guard lock(mu_);
      stream = std::move(stream_);
      manifest = manifest_;
      config_in = manifest_ && done_.count(manifest_->config.digest) > 0;
    }
    // A stream back from a download that the loop had no turn for (the pull
    // ended right after the blob): finished here, so its work is not lost.
    if (stream && config_in) {
      Result<store::ImageConfig> config = store_.ReadConfig(manifest->config.digest);
      if (config && !config->rootfs.diff_ids.empty()) stream->Finish(config->rootfs.diff_ids[0]);
    }
    stream.reset();  // an unfinished stream removes its snapshot
  }

 private:
  // Hands the first layer's stream back to this unpacker when its download
  // ends, so that its snapshot is finished on the loop's thread.
  class Forward final : public registry::BlobStream {
   public:
    Forward(std::unique_ptr<StreamedFirstLayer> stream, OverlappedUnpacker* owner)
        : stream_(std::move(stream)), owner_(owner) {}
    ~Forward() override {
      if (stream_) owner_->Adopt(std::move(stream_));
    }
    void Write(std::string_view bytes) override { stream_->Write(bytes); }
    void End(bool committed) override {
      stream_->End(committed);
      owner_->Adopt(std::move(stream_));
    }

   private:
    std::unique_ptr<StreamedFirstLayer> stream_;
    OverlappedUnpacker* owner_;
  };

  void Adopt(std::unique_ptr<StreamedFirstLayer> stream) {
    std::lock_guard lock(mu_);
    stream_ = std::move(stream);
    cv_.notify_one();
  }

  // Leading layers whose blobs are committed; 0 until the config is in, and
  // while the first layer's stream has not come back.
  size_t ReadyPrefix() const {
    if (!manifest_ || !done_.count(manifest_->config.digest)) return 0;
    if (streamed_ != nullptr && !stream_finished_ && stream_ == nullptr) return 0;
    size_t n = 0;
    while (n < manifest_->layers.size() && done_.count(manifest_->layers[n].digest)) ++n;
    return n;
  }

  void Loop() {
    std::unique_lock lock(mu_);
    std::optional<store::ImageConfig> config;
    while (true) {
      cv_.wait(lock, [&] { return stop_ || (!failed_ && ReadyPrefix() > unpacked_); });
      if (stop_) return;
      size_t n = ReadyPrefix();
      store::Manifest prefix = *manifest_;
      std::unique_ptr<StreamedFirstLayer> stream;
      if (!stream_finished_ && stream_) stream = std::move(stream_);
      lock.unlock();
      bool ok = true;
      if (!config) {
        auto read = store_.ReadConfig(prefix.config.digest);
        if (read) config = std::move(*read);
        ok = read.has_value() && config->rootfs.diff_ids.size() == prefix.layers.size();
      }
      if (stream) {
        if (ok) stream->Finish(config->rootfs.diff_ids[0]);
        stream.reset();
      }
      if (ok) {
        store::ImageConfig partial = *config;
        prefix.layers.resize(n);
        partial.rootfs.diff_ids.resize(n);
        ok = overlay::Unpack(store_, snapshotter_, prefix, partial).has_value();
      }
      lock.lock();
      if (streamed_ != nullptr) stream_finished_ = true;
      if (ok) {
        unpacked_ = n;
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
  std::set<Digest> done_;
  size_t unpacked_ = 0;
  bool failed_ = false;
  bool stop_ = false;
  const StreamedFirstLayer* streamed_ = nullptr;     // made for the first layer
  std::unique_ptr<StreamedFirstLayer> stream_;       // back from its download
  bool stream_finished_ = false;
  std::thread thread_;
};

// --- pull ---------------------------------------------------------------------

Result<Digest> PullImpl(const Context& context, const store::Reference& ref,
                        const PullImageOptions& options, const RegistryFlags& flags) {
  registry::PullOptions pull;
  pull.platform = options.platform;
  pull.jobs = options.jobs;
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(auto snapshotter, context.OpenSnapshotter());
  IMGTOOL_ASSIGN_OR_RETURN(auto client, MakeClient(ref.registry(), flags, std::nullopt));
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
  RegistryFlags flags;
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
  IMGTOOL_ASSIGN_OR_RETURN(Digest id, PullImpl(context, ref, pull, options.flags));
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
  RegistryFlags flags;
};

Result<Digest> PushImpl(const store::Store& store, const FoundImage& found,
                        const store::Reference& dest, const PushImageOptions& options,
                        const RegistryFlags& flags) {
  registry::PushOptions push;
  push.jobs = options.jobs;
  if (found.ref && found.ref->registry() == dest.registry() &&
      found.ref->repository() != dest.repository()) {
    push.mount_from = found.ref->repository();
  }
  IMGTOOL_ASSIGN_OR_RETURN(auto client, MakeClient(dest.registry(), flags, std::nullopt));
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
  IMGTOOL_ASSIGN_OR_RETURN(Digest digest, PushImpl(*store, found, *dest, push, options.flags));
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
  RegistryFlags flags;
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

Result<Digest> PullImage(const Context& context, const store::Reference& ref,
                         const PullImageOptions& options) {
  RegistryFlags flags;
  flags.tls_verify = options.tls_verify;
  flags.cert_dir = options.cert_dir;
  flags.authfile = options.authfile;
  return PullImpl(context, ref, options, flags);
}

Result<Digest> PushImage(const Context& context, const store::Reference& ref,
                         const PushImageOptions& options) {
  RegistryFlags flags;
  flags.tls_verify = options.tls_verify;
  flags.cert_dir = options.cert_dir;
  flags.authfile = options.authfile;
  flags.creds = options.creds;
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(FoundImage found, FindImage(*store, ref.ToString()));
  return PushImpl(*store, found, ref, options, flags);
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
