// A temp store root and helpers to drive the real imgtool binary against it.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool::cli::testing {

namespace fs = std::filesystem;
using ::imgtool::testing::CommandResult;

inline std::string Describe(const CommandResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout: " + r.out.substr(0, 4000) +
         "\nstderr: " + r.err;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("imgtool-cli-test-");
    ASSERT_TRUE(dir) << dir.error().ToString();
    work_ = std::make_unique<TempDir>(std::move(dir).value());
  }

  fs::path Work() const { return work_->path(); }
  fs::path Root() const { return Work() / "root"; }

  CommandResult Imgtool(const std::vector<std::string>& args, std::string_view input = "") const {
    return ::imgtool::testing::RunImgtool(Root(), args, input);
  }
  CommandResult ImgtoolIn(const fs::path& root, const std::vector<std::string>& args,
                          std::string_view input = "") const {
    return ::imgtool::testing::RunImgtool(root, args, input);
  }
  CommandResult ImgtoolEnv(const std::vector<std::string>& args,
                           const std::vector<std::string>& env) const {
    std::vector<std::string> argv = {::imgtool::testing::ImgtoolBinary(), "--root",
                                     Root().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return ::imgtool::testing::RunCommand(argv, "", env);
  }

  // Runs and requires success; returns stdout.
  std::string Ok(const std::vector<std::string>& args, std::string_view input = "") const {
    CommandResult r = Imgtool(args, input);
    EXPECT_EQ(r.exit_code, 0) << (args.empty() ? "" : args[0]) << ": " << Describe(r);
    return r.out;
  }

  // A failure of imgtool itself: exit 125 and exactly one stderr line
  // "imgtool: error: ..." that contains `want`.
  static void ExpectError(const CommandResult& r, std::string_view want) {
    EXPECT_EQ(r.exit_code, 125) << Describe(r);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << Describe(r);
    EXPECT_TRUE(r.err.starts_with("imgtool: error: ")) << Describe(r);
    EXPECT_NE(r.err.find(want), std::string::npos) << "want \"" << want << "\"\n" << Describe(r);
  }

  // A small real rootfs (busybox and a few files) as a tar made by `tar`.
  fs::path RootfsTar(const std::string& name = "rootfs.tar",
                     const std::string& greeting = "hello\n") const {
    fs::path dir = Work() / (name + ".d");
    fs::create_directories(dir / "bin");
    fs::copy_file("/bin/busybox", dir / "bin" / "busybox", fs::copy_options::overwrite_existing);
    if (!fs::is_symlink(dir / "bin" / "sh")) fs::create_symlink("busybox", dir / "bin" / "sh");
    ::imgtool::testing::WriteTestFile(dir / "etc" / "greeting", greeting);
    ::imgtool::testing::WriteTestFile(dir / "etc" / "secret", "s3cret\n", 0600);
    fs::path tar = Work() / name;
    CommandResult r = ::imgtool::testing::RunCommand(
        {"tar", "--sort=name", "--mtime=@1700000000", "--owner=0", "--group=0", "--numeric-owner",
         "-C", dir.string(), "-cf", tar.string(), "."});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return tar;
  }

  nlohmann::json Inspect(const std::string& image) const {
    CommandResult r = Imgtool({"inspect", image});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_array() && j.size() == 1) << r.out;
    return j.is_array() && !j.empty() ? j[0] : nlohmann::json::object();
  }

  std::unique_ptr<TempDir> work_;
};

}  // namespace imgtool::cli::testing
