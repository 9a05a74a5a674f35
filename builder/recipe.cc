#include "builder/recipe.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <set>
#include <sstream>

#include "common/log.h"
#include "common/safe_path.h"

namespace imgtool::builder {

namespace {

// Counts aliases while the event parser reads the text, so that a document
// built to expand into millions of nodes is refused before it is walked.
class AliasCounter : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override { ++documents; }
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    if (++aliases == kMaxAliases + 1) first_excess = mark;
  }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

  int aliases = 0;
  int documents = 0;
  YAML::Mark first_excess;
};

Location LocationOf(const YAML::Mark& mark) {
  if (mark.is_null()) return {};
  return Location{mark.line + 1, mark.column + 1};
}

std::string Quote(std::string_view text) { return "\"" + std::string(text) + "\""; }

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

bool IsIdentifier(std::string_view name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

bool IsStageName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::islower(static_cast<unsigned char>(c)) ||
           std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

class Parser {
 public:
  explicit Parser(std::string_view file) : file_(file) {}

  Result<Recipe> Parse(const YAML::Node& root);

 private:
  Error Err(const YAML::Node& node, std::string_view message) const {
    return RecipeError(file_, LocationOf(node.Mark()), message);
  }
  Location Loc(const YAML::Node& node) const { return LocationOf(node.Mark()); }

  Status CheckMap(const YAML::Node& node, std::string_view what) const {
    if (!node.IsMap()) return Err(node, std::string(what) + ": expected a mapping");
    return OkStatus();
  }
  Status CheckKeys(const YAML::Node& node, std::string_view what,
                   const std::vector<std::string>& allowed) const;
  Result<std::string> String(const YAML::Node& node, std::string_view what) const;
  Result<std::vector<std::string>> StringList(const YAML::Node& node, std::string_view what,
                                              bool allow_scalar) const;
  Result<KeyValues> Mapping(const YAML::Node& node, std::string_view what,
                            bool keys_are_names) const;
  Result<int64_t> Integer(const YAML::Node& node, std::string_view what) const;

  Result<Base> ParseBase(const YAML::Node& node) const;
  Result<Step> ParseStep(const YAML::Node& node, size_t number) const;
  Result<CopySpec> ParseCopy(const YAML::Node& node, std::string_view what) const;
  Result<RunMount> ParseMount(const YAML::Node& node, std::string_view what) const;
  Result<ImageConfigSpec> ParseConfig(const YAML::Node& node) const;
  Result<Stage> ParseStage(const YAML::Node& node, std::string name, std::string_view what,
                           bool top_level) const;
  Status CheckStageRefs(const Recipe& recipe) const;

  std::string file_;
  // Where stage references were written, to name them in errors.
  mutable std::vector<std::pair<std::string, Location>> copy_from_locations_;
};

Status Parser::CheckKeys(const YAML::Node& node, std::string_view what,
                         const std::vector<std::string>& allowed) const {
  IMGTOOL_TRY(CheckMap(node, what));
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (!it->first.IsScalar()) return Err(it->first, std::string(what) + ": keys must be strings");
    std::string key = it->first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return Err(it->first, std::string(what) + ": unknown key " + Quote(key) +
                                " (allowed: " + JoinNames(allowed) + ")");
    }
    if (!seen.insert(key).second) {
      return Err(it->first, std::string(what) + ": duplicate key " + Quote(key));
    }
  }
  return OkStatus();
}

Result<std::string> Parser::String(const YAML::Node& node, std::string_view what) const {
  if (!node.IsScalar()) return Err(node, std::string(what) + ": expected a string");
  return node.Scalar();
}

Result<std::vector<std::string>> Parser::StringList(const YAML::Node& node, std::string_view what,
                                                    bool allow_scalar) const {
  std::vector<std::string> out;
  if (allow_scalar && node.IsScalar()) {
    out.push_back(node.Scalar());
    return out;
  }
  if (!node.IsSequence()) {
    return Err(node, std::string(what) + (allow_scalar ? ": expected a string or a list of strings"
                                                       : ": expected a list of strings"));
  }
  for (const YAML::Node& item : node) {
    if (!item.IsScalar()) return Err(item, std::string(what) + ": expected a string in the list");
    out.push_back(item.Scalar());
  }
  return out;
}

Result<KeyValues> Parser::Mapping(const YAML::Node& node, std::string_view what,
                                  bool keys_are_names) const {
  IMGTOOL_TRY(CheckMap(node, what));
  KeyValues out;
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string key, String(it->first, what));
    if (keys_are_names && !IsIdentifier(key)) {
      return Err(it->first, std::string(what) + ": " + Quote(key) +
                                " is not a valid name (letters, digits and _, not starting with a "
                                "digit)");
    }
    if (key.empty()) return Err(it->first, std::string(what) + ": empty key");
    if (!seen.insert(key).second) {
      return Err(it->first, std::string(what) + ": duplicate key " + Quote(key));
    }
    IMGTOOL_ASSIGN_OR_RETURN(std::string value, String(it->second, std::string(what) + "." + key));
    out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

Result<int64_t> Parser::Integer(const YAML::Node& node, std::string_view what) const {
  IMGTOOL_ASSIGN_OR_RETURN(std::string text, String(node, what));
  if (text.empty() || text.size() > 18 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return Err(node, std::string(what) + ": expected a non-negative integer, got " + Quote(text));
  }
  return static_cast<int64_t>(std::stoll(text));
}

Result<Base> Parser::ParseBase(const YAML::Node& node) const {
  Base base;
  base.location = Loc(node);
  if (node.IsScalar()) {
    if (node.Scalar() == "scratch") return base;
    return Err(node,
               "from: expected \"scratch\" or a mapping with one of debootstrap, image, "
               "rootfs, stage");
  }
  IMGTOOL_TRY(CheckKeys(node, "from", {"debootstrap", "image", "rootfs", "stage", "scratch"}));
  if (node.size() != 1) {
    return Err(node, "from: give exactly one of debootstrap, image, rootfs, stage, scratch");
  }
  auto it = node.begin();
  std::string kind = it->first.Scalar();
  const YAML::Node& value = it->second;
  base.location = Loc(value);
  if (kind == "scratch") {
    if (!value.IsNull() && !(value.IsScalar() && value.Scalar().empty()) &&
        !(value.IsMap() && value.size() == 0)) {
      return Err(value, "from.scratch: takes no value");
    }
    base.kind = Base::Kind::kScratch;
  } else if (kind == "image") {
    base.kind = Base::Kind::kImage;
    IMGTOOL_ASSIGN_OR_RETURN(base.image, String(value, "from.image"));
    if (base.image.empty()) return Err(value, "from.image: empty reference");
  } else if (kind == "rootfs") {
    base.kind = Base::Kind::kRootfs;
    IMGTOOL_ASSIGN_OR_RETURN(base.rootfs, String(value, "from.rootfs"));
    if (base.rootfs.empty()) return Err(value, "from.rootfs: empty path");
    if (!CleanPathInRoot(base.rootfs)) {
      return Err(value, "from.rootfs: " + Quote(base.rootfs) + " is outside the build context");
    }
  } else if (kind == "stage") {
    base.kind = Base::Kind::kStage;
    IMGTOOL_ASSIGN_OR_RETURN(base.stage, String(value, "from.stage"));
  } else {
    base.kind = Base::Kind::kDebootstrap;
    IMGTOOL_TRY(
        CheckKeys(value, "from.debootstrap",
                  {"suite", "variant", "components", "include", "exclude", "mirror", "arch"}));
    DebootstrapBase& d = base.debootstrap;
    if (!value["suite"]) return Err(value, "from.debootstrap: missing \"suite\"");
    IMGTOOL_ASSIGN_OR_RETURN(d.suite, String(value["suite"], "from.debootstrap.suite"));
    if (value["variant"]) {
      IMGTOOL_ASSIGN_OR_RETURN(d.variant, String(value["variant"], "from.debootstrap.variant"));
    }
    if (value["mirror"]) {
      IMGTOOL_ASSIGN_OR_RETURN(d.mirror, String(value["mirror"], "from.debootstrap.mirror"));
    }
    if (value["arch"]) {
      IMGTOOL_ASSIGN_OR_RETURN(d.arch, String(value["arch"], "from.debootstrap.arch"));
    }
    if (value["components"]) {
      IMGTOOL_ASSIGN_OR_RETURN(
          d.components, StringList(value["components"], "from.debootstrap.components", false));
    }
    if (value["include"]) {
      IMGTOOL_ASSIGN_OR_RETURN(d.include,
                               StringList(value["include"], "from.debootstrap.include", false));
    }
    if (value["exclude"]) {
      IMGTOOL_ASSIGN_OR_RETURN(d.exclude,
                               StringList(value["exclude"], "from.debootstrap.exclude", false));
    }
    auto plain = [](std::string_view s) {
      return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
               c == '+' || c == ':';
      });
    };
    if (!plain(d.suite)) return Err(value["suite"], "from.debootstrap.suite: invalid suite name");
    for (const auto& list : {d.include, d.exclude, d.components}) {
      for (const std::string& item : list) {
        if (!plain(item)) {
          return Err(value, "from.debootstrap: invalid package or component name " + Quote(item));
        }
      }
    }
    if (!d.variant.empty() && !plain(d.variant)) {
      return Err(value["variant"], "from.debootstrap.variant: invalid variant");
    }
    if (!d.arch.empty() && !plain(d.arch)) {
      return Err(value["arch"], "from.debootstrap.arch: invalid architecture");
    }
  }
  return base;
}

Result<CopySpec> Parser::ParseCopy(const YAML::Node& node, std::string_view what) const {
  CopySpec copy;
  IMGTOOL_TRY(CheckKeys(node, what, {"src", "dest", "chown", "mode", "from"}));
  if (!node["src"]) return Err(node, std::string(what) + ": missing \"src\"");
  if (!node["dest"]) return Err(node, std::string(what) + ": missing \"dest\"");
  IMGTOOL_ASSIGN_OR_RETURN(copy.src, StringList(node["src"], std::string(what) + ".src", true));
  if (copy.src.empty()) return Err(node["src"], std::string(what) + ".src: empty list");
  IMGTOOL_ASSIGN_OR_RETURN(copy.dest, String(node["dest"], std::string(what) + ".dest"));
  if (copy.dest.empty()) return Err(node["dest"], std::string(what) + ".dest: empty path");
  if (node["from"]) {
    IMGTOOL_ASSIGN_OR_RETURN(copy.from, String(node["from"], std::string(what) + ".from"));
    copy_from_locations_.emplace_back(copy.from, Loc(node["from"]));
  }
  if (node["chown"]) {
    IMGTOOL_ASSIGN_OR_RETURN(copy.chown, String(node["chown"], std::string(what) + ".chown"));
    std::string_view c = copy.chown;
    size_t colon = c.find(':');
    auto numeric = [](std::string_view s) {
      return !s.empty() && s.size() <= 10 &&
             std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    };
    if (!numeric(c.substr(0, colon)) ||
        (colon != std::string_view::npos && !numeric(c.substr(colon + 1)))) {
      return Err(node["chown"], std::string(what) +
                                    ".chown: expected \"UID[:GID]\" in numbers, got " +
                                    Quote(copy.chown));
    }
  }
  if (node["mode"]) {
    IMGTOOL_ASSIGN_OR_RETURN(copy.mode, String(node["mode"], std::string(what) + ".mode"));
    const std::string& m = copy.mode;
    if (m.empty() || m.size() > 5 ||
        !std::all_of(m.begin(), m.end(), [](char c) { return c >= '0' && c <= '7'; }) ||
        std::stoul(m, nullptr, 8) > 07777) {
      return Err(node["mode"], std::string(what) +
                                   ".mode: expected an octal mode like \"0755\", got " + Quote(m));
    }
  }
  for (size_t i = 0; i < copy.src.size(); ++i) {
    const YAML::Node& where = node["src"].IsSequence() ? node["src"][i] : node["src"];
    if (copy.src[i].empty()) return Err(where, std::string(what) + ".src: empty path");
    if (copy.from.empty() && !CleanPathInRoot(copy.src[i])) {
      return Err(where, std::string(what) + ".src: " + Quote(copy.src[i]) +
                            " is outside the build context");
    }
  }
  return copy;
}

Result<RunMount> Parser::ParseMount(const YAML::Node& node, std::string_view what) const {
  RunMount mount;
  mount.location = Loc(node);
  IMGTOOL_TRY(CheckKeys(node, what, {"type", "target", "source", "id"}));
  if (!node["type"]) return Err(node, std::string(what) + ": missing \"type\" (cache or bind)");
  IMGTOOL_ASSIGN_OR_RETURN(std::string type, String(node["type"], std::string(what) + ".type"));
  if (type == "cache") {
    mount.type = RunMount::Type::kCache;
  } else if (type == "bind") {
    mount.type = RunMount::Type::kBind;
  } else {
    return Err(node["type"],
               std::string(what) + ".type: expected cache or bind, got " + Quote(type));
  }
  if (!node["target"]) return Err(node, std::string(what) + ": missing \"target\"");
  IMGTOOL_ASSIGN_OR_RETURN(mount.target, String(node["target"], std::string(what) + ".target"));
  if (!mount.target.starts_with("/") || !CleanPathInRoot(mount.target) ||
      CleanPathInRoot(mount.target)->empty()) {
    return Err(node["target"], std::string(what) + ".target: expected an absolute path below /");
  }
  if (node["source"]) {
    if (mount.type != RunMount::Type::kBind) {
      return Err(node["source"], std::string(what) + ".source: only bind mounts take a source");
    }
    IMGTOOL_ASSIGN_OR_RETURN(mount.source, String(node["source"], std::string(what) + ".source"));
    if (!CleanPathInRoot(mount.source)) {
      return Err(node["source"], std::string(what) + ".source: " + Quote(mount.source) +
                                     " is outside the build context");
    }
  } else if (mount.type == RunMount::Type::kBind) {
    mount.source = ".";
  }
  if (node["id"]) {
    if (mount.type != RunMount::Type::kCache) {
      return Err(node["id"], std::string(what) + ".id: only cache mounts take an id");
    }
    IMGTOOL_ASSIGN_OR_RETURN(mount.id, String(node["id"], std::string(what) + ".id"));
    if (!IsStageName(mount.id)) {
      return Err(node["id"], std::string(what) + ".id: use lowercase letters, digits, . _ -");
    }
  }
  return mount;
}

Result<Step> Parser::ParseStep(const YAML::Node& node, size_t number) const {
  std::string what = "step " + std::to_string(number);
  Step step;
  step.location = Loc(node);
  IMGTOOL_TRY(CheckMap(node, what));
  static const std::vector<std::string> kKinds = {"run",  "copy",  "env",  "workdir",
                                                  "user", "label", "shell"};
  std::string kind;
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (!it->first.IsScalar()) return Err(it->first, what + ": keys must be strings");
    std::string key = it->first.Scalar();
    if (std::find(kKinds.begin(), kKinds.end(), key) != kKinds.end()) {
      if (!kind.empty()) {
        return Err(it->first, what + ": one step does one thing; " + Quote(kind) + " and " +
                                  Quote(key) + " belong in two steps");
      }
      kind = key;
    }
  }
  if (kind.empty()) {
    return Err(node, what + ": expected one of " + JoinNames(kKinds));
  }
  std::vector<std::string> allowed = {kind};
  if (kind == "run") allowed.insert(allowed.end(), {"network", "mounts", "memory", "cpus"});
  IMGTOOL_TRY(CheckKeys(node, what, allowed));
  const YAML::Node value = node[kind];
  std::string field = what + "." + kind;
  if (kind == "run") {
    step.kind = Step::Kind::kRun;
    if (value.IsSequence()) {
      IMGTOOL_ASSIGN_OR_RETURN(step.exec, StringList(value, field, false));
      if (step.exec.empty()) return Err(value, field + ": empty command");
    } else {
      IMGTOOL_ASSIGN_OR_RETURN(step.command, String(value, field));
      if (step.command.empty()) return Err(value, field + ": empty command");
    }
    if (node["network"]) {
      IMGTOOL_ASSIGN_OR_RETURN(step.network, String(node["network"], what + ".network"));
      if (step.network != "none" && step.network != "bridge" && step.network != "host") {
        return Err(node["network"],
                   what + ".network: expected none, bridge or host, got " + Quote(step.network));
      }
    }
    if (node["mounts"]) {
      const YAML::Node mounts = node["mounts"];
      if (!mounts.IsSequence()) return Err(mounts, what + ".mounts: expected a list");
      for (size_t i = 0; i < mounts.size(); ++i) {
        IMGTOOL_ASSIGN_OR_RETURN(
            RunMount mount, ParseMount(mounts[i], what + ".mounts[" + std::to_string(i) + "]"));
        step.mounts.push_back(std::move(mount));
      }
    }
    if (node["memory"]) {
      IMGTOOL_ASSIGN_OR_RETURN(std::string text, String(node["memory"], what + ".memory"));
      auto bytes = ParseByteSize(text);
      if (!bytes || *bytes < (4 << 20)) {
        return Err(
            node["memory"],
            what + ".memory: expected a size of at least 4m like \"512m\", got " + Quote(text));
      }
      step.memory_bytes = *bytes;
    }
    if (node["cpus"]) {
      IMGTOOL_ASSIGN_OR_RETURN(std::string text, String(node["cpus"], what + ".cpus"));
      char* end = nullptr;
      double cpus = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !(cpus > 0) || !std::isfinite(cpus)) {
        return Err(node["cpus"], what + ".cpus: expected a positive number, got " + Quote(text));
      }
      step.cpus = cpus;
    }
  } else if (kind == "copy") {
    step.kind = Step::Kind::kCopy;
    IMGTOOL_ASSIGN_OR_RETURN(step.copy, ParseCopy(value, field));
  } else if (kind == "env" || kind == "label") {
    step.kind = kind == "env" ? Step::Kind::kEnv : Step::Kind::kLabel;
    IMGTOOL_ASSIGN_OR_RETURN(step.values, Mapping(value, field, kind == "env"));
    if (step.values.empty()) return Err(value, field + ": empty mapping");
  } else if (kind == "workdir" || kind == "user") {
    step.kind = kind == "workdir" ? Step::Kind::kWorkdir : Step::Kind::kUser;
    IMGTOOL_ASSIGN_OR_RETURN(step.value, String(value, field));
    if (step.value.empty()) return Err(value, field + ": empty value");
    if (kind == "workdir" && !step.value.starts_with("/") && !step.value.starts_with("${")) {
      return Err(value, field + ": expected an absolute path");
    }
  } else {
    step.kind = Step::Kind::kShell;
    IMGTOOL_ASSIGN_OR_RETURN(step.shell, StringList(value, field, false));
    if (step.shell.empty()) return Err(value, field + ": empty list");
  }
  return step;
}

Result<ImageConfigSpec> Parser::ParseConfig(const YAML::Node& node) const {
  ImageConfigSpec config;
  IMGTOOL_TRY(CheckKeys(node, "config",
                        {"entrypoint", "cmd", "env", "user", "workdir", "expose", "labels",
                         "volumes", "stopsignal"}));
  if (node["entrypoint"]) {
    IMGTOOL_ASSIGN_OR_RETURN(config.entrypoint,
                             StringList(node["entrypoint"], "config.entrypoint", false));
  }
  if (node["cmd"]) {
    IMGTOOL_ASSIGN_OR_RETURN(config.cmd, StringList(node["cmd"], "config.cmd", false));
  }
  if (node["env"]) {
    IMGTOOL_ASSIGN_OR_RETURN(config.env, Mapping(node["env"], "config.env", true));
  }
  if (node["labels"]) {
    IMGTOOL_ASSIGN_OR_RETURN(config.labels, Mapping(node["labels"], "config.labels", false));
  }
  if (node["user"]) {
    IMGTOOL_ASSIGN_OR_RETURN(config.user, String(node["user"], "config.user"));
  }
  if (node["workdir"]) {
    IMGTOOL_ASSIGN_OR_RETURN(config.workdir, String(node["workdir"], "config.workdir"));
  }
  if (node["stopsignal"]) {
    IMGTOOL_ASSIGN_OR_RETURN(config.stopsignal, String(node["stopsignal"], "config.stopsignal"));
  }
  if (node["volumes"]) {
    IMGTOOL_ASSIGN_OR_RETURN(config.volumes, StringList(node["volumes"], "config.volumes", false));
  }
  if (node["expose"]) {
    IMGTOOL_ASSIGN_OR_RETURN(config.expose, StringList(node["expose"], "config.expose", false));
    for (size_t i = 0; i < config.expose.size(); ++i) {
      std::string& port = config.expose[i];
      std::string_view number = port;
      std::string_view proto = "tcp";
      if (size_t slash = number.find('/'); slash != std::string_view::npos) {
        proto = number.substr(slash + 1);
        number = number.substr(0, slash);
      }
      bool digits =
          !number.empty() && number.size() <= 5 &&
          std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits || std::stoi(std::string(number)) < 1 || std::stoi(std::string(number)) > 65535 ||
          (proto != "tcp" && proto != "udp" && proto != "sctp")) {
        return Err(node["expose"][i],
                   "config.expose: expected \"PORT[/tcp|udp|sctp]\", got " + Quote(port));
      }
      port = std::string(number) + "/" + std::string(proto);
    }
  }
  return config;
}

Result<Stage> Parser::ParseStage(const YAML::Node& node, std::string name, std::string_view what,
                                 bool top_level) const {
  Stage stage;
  stage.name = std::move(name);
  stage.location = Loc(node);
  if (!top_level) IMGTOOL_TRY(CheckKeys(node, what, {"from", "env", "steps", "config"}));
  if (!node["from"]) return Err(node, std::string(what) + ": missing \"from\"");
  IMGTOOL_ASSIGN_OR_RETURN(stage.from, ParseBase(node["from"]));
  if (node["env"]) {
    IMGTOOL_ASSIGN_OR_RETURN(stage.env, Mapping(node["env"], std::string(what) + ".env", true));
  }
  if (node["steps"]) {
    const YAML::Node steps = node["steps"];
    if (!steps.IsSequence() && !steps.IsNull()) {
      return Err(steps, std::string(what) + ".steps: expected a list");
    }
    for (size_t i = 0; i < steps.size(); ++i) {
      IMGTOOL_ASSIGN_OR_RETURN(Step step, ParseStep(steps[i], i + 1));
      stage.steps.push_back(std::move(step));
    }
  }
  if (node["config"]) {
    IMGTOOL_ASSIGN_OR_RETURN(stage.config, ParseConfig(node["config"]));
  }
  return stage;
}

Status Parser::CheckStageRefs(const Recipe& recipe) const {
  // A stage may use only stages defined before it, so there are no cycles.
  std::set<std::string> defined;
  for (const Stage& stage : recipe.stages) {
    if (stage.from.kind == Base::Kind::kStage && !defined.count(stage.from.stage)) {
      return RecipeError(
          file_, stage.from.location,
          "undefined stage " + Quote(stage.from.stage) +
              (stage.from.stage == stage.name ? " (a stage can not start from itself)"
                                              : " (stages must be defined before "
                                                "they are used)"));
    }
    for (const Step& step : stage.steps) {
      if (step.kind != Step::Kind::kCopy || step.copy.from.empty()) continue;
      if (!defined.count(step.copy.from)) {
        Location where = step.location;
        for (const auto& [ref, location] : copy_from_locations_) {
          if (ref == step.copy.from && location.line >= step.location.line) {
            where = location;
            break;
          }
        }
        return RecipeError(file_, where, "undefined stage " + Quote(step.copy.from));
      }
    }
    if (!stage.name.empty()) defined.insert(stage.name);
  }
  return OkStatus();
}

Result<Recipe> Parser::Parse(const YAML::Node& root) {
  Recipe recipe;
  recipe.file = file_;
  recipe.location = Loc(root);
  if (!root.IsMap()) return Err(root, "a recipe is a mapping (name, args, from, steps, ...)");
  IMGTOOL_TRY(
      CheckKeys(root, "recipe",
                {"name", "args", "source_date_epoch", "from", "env", "steps", "config", "stages"}));
  if (root["name"]) {
    IMGTOOL_ASSIGN_OR_RETURN(recipe.name, String(root["name"], "name"));
  }
  if (root["args"]) {
    IMGTOOL_ASSIGN_OR_RETURN(recipe.args, Mapping(root["args"], "args", true));
  }
  if (root["source_date_epoch"]) {
    IMGTOOL_ASSIGN_OR_RETURN(recipe.source_date_epoch,
                             Integer(root["source_date_epoch"], "source_date_epoch"));
  }
  if (root["stages"]) {
    const YAML::Node stages = root["stages"];
    IMGTOOL_TRY(CheckMap(stages, "stages"));
    for (auto it = stages.begin(); it != stages.end(); ++it) {
      IMGTOOL_ASSIGN_OR_RETURN(std::string name, String(it->first, "stages"));
      if (!IsStageName(name)) {
        return Err(it->first, "stages: " + Quote(name) +
                                  " is not a valid stage name (lowercase letters, digits, . _ -)");
      }
      for (const Stage& other : recipe.stages) {
        if (other.name == name) return Err(it->first, "stages: duplicate stage " + Quote(name));
      }
      IMGTOOL_ASSIGN_OR_RETURN(Stage stage, ParseStage(it->second, name, "stage " + name, false));
      recipe.stages.push_back(std::move(stage));
    }
  }
  if (!root["from"]) {
    return Err(root, "recipe: missing \"from\" (debootstrap, image, rootfs, stage or scratch)");
  }
  IMGTOOL_ASSIGN_OR_RETURN(Stage final_stage, ParseStage(root, "", "recipe", true));
  recipe.stages.push_back(std::move(final_stage));
  IMGTOOL_TRY(CheckStageRefs(recipe));
  return recipe;
}

int CountNodes(const YAML::Node& node, int budget) {
  int count = 1;
  if (node.IsSequence() || node.IsMap()) {
    for (auto it = node.begin(); it != node.end() && count <= budget; ++it) {
      if (node.IsMap()) {
        count += CountNodes(it->first, budget - count);
        count += CountNodes(it->second, budget - count);
      } else {
        count += CountNodes(*it, budget - count);
      }
    }
  }
  return count;
}

}  // namespace

const Stage* Recipe::FindStage(std::string_view name) const {
  for (const Stage& stage : stages) {
    if (stage.name == name) return &stage;
  }
  return nullptr;
}

Error RecipeError(std::string_view file, Location location, std::string_view message) {
  std::string text(file);
  if (location.line > 0) {
    text += ":" + std::to_string(location.line) + ":" + std::to_string(location.column);
  }
  text += ": ";
  text += message;
  return InvalidArgumentError(std::move(text));
}

Result<Recipe> ParseRecipe(std::string_view text, std::string_view file) {
  if (text.size() > kMaxRecipeSize) {
    return RecipeError(file, {},
                       "recipe is " + std::to_string(text.size()) + " bytes, over the limit of " +
                           std::to_string(kMaxRecipeSize));
  }
  try {
    std::string copy(text);
    {
      std::istringstream stream(copy);
      YAML::Parser parser(stream);
      AliasCounter counter;
      while (parser.HandleNextDocument(counter)) {
        if (counter.aliases > kMaxAliases) {
          return RecipeError(file, LocationOf(counter.first_excess),
                             "more than " + std::to_string(kMaxAliases) +
                                 " aliases; refusing a recipe that may expand without bound");
        }
      }
      if (counter.documents > 1) {
        return RecipeError(
            file, {}, "a recipe is one YAML document, found " + std::to_string(counter.documents));
      }
    }
    YAML::Node root = YAML::Load(copy);
    if (!root || root.IsNull()) return RecipeError(file, {1, 1}, "empty recipe");
    if (CountNodes(root, kMaxNodes) > kMaxNodes) {
      return RecipeError(file, {},
                         "more than " + std::to_string(kMaxNodes) +
                             " YAML nodes after alias expansion; refusing it");
    }
    Parser parser(file);
    return parser.Parse(root);
  } catch (const YAML::Exception& e) {
    return RecipeError(file, LocationOf(e.mark), e.msg);
  } catch (const std::exception& e) {
    return RecipeError(file, {}, std::string("invalid YAML: ") + e.what());
  }
}

Result<std::map<std::string, std::string>> ResolveArgs(const Recipe& recipe,
                                                       const std::vector<std::string>& overrides) {
  std::map<std::string, std::string> args;
  for (const auto& [name, value] : recipe.args) args[name] = value;
  for (const std::string& item : overrides) {
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgumentError("--build-arg " + Quote(item) + ": expected NAME=VALUE");
    }
    std::string name = item.substr(0, eq);
    if (!args.count(name)) {
      std::vector<std::string> declared;
      for (const auto& [n, v] : recipe.args) declared.push_back(n);
      return InvalidArgumentError(
          "--build-arg " + name + ": " + recipe.file + " declares no such arg (" +
          (declared.empty() ? "it declares none" : "it declares " + JoinNames(declared)) + ")");
    }
    args[name] = item.substr(eq + 1);
  }
  return args;
}

std::string ExpandVars(std::string_view text, const std::map<std::string, std::string>& vars) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '$' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    if (text[i + 1] == '$') {
      out += '$';
      ++i;
      continue;
    }
    if (text[i + 1] == '{') {
      size_t close = text.find('}', i + 2);
      if (close != std::string_view::npos) {
        std::string name(text.substr(i + 2, close - i - 2));
        auto it = vars.find(name);
        if (it != vars.end()) {
          out += it->second;
          i = close;
          continue;
        }
      }
    }
    out += text[i];
  }
  return out;
}

std::vector<std::string> ReferencedVars(std::string_view text,
                                        const std::map<std::string, std::string>& candidates) {
  std::set<std::string> found;
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] != '$') continue;
    size_t start = i + 1;
    bool braced = text[start] == '{';
    if (braced) ++start;
    size_t end = start;
    while (end < text.size() &&
           (std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '_')) {
      ++end;
    }
    std::string name(text.substr(start, end - start));
    if (candidates.count(name)) found.insert(name);
  }
  return {found.begin(), found.end()};
}

std::string DescribeStep(const Step& step) {
  auto join = [](const std::vector<std::string>& items) {
    std::string out;
    for (const std::string& item : items) out += (out.empty() ? "" : " ") + item;
    return out;
  };
  auto json_list = [](const std::vector<std::string>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ",\"" : "\"") + items[i] + "\"";
    return out + "]";
  };
  auto pairs = [](const KeyValues& values) {
    std::string out;
    for (const auto& [k, v] : values) out += (out.empty() ? "" : " ") + k + "=" + v;
    return out;
  };
  switch (step.kind) {
    case Step::Kind::kRun:
      return "RUN " + (step.exec.empty() ? step.command : json_list(step.exec));
    case Step::Kind::kCopy:
      return "COPY " + (step.copy.from.empty() ? "" : "--from=" + step.copy.from + " ") +
             (step.copy.chown.empty() ? "" : "--chown=" + step.copy.chown + " ") +
             (step.copy.mode.empty() ? "" : "--chmod=" + step.copy.mode + " ") +
             join(step.copy.src) + " " + step.copy.dest;
    case Step::Kind::kEnv:
      return "ENV " + pairs(step.values);
    case Step::Kind::kLabel:
      return "LABEL " + pairs(step.values);
    case Step::Kind::kWorkdir:
      return "WORKDIR " + step.value;
    case Step::Kind::kUser:
      return "USER " + step.value;
    case Step::Kind::kShell:
      return "SHELL " + json_list(step.shell);
  }
  return "?";
}

std::vector<const Stage*> StagesNeededFor(const Recipe& recipe, const Stage& target) {
  std::vector<const Stage*> order;
  std::set<const Stage*> seen;
  std::function<void(const Stage&)> visit = [&](const Stage& stage) {
    if (!seen.insert(&stage).second) return;
    std::vector<std::string> deps;
    if (stage.from.kind == Base::Kind::kStage) deps.push_back(stage.from.stage);
    for (const Step& step : stage.steps) {
      if (step.kind == Step::Kind::kCopy && !step.copy.from.empty()) deps.push_back(step.copy.from);
    }
    for (const std::string& dep : deps) {
      if (const Stage* s = recipe.FindStage(dep); s != nullptr && s != &stage) visit(*s);
    }
    order.push_back(&stage);
  };
  visit(target);
  return order;
}

Result<int64_t> ParseByteSize(std::string_view text) {
  if (text.empty()) return InvalidArgumentError("empty size");
  int64_t multiplier = 1;
  char last = static_cast<char>(std::tolower(static_cast<unsigned char>(text.back())));
  if (last == 'b' && text.size() > 1) {
    text.remove_suffix(1);
    last = static_cast<char>(std::tolower(static_cast<unsigned char>(text.back())));
  }
  if (last == 'k' || last == 'm' || last == 'g') {
    multiplier = last == 'k' ? 1024 : last == 'm' ? 1024 * 1024 : 1024 * 1024 * 1024;
    text.remove_suffix(1);
  }
  if (text.empty() || text.size() > 12 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return InvalidArgumentError("invalid size");
  }
  return static_cast<int64_t>(std::stoll(std::string(text))) * multiplier;
}

}  // namespace imgtool::builder
