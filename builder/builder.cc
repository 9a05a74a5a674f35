#include "builder/builder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "builder/base.h"
#include "builder/copy.h"
#include "builder/normalize.h"
#include "common/byte_sink.h"
#include "common/file_lock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/mount.h"
#include "common/safe_path.h"
#include "common/scope_guard.h"
#include "common/temp_dir.h"
#include "overlay/differ.h"
#include "overlay/flatten.h"
#include "overlay/snapshotter.h"
#include "overlay/unpacker.h"
#include "runner/container.h"
#include "store/archive.h"
#include "store/store.h"

namespace imgtool::builder {

namespace fs = std::filesystem;

namespace {

using Parts = std::vector<std::pair<std::string, std::string>>;

std::string FormatTime(int64_t seconds) {
  time_t t = static_cast<time_t>(seconds);
  struct tm tm {};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string RandomHex(int bytes) {
  std::random_device rd;
  std::string out;
  static const char kHex[] = "0123456789abcdef";
  for (int i = 0; i < bytes; ++i) {
    unsigned v = rd() & 0xff;
    out += kHex[v >> 4];
    out += kHex[v & 15];
  }
  return out;
}

std::string KeyOf(const Parts& parts) {
  Sha256Hasher hasher;
  for (const auto& [name, value] : parts) {
    hasher.Update(name);
    hasher.Update("\0", 1);
    hasher.Update(value);
    hasher.Update("\n", 1);
  }
  return hasher.Finish().hex();
}

std::string Shorten(std::string text, size_t max) {
  for (char& c : text) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  if (text.size() > max) text = text.substr(0, max - 3) + "...";
  return text;
}

// A built (or base) image in progress.
struct State {
  std::vector<store::Descriptor> layers;
  std::vector<Digest> diff_ids;
  store::ImageConfig config;
  std::vector<std::string> shell = {"/bin/sh", "-c"};
  std::string key;
};

std::string ChainOf(const State& state) {
  if (state.diff_ids.empty()) return "";
  return overlay::ChainIds(state.diff_ids).back().ToString();
}

// A cached layer: the key's result.
struct CacheEntry {
  store::Descriptor layer;
  Digest diff_id;
};

class Cache {
 public:
  explicit Cache(fs::path dir) : dir_(std::move(dir)) {}

  std::optional<CacheEntry> Get(const std::string& key, const store::Store& store) const {
    auto text = ReadFileToString(dir_ / "keys" / (key + ".json"), 1 << 16);
    if (!text) return std::nullopt;
    try {
      auto json = nlohmann::json::parse(*text);
      auto layer = store::DescriptorFromJson(json.at("layer"));
      auto diff_id = Digest::Parse(json.at("diff_id").get<std::string>());
      if (!layer || !diff_id) return std::nullopt;
      if (!store.content().Exists(layer->digest)) return std::nullopt;
      return CacheEntry{*layer, *diff_id};
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  Status Put(const std::string& key, const CacheEntry& entry) const {
    std::error_code ec;
    fs::create_directories(dir_ / "keys", ec);
    nlohmann::json json;
    json["layer"] = nlohmann::json::parse(store::SerializeDescriptor(entry.layer));
    json["diff_id"] = entry.diff_id.ToString();
    return WriteFileAtomic(dir_ / "keys" / (key + ".json"), json.dump());
  }

  // The parts of the key a step had the last time it was built, to explain a miss.
  std::optional<Parts> LastParts(const std::string& slot) const {
    auto text = ReadFileToString(dir_ / "explain" / (slot + ".json"), 16 << 20);
    if (!text) return std::nullopt;
    try {
      Parts parts;
      for (const auto& item : nlohmann::json::parse(*text)) {
        parts.emplace_back(item.at(0).get<std::string>(), item.at(1).get<std::string>());
      }
      return parts;
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  void SaveParts(const std::string& slot, const Parts& parts) const {
    std::error_code ec;
    fs::create_directories(dir_ / "explain", ec);
    nlohmann::json json = nlohmann::json::array();
    for (const auto& [name, value] : parts) json.push_back({name, value});
    (void)WriteFileAtomic(dir_ / "explain" / (slot + ".json"),
                          json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }

  fs::path MountDir(const std::string& id) const { return dir_ / "mounts" / id; }

 private:
  fs::path dir_;
};

// Why the key differs from the last build's: the first part that changed.
std::string ExplainMiss(const std::optional<Parts>& last, const Parts& now) {
  if (!last) return "miss: not built before";
  std::map<std::string, std::string> before(last->begin(), last->end());
  std::set<std::string> seen;
  for (const auto& [name, value] : now) {
    seen.insert(name);
    auto it = before.find(name);
    if (it == before.end()) return "miss: " + name + " is new";
    if (it->second != value) {
      if (name == "parent") return "miss: the parent step changed";
      return "miss: " + name + " changed (was \"" + Shorten(it->second, 40) + "\", now \"" +
             Shorten(value, 40) + "\")";
    }
  }
  for (const auto& [name, value] : *last) {
    if (!seen.count(name)) return "miss: " + name + " is gone";
  }
  return "miss: the layer is no longer in the store";
}

class Output {
 public:
  Output(int out_fd, int log_fd, bool quiet) : out_fd_(out_fd), log_fd_(log_fd), quiet_(quiet) {}
  void Line(std::string_view text) {
    std::lock_guard<std::mutex> lock(mu_);
    std::string line(text);
    line += '\n';
    if (!quiet_ && out_fd_ >= 0) (void)WriteAll(out_fd_, line);
    if (log_fd_ >= 0) (void)WriteAll(log_fd_, line);
  }

 private:
  std::mutex mu_;
  int out_fd_;
  int log_fd_;
  bool quiet_;
};

// Reads a container's output and writes it line by line with a prefix.
class OutputRelay {
 public:
  OutputRelay(Output& out, std::string prefix) : out_(out), prefix_(std::move(prefix)) {}
  Status Start() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoError("pipe");
    read_.reset(fds[0]);
    write_.reset(fds[1]);
    return OkStatus();
  }
  // Only once the container runs: a thread alive while the runner clones
  // could hold a lock (malloc's) that the child then waits for forever.
  void StartReading() {
    thread_ = std::thread([this] { Loop(); });
  }
  int write_fd() const { return write_.get(); }
  void Finish() {
    write_.reset();
    if (thread_.joinable()) thread_.join();
  }
  ~OutputRelay() { Finish(); }

 private:
  void Loop() {
    std::string pending;
    char buf[4096];
    while (true) {
      ssize_t n = ::read(read_.get(), buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(buf, static_cast<size_t>(n));
      size_t nl;
      while ((nl = pending.find('\n')) != std::string::npos) {
        out_.Line(prefix_ + pending.substr(0, nl));
        pending.erase(0, nl + 1);
      }
    }
    if (!pending.empty()) out_.Line(prefix_ + pending);
  }

  Output& out_;
  std::string prefix_;
  UniqueFd read_;
  UniqueFd write_;
  std::thread thread_;
};

class Builder {
 public:
  Builder(const BuildOptions& options, Recipe recipe, std::map<std::string, std::string> args,
          int64_t epoch, store::Store& store, overlay::OverlaySnapshotter& snapshotter)
      : options_(options),
        recipe_(std::move(recipe)),
        args_(std::move(args)),
        epoch_(epoch),
        store_(store),
        snapshotter_(snapshotter),
        cache_(options.state_dir / "build-cache"),
        out_(options.out_fd, options.log_fd, options.quiet) {}

  Result<BuildResult> Run();

 private:
  Result<State> BuildStage(const Stage& stage);
  Result<State> StartFromBase(const Stage& stage, StepReport* report);
  Result<State> LayerBase(const Stage& stage, const std::string& key, StepReport* report);
  Status DoStep(const Stage& stage, size_t index, State* state);
  Status ExecuteLayerStep(const Stage& stage, const Step& step, const std::string& prefix,
                          const State& state, const std::vector<std::string>& used_args,
                          CacheEntry* made);
  Status RunInSnapshot(const Step& step, const std::string& prefix, const State& state,
                       const std::string& active_key, const std::vector<Mount>& mounts,
                       const std::vector<std::string>& used_args);
  Status CopyInSnapshot(const Step& step, const State& state, const std::vector<Mount>& mounts);
  Result<std::string> EnsureSnapshot(const State& state);
  Result<CacheEntry> CommitLayer(const std::string& active_key, const State& state);
  Result<BuildResult> WriteImage(const State& state);
  Status WriteOutputs(const BuildResult& result);

  std::map<std::string, std::string> Vars(const State& state) const {
    std::map<std::string, std::string> vars = args_;
    for (const std::string& kv : state.config.config.env) {
      size_t eq = kv.find('=');
      if (eq != std::string::npos) vars[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    return vars;
  }
  std::string Expand(const std::string& text, const State& state) const {
    return ExpandVars(text, Vars(state));
  }
  std::string Slot(const Stage& stage, int number) const {
    std::error_code ec;
    fs::path recipe = fs::weakly_canonical(options_.recipe_path, ec);
    return Digest::Sha256Of(recipe.string() + '\0' + stage.name + '\0' + std::to_string(number))
        .hex();
  }
  std::string Prefix(const Stage& stage, size_t number) const {
    return "[" + (stage.name.empty() ? std::string() : stage.name + " ") + std::to_string(number) +
           "/" + std::to_string(stage.steps.size()) + "] ";
  }
  std::string Where(const Stage& stage, size_t number, const Step& step) const {
    return (stage.name.empty() ? std::string() : "stage " + stage.name + " ") + "step " +
           std::to_string(number) + " (" + Shorten(DescribeStep(step), 80) + ", " + recipe_.file +
           ":" + std::to_string(step.location.line) + ")";
  }
  fs::path ScratchDir() const { return options_.state_dir / "tmp"; }
  std::optional<int64_t> Clamp() const {
    return options_.timestamp_now ? std::nullopt : std::optional<int64_t>(epoch_);
  }
  int64_t FileTime() const { return options_.timestamp_now ? NowSeconds() : epoch_; }

  const BuildOptions& options_;
  Recipe recipe_;
  std::map<std::string, std::string> args_;
  int64_t epoch_;
  store::Store& store_;
  overlay::OverlaySnapshotter& snapshotter_;
  Cache cache_;
  Output out_;
  std::string created_;
  std::map<std::string, State> stages_;
  std::vector<StepReport> reports_;
};

Result<std::string> Builder::EnsureSnapshot(const State& state) {
  std::string chain = ChainOf(state);
  if (chain.empty()) return chain;
  auto info = snapshotter_.Stat(chain);
  if (info && info->kind == overlay::Kind::kCommitted) return chain;
  store::Manifest manifest;
  manifest.layers = state.layers;
  store::ImageConfig config;
  config.rootfs.diff_ids = state.diff_ids;
  return overlay::Unpack(store_, snapshotter_, manifest, config);
}

Result<CacheEntry> Builder::CommitLayer(const std::string& active_key, const State& state) {
  IMGTOOL_ASSIGN_OR_RETURN(fs::path upper, snapshotter_.UpperDir(active_key));
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<store::IngestWriter> writer, store_.content().Writer());
  overlay::DiffOptions diff;
  diff.compression = overlay::Compression::kGzip;
  diff.source_date_epoch = Clamp();
  IMGTOOL_ASSIGN_OR_RETURN(overlay::LayerInfo info,
                           overlay::WriteLayerToStore(upper, *writer, diff).Wrap("write layer"));
  std::vector<Digest> diff_ids = state.diff_ids;
  diff_ids.push_back(info.diff_id);
  std::string chain = overlay::ChainIds(diff_ids).back().ToString();
  Status committed = snapshotter_.Commit(chain, active_key);
  if (!committed) {
    if (committed.error().code() != ErrorCode::kAlreadyExists) {
      return std::move(committed).error().Wrap("commit snapshot");
    }
    (void)snapshotter_.Remove(active_key);
  }
  CacheEntry entry;
  entry.layer.media_type = info.media_type;
  entry.layer.digest = info.digest;
  entry.layer.size = info.size;
  entry.diff_id = info.diff_id;
  return entry;
}

Status Builder::RunInSnapshot(const Step& step, const std::string& prefix, const State& state,
                              const std::string& active_key, const std::vector<Mount>& mounts,
                              const std::vector<std::string>& used_args) {
  (void)used_args;
  std::error_code ec;
  fs::create_directories(ScratchDir(), ec);
  IMGTOOL_ASSIGN_OR_RETURN(TempDir rootfs, TempDir::Create(ScratchDir(), "rootfs-"));
  runner::ContainerSpec spec;
  spec.id = active_key;
  spec.rootfs_dir = rootfs.path();
  spec.rootfs_mounts = mounts;
  if (!step.exec.empty()) {
    for (const std::string& arg : step.exec) spec.process.args.push_back(Expand(arg, state));
  } else {
    spec.process.args = state.shell;
    spec.process.args.push_back(Expand(step.command, state));
  }
  // Args are in the environment of run steps (not in the image's config).
  spec.process.env = state.config.config.env;
  for (const auto& [name, value] : args_) {
    if (!runner::LookupEnv(spec.process.env, name)) runner::SetEnv(&spec.process.env, name, value);
  }
  spec.process.cwd =
      state.config.config.working_dir.empty() ? "/" : state.config.config.working_dir;
  spec.process.user = state.config.config.user;
  std::string network = step.network.empty() ? options_.default_network : step.network;
  IMGTOOL_ASSIGN_OR_RETURN(spec.network.mode, runner::ParseNetworkMode(network));
  spec.network.bridge_name = options_.bridge_name;
  spec.network.subnet = options_.bridge_subnet;
  spec.network.state_dir = options_.network_state_dir.empty()
                               ? fs::path(runner::kDefaultNetworkStateDir)
                               : options_.network_state_dir;
  if (step.memory_bytes) spec.resources.memory_bytes = step.memory_bytes;
  if (step.cpus) spec.resources.cpus = step.cpus;
  spec.own_cgroup = !spec.resources.empty();
  for (const RunMount& mount : step.mounts) {
    runner::VolumeMount volume;
    volume.destination = mount.target;
    if (mount.type == RunMount::Type::kCache) {
      std::string id = mount.id;
      if (id.empty()) {
        id = mount.target;
        std::replace(id.begin(), id.end(), '/', '_');
      }
      fs::path dir = cache_.MountDir(id);
      fs::create_directories(dir, ec);
      if (ec) return ErrnoError("create cache mount " + dir.string(), ec.value());
      volume.source = dir.string();
    } else {
      IMGTOOL_TRY(CheckInsideContext(options_.context_dir, mount.source).Wrap("bind mount source"));
      IMGTOOL_ASSIGN_OR_RETURN(std::string clean, CleanPathInRoot(mount.source));
      volume.source = (fs::canonical(options_.context_dir) / clean).string();
      volume.read_only = true;
    }
    spec.volumes.push_back(std::move(volume));
  }
  OutputRelay relay(out_, prefix);
  IMGTOOL_TRY(relay.Start());
  runner::Stdio stdio;
  stdio.in = -1;
  stdio.out = relay.write_fd();
  stdio.err = relay.write_fd();
  Result<std::unique_ptr<runner::Container>> container = runner::Container::Start(spec, stdio);
  relay.StartReading();
  if (!container) {
    relay.Finish();
    return std::move(container).error();
  }
  Result<runner::ExitStatus> status = (*container)->Wait();
  container->reset();
  relay.Finish();
  if (!status) return std::move(status).error();
  if (status->exit_code != 0) {
    std::string message = "exit code " + std::to_string(status->exit_code);
    if (!status->message.empty()) message += " (" + status->message + ")";
    return Error(ErrorCode::kFailedPrecondition, message);
  }
  std::vector<std::string> targets;
  for (const RunMount& mount : step.mounts) targets.push_back(mount.target);
  IMGTOOL_ASSIGN_OR_RETURN(fs::path upper, snapshotter_.UpperDir(active_key));
  IMGTOOL_TRY(RemoveRunnerMountTargets(upper, targets));
  IMGTOOL_TRY(NormalizeUpperDir(upper));
  return OkStatus();
}

Status Builder::CopyInSnapshot(const Step& step, const State& state,
                               const std::vector<Mount>& mounts) {
  const CopySpec& copy = step.copy;
  std::error_code ec;
  fs::create_directories(ScratchDir(), ec);
  IMGTOOL_ASSIGN_OR_RETURN(CopyMetadata meta,
                           CopyMetadataFor(copy.chown, copy.mode, copy.from.empty(), FileTime()));
  std::string dest = Expand(copy.dest, state);
  if (!dest.starts_with("/")) {
    std::string workdir =
        state.config.config.working_dir.empty() ? "/" : state.config.config.working_dir;
    dest = workdir + (workdir.ends_with("/") ? "" : "/") + dest;
  }
  std::vector<std::string> patterns;
  for (const std::string& src : copy.src) patterns.push_back(Expand(src, state));

  IMGTOOL_ASSIGN_OR_RETURN(TempDir target_dir, TempDir::Create(ScratchDir(), "copy-"));
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<MountGuard> target_mounts,
                           MountAll(mounts, target_dir.path()));
  UniqueFd rootfs_fd(::open(target_dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!rootfs_fd) return ErrnoError("open " + target_dir.path().string());

  if (copy.from.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<CopySource> sources,
                             FindContextSources(options_.context_dir, patterns));
    UniqueFd context_fd(::open(options_.context_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!context_fd) return ErrnoError("open build context " + options_.context_dir.string());
    IMGTOOL_TRY(CopyInto(context_fd.get(), sources, rootfs_fd.get(), dest, meta));
  } else {
    const State& from = stages_.at(copy.from);
    IMGTOOL_ASSIGN_OR_RETURN(std::string chain, EnsureSnapshot(from));
    std::string view_key = "build-view-" + std::to_string(::getpid()) + "-" + RandomHex(6);
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<Mount> view, snapshotter_.View(view_key, chain));
    ScopeGuard remove_view([&] { (void)snapshotter_.Remove(view_key); });
    IMGTOOL_ASSIGN_OR_RETURN(TempDir source_dir, TempDir::Create(ScratchDir(), "from-"));
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<MountGuard> source_mounts,
                             MountAll(view, source_dir.path()));
    UniqueFd source_fd(::open(source_dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!source_fd) return ErrnoError("open " + source_dir.path().string());
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<CopySource> sources,
                             FindRootSources(source_fd.get(), patterns, "stage " + copy.from));
    IMGTOOL_TRY(CopyInto(source_fd.get(), sources, rootfs_fd.get(), dest, meta));
    source_fd.reset();
    for (auto it = source_mounts.rbegin(); it != source_mounts.rend(); ++it) {
      IMGTOOL_TRY(it->Unmount());
    }
  }
  rootfs_fd.reset();
  for (auto it = target_mounts.rbegin(); it != target_mounts.rend(); ++it) {
    IMGTOOL_TRY(it->Unmount());
  }
  return OkStatus();
}

Status Builder::ExecuteLayerStep(const Stage& stage, const Step& step, const std::string& prefix,
                                 const State& state, const std::vector<std::string>& used_args,
                                 CacheEntry* made) {
  (void)stage;
  IMGTOOL_ASSIGN_OR_RETURN(std::string parent, EnsureSnapshot(state));
  std::string active_key = "build-" + std::to_string(::getpid()) + "-" + RandomHex(8);
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<Mount> mounts, snapshotter_.Prepare(active_key, parent));
  ScopeGuard remove_active([&] { (void)snapshotter_.Remove(active_key); });
  if (step.kind == Step::Kind::kRun) {
    IMGTOOL_TRY(RunInSnapshot(step, prefix, state, active_key, mounts, used_args));
  } else {
    IMGTOOL_TRY(CopyInSnapshot(step, state, mounts));
  }
  IMGTOOL_ASSIGN_OR_RETURN(*made, CommitLayer(active_key, state));
  remove_active.Cancel();
  return OkStatus();
}

Status Builder::DoStep(const Stage& stage, size_t index, State* state) {
  const Step& step = stage.steps[index];
  const size_t number = index + 1;
  std::string prefix = Prefix(stage, number);
  std::string description = DescribeStep(step);
  StepReport report;
  report.stage = stage.name;
  report.number = static_cast<int>(number);
  report.description = description;
  auto started = std::chrono::steady_clock::now();
  std::string where = Where(stage, number, step);
  std::map<std::string, std::string> vars = Vars(*state);
  store::HistoryEntry history;
  history.created = created_;
  history.created_by = "imgtool build: " + DescribeStep(step);

  switch (step.kind) {
    case Step::Kind::kEnv:
      for (const auto& [name, value] : step.values) {
        state->config.SetEnv(name, ExpandVars(value, Vars(*state)));
      }
      break;
    case Step::Kind::kLabel:
      for (const auto& [name, value] : step.values) {
        state->config.config.labels[ExpandVars(name, vars)] = ExpandVars(value, vars);
      }
      break;
    case Step::Kind::kWorkdir: {
      std::string dir = ExpandVars(step.value, vars);
      if (!dir.starts_with("/")) {
        return InvalidArgumentError(where + ": workdir \"" + dir + "\" is not absolute");
      }
      state->config.config.working_dir = dir;
      break;
    }
    case Step::Kind::kUser:
      state->config.config.user = ExpandVars(step.value, vars);
      break;
    case Step::Kind::kShell:
      state->shell = step.shell;
      break;
    case Step::Kind::kRun:
    case Step::Kind::kCopy:
      break;
  }
  out_.Line(prefix + description);
  if (step.kind != Step::Kind::kRun && step.kind != Step::Kind::kCopy) {
    // Metadata steps change the config only; later keys see it through the
    // parent key.
    state->key = KeyOf({{"parent", state->key}, {"step", ExpandVars(description, vars)}});
    history.empty_layer = true;
    state->config.history.push_back(std::move(history));
    // Nothing was taken from the cache: the step only changed the config.
    report.cached = false;
    report.explain = "metadata only";
    reports_.push_back(std::move(report));
    return OkStatus();
  }

  // The cache key: the parent chain, the step as it will run, the config it
  // runs with, the args it uses, and for copies what is copied.
  Parts parts;
  parts.emplace_back("parent", state->key);
  parts.emplace_back("step", description);
  std::string text = step.kind == Step::Kind::kRun ? step.command : "";
  for (const std::string& arg : step.exec) text += " " + arg;
  if (step.kind == Step::Kind::kCopy) {
    for (const std::string& src : step.copy.src) text += " " + src;
    text += " " + step.copy.dest;
  }
  std::vector<std::string> used_args = ReferencedVars(text, args_);
  for (const std::string& name : used_args) parts.emplace_back("arg " + name, args_.at(name));
  parts.emplace_back("env", [&] {
    std::string env;
    for (const std::string& kv : state->config.config.env) env += kv + "\n";
    return env;
  }());
  parts.emplace_back("workdir", state->config.config.working_dir);
  parts.emplace_back("user", state->config.config.user);
  if (step.kind == Step::Kind::kRun) {
    std::string shell;
    for (const std::string& s : state->shell) shell += s + " ";
    parts.emplace_back("shell", shell);
    for (const RunMount& mount : step.mounts) {
      parts.emplace_back(
          "mount " + mount.target,
          (mount.type == RunMount::Type::kCache ? "cache " + mount.id : "bind " + mount.source));
    }
  }
  parts.emplace_back("epoch", options_.timestamp_now ? "now" : std::to_string(epoch_));
  if (step.kind == Step::Kind::kCopy) {
    std::vector<std::string> patterns;
    for (const std::string& src : step.copy.src) patterns.push_back(Expand(src, *state));
    if (step.copy.from.empty()) {
      IMGTOOL_ASSIGN_OR_RETURN(std::vector<CopySource> sources,
                               FindContextSources(options_.context_dir, patterns).Wrap(where));
      UniqueFd context_fd(::open(options_.context_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!context_fd) return ErrnoError(where + ": open build context");
      IMGTOOL_ASSIGN_OR_RETURN(CopyMetadata meta,
                               CopyMetadataFor(step.copy.chown, step.copy.mode, true, 0));
      IMGTOOL_TRY(HashSources(context_fd.get(), sources, meta, &parts).Wrap(where));
    } else {
      parts.emplace_back("stage " + step.copy.from, stages_.at(step.copy.from).key);
    }
  }
  std::string key = KeyOf(parts);
  std::string slot = Slot(stage, static_cast<int>(number));
  std::optional<CacheEntry> cached;
  if (!options_.no_cache) cached = cache_.Get(key, store_);
  report.layer = true;
  if (cached) {
    report.cached = true;
    report.explain = "hit";
    report.layer_size = cached->layer.size;
  } else {
    report.explain =
        options_.no_cache ? "miss: --no-cache" : ExplainMiss(cache_.LastParts(slot), parts);
    CacheEntry made;
    Status done = ExecuteLayerStep(stage, step, prefix, *state, used_args, &made);
    if (!done) {
      report.explain = "failed";
      reports_.push_back(report);
      return std::move(done).error().Wrap(where);
    }
    IMGTOOL_TRY(cache_.Put(key, made).Wrap(where));
    cached = made;
    report.layer_size = made.layer.size;
  }
  cache_.SaveParts(slot, parts);
  if (options_.explain) out_.Line(prefix + report.explain);
  state->layers.push_back(cached->layer);
  state->diff_ids.push_back(cached->diff_id);
  state->key = key;
  state->config.history.push_back(std::move(history));
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  out_.Line(prefix + (report.cached ? "CACHED" : "done") + " " +
            cached->layer.digest.hex().substr(0, 12));
  reports_.push_back(std::move(report));
  return OkStatus();
}

// No layers yet: this machine's platform and the default PATH.
State EmptyState() {
  State state;
  store::Platform platform = store::HostPlatform();
  state.config.architecture = platform.architecture;
  state.config.os = platform.os;
  state.config.variant = platform.variant;
  state.config.config.env = {"PATH=" + std::string(runner::kDefaultPath)};
  return state;
}

Result<State> Builder::LayerBase(const Stage& stage, const std::string& key, StepReport* report) {
  const Base& base = stage.from;
  State state = EmptyState();
  state.key = key;
  std::optional<CacheEntry> cached;
  if (!options_.no_cache) cached = cache_.Get(key, store_);
  if (cached) {
    report->cached = true;
    report->explain = "hit";
  } else {
    report->explain = options_.no_cache ? "miss: --no-cache" : "miss: not built before";
    BaseLayerRequest request;
    request.base = base;
    request.context_dir = options_.context_dir;
    request.scratch_dir = ScratchDir();
    request.epoch = Clamp();
    request.log = [this](std::string_view line) { out_.Line("[from] " + std::string(line)); };
    IMGTOOL_ASSIGN_OR_RETURN(overlay::LayerInfo info, MakeBaseLayer(store_, request));
    CacheEntry entry;
    entry.layer.media_type = info.media_type;
    entry.layer.digest = info.digest;
    entry.layer.size = info.size;
    entry.diff_id = info.diff_id;
    IMGTOOL_TRY(cache_.Put(key, entry));
    cached = entry;
  }
  report->layer = true;
  report->layer_size = cached->layer.size;
  state.layers.push_back(cached->layer);
  state.diff_ids.push_back(cached->diff_id);
  store::HistoryEntry history;
  history.created = created_;
  history.created_by = "imgtool build: FROM " + DescribeBase(base);
  state.config.history.push_back(std::move(history));
  return state;
}

Result<State> Builder::StartFromBase(const Stage& stage, StepReport* report) {
  const Base& base = stage.from;
  report->description = "FROM " + DescribeBase(base);
  std::string where = std::string(stage.name.empty() ? "" : "stage " + stage.name + " ") +
                      "from (" + recipe_.file + ":" + std::to_string(base.location.line) + ")";
  switch (base.kind) {
    case Base::Kind::kScratch: {
      State state = EmptyState();
      state.key = KeyOf({{"base", "scratch"}});
      report->cached = false;
      report->explain = "scratch";
      return state;
    }
    case Base::Kind::kStage: {
      report->cached = true;
      report->explain = "stage " + base.stage;
      return stages_.at(base.stage);
    }
    case Base::Kind::kImage: {
      std::string ref = ExpandVars(base.image, args_);
      auto image = store_.ResolveImage(ref);
      if (!image && image.error().code() == ErrorCode::kNotFound && options_.pull) {
        out_.Line(Prefix(stage, 0) + "pulling " + ref);
        IMGTOOL_TRY(options_.pull(ref).Wrap(where + ": pull " + ref));
        image = store_.ResolveImage(ref);
      }
      if (!image) {
        if (image.error().code() == ErrorCode::kNotFound) {
          return NotFoundError(where + ": image " + ref +
                               " is not in the store; pull it (imgtool pull " + ref +
                               ") or load it (imgtool load) first");
        }
        return std::move(image).error().Wrap(where);
      }
      State state;
      state.layers = image->manifest.layers;
      state.diff_ids = image->config.rootfs.diff_ids;
      state.config = image->config;
      state.config.raw = nlohmann::json::object();
      state.key = KeyOf({{"base", "image " + image->manifest_descriptor.digest.ToString()}});
      report->cached = true;
      report->explain = "image " + image->manifest_descriptor.digest.ToString();
      for (const store::Descriptor& layer : state.layers) report->layer_size += layer.size;
      return state;
    }
    case Base::Kind::kRootfs: {
      IMGTOOL_TRY(CheckInsideContext(options_.context_dir, base.rootfs).Wrap(where));
      IMGTOOL_ASSIGN_OR_RETURN(std::string clean, CleanPathInRoot(base.rootfs));
      fs::path tar = fs::canonical(options_.context_dir) / clean;
      IMGTOOL_ASSIGN_OR_RETURN(Digest digest, HashFile(tar).Wrap(where));
      return LayerBase(stage, KeyOf({{"base", "rootfs " + digest.ToString()}}), report);
    }
    case Base::Kind::kDebootstrap: {
      std::string inputs = DebootstrapKeyText(base.debootstrap);
      return LayerBase(stage,
                       KeyOf({{"base", inputs},
                              {"epoch", options_.timestamp_now ? "now" : std::to_string(epoch_)}}),
                       report);
    }
  }
  return InternalError("unknown base");
}

Result<State> Builder::BuildStage(const Stage& stage) {
  StepReport base_report;
  base_report.stage = stage.name;
  auto started = std::chrono::steady_clock::now();
  out_.Line(Prefix(stage, 0) + "FROM " + DescribeBase(stage.from));
  IMGTOOL_ASSIGN_OR_RETURN(State state, StartFromBase(stage, &base_report));
  base_report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (options_.explain) out_.Line(Prefix(stage, 0) + base_report.explain);
  reports_.push_back(std::move(base_report));
  for (const auto& [name, value] : stage.env) {
    state.config.SetEnv(name, ExpandVars(value, Vars(state)));
    state.key = KeyOf({{"parent", state.key}, {"env", name + "=" + value}});
  }
  for (size_t i = 0; i < stage.steps.size(); ++i) IMGTOOL_TRY(DoStep(stage, i, &state));
  return state;
}

void ApplyConfig(const ImageConfigSpec& spec, const std::map<std::string, std::string>& vars,
                 store::ImageConfig* config) {
  auto expand_all = [&](const std::vector<std::string>& items) {
    std::vector<std::string> out;
    for (const std::string& item : items) out.push_back(ExpandVars(item, vars));
    return out;
  };
  if (spec.entrypoint) config->config.entrypoint = expand_all(*spec.entrypoint);
  if (spec.cmd) config->config.cmd = expand_all(*spec.cmd);
  for (const auto& [name, value] : spec.env) config->SetEnv(name, ExpandVars(value, vars));
  if (spec.user) config->config.user = ExpandVars(*spec.user, vars);
  if (spec.workdir) config->config.working_dir = ExpandVars(*spec.workdir, vars);
  for (const auto& [name, value] : spec.labels)
    config->config.labels[name] = ExpandVars(value, vars);
  if (spec.stopsignal) config->config.stop_signal = *spec.stopsignal;
  std::set<std::string> ports(config->config.exposed_ports.begin(),
                              config->config.exposed_ports.end());
  ports.insert(spec.expose.begin(), spec.expose.end());
  config->config.exposed_ports.assign(ports.begin(), ports.end());
  std::set<std::string> volumes(config->config.volumes.begin(), config->config.volumes.end());
  for (const std::string& v : spec.volumes) volumes.insert(ExpandVars(v, vars));
  config->config.volumes.assign(volumes.begin(), volumes.end());
}

Result<BuildResult> Builder::WriteImage(const State& state) {
  store::ImageConfig config = state.config;
  config.created = created_;
  config.rootfs.type = "layers";
  config.rootfs.diff_ids = state.diff_ids;
  IMGTOOL_ASSIGN_OR_RETURN(
      store::Descriptor config_descriptor,
      store_.WriteJsonBlob(store::media_type::kOciConfig, store::SerializeImageConfig(config)));
  store::Manifest manifest;
  manifest.media_type = std::string(store::media_type::kOciManifest);
  manifest.config = config_descriptor;
  manifest.layers = state.layers;
  IMGTOOL_ASSIGN_OR_RETURN(
      store::Descriptor manifest_descriptor,
      store_.WriteJsonBlob(store::media_type::kOciManifest, store::SerializeManifest(manifest)));
  BuildResult result;
  result.manifest_digest = manifest_descriptor.digest;
  result.manifest_size = manifest_descriptor.size;
  result.config_digest = config_descriptor.digest;
  result.epoch = epoch_;
  std::vector<std::string> names = options_.tags;
  if (names.empty() && !recipe_.name.empty() &&
      (options_.target.empty() || options_.target == recipe_.final_stage().name)) {
    names.push_back(recipe_.name);
  }
  std::vector<store::Reference> refs;
  for (const std::string& name : names) {
    IMGTOOL_ASSIGN_OR_RETURN(store::Reference ref, store::ParseReference(name).Wrap("tag " + name));
    if (ref.digest()) return InvalidArgumentError("tag " + name + ": can not contain a digest");
    refs.push_back(std::move(ref));
  }
  if (refs.empty()) {
    IMGTOOL_TRY(store_.index().AddUnnamed(manifest_descriptor));
  }
  for (const store::Reference& ref : refs) {
    IMGTOOL_TRY(store_.index().Set(ref, manifest_descriptor).Wrap("tag " + ref.ToString()));
    result.tags.push_back(ref.ToString());
  }
  return result;
}

Status Builder::WriteOutputs(const BuildResult& result) {
  if (options_.outputs.empty()) return OkStatus();
  store::Descriptor top;
  top.media_type = std::string(store::media_type::kOciManifest);
  top.digest = result.manifest_digest;
  top.size = result.manifest_size;
  IMGTOOL_ASSIGN_OR_RETURN(store::ResolvedImage image, store_.ResolveDescriptor(top));
  std::optional<store::Reference> ref;
  if (!result.tags.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(store::Reference parsed, store::ParseReference(result.tags.front()));
    ref = std::move(parsed);
  }
  for (const BuildOutput& output : options_.outputs) {
    std::string what = "--output " + output.type + "=" + output.path.string();
    if (output.type == "rootfs.tar") {
      std::vector<UniqueFd> blobs;
      std::vector<int> fds;
      for (const store::Descriptor& layer : image.manifest.layers) {
        IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, store_.content().OpenRaw(layer.digest).Wrap(what));
        fds.push_back(fd.get());
        blobs.push_back(std::move(fd));
      }
      std::error_code ec;
      fs::create_directories(ScratchDir(), ec);
      fs::path temp = output.path;
      temp += ".tmp-" + RandomHex(4);
      UniqueFd file(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (!file) return ErrnoError(what + ": create " + temp.string());
      ScopeGuard remove_temp([&] { ::unlink(temp.c_str()); });
      overlay::FlattenOptions flatten;
      flatten.scratch_dir = ScratchDir();
      flatten.expected_diff_ids = image.config.rootfs.diff_ids;
      flatten.source_date_epoch = Clamp();
      FdSink sink(file.get());
      IMGTOOL_TRY(overlay::FlattenLayers(fds, sink, flatten).Wrap(what));
      if (::fsync(file.get()) != 0) return ErrnoError(what + ": fsync");
      if (::rename(temp.c_str(), output.path.c_str()) != 0) return ErrnoError(what + ": rename");
      remove_temp.Cancel();
      continue;
    }
    IMGTOOL_ASSIGN_OR_RETURN(store::ArchiveFormat format, store::ParseArchiveFormat(output.type));
    IMGTOOL_TRY(store::ExportArchive(store_, {store::ExportItem{ref, image}}, format, output.path)
                    .Wrap(what));
  }
  return OkStatus();
}

Result<BuildResult> Builder::Run() {
  created_ = FormatTime(options_.timestamp_now ? NowSeconds() : epoch_);
  const Stage* target = &recipe_.final_stage();
  if (!options_.target.empty()) {
    target = recipe_.FindStage(options_.target);
    if (target == nullptr) {
      std::string names;
      for (const Stage& stage : recipe_.stages) {
        if (!stage.name.empty()) names += (names.empty() ? "" : ", ") + stage.name;
      }
      return InvalidArgumentError("--target " + options_.target + ": " + recipe_.file +
                                  " has no such stage" +
                                  (names.empty() ? "" : " (stages: " + names + ")"));
    }
  }
  // Copy sources must stay inside the context, symlinks included; checked
  // before anything runs.
  for (const Stage* stage : StagesNeededFor(recipe_, *target)) {
    for (const Step& step : stage->steps) {
      if (step.kind != Step::Kind::kCopy || !step.copy.from.empty()) continue;
      for (const std::string& src : step.copy.src) {
        std::string expanded = ExpandVars(src, args_);
        if (expanded.find_first_of("*?[") != std::string::npos) continue;
        Status inside = CheckInsideContext(options_.context_dir, expanded);
        if (!inside && inside.error().code() == ErrorCode::kInvalidArgument) {
          return RecipeError(recipe_.file, step.location,
                             "copy source " + inside.error().message());
        }
      }
    }
  }
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lease, store_.AcquireWriteLease());
  State final_state;
  for (const Stage* stage : StagesNeededFor(recipe_, *target)) {
    IMGTOOL_ASSIGN_OR_RETURN(State state, BuildStage(*stage));
    if (stage == target) {
      ApplyConfig(stage->config, Vars(state), &state.config);
      final_state = std::move(state);
    } else {
      stages_[stage->name] = std::move(state);
    }
  }
  IMGTOOL_ASSIGN_OR_RETURN(BuildResult result, WriteImage(final_state));
  result.steps = reports_;
  IMGTOOL_TRY(WriteOutputs(result));
  if (!options_.quiet || options_.log_fd >= 0) {
    std::string summary = FormatSummary(result);
    size_t start = 0;
    while (start < summary.size()) {
      size_t nl = summary.find('\n', start);
      out_.Line(summary.substr(start, nl - start));
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
  }
  return result;
}

}  // namespace

Result<BuildOutput> ParseBuildOutput(std::string_view text) {
  size_t eq = text.find('=');
  if (eq == std::string_view::npos || eq + 1 == text.size()) {
    return InvalidArgumentError("--output " + std::string(text) +
                                ": expected TYPE=PATH (oci-archive, docker-archive, oci-dir, "
                                "rootfs.tar)");
  }
  BuildOutput out;
  out.type = std::string(text.substr(0, eq));
  out.path = std::string(text.substr(eq + 1));
  if (out.type != "oci-archive" && out.type != "docker-archive" && out.type != "oci-dir" &&
      out.type != "rootfs.tar") {
    return InvalidArgumentError("--output " + std::string(text) + ": unknown type \"" + out.type +
                                "\" (oci-archive, docker-archive, oci-dir, rootfs.tar)");
  }
  return out;
}

std::string FormatSummary(const BuildResult& result) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof(line), "%-6s %-50s %-8s %8s %10s\n", "STEP", "DESCRIPTION", "RESULT",
                "TIME", "LAYER");
  out += line;
  for (const StepReport& step : result.steps) {
    std::string name = (step.stage.empty() ? "" : step.stage + "/") + std::to_string(step.number);
    // A metadata step (or a scratch base) makes no layer: neither built nor
    // taken from the cache.
    const char* result = step.cached        ? "CACHED"
                         : step.layer       ? "built"
                         : step.number == 0 ? "-"
                                            : "config";
    std::string time = step.cached || !step.layer ? "-" : [&] {
      char t[32];
      std::snprintf(t, sizeof(t), "%.2fs", step.seconds);
      return std::string(t);
    }();
    std::string size = "-";
    if (step.layer) {
      char s[32];
      double kb = static_cast<double>(step.layer_size) / 1024.0;
      if (kb < 1024) {
        std::snprintf(s, sizeof(s), "%.1f KiB", kb);
      } else {
        std::snprintf(s, sizeof(s), "%.1f MiB", kb / 1024.0);
      }
      size = s;
    }
    std::snprintf(line, sizeof(line), "%-6s %-50s %-8s %8s %10s\n", name.c_str(),
                  Shorten(step.description, 50).c_str(), result, time.c_str(), size.c_str());
    out += line;
  }
  out += "image " + result.config_digest.ToString() + "\n";
  for (const std::string& tag : result.tags) out += "tagged " + tag + "\n";
  return out;
}

Result<BuildResult> Build(const BuildOptions& input) {
  BuildOptions options = input;
  std::string file = options.recipe_path.string();
  IMGTOOL_ASSIGN_OR_RETURN(
      std::string text,
      ReadFileToString(options.recipe_path, kMaxRecipeSize + 1).Wrap("read recipe " + file));
  IMGTOOL_ASSIGN_OR_RETURN(Recipe recipe, ParseRecipe(text, file));
  IMGTOOL_ASSIGN_OR_RETURN(auto args, ResolveArgs(recipe, options.build_args));
  if (options.context_dir.empty()) {
    options.context_dir = options.recipe_path.parent_path();
    if (options.context_dir.empty()) options.context_dir = ".";
  }
  int64_t epoch = 0;
  if (options.source_date_epoch) {
    epoch = *options.source_date_epoch;
  } else if (options.environment_epoch) {
    epoch = *options.environment_epoch;
  } else if (recipe.source_date_epoch) {
    epoch = *recipe.source_date_epoch;
  }
  IMGTOOL_ASSIGN_OR_RETURN(auto store, store::Store::Open(options.store_root));
  IMGTOOL_ASSIGN_OR_RETURN(auto snapshotter,
                           overlay::OverlaySnapshotter::Open(options.state_dir / "snapshots"));
  Builder builder(options, std::move(recipe), std::move(args), epoch, *store, *snapshotter);
  return builder.Run();
}

}  // namespace imgtool::builder
