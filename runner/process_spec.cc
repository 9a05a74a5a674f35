#include "runner/process_spec.h"

#include <sys/resource.h>

#include <algorithm>

#include "common/log.h"

namespace imgtool::runner {

std::optional<std::string> LookupEnv(const std::vector<std::string>& env, std::string_view key) {
  for (const std::string& entry : env) {
    if (entry.size() > key.size() && entry.compare(0, key.size(), key) == 0 &&
        entry[key.size()] == '=') {
      return entry.substr(key.size() + 1);
    }
  }
  return std::nullopt;
}

void SetEnv(std::vector<std::string>* env, std::string_view key, std::string_view value) {
  std::string entry = StrCat(key, "=", value);
  for (std::string& existing : *env) {
    if (existing.size() > key.size() && existing.compare(0, key.size(), key) == 0 &&
        existing[key.size()] == '=') {
      existing = std::move(entry);
      return;
    }
  }
  env->push_back(std::move(entry));
}

std::vector<std::string> EnvWithDefaults(std::vector<std::string> env, std::string_view hostname,
                                         std::string_view home, bool terminal) {
  if (!LookupEnv(env, "PATH")) SetEnv(&env, "PATH", kDefaultPath);
  if (!LookupEnv(env, "HOSTNAME") && !hostname.empty()) SetEnv(&env, "HOSTNAME", hostname);
  if (!LookupEnv(env, "HOME")) SetEnv(&env, "HOME", home.empty() ? "/" : home);
  if (terminal && !LookupEnv(env, "TERM")) SetEnv(&env, "TERM", "xterm");
  return env;
}

namespace {

struct UlimitEntry {
  const char* name;
  int resource;
};
constexpr UlimitEntry kUlimits[] = {
    {"core", RLIMIT_CORE},         {"cpu", RLIMIT_CPU},
    {"data", RLIMIT_DATA},         {"fsize", RLIMIT_FSIZE},
    {"locks", RLIMIT_LOCKS},       {"memlock", RLIMIT_MEMLOCK},
    {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
    {"nofile", RLIMIT_NOFILE},     {"nproc", RLIMIT_NPROC},
    {"rss", RLIMIT_RSS},           {"rtprio", RLIMIT_RTPRIO},
    {"rttime", RLIMIT_RTTIME},     {"sigpending", RLIMIT_SIGPENDING},
    {"stack", RLIMIT_STACK},       {"as", RLIMIT_AS},
};

// A non-negative count, or "unlimited" / "-1".
std::optional<uint64_t> UlimitValue(std::string_view text) {
  if (text == "unlimited" || text == "-1") return uint64_t{RLIM_INFINITY};
  if (text.empty() || text.size() > 19) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  return value;
}

}  // namespace

Result<ResourceLimit> ParseUlimit(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(StrCat("--ulimit \"", text, "\": ", why));
  };
  size_t eq = text.find('=');
  if (eq == std::string_view::npos) return bad("want NAME=SOFT[:HARD]");
  std::string_view name = text.substr(0, eq);
  const UlimitEntry* entry = nullptr;
  for (const UlimitEntry& known : kUlimits) {
    if (name == known.name) entry = &known;
  }
  if (entry == nullptr) return bad("unknown limit \"" + std::string(name) + "\"");
  std::string_view values = text.substr(eq + 1);
  size_t colon = values.find(':');
  std::optional<uint64_t> soft = UlimitValue(values.substr(0, colon));
  std::optional<uint64_t> hard =
      colon == std::string_view::npos ? soft : UlimitValue(values.substr(colon + 1));
  if (!soft || !hard) return bad("want numbers or \"unlimited\", as SOFT[:HARD]");
  if (*soft > *hard) return bad("the soft limit is above the hard one");
  return ResourceLimit{entry->resource, *soft, *hard};
}

const char* UlimitName(int resource) noexcept {
  for (const UlimitEntry& known : kUlimits) {
    if (known.resource == resource) return known.name;
  }
  return "?";
}

Status ValidateContainerId(std::string_view id) {
  if (id.empty() || id.size() > 64) {
    return InvalidArgumentError("container id \"" + std::string(id) + "\": 1 to 64 characters");
  }
  bool ok = std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
  if (!ok || id == "." || id == ".." || id.front() == '.' || id.front() == '-') {
    return InvalidArgumentError("container id \"" + std::string(id) +
                                "\": only letters, digits, '_', '.', '-', not first '.' or '-'");
  }
  return OkStatus();
}

Status ValidateContainerSpec(const ContainerSpec& spec) {
  IMGTOOL_TRY(ValidateContainerId(spec.id));
  if (spec.process.args.empty() || spec.process.args[0].empty()) {
    return InvalidArgumentError("container " + spec.id + ": no command to run");
  }
  if (spec.rootfs_dir.empty() || !spec.rootfs_dir.is_absolute()) {
    return InvalidArgumentError("container " + spec.id + ": rootfs dir \"" +
                                spec.rootfs_dir.string() + "\" must be an absolute path");
  }
  if (spec.process.cwd.empty() || spec.process.cwd.front() != '/') {
    return InvalidArgumentError("working dir \"" + spec.process.cwd + "\" must be absolute");
  }
  for (const std::string& entry : spec.process.env) {
    size_t eq = entry.find('=');
    if (eq == 0 || eq == std::string::npos) {
      return InvalidArgumentError("environment entry \"" + entry + "\" is not KEY=VALUE");
    }
  }
  for (const VolumeMount& volume : spec.volumes) {
    std::string what = "volume \"" + volume.source + ":" + volume.destination + "\"";
    if (volume.source.empty() || volume.source.front() != '/') {
      return InvalidArgumentError(what + ": host path must be absolute");
    }
    if (volume.destination.empty() || volume.destination.front() != '/') {
      return InvalidArgumentError(what + ": container path must be absolute");
    }
    if (volume.destination == "/") {
      return InvalidArgumentError(what + ": can not mount over the container's /");
    }
  }
  for (const TmpfsMount& tmpfs : spec.tmpfs) {
    if (tmpfs.destination.size() < 2 || tmpfs.destination.front() != '/') {
      return InvalidArgumentError("tmpfs \"" + tmpfs.destination +
                                  "\": path must be absolute and not /");
    }
  }
  return OkStatus();
}

}  // namespace imgtool::runner
