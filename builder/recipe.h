// Build recipes (docs/recipe.md): the YAML document parsed into plain data and
// checked before anything runs. Parsing and validation are pure functions over
// strings; every error names the file, line and column of the fault.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"

namespace imgtool::builder {

// Recipes larger than this are refused before they are parsed.
inline constexpr size_t kMaxRecipeSize = 1u << 20;
// Aliases (*name) and nodes visited, so that alias bombs are refused early.
inline constexpr int kMaxAliases = 64;
inline constexpr int kMaxNodes = 100000;

// 1-based, as editors count.
struct Location {
  int line = 0;
  int column = 0;
};

// An ordered list of KEY=VALUE pairs as written in the recipe.
using KeyValues = std::vector<std::pair<std::string, std::string>>;

struct DebootstrapBase {
  std::string suite;
  std::string variant;  // "" = the tool's default
  std::vector<std::string> components;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  std::string mirror;  // "" = the tool's default mirror
  std::string arch;    // "" = the host's
};

struct Base {
  enum class Kind { kScratch, kDebootstrap, kImage, kRootfs, kStage };
  Kind kind = Kind::kScratch;
  std::string image;   // kImage: a reference
  std::string rootfs;  // kRootfs: a tar path, relative to the build context
  std::string stage;   // kStage: a stage name
  DebootstrapBase debootstrap;
  Location location;
};

struct RunMount {
  enum class Type { kCache, kBind };
  Type type = Type::kCache;
  std::string target;  // absolute path in the container
  std::string source;  // kBind: relative to the build context
  std::string id;      // kCache: shared by steps naming the same id (default: target)
  Location location;
};

struct CopySpec {
  std::vector<std::string> src;  // relative to the context (or the stage's root); globs allowed
  std::string dest;
  std::string chown;  // "UID:GID" (numeric) or ""
  std::string mode;   // octal, e.g. "0755", or ""
  std::string from;   // a stage name, or "" for the build context
};

struct Step {
  enum class Kind { kRun, kCopy, kEnv, kWorkdir, kUser, kLabel, kShell };
  Kind kind = Kind::kRun;
  Location location;
  // kRun: the command; a shell string (run: "...") or an exec vector (run: [...]).
  std::string command;
  std::vector<std::string> exec;
  std::string network;  // "" = bridge
  std::vector<RunMount> mounts;
  std::optional<int64_t> memory_bytes;
  std::optional<double> cpus;
  // kCopy
  CopySpec copy;
  // kEnv, kLabel
  KeyValues values;
  // kWorkdir, kUser
  std::string value;
  // kShell
  std::vector<std::string> shell;
};

struct ImageConfigSpec {
  std::optional<std::vector<std::string>> entrypoint;
  std::optional<std::vector<std::string>> cmd;
  KeyValues env;
  std::optional<std::string> user;
  std::optional<std::string> workdir;
  std::vector<std::string> expose;
  KeyValues labels;
  std::vector<std::string> volumes;
  std::optional<std::string> stopsignal;
};

struct Stage {
  std::string name;  // "" for the recipe's own (final) stage
  Base from;
  KeyValues env;
  std::vector<Step> steps;
  ImageConfigSpec config;
  Location location;
};

struct Recipe {
  std::string file;  // as given, for error messages
  std::string name;  // default tag
  KeyValues args;    // declared args with their defaults
  std::optional<int64_t> source_date_epoch;
  std::vector<Stage> stages;  // named stages in order, then the final stage (name "")
  Location location;

  const Stage* FindStage(std::string_view name) const;
  const Stage& final_stage() const { return stages.back(); }
};

// "FILE:LINE:COLUMN: message" as InvalidArgument.
Error RecipeError(std::string_view file, Location location, std::string_view message);

// Parses and validates `text` (named `file` in errors): unknown keys, wrong
// types, a missing `from`, copy sources that leave the context lexically,
// undefined or cyclic stages, alias bombs and oversized recipes are refused.
Result<Recipe> ParseRecipe(std::string_view text, std::string_view file);

// --build-arg K=V overrides. Every K must be declared in the recipe's args.
Result<std::map<std::string, std::string>> ResolveArgs(const Recipe& recipe,
                                                       const std::vector<std::string>& overrides);

// ${NAME} is replaced by vars[NAME]; $$ is a literal $; other text, $NAME
// and ${NAME} of unknown names are kept as they are (the shell may know them).
std::string ExpandVars(std::string_view text, const std::map<std::string, std::string>& vars);

// The names among `candidates` that `text` refers to as $NAME or ${NAME}.
std::vector<std::string> ReferencedVars(std::string_view text,
                                        const std::map<std::string, std::string>& candidates);

// A readable one-line form of a step, for history and output ("RUN echo hi").
std::string DescribeStep(const Step& step);

// The stages the given one needs (by from: stage and copy from:), itself last,
// each once, in build order.
std::vector<const Stage*> StagesNeededFor(const Recipe& recipe, const Stage& target);

// "64m", "1g", "512k", "1048576" -> bytes.
Result<int64_t> ParseByteSize(std::string_view text);

}  // namespace imgtool::builder
