// Registry credentials in docker's config format ({"auths":{"REGISTRY":
// {"auth":"base64(user:password)"}}}): imgtool's own file,
// $XDG_CONFIG_HOME/imgtool/auth.json (mode 0600), written by `imgtool login`,
// and docker's ~/.docker/config.json, read as a fallback.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace imgtool::registry {

struct Credentials {
  std::string username;
  std::string password;
};

// $XDG_CONFIG_HOME/imgtool/auth.json, else ~/.config/imgtool/auth.json.
std::filesystem::path DefaultAuthFile();
// ~/.docker/config.json ($DOCKER_CONFIG/config.json when set).
std::filesystem::path DockerConfigFile();

// The keys a registry may be filed under: "docker.io" also as
// "https://index.docker.io/v1/" and friends; "host:5000" also with a scheme.
std::vector<std::string> AuthKeysFor(std::string_view registry);

// Pure: the credentials for `registry` in a config document, nullopt when it
// has none. InvalidArgument for a document that does not parse.
Result<std::optional<Credentials>> FindCredentials(std::string_view config_json,
                                                   std::string_view registry);
// Pure: the document with `registry` set to `credentials` (other keys kept).
Result<std::string> WithCredentials(std::string_view config_json, std::string_view registry,
                                    const Credentials& credentials);
// Pure: the document without `registry`; `removed` says whether it was there.
Result<std::string> WithoutCredentials(std::string_view config_json, std::string_view registry,
                                       bool* removed);

// Reads `auth_file` (default DefaultAuthFile()), then docker's config.
Result<std::optional<Credentials>> LookupCredentials(std::string_view registry,
                                                     const std::filesystem::path& auth_file = {});
// Writes atomically, mode 0600, creating the directory (0700).
Status SaveCredentials(std::string_view registry, const Credentials& credentials,
                       const std::filesystem::path& auth_file = {});
// NotFound when `registry` had no entry.
Status RemoveCredentials(std::string_view registry, const std::filesystem::path& auth_file = {});

// Registries reached over plain HTTP or without TLS verification:
// $XDG_CONFIG_HOME/imgtool/registries.json {"insecure": ["host:port", ...]}
// and $IMGTOOL_INSECURE_REGISTRIES (comma separated).
bool IsInsecureRegistry(std::string_view registry);

}  // namespace imgtool::registry
