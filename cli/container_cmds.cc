// ps, logs, stop, kill, rm, wait, exec: the containers `run` made, found by
// name, full id or id prefix, driven through runner/supervisor.h.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/containers.h"
#include "cli/context.h"
#include "cli/output.h"
#include "cli/run_options.h"
#include "common/file_util.h"
#include "common/log.h"
#include "runner/supervisor.h"

namespace imgtool::cli {

namespace {

using nlohmann::ordered_json;

std::string ShortId(const std::string& id) { return id.substr(0, 12); }

std::string DisplayName(const ContainerRecord& record) {
  return record.name.empty() ? ShortId(record.id) : record.name;
}

std::string Duration(int64_t seconds) {
  // "About an hour ago" without the " ago".
  std::string ago = TimeAgo(FormatRfc3339(0), seconds);
  return ago.substr(0, ago.size() - 4);
}

std::string StatusText(const ContainerView& view, int64_t now) {
  if (!view.state || view.state->status == runner::ContainerStatus::kCreated) return "Created";
  const runner::ContainerState& state = *view.state;
  if (state.status == runner::ContainerStatus::kRunning) {
    return "Up " + Duration(now - state.started_at);
  }
  return StrCat("Exited (", state.exit_code, ") ", Duration(now - state.finished_at), " ago");
}

std::string CommandText(const std::vector<std::string>& command) {
  std::string text;
  for (const std::string& arg : command) text += (text.empty() ? "" : " ") + arg;
  return text;
}

struct Handles {
  ContainerStore containers;
  std::unique_ptr<overlay::OverlaySnapshotter> snapshotter;
};

Result<Handles> Open(const Context& context) {
  Handles handles{ContainerStore(context.ContainersRoot()), nullptr};
  IMGTOOL_ASSIGN_OR_RETURN(handles.snapshotter, context.OpenSnapshotter());
  return handles;
}

Result<int> RunPs(const Context& context, bool all, bool quiet, const std::string& format) {
  ContainerStore containers(context.ContainersRoot());
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ContainerView> views, containers.List());
  int64_t now = static_cast<int64_t>(::time(nullptr));
  std::vector<const ContainerView*> shown;
  for (const ContainerView& view : views) {
    if (all || view.running()) shown.push_back(&view);
  }
  if (quiet) {
    std::string out;
    for (const ContainerView* view : shown) out += ShortId(view->record.id) + "\n";
    IMGTOOL_TRY(PrintOut(out));
    return 0;
  }
  if (format == "json") {
    ordered_json out = ordered_json::array();
    for (const ContainerView* view : shown) {
      const ContainerRecord& r = view->record;
      ordered_json item;
      item["Id"] = r.id;
      item["Names"] = ordered_json::array({DisplayName(r)});
      item["Image"] = r.image;
      item["ImageID"] = r.image_id;
      item["Command"] = r.command;
      item["Created"] = r.created;
      item["State"] = view->state ? std::string(runner::ContainerStatusName(view->state->status))
                                  : std::string("created");
      item["Status"] = StatusText(*view, now);
      item["Pid"] = view->running() ? view->state->pid : 0;
      item["ExitCode"] = view->state && view->state->status == runner::ContainerStatus::kExited
                             ? view->state->exit_code
                             : 0;
      item["OOMKilled"] = view->state ? view->state->oom_killed : false;
      item["StartedAt"] = view->state ? view->state->started_at : 0;
      item["FinishedAt"] = view->state ? view->state->finished_at : 0;
      item["AutoRemove"] = r.auto_remove;
      out.push_back(std::move(item));
    }
    IMGTOOL_TRY(PrintJson(out));
    return 0;
  }
  Table table({"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"});
  for (const ContainerView* view : shown) {
    const ContainerRecord& r = view->record;
    table.AddRow({ShortId(r.id), r.image, "\"" + Truncate(CommandText(r.command), 20) + "\"",
                  TimeAgo(FormatRfc3339(r.created), now), StatusText(*view, now), DisplayName(r)});
  }
  IMGTOOL_TRY(PrintOut(table.Render()));
  return 0;
}

Result<int> RunLogs(const Context& context, const std::string& name, bool follow) {
  ContainerStore containers(context.ContainersRoot());
  IMGTOOL_ASSIGN_OR_RETURN(ContainerView view, containers.Find(name));
  IMGTOOL_TRY(runner::CopyContainerLogs(containers.DirOf(view.record.id), STDOUT_FILENO, follow)
                  .Wrap("logs " + name));
  return 0;
}

Result<int> RunStop(const Context& context, const std::vector<std::string>& names, int seconds) {
  ContainerStore containers(context.ContainersRoot());
  for (const std::string& name : names) {
    IMGTOOL_ASSIGN_OR_RETURN(ContainerView view, containers.Find(name).Wrap("stop"));
    IMGTOOL_TRY(runner::StopContainer(containers.DirOf(view.record.id),
                                      std::chrono::milliseconds(int64_t{seconds} * 1000))
                    .Wrap("stop " + name));
    IMGTOOL_TRY(PrintOut(name + "\n"));
  }
  return 0;
}

Result<int> RunKill(const Context& context, const std::vector<std::string>& names,
                    const std::string& signal) {
  IMGTOOL_ASSIGN_OR_RETURN(int sig, ParseSignal(signal).Wrap("kill"));
  ContainerStore containers(context.ContainersRoot());
  for (const std::string& name : names) {
    IMGTOOL_ASSIGN_OR_RETURN(ContainerView view, containers.Find(name).Wrap("kill"));
    IMGTOOL_TRY(runner::KillContainer(containers.DirOf(view.record.id), sig).Wrap("kill " + name));
    IMGTOOL_TRY(PrintOut(name + "\n"));
  }
  return 0;
}

Result<int> RunRm(const Context& context, const std::vector<std::string>& names, bool force) {
  IMGTOOL_ASSIGN_OR_RETURN(Handles handles, Open(context));
  for (const std::string& name : names) {
    Result<ContainerView> view = handles.containers.Find(name);
    if (!view) {
      if (force && view.error().code() == ErrorCode::kNotFound) continue;
      return std::move(view).error().Wrap("rm");
    }
    if (view->running()) {
      if (!force) {
        return FailedPreconditionError("rm " + name + ": container " + ShortId(view->record.id) +
                                       " is running: stop it first, or use rm -f");
      }
      IMGTOOL_TRY(runner::StopContainer(handles.containers.DirOf(view->record.id),
                                        std::chrono::milliseconds(0))
                      .Wrap("rm " + name));
      // A --rm container's supervisor removes it itself; wait for that
      // rather than race it.
      if (view->record.auto_remove) {
        for (int i = 0; i < 500; ++i) {
          std::error_code ec;
          if (!std::filesystem::exists(handles.containers.DirOf(view->record.id), ec)) break;
          ::usleep(10000);
        }
      }
    }
    IMGTOOL_TRY(handles.containers.Remove(view->record, *handles.snapshotter).Wrap("rm " + name));
    IMGTOOL_TRY(PrintOut(name + "\n"));
  }
  return 0;
}

Result<int> RunWait(const Context& context, const std::vector<std::string>& names) {
  ContainerStore containers(context.ContainersRoot());
  for (const std::string& name : names) {
    IMGTOOL_ASSIGN_OR_RETURN(ContainerView view, containers.Find(name).Wrap("wait"));
    IMGTOOL_ASSIGN_OR_RETURN(
        runner::ContainerState state,
        runner::WaitContainer(containers.DirOf(view.record.id)).Wrap("wait " + name));
    IMGTOOL_TRY(PrintOut(StrCat(state.exit_code, "\n")));
  }
  return 0;
}

struct ExecFlags {
  bool interactive = false;
  bool tty = false;
  std::vector<std::string> env;
  std::optional<std::string> user;
  std::string workdir;
};

Result<int> RunExec(const Context& context, const ExecFlags& flags,
                    const std::vector<std::string>& rest) {
  if (rest.empty() || rest.front().starts_with("-")) {
    return InvalidArgumentError(rest.empty() ? "exec: a CONTAINER and a COMMAND are required"
                                             : "exec: unknown flag \"" + rest.front() + "\"");
  }
  std::vector<std::string> command(rest.begin() + 1, rest.end());
  if (!command.empty() && command.front() == "--") command.erase(command.begin());
  if (command.empty()) return InvalidArgumentError("exec: a COMMAND is required");
  ContainerStore containers(context.ContainersRoot());
  IMGTOOL_ASSIGN_OR_RETURN(ContainerView view, containers.Find(rest.front()).Wrap("exec"));
  runner::ProcessSpec process;
  process.args = std::move(command);
  process.env = view.record.env;
  for (const std::string& entry : flags.env) {
    size_t eq = entry.find('=');
    if (eq == 0) return InvalidArgumentError("exec: invalid environment entry \"" + entry + "\"");
    if (eq == std::string::npos) {
      if (const char* value = ::getenv(entry.c_str())) runner::SetEnv(&process.env, entry, value);
    } else {
      runner::SetEnv(&process.env, entry.substr(0, eq), entry.substr(eq + 1));
    }
  }
  process.cwd = flags.workdir.empty() ? view.record.cwd : flags.workdir;
  process.user = flags.user ? *flags.user : view.record.user;
  // As docker's exec: the container's --ulimit values.
  IMGTOOL_ASSIGN_OR_RETURN(process.rlimits, ParseUlimits(view.record.ulimits));
  process.terminal = flags.tty;
  runner::Stdio stdio{flags.interactive ? STDIN_FILENO : -1, STDOUT_FILENO, STDERR_FILENO};
  IMGTOOL_ASSIGN_OR_RETURN(
      runner::ExitStatus status,
      runner::ExecInContainer(containers.DirOf(view.record.id), process, stdio).Wrap("exec"));
  if (!status.message.empty()) (void)WriteAll(STDERR_FILENO, "imgtool: " + status.message + "\n");
  return status.exit_code;
}

}  // namespace

void RegisterContainerCommands(CLI::App& app, const Context& context, CommandRegistry& registry) {
  {
    auto all = std::make_shared<bool>(false);
    auto quiet = std::make_shared<bool>(false);
    auto format = std::make_shared<std::string>("table");
    CLI::App* cmd = app.add_subcommand("ps", "List containers (running ones; -a for all)");
    cmd->add_flag("-a,--all", *all, "Also list containers that exited");
    cmd->add_flag("-q,--quiet", *quiet, "Print container IDs only");
    cmd->add_option("--format", *format, "Output format: table or json")
        ->check(CLI::IsMember({"table", "json"}));
    registry.Set(cmd,
                 [&context, all, quiet, format] { return RunPs(context, *all, *quiet, *format); });
  }
  {
    auto name = std::make_shared<std::string>();
    auto follow = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand("logs", "Print a detached container's output");
    cmd->add_option("CONTAINER", *name, "Name, ID or ID prefix")->required();
    cmd->add_flag("-f,--follow", *follow, "Keep printing new output until the container exits");
    registry.Set(cmd, [&context, name, follow] { return RunLogs(context, *name, *follow); });
  }
  {
    auto names = std::make_shared<std::vector<std::string>>();
    auto seconds = std::make_shared<int>(10);
    CLI::App* cmd = app.add_subcommand("stop", "Stop containers: SIGTERM, then SIGKILL");
    cmd->add_option("CONTAINER", *names, "Name, ID or ID prefix")->required();
    cmd->add_option("-t,--time", *seconds, "Seconds to wait before SIGKILL (default 10)")
        ->check(CLI::NonNegativeNumber);
    registry.Set(cmd, [&context, names, seconds] { return RunStop(context, *names, *seconds); });
  }
  {
    auto names = std::make_shared<std::vector<std::string>>();
    auto signal = std::make_shared<std::string>("KILL");
    CLI::App* cmd = app.add_subcommand("kill", "Send a signal to containers (default KILL)");
    cmd->add_option("CONTAINER", *names, "Name, ID or ID prefix")->required();
    cmd->add_option("-s,--signal", *signal, "Signal name or number");
    registry.Set(cmd, [&context, names, signal] { return RunKill(context, *names, *signal); });
  }
  {
    auto names = std::make_shared<std::vector<std::string>>();
    auto force = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand("rm", "Remove containers and their writable layers");
    cmd->add_option("CONTAINER", *names, "Name, ID or ID prefix")->required();
    cmd->add_flag("-f,--force", *force, "Kill running containers first; ignore missing ones");
    registry.Set(cmd, [&context, names, force] { return RunRm(context, *names, *force); });
  }
  {
    auto names = std::make_shared<std::vector<std::string>>();
    CLI::App* cmd = app.add_subcommand("wait", "Wait for containers to exit; print exit codes");
    cmd->add_option("CONTAINER", *names, "Name, ID or ID prefix")->required();
    registry.Set(cmd, [&context, names] { return RunWait(context, *names); });
  }
  {
    auto flags = std::make_shared<ExecFlags>();
    CLI::App* cmd = app.add_subcommand(
        "exec", "Run a command in a running container: imgtool exec [OPTIONS] CONTAINER CMD...");
    cmd->prefix_command();
    cmd->fallthrough(false);
    cmd->add_flag("-i,--interactive", flags->interactive, "Pass stdin");
    cmd->add_flag("-t,--tty", flags->tty, "Allocate a pseudo-terminal");
    cmd->add_option("-e,--env", flags->env, "Set an environment variable")->allow_extra_args(false);
    cmd->add_option("-u,--user", flags->user, "USER[:GROUP]");
    cmd->add_option("-w,--workdir", flags->workdir, "Working directory");
    registry.Set(cmd,
                 [&context, flags, cmd] { return RunExec(context, *flags, cmd->remaining()); });
  }
}

}  // namespace imgtool::cli
