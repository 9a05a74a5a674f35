#include "runner/process_spec.h"

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

Status ValidateContainerId(std::string_view id) {
  if (id.empty() || id.size() > 64) {
    return InvalidArgumentError("container id \"" + std::string(id) + "\": 1 to 64 characters");
  }
  bool ok = std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
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
