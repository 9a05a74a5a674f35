// OCI image-spec (and Docker schema2) documents: descriptors, manifests,
// indexes and image configs. Parsing is strict and pure (JSON text in, struct
// or InvalidArgument naming the JSON path out); serializing is canonical, so the
// same struct always gives the same bytes and therefore the same digest.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/digest.h"
#include "common/error.h"

namespace imgtool::store {

namespace media_type {
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerTarGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerTarZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kOciLayerNondistributableTar =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
inline constexpr std::string_view kOciLayerNondistributableTarGzip =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
inline constexpr std::string_view kOciLayerNondistributableTarZstd =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerTarGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerForeignLayerTarGzip =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
}  // namespace media_type

inline constexpr std::string_view kAnnotationRefName = "org.opencontainers.image.ref.name";
inline constexpr std::string_view kAnnotationCreated = "org.opencontainers.image.created";

// Single-image manifests (OCI or Docker schema2).
bool IsManifestMediaType(std::string_view media_type);
// Multi-platform indexes (OCI index or Docker manifest list).
bool IsIndexMediaType(std::string_view media_type);
bool IsConfigMediaType(std::string_view media_type);
bool IsLayerMediaType(std::string_view media_type);

enum class Compression { kNone, kGzip, kZstd };
// The compression a layer media type implies; InvalidArgument for non-layers.
Result<Compression> LayerCompression(std::string_view media_type);

struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // "amd64", "arm64", ...
  std::string variant;       // "v8", "v7", or ""
  std::string os_version;    // "os.version" (Windows), usually ""
  std::vector<std::string> os_features;

  // "linux/amd64", "linux/arm64/v8".
  std::string ToString() const;
  // "os/arch[/variant]"; InvalidArgument otherwise.
  static Result<Platform> Parse(std::string_view text);
  // os and architecture equal, variant equal when both name one (arm64's "v8"
  // is the default and matches "").
  bool Matches(const Platform& wanted) const;

  friend bool operator==(const Platform&, const Platform&) = default;
};

// The platform this program runs on, from uname(2): linux/amd64 on x86_64,
// linux/arm64/v8 on aarch64, linux/arm/v7 on armv7l, ...
Platform HostPlatform();

struct Descriptor {
  std::string media_type;
  Digest digest;
  int64_t size = 0;
  std::vector<std::string> urls;  // foreign layers only
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;  // entries of an index only
  std::string artifact_type;         // OCI 1.1, usually ""

  // The ref.name annotation, or "" when there is none.
  std::string RefName() const;

  friend bool operator==(const Descriptor&, const Descriptor&) = default;
};

struct Manifest {
  int schema_version = 2;
  std::string media_type;  // optional in OCI, required in Docker schema2
  std::string artifact_type;
  Descriptor config;
  std::vector<Descriptor> layers;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;

  friend bool operator==(const Manifest&, const Manifest&) = default;
};

struct Index {
  int schema_version = 2;
  std::string media_type;  // optional in OCI, required in Docker lists
  std::string artifact_type;
  std::vector<Descriptor> manifests;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;

  friend bool operator==(const Index&, const Index&) = default;
};

// The part of an image config that a container starts from ("config" in the
// JSON). Empty values are omitted when serialized.
struct ContainerConfig {
  std::string user;
  std::vector<std::string> exposed_ports;  // "8080/tcp", sorted, unique
  std::vector<std::string> env;            // "K=V", in order
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> volumes;  // sorted, unique
  std::string working_dir;
  std::map<std::string, std::string> labels;
  std::string stop_signal;

  friend bool operator==(const ContainerConfig&, const ContainerConfig&) = default;
};

struct RootFs {
  std::string type = "layers";
  std::vector<Digest> diff_ids;

  friend bool operator==(const RootFs&, const RootFs&) = default;
};

struct HistoryEntry {
  std::string created;  // RFC 3339, or ""
  std::string created_by;
  std::string author;
  std::string comment;
  bool empty_layer = false;

  friend bool operator==(const HistoryEntry&, const HistoryEntry&) = default;
};

// An image config. The typed fields are what imgtool reads and writes; every
// other field of the original JSON (docker's "container_config", "Healthcheck",
// vendor fields, ...) is kept in `raw` and written back unchanged.
struct ImageConfig {
  std::string created;  // RFC 3339, or ""
  std::string author;
  std::string architecture;
  std::string os;
  std::string variant;
  ContainerConfig config;
  RootFs rootfs;
  std::vector<HistoryEntry> history;

  // The parsed document as it was; Serialize overlays the typed fields on it.
  nlohmann::json raw = nlohmann::json::object();

  Platform platform() const { return Platform{os, architecture, variant, {}, {}}; }
  // Env lookup: the value of "KEY=value", or nullopt.
  std::optional<std::string> GetEnv(std::string_view key) const;
  // Adds or replaces "KEY=value", keeping the order of the other entries.
  void SetEnv(std::string_view key, std::string_view value);
};

// Strict parsers. Errors are InvalidArgument with the JSON path of the fault:
// `layers[2].digest: invalid digest "sha256:zz"`. Callers add which blob.
// Both OCI and Docker schema2 forms are accepted.
Result<Descriptor> ParseDescriptor(std::string_view json);
Result<Manifest> ParseManifest(std::string_view json);
Result<Index> ParseIndex(std::string_view json);
Result<ImageConfig> ParseImageConfig(std::string_view json);

// The media type of a manifest-like document: its "mediaType" field, else a
// guess from its shape ("manifests" -> OCI index, "config"+"layers" -> OCI
// manifest). InvalidArgument when it is neither.
Result<std::string> DetectManifestMediaType(std::string_view json);

// Canonical serializers: compact JSON, keys in a fixed order, empty optional
// fields omitted. The same struct always gives the same bytes.
std::string SerializeDescriptor(const Descriptor& descriptor);
std::string SerializeManifest(const Manifest& manifest);
std::string SerializeIndex(const Index& index);
std::string SerializeImageConfig(const ImageConfig& config);

// JSON forms, for embedding (index.json entries, inspect output).
nlohmann::ordered_json DescriptorToJson(const Descriptor& descriptor);
Result<Descriptor> DescriptorFromJson(const nlohmann::json& json, std::string_view path = "");

}  // namespace imgtool::store
