#include "common/safe_path.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool {
namespace {

namespace fs = std::filesystem;
using ::imgtool::testing::ReadTestFile;
using ::imgtool::testing::WriteTestFile;

// Runs every case twice: through openat2 and through the fallback walk.
class SafePathTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    SetSafePathFallbackForTesting(GetParam());
    auto dir = TempDir::Create("safe-path-");
    ASSERT_TRUE(dir);
    tmp_ = std::make_unique<TempDir>(std::move(dir).value());
    root_ = tmp_->path() / "root";
    outside_ = tmp_->path() / "outside";
    fs::create_directories(root_ / "etc");
    fs::create_directories(outside_);
    WriteTestFile(root_ / "etc" / "passwd", "inside");
    WriteTestFile(outside_ / "secret", "outside");
    root_fd_.reset(::open(root_.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(root_fd_);
  }
  void TearDown() override { SetSafePathFallbackForTesting(false); }

  std::string ReadVia(std::string_view path) {
    auto fd = SafeOpenAt(root_fd_.get(), path, O_RDONLY);
    if (!fd) return "error: " + fd.error().ToString();
    char buf[64] = {};
    ssize_t n = ::read(fd->get(), buf, sizeof(buf) - 1);
    return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
  }

  std::unique_ptr<TempDir> tmp_;
  fs::path root_, outside_;
  UniqueFd root_fd_;
};

TEST_P(SafePathTest, OpensPlainPaths) {
  EXPECT_EQ(ReadVia("etc/passwd"), "inside");
  EXPECT_EQ(ReadVia("/etc/passwd"), "inside");
  EXPECT_EQ(ReadVia("./etc//passwd"), "inside");
}

TEST_P(SafePathTest, DotDotStaysInRoot) {
  EXPECT_EQ(ReadVia("../../../../etc/passwd"), "inside");
  EXPECT_EQ(ReadVia("etc/../../outside/secret").rfind("error:", 0), 0u);
}

TEST_P(SafePathTest, AbsoluteSymlinkResolvesInsideRoot) {
  fs::create_symlink("/etc", root_ / "link");
  EXPECT_EQ(ReadVia("link/passwd"), "inside");
  fs::create_symlink(outside_ / "secret", root_ / "escape");
  EXPECT_NE(ReadVia("escape"), "outside");
}

TEST_P(SafePathTest, RelativeSymlinkCannotClimbOut) {
  fs::create_symlink("../../../../../outside", root_ / "up");
  EXPECT_NE(ReadVia("up/secret"), "outside");
}

TEST_P(SafePathTest, CreateThroughEscapingSymlinkLandsInside) {
  fs::create_symlink(outside_.string(), root_ / "out");
  auto fd = SafeMkdirAll(root_fd_.get(), "out", 0755);
  ASSERT_TRUE(fd) << fd.error().ToString();
  auto parent = SafeOpenParent(root_fd_.get(), "out/new");
  ASSERT_TRUE(parent) << parent.error().ToString();
  int file = ::openat(parent->fd.get(), parent->name.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(file, 0);
  ::close(file);
  EXPECT_FALSE(fs::exists(outside_ / "new"));
  EXPECT_TRUE(fs::exists(root_ / outside_.relative_path() / "new"));
}

TEST_P(SafePathTest, ParentOfRootIsAnError) {
  EXPECT_FALSE(SafeOpenParent(root_fd_.get(), "/"));
  EXPECT_FALSE(SafeOpenParent(root_fd_.get(), ".."));
  auto p = SafeOpenParent(root_fd_.get(), "etc/passwd");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->name, "passwd");
}

TEST_P(SafePathTest, SymlinkLoopIsAnError) {
  fs::create_symlink("b", root_ / "a");
  fs::create_symlink("a", root_ / "b");
  auto fd = SafeOpenAt(root_fd_.get(), "a/x", O_RDONLY);
  ASSERT_FALSE(fd);
  EXPECT_EQ(fd.error().sys_errno(), ELOOP);
}

INSTANTIATE_TEST_SUITE_P(Openat2AndFallback, SafePathTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Fallback" : "Openat2"; });

TEST(CleanPathInRootTest, Cleans) {
  EXPECT_EQ(*CleanPathInRoot("./a//b/./c/"), "a/b/c");
  EXPECT_EQ(*CleanPathInRoot("/a/b/../c"), "a/c");
  EXPECT_EQ(*CleanPathInRoot("."), "");
  EXPECT_FALSE(CleanPathInRoot("a/../../b"));
  EXPECT_FALSE(CleanPathInRoot(".."));
}

}  // namespace
}  // namespace imgtool
