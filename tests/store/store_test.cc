#include "store/store.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>

#include "common/file_util.h"
#include "common/temp_dir.h"
#include "tests/store/store_test_util.h"
#include "tests/support/test_util.h"

namespace imgtool::store {
namespace {

namespace fs = std::filesystem;
using ::imgtool::testing::ReadTestFile;
using ::imgtool::testing::RunCommand;
using ::imgtool::testing::WriteTestFile;
using testing::Ref;
using testing::TestImage;
using testing::WriteTestImage;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("store-");
    ASSERT_TRUE(dir);
    dir_ = std::make_unique<TempDir>(std::move(dir).value());
    Result<std::unique_ptr<Store>> store = Store::Open(root());
    ASSERT_TRUE(store) << store.error().ToString();
    store_ = std::move(store).value();
  }
  fs::path root() const { return dir_->path() / "root"; }

  void Corrupt(const Digest& d, std::string_view content) {
    fs::path p = store_->local_content().BlobPath(d);
    ::chmod(p.c_str(), 0644);
    WriteTestFile(p, content);
  }

  bool HasProblem(const std::vector<std::string>& problems, std::string_view needle) {
    return std::any_of(problems.begin(), problems.end(),
                       [&](const std::string& p) { return p.find(needle) != std::string::npos; });
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, OpenCreatesOciLayout) {
  EXPECT_EQ(ReadTestFile(root() / "oci-layout"), R"({"imageLayoutVersion":"1.0.0"})");
  EXPECT_EQ(ReadTestFile(root() / "index.json"), R"({"schemaVersion":2,"manifests":[]})");
  EXPECT_TRUE(fs::is_directory(root() / "blobs/sha256"));
  EXPECT_TRUE(fs::is_directory(root() / "ingest"));
  EXPECT_EQ(store_->root(), root());
  // Reopening an existing store works and changes nothing.
  ASSERT_TRUE(store_->index().Set(Ref("x"), WriteTestImage(*store_, {"l"}).manifest));
  std::string index = ReadTestFile(root() / "index.json");
  ASSERT_TRUE(Store::Open(root()));
  EXPECT_EQ(ReadTestFile(root() / "index.json"), index);
}

TEST_F(StoreTest, RefusesMalformedLayout) {
  for (std::string bad : {"", "{", R"({"imageLayoutVersion":"2.0.0"})", R"({"other":1})", "[]"}) {
    WriteTestFile(root() / "oci-layout", bad);
    Result<std::unique_ptr<Store>> s = Store::Open(root());
    ASSERT_FALSE(s) << bad;
    EXPECT_EQ(s.error().code(), ErrorCode::kFailedPrecondition);
    EXPECT_NE(s.error().message().find("oci-layout"), std::string::npos) << s.error().message();
  }
}

TEST_F(StoreTest, RefusesRootThatIsAFile) {
  WriteTestFile(dir_->path() / "file", "x");
  Result<std::unique_ptr<Store>> s = Store::Open(dir_->path() / "file");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kFailedPrecondition);
}

TEST(DefaultRootTest, EnvironmentOverrides) {
  const char* old = ::getenv("IMGTOOL_ROOT");
  std::string saved = old ? old : "";
  ::setenv("IMGTOOL_ROOT", "/tmp/elsewhere", 1);
  EXPECT_EQ(DefaultRoot(), "/tmp/elsewhere");
  ::unsetenv("IMGTOOL_ROOT");
  EXPECT_EQ(DefaultRoot(), "/var/lib/imgtool");
  if (old) ::setenv("IMGTOOL_ROOT", saved.c_str(), 1);
}

TEST_F(StoreTest, ResolveImageByNameIdAndDigest) {
  TestImage image = WriteTestImage(*store_, {"layer one", "layer two"});
  ASSERT_TRUE(store_->index().Set(Ref("app:1"), image.manifest));

  for (std::string key :
       {std::string("app:1"), std::string("docker.io/library/app:1"),
        image.manifest.digest.ToString(), image.config.digest.ToString(),
        image.manifest.digest.hex().substr(0, 6), image.config.digest.hex().substr(0, 12),
        "app@" + image.manifest.digest.ToString()}) {
    Result<ResolvedImage> r = store_->ResolveImage(key);
    ASSERT_TRUE(r) << key << ": " << r.error().ToString();
    EXPECT_EQ(r->manifest_descriptor.digest, image.manifest.digest) << key;
    EXPECT_EQ(r->manifest.layers.size(), 2u);
    EXPECT_EQ(r->config.config.cmd, std::vector<std::string>{"/bin/sh"});
    EXPECT_EQ(r->config.rootfs.diff_ids[1], image.layers[1].digest);
  }
  EXPECT_EQ(store_->ResolveImage("app:1")->name, "docker.io/library/app:1");

  Result<ResolvedImage> missing = store_->ResolveImage("app:2");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(missing.error().message(), "image \"docker.io/library/app:2\" not found");
  Result<ResolvedImage> bad = store_->ResolveImage("App");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(store_->ResolveImage("ffffff").error().message(), "image \"ffffff\" not found");
}

TEST_F(StoreTest, ResolveImageRejectsDiffIdCountMismatch) {
  TestImage image = WriteTestImage(*store_, {"only layer"});
  Result<ImageConfig> config = store_->ReadConfig(image.config.digest);
  ASSERT_TRUE(config);
  config->rootfs.diff_ids.push_back(Digest::Sha256Of("phantom"));
  Result<Descriptor> c =
      store_->WriteJsonBlob(media_type::kOciConfig, SerializeImageConfig(*config));
  ASSERT_TRUE(c);
  Manifest m = *store_->ReadManifest(image.manifest.digest);
  m.config = *c;
  Result<Descriptor> md = store_->WriteJsonBlob(media_type::kOciManifest, SerializeManifest(m));
  ASSERT_TRUE(md);
  ASSERT_TRUE(store_->index().Set(Ref("broken"), *md));
  Result<ResolvedImage> r = store_->ResolveImage("broken");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("has 2 diff_ids for 1 layers"), std::string::npos)
      << r.error().message();
}

TEST_F(StoreTest, ResolveImagePicksPlatformFromIndex) {
  TestImage amd = WriteTestImage(*store_, {"amd layer"}, "amd64");
  TestImage arm = WriteTestImage(*store_, {"arm layer"}, "arm64");
  Index index;
  index.media_type = std::string(media_type::kOciIndex);
  Descriptor a = amd.manifest;
  a.platform = Platform{"linux", "amd64", "", "", {}};
  Descriptor b = arm.manifest;
  b.platform = Platform{"linux", "arm64", "v8", "", {}};
  index.manifests = {b, a};
  Result<Descriptor> top = store_->WriteJsonBlob(media_type::kOciIndex, SerializeIndex(index));
  ASSERT_TRUE(top);
  ASSERT_TRUE(store_->index().Set(Ref("multi"), *top));

  Result<ResolvedImage> r = store_->ResolveImage("multi", Platform{"linux", "amd64", "", "", {}});
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->top.digest, top->digest);
  EXPECT_EQ(r->manifest_descriptor.digest, amd.manifest.digest);
  EXPECT_EQ(r->config.architecture, "amd64");

  r = store_->ResolveImage("multi", Platform{"linux", "arm64", "", "", {}});
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->manifest_descriptor.digest, arm.manifest.digest);

  // Default: the host's platform.
  r = store_->ResolveImage("multi");
  Platform host = HostPlatform();
  if (host.architecture == "amd64" || host.architecture == "arm64") {
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(r->config.architecture, host.architecture);
  }

  Result<ResolvedImage> none =
      store_->ResolveImage("multi", Platform{"linux", "s390x", "", "", {}});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(none.error().message().find("no manifest for linux/s390x (has linux/arm64/v8, "
                                        "linux/amd64)"),
            std::string::npos)
      << none.error().message();
}

TEST_F(StoreTest, GcRemovesUnreferencedAndKeepsReferenced) {
  TestImage kept = WriteTestImage(*store_, {"shared layer", "kept layer"}, "amd64", "kept");
  TestImage dropped = WriteTestImage(*store_, {"shared layer", "dropped layer"}, "amd64", "drop");
  TestImage extra = WriteTestImage(*store_, {"extra layer"}, "amd64", "extra");
  Digest loose;
  ASSERT_TRUE(store_->content().WriteBlob("loose blob", &loose));
  ASSERT_TRUE(store_->index().Set(Ref("kept"), kept.manifest));

  Result<GcReport> report = store_->CollectGarbage({extra.manifest.digest});
  ASSERT_TRUE(report) << report.error().ToString();

  // Removed: dropped's manifest, config and own layer, and the loose blob.
  std::vector<Digest> want_removed = {dropped.manifest.digest, dropped.config.digest,
                                      dropped.layers[1].digest, loose};
  std::sort(want_removed.begin(), want_removed.end());
  EXPECT_EQ(report->removed, want_removed);
  EXPECT_EQ(report->blobs_removed, 4);
  EXPECT_EQ(report->bytes_freed,
            dropped.manifest.size + dropped.config.size + dropped.layers[1].size + 10);
  EXPECT_EQ(report->blobs_kept, 4 + 3);  // kept: manifest+config+2 layers; extra: 3 blobs

  for (const Digest& d : want_removed) EXPECT_FALSE(store_->content().Exists(d));
  EXPECT_TRUE(store_->content().Exists(dropped.layers[0].digest));  // shared with kept
  EXPECT_TRUE(store_->content().Exists(extra.layers[0].digest));
  EXPECT_TRUE(store_->ResolveImage("kept"));

  // A second run has nothing to do.
  Result<GcReport> again = store_->CollectGarbage({extra.manifest.digest});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->blobs_removed, 0);
}

TEST_F(StoreTest, GcFollowsIndexesToTheirManifests) {
  TestImage amd = WriteTestImage(*store_, {"amd"}, "amd64");
  Index index;
  index.media_type = std::string(media_type::kOciIndex);
  Descriptor a = amd.manifest;
  a.platform = Platform{"linux", "amd64", "", "", {}};
  index.manifests = {a};
  Result<Descriptor> top = store_->WriteJsonBlob(media_type::kOciIndex, SerializeIndex(index));
  ASSERT_TRUE(top);
  ASSERT_TRUE(store_->index().Set(Ref("multi"), *top));
  Result<GcReport> report = store_->CollectGarbage();
  ASSERT_TRUE(report);
  EXPECT_EQ(report->blobs_removed, 0);
  EXPECT_EQ(report->blobs_kept, 4);
}

TEST_F(StoreTest, GcStopsOnADamagedManifestInsteadOfSweeping) {
  TestImage image = WriteTestImage(*store_, {"layer"});
  ASSERT_TRUE(store_->index().Set(Ref("img"), image.manifest));
  Corrupt(image.manifest.digest, "{}");
  Result<GcReport> report = store_->CollectGarbage();
  ASSERT_FALSE(report);
  EXPECT_NE(report.error().message().find("gc stopped, image \"docker.io/library/img:latest\""),
            std::string::npos)
      << report.error().message();
  EXPECT_TRUE(store_->content().Exists(image.layers[0].digest));
}

TEST_F(StoreTest, GcWaitsForWriteLeases) {
  Result<FileLock> lease = store_->AcquireWriteLease();
  ASSERT_TRUE(lease);
  // While a lease is held, gc.lock cannot be taken exclusively.
  EXPECT_EQ(FileLock::TryAcquire(root() / "gc.lock", FileLock::Mode::kExclusive).error().code(),
            ErrorCode::kUnavailable);
  // Another lease can (leases are shared).
  EXPECT_TRUE(store_->AcquireWriteLease());
}

TEST_F(StoreTest, FsckHealthyStoreHasNoProblems) {
  TestImage image = WriteTestImage(*store_, {"a", "b"});
  ASSERT_TRUE(store_->index().Set(Ref("ok"), image.manifest));
  WriteTestFile(root() / "ingest" / "leftover", "partial");  // not a problem
  Result<std::vector<std::string>> problems = store_->Fsck();
  ASSERT_TRUE(problems);
  EXPECT_TRUE(problems->empty()) << (*problems)[0];
}

TEST_F(StoreTest, FsckDetectsCorruptedBlob) {
  TestImage image = WriteTestImage(*store_, {"layer content"});
  ASSERT_TRUE(store_->index().Set(Ref("img"), image.manifest));
  Corrupt(image.layers[0].digest, "layer CONTENT");
  Result<std::vector<std::string>> problems = store_->Fsck();
  ASSERT_TRUE(problems);
  ASSERT_FALSE(problems->empty());
  EXPECT_TRUE(HasProblem(*problems, "blob " + image.layers[0].digest.ToString() +
                                        ": content hashes to " +
                                        Digest::Sha256Of("layer CONTENT").ToString()))
      << (*problems)[0];
}

TEST_F(StoreTest, FsckDetectsDanglingManifestAndMissingLayer) {
  TestImage a = WriteTestImage(*store_, {"a layer"}, "amd64", "a");
  TestImage b = WriteTestImage(*store_, {"b layer"}, "amd64", "b");
  ASSERT_TRUE(store_->index().Set(Ref("dangling"), a.manifest));
  ASSERT_TRUE(store_->index().Set(Ref("nolayer"), b.manifest));
  ASSERT_TRUE(store_->content().Delete(a.manifest.digest));
  ASSERT_TRUE(store_->content().Delete(b.layers[0].digest));
  WriteTestFile(root() / "blobs/sha256/garbage.tmp", "x");

  Result<std::vector<std::string>> problems = store_->Fsck();
  ASSERT_TRUE(problems);
  EXPECT_EQ(problems->size(), 3u);
  EXPECT_TRUE(HasProblem(*problems, "image \"docker.io/library/dangling:latest\": manifest " +
                                        a.manifest.digest.ToString() + " is missing"));
  EXPECT_TRUE(HasProblem(*problems, "image \"docker.io/library/nolayer:latest\": layer 0 " +
                                        b.layers[0].digest.ToString() + " is missing"));
  EXPECT_TRUE(HasProblem(*problems, "stray file blobs/sha256/garbage.tmp"));
}

TEST_F(StoreTest, FsckDetectsDiffIdMismatchAndUnparseableConfig) {
  TestImage image = WriteTestImage(*store_, {"l"});
  ASSERT_TRUE(store_->index().Set(Ref("img"), image.manifest));
  // Rewrite the config blob in place with a valid JSON that is not a config.
  Corrupt(image.config.digest, R"({"x":1})");
  Result<std::vector<std::string>> problems = store_->Fsck();
  ASSERT_TRUE(problems);
  EXPECT_TRUE(HasProblem(*problems, "config " + image.config.digest.ToString()));
}

// The store root is an OCI image layout that other tools read.
class StoreInteropTest : public StoreTest {
 protected:
  // A small real image: one uncompressed layer tar made by tar(1).
  Descriptor WriteRealImage(const std::string& name) {
    fs::path src = dir_->path() / "src";
    WriteTestFile(src / "etc/hello", "hello from the store test\n");
    ::imgtool::testing::CommandResult tar =
        RunCommand({"tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
                    "-C", src.string(), "-cf", "-", "."});
    EXPECT_EQ(tar.exit_code, 0) << tar.err;
    Result<Descriptor> layer = store_->WriteJsonBlob(media_type::kOciLayerTar, tar.out);
    EXPECT_TRUE(layer);
    ImageConfig config;
    config.architecture = HostPlatform().architecture;
    config.os = "linux";
    config.created = "1970-01-01T00:00:00Z";
    config.config.cmd = {"/bin/sh"};
    config.config.env = {"PATH=/usr/bin:/bin"};
    config.rootfs.diff_ids = {layer->digest};
    config.history.push_back(HistoryEntry{"1970-01-01T00:00:00Z", "store test", "", "", false});
    Result<Descriptor> c =
        store_->WriteJsonBlob(media_type::kOciConfig, SerializeImageConfig(config));
    EXPECT_TRUE(c);
    Manifest m;
    m.media_type = std::string(media_type::kOciManifest);
    m.config = *c;
    m.layers = {*layer};
    Result<Descriptor> md = store_->WriteJsonBlob(media_type::kOciManifest, SerializeManifest(m));
    EXPECT_TRUE(md);
    EXPECT_TRUE(store_->index().Set(Ref(name), *md));
    return *md;
  }
};

TEST_F(StoreInteropTest, SkopeoInspectsTheStoreByFullReference) {
  IMGTOOL_REQUIRE_COMMAND("skopeo");
  Descriptor manifest = WriteRealImage("example.com/team/app:1.0");
  ::imgtool::testing::CommandResult r =
      RunCommand({"skopeo", "inspect", "oci:" + root().string() + ":example.com/team/app:1.0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j["Digest"], manifest.digest.ToString());
  EXPECT_EQ(j["Os"], "linux");
  EXPECT_EQ(j["Layers"].size(), 1u);

  // Docker Hub names are stored in full form too, and skopeo takes them.
  WriteRealImage("busybox:musl");
  r = RunCommand({"skopeo", "inspect", "--config",
                  "oci:" + root().string() + ":docker.io/library/busybox:musl"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_EQ(j["config"]["Cmd"][0], "/bin/sh");

  // A registry with a port: skopeo splits the path at the first ':' only.
  Descriptor local = WriteRealImage("localhost:5000/a/b:tag");
  r = RunCommand({"skopeo", "inspect", "oci:" + root().string() + ":localhost:5000/a/b:tag"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_EQ(j["Digest"], local.digest.ToString());
}

TEST_F(StoreInteropTest, OciImageToolValidatesTheLayout) {
  IMGTOOL_REQUIRE_COMMAND("oci-image-tool");
  WriteRealImage("localhost:5000/a/b:tag");
  ::imgtool::testing::CommandResult r =
      RunCommand({"oci-image-tool", "validate", "--type", "image", root().string(), "--ref",
                  "name=localhost:5000/a/b:tag"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find("Validation succeeded"), std::string::npos) << r.out << r.err;
}

}  // namespace
}  // namespace imgtool::store
