// Docker-style image references: "[registry[:port]/]path[:tag][@sha256:hex]",
// normalized the way docker and podman do it, so that "busybox",
// "library/busybox:latest" and "docker.io/library/busybox:latest" are one image.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/digest.h"
#include "common/error.h"

namespace imgtool::store {

inline constexpr std::string_view kDefaultRegistry = "docker.io";
inline constexpr std::string_view kDefaultTag = "latest";
// Docker's limit on the whole "registry/path" name.
inline constexpr size_t kMaxNameLength = 255;

class Reference {
 public:
  // Parses and normalizes; see ParseReference.
  static Result<Reference> Parse(std::string_view text);

  // A reference built from parts that are already known to be valid (e.g. taken
  // from another Reference); checked again, so errors are still possible.
  static Result<Reference> FromParts(std::string_view registry, std::string_view repository,
                                     std::string_view tag, std::optional<Digest> digest);

  // "docker.io", "localhost:5000", "quay.io". Never empty.
  const std::string& registry() const { return registry_; }
  // The path without the registry: "library/busybox", "a/b".
  const std::string& repository() const { return repository_; }
  // "" only when the reference names a digest and no tag.
  const std::string& tag() const { return tag_; }
  const std::optional<Digest>& digest() const { return digest_; }

  // "registry/repository", no tag or digest: "docker.io/library/busybox".
  std::string Name() const;
  // Full normalized form: "docker.io/library/busybox:latest",
  // "localhost:5000/a/b:tag@sha256:...". This is the value of the
  // org.opencontainers.image.ref.name annotation in the store's index.json.
  std::string ToString() const;
  // Short form as docker prints it: "busybox:latest", "user/app:1",
  // "quay.io/x/y:2", "busybox@sha256:..." (docker.io and library/ dropped).
  std::string FamiliarName() const;
  // FamiliarName() without tag and digest: "busybox", "quay.io/x/y".
  std::string FamiliarRepository() const;

  bool IsDockerHub() const { return registry_ == kDefaultRegistry; }

  // Copies with the tag or digest replaced (the other part kept).
  Result<Reference> WithTag(std::string_view tag) const;
  Reference WithDigest(const Digest& digest) const;
  // Copy without the digest; the tag becomes "latest" if there was none.
  Reference WithoutDigest() const;

  friend bool operator==(const Reference&, const Reference&) = default;

 private:
  Reference() = default;

  std::string registry_;
  std::string repository_;
  std::string tag_;
  std::optional<Digest> digest_;
};

// Parses "[registry[:port]/]path[:tag][@sha256:hex]".
//  - The first component is a registry when it contains "." or ":" or is
//    "localhost"; otherwise the registry is docker.io.
//  - "index.docker.io" and "registry-1.docker.io" are docker.io.
//  - One-component docker.io paths get "library/".
//  - Path components are lowercase [a-z0-9] runs joined by ".", "_", "__" or
//    runs of "-", and separated by "/".
//  - Tag grammar [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; "latest" when neither a
//    tag nor a digest is given.
// Errors are InvalidArgument: `invalid reference "Foo:bar": repository name must
// be lowercase`.
Result<Reference> ParseReference(std::string_view text);

// True when `text` is a valid tag on its own ("1.0", "latest").
bool IsValidTag(std::string_view text);

}  // namespace imgtool::store
