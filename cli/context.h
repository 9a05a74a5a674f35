// What every subcommand needs: where the store is and how to open its parts.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>

#include "cli/option_filter.h"
#include "common/error.h"
#include "common/log.h"
#include "overlay/snapshotter.h"
#include "store/store.h"

namespace CLI {
class App;
}  // namespace CLI

namespace imgtool::cli {

// imgtool's own failures exit with this, as podman does; commands that run
// something else (run) pass its exit code through instead.
inline constexpr int kExitFailure = 125;

// "<root>-state": /var/lib/imgtool keeps its working state in /var/lib/imgtool-state.
inline std::filesystem::path StateDirFor(const std::filesystem::path& root) {
  std::string normal = root.lexically_normal().string();
  while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
  return std::filesystem::path(normal + "-state");
}

struct Context {
  std::filesystem::path root;  // --root, $IMGTOOL_ROOT or /var/lib/imgtool
  LogLevel log_level = LogLevel::kWarning;
  // The options a command adds to the parser, where it filters them (run).
  OptionFilter options = OptionFilter::All();

  // Unpacked layers and scratch space live in the state dir beside the root,
  // not inside it: the root must stay a plain OCI layout that any tool can walk
  // (oci-image-tool opens every file under it, and a snapshot holds fifos,
  // device-node whiteouts and dangling symlinks, which would make it fail).
  std::filesystem::path StateDir() const { return StateDirFor(root); }
  std::filesystem::path SnapshotRoot() const { return StateDir() / "snapshots"; }
  // Scratch space for export and similar work that needs room on the store's
  // filesystem rather than in /tmp.
  std::filesystem::path ScratchRoot() const { return StateDir() / "tmp"; }
  // One directory per container (cli/containers.h).
  std::filesystem::path ContainersRoot() const { return StateDir() / "containers"; }

  Result<std::unique_ptr<store::Store>> OpenStore() const;
  Result<std::unique_ptr<overlay::OverlaySnapshotter>> OpenSnapshotter() const;
};

// A subcommand's body: the process exit code, or an error that the app prints
// once as `imgtool: error: ...` and exits with kExitFailure.
using Handler = std::function<Result<int>()>;

class CommandRegistry {
 public:
  void Set(const CLI::App* command, Handler handler) { handlers_[command] = std::move(handler); }
  const Handler* Find(const CLI::App* command) const {
    auto it = handlers_.find(command);
    return it == handlers_.end() ? nullptr : &it->second;
  }

 private:
  std::map<const CLI::App*, Handler> handlers_;
};

// One per group of subcommands (images_cmd.cc, archive_cmd.cc, maintenance_cmd.cc).
void RegisterImageCommands(CLI::App& app, const Context& context, CommandRegistry& registry);
void RegisterArchiveCommands(CLI::App& app, const Context& context, CommandRegistry& registry);
// build_cmd.cc: build.
void RegisterBuildCommands(CLI::App& app, const Context& context, CommandRegistry& registry);
void RegisterMaintenanceCommands(CLI::App& app, const Context& context, CommandRegistry& registry);
// registry_cmd.cc: pull, push, login, logout.
void RegisterRegistryCommands(CLI::App& app, const Context& context, CommandRegistry& registry);
// run_cmd.cc; container_cmds.cc (ps, logs, stop, kill, rm, wait, exec).
void RegisterRunCommand(CLI::App& app, const Context& context, CommandRegistry& registry);
void RegisterContainerCommands(CLI::App& app, const Context& context, CommandRegistry& registry);

}  // namespace imgtool::cli
