// Pure parsers for what registries send and expect: WWW-Authenticate
// challenges, Range/Content-Range/Link headers, URLs, error bodies, base64.
// No I/O; tested on strings.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace imgtool::registry {

struct Challenge {
  std::string scheme;                         // lowercase: "bearer", "basic"
  std::map<std::string, std::string> params;  // keys lowercase: realm, service, scope, error

  std::string Param(const std::string& key) const {
    auto it = params.find(key);
    return it == params.end() ? "" : it->second;
  }
};

// `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"`;
// a header may hold several challenges ("Basic realm=x, Bearer realm=y").
Result<std::vector<Challenge>> ParseWwwAuthenticate(std::string_view header);

// Inclusive byte range.
struct ByteRange {
  int64_t first = 0;
  int64_t last = 0;
};
// An upload's "Range: 0-1023" (also "bytes=0-1023"). "0-0" from a registry
// can mean nothing received or one byte; callers treat it with the upload's
// offset in mind.
Result<ByteRange> ParseRangeHeader(std::string_view header);
// A 206 response's "Content-Range: bytes 100-199/200" (total may be "*").
Result<ByteRange> ParseContentRange(std::string_view header);

// The URL of the rel="next" entry of a Link header
// (`</v2/_catalog?last=b&n=2>; rel="next"`), or "" when there is none.
std::string ParseLinkNext(std::string_view header);

// "https://host:5000" of "https://host:5000/v2/x?y"; "" when not absolute.
std::string UrlOrigin(std::string_view url);
// Resolves a Location header against the URL it answered.
std::string ResolveUrl(std::string_view base, std::string_view location);
// Appends "key=value" with "?" or "&" (value percent-encoded).
std::string AddQuery(std::string_view url, std::string_view key, std::string_view value);
std::string PercentEncode(std::string_view text);

// The message of a registry error body ({"errors":[{"code":..,"message":..}]}):
// "MANIFEST_UNKNOWN: manifest unknown"; "" when the body is not one.
std::string RegistryErrorMessage(std::string_view body);

std::string Base64Encode(std::string_view data);
Result<std::string> Base64Decode(std::string_view text);

}  // namespace imgtool::registry
