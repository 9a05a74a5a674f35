// Builds the default recipe (recipes/debian-hello.yaml) end to end: mmdebstrap
// fetches bookworm from its default mirror (network needed), then the image
// runs, then builds it again in another store root and gets the same digest.
// Also builds recipes/busybox/recipe.yaml, which needs no network.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool::testing {
namespace {

namespace fs = std::filesystem;

fs::path Sources() { return SourceDir(); }

// Runs the image's default command with imgtool run, or podman while imgtool
// has no run command.
CommandResult RunImage(const fs::path& root, const fs::path& scratch, const std::string& image) {
  if (RunImgtool(root, {"run", "--help"}).exit_code == 0) {
    return RunImgtool(root, {"run", "--rm", "--net", "none", image});
  }
  fs::path archive = scratch / "image.tar";
  CommandResult save = RunImgtool(root, {"save", image, "-o", archive.string()});
  if (save.exit_code != 0) return save;
  std::vector<std::string> podman = {"podman",
                                     "--root",
                                     (scratch / "podman").string(),
                                     "--runroot",
                                     (scratch / "podman-run").string(),
                                     "--storage-driver",
                                     "vfs",
                                     "--runtime",
                                     "runc",
                                     "--cgroup-manager",
                                     "cgroupfs",
                                     "--events-backend",
                                     "none"};
  std::vector<std::string> load = podman;
  load.insert(load.end(), {"load", "-i", archive.string()});
  CommandResult loaded = RunCommand(load);
  if (loaded.exit_code != 0) return loaded;
  std::vector<std::string> run = podman;
  run.insert(run.end(), {"run", "--rm", "--net", "none", "--ulimit", "nofile=20000:20000",
                         "--ulimit", "nproc=32768:32768", image});
  return RunCommand(run);
}

TEST(RecipesTest, BusyboxRecipeFromScratch) {
  IMGTOOL_REQUIRE_ROOT();
  if (!fs::exists("/bin/busybox")) GTEST_SKIP() << "needs /bin/busybox (busybox-static)";
  auto dir = TempDir::Create("/var/tmp", "imgtool-recipes-test-");
  ASSERT_TRUE(dir.has_value());
  fs::path context = dir->path() / "busybox";
  fs::create_directories(context);
  fs::copy_file(Sources() / "recipes/busybox/recipe.yaml", context / "recipe.yaml");
  fs::copy_file("/bin/busybox", context / "busybox");
  fs::path root = dir->path() / "root";
  CommandResult build = RunImgtool(root, {"build", (context / "recipe.yaml").string()});
  ASSERT_EQ(build.exit_code, 0) << build.err << build.out;
  CommandResult run = RunImage(root, dir->path(), "localhost/busybox-hello:latest");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "hello, world\n");
}

TEST(RecipesTest, DefaultDebianRecipeBuildsAndRuns) {
  IMGTOOL_REQUIRE_ROOT();
  if (!HaveCommand("mmdebstrap") && !HaveCommand("debootstrap")) {
    GTEST_SKIP() << "needs mmdebstrap or debootstrap (scripts/install-deps.sh installs them)";
  }
  auto dir = TempDir::Create("/var/tmp", "imgtool-debian-test-");
  ASSERT_TRUE(dir.has_value());
  fs::path root = dir->path() / "root";
  fs::path recipe = Sources() / "recipes/debian-hello.yaml";
  fs::path digest = dir->path() / "digest";
  CommandResult build =
      RunImgtool(root, {"build", "--digest-file", digest.string(), recipe.string()});
  ASSERT_EQ(build.exit_code, 0) << build.err << build.out;
  CommandResult run = RunImage(root, dir->path(), "localhost/debian-hello:latest");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("hello from imgtool"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("Debian GNU/Linux 12 (bookworm)"), std::string::npos) << run.out;

  // The base is cached: a second build bootstraps nothing and gives the same image.
  CommandResult again = RunImgtool(root, {"build", "--format", "json", recipe.string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  auto json = nlohmann::json::parse(again.out, nullptr, false);
  ASSERT_TRUE(json.is_object()) << again.out;
  for (const auto& step : json["steps"]) {
    if (step["layer"].get<bool>()) {
      EXPECT_TRUE(step["cached"].get<bool>()) << step;
    }
  }
  EXPECT_EQ(json["digest"].get<std::string>(), ReadTestFile(digest));

  // Reproducible: another store root, later, bootstraps again (mmdebstrap,
  // the mirror serving the same package versions) and gets the same digest.
  fs::path root2 = dir->path() / "root2";
  fs::path digest2 = dir->path() / "digest2";
  CommandResult second =
      RunImgtool(root2, {"build", "--digest-file", digest2.string(), recipe.string()});
  ASSERT_EQ(second.exit_code, 0) << second.err << second.out;
  EXPECT_NE(second.out.find("FROM debootstrap bookworm (minbase)"), std::string::npos);
  if (ReadTestFile(digest) != ReadTestFile(digest2)) {
    // Which layer differs: `imgtool build --verify-reproducible` names the files.
    ADD_FAILURE() << "not reproducible: " << ReadTestFile(digest) << " vs " << ReadTestFile(digest2)
                  << "\nfirst: "
                  << RunImgtool(root, {"inspect", "localhost/debian-hello:latest"}).out
                  << "\nsecond: "
                  << RunImgtool(root2, {"inspect", "localhost/debian-hello:latest"}).out;
  }
}

}  // namespace
}  // namespace imgtool::testing
