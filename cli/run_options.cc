#include "cli/run_options.h"

#include <signal.h>
#include <string.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "runner/network.h"
#include "runner/rootfs.h"
#include "runner/userns_alloc.h"

namespace imgtool::cli {

namespace {

std::string Upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

template <typename T>
std::optional<T> ParseNumber(std::string_view text) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// A decimal number as std::from_chars reads one ("2", "1.5", ".5", "1e3",
// "-0.5"), through strtod: libstdc++'s from_chars for double is the one
// function imgtool would load libm for (its rounding-mode calls), at every
// start.
std::optional<double> ParseDecimal(std::string_view text) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  size_t i = 0;
  if (i < text.size() && text[i] == '-') ++i;
  size_t digits = 0;
  bool dot = false;
  for (; i < text.size(); ++i) {
    if (digit(text[i])) {
      ++digits;
    } else if (text[i] == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
  }
  if (digits == 0) return std::nullopt;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    size_t exponent_digits = 0;
    for (; i < text.size() && digit(text[i]); ++i) ++exponent_digits;
    if (exponent_digits == 0) return std::nullopt;
  }
  if (i != text.size()) return std::nullopt;
  std::string copy(text);
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size() || errno == ERANGE) return std::nullopt;
  return value;
}

}  // namespace

Result<UsernsFlag> ParseUsernsFlag(std::string_view text) {
  UsernsFlag flag;
  if (text.empty() || text == "host") return flag;
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError("--userns \"" + std::string(text) + "\": " + std::string(why));
  };
  if (text != "auto" && !text.starts_with("auto:")) return bad("want auto[:OPTIONS] or host");
  flag.mode = runner::UserNamespaceMode::kAuto;
  if (text == "auto") return flag;
  std::string_view rest = text.substr(5);
  while (true) {
    size_t comma = rest.find(',');
    std::string_view option = rest.substr(0, comma);
    size_t eq = option.find('=');
    std::string_view key = option.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? "" : option.substr(eq + 1);
    if (key == "size") {
      std::optional<uint32_t> size = ParseNumber<uint32_t>(value);
      if (!size || *size == 0) return bad("size=" + std::string(value) + ": want 1 to 4294967295");
      flag.size = size;
    } else if (key == "uidmapping" || key == "gidmapping") {
      std::optional<uint32_t> fields[3];
      std::string_view field_rest = value;
      for (int i = 0; i < 3; ++i) {
        size_t colon = field_rest.find(':');
        if ((colon == std::string_view::npos) != (i == 2)) break;
        fields[i] = ParseNumber<uint32_t>(field_rest.substr(0, colon));
        if (i < 2) field_rest = field_rest.substr(colon + 1);
      }
      if (!fields[0] || !fields[1] || !fields[2]) {
        return bad(std::string(key) + "=" + std::string(value) + ": want CONTAINER:HOST:SIZE");
      }
      auto& lines = key == "uidmapping" ? flag.extra_uids : flag.extra_gids;
      lines.push_back({*fields[0], *fields[1], *fields[2]});
      if (Status valid = runner::ValidateExtraIdMaps(lines, key); !valid) {
        return bad(valid.error().message());
      }
    } else {
      return bad("unknown option \"" + std::string(option) +
                 "\" (want size=, uidmapping= or gidmapping=)");
    }
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  return flag;
}

Result<int64_t> ParseByteSize(std::string_view text) {
  std::string_view digits = text;
  int64_t unit = 1;
  if (!digits.empty()) {
    char last = static_cast<char>(std::tolower(static_cast<unsigned char>(digits.back())));
    // "64mb" and "64m" alike, as docker accepts both.
    if (last == 'b' && digits.size() >= 2 &&
        std::strchr("kmgt", std::tolower(static_cast<unsigned char>(digits[digits.size() - 2])))) {
      digits.remove_suffix(1);
      last = static_cast<char>(std::tolower(static_cast<unsigned char>(digits.back())));
    }
    switch (last) {
      case 'b':
        unit = 1;
        break;
      case 'k':
        unit = int64_t{1} << 10;
        break;
      case 'm':
        unit = int64_t{1} << 20;
        break;
      case 'g':
        unit = int64_t{1} << 30;
        break;
      case 't':
        unit = int64_t{1} << 40;
        break;
      default:
        unit = 0;
    }
    if (unit != 0) digits.remove_suffix(1);
    if (unit == 0) unit = 1;
  }
  std::optional<double> number = ParseDecimal(digits);
  if (!number || !std::isfinite(*number) || *number <= 0 ||
      *number * static_cast<double>(unit) > 9.0e18) {
    return InvalidArgumentError("invalid size \"" + std::string(text) +
                                "\" (a positive number with an optional unit b, k, m, g)");
  }
  return static_cast<int64_t>(*number * static_cast<double>(unit));
}

Result<int> ParseSignal(std::string_view text) {
  if (std::optional<int> number = ParseNumber<int>(text)) {
    if (*number >= 1 && *number <= SIGRTMAX) return *number;
  } else {
    std::string name = Upper(text);
    if (name.starts_with("SIG")) name.erase(0, 3);
    for (int sig = 1; sig < SIGRTMIN; ++sig) {
      const char* abbrev = ::sigabbrev_np(sig);
      if (abbrev != nullptr && name == abbrev) return sig;
    }
  }
  return InvalidArgumentError("invalid signal \"" + std::string(text) + "\"");
}

Result<runner::VolumeMount> ParseVolume(std::string_view text) {
  runner::VolumeMount volume;
  std::string what = "volume \"" + std::string(text) + "\"";
  size_t first = text.find(':');
  if (first == std::string_view::npos) {
    return InvalidArgumentError(what + ": want HOST-PATH:CONTAINER-PATH[:ro]");
  }
  volume.source = std::string(text.substr(0, first));
  std::string_view rest = text.substr(first + 1);
  size_t second = rest.find(':');
  volume.destination = std::string(rest.substr(0, second));
  if (second != std::string_view::npos) {
    std::string_view options = rest.substr(second + 1);
    while (!options.empty()) {
      size_t comma = options.find(',');
      std::string_view option = options.substr(0, comma);
      if (option == "ro") {
        volume.read_only = true;
      } else if (option == "rw") {
        volume.read_only = false;
      } else if (!option.empty()) {
        return InvalidArgumentError(what + ": unknown option \"" + std::string(option) +
                                    "\" (ro or rw)");
      }
      if (comma == std::string_view::npos) break;
      options.remove_prefix(comma + 1);
    }
  }
  if (volume.source.empty() || volume.source.front() != '/') {
    return InvalidArgumentError(what +
                                ": the host path must be absolute (named volumes are not"
                                " supported)");
  }
  if (volume.destination.empty() || volume.destination.front() != '/') {
    return InvalidArgumentError(what + ": the container path must be absolute");
  }
  return volume;
}

Result<runner::TmpfsMount> ParseTmpfs(std::string_view text) {
  runner::TmpfsMount tmpfs;
  size_t colon = text.find(':');
  tmpfs.destination = std::string(text.substr(0, colon));
  if (colon != std::string_view::npos) tmpfs.options = std::string(text.substr(colon + 1));
  if (tmpfs.destination.size() < 2 || tmpfs.destination.front() != '/') {
    return InvalidArgumentError("tmpfs \"" + std::string(text) +
                                "\": the path must be absolute and not /");
  }
  IMGTOOL_TRY(runner::ParseTmpfsOptions(tmpfs.options).Wrap("tmpfs \"" + std::string(text) + "\""));
  return tmpfs;
}

std::vector<std::string> ParseEnvFile(std::string_view text,
                                      const std::function<const char*(const char*)>& lookup) {
  std::vector<std::string> env;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t first = 0;
    while (first < line.size() && (line[first] == ' ' || line[first] == '\t')) ++first;
    line.remove_prefix(first);
    if (line.empty() || line.front() == '#') continue;
    if (line.find('=') != std::string_view::npos) {
      env.emplace_back(line);
      continue;
    }
    std::string key(line);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    if (const char* value = lookup ? lookup(key.c_str()) : nullptr) {
      env.push_back(key + "=" + value);
    }
  }
  return env;
}

Status ValidateContainerName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 64 && std::isalnum(static_cast<unsigned char>(name[0]));
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      ok = false;
    }
  }
  if (!ok) {
    return InvalidArgumentError("invalid container name \"" + std::string(name) +
                                "\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 64");
  }
  return OkStatus();
}

Result<runner::ProcessSpec> MergeProcess(const store::ContainerConfig& image, const RunFlags& flags,
                                         const std::vector<std::string>& env_from_files,
                                         const std::function<const char*(const char*)>& lookup) {
  runner::ProcessSpec process;
  std::vector<std::string> entrypoint = image.entrypoint;
  std::vector<std::string> cmd = image.cmd;
  if (flags.entrypoint) {
    // Docker: a new entrypoint resets the image's Cmd too.
    entrypoint.clear();
    if (!flags.entrypoint->empty()) entrypoint.push_back(*flags.entrypoint);
    cmd.clear();
  }
  if (!flags.command.empty()) cmd = flags.command;
  process.args = entrypoint;
  process.args.insert(process.args.end(), cmd.begin(), cmd.end());
  if (process.args.empty()) {
    return InvalidArgumentError("no command: the image \"" + flags.image +
                                "\" has no Entrypoint or Cmd, so give one after the image");
  }

  process.env = image.env;
  auto add = [&](const std::string& entry) -> Status {
    size_t eq = entry.find('=');
    if (eq == 0) return InvalidArgumentError("invalid environment entry \"" + entry + "\"");
    if (eq == std::string::npos) {
      const char* value = lookup ? lookup(entry.c_str()) : nullptr;
      if (value != nullptr) runner::SetEnv(&process.env, entry, value);
      return OkStatus();
    }
    runner::SetEnv(&process.env, entry.substr(0, eq), entry.substr(eq + 1));
    return OkStatus();
  };
  for (const std::string& entry : env_from_files) IMGTOOL_TRY(add(entry));
  for (const std::string& entry : flags.env) IMGTOOL_TRY(add(entry));

  process.cwd = !flags.workdir.empty()       ? flags.workdir
                : !image.working_dir.empty() ? image.working_dir
                                             : "/";
  if (process.cwd.front() != '/') {
    return InvalidArgumentError("working dir \"" + process.cwd + "\" must be an absolute path");
  }
  process.user = flags.user ? *flags.user : image.user;
  process.terminal = flags.tty;
  return process;
}

Result<std::vector<runner::ResourceLimit>> ParseUlimits(const std::vector<std::string>& texts) {
  std::vector<runner::ResourceLimit> limits;
  for (const std::string& text : texts) {
    IMGTOOL_ASSIGN_OR_RETURN(runner::ResourceLimit limit, runner::ParseUlimit(text));
    std::erase_if(limits,
                  [&](const runner::ResourceLimit& l) { return l.resource == limit.resource; });
    limits.push_back(limit);
  }
  return limits;
}

Result<runner::ContainerSpec> BuildContainerSpec(const RunFlags& flags,
                                                 runner::ProcessSpec process) {
  runner::ContainerSpec spec;
  spec.process = std::move(process);
  IMGTOOL_ASSIGN_OR_RETURN(spec.process.rlimits, ParseUlimits(flags.ulimits));
  spec.hostname = flags.hostname;
  for (const std::string& text : flags.volumes) {
    IMGTOOL_ASSIGN_OR_RETURN(runner::VolumeMount volume, ParseVolume(text));
    spec.volumes.push_back(std::move(volume));
  }
  for (const std::string& text : flags.tmpfs) {
    IMGTOOL_ASSIGN_OR_RETURN(runner::TmpfsMount tmpfs, ParseTmpfs(text));
    spec.tmpfs.push_back(std::move(tmpfs));
  }
  spec.read_only_rootfs = flags.read_only;
  spec.init = flags.init;

  IMGTOOL_ASSIGN_OR_RETURN(UsernsFlag userns, ParseUsernsFlag(flags.userns));
  spec.userns = userns.mode;

  spec.security.privileged = flags.privileged;
  spec.security.cap_add = flags.cap_add;
  spec.security.cap_drop = flags.cap_drop;
  for (const std::string& option : flags.security_opts) {
    if (option == "seccomp=unconfined" || option == "seccomp:unconfined") {
      spec.security.seccomp = runner::SeccompMode::kUnconfined;
    } else if (option.starts_with("seccomp=") || option.starts_with("seccomp:")) {
      spec.security.seccomp = runner::SeccompMode::kProfile;
      spec.security.seccomp_profile = option.substr(8);
      if (spec.security.seccomp_profile.empty()) {
        return InvalidArgumentError("--security-opt seccomp= needs unconfined or a JSON file");
      }
    } else if (option == "no-new-privileges" || option == "no-new-privileges=true" ||
               option == "no-new-privileges:true") {
      spec.security.no_new_privileges = true;
    } else if (option == "no-new-privileges=false" || option == "no-new-privileges:false") {
      spec.security.no_new_privileges = false;
    } else {
      return InvalidArgumentError("--security-opt \"" + option +
                                  "\": want seccomp=unconfined|PROFILE.json or "
                                  "no-new-privileges[=true|false]");
    }
  }

  IMGTOOL_ASSIGN_OR_RETURN(spec.network.mode, runner::ParseNetworkMode(flags.network));
  for (const std::string& text : flags.publish) {
    IMGTOOL_ASSIGN_OR_RETURN(runner::PortMapping mapping, runner::ParsePortMapping(text));
    spec.network.ports.push_back(std::move(mapping));
  }
  if (!spec.network.ports.empty() && spec.network.mode != runner::NetworkMode::kBridge) {
    return InvalidArgumentError("-p needs --net bridge (ports of --net " + flags.network +
                                " can not be published)");
  }
  for (const std::string& entry : flags.add_hosts) {
    size_t colon = entry.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == entry.size()) {
      return InvalidArgumentError("--add-host \"" + entry + "\": want NAME:IP");
    }
    spec.extra_hosts.push_back(entry);
  }

  IMGTOOL_ASSIGN_OR_RETURN(spec.resources, ParseResourceFlags(flags));
  return spec;
}

Result<runner::CgroupResources> ParseResourceFlags(const RunFlags& flags) {
  runner::CgroupResources resources;
  if (!flags.memory.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(int64_t bytes, ParseByteSize(flags.memory).Wrap("--memory"));
    resources.memory_bytes = bytes;
  }
  if (!flags.memory_swap.empty()) {
    if (flags.memory_swap == "-1") {
      resources.memory_swap_bytes = -1;
    } else {
      IMGTOOL_ASSIGN_OR_RETURN(int64_t bytes,
                               ParseByteSize(flags.memory_swap).Wrap("--memory-swap"));
      resources.memory_swap_bytes = bytes;
    }
    if (!resources.memory_bytes) {
      return InvalidArgumentError("--memory-swap needs --memory");
    }
    if (*resources.memory_swap_bytes != -1 &&
        *resources.memory_swap_bytes < *resources.memory_bytes) {
      return InvalidArgumentError("--memory-swap must be at least --memory (it is memory+swap)");
    }
  }
  if (!flags.cpus.empty()) {
    std::optional<double> cpus = ParseDecimal(flags.cpus);
    if (!cpus || !std::isfinite(*cpus) || *cpus <= 0) {
      return InvalidArgumentError("--cpus \"" + flags.cpus + "\": want a positive number");
    }
    resources.cpus = *cpus;
  }
  if (flags.cpu_shares) {
    if (*flags.cpu_shares < 2 || *flags.cpu_shares > 262144) {
      return InvalidArgumentError("--cpu-shares: want 2..262144");
    }
    resources.cpu_shares = *flags.cpu_shares;
  }
  if (!flags.cpuset_cpus.empty()) resources.cpuset_cpus = flags.cpuset_cpus;
  if (flags.pids_limit) resources.pids_limit = *flags.pids_limit;
  return resources;
}

}  // namespace imgtool::cli
