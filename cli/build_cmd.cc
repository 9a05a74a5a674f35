// imgtool build: a recipe in, a tagged image out (builder/).
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <string>
#include <vector>

#include "builder/builder.h"
#include "cli/context.h"
#include "cli/output.h"
#include "cli/registry_cmd.h"
#include "common/file_util.h"

namespace imgtool::cli {

namespace {

struct BuildFlags {
  std::string file;
  std::string recipe;
  std::string context_dir;
  std::vector<std::string> tags;
  std::vector<std::string> build_args;
  std::vector<std::string> outputs;
  std::string target;
  std::string network = "bridge";
  std::string source_date_epoch;
  std::string timestamp;
  std::string iidfile;
  std::string digest_file;
  std::string log_file;
  std::string format;
  bool no_cache = false;
  bool explain = false;
  bool quiet = false;
  bool verify_reproducible = false;
  bool push = false;
  // Registry access, for --push and for pulling a from: image.
  RegistryAccess registry;
};

Result<int64_t> ParseEpoch(std::string_view what, std::string_view text) {
  if (text.empty() || text.size() > 18 ||
      text.find_first_not_of("0123456789") != std::string_view::npos) {
    return InvalidArgumentError(std::string(what) + "=\"" + std::string(text) +
                                "\": want seconds since 1970 as a decimal number");
  }
  return static_cast<int64_t>(std::stoll(std::string(text)));
}

Status WriteSmallFile(const std::string& path, const std::string& text, std::string_view what) {
  return WriteFileAtomic(path, text).Wrap(std::string(what) + " " + path);
}

Result<int> RunBuild(const Context& context, const BuildFlags& flags) {
  builder::BuildOptions options;
  std::string recipe = !flags.file.empty() ? flags.file : flags.recipe;
  if (recipe.empty())
    return InvalidArgumentError("build: give the recipe (imgtool build recipe.yaml)");
  if (!flags.file.empty() && !flags.recipe.empty() && flags.file != flags.recipe) {
    // `build -f recipe.yaml DIR`: DIR is the context, as with docker.
    options.context_dir = flags.recipe;
  }
  options.recipe_path = recipe;
  if (!flags.context_dir.empty()) options.context_dir = flags.context_dir;
  options.store_root = context.root;
  // `from: image` that is not in the store (progress on stderr, so that
  // stdout stays the build's).
  options.pull = [&context, &flags](const std::string& ref) -> Status {
    IMGTOOL_ASSIGN_OR_RETURN(store::Reference parsed, store::ParseReference(ref));
    PullImageOptions pull;
    pull.quiet = flags.quiet;
    pull.registry = flags.registry;
    IMGTOOL_TRY(PullImage(context, parsed, pull));
    return OkStatus();
  };
  options.state_dir = context.StateDir();
  options.tags = flags.tags;
  options.build_args = flags.build_args;
  options.target = flags.target;
  options.no_cache = flags.no_cache;
  options.explain = flags.explain;
  options.default_network = flags.network;
  // The same bridge settings as imgtool run (a test or a second bridge on one
  // host overrides them with the environment).
  if (const char* bridge = std::getenv("IMGTOOL_BRIDGE"); bridge && *bridge) {
    options.bridge_name = bridge;
  }
  if (const char* subnet = std::getenv("IMGTOOL_BRIDGE_SUBNET"); subnet && *subnet) {
    options.bridge_subnet = subnet;
  }
  if (const char* dir = std::getenv("IMGTOOL_NETWORK_STATE_DIR"); dir && *dir) {
    options.network_state_dir = dir;
  }
  if (!flags.source_date_epoch.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(options.source_date_epoch,
                             ParseEpoch("--source-date-epoch", flags.source_date_epoch));
  }
  if (const char* env = std::getenv("SOURCE_DATE_EPOCH"); env != nullptr && *env != '\0') {
    IMGTOOL_ASSIGN_OR_RETURN(options.environment_epoch, ParseEpoch("SOURCE_DATE_EPOCH", env));
  }
  if (!flags.timestamp.empty()) {
    if (flags.timestamp != "now") {
      return InvalidArgumentError("--timestamp " + flags.timestamp + ": only \"now\" is accepted");
    }
    if (options.source_date_epoch) {
      return InvalidArgumentError("--timestamp now and --source-date-epoch exclude each other");
    }
    options.timestamp_now = true;
  }
  for (const std::string& output : flags.outputs) {
    IMGTOOL_ASSIGN_OR_RETURN(builder::BuildOutput parsed, builder::ParseBuildOutput(output));
    options.outputs.push_back(std::move(parsed));
  }
  bool json = flags.format == "json";
  // With --format json stdout carries the JSON only, so progress goes to stderr.
  options.out_fd = json ? STDERR_FILENO : STDOUT_FILENO;
  options.quiet = flags.quiet;
  UniqueFd log_file;
  if (!flags.log_file.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(
        log_file, OpenFile(flags.log_file, O_WRONLY | O_CREAT | O_TRUNC, 0644).Wrap("--log-file"));
    options.log_fd = log_file.get();
  }

  if (flags.push) {
    if (flags.verify_reproducible) {
      return InvalidArgumentError("--push and --verify-reproducible exclude each other");
    }
    // Refused before anything is built: an image without a name has nowhere to go.
    if (flags.tags.empty()) {
      IMGTOOL_ASSIGN_OR_RETURN(
          std::string text,
          ReadFileToString(options.recipe_path, builder::kMaxRecipeSize + 1).Wrap("read recipe"));
      IMGTOOL_ASSIGN_OR_RETURN(builder::Recipe parsed, builder::ParseRecipe(text, recipe));
      if (parsed.name.empty() ||
          (!flags.target.empty() && flags.target != parsed.final_stage().name)) {
        return InvalidArgumentError(
            "--push: the image has no name to push to; give -t REGISTRY/NAME[:TAG]");
      }
    }
  }

  if (flags.verify_reproducible) {
    IMGTOOL_ASSIGN_OR_RETURN(builder::ReproducibilityReport report,
                             builder::VerifyReproducible(options));
    std::string out;
    if (report.same) {
      out = "reproducible: both builds gave " + report.first.ToString() + "\n";
    } else {
      out =
          "NOT reproducible: " + report.first.ToString() + " vs " + report.second.ToString() + "\n";
      for (const std::string& line : report.differences) out += "  " + line + "\n";
    }
    IMGTOOL_TRY(PrintOut(out));
    return report.same ? 0 : 1;
  }

  IMGTOOL_ASSIGN_OR_RETURN(builder::BuildResult result, builder::Build(options));
  // --push: every name the image got, each to its own registry, after tagging.
  std::vector<std::pair<std::string, Digest>> pushed;
  if (flags.push) {
    PushImageOptions push;
    push.quiet = flags.quiet;
    push.registry = flags.registry;
    for (const std::string& tag : result.tags) {
      IMGTOOL_ASSIGN_OR_RETURN(store::Reference ref, store::ParseReference(tag));
      IMGTOOL_ASSIGN_OR_RETURN(Digest digest, PushImage(context, ref, push).Wrap("--push"));
      if (!flags.quiet) {
        std::string line = "pushed " + tag + "@" + digest.ToString() + "\n";
        (void)WriteAll(json ? STDERR_FILENO : STDOUT_FILENO, line);
      }
      pushed.emplace_back(tag, digest);
    }
  }
  if (!flags.iidfile.empty()) {
    IMGTOOL_TRY(WriteSmallFile(flags.iidfile, result.config_digest.ToString(), "--iidfile"));
  }
  if (!flags.digest_file.empty()) {
    IMGTOOL_TRY(
        WriteSmallFile(flags.digest_file, result.manifest_digest.ToString(), "--digest-file"));
  }
  if (json) {
    nlohmann::ordered_json out;
    out["id"] = result.config_digest.ToString();
    out["digest"] = result.manifest_digest.ToString();
    out["tags"] = result.tags;
    out["source_date_epoch"] = result.epoch;
    nlohmann::ordered_json steps = nlohmann::ordered_json::array();
    for (const builder::StepReport& step : result.steps) {
      nlohmann::ordered_json item;
      item["stage"] = step.stage;
      item["step"] = step.number;
      item["description"] = step.description;
      item["cached"] = step.cached;
      item["layer"] = step.layer;
      item["seconds"] = step.seconds;
      item["layer_size"] = step.layer_size;
      item["explain"] = step.explain;
      steps.push_back(std::move(item));
    }
    out["steps"] = std::move(steps);
    nlohmann::ordered_json pushes = nlohmann::ordered_json::array();
    for (const auto& [tag, digest] : pushed) {
      pushes.push_back({{"reference", tag}, {"digest", digest.ToString()}});
    }
    out["pushed"] = std::move(pushes);
    IMGTOOL_TRY(PrintJson(out));
  } else if (flags.quiet) {
    IMGTOOL_TRY(PrintOut(result.config_digest.ToString() + "\n"));
  }
  return 0;
}

}  // namespace

void RegisterBuildCommands(CLI::App& app, const Context& context, CommandRegistry& registry) {
  auto flags = std::make_shared<BuildFlags>();
  CLI::App* cmd = app.add_subcommand("build", "Build an image from a YAML recipe");
  cmd->add_option("RECIPE", flags->recipe, "The recipe (with -f: the build context directory)");
  cmd->add_option("-f,--file", flags->file, "The recipe file");
  cmd->add_option("--context", flags->context_dir,
                  "Build context directory (default: the recipe's directory)");
  cmd->add_option("-t,--tag", flags->tags,
                  "Name the image (several allowed; default: the "
                  "recipe's name)")
      ->allow_extra_args(false);
  cmd->add_option("--build-arg", flags->build_args, "NAME=VALUE for an arg the recipe declares")
      ->allow_extra_args(false);
  cmd->add_option("--target", flags->target, "Build this stage and tag it");
  cmd->add_flag("--no-cache", flags->no_cache, "Run every step, ignoring cached layers");
  cmd->add_flag("--explain", flags->explain, "Print why each step hit or missed the cache");
  cmd->add_option("--network", flags->network,
                  "Network of run steps that name none: bridge (default), none, host")
      ->check(CLI::IsMember({"bridge", "none", "host"}));
  cmd->add_option("--source-date-epoch", flags->source_date_epoch,
                  "Timestamp (seconds) for files, config and history; default "
                  "$SOURCE_DATE_EPOCH, the recipe's, 0");
  cmd->add_option("--timestamp", flags->timestamp,
                  "\"now\": use the current time (not reproducible)");
  cmd->add_option("--output", flags->outputs,
                  "Also write TYPE=PATH: oci-archive, docker-archive, oci-dir, rootfs.tar")
      ->allow_extra_args(false);
  cmd->add_option("--iidfile", flags->iidfile, "Write the image ID (config digest) to this file");
  cmd->add_option("--digest-file", flags->digest_file, "Write the manifest digest to this file");
  cmd->add_option("--log-file", flags->log_file, "Also write the build output to this file");
  cmd->add_option("--format", flags->format, "json: print a JSON summary on stdout")
      ->check(CLI::IsMember({"json"}));
  cmd->add_flag("-q,--quiet", flags->quiet, "Print only the image ID");
  cmd->add_flag("--verify-reproducible", flags->verify_reproducible,
                "Build twice (the second time from nothing) and name every file that differs");
  cmd->add_flag("--push", flags->push,
                "After tagging, push the image to the registry of each of its names");
  AddRegistryFlags(cmd, flags->registry, "--push and pulled bases");
  cmd->add_option("--creds", flags->registry.creds, "USER:PASSWORD for --push and pulled bases");
  registry.Set(cmd, [&context, flags] { return RunBuild(context, *flags); });
}

}  // namespace imgtool::cli
