// The fixture of the builder's end-to-end tests: a scratch dir under /var/tmp
// with a store root and a build context holding base.tar, a busybox-static
// rootfs, and helpers that run `imgtool build` and look at what it made.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool::testing {

namespace fs = std::filesystem;

class BuildTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    if (!fs::exists("/bin/busybox")) GTEST_SKIP() << "needs /bin/busybox (busybox-static)";
    auto dir = TempDir::Create("/var/tmp", "imgtool-build-test-");
    ASSERT_TRUE(dir.has_value()) << dir.error().ToString();
    dir_ = std::move(*dir);
    root_ = dir_->path() / "root";
    context_ = dir_->path() / "ctx";
    fs::create_directories(context_);
    MakeBusyboxTar(context_ / "base.tar");
  }

  // A rootfs with /bin/busybox, its applets as links, /etc/passwd and /tmp.
  void MakeBusyboxTar(const fs::path& tar) {
    fs::path tree = dir_->path() / "busybox-tree";
    fs::create_directories(tree / "bin");
    fs::create_directories(tree / "etc");
    fs::create_directories(tree / "tmp");
    fs::permissions(tree / "tmp", fs::perms::all | fs::perms::sticky_bit);
    fs::copy_file("/bin/busybox", tree / "bin/busybox");
    for (const char* applet : {"sh",   "echo", "cat", "ls",   "mkdir", "rm",   "touch", "id",
                               "stat", "head", "dd",  "env",  "pwd",   "true", "false", "sleep",
                               "wc",   "ip",   "nc",  "grep", "awk",   "cut",  "chmod"}) {
      fs::create_symlink("busybox", tree / "bin" / applet);
    }
    WriteTestFile(tree / "etc/passwd",
                  "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n");
    WriteTestFile(tree / "etc/group", "root:x:0:\nuser:x:1000:\n");
    auto result = RunCommand({"tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0",
                              "--numeric-owner", "-C", tree.string(), "-cf", tar.string(), "."});
    ASSERT_EQ(result.exit_code, 0) << result.err;
  }

  CommandResult Build(const std::vector<std::string>& args, const fs::path& root = {}) {
    std::vector<std::string> all = {"build", "--network", "none"};
    all.insert(all.end(), args.begin(), args.end());
    return RunImgtool(root.empty() ? root_ : root, all);
  }

  void WriteRecipe(std::string_view text, const std::string& name = "recipe.yaml") {
    WriteTestFile(context_ / name, text);
  }

  nlohmann::json BuildJson(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--format", "json", (context_ / "recipe.yaml").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    CommandResult result = Build(args);
    EXPECT_EQ(result.exit_code, 0) << result.err << result.out;
    if (result.exit_code != 0) return nlohmann::json::object();
    return nlohmann::json::parse(result.out);
  }

  // The image's files, flattened, extracted under a fresh directory.
  fs::path Export(const std::string& image) {
    fs::path tar = dir_->path() / ("export-" + std::to_string(++exports_) + ".tar");
    CommandResult result = RunImgtool(root_, {"export", image, "-o", tar.string()});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    fs::path out = dir_->path() / ("export-" + std::to_string(exports_));
    fs::create_directories(out);
    auto untar = RunCommand({"tar", "--numeric-owner", "-xpf", tar.string(), "-C", out.string()});
    EXPECT_EQ(untar.exit_code, 0) << untar.err;
    return out;
  }

  nlohmann::json Inspect(const std::string& image) {
    CommandResult result = RunImgtool(root_, {"inspect", image});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    auto json = nlohmann::json::parse(result.out, nullptr, false);
    return json.is_array() && !json.empty() ? json[0] : json;
  }

  std::optional<TempDir> dir_;
  fs::path root_;
  fs::path context_;
  int exports_ = 0;
};

}  // namespace imgtool::testing
