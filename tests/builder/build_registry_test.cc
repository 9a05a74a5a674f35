// imgtool build --push against a real docker-registry on a loopback port: the
// image goes to the registry of each of its names after tagging, and pulls
// back with the same digest.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "tests/builder/build_fixture.h"
#include "tests/support/registry_process.h"

namespace imgtool::testing {
namespace {

class BuildPushTest : public BuildTest {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_COMMAND("docker-registry");
    BuildTest::SetUp();
    if (IsSkipped()) return;
    // Credentials files of the user running the tests stay out of it.
    ::setenv("XDG_CONFIG_HOME", (dir_->path() / "config").c_str(), 1);
    ::setenv("DOCKER_CONFIG", (dir_->path() / "docker").c_str(), 1);
    registry_ = StartRegistry(dir_->path() / "registry", false);
    ASSERT_NE(registry_, nullptr) << "docker-registry did not start";
  }

  std::unique_ptr<RegistryProcess> registry_;
};

TEST_F(BuildPushTest, PushSendsEveryTagAfterTagging) {
  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: echo pushed-by-build > /greeting
config:
  cmd: [/bin/cat, /greeting]
)");
  std::string one = registry_->host() + "/built/app:1";
  std::string two = registry_->host() + "/built/other:2";
  fs::path digest_file = dir_->path() / "digest";
  CommandResult result =
      Build({(context_ / "recipe.yaml").string(), "-t", one, "-t", two, "--push",
             "--tls-verify=false", "--digest-file", digest_file.string(), "--format", "json"});
  ASSERT_EQ(result.exit_code, 0) << result.err << result.out;
  std::string digest = ReadTestFile(digest_file);
  auto json = nlohmann::json::parse(result.out);
  ASSERT_EQ(json["pushed"].size(), 2u) << result.out;
  EXPECT_EQ(json["pushed"][0]["reference"], one);
  EXPECT_EQ(json["pushed"][0]["digest"], digest);
  EXPECT_EQ(json["pushed"][1]["reference"], two);
  EXPECT_NE(result.err.find("pushed " + one + "@" + digest), std::string::npos) << result.err;

  // Another store pulls both names and gets the image the build made.
  fs::path root2 = dir_->path() / "root2";
  for (const std::string& ref : {one, two}) {
    CommandResult pull = RunImgtool(root2, {"pull", "-q", "--tls-verify=false", ref});
    ASSERT_EQ(pull.exit_code, 0) << ref << ": " << pull.err;
    CommandResult inspect = RunImgtool(root2, {"inspect", "--format", "json", ref});
    EXPECT_NE(inspect.out.find(digest), std::string::npos) << inspect.out;
  }
  if (HaveCommand("skopeo")) {
    CommandResult inspect =
        RunCommand({"skopeo", "inspect", "--tls-verify=false", "docker://" + one});
    ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
    EXPECT_EQ(nlohmann::json::parse(inspect.out).value("Digest", ""), digest);
  }
}

TEST_F(BuildPushTest, PushWithoutANameIsRefusedBeforeBuilding) {
  WriteRecipe("from: { rootfs: base.tar }\nsteps:\n  - run: echo should-not-run\n");
  CommandResult result = Build({(context_ / "recipe.yaml").string(), "--push"});
  EXPECT_EQ(result.exit_code, 125);
  EXPECT_NE(result.err.find("--push: the image has no name to push to"), std::string::npos)
      << result.err;
  EXPECT_EQ(result.out.find("should-not-run"), std::string::npos) << result.out;
}

TEST_F(BuildPushTest, FailedPushNamesTheTag) {
  WriteRecipe("from: { rootfs: base.tar }\n");
  // HTTPS to a plain-HTTP registry fails; the image stays tagged in the store.
  std::string ref = registry_->host() + "/built/tls:1";
  CommandResult result = Build({(context_ / "recipe.yaml").string(), "-t", ref, "--push"});
  EXPECT_EQ(result.exit_code, 125) << result.out;
  EXPECT_NE(result.err.find("--push: push " + ref), std::string::npos) << result.err;
  EXPECT_EQ(RunImgtool(root_, {"inspect", ref}).exit_code, 0);
}

// A from: image missing from the store is pulled in-process with the build's
// registry flags: a private CA (--cert-dir) and Basic auth (--creds).
TEST_F(BuildPushTest, MissingBaseIsPulledWithCertDirAndCreds) {
  IMGTOOL_REQUIRE_COMMAND("openssl");
  IMGTOOL_REQUIRE_COMMAND("htpasswd");
  fs::path tls_dir = dir_->path() / "tls";
  ASSERT_TRUE(MakeTlsRegistryFiles(tls_dir, "alice", "s3cret"));
  auto tls = StartRegistry(tls_dir, true);
  ASSERT_NE(tls, nullptr) << "docker-registry (TLS) did not start";
  const std::string cert_dir = (tls_dir / "certs").string();
  const std::string ref = tls->host() + "/bases/busybox:1";
  fs::path other = dir_->path() / "other-root";
  ASSERT_EQ(RunImgtool(other, {"import", (context_ / "base.tar").string(), ref}).exit_code, 0);
  CommandResult pushed = RunImgtool(
      other, {"push", "-q", "--cert-dir", cert_dir, "--creds", "alice:s3cret", ref});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.err;

  WriteRecipe("from: { image: " + ref + " }\nsteps:\n  - run: echo on-a-pulled-base > /note\n");
  const std::string recipe = (context_ / "recipe.yaml").string();
  CommandResult anonymous = Build({recipe, "-t", "pulled:1", "--cert-dir", cert_dir});
  EXPECT_EQ(anonymous.exit_code, 125) << anonymous.out;
  EXPECT_NE(anonymous.err.find("pull " + ref), std::string::npos) << anonymous.err;
  EXPECT_EQ(anonymous.err.find("s3cret"), std::string::npos) << anonymous.err;

  CommandResult built =
      Build({recipe, "-t", "pulled:1", "--cert-dir", cert_dir, "--creds", "alice:s3cret"});
  ASSERT_EQ(built.exit_code, 0) << built.err << built.out;
  EXPECT_EQ(RunImgtool(root_, {"inspect", ref}).exit_code, 0) << "the base is in the store";
  EXPECT_EQ(RunImgtool(root_, {"inspect", "pulled:1"}).exit_code, 0);
}

}  // namespace
}  // namespace imgtool::testing
