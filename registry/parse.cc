#include "registry/parse.h"


#include <cctype>
#include <charconv>
#include <nlohmann/json.hpp>

namespace imgtool::registry {

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsTokenChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

Result<int64_t> ParseInt(std::string_view text, std::string_view what) {
  int64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value < 0 || text.empty()) {
    return InvalidArgumentError(std::string(what) + ": not a number: \"" + std::string(text) +
                                "\"");
  }
  return value;
}

Result<ByteRange> ParseFirstLast(std::string_view text, std::string_view what) {
  size_t dash = text.find('-');
  if (dash == std::string_view::npos) {
    return InvalidArgumentError(std::string(what) + ": \"" + std::string(text) +
                                "\" is not FIRST-LAST");
  }
  IMGTOOL_ASSIGN_OR_RETURN(int64_t first, ParseInt(text.substr(0, dash), what));
  IMGTOOL_ASSIGN_OR_RETURN(int64_t last, ParseInt(text.substr(dash + 1), what));
  if (last < first) {
    return InvalidArgumentError(std::string(what) + ": \"" + std::string(text) +
                                "\" ends before it starts");
  }
  return ByteRange{first, last};
}

}  // namespace

Result<std::vector<Challenge>> ParseWwwAuthenticate(std::string_view header) {
  std::vector<Challenge> challenges;
  size_t i = 0;
  auto skip_space = [&] {
    while (i < header.size() && IsSpace(header[i])) ++i;
  };
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError("WWW-Authenticate: " + std::string(why) + " at offset " +
                                std::to_string(i));
  };
  while (true) {
    while (i < header.size() && (IsSpace(header[i]) || header[i] == ',')) ++i;
    if (i >= header.size()) break;
    size_t start = i;
    while (i < header.size() && IsTokenChar(header[i])) ++i;
    if (i == start) return bad("expected an auth scheme");
    Challenge challenge;
    challenge.scheme = Lower(header.substr(start, i - start));
    // Parameters: key=value or key="quoted", separated by commas, until a
    // token that is not followed by '=' (the next challenge's scheme).
    while (true) {
      size_t before = i;
      while (i < header.size() && (IsSpace(header[i]) || header[i] == ',')) ++i;
      size_t key_start = i;
      while (i < header.size() && IsTokenChar(header[i])) ++i;
      if (i == key_start) break;
      std::string key = Lower(header.substr(key_start, i - key_start));
      skip_space();
      if (i >= header.size() || header[i] != '=') {
        i = before;  // the next challenge starts here
        break;
      }
      ++i;
      skip_space();
      std::string value;
      if (i < header.size() && header[i] == '"') {
        ++i;
        bool closed = false;
        while (i < header.size()) {
          char c = header[i++];
          if (c == '\\' && i < header.size()) {
            value += header[i++];
          } else if (c == '"') {
            closed = true;
            break;
          } else {
            value += c;
          }
        }
        if (!closed) return bad("unterminated quoted string");
      } else {
        size_t value_start = i;
        while (i < header.size() && header[i] != ',' && !IsSpace(header[i])) ++i;
        value = std::string(header.substr(value_start, i - value_start));
      }
      challenge.params[key] = std::move(value);
    }
    challenges.push_back(std::move(challenge));
  }
  if (challenges.empty()) return InvalidArgumentError("WWW-Authenticate: empty");
  return challenges;
}

Result<ByteRange> ParseRangeHeader(std::string_view header) {
  if (header.starts_with("bytes=")) header.remove_prefix(6);
  return ParseFirstLast(header, "Range");
}

Result<ByteRange> ParseContentRange(std::string_view header) {
  if (!header.starts_with("bytes ")) {
    return InvalidArgumentError("Content-Range: \"" + std::string(header) + "\" is not bytes");
  }
  header.remove_prefix(6);
  size_t slash = header.find('/');
  if (slash == std::string_view::npos) {
    return InvalidArgumentError("Content-Range: no total length");
  }
  return ParseFirstLast(header.substr(0, slash), "Content-Range");
}

std::string ParseLinkNext(std::string_view header) {
  // <url>; rel="next", <url2>; rel="prev"
  size_t i = 0;
  while (true) {
    size_t open = header.find('<', i);
    if (open == std::string_view::npos) return "";
    size_t close = header.find('>', open);
    if (close == std::string_view::npos) return "";
    size_t end = header.find(",", close);
    std::string params = Lower(header.substr(
        close + 1, end == std::string_view::npos ? std::string_view::npos : end - close - 1));
    if (params.find("rel=\"next\"") != std::string::npos ||
        params.find("rel=next") != std::string::npos) {
      return std::string(header.substr(open + 1, close - open - 1));
    }
    if (end == std::string_view::npos) return "";
    i = end + 1;
  }
}

std::string UrlOrigin(std::string_view url) {
  size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return "";
  size_t path = url.find_first_of("/?#", scheme + 3);
  return Lower(url.substr(0, path));
}

std::string ResolveUrl(std::string_view base, std::string_view location) {
  if (location.find("://") != std::string_view::npos) return std::string(location);
  std::string origin = UrlOrigin(base);
  if (location.starts_with("//")) {
    return origin.substr(0, origin.find("://") + 1) + std::string(location);
  }
  if (location.starts_with("/")) return origin + std::string(location);
  std::string_view path = base.substr(origin.size());
  size_t query = path.find('?');
  if (query != std::string_view::npos) path = path.substr(0, query);
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string_view::npos ? "/" : std::string(path.substr(0, slash + 1));
  return origin + dir + std::string(location);
}

std::string PercentEncode(std::string_view text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string AddQuery(std::string_view url, std::string_view key, std::string_view value) {
  std::string out(url);
  out += url.find('?') == std::string_view::npos ? '?' : '&';
  out += key;
  out += '=';
  out += PercentEncode(value);
  return out;
}

std::string RegistryErrorMessage(std::string_view body) {
  try {
    nlohmann::json json = nlohmann::json::parse(body);
    if (!json.is_object() || !json.contains("errors") || !json["errors"].is_array()) return "";
    std::string out;
    for (const auto& error : json["errors"]) {
      if (!error.is_object()) continue;
      if (!out.empty()) out += "; ";
      if (error.contains("code") && error["code"].is_string()) {
        out += error["code"].get<std::string>();
      }
      if (error.contains("message") && error["message"].is_string()) {
        out += ": " + error["message"].get<std::string>();
      }
    }
    return out;
  } catch (const std::exception&) {
    return "";
  }
}

namespace {

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

std::string Base64Encode(std::string_view data) {
  std::string out;
  out.reserve(4 * ((data.size() + 2) / 3));
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (uint32_t{static_cast<unsigned char>(data[i])} << 16) |
                 (uint32_t{static_cast<unsigned char>(data[i + 1])} << 8) |
                 uint32_t{static_cast<unsigned char>(data[i + 2])};
    for (int shift = 18; shift >= 0; shift -= 6) out += kBase64Alphabet[(v >> shift) & 63];
  }
  size_t rest = data.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t{static_cast<unsigned char>(data[i])} << 16;
    if (rest == 2) v |= uint32_t{static_cast<unsigned char>(data[i + 1])} << 8;
    out += kBase64Alphabet[(v >> 18) & 63];
    out += kBase64Alphabet[(v >> 12) & 63];
    out += rest == 2 ? kBase64Alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  std::string clean;
  for (char c : text) {
    if (!std::isspace(static_cast<unsigned char>(c))) clean += c;
  }
  if (clean.size() % 4 != 0) return InvalidArgumentError("invalid base64");
  size_t pad = 0;
  if (!clean.empty() && clean.back() == '=') ++pad;
  if (clean.size() > 1 && clean[clean.size() - 2] == '=') ++pad;
  std::string out;
  out.reserve(3 * clean.size() / 4);
  for (size_t i = 0; i < clean.size(); i += 4) {
    uint32_t v = 0;
    for (size_t j = 0; j < 4; ++j) {
      bool padding = i + j >= clean.size() - pad;
      int value = padding && clean[i + j] == '=' ? 0 : Base64Value(clean[i + j]);
      if (value < 0) return InvalidArgumentError("invalid base64");
      v = (v << 6) | static_cast<uint32_t>(value);
    }
    out += static_cast<char>(v >> 16);
    out += static_cast<char>((v >> 8) & 0xff);
    out += static_cast<char>(v & 0xff);
  }
  out.resize(out.size() - pad);
  return out;
}

}  // namespace imgtool::registry
