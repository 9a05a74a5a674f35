// Pull and push against the in-memory FakeRegistry: protocol, auth and faults.
#include "registry/client.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/temp_dir.h"
#include "registry/pull.h"
#include "registry/push.h"
#include "store/store.h"
#include "tests/registry/fake_registry.h"

namespace imgtool::registry {
namespace {

using testing::FakeRegistry;

std::string Bytes(size_t n, char seed) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(seed + i * 7 + i / 13);
  return out;
}

struct RemoteImage {
  std::string manifest_digest;
  std::vector<std::string> layer_digests;
  std::string config_digest;
};

RemoteImage AddImage(FakeRegistry& reg, const std::string& repo, const std::string& tag,
                     const std::string& arch, int layers, size_t layer_size = 1000) {
  RemoteImage out;
  store::ImageConfig config;
  config.os = "linux";
  config.architecture = arch;
  store::Manifest manifest;
  manifest.media_type = std::string(store::media_type::kOciManifest);
  for (int i = 0; i < layers; ++i) {
    std::string data = Bytes(layer_size + i, static_cast<char>('a' + i) + arch.size());
    std::string digest = reg.AddBlob(repo, data);
    out.layer_digests.push_back(digest);
    store::Descriptor d;
    d.media_type = std::string(store::media_type::kOciLayerTarGzip);
    d.digest = *Digest::Parse(digest);
    d.size = static_cast<int64_t>(data.size());
    manifest.layers.push_back(d);
    config.rootfs.diff_ids.push_back(d.digest);
  }
  std::string config_json = store::SerializeImageConfig(config);
  out.config_digest = reg.AddBlob(repo, config_json);
  manifest.config.media_type = std::string(store::media_type::kOciConfig);
  manifest.config.digest = *Digest::Parse(out.config_digest);
  manifest.config.size = static_cast<int64_t>(config_json.size());
  out.manifest_digest = reg.AddManifest(repo, tag, std::string(store::media_type::kOciManifest),
                                        store::SerializeManifest(manifest));
  return out;
}

PullOptions ForArch(const std::string& arch) {
  PullOptions options;
  options.platform = store::Platform{"linux", arch, "", "", {}};
  return options;
}

PullOptions OneJob() {
  PullOptions options;
  options.jobs = 1;
  return options;
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("imgtool-registry-");
    ASSERT_TRUE(dir);
    dir_.emplace(std::move(*dir));
    auto opened = store::Store::Open(dir_->path() / "root");
    ASSERT_TRUE(opened) << opened.error().ToString();
    store_ = std::move(*opened);
    fake_ = std::make_shared<FakeRegistry>();
  }

  std::unique_ptr<Client> NewClient(std::optional<Credentials> creds = std::nullopt) {
    ClientOptions options;
    options.credentials = std::move(creds);
    options.backoff = std::chrono::milliseconds(1);
    // The fake answers on https://fake.test.
    return std::make_unique<Client>("fake.test", fake_, options);
  }

  store::Reference Ref(const std::string& text) { return *store::ParseReference(text); }

  Result<PulledImage> PullRef(const std::string& text, PullOptions options = {},
                              std::optional<Credentials> creds = std::nullopt) {
    auto client = NewClient(std::move(creds));
    return Pull(*store_, *client, Ref(text), options);
  }

  bool IngestEmpty() {
    auto dir = store_->root() / "ingest";
    return std::filesystem::is_empty(dir);
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<store::Store> store_;
  std::shared_ptr<FakeRegistry> fake_;
};

TEST_F(ClientTest, PullsAnonymouslyWithABearerTokenAndTagsLast) {
  fake_->auth = "bearer";
  RemoteImage image = AddImage(*fake_, "lib/app", "v1", "amd64", 3);
  auto pulled = PullRef("fake.test/lib/app:v1", ForArch("amd64"));
  ASSERT_TRUE(pulled) << pulled.error().ToString();
  EXPECT_EQ(pulled->descriptor.digest.ToString(), image.manifest_digest);
  for (const std::string& d : image.layer_digests) {
    EXPECT_TRUE(store_->content().Exists(*Digest::Parse(d)));
  }
  auto tagged = store_->index().Resolve(Ref("fake.test/lib/app:v1"));
  ASSERT_TRUE(tagged) << tagged.error().ToString();
  EXPECT_EQ(tagged->digest.ToString(), image.manifest_digest);
  auto problems = store_->Fsck();
  ASSERT_TRUE(problems);
  EXPECT_TRUE(problems->empty());
  // The token request was anonymous; registry requests carried the token.
  bool saw_token_request = false;
  for (const HttpRequest& r : fake_->requests) {
    if (r.url.starts_with("https://auth.test/token")) {
      saw_token_request = true;
      EXPECT_EQ(FindHeader(r.headers, "authorization"), "");
      EXPECT_NE(r.url.find("scope=repository%3Alib%2Fapp%3Apull"), std::string::npos) << r.url;
      EXPECT_NE(r.url.find("service=fake"), std::string::npos);
    } else if (r.url.find("/blobs/") != std::string::npos) {
      EXPECT_EQ(FindHeader(r.headers, "authorization"), "Bearer tok:repository:lib/app:pull ");
    }
  }
  EXPECT_TRUE(saw_token_request);
}

TEST_F(ClientTest, SkipsBlobsTheStoreHas) {
  AddImage(*fake_, "a", "1", "amd64", 4);
  ASSERT_TRUE(PullRef("fake.test/a:1"));
  int gets = fake_->blob_gets;
  EXPECT_EQ(gets, 5);
  ASSERT_TRUE(PullRef("fake.test/a:1"));
  EXPECT_EQ(fake_->blob_gets, gets);
}

TEST_F(ClientTest, SelectsThePlatformFromAnIndexAndPullsByDigest) {
  RemoteImage amd = AddImage(*fake_, "m", "", "amd64", 1);
  RemoteImage arm = AddImage(*fake_, "m", "", "arm64", 2);
  store::Index index;
  index.media_type = std::string(store::media_type::kDockerManifestList);
  for (auto [image, arch] : {std::pair{&amd, "amd64"}, std::pair{&arm, "arm64"}}) {
    store::Descriptor d;
    d.media_type = std::string(store::media_type::kOciManifest);
    d.digest = *Digest::Parse(image->manifest_digest);
    d.size = static_cast<int64_t>(fake_->manifests["m@" + image->manifest_digest].body.size());
    d.platform = store::Platform{"linux", arch, arch == std::string("arm64") ? "v8" : "", "", {}};
    index.manifests.push_back(d);
  }
  std::string index_digest =
      fake_->AddManifest("m", "multi", std::string(store::media_type::kDockerManifestList),
                         store::SerializeIndex(index));

  auto arm_pull = PullRef("fake.test/m:multi", ForArch("arm64"));
  ASSERT_TRUE(arm_pull) << arm_pull.error().ToString();
  EXPECT_EQ(arm_pull->descriptor.digest.ToString(), arm.manifest_digest);
  EXPECT_EQ(arm_pull->config.architecture, "arm64");

  auto none = PullRef("fake.test/m:multi", ForArch("s390x"));
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(none.error().message().find("linux/arm64/v8"), std::string::npos)
      << none.error().ToString();

  auto by_digest = PullRef("fake.test/m@" + index_digest, ForArch("amd64"));
  ASSERT_TRUE(by_digest) << by_digest.error().ToString();
  EXPECT_EQ(by_digest->descriptor.digest.ToString(), amd.manifest_digest);
  EXPECT_TRUE(store_->index().Resolve(Ref("fake.test/m@" + index_digest)));
}

TEST_F(ClientTest, WrongBytesAreRejectedAndNothingIsStoredOrTagged) {
  RemoteImage image = AddImage(*fake_, "bad", "1", "amd64", 2);
  fake_->corrupt_blob = true;
  auto pulled = PullRef("fake.test/bad:1");
  ASSERT_FALSE(pulled);
  EXPECT_EQ(pulled.error().code(), ErrorCode::kDataLoss) << pulled.error().ToString();
  for (const std::string& d : image.layer_digests) {
    EXPECT_FALSE(store_->content().Exists(*Digest::Parse(d)));
  }
  EXPECT_FALSE(store_->index().Resolve(Ref("fake.test/bad:1")));
  EXPECT_TRUE(IngestEmpty());
}

TEST_F(ClientTest, ADroppedConnectionResumesWithRange) {
  AddImage(*fake_, "r", "1", "amd64", 1, 100000);
  fake_->drop_blob_after = 5000;
  auto pulled = PullRef("fake.test/r:1", OneJob());
  ASSERT_TRUE(pulled) << pulled.error().ToString();
  bool saw_range = false;
  for (const HttpRequest& r : fake_->requests) {
    if (FindHeader(r.headers, "range") == "bytes=5000-") saw_range = true;
  }
  EXPECT_TRUE(saw_range);
}

TEST_F(ClientTest, AServerThatIgnoresRangeStillGivesTheRightBlob) {
  AddImage(*fake_, "r", "1", "amd64", 1, 100000);
  fake_->drop_blob_after = 5000;
  fake_->ignore_range = true;
  auto pulled = PullRef("fake.test/r:1", OneJob());
  ASSERT_TRUE(pulled) << pulled.error().ToString();
  EXPECT_TRUE(store_->Fsck()->empty());
}

TEST_F(ClientTest, Retries503AndNotOther4xx) {
  AddImage(*fake_, "s", "1", "amd64", 1);
  fake_->fail_503 = 2;
  auto pulled = PullRef("fake.test/s:1", OneJob());
  ASSERT_TRUE(pulled) << pulled.error().ToString();
  EXPECT_EQ(fake_->fail_503, 0);

  auto missing = PullRef("fake.test/s:nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("MANIFEST_UNKNOWN"), std::string::npos);
  int manifest_gets = 0;
  for (const HttpRequest& r : fake_->requests) {
    if (r.url.ends_with("/manifests/nope")) ++manifest_gets;
  }
  EXPECT_EQ(manifest_gets, 1);
}

TEST_F(ClientTest, ARedirectToAnotherHostCarriesNoAuthorization) {
  fake_->auth = "basic";
  fake_->redirect_blobs = true;
  AddImage(*fake_, "p", "1", "amd64", 2);
  auto pulled = PullRef("fake.test/p:1", {}, Credentials{"alice", "s3cret"});
  ASSERT_TRUE(pulled) << pulled.error().ToString();
  int cdn = 0;
  for (const HttpRequest& r : fake_->requests) {
    if (r.url.starts_with("https://cdn.test/")) {
      ++cdn;
      EXPECT_EQ(FindHeader(r.headers, "authorization"), "");
    } else if (r.url.find("/blobs/") != std::string::npos) {
      EXPECT_NE(FindHeader(r.headers, "authorization"), "");
    }
  }
  EXPECT_EQ(cdn, 3);
}

TEST_F(ClientTest, WrongPasswordIsPermissionDeniedWithoutTheSecret) {
  fake_->auth = "basic";
  AddImage(*fake_, "p", "1", "amd64", 1);
  auto pulled = PullRef("fake.test/p:1", {}, Credentials{"alice", "wrong-pw-xyz"});
  ASSERT_FALSE(pulled);
  EXPECT_EQ(pulled.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(pulled.error().ToString().find("wrong-pw-xyz"), std::string::npos);
  auto client = NewClient(Credentials{"alice", "wrong-pw-xyz"});
  auto login = client->CheckLogin();
  ASSERT_FALSE(login);
  EXPECT_NE(login.error().message().find("wrong username or password"), std::string::npos);
  auto ok = NewClient(Credentials{"alice", "s3cret"})->CheckLogin();
  EXPECT_TRUE(ok) << ok.error().ToString();

  fake_->auth = "bearer";
  fake_->anonymous_pull = false;
  auto bearer = NewClient(Credentials{"alice", "nope"})->CheckLogin();
  ASSERT_FALSE(bearer);
  EXPECT_EQ(bearer.error().code(), ErrorCode::kPermissionDenied);
}

class PushTest : public ClientTest {
 protected:
  // Pulls an image from the fake into the store, then forgets the remote.
  store::Descriptor LocalImage(int layers, size_t size) {
    AddImage(*fake_, "src", "1", "amd64", layers, size);
    auto pulled = PullRef("fake.test/src:1");
    EXPECT_TRUE(pulled) << pulled.error().ToString();
    fake_->blobs.clear();
    fake_->repo_blobs.clear();
    fake_->manifests.clear();
    return pulled->descriptor;
  }
};

TEST_F(PushTest, PushesBlobsAndTheExactManifest) {
  store::Descriptor top = LocalImage(3, 2000);
  auto client = NewClient();
  auto digest = Push(*store_, *client, top, Ref("fake.test/dst:v2"));
  ASSERT_TRUE(digest) << digest.error().ToString();
  EXPECT_EQ(*digest, top.digest);
  ASSERT_TRUE(fake_->manifests.count("dst:v2"));
  EXPECT_EQ(fake_->manifests["dst:v2"].media_type, top.media_type);
  EXPECT_EQ(Digest::Sha256Of(fake_->manifests["dst:v2"].body), top.digest);
  EXPECT_EQ(fake_->monolithic_puts, 4);
  // Again: every blob exists, nothing is uploaded.
  size_t before = fake_->requests.size();
  ASSERT_TRUE(Push(*store_, *client, top, Ref("fake.test/dst:v2")));
  for (size_t i = before; i < fake_->requests.size(); ++i) {
    EXPECT_NE(fake_->requests[i].method, "POST");
  }
}

TEST_F(PushTest, ChunkedUploadHonoursMinLengthAndResumes) {
  store::Descriptor top = LocalImage(1, 100000);
  fake_->chunk_min_length = 30000;
  fake_->drop_patch_after = 7000;
  auto client = NewClient();
  client->SetChunking(1000, 1000);
  auto digest = Push(*store_, *client, top, Ref("fake.test/dst:big"));
  ASSERT_TRUE(digest) << digest.error().ToString();
  EXPECT_EQ(*digest, top.digest);
  // 100000 bytes in chunks of 30000 = 4 PATCHes (+1 repeated after the drop).
  EXPECT_EQ(fake_->patches, 5);
  for (const HttpRequest& r : fake_->requests) {
    if (r.method != "PATCH") continue;
    bool last = r.body_offset + r.body_length == 100000;
    if (!last) {
      EXPECT_GE(r.body_length, 30000);
    }
  }
}

TEST_F(PushTest, MountsFromAnotherRepository) {
  store::Descriptor top = LocalImage(2, 500);
  auto client = NewClient();
  ASSERT_TRUE(Push(*store_, *client, top, Ref("fake.test/one:1")));
  PushOptions options;
  options.mount_from = "one";
  int puts = fake_->monolithic_puts;
  ASSERT_TRUE(Push(*store_, *client, top, Ref("fake.test/two:1"), options));
  EXPECT_EQ(fake_->mounts, 3);
  EXPECT_EQ(fake_->monolithic_puts, puts);
}

TEST_F(PushTest, APullOnlyTokenIsInsufficientScope) {
  store::Descriptor top = LocalImage(1, 500);
  fake_->auth = "bearer";
  fake_->push_allowed = false;
  auto client = NewClient(Credentials{"alice", "s3cret"});
  auto digest = Push(*store_, *client, top, Ref("fake.test/dst:1"));
  ASSERT_FALSE(digest);
  EXPECT_EQ(digest.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(digest.error().message().find("insufficient scope"), std::string::npos)
      << digest.error().ToString();
  EXPECT_EQ(digest.error().ToString().find("s3cret"), std::string::npos);
}

}  // namespace
}  // namespace imgtool::registry
