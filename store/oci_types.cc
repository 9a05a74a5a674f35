#include "store/oci_types.h"

#include <sys/utsname.h>

#include <algorithm>
#include <set>
#include <utility>

namespace imgtool::store {

namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

// JSON paths in errors read like the document: "layers[2].digest".
std::string Join(std::string_view path, std::string_view key) {
  if (path.empty()) return std::string(key);
  return std::string(path) + "." + std::string(key);
}
std::string At(std::string_view path, size_t i) {
  return std::string(path) + "[" + std::to_string(i) + "]";
}

Error Bad(std::string_view path, std::string_view why) {
  if (path.empty()) return InvalidArgumentError(std::string(why));
  return InvalidArgumentError(std::string(path) + ": " + std::string(why));
}

std::string TypeName(const Json& j) { return j.type_name(); }

Result<Json> ParseJsonText(std::string_view text) {
  // Parse without exceptions: a discarded value means a syntax error, and the
  // exception-throwing parse is only used to get the position for the message.
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    try {
      Json ignored = Json::parse(text);
    } catch (const Json::exception& e) {
      return InvalidArgumentError(std::string("malformed JSON: ") + e.what());
    }
    return InvalidArgumentError("malformed JSON");
  }
  return j;
}

Result<const Json*> Object(const Json& j, std::string_view path) {
  if (!j.is_object()) return Bad(path, "want an object, got " + TypeName(j));
  return &j;
}

// A member that must be there.
Result<const Json*> Required(const Json& obj, std::string_view key, std::string_view path) {
  auto it = obj.find(key);
  if (it == obj.end()) return Bad(Join(path, key), "missing");
  return &*it;
}

// nullptr when absent or null.
const Json* Optional(const Json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

Result<std::string> GetString(const Json& j, std::string_view path) {
  if (!j.is_string()) return Bad(path, "want a string, got " + TypeName(j));
  return j.get<std::string>();
}

Result<std::string> RequiredString(const Json& obj, std::string_view key, std::string_view path) {
  IMGTOOL_ASSIGN_OR_RETURN(const Json* j, Required(obj, key, path));
  return GetString(*j, Join(path, key));
}

Result<std::string> OptionalString(const Json& obj, std::string_view key, std::string_view path) {
  const Json* j = Optional(obj, key);
  if (j == nullptr) return std::string();
  return GetString(*j, Join(path, key));
}

Result<std::vector<std::string>> GetStringArray(const Json& j, std::string_view path) {
  if (!j.is_array()) return Bad(path, "want an array of strings, got " + TypeName(j));
  std::vector<std::string> out;
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string s, GetString(j[i], At(path, i)));
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::vector<std::string>> OptionalStringArray(const Json& obj, std::string_view key,
                                                     std::string_view path) {
  const Json* j = Optional(obj, key);
  if (j == nullptr) return std::vector<std::string>();
  return GetStringArray(*j, Join(path, key));
}

Result<std::map<std::string, std::string>> OptionalStringMap(const Json& obj, std::string_view key,
                                                             std::string_view path) {
  std::map<std::string, std::string> out;
  const Json* j = Optional(obj, key);
  if (j == nullptr) return out;
  std::string here = Join(path, key);
  if (!j->is_object()) return Bad(here, "want an object of strings, got " + TypeName(*j));
  for (const auto& [k, v] : j->items()) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string s, GetString(v, Join(here, k)));
    out.emplace(k, std::move(s));
  }
  return out;
}

// The keys of an object used as a set ({"8080/tcp": {}}), sorted.
Result<std::vector<std::string>> OptionalKeySet(const Json& obj, std::string_view key,
                                                std::string_view path) {
  std::vector<std::string> out;
  const Json* j = Optional(obj, key);
  if (j == nullptr) return out;
  if (!j->is_object()) return Bad(Join(path, key), "want an object, got " + TypeName(*j));
  for (const auto& [k, v] : j->items()) out.push_back(k);
  return out;  // nlohmann's object keys are already sorted and unique
}

Result<Digest> GetDigest(const Json& j, std::string_view path) {
  IMGTOOL_ASSIGN_OR_RETURN(std::string s, GetString(j, path));
  Result<Digest> d = Digest::Parse(s);
  if (!d) return Bad(path, "invalid digest \"" + s.substr(0, 100) + "\"");
  return d;
}

Result<int64_t> GetSize(const Json& j, std::string_view path) {
  if (j.is_number_unsigned()) {
    uint64_t v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) return Bad(path, "size is too large");
    return static_cast<int64_t>(v);
  }
  if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < 0) return Bad(path, "size must be >= 0, got " + std::to_string(v));
    return v;
  }
  return Bad(path, "want an integer size, got " + TypeName(j));
}

Status CheckSchemaVersion(const Json& obj) {
  IMGTOOL_ASSIGN_OR_RETURN(const Json* v, Required(obj, "schemaVersion", ""));
  if (!v->is_number_integer()) return Bad("schemaVersion", "want an integer, got " + TypeName(*v));
  if (v->get<int64_t>() != 2) {
    return Bad("schemaVersion", "want 2, got " + std::to_string(v->get<int64_t>()));
  }
  return OkStatus();
}

Result<Platform> PlatformFromJson(const Json& j, std::string_view path) {
  IMGTOOL_TRY(Object(j, path));
  Platform p;
  IMGTOOL_ASSIGN_OR_RETURN(p.architecture, RequiredString(j, "architecture", path));
  IMGTOOL_ASSIGN_OR_RETURN(p.os, RequiredString(j, "os", path));
  IMGTOOL_ASSIGN_OR_RETURN(p.os_version, OptionalString(j, "os.version", path));
  IMGTOOL_ASSIGN_OR_RETURN(p.os_features, OptionalStringArray(j, "os.features", path));
  IMGTOOL_ASSIGN_OR_RETURN(p.variant, OptionalString(j, "variant", path));
  return p;
}

OrderedJson PlatformToJson(const Platform& p) {
  OrderedJson j = OrderedJson::object();
  j["architecture"] = p.architecture;
  j["os"] = p.os;
  if (!p.os_version.empty()) j["os.version"] = p.os_version;
  if (!p.os_features.empty()) j["os.features"] = p.os_features;
  if (!p.variant.empty()) j["variant"] = p.variant;
  return j;
}

OrderedJson MapToJson(const std::map<std::string, std::string>& m) {
  OrderedJson j = OrderedJson::object();
  for (const auto& [k, v] : m) j[k] = v;
  return j;
}

std::string Dump(const OrderedJson& j) {
  // replace: a stray invalid UTF-8 byte in a label must not throw here.
  return j.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

Result<std::optional<Descriptor>> OptionalDescriptor(const Json& obj, std::string_view key,
                                                     std::string_view path) {
  const Json* j = Optional(obj, key);
  if (j == nullptr) return std::optional<Descriptor>();
  IMGTOOL_ASSIGN_OR_RETURN(Descriptor d, DescriptorFromJson(*j, Join(path, key)));
  return std::optional<Descriptor>(std::move(d));
}

Result<std::vector<Descriptor>> DescriptorArray(const Json& obj, std::string_view key) {
  IMGTOOL_ASSIGN_OR_RETURN(const Json* arr, Required(obj, key, ""));
  if (!arr->is_array()) return Bad(key, "want an array, got " + TypeName(*arr));
  std::vector<Descriptor> out;
  out.reserve(arr->size());
  for (size_t i = 0; i < arr->size(); ++i) {
    IMGTOOL_ASSIGN_OR_RETURN(Descriptor d, DescriptorFromJson((*arr)[i], At(key, i)));
    out.push_back(std::move(d));
  }
  return out;
}

Result<Manifest> ManifestFromJson(const Json& j) {
  IMGTOOL_TRY(Object(j, ""));
  IMGTOOL_TRY(CheckSchemaVersion(j));
  Manifest m;
  IMGTOOL_ASSIGN_OR_RETURN(m.media_type, OptionalString(j, "mediaType", ""));
  if (!m.media_type.empty() && !IsManifestMediaType(m.media_type)) {
    return Bad("mediaType", "\"" + m.media_type + "\" is not an image manifest type");
  }
  IMGTOOL_ASSIGN_OR_RETURN(m.artifact_type, OptionalString(j, "artifactType", ""));
  IMGTOOL_ASSIGN_OR_RETURN(const Json* config, Required(j, "config", ""));
  IMGTOOL_ASSIGN_OR_RETURN(m.config, DescriptorFromJson(*config, "config"));
  IMGTOOL_ASSIGN_OR_RETURN(m.layers, DescriptorArray(j, "layers"));
  IMGTOOL_ASSIGN_OR_RETURN(m.subject, OptionalDescriptor(j, "subject", ""));
  IMGTOOL_ASSIGN_OR_RETURN(m.annotations, OptionalStringMap(j, "annotations", ""));
  return m;
}

Result<Index> IndexFromJson(const Json& j) {
  IMGTOOL_TRY(Object(j, ""));
  IMGTOOL_TRY(CheckSchemaVersion(j));
  Index index;
  IMGTOOL_ASSIGN_OR_RETURN(index.media_type, OptionalString(j, "mediaType", ""));
  if (!index.media_type.empty() && !IsIndexMediaType(index.media_type)) {
    return Bad("mediaType", "\"" + index.media_type + "\" is not an image index type");
  }
  IMGTOOL_ASSIGN_OR_RETURN(index.artifact_type, OptionalString(j, "artifactType", ""));
  IMGTOOL_ASSIGN_OR_RETURN(index.manifests, DescriptorArray(j, "manifests"));
  IMGTOOL_ASSIGN_OR_RETURN(index.subject, OptionalDescriptor(j, "subject", ""));
  IMGTOOL_ASSIGN_OR_RETURN(index.annotations, OptionalStringMap(j, "annotations", ""));
  return index;
}

Result<ContainerConfig> ContainerConfigFromJson(const Json& j, std::string_view path) {
  IMGTOOL_TRY(Object(j, path));
  ContainerConfig c;
  IMGTOOL_ASSIGN_OR_RETURN(c.user, OptionalString(j, "User", path));
  IMGTOOL_ASSIGN_OR_RETURN(c.exposed_ports, OptionalKeySet(j, "ExposedPorts", path));
  IMGTOOL_ASSIGN_OR_RETURN(c.env, OptionalStringArray(j, "Env", path));
  IMGTOOL_ASSIGN_OR_RETURN(c.entrypoint, OptionalStringArray(j, "Entrypoint", path));
  IMGTOOL_ASSIGN_OR_RETURN(c.cmd, OptionalStringArray(j, "Cmd", path));
  IMGTOOL_ASSIGN_OR_RETURN(c.volumes, OptionalKeySet(j, "Volumes", path));
  IMGTOOL_ASSIGN_OR_RETURN(c.working_dir, OptionalString(j, "WorkingDir", path));
  IMGTOOL_ASSIGN_OR_RETURN(c.labels, OptionalStringMap(j, "Labels", path));
  IMGTOOL_ASSIGN_OR_RETURN(c.stop_signal, OptionalString(j, "StopSignal", path));
  return c;
}

Result<RootFs> RootFsFromJson(const Json& j, std::string_view path) {
  IMGTOOL_TRY(Object(j, path));
  RootFs r;
  IMGTOOL_ASSIGN_OR_RETURN(r.type, RequiredString(j, "type", path));
  if (r.type != "layers") return Bad(Join(path, "type"), "want \"layers\", got \"" + r.type + "\"");
  IMGTOOL_ASSIGN_OR_RETURN(const Json* ids, Required(j, "diff_ids", path));
  std::string here = Join(path, "diff_ids");
  if (!ids->is_array()) return Bad(here, "want an array, got " + TypeName(*ids));
  for (size_t i = 0; i < ids->size(); ++i) {
    IMGTOOL_ASSIGN_OR_RETURN(Digest d, GetDigest((*ids)[i], At(here, i)));
    r.diff_ids.push_back(std::move(d));
  }
  return r;
}

Result<HistoryEntry> HistoryFromJson(const Json& j, std::string_view path) {
  IMGTOOL_TRY(Object(j, path));
  HistoryEntry h;
  IMGTOOL_ASSIGN_OR_RETURN(h.created, OptionalString(j, "created", path));
  IMGTOOL_ASSIGN_OR_RETURN(h.created_by, OptionalString(j, "created_by", path));
  IMGTOOL_ASSIGN_OR_RETURN(h.author, OptionalString(j, "author", path));
  IMGTOOL_ASSIGN_OR_RETURN(h.comment, OptionalString(j, "comment", path));
  if (const Json* e = Optional(j, "empty_layer")) {
    if (!e->is_boolean()) return Bad(Join(path, "empty_layer"), "want a boolean");
    h.empty_layer = e->get<bool>();
  }
  return h;
}

// Sets obj[key] = value, or removes the key when the value is empty, so that
// "unset" has one spelling in the output.
template <typename T>
void SetOrErase(Json& obj, const std::string& key, const T& value) {
  if (value.empty()) {
    obj.erase(key);
  } else {
    obj[key] = value;
  }
}

void SetKeySet(Json& obj, const std::string& key, const std::vector<std::string>& keys) {
  if (keys.empty()) {
    obj.erase(key);
    return;
  }
  Json set = Json::object();
  for (const std::string& k : keys) set[k] = Json::object();
  obj[key] = std::move(set);
}

}  // namespace

bool IsManifestMediaType(std::string_view media_type) {
  return media_type == media_type::kOciManifest || media_type == media_type::kDockerManifest;
}

bool IsIndexMediaType(std::string_view media_type) {
  return media_type == media_type::kOciIndex || media_type == media_type::kDockerManifestList;
}

bool IsConfigMediaType(std::string_view media_type) {
  return media_type == media_type::kOciConfig || media_type == media_type::kDockerConfig;
}

bool IsLayerMediaType(std::string_view media_type) {
  return LayerCompression(media_type).has_value();
}

Result<Compression> LayerCompression(std::string_view media_type) {
  using namespace media_type;
  if (media_type == kOciLayerTar || media_type == kOciLayerNondistributableTar) {
    return Compression::kNone;
  }
  if (media_type == kOciLayerTarGzip || media_type == kOciLayerNondistributableTarGzip ||
      media_type == kDockerLayerTarGzip || media_type == kDockerForeignLayerTarGzip) {
    return Compression::kGzip;
  }
  if (media_type == kOciLayerTarZstd || media_type == kOciLayerNondistributableTarZstd) {
    return Compression::kZstd;
  }
  return InvalidArgumentError("media type \"" + std::string(media_type.substr(0, 200)) +
                              "\" is not a layer type");
}

std::string Platform::ToString() const {
  std::string out = os + "/" + architecture;
  if (!variant.empty()) out += "/" + variant;
  return out;
}

Result<Platform> Platform::Parse(std::string_view text) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (true) {
    size_t slash = text.find('/', i);
    parts.emplace_back(text.substr(i, slash == std::string_view::npos ? slash : slash - i));
    if (slash == std::string_view::npos) break;
    i = slash + 1;
  }
  bool ok =
      (parts.size() == 2 || parts.size() == 3) &&
      std::none_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); });
  if (!ok) {
    return InvalidArgumentError("invalid platform \"" + std::string(text.substr(0, 100)) +
                                "\": want os/arch[/variant]");
  }
  Platform p;
  p.os = parts[0];
  p.architecture = parts[1];
  if (parts.size() == 3) p.variant = parts[2];
  return p;
}

bool Platform::Matches(const Platform& wanted) const {
  if (os != wanted.os || architecture != wanted.architecture) return false;
  auto normalized = [&](const std::string& v) {
    // arm64 images usually omit the "v8" that is the only arm64 variant in use.
    if (architecture == "arm64" && v == "v8") return std::string();
    return v;
  };
  std::string have = normalized(variant);
  std::string want = normalized(wanted.variant);
  return have.empty() || want.empty() || have == want;
}

Platform HostPlatform() {
  Platform p;
  p.os = "linux";
  struct utsname u {};
  std::string machine = ::uname(&u) == 0 ? u.machine : "x86_64";
  if (machine == "x86_64") {
    p.architecture = "amd64";
  } else if (machine == "aarch64" || machine == "arm64") {
    p.architecture = "arm64";
    p.variant = "v8";
  } else if (machine.starts_with("armv7")) {
    p.architecture = "arm";
    p.variant = "v7";
  } else if (machine.starts_with("armv6")) {
    p.architecture = "arm";
    p.variant = "v6";
  } else if (machine.starts_with("armv5")) {
    p.architecture = "arm";
    p.variant = "v5";
  } else if (machine == "i386" || machine == "i486" || machine == "i586" || machine == "i686") {
    p.architecture = "386";
  } else if (machine == "ppc64le") {
    p.architecture = "ppc64le";
  } else if (machine == "s390x") {
    p.architecture = "s390x";
  } else if (machine == "riscv64") {
    p.architecture = "riscv64";
  } else if (machine == "mips64") {
    p.architecture = "mips64le";  // Linux reports the same name for both endians
  } else if (machine == "loongarch64") {
    p.architecture = "loong64";
  } else {
    p.architecture = machine;
  }
  return p;
}

std::string Descriptor::RefName() const {
  auto it = annotations.find(std::string(kAnnotationRefName));
  return it == annotations.end() ? std::string() : it->second;
}

std::optional<std::string> ImageConfig::GetEnv(std::string_view key) const {
  for (const std::string& kv : config.env) {
    if (kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=') {
      return kv.substr(key.size() + 1);
    }
  }
  return std::nullopt;
}

void ImageConfig::SetEnv(std::string_view key, std::string_view value) {
  std::string entry = std::string(key) + "=" + std::string(value);
  for (std::string& kv : config.env) {
    if (kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=') {
      kv = std::move(entry);
      return;
    }
  }
  config.env.push_back(std::move(entry));
}

Result<Descriptor> DescriptorFromJson(const Json& j, std::string_view path) {
  IMGTOOL_TRY(Object(j, path));
  Descriptor d;
  IMGTOOL_ASSIGN_OR_RETURN(d.media_type, RequiredString(j, "mediaType", path));
  if (d.media_type.empty()) return Bad(Join(path, "mediaType"), "empty");
  IMGTOOL_ASSIGN_OR_RETURN(const Json* digest, Required(j, "digest", path));
  IMGTOOL_ASSIGN_OR_RETURN(d.digest, GetDigest(*digest, Join(path, "digest")));
  IMGTOOL_ASSIGN_OR_RETURN(const Json* size, Required(j, "size", path));
  IMGTOOL_ASSIGN_OR_RETURN(d.size, GetSize(*size, Join(path, "size")));
  IMGTOOL_ASSIGN_OR_RETURN(d.urls, OptionalStringArray(j, "urls", path));
  IMGTOOL_ASSIGN_OR_RETURN(d.annotations, OptionalStringMap(j, "annotations", path));
  if (const Json* p = Optional(j, "platform")) {
    IMGTOOL_ASSIGN_OR_RETURN(Platform platform, PlatformFromJson(*p, Join(path, "platform")));
    d.platform = std::move(platform);
  }
  IMGTOOL_ASSIGN_OR_RETURN(d.artifact_type, OptionalString(j, "artifactType", path));
  return d;
}

OrderedJson DescriptorToJson(const Descriptor& d) {
  OrderedJson j = OrderedJson::object();
  j["mediaType"] = d.media_type;
  if (!d.artifact_type.empty()) j["artifactType"] = d.artifact_type;
  j["digest"] = d.digest.ToString();
  j["size"] = d.size;
  if (!d.urls.empty()) j["urls"] = d.urls;
  if (!d.annotations.empty()) j["annotations"] = MapToJson(d.annotations);
  if (d.platform) j["platform"] = PlatformToJson(*d.platform);
  return j;
}

Result<Descriptor> ParseDescriptor(std::string_view json) {
  IMGTOOL_ASSIGN_OR_RETURN(Json j, ParseJsonText(json));
  return DescriptorFromJson(j, "");
}

Result<Manifest> ParseManifest(std::string_view json) {
  IMGTOOL_ASSIGN_OR_RETURN(Json j, ParseJsonText(json));
  return ManifestFromJson(j);
}

Result<Index> ParseIndex(std::string_view json) {
  IMGTOOL_ASSIGN_OR_RETURN(Json j, ParseJsonText(json));
  return IndexFromJson(j);
}

Result<ImageConfig> ParseImageConfig(std::string_view json) {
  IMGTOOL_ASSIGN_OR_RETURN(Json j, ParseJsonText(json));
  IMGTOOL_TRY(Object(j, ""));
  ImageConfig c;
  IMGTOOL_ASSIGN_OR_RETURN(c.created, OptionalString(j, "created", ""));
  IMGTOOL_ASSIGN_OR_RETURN(c.author, OptionalString(j, "author", ""));
  IMGTOOL_ASSIGN_OR_RETURN(c.architecture, RequiredString(j, "architecture", ""));
  IMGTOOL_ASSIGN_OR_RETURN(c.os, RequiredString(j, "os", ""));
  IMGTOOL_ASSIGN_OR_RETURN(c.variant, OptionalString(j, "variant", ""));
  if (const Json* config = Optional(j, "config")) {
    IMGTOOL_ASSIGN_OR_RETURN(c.config, ContainerConfigFromJson(*config, "config"));
  }
  IMGTOOL_ASSIGN_OR_RETURN(const Json* rootfs, Required(j, "rootfs", ""));
  IMGTOOL_ASSIGN_OR_RETURN(c.rootfs, RootFsFromJson(*rootfs, "rootfs"));
  if (const Json* history = Optional(j, "history")) {
    if (!history->is_array()) return Bad("history", "want an array, got " + TypeName(*history));
    for (size_t i = 0; i < history->size(); ++i) {
      IMGTOOL_ASSIGN_OR_RETURN(HistoryEntry h, HistoryFromJson((*history)[i], At("history", i)));
      c.history.push_back(std::move(h));
    }
  }
  c.raw = std::move(j);
  return c;
}

Result<std::string> DetectManifestMediaType(std::string_view json) {
  IMGTOOL_ASSIGN_OR_RETURN(Json j, ParseJsonText(json));
  IMGTOOL_TRY(Object(j, ""));
  IMGTOOL_ASSIGN_OR_RETURN(std::string media_type, OptionalString(j, "mediaType", ""));
  if (!media_type.empty()) return media_type;
  if (const Json* v = Optional(j, "schemaVersion"); v != nullptr && *v == 1) {
    return Bad("schemaVersion", "Docker schema1 manifests are not supported");
  }
  if (j.contains("manifests")) return std::string(media_type::kOciIndex);
  if (j.contains("config") && j.contains("layers")) return std::string(media_type::kOciManifest);
  return InvalidArgumentError("neither an image manifest nor an image index");
}

std::string SerializeDescriptor(const Descriptor& descriptor) {
  return Dump(DescriptorToJson(descriptor));
}

std::string SerializeManifest(const Manifest& m) {
  OrderedJson j = OrderedJson::object();
  j["schemaVersion"] = m.schema_version;
  if (!m.media_type.empty()) j["mediaType"] = m.media_type;
  if (!m.artifact_type.empty()) j["artifactType"] = m.artifact_type;
  j["config"] = DescriptorToJson(m.config);
  OrderedJson layers = OrderedJson::array();
  for (const Descriptor& d : m.layers) layers.push_back(DescriptorToJson(d));
  j["layers"] = std::move(layers);
  if (m.subject) j["subject"] = DescriptorToJson(*m.subject);
  if (!m.annotations.empty()) j["annotations"] = MapToJson(m.annotations);
  return Dump(j);
}

std::string SerializeIndex(const Index& index) {
  OrderedJson j = OrderedJson::object();
  j["schemaVersion"] = index.schema_version;
  if (!index.media_type.empty()) j["mediaType"] = index.media_type;
  if (!index.artifact_type.empty()) j["artifactType"] = index.artifact_type;
  OrderedJson manifests = OrderedJson::array();
  for (const Descriptor& d : index.manifests) manifests.push_back(DescriptorToJson(d));
  j["manifests"] = std::move(manifests);
  if (index.subject) j["subject"] = DescriptorToJson(*index.subject);
  if (!index.annotations.empty()) j["annotations"] = MapToJson(index.annotations);
  return Dump(j);
}

std::string SerializeImageConfig(const ImageConfig& c) {
  // nlohmann::json keeps object keys sorted, which gives the fixed order; the
  // typed fields are laid over the original document so unknown fields stay.
  Json j = c.raw.is_object() ? c.raw : Json::object();
  SetOrErase(j, "created", c.created);
  SetOrErase(j, "author", c.author);
  j["architecture"] = c.architecture;
  j["os"] = c.os;
  SetOrErase(j, "variant", c.variant);

  Json config = j.contains("config") && j["config"].is_object() ? j["config"] : Json::object();
  const ContainerConfig& cc = c.config;
  SetOrErase(config, "User", cc.user);
  SetKeySet(config, "ExposedPorts", cc.exposed_ports);
  SetOrErase(config, "Env", cc.env);
  SetOrErase(config, "Entrypoint", cc.entrypoint);
  SetOrErase(config, "Cmd", cc.cmd);
  SetKeySet(config, "Volumes", cc.volumes);
  SetOrErase(config, "WorkingDir", cc.working_dir);
  if (cc.labels.empty()) {
    config.erase("Labels");
  } else {
    config["Labels"] = cc.labels;
  }
  SetOrErase(config, "StopSignal", cc.stop_signal);
  // Docker writes nulls for unset fields; drop them so unset has one spelling.
  for (auto it = config.begin(); it != config.end();) {
    it = it->is_null() ? config.erase(it) : std::next(it);
  }
  if (config.empty()) {
    j.erase("config");
  } else {
    j["config"] = std::move(config);
  }

  Json rootfs = j.contains("rootfs") && j["rootfs"].is_object() ? j["rootfs"] : Json::object();
  rootfs["type"] = c.rootfs.type;
  Json ids = Json::array();
  for (const Digest& d : c.rootfs.diff_ids) ids.push_back(d.ToString());
  rootfs["diff_ids"] = std::move(ids);
  j["rootfs"] = std::move(rootfs);

  if (c.history.empty()) {
    j.erase("history");
  } else {
    const Json* old = j.contains("history") && j["history"].is_array() ? &j["history"] : nullptr;
    Json history = Json::array();
    for (size_t i = 0; i < c.history.size(); ++i) {
      const HistoryEntry& h = c.history[i];
      Json e =
          old != nullptr && i < old->size() && (*old)[i].is_object() ? (*old)[i] : Json::object();
      SetOrErase(e, "created", h.created);
      SetOrErase(e, "created_by", h.created_by);
      SetOrErase(e, "author", h.author);
      SetOrErase(e, "comment", h.comment);
      if (h.empty_layer) {
        e["empty_layer"] = true;
      } else {
        e.erase("empty_layer");
      }
      history.push_back(std::move(e));
    }
    j["history"] = std::move(history);
  }
  return Dump(j);
}

}  // namespace imgtool::store
