#include "store/reference.h"

#include <algorithm>
#include <vector>

namespace imgtool::store {

namespace {

constexpr size_t kMaxTagLength = 128;

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsAlnum(char c) { return IsLowerAlnum(c) || IsUpper(c); }
bool IsWordChar(char c) { return IsAlnum(c) || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

bool HasUpper(std::string_view s) { return std::any_of(s.begin(), s.end(), IsUpper); }

// alnum+ ((sep) alnum+)* with sep = "." | "_" | "__" | "-"+ (docker's path
// component grammar).
bool IsValidPathComponent(std::string_view s) {
  size_t i = 0;
  auto alnum_run = [&] {
    size_t start = i;
    while (i < s.size() && IsLowerAlnum(s[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < s.size()) {
    if (s[i] == '.') {
      ++i;
    } else if (s[i] == '_') {
      ++i;
      if (i < s.size() && s[i] == '_') ++i;
    } else if (s[i] == '-') {
      while (i < s.size() && s[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

// [A-Za-z0-9] | [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]
bool IsValidDomainComponent(std::string_view s) {
  if (s.empty() || !IsAlnum(s.front()) || !IsAlnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsAlnum(c) || c == '-'; });
}

bool IsValidPort(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsDigit);
}

// host[:port] where host is dotted domain components or a bracketed IPv6
// address.
bool IsValidDomain(std::string_view s) {
  std::string_view host = s;
  if (s.starts_with('[')) {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close < 2) return false;
    std::string_view addr = s.substr(1, close - 1);
    if (!std::all_of(addr.begin(), addr.end(), [](char c) { return IsHex(c) || c == ':'; })) {
      return false;
    }
    std::string_view rest = s.substr(close + 1);
    if (rest.empty()) return true;
    return rest.front() == ':' && IsValidPort(rest.substr(1));
  }
  size_t colon = s.find(':');
  if (colon != std::string_view::npos) {
    if (!IsValidPort(s.substr(colon + 1))) return false;
    host = s.substr(0, colon);
  }
  size_t i = 0;
  while (true) {
    size_t dot = host.find('.', i);
    std::string_view part = host.substr(i, dot == std::string_view::npos ? dot : dot - i);
    if (!IsValidDomainComponent(part)) return false;
    if (dot == std::string_view::npos) return true;
    i = dot + 1;
  }
}

bool Is64Hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(),
                                       [](char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); });
}

Error Invalid(std::string_view text, std::string_view why) {
  // Keep the line short even for absurd input.
  std::string shown(text.substr(0, 300));
  if (text.size() > 300) shown += "...";
  return InvalidArgumentError("invalid reference \"" + shown + "\": " + std::string(why));
}

Status ValidateRepository(std::string_view text, std::string_view repository) {
  size_t i = 0;
  while (true) {
    size_t slash = repository.find('/', i);
    std::string_view part =
        repository.substr(i, slash == std::string_view::npos ? slash : slash - i);
    if (part.empty()) return Invalid(text, "repository name has an empty path component");
    if (!IsValidPathComponent(part)) {
      if (HasUpper(part)) return Invalid(text, "repository name must be lowercase");
      return Invalid(text, "invalid repository path component \"" + std::string(part) + "\"");
    }
    if (slash == std::string_view::npos) return OkStatus();
    i = slash + 1;
  }
}

std::string NormalizeRegistry(std::string_view registry) {
  if (registry == "index.docker.io" || registry == "registry-1.docker.io") {
    return std::string(kDefaultRegistry);
  }
  return std::string(registry);
}

}  // namespace

bool IsValidTag(std::string_view text) {
  if (text.empty() || text.size() > kMaxTagLength || !IsWordChar(text.front())) return false;
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return IsWordChar(c) || c == '.' || c == '-'; });
}

Result<Reference> ParseReference(std::string_view text) { return Reference::Parse(text); }

Result<Reference> Reference::Parse(std::string_view text) {
  if (text.empty()) return Invalid(text, "empty reference");
  if (Is64Hex(text)) {
    return Invalid(text, "a 64-digit hex string is an image ID, not a repository name");
  }

  std::string_view rest = text;
  std::optional<Digest> digest;
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    Result<Digest> parsed = Digest::Parse(rest.substr(at + 1));
    if (!parsed) return Invalid(text, parsed.error().message());
    digest = std::move(parsed).value();
    rest = rest.substr(0, at);
  }

  std::string_view tag;
  size_t last_slash = rest.rfind('/');
  size_t tag_colon = rest.rfind(':');
  if (tag_colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || tag_colon > last_slash)) {
    tag = rest.substr(tag_colon + 1);
    rest = rest.substr(0, tag_colon);
    if (tag.size() > kMaxTagLength) {
      return Invalid(text, "tag is longer than " + std::to_string(kMaxTagLength) + " characters");
    }
    if (!IsValidTag(tag)) {
      return Invalid(text,
                     "invalid tag \"" + std::string(tag) + "\" (want [A-Za-z0-9_][A-Za-z0-9_.-]*)");
    }
  }

  if (rest.empty()) return Invalid(text, "repository name is empty");
  if (rest.size() > kMaxNameLength) {
    return Invalid(
        text, "repository name is longer than " + std::to_string(kMaxNameLength) + " characters");
  }

  // Docker's rule: the first component names a registry when it looks like a
  // host (has "." or ":", is "localhost", or has uppercase, which a path
  // component cannot).
  std::string_view registry = kDefaultRegistry;
  std::string_view path = rest;
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    std::string_view first = rest.substr(0, slash);
    if (first.find_first_of(".:") != std::string_view::npos || first == "localhost" ||
        HasUpper(first)) {
      if (!IsValidDomain(first)) {
        return Invalid(text, "invalid registry \"" + std::string(first) + "\"");
      }
      registry = first;
      path = rest.substr(slash + 1);
    }
  }
  if (path.empty()) return Invalid(text, "repository name is empty");
  IMGTOOL_TRY(ValidateRepository(text, path));

  Reference ref;
  ref.registry_ = NormalizeRegistry(registry);
  ref.repository_ = std::string(path);
  if (ref.registry_ == kDefaultRegistry && path.find('/') == std::string_view::npos) {
    ref.repository_ = "library/" + ref.repository_;
  }
  ref.tag_ = std::string(tag);
  if (ref.tag_.empty() && !digest) ref.tag_ = std::string(kDefaultTag);
  ref.digest_ = std::move(digest);
  return ref;
}

Result<Reference> Reference::FromParts(std::string_view registry, std::string_view repository,
                                       std::string_view tag, std::optional<Digest> digest) {
  std::string text = std::string(registry) + "/" + std::string(repository);
  if (!tag.empty()) text += ":" + std::string(tag);
  if (digest) text += "@" + digest->ToString();
  return Parse(text);
}

std::string Reference::Name() const { return registry_ + "/" + repository_; }

std::string Reference::ToString() const {
  std::string out = Name();
  if (!tag_.empty()) out += ":" + tag_;
  if (digest_) out += "@" + digest_->ToString();
  return out;
}

std::string Reference::FamiliarRepository() const {
  if (registry_ != kDefaultRegistry) return Name();
  constexpr std::string_view kLibrary = "library/";
  std::string_view repo = repository_;
  if (repo.starts_with(kLibrary) && repo.find('/', kLibrary.size()) == std::string_view::npos) {
    repo.remove_prefix(kLibrary.size());
  }
  return std::string(repo);
}

std::string Reference::FamiliarName() const {
  std::string out = FamiliarRepository();
  if (!tag_.empty()) out += ":" + tag_;
  if (digest_) out += "@" + digest_->ToString();
  return out;
}

Result<Reference> Reference::WithTag(std::string_view tag) const {
  if (!IsValidTag(tag)) {
    return InvalidArgumentError("invalid tag \"" + std::string(tag.substr(0, 200)) + "\"");
  }
  Reference copy = *this;
  copy.tag_ = std::string(tag);
  return copy;
}

Reference Reference::WithDigest(const Digest& digest) const {
  Reference copy = *this;
  copy.digest_ = digest;
  return copy;
}

Reference Reference::WithoutDigest() const {
  Reference copy = *this;
  copy.digest_.reset();
  if (copy.tag_.empty()) copy.tag_ = std::string(kDefaultTag);
  return copy;
}

}  // namespace imgtool::store
