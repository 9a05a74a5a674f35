#include "common/temp_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

namespace imgtool {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

TEST(TempDirTest, RemovedWithItsOwner) {
  fs::path path;
  {
    Result<TempDir> dir = TempDir::Create("imgtool-test-");
    ASSERT_TRUE(dir.has_value()) << dir.error().ToString();
    path = dir->path();
    ASSERT_TRUE(fs::is_directory(path));
    ASSERT_EQ(::mkdir((path / "ro").c_str(), 0500), 0);
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(TempDirTest, SweepRemovesOnlyAbandonedDirs) {
  Result<TempDir> parent = TempDir::Create("imgtool-test-");
  ASSERT_TRUE(parent.has_value());
  Result<TempDir> live = TempDir::Create(parent->path(), "flatten-");
  ASSERT_TRUE(live.has_value());
  // What a crashed owner leaves: a directory nobody holds a lock on.
  ASSERT_EQ(::mkdir((parent->path() / "flatten-crashed").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((parent->path() / "flatten-crashed" / "sub").c_str(), 0500), 0);
  ASSERT_EQ(::mkdir((parent->path() / "other-owner").c_str(), 0700), 0);

  // Within the grace period, nothing goes.
  Result<int> young = RemoveAbandonedTempDirs(parent->path(), "flatten-", seconds(3600));
  ASSERT_TRUE(young.has_value()) << young.error().ToString();
  EXPECT_EQ(*young, 0);
  EXPECT_TRUE(fs::exists(parent->path() / "flatten-crashed"));

  Result<int> swept = RemoveAbandonedTempDirs(parent->path(), "flatten-", seconds(0));
  ASSERT_TRUE(swept.has_value()) << swept.error().ToString();
  EXPECT_EQ(*swept, 1);
  EXPECT_FALSE(fs::exists(parent->path() / "flatten-crashed"));
  EXPECT_TRUE(fs::exists(live->path())) << "a live owner's directory stays";
  EXPECT_TRUE(fs::exists(parent->path() / "other-owner")) << "other prefixes stay";
}

TEST(TempDirTest, ReleasedDirIsNoLongerLocked) {
  Result<TempDir> parent = TempDir::Create("imgtool-test-");
  ASSERT_TRUE(parent.has_value());
  Result<TempDir> dir = TempDir::Create(parent->path(), "keep-");
  ASSERT_TRUE(dir.has_value());
  fs::path kept = dir->Release();
  Result<int> swept = RemoveAbandonedTempDirs(parent->path(), "keep-", seconds(0));
  ASSERT_TRUE(swept.has_value());
  EXPECT_EQ(*swept, 1);
  EXPECT_FALSE(fs::exists(kept));
}

TEST(TempDirTest, MissingParentIsEmpty) {
  Result<int> swept = RemoveAbandonedTempDirs("/nonexistent/imgtool-scratch", "", seconds(0));
  ASSERT_TRUE(swept.has_value());
  EXPECT_EQ(*swept, 0);
}

}  // namespace
}  // namespace imgtool
