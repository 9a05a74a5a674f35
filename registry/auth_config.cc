#include "registry/auth_config.h"

#include <sys/stat.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "registry/parse.h"

namespace imgtool::registry {

namespace {

std::filesystem::path HomeDir() {
  const char* home = std::getenv("HOME");
  return home != nullptr && *home != '\0' ? std::filesystem::path(home)
                                          : std::filesystem::path("/root");
}

std::filesystem::path ConfigDir() {
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  if (xdg != nullptr && *xdg != '\0') return std::filesystem::path(xdg) / "imgtool";
  return HomeDir() / ".config" / "imgtool";
}

Result<nlohmann::json> ParseConfig(std::string_view text) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return nlohmann::json::object();
  }
  try {
    nlohmann::json json = nlohmann::json::parse(text);
    if (!json.is_object()) return InvalidArgumentError("auth config is not a JSON object");
    if (json.contains("auths") && !json["auths"].is_object()) {
      return InvalidArgumentError("auth config: \"auths\" is not an object");
    }
    return json;
  } catch (const nlohmann::json::exception&) {
    // The parser's message may quote the file's content: keep secrets out.
    return InvalidArgumentError("auth config is not valid JSON");
  }
}

std::filesystem::path Resolve(const std::filesystem::path& auth_file) {
  return auth_file.empty() ? DefaultAuthFile() : auth_file;
}

Result<std::string> ReadIfExists(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::string();
  return ReadFileToString(path, 4u << 20);
}

Status WriteConfig(const std::filesystem::path& path, const std::string& text) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) return ErrnoError("create " + path.parent_path().string(), ec.value());
  (void)::chmod(path.parent_path().c_str(), 0700);
  return WriteFileAtomic(path, text, 0600).Wrap("write " + path.string());
}

}  // namespace

std::filesystem::path DefaultAuthFile() { return ConfigDir() / "auth.json"; }

std::filesystem::path DockerConfigFile() {
  const char* docker = std::getenv("DOCKER_CONFIG");
  if (docker != nullptr && *docker != '\0') return std::filesystem::path(docker) / "config.json";
  return HomeDir() / ".docker" / "config.json";
}

std::vector<std::string> AuthKeysFor(std::string_view registry) {
  std::string r(registry);
  if (r == "docker.io") {
    return {"docker.io", "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io",
            "https://registry-1.docker.io"};
  }
  return {r, "https://" + r, "http://" + r, r + "/", "https://" + r + "/", "http://" + r + "/"};
}

Result<std::optional<Credentials>> FindCredentials(std::string_view config_json,
                                                   std::string_view registry) {
  IMGTOOL_ASSIGN_OR_RETURN(nlohmann::json json, ParseConfig(config_json));
  if (!json.contains("auths")) return std::optional<Credentials>();
  const nlohmann::json& auths = json["auths"];
  for (const std::string& key : AuthKeysFor(registry)) {
    if (!auths.contains(key)) continue;
    const nlohmann::json& entry = auths[key];
    if (!entry.is_object()) continue;
    if (entry.contains("auth") && entry["auth"].is_string()) {
      auto decoded = Base64Decode(entry["auth"].get<std::string>());
      if (!decoded) {
        return InvalidArgumentError("auth config: entry \"" + key + "\": \"auth\" is not base64");
      }
      size_t colon = decoded->find(':');
      if (colon == std::string::npos) {
        return InvalidArgumentError("auth config: entry \"" + key +
                                    "\": \"auth\" is not USER:PASSWORD");
      }
      return std::optional<Credentials>(
          Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)});
    }
    if (entry.contains("username") && entry["username"].is_string() && entry.contains("password") &&
        entry["password"].is_string()) {
      return std::optional<Credentials>(
          Credentials{entry["username"].get<std::string>(), entry["password"].get<std::string>()});
    }
  }
  return std::optional<Credentials>();
}

Result<std::string> WithCredentials(std::string_view config_json, std::string_view registry,
                                    const Credentials& credentials) {
  IMGTOOL_ASSIGN_OR_RETURN(nlohmann::json json, ParseConfig(config_json));
  nlohmann::json& auths = json["auths"];
  if (!auths.is_object()) auths = nlohmann::json::object();
  for (const std::string& key : AuthKeysFor(registry)) auths.erase(key);
  auths[std::string(registry)] = {
      {"auth", Base64Encode(credentials.username + ":" + credentials.password)}};
  return json.dump(1, '\t') + "\n";
}

Result<std::string> WithoutCredentials(std::string_view config_json, std::string_view registry,
                                       bool* removed) {
  IMGTOOL_ASSIGN_OR_RETURN(nlohmann::json json, ParseConfig(config_json));
  *removed = false;
  if (json.contains("auths")) {
    for (const std::string& key : AuthKeysFor(registry)) {
      if (json["auths"].erase(key) > 0) *removed = true;
    }
  }
  return json.dump(1, '\t') + "\n";
}

Result<std::optional<Credentials>> LookupCredentials(std::string_view registry,
                                                     const std::filesystem::path& auth_file) {
  for (const std::filesystem::path& path : {Resolve(auth_file), DockerConfigFile()}) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string text, ReadIfExists(path));
    IMGTOOL_ASSIGN_OR_RETURN(std::optional<Credentials> found,
                             FindCredentials(text, registry).Wrap(path.string()));
    if (found) return found;
  }
  return std::optional<Credentials>();
}

Status SaveCredentials(std::string_view registry, const Credentials& credentials,
                       const std::filesystem::path& auth_file) {
  std::filesystem::path path = Resolve(auth_file);
  IMGTOOL_ASSIGN_OR_RETURN(std::string text, ReadIfExists(path));
  IMGTOOL_ASSIGN_OR_RETURN(std::string updated,
                           WithCredentials(text, registry, credentials).Wrap(path.string()));
  return WriteConfig(path, updated);
}

Status RemoveCredentials(std::string_view registry, const std::filesystem::path& auth_file) {
  std::filesystem::path path = Resolve(auth_file);
  IMGTOOL_ASSIGN_OR_RETURN(std::string text, ReadIfExists(path));
  bool removed = false;
  IMGTOOL_ASSIGN_OR_RETURN(std::string updated,
                           WithoutCredentials(text, registry, &removed).Wrap(path.string()));
  if (!removed) return NotFoundError("not logged in to " + std::string(registry));
  return WriteConfig(path, updated);
}

bool IsInsecureRegistry(std::string_view registry) {
  if (const char* env = std::getenv("IMGTOOL_INSECURE_REGISTRIES"); env != nullptr) {
    std::string_view list(env);
    while (!list.empty()) {
      size_t comma = list.find(',');
      if (list.substr(0, comma) == registry) return true;
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  auto text = ReadIfExists(ConfigDir() / "registries.json");
  if (!text || text->empty()) return false;
  try {
    nlohmann::json json = nlohmann::json::parse(*text);
    if (json.contains("insecure") && json["insecure"].is_array()) {
      for (const auto& entry : json["insecure"]) {
        if (entry.is_string() && entry.get<std::string>() == registry) return true;
      }
    }
  } catch (const nlohmann::json::exception&) {
  }
  return false;
}

}  // namespace imgtool::registry
