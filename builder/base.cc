#include "builder/base.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/file_util.h"
#include "common/safe_path.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"

extern char** environ;

namespace imgtool::builder {

namespace fs = std::filesystem;

namespace {

std::string JoinComma(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

bool OnPath(std::string_view name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/sbin:/usr/bin:/sbin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(start, end - start) + "/" + std::string(name);
    if (::access(candidate.c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

Result<overlay::LayerInfo> StoreTar(store::Store& store, const fs::path& tar) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tar, O_RDONLY));
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<store::IngestWriter> writer, store.content().Writer());
  overlay::DiffOptions diff;
  diff.compression = overlay::Compression::kGzip;
  IMGTOOL_ASSIGN_OR_RETURN(overlay::LayerInfo info,
                           overlay::CompressTarStream(fd.get(), *writer, diff));
  IMGTOOL_TRY(writer->Commit(info.size, info.digest));
  return info;
}

}  // namespace

std::string DescribeBase(const Base& base) {
  switch (base.kind) {
    case Base::Kind::kScratch:
      return "scratch";
    case Base::Kind::kImage:
      return "image " + base.image;
    case Base::Kind::kRootfs:
      return "rootfs " + base.rootfs;
    case Base::Kind::kStage:
      return "stage " + base.stage;
    case Base::Kind::kDebootstrap:
      return "debootstrap " + base.debootstrap.suite +
             (base.debootstrap.variant.empty() ? "" : " (" + base.debootstrap.variant + ")");
  }
  return "?";
}

std::string DebootstrapKeyText(const DebootstrapBase& base) {
  return "debootstrap tool=" + BootstrapTool() + " suite=" + base.suite +
         " variant=" + base.variant + " components=" + JoinComma(base.components) +
         " include=" + JoinComma(base.include) + " exclude=" + JoinComma(base.exclude) +
         " mirror=" + base.mirror + " arch=" + base.arch;
}

std::vector<std::string> DebootstrapCommand(std::string_view tool, const DebootstrapBase& base,
                                            const std::string& target) {
  std::vector<std::string> argv = {std::string(tool)};
  if (tool == "mmdebstrap") {
    argv.push_back("--quiet");
    if (!base.variant.empty()) argv.push_back("--variant=" + base.variant);
    if (!base.components.empty()) argv.push_back("--components=" + JoinComma(base.components));
    // mmdebstrap passes --include to apt, where "pkg-" means "not pkg".
    std::vector<std::string> packages = base.include;
    for (const std::string& name : base.exclude) packages.push_back(name + "-");
    if (!packages.empty()) argv.push_back("--include=" + JoinComma(packages));
    if (!base.arch.empty()) argv.push_back("--architectures=" + base.arch);
    argv.push_back("--format=tar");
    argv.push_back(base.suite);
    argv.push_back(target);
  } else {
    if (!base.variant.empty()) argv.push_back("--variant=" + base.variant);
    if (!base.components.empty()) argv.push_back("--components=" + JoinComma(base.components));
    if (!base.include.empty()) argv.push_back("--include=" + JoinComma(base.include));
    if (!base.exclude.empty()) argv.push_back("--exclude=" + JoinComma(base.exclude));
    if (!base.arch.empty()) argv.push_back("--arch=" + base.arch);
    argv.push_back(base.suite);
    argv.push_back(target);
  }
  // The mirror only when the recipe gives one: the tool's default otherwise.
  if (!base.mirror.empty()) argv.push_back(base.mirror);
  return argv;
}

std::string BootstrapTool() {
  if (OnPath("mmdebstrap")) return "mmdebstrap";
  if (OnPath("debootstrap")) return "debootstrap";
  return "";
}

Result<Digest> HashFile(const fs::path& path) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  Sha256Hasher hasher;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read " + path.string());
    }
    if (n == 0) break;
    hasher.Update(buf, static_cast<size_t>(n));
  }
  return hasher.Finish();
}

Status RunTool(const std::vector<std::string>& argv, const std::vector<std::string>& env,
               const std::function<void(std::string_view)>& log) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoError("pipe");
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) environment.emplace_back(*e);
  for (const std::string& kv : env) {
    std::string key = kv.substr(0, kv.find('=') + 1);
    std::erase_if(environment, [&](const std::string& item) { return item.starts_with(key); });
    environment.push_back(kv);
  }
  std::vector<char*> c_argv;
  for (const std::string& arg : argv) c_argv.push_back(const_cast<char*>(arg.c_str()));
  c_argv.push_back(nullptr);
  std::vector<char*> c_env;
  for (std::string& kv : environment) c_env.push_back(kv.data());
  c_env.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, argv[0].c_str(), &actions, nullptr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return ErrnoError("run " + argv[0], rc);
  write_end.reset();
  std::string pending;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(read_end.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      if (log) log(std::string_view(pending).substr(0, nl));
      pending.erase(0, nl + 1);
    }
  }
  if (!pending.empty() && log) log(pending);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return ErrnoError("wait for " + argv[0]);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return OkStatus();
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return Error(ErrorCode::kFailedPrecondition, argv[0] + ": exit code " + std::to_string(code));
}

Result<overlay::LayerInfo> MakeBaseLayer(store::Store& store, const BaseLayerRequest& request) {
  const Base& base = request.base;
  if (base.kind == Base::Kind::kRootfs) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string clean, CleanPathInRoot(base.rootfs));
    return StoreTar(store, fs::canonical(request.context_dir) / clean)
        .Wrap("rootfs " + base.rootfs);
  }
  if (base.kind != Base::Kind::kDebootstrap) return InternalError("not a layer base");
  std::string tool = BootstrapTool();
  if (tool.empty()) {
    return FailedPreconditionError(
        "from debootstrap: neither mmdebstrap nor debootstrap is installed");
  }
  std::error_code ec;
  fs::create_directories(request.scratch_dir, ec);
  IMGTOOL_ASSIGN_OR_RETURN(TempDir work, TempDir::Create(request.scratch_dir, "bootstrap-"));
  std::vector<std::string> env;
  if (request.epoch) env.push_back("SOURCE_DATE_EPOCH=" + std::to_string(*request.epoch));
  if (tool == "mmdebstrap") {
    fs::path tar = work.path() / "rootfs.tar";
    IMGTOOL_TRY(RunTool(DebootstrapCommand(tool, base.debootstrap, tar.string()), env, request.log)
                    .Wrap("from debootstrap"));
    return StoreTar(store, tar).Wrap("from debootstrap");
  }
  fs::path dir = work.path() / "rootfs";
  IMGTOOL_TRY(RunTool(DebootstrapCommand(tool, base.debootstrap, dir.string()), env, request.log)
                  .Wrap("from debootstrap"));
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<store::IngestWriter> writer, store.content().Writer());
  overlay::DiffOptions diff;
  diff.compression = overlay::Compression::kGzip;
  diff.whiteouts = overlay::WhiteoutSource::kPlainTree;
  diff.source_date_epoch = request.epoch;
  IMGTOOL_ASSIGN_OR_RETURN(overlay::LayerInfo info, overlay::WriteLayer(dir, *writer, diff));
  IMGTOOL_TRY(writer->Commit(info.size, info.digest));
  return info;
}

}  // namespace imgtool::builder
