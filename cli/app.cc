#include "cli/app.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <initializer_list>
#include <string>
#include <string_view>

#include "cli/context.h"
#include "common/file_util.h"
#include "common/log.h"

#ifndef IMGTOOL_VERSION
#define IMGTOOL_VERSION "unknown"
#endif

namespace imgtool::cli {

namespace {

// Errors are printed exactly once, here, as one line.
void PrintError(std::string_view message) {
  std::string line = "imgtool: error: ";
  for (char c : message) line += (c == '\n' || c == '\r') ? ' ' : c;
  line += '\n';
  (void)WriteAll(STDERR_FILENO, line);
}

// The subcommand the user ran (the deepest one parsed).
const CLI::App* ChosenCommand(const CLI::App& app) {
  const CLI::App* current = &app;
  while (true) {
    auto parsed = current->get_subcommands();
    if (parsed.empty()) return current;
    current = parsed.front();
  }
}

using RegisterFn = void (*)(CLI::App&, const Context&, CommandRegistry&);

// Which group registers which command. CLI11's options of every command
// cost a noticeable part of a short command's start-up (`imgtool run` is
// timed against crun), so a run of one command builds only its group; help,
// no command, or a name not listed here builds them all.
struct CommandGroup {
  RegisterFn register_fn;
  std::initializer_list<std::string_view> names;
};
const CommandGroup kCommandGroups[] = {
    {RegisterImageCommands, {"images", "inspect", "tag", "rmi", "history"}},
    {RegisterArchiveCommands, {"save", "load", "import", "export"}},
    {RegisterBuildCommands, {"build"}},
    {RegisterMaintenanceCommands, {"gc", "fsck", "version"}},
    {RegisterRegistryCommands, {"pull", "push", "login", "logout"}},
    {RegisterRunCommand, {"run"}},
    {RegisterContainerCommands, {"ps", "logs", "stop", "kill", "rm", "wait", "exec"}},
};

// The command word of argv (values of the global options skipped), or "".
std::string_view CommandWord(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--root" || arg == "--log-level") {
      ++i;
      continue;
    }
    if (arg.starts_with("-")) continue;
    return arg;
  }
  return {};
}

}  // namespace

int Main(int argc, char** argv) {
  // Never destroyed: main() ends the process with _exit right after Main
  // returns, and tearing down every option's strings and callbacks was a
  // measurable part of a short command's run.
  CLI::App& app =
      *new CLI::App("imgtool: build, store, move and run OCI container images", "imgtool");
  app.set_version_flag("--version", std::string("imgtool version ") + IMGTOOL_VERSION);
  app.require_subcommand(1);
  app.fallthrough();

  Context context;
  context.root = store::DefaultRoot();
  context.options = OptionFilter::FromArgs(argc, argv);
  std::string root = context.root.string();
  std::string log_level = "warn";
  app.add_option("--root", root, "Store directory (default: $IMGTOOL_ROOT or /var/lib/imgtool)");
  app.add_option("--log-level", log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "warning", "error"}));

  CommandRegistry registry;
  const std::string_view word = CommandWord(argc, argv);
  const CommandGroup* only = nullptr;
  for (const CommandGroup& group : kCommandGroups) {
    for (std::string_view name : group.names) {
      if (name == word) only = &group;
    }
  }
  if (only != nullptr) {
    only->register_fn(app, context, registry);
  } else {
    for (const CommandGroup& group : kCommandGroups) group.register_fn(app, context, registry);
  }

  // CLI11 would report a mistyped command as "A subcommand is required";
  // name it instead.
  if (!word.empty()) {
    auto commands = app.get_subcommands(
        [&](const CLI::App* sub) { return sub->check_name(std::string(word)); });
    if (commands.empty()) {
      PrintError("unknown command \"" + std::string(word) + "\"");
      (void)WriteAll(STDERR_FILENO, "See 'imgtool --help' for the list of commands.\n");
      return kExitFailure;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    PrintError(e.what());
    (void)WriteAll(STDERR_FILENO, "See 'imgtool --help' (or 'imgtool COMMAND --help').\n");
    return kExitFailure;
  }

  context.root = root;
  LogLevel level = LogLevel::kWarning;
  ParseLogLevel(log_level, &level);
  SetLogLevel(level);
  context.log_level = level;

  const Handler* handler = registry.Find(ChosenCommand(app));
  if (handler == nullptr) {
    PrintError("no such command");
    return kExitFailure;
  }
  Result<int> result = InternalError("no result");
  try {
    result = (*handler)();
  } catch (const std::exception& e) {
    // Library code returns errors; this only catches what slipped through
    // (JSON output of invalid UTF-8, allocation failure) so it is still one line.
    result = InternalError(std::string("unexpected exception: ") + e.what());
  }
  if (!result) {
    PrintError(result.error().ToString());
    return kExitFailure;
  }
  return *result;
}

}  // namespace imgtool::cli
