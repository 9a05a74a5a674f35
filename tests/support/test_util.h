// Shared helpers for the test suites: running commands, skipping with a reason.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace imgtool::testing {

struct CommandResult {
  int exit_code = -1;  // 128+N when killed by signal N
  std::string out;
  std::string err;
};

// Runs argv (PATH lookup) with `input` on stdin; captures stdout and stderr.
CommandResult RunCommand(const std::vector<std::string>& argv, std::string_view input = "",
                         const std::vector<std::string>& extra_env = {});

// True when `name` is an executable on PATH.
bool HaveCommand(std::string_view name);

// The imgtool binary under test ($IMGTOOL_BINARY, set by ctest).
std::string ImgtoolBinary();
// The source tree: $IMGTOOL_SOURCE_DIR, else the one the tests were built from.
std::filesystem::path SourceDir();

// Runs imgtool with "--root ROOT" in front of args.
CommandResult RunImgtool(const std::filesystem::path& root, const std::vector<std::string>& args,
                         std::string_view input = "");

void WriteTestFile(const std::filesystem::path& path, std::string_view content,
                   unsigned mode = 0644);
std::string ReadTestFile(const std::filesystem::path& path);

}  // namespace imgtool::testing

// Skips the test, with the reason in the output, when not running as root.
#define IMGTOOL_REQUIRE_ROOT()                                                      \
  do {                                                                              \
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts, chown, mknod); run as root"; \
  } while (0)

// Skips the test when a host tool it compares against is missing.
#define IMGTOOL_REQUIRE_COMMAND(name)                                                   \
  do {                                                                                  \
    if (!::imgtool::testing::HaveCommand(name))                                         \
      GTEST_SKIP() << "needs `" << (name) << "` on PATH (scripts/install-deps.sh installs it)"; \
  } while (0)
