// imgtool against real CNCF distribution registries (the docker-registry
// package) that the tests start on free loopback ports: one plain HTTP, one
// TLS (a CA made here with the openssl CLI) with htpasswd Basic auth.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "common/file_util.h"
#include "store/store.h"
#include "tests/cli/cli_fixture.h"
#include "tests/cli/image_builder.h"
#include "tests/support/registry_process.h"
#include "tests/support/test_util.h"

namespace imgtool::registry {
namespace {

namespace fs = std::filesystem;
using cli::testing::Describe;
using ::imgtool::testing::CommandResult;
using ::imgtool::testing::RegistryProcess;
using ::imgtool::testing::RunCommand;
using ::imgtool::testing::StartRegistry;
using ::imgtool::testing::WriteTestFile;

class DistributionTest : public cli::testing::CliTest {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_COMMAND("docker-registry");
    CliTest::SetUp();
    // Credentials files of the user running the tests stay out of it.
    ::setenv("XDG_CONFIG_HOME", (Work() / "config").c_str(), 1);
    ::setenv("DOCKER_CONFIG", (Work() / "docker").c_str(), 1);
    // A free port can be taken by another test between the probe and the
    // registry's bind: try a few.
    plain_ = StartRegistry(Work() / "plain", false);
    ASSERT_NE(plain_, nullptr) << "docker-registry did not start";
  }

  void StartTls() {
    IMGTOOL_REQUIRE_COMMAND("openssl");
    IMGTOOL_REQUIRE_COMMAND("htpasswd");
    fs::path dir = Work() / "tls";
    ASSERT_TRUE(::imgtool::testing::MakeTlsRegistryFiles(dir, "alice", "s3cret"));
    tls_ = StartRegistry(dir, true);
    ASSERT_NE(tls_, nullptr) << "docker-registry (TLS) did not start";
    cert_dir_ = (dir / "certs").string();
  }

  // Imports a small busybox rootfs as NAME into the default root.
  void ImportImage(const std::string& name, const std::string& greeting = "hello\n") {
    fs::path tar = RootfsTar(name.substr(name.rfind('/') + 1) + ".tar", greeting);
    Ok({"import", tar.string(), name});
  }

  fs::path Root2() const { return Work() / "root2"; }

  // Three gzip layers of ~1 MiB each that compress poorly (so that they
  // stream in many writes): dataN in each, only-in-2 in the last.
  static std::vector<std::string> MultiLayerTars() {
    std::vector<std::string> tars;
    uint64_t x = 20261130;
    for (int i = 0; i < 3; ++i) {
      std::string data(1 << 20, '\0');
      for (char& c : data) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        c = static_cast<char>(x >> 56);
      }
      std::vector<cli::testing::TarEntry> entries = {{"data" + std::to_string(i), data}};
      if (i == 2) entries.push_back({"only-in-2", "last\n"});
      tars.push_back(cli::testing::MakeTar(entries));
    }
    return tars;
  }
  static cli::testing::BuiltImage MultiLayerImage() {
    return cli::testing::BuildImage(MultiLayerTars(), /*gzip=*/true, "layers");
  }

  // Writes `image` into the default root as local/NAME:1 (its blobs as they
  // are: no unpack that would check its diff IDs) and pushes it to the plain
  // registry; returns the pushed reference.
  std::string LoadAndPushLayers(const std::string& name, const cli::testing::BuiltImage& image) {
    std::string local = "local/" + name + ":1";
    {
      auto store = store::Store::Open(Root());
      EXPECT_TRUE(store) << store.error().ToString();
      if (!store) return "";
      for (const std::string& blob : image.layer_blobs)
        EXPECT_TRUE((*store)->content().WriteBlob(blob));
      EXPECT_TRUE((*store)->content().WriteBlob(image.config));
      EXPECT_TRUE((*store)->content().WriteBlob(image.manifest));
      store::Descriptor top;
      top.media_type = std::string(store::media_type::kOciManifest);
      top.digest = image.ManifestDigest();
      top.size = static_cast<int64_t>(image.manifest.size());
      EXPECT_TRUE((*store)->index().Set(*store::ParseReference(local), top));
    }
    std::string ref = plain_->host() + "/test/" + name + ":1";
    CommandResult push = Imgtool({"push", "-q", "--tls-verify=false", local, ref});
    EXPECT_EQ(push.exit_code, 0) << Describe(push);
    return ref;
  }

  // The snapshot names of the layers (OCI chain IDs; the registry client
  // knows no overlay).
  static std::vector<Digest> ChainIds(const std::vector<Digest>& diff_ids) {
    std::vector<Digest> chain = {diff_ids[0]};
    for (size_t i = 1; i < diff_ids.size(); ++i) {
      chain.push_back(Digest::Sha256Of(chain.back().ToString() + " " + diff_ids[i].ToString()));
    }
    return chain;
  }

  // Where the plain registry keeps a blob's bytes.
  fs::path RegistryBlob(const std::string& blob) const {
    std::string hex = Digest::Sha256Of(blob).hex();
    return Work() / "plain" / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" /
           hex.substr(0, 2) / hex / "data";
  }

  static std::string SnapshotMetadata(const fs::path& root) {
    return ::imgtool::testing::ReadTestFile(fs::path(root.string() + "-state") / "snapshots" /
                                            "metadata.json");
  }

  // No unpack left an active snapshot behind, and fsck finds nothing.
  void ExpectNoActiveSnapshot(const fs::path& root) {
    std::string metadata = SnapshotMetadata(root);
    EXPECT_EQ(metadata.find("unpack-"), std::string::npos) << metadata;
    CommandResult fsck = ImgtoolIn(root, {"fsck"});
    EXPECT_EQ(fsck.exit_code, 0) << Describe(fsck);
  }

  std::unique_ptr<RegistryProcess> plain_;
  std::unique_ptr<RegistryProcess> tls_;
  std::string cert_dir_;
};

TEST_F(DistributionTest, PushThenPullGivesTheSameDigests) {
  ImportImage("local/app:1");
  std::string ref = plain_->host() + "/test/app:1";
  CommandResult push = Imgtool({"push", "--tls-verify=false", "local/app:1", ref});
  ASSERT_EQ(push.exit_code, 0) << Describe(push);
  std::string digest = push.out.substr(0, push.out.find('\n'));
  ASSERT_TRUE(digest.starts_with("sha256:")) << push.out;

  CommandResult pull = ImgtoolIn(Root2(), {"pull", "--tls-verify=false", ref});
  ASSERT_EQ(pull.exit_code, 0) << Describe(pull);
  auto store = store::Store::Open(Root2());
  ASSERT_TRUE(store);
  auto resolved = (*store)->index().Resolve(*store::ParseReference(ref));
  ASSERT_TRUE(resolved) << resolved.error().ToString();
  EXPECT_EQ(resolved->digest.ToString(), digest);
  CommandResult fsck = ImgtoolIn(Root2(), {"fsck"});
  EXPECT_EQ(fsck.exit_code, 0) << Describe(fsck);
  // The image is complete: its flattened rootfs has the file.
  CommandResult exported = ImgtoolIn(Root2(), {"export", ref, "-o", (Work() / "out.tar").string()});
  ASSERT_EQ(exported.exit_code, 0) << Describe(exported);
  CommandResult listing = RunCommand({"tar", "-tf", (Work() / "out.tar").string()});
  EXPECT_NE(listing.out.find("etc/greeting"), std::string::npos);

  // A second pull fetches nothing and prints the same ID.
  CommandResult again = ImgtoolIn(Root2(), {"pull", "--tls-verify=false", ref});
  ASSERT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_EQ(again.out, pull.out);
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
  // A quiet pull prints only the ID.
  CommandResult quiet = ImgtoolIn(Root2(), {"pull", "-q", "--tls-verify=false", ref});
  EXPECT_EQ(quiet.err, "");
  EXPECT_EQ(quiet.out, pull.out);
  // Pushing again: the registry has every blob.
  CommandResult repush = Imgtool({"push", "--tls-verify=false", "local/app:1", ref});
  ASSERT_EQ(repush.exit_code, 0) << Describe(repush);
  EXPECT_EQ(repush.out, push.out);
}

TEST_F(DistributionTest, PullUnpacksEveryLayerWhileItDownloads) {
  std::string ref = LoadAndPushLayers("streamed", MultiLayerImage());
  CommandResult pull =
      ImgtoolIn(Root2(), {"--log-level", "debug", "pull", "-q", "--tls-verify=false", ref});
  ASSERT_EQ(pull.exit_code, 0) << Describe(pull);
  for (int i = 1; i <= 3; ++i) {
    std::string line = "layer " + std::to_string(i) + " of 3 (";
    size_t at = pull.err.find(line);
    ASSERT_NE(at, std::string::npos) << line << " in " << pull.err;
    EXPECT_NE(pull.err.find("unpacked while it downloaded", at), std::string::npos) << pull.err;
  }
  // The streamed snapshots are the image's layers: complete, and nothing of
  // the streams' work is left (no active unpack snapshot, fsck clean).
  CommandResult exported =
      ImgtoolIn(Root2(), {"export", ref, "-o", (Work() / "streamed.tar").string()});
  ASSERT_EQ(exported.exit_code, 0) << Describe(exported);
  CommandResult listing = RunCommand({"tar", "-tf", (Work() / "streamed.tar").string()});
  for (const char* name : {"data0", "data1", "data2", "only-in-2"}) {
    EXPECT_NE(listing.out.find(name), std::string::npos) << name << " in " << listing.out;
  }
  ExpectNoActiveSnapshot(Root2());
}

TEST_F(DistributionTest, PullOfALayerRejectedMidStreamCommitsNothingOfIt) {
  cli::testing::BuiltImage image = MultiLayerImage();
  std::string ref = LoadAndPushLayers("rejected", image);
  // The registry serves other bytes of the same size for layer 2 (it does not
  // check what it reads back): the ingest rejects the blob at its end, after
  // the stream applied what it could.
  fs::path blob = RegistryBlob(image.layer_blobs[1]);
  std::string good = ::imgtool::testing::ReadTestFile(blob);
  std::string bad = good;
  bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x55);
  WriteTestFile(blob, bad);
  CommandResult pull =
      ImgtoolIn(Root2(), {"--log-level", "debug", "pull", "-q", "--tls-verify=false", ref});
  ASSERT_NE(pull.exit_code, 0) << Describe(pull);
  Digest layer2 = Digest::Sha256Of(image.layer_blobs[1]);
  EXPECT_NE(pull.err.find("imgtool: error: pull " + ref), std::string::npos) << pull.err;
  EXPECT_NE(pull.err.find(layer2.ToString()), std::string::npos) << pull.err;
  EXPECT_EQ(pull.err.find("layer 2 of 3 (" + layer2.ToString() + ") unpacked"), std::string::npos)
      << pull.err;
  std::vector<Digest> chain = ChainIds(image.diff_ids);
  std::string metadata = SnapshotMetadata(Root2());
  EXPECT_EQ(metadata.find(chain[1].ToString()), std::string::npos) << metadata;
  EXPECT_EQ(metadata.find(chain[2].ToString()), std::string::npos) << metadata;
  ExpectNoActiveSnapshot(Root2());
  CommandResult images = ImgtoolIn(Root2(), {"images", "-q"});
  EXPECT_EQ(images.out, "") << Describe(images);

  // With the right bytes back, the same store pulls the image.
  WriteTestFile(blob, good);
  CommandResult again = ImgtoolIn(Root2(), {"pull", "-q", "--tls-verify=false", ref});
  ASSERT_EQ(again.exit_code, 0) << Describe(again);
  ExpectNoActiveSnapshot(Root2());
}

TEST_F(DistributionTest, PullOfALayerWithAnotherDiffIdCommitsNothingOfIt) {
  cli::testing::BuiltImage good = MultiLayerImage();
  std::vector<Digest> ids = good.diff_ids;
  ids[1] = Digest::Sha256Of("not the layer");
  cli::testing::BuiltImage image = cli::testing::BuildImage(
      MultiLayerTars(), /*gzip=*/true, "wrong", cli::testing::ConfigJson(ids, "wrong"));
  std::string ref = LoadAndPushLayers("wrongdiff", image);
  CommandResult pull =
      ImgtoolIn(Root2(), {"--log-level", "debug", "pull", "-q", "--tls-verify=false", ref});
  ASSERT_NE(pull.exit_code, 0) << Describe(pull);
  // The stream's tree was refused, then the unpack from the blob failed too.
  EXPECT_NE(pull.err.find("streamed layer 2 of 3"), std::string::npos) << pull.err;
  EXPECT_NE(pull.err.find("imgtool: error: pull " + ref + ": unpack"), std::string::npos)
      << pull.err;
  EXPECT_NE(pull.err.find(ids[1].ToString()), std::string::npos) << pull.err;
  std::string metadata = SnapshotMetadata(Root2());
  std::vector<Digest> chain = ChainIds(ids);
  EXPECT_NE(metadata.find(chain[0].ToString()), std::string::npos) << metadata;
  EXPECT_EQ(metadata.find(chain[1].ToString()), std::string::npos) << metadata;
  ExpectNoActiveSnapshot(Root2());
  CommandResult images = ImgtoolIn(Root2(), {"images", "-q"});
  EXPECT_EQ(images.out, "") << Describe(images);
}

TEST_F(DistributionTest, RunPullsAMissingImage) {
  IMGTOOL_REQUIRE_ROOT();
  ImportImage("local/runme:1", "pulled by run\n");
  std::string ref = plain_->host() + "/test/runme:1";
  ASSERT_EQ(Imgtool({"push", "-q", "--tls-verify=false", "local/runme:1", ref}).exit_code, 0);
  // The registry is plain HTTP: run pulls with the insecure-registry setting.
  ::setenv("IMGTOOL_INSECURE_REGISTRIES", plain_->host().c_str(), 1);
  CommandResult never =
      ImgtoolIn(Root2(), {"run", "--rm", "--net", "none", "--pull=never", ref, "true"});
  EXPECT_EQ(never.exit_code, 125) << Describe(never);
  CommandResult run = ImgtoolIn(
      Root2(), {"run", "--rm", "--net", "none", ref, "/bin/busybox", "cat", "/etc/greeting"});
  ::unsetenv("IMGTOOL_INSECURE_REGISTRIES");
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_EQ(run.out, "pulled by run\n");
  EXPECT_NE(run.err.find("Unable to find image '" + ref + "' locally"), std::string::npos)
      << run.err;
  CommandResult images = ImgtoolIn(Root2(), {"images", "-q"});
  EXPECT_FALSE(images.out.empty()) << Describe(images);
  CommandResult fsck = ImgtoolIn(Root2(), {"fsck"});
  EXPECT_EQ(fsck.exit_code, 0) << Describe(fsck);
}

TEST_F(DistributionTest, UnknownTagIsOneErrorLine) {
  CommandResult pull = Imgtool({"pull", "--tls-verify=false", plain_->host() + "/no/such:tag"});
  ExpectError(pull, "MANIFEST_UNKNOWN");
  // HTTPS to a plain-HTTP registry fails at once, with the hint.
  auto start = std::chrono::steady_clock::now();
  CommandResult tls = Imgtool({"pull", plain_->host() + "/no/such:tag"});
  ExpectError(tls, "--tls-verify=false");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST_F(DistributionTest, SkopeoInteropBothWays) {
  IMGTOOL_REQUIRE_COMMAND("skopeo");
  ImportImage("local/sk:1", "from imgtool\n");
  // imgtool pushes, skopeo inspects the same digest.
  std::string ref = plain_->host() + "/interop/a:1";
  CommandResult push = Imgtool({"push", "--tls-verify=false", "local/sk:1", ref});
  ASSERT_EQ(push.exit_code, 0) << Describe(push);
  CommandResult inspect =
      RunCommand({"skopeo", "inspect", "--tls-verify=false", "docker://" + ref});
  ASSERT_EQ(inspect.exit_code, 0) << Describe(inspect);
  auto json = nlohmann::json::parse(inspect.out, nullptr, false);
  EXPECT_EQ(json.value("Digest", ""), push.out.substr(0, push.out.find('\n')));
  // skopeo pushes (from the store, an OCI layout) to another name; imgtool pulls it.
  std::string ref2 = plain_->host() + "/interop/b:2";
  CommandResult copy =
      RunCommand({"skopeo", "copy", "--dest-tls-verify=false",
                  "oci:" + Root().string() + ":docker.io/local/sk:1", "docker://" + ref2});
  ASSERT_EQ(copy.exit_code, 0) << Describe(copy);
  CommandResult pull = ImgtoolIn(Root2(), {"pull", "--tls-verify=false", ref2});
  ASSERT_EQ(pull.exit_code, 0) << Describe(pull);
  CommandResult exported = ImgtoolIn(Root2(), {"export", ref2, "-o", (Work() / "b.tar").string()});
  ASSERT_EQ(exported.exit_code, 0) << Describe(exported);
  fs::create_directories(Work() / "b");
  CommandResult untar =
      RunCommand({"tar", "-xf", (Work() / "b.tar").string(), "-C", (Work() / "b").string()});
  ASSERT_EQ(untar.exit_code, 0) << Describe(untar);
  EXPECT_EQ(::imgtool::testing::ReadTestFile(Work() / "b" / "etc" / "greeting"), "from imgtool\n");
}

TEST_F(DistributionTest, LoginLogoutAndTlsWithAPrivateCa) {
  StartTls();
  ImportImage("local/sec:1");
  std::string host = tls_->host();
  std::string ref = host + "/secure/app:1";
  // Without the CA: refused.
  CommandResult no_ca = Imgtool({"login", host, "-u", "alice", "--password-stdin"}, "s3cret\n");
  ExpectError(no_ca, "--cert-dir");
  // Wrong password.
  CommandResult wrong = Imgtool(
      {"login", host, "-u", "alice", "--password-stdin", "--cert-dir", cert_dir_}, "nope\n");
  ExpectError(wrong, "wrong username or password");
  EXPECT_EQ(wrong.err.find("nope"), std::string::npos);
  // Not logged in: push is unauthorized.
  CommandResult anon = Imgtool({"push", "--cert-dir", cert_dir_, "local/sec:1", ref});
  ExpectError(anon, "unauthorized");
  // Login stores the credentials (0600), then push and pull work.
  CommandResult login = Imgtool(
      {"login", host, "-u", "alice", "--password-stdin", "--cert-dir", cert_dir_}, "s3cret\n");
  ASSERT_EQ(login.exit_code, 0) << Describe(login);
  fs::path auth = Work() / "config" / "imgtool" / "auth.json";
  ASSERT_TRUE(fs::exists(auth));
  EXPECT_EQ(fs::status(auth).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  CommandResult push = Imgtool({"push", "--cert-dir", cert_dir_, "local/sec:1", ref});
  ASSERT_EQ(push.exit_code, 0) << Describe(push);
  EXPECT_EQ(push.err.find("s3cret"), std::string::npos);
  CommandResult pull = ImgtoolIn(Root2(), {"pull", "--cert-dir", cert_dir_, ref});
  ASSERT_EQ(pull.exit_code, 0) << Describe(pull);
  // --tls-verify=false also works without the CA.
  CommandResult insecure = ImgtoolIn(Root2(), {"pull", "-q", "--tls-verify=false", ref});
  EXPECT_EQ(insecure.exit_code, 0) << Describe(insecure);
  // Logout forgets them.
  CommandResult logout = Imgtool({"logout", host});
  ASSERT_EQ(logout.exit_code, 0) << Describe(logout);
  CommandResult after = ImgtoolIn(Root2(), {"pull", "--cert-dir", cert_dir_, ref});
  ExpectError(after, "unauthorized");
  ExpectError(Imgtool({"logout", host}), "not logged in");
}

// Two platforms of one image, as an index pushed by imgtool; pull picks one.
TEST_F(DistributionTest, PullSelectsThePlatformOfAMultiArchIndex) {
  auto opened = store::Store::Open(Root());
  ASSERT_TRUE(opened);
  store::Store& store = **opened;
  store::Index index;
  index.media_type = std::string(store::media_type::kOciIndex);
  std::map<std::string, std::string> configs;
  for (std::string arch : {"amd64", "arm64"}) {
    std::string layer = cli::testing::MakeTar({cli::testing::TarEntry("arch", arch + "\n")});
    Digest layer_digest;
    ASSERT_TRUE(store.content().WriteBlob(layer, &layer_digest));
    store::ImageConfig config;
    config.os = "linux";
    config.architecture = arch;
    if (arch == "arm64") config.variant = "v8";
    config.rootfs.diff_ids = {layer_digest};
    auto config_desc =
        store.WriteJsonBlob(store::media_type::kOciConfig, store::SerializeImageConfig(config));
    ASSERT_TRUE(config_desc);
    configs[arch] = config_desc->digest.hex();
    store::Manifest manifest;
    manifest.media_type = std::string(store::media_type::kOciManifest);
    manifest.config = *config_desc;
    store::Descriptor layer_desc;
    layer_desc.media_type = std::string(store::media_type::kOciLayerTar);
    layer_desc.digest = layer_digest;
    layer_desc.size = static_cast<int64_t>(layer.size());
    manifest.layers = {layer_desc};
    auto manifest_desc =
        store.WriteJsonBlob(store::media_type::kOciManifest, store::SerializeManifest(manifest));
    ASSERT_TRUE(manifest_desc);
    manifest_desc->platform = config.platform();
    index.manifests.push_back(*manifest_desc);
  }
  auto index_desc = store.WriteJsonBlob(store::media_type::kOciIndex, store::SerializeIndex(index));
  ASSERT_TRUE(index_desc);
  ASSERT_TRUE(store.index().Set(*store::ParseReference("local/multi:1"), *index_desc));

  std::string ref = plain_->host() + "/multi/img:1";
  CommandResult push = Imgtool({"push", "--tls-verify=false", "local/multi:1", ref});
  ASSERT_EQ(push.exit_code, 0) << Describe(push);
  EXPECT_EQ(push.out, index_desc->digest.ToString() + "\n");

  CommandResult arm =
      ImgtoolIn(Root2(), {"pull", "-q", "--tls-verify=false", "--platform", "linux/arm64", ref});
  ASSERT_EQ(arm.exit_code, 0) << Describe(arm);
  EXPECT_EQ(arm.out, configs["arm64"] + "\n");
  CommandResult amd = ImgtoolIn(
      Work() / "root3", {"pull", "-q", "--tls-verify=false", "--platform", "linux/amd64", ref});
  ASSERT_EQ(amd.exit_code, 0) << Describe(amd);
  EXPECT_EQ(amd.out, configs["amd64"] + "\n");
  CommandResult none =
      ImgtoolIn(Root2(), {"pull", "--tls-verify=false", "--platform", "linux/riscv64", ref});
  ExpectError(none, "no image for platform linux/riscv64");
}

// kill -9 in the middle of a pull leaves a store that fsck finds clean, and
// the next pull completes it.
TEST_F(DistributionTest, KilledPullLeavesACleanStore) {
  // A layer big enough to be mid-download when the pull is killed.
  fs::path dir = Work() / "big.d";
  fs::create_directories(dir);
  std::string data(48u << 20, '\0');
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < data.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(&data[i], &x, 8);
  }
  WriteTestFile(dir / "random", data);
  CommandResult tar =
      RunCommand({"tar", "-C", dir.string(), "-cf", (Work() / "big.tar").string(), "."});
  ASSERT_EQ(tar.exit_code, 0);
  Ok({"import", (Work() / "big.tar").string(), "local/big:1"});
  std::string ref = plain_->host() + "/big/img:1";
  ASSERT_EQ(Imgtool({"push", "-q", "--tls-verify=false", "local/big:1", ref}).exit_code, 0);

  for (int delay_ms : {30, 120, 400}) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      std::string bin = ::imgtool::testing::ImgtoolBinary();
      ::execl(bin.c_str(), bin.c_str(), "--root", Root2().c_str(), "pull", "--tls-verify=false",
              ref.c_str(), nullptr);
      ::_exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    CommandResult fsck = ImgtoolIn(Root2(), {"fsck"});
    EXPECT_EQ(fsck.exit_code, 0) << "after " << delay_ms << " ms: " << Describe(fsck);
  }
  CommandResult pull = ImgtoolIn(Root2(), {"pull", "-q", "--tls-verify=false", ref});
  ASSERT_EQ(pull.exit_code, 0) << Describe(pull);
  EXPECT_EQ(ImgtoolIn(Root2(), {"fsck"}).exit_code, 0);
}

}  // namespace
}  // namespace imgtool::registry
