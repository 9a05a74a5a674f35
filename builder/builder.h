// Builds an image from a recipe: each stage's base becomes snapshots, each
// run/copy step one layer made in a snapshot on top of its parent and cached
// by a key over the parent, the step, the args it uses and what it copies.
// Nothing is tagged unless every step succeeded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "builder/recipe.h"
#include "common/digest.h"
#include "common/error.h"
#include "store/oci_types.h"

namespace imgtool::builder {

struct BuildOutput {
  // "oci-archive", "docker-archive", "oci-dir", "rootfs.tar".
  std::string type;
  std::filesystem::path path;
};

// "TYPE=PATH", e.g. "oci-archive=out.tar".
Result<BuildOutput> ParseBuildOutput(std::string_view text);

struct BuildOptions {
  std::filesystem::path recipe_path;
  // The build context: copy sources, rootfs tars and bind mounts are relative
  // to it. Default: the recipe's directory.
  std::filesystem::path context_dir;
  std::filesystem::path store_root;
  std::filesystem::path state_dir;  // "<root>-state": snapshots, cache, scratch
  std::vector<std::string> tags;    // default: the recipe's name
  std::vector<std::string> build_args;
  std::string target;  // a stage name; default: the recipe's final stage
  bool no_cache = false;
  bool explain = false;
  // Default network of run steps that name none: "bridge", "none" or "host".
  std::string default_network = "bridge";
  // Bridge mode: the bridge, its subnet (empty: the runner's defaults) and
  // the host-wide IPAM dir (empty: runner::kDefaultNetworkStateDir).
  std::string bridge_name;
  std::string bridge_subnet;
  std::filesystem::path network_state_dir;
  // --source-date-epoch; else SOURCE_DATE_EPOCH from `environment_epoch`, the
  // recipe's source_date_epoch, 0.
  std::optional<int64_t> source_date_epoch;
  std::optional<int64_t> environment_epoch;
  bool timestamp_now = false;  // --timestamp now: no clamping, times are now
  std::vector<BuildOutput> outputs;
  // Step output and progress go here, each line prefixed with its step.
  int out_fd = 1;
  int log_fd = -1;     // --log-file: a copy of everything written to out_fd
  bool quiet = false;  // no step output or summary on out_fd (log_fd still gets it)
  // Called for `from: image: REF` when REF is not in the store (the CLI pulls
  // it from its registry); without it, a missing image is NotFound.
  std::function<Status(const std::string& ref)> pull;
};

struct StepReport {
  std::string stage;  // "" for the final stage
  int number = 0;     // 1-based within its stage; 0 for the base
  std::string description;
  bool cached = false;
  bool layer = false;  // false for metadata-only steps (env, workdir, ...)
  double seconds = 0;
  int64_t layer_size = 0;
  std::string explain;  // why it hit or missed
};

struct BuildResult {
  Digest manifest_digest;
  int64_t manifest_size = 0;
  Digest config_digest;           // the image ID
  std::vector<std::string> tags;  // full references
  std::vector<StepReport> steps;
  int64_t epoch = 0;
};

// Runs the whole build. Errors name the step: `step 3 (RUN make): exit code 2`.
Result<BuildResult> Build(const BuildOptions& options);

// The summary table printed at the end of a build.
std::string FormatSummary(const BuildResult& result);

// Builds twice (the second time without cache, in a fresh store beside the
// state dir) and compares: OK when the digests match, else one line per
// differing file naming what differs (content, mtime, mode, owner, type).
struct ReproducibilityReport {
  bool same = false;
  Digest first;
  Digest second;
  std::vector<std::string> differences;
};
Result<ReproducibilityReport> VerifyReproducible(const BuildOptions& options);

}  // namespace imgtool::builder
