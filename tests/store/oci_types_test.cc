#include "store/oci_types.h"

#include <gtest/gtest.h>

#include <string>

namespace imgtool::store {
namespace {

using nlohmann::json;

std::string D(char c) { return "sha256:" + std::string(64, c); }

Descriptor MakeDescriptor(std::string_view media_type, char c, int64_t size) {
  Descriptor d;
  d.media_type = std::string(media_type);
  d.digest = *Digest::Parse(D(c));
  d.size = size;
  return d;
}

Manifest SampleManifest() {
  Manifest m;
  m.media_type = std::string(media_type::kOciManifest);
  m.config = MakeDescriptor(media_type::kOciConfig, 'c', 100);
  m.layers.push_back(MakeDescriptor(media_type::kOciLayerTarGzip, '1', 1000));
  m.layers.push_back(MakeDescriptor(media_type::kOciLayerTarZstd, '2', 2000));
  m.layers[1].annotations["z"] = "last";
  m.layers[1].annotations["a"] = "first";
  m.annotations["org.opencontainers.image.created"] = "2024-01-01T00:00:00Z";
  return m;
}

TEST(OciTypesTest, ManifestRoundTripIsByteStable) {
  Manifest m = SampleManifest();
  std::string bytes = SerializeManifest(m);
  Result<Manifest> parsed = ParseManifest(bytes);
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_EQ(*parsed, m);
  EXPECT_EQ(SerializeManifest(*parsed), bytes);
  // Fixed key order, compact, annotations sorted.
  EXPECT_TRUE(bytes.starts_with(R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.)"
                                R"(manifest.v1+json","config":{"mediaType":)"))
      << bytes;
  EXPECT_NE(bytes.find(R"("annotations":{"a":"first","z":"last"})"), std::string::npos) << bytes;
  EXPECT_EQ(bytes.find(' '), std::string::npos);
  EXPECT_EQ(bytes.find('\n'), std::string::npos);
}

TEST(OciTypesTest, SameManifestFromDifferentKeyOrderSerializesIdentically) {
  std::string a = R"({"schemaVersion":2,"config":{"size":1,"digest":")" + D('c') +
                  R"(","mediaType":"application/vnd.oci.image.config.v1+json"},"layers":[]})";
  std::string b = R"({ "layers": [], "config": {"mediaType": "application/vnd.oci.image.config.)"
                  R"(v1+json", "digest": ")" +
                  D('c') + R"(", "size": 1}, "schemaVersion": 2 })";
  Result<Manifest> ma = ParseManifest(a);
  Result<Manifest> mb = ParseManifest(b);
  ASSERT_TRUE(ma && mb);
  EXPECT_EQ(SerializeManifest(*ma), SerializeManifest(*mb));
}

TEST(OciTypesTest, AcceptsDockerSchema2Manifest) {
  std::string text = R"({
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469,
               "digest": ")" +
                     D('c') + R"("},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": 2479, "digest": ")" +
                     D('1') + R"("}]})";
  Result<Manifest> m = ParseManifest(text);
  ASSERT_TRUE(m) << m.error().ToString();
  EXPECT_EQ(m->media_type, media_type::kDockerManifest);
  ASSERT_EQ(m->layers.size(), 1u);
  EXPECT_EQ(m->layers[0].size, 2479);
  EXPECT_EQ(*LayerCompression(m->layers[0].media_type), Compression::kGzip);
}

TEST(OciTypesTest, IndexRoundTripWithPlatforms) {
  Index index;
  index.media_type = std::string(media_type::kOciIndex);
  Descriptor amd = MakeDescriptor(media_type::kOciManifest, 'a', 500);
  amd.platform = Platform{"linux", "amd64", "", "", {}};
  Descriptor arm = MakeDescriptor(media_type::kOciManifest, 'b', 501);
  arm.platform = Platform{"linux", "arm64", "v8", "", {"f1"}};
  index.manifests = {amd, arm};
  std::string bytes = SerializeIndex(index);
  Result<Index> parsed = ParseIndex(bytes);
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_EQ(*parsed, index);
  EXPECT_EQ(SerializeIndex(*parsed), bytes);
  EXPECT_NE(bytes.find(R"("platform":{"architecture":"arm64","os":"linux","os.features":["f1"],)"
                       R"("variant":"v8"})"),
            std::string::npos)
      << bytes;
}

TEST(OciTypesTest, AcceptsDockerManifestList) {
  std::string text = R"({"schemaVersion":2,
    "mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
    "manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
      "size":528,"digest":")" +
                     D('a') + R"(","platform":{"architecture":"arm","os":"linux",
      "variant":"v7"}}]})";
  Result<Index> index = ParseIndex(text);
  ASSERT_TRUE(index) << index.error().ToString();
  ASSERT_EQ(index->manifests.size(), 1u);
  EXPECT_EQ(index->manifests[0].platform->ToString(), "linux/arm/v7");
}

struct RejectCase {
  std::string name;
  std::string json;
  std::string message;
};

class ManifestRejectTest : public ::testing::TestWithParam<RejectCase> {};

TEST_P(ManifestRejectTest, RejectsWithJsonPath) {
  Result<Manifest> m = ParseManifest(GetParam().json);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(m.error().message(), GetParam().message);
}

std::string Layer(std::string digest, std::string size) {
  return R"({"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" + digest +
         R"(","size":)" + size + "}";
}

std::string ManifestWith(std::string layers, std::string extra = "") {
  return R"({"schemaVersion":2,)" + extra +
         R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" + D('c') +
         R"(","size":3},"layers":[)" + layers + "]}";
}

INSTANTIATE_TEST_SUITE_P(
    Table, ManifestRejectTest,
    ::testing::Values(
        RejectCase{"BadDigest",
                   ManifestWith(Layer(D('1'), "1") + "," + Layer(D('2'), "2") + "," +
                                Layer("sha256:zz", "3")),
                   "layers[2].digest: invalid digest \"sha256:zz\""},
        RejectCase{"UppercaseDigest", ManifestWith(Layer("sha256:" + std::string(64, 'A'), "1")),
                   "layers[0].digest: invalid digest \"sha256:" + std::string(64, 'A') + "\""},
        RejectCase{"NegativeSize", ManifestWith(Layer(D('1'), "-5")),
                   "layers[0].size: size must be >= 0, got -5"},
        RejectCase{"FloatSize", ManifestWith(Layer(D('1'), "1.5")),
                   "layers[0].size: want an integer size, got number"},
        RejectCase{"StringSize", ManifestWith(Layer(D('1'), "\"1\"")),
                   "layers[0].size: want an integer size, got string"},
        RejectCase{"MissingLayers",
                   R"({"schemaVersion":2,"config":{"mediaType":"x","digest":")" + D('c') +
                       R"(","size":3}})",
                   "layers: missing"},
        RejectCase{"MissingConfig", R"({"schemaVersion":2,"layers":[]})", "config: missing"},
        RejectCase{"MissingSchemaVersion", R"({"config":{},"layers":[]})",
                   "schemaVersion: missing"},
        RejectCase{"SchemaVersion1", R"({"schemaVersion":1,"layers":[]})",
                   "schemaVersion: want 2, got 1"},
        RejectCase{"MissingMediaTypeInDescriptor",
                   ManifestWith(R"({"digest":")" + D('1') + R"(","size":1})"),
                   "layers[0].mediaType: missing"},
        RejectCase{"MissingSize", ManifestWith(R"({"mediaType":"x","digest":")" + D('1') + R"("})"),
                   "layers[0].size: missing"},
        RejectCase{"IndexMediaType",
                   ManifestWith("", R"("mediaType":"application/vnd.oci.image.index.v1+json",)"),
                   "mediaType: \"application/vnd.oci.image.index.v1+json\" is not an image "
                   "manifest type"},
        RejectCase{"LayersNotArray",
                   R"({"schemaVersion":2,"config":{"mediaType":"x","digest":")" + D('c') +
                       R"(","size":3},"layers":{}})",
                   "layers: want an array, got object"},
        RejectCase{"AnnotationNotString", ManifestWith("", R"("annotations":{"k":1},)"),
                   "annotations.k: want a string, got number"},
        RejectCase{"NotAnObject", "[]", "want an object, got array"}),
    [](const ::testing::TestParamInfo<RejectCase>& info) { return info.param.name; });

TEST(OciTypesTest, MalformedJsonIsInvalidArgument) {
  for (std::string text : {"", "{", "{\"schemaVersion\":2,}", "nul", "{\"a\":1} trailing"}) {
    Result<Manifest> m = ParseManifest(text);
    ASSERT_FALSE(m) << text;
    EXPECT_EQ(m.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(m.error().message().starts_with("malformed JSON")) << m.error().message();
  }
}

TEST(OciTypesTest, IndexRejectsManifestMediaTypeAndBadEntries) {
  Result<Index> a =
      ParseIndex(R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
                 R"("manifests":[]})");
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().message(),
            "mediaType: \"application/vnd.oci.image.manifest.v1+json\" is not an image index type");
  Result<Index> b = ParseIndex(R"({"schemaVersion":2,"manifests":[{"mediaType":"x","digest":")" +
                               D('a') + R"(","size":1,"platform":{"os":"linux"}}]})");
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().message(), "manifests[0].platform.architecture: missing");
}

const char kDockerConfig[] =
    R"({
  "architecture": "amd64",
  "config": {
    "Hostname": "", "Env": ["PATH=/usr/bin", "LANG=C"], "Cmd": ["sh"], "Entrypoint": null,
    "ExposedPorts": {"80/tcp": {}, "443/tcp": {}}, "Labels": {"maintainer": "me"},
    "Volumes": {"/data": {}}, "WorkingDir": "/srv", "User": "1000:1000",
    "StopSignal": "SIGTERM", "Healthcheck": {"Test": ["CMD", "true"]}
  },
  "container_config": {"Hostname": "abc"},
  "created": "2023-05-01T00:00:00Z",
  "docker_version": "20.10.23",
  "history": [{"created": "2023-05-01T00:00:00Z", "created_by": "ADD file"},
              {"created_by": "CMD [\"sh\"]", "empty_layer": true, "x-vendor": 1}],
  "os": "linux",
  "rootfs": {"type": "layers", "diff_ids": [")"
    "sha256:1111111111111111111111111111111111111111111111111111111111111111"
    R"("]}
})";

TEST(OciTypesTest, ImageConfigTypedFields) {
  Result<ImageConfig> c = ParseImageConfig(kDockerConfig);
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_EQ(c->architecture, "amd64");
  EXPECT_EQ(c->os, "linux");
  EXPECT_EQ(c->created, "2023-05-01T00:00:00Z");
  EXPECT_EQ(c->config.env, (std::vector<std::string>{"PATH=/usr/bin", "LANG=C"}));
  EXPECT_EQ(c->config.cmd, std::vector<std::string>{"sh"});
  EXPECT_TRUE(c->config.entrypoint.empty());
  EXPECT_EQ(c->config.exposed_ports, (std::vector<std::string>{"443/tcp", "80/tcp"}));
  EXPECT_EQ(c->config.volumes, std::vector<std::string>{"/data"});
  EXPECT_EQ(c->config.labels.at("maintainer"), "me");
  EXPECT_EQ(c->config.working_dir, "/srv");
  EXPECT_EQ(c->config.user, "1000:1000");
  EXPECT_EQ(c->config.stop_signal, "SIGTERM");
  ASSERT_EQ(c->rootfs.diff_ids.size(), 1u);
  ASSERT_EQ(c->history.size(), 2u);
  EXPECT_TRUE(c->history[1].empty_layer);
  EXPECT_EQ(c->platform().ToString(), "linux/amd64");
  EXPECT_EQ(c->GetEnv("LANG"), "C");
  EXPECT_EQ(c->GetEnv("LAN"), std::nullopt);
}

TEST(OciTypesTest, ImageConfigKeepsUnknownFieldsAndIsCanonical) {
  Result<ImageConfig> c = ParseImageConfig(kDockerConfig);
  ASSERT_TRUE(c);
  c->SetEnv("LANG", "C.UTF-8");
  c->SetEnv("NEW", "1");
  c->config.cmd = {"/bin/app"};
  std::string bytes = SerializeImageConfig(*c);
  json j = json::parse(bytes);
  EXPECT_EQ(j["docker_version"], "20.10.23");
  EXPECT_EQ(j["container_config"]["Hostname"], "abc");
  EXPECT_EQ(j["config"]["Healthcheck"]["Test"][0], "CMD");
  EXPECT_EQ(j["config"]["Env"], json({"PATH=/usr/bin", "LANG=C.UTF-8", "NEW=1"}));
  EXPECT_EQ(j["config"]["Cmd"], json({"/bin/app"}));
  EXPECT_FALSE(j["config"].contains("Entrypoint"));  // null dropped: one spelling of unset
  EXPECT_EQ(j["history"][1]["x-vendor"], 1);
  EXPECT_EQ(j["config"]["ExposedPorts"], json::parse(R"({"443/tcp":{},"80/tcp":{}})"));

  Result<ImageConfig> again = ParseImageConfig(bytes);
  ASSERT_TRUE(again);
  EXPECT_EQ(SerializeImageConfig(*again), bytes);
  EXPECT_EQ(bytes.find('\n'), std::string::npos);
}

TEST(OciTypesTest, MinimalConfigFromScratch) {
  ImageConfig c;
  c.architecture = "amd64";
  c.os = "linux";
  c.rootfs.diff_ids.push_back(Digest::Sha256Of("layer"));
  std::string bytes = SerializeImageConfig(c);
  EXPECT_EQ(bytes, R"({"architecture":"amd64","os":"linux","rootfs":{"diff_ids":[")" +
                       Digest::Sha256Of("layer").ToString() + R"("],"type":"layers"}})");
  EXPECT_TRUE(ParseImageConfig(bytes));
}

TEST(OciTypesTest, ImageConfigRejects) {
  struct Case {
    std::string json;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"os":"linux","rootfs":{"type":"layers","diff_ids":[]}})", "architecture: missing"},
           {R"({"architecture":"amd64","os":"linux"})", "rootfs: missing"},
           {R"({"architecture":"amd64","os":"linux","rootfs":{"type":"x","diff_ids":[]}})",
            "rootfs.type: want \"layers\", got \"x\""},
           {R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["x"]}})",
            "rootfs.diff_ids[0]: invalid digest \"x\""},
           {R"({"architecture":"amd64","os":"linux","config":{"Env":"A=1"},)"
            R"("rootfs":{"type":"layers","diff_ids":[]}})",
            "config.Env: want an array of strings, got string"},
           {R"({"architecture":"amd64","os":"linux","config":{"Cmd":[1]},)"
            R"("rootfs":{"type":"layers","diff_ids":[]}})",
            "config.Cmd[0]: want a string, got number"},
       }) {
    Result<ImageConfig> r = ParseImageConfig(c.json);
    ASSERT_FALSE(r) << c.json;
    EXPECT_EQ(r.error().message(), c.message);
  }
}

TEST(OciTypesTest, DetectManifestMediaType) {
  EXPECT_EQ(*DetectManifestMediaType(ManifestWith("")), media_type::kOciManifest);
  EXPECT_EQ(*DetectManifestMediaType(R"({"schemaVersion":2,"manifests":[]})"),
            media_type::kOciIndex);
  EXPECT_EQ(*DetectManifestMediaType(
                R"({"mediaType":"application/vnd.docker.distribution.manifest.v2+json"})"),
            media_type::kDockerManifest);
  EXPECT_FALSE(DetectManifestMediaType(R"({"schemaVersion":1,"fsLayers":[]})"));
  EXPECT_FALSE(DetectManifestMediaType("\x1f\x8b binary"));
}

TEST(OciTypesTest, MediaTypeClassification) {
  EXPECT_TRUE(IsManifestMediaType(media_type::kDockerManifest));
  EXPECT_TRUE(IsIndexMediaType(media_type::kDockerManifestList));
  EXPECT_TRUE(IsConfigMediaType(media_type::kDockerConfig));
  EXPECT_TRUE(IsLayerMediaType(media_type::kOciLayerTar));
  EXPECT_FALSE(IsLayerMediaType(media_type::kOciConfig));
  EXPECT_EQ(*LayerCompression(media_type::kOciLayerTarZstd), Compression::kZstd);
  EXPECT_EQ(*LayerCompression(media_type::kOciLayerTar), Compression::kNone);
  EXPECT_FALSE(LayerCompression("text/plain"));
}

TEST(OciTypesTest, PlatformParseAndMatch) {
  Result<Platform> p = Platform::Parse("linux/arm64/v8");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->variant, "v8");
  EXPECT_TRUE(p->Matches(Platform{"linux", "arm64", "", "", {}}));
  EXPECT_FALSE(p->Matches(Platform{"linux", "amd64", "", "", {}}));
  Platform armv6{"linux", "arm", "v6", "", {}};
  Platform armv7{"linux", "arm", "v7", "", {}};
  EXPECT_FALSE(armv6.Matches(armv7));
  EXPECT_FALSE(Platform::Parse("linux"));
  EXPECT_FALSE(Platform::Parse("linux//x"));
  EXPECT_EQ(HostPlatform().os, "linux");
  EXPECT_FALSE(HostPlatform().architecture.empty());
}

TEST(OciTypesTest, DescriptorRefName) {
  Descriptor d = MakeDescriptor(media_type::kOciManifest, 'a', 1);
  EXPECT_EQ(d.RefName(), "");
  d.annotations[std::string(kAnnotationRefName)] = "docker.io/library/x:1";
  EXPECT_EQ(d.RefName(), "docker.io/library/x:1");
  Result<Descriptor> parsed = ParseDescriptor(SerializeDescriptor(d));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, d);
}

}  // namespace
}  // namespace imgtool::store
