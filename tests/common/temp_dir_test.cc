#include "common/temp_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

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

TEST(RemoveTreeTest, RemovesNestedTreeWithoutFollowingSymlinks) {
  Result<TempDir> parent = TempDir::Create("imgtool-test-");
  ASSERT_TRUE(parent.has_value());
  fs::path outside = parent->path() / "outside";
  fs::create_directories(outside);
  std::ofstream(outside / "keep") << "kept";
  fs::path tree = parent->path() / "tree";
  fs::create_directories(tree / "a" / "b" / "c");
  fs::create_directories(tree / "empty");
  std::ofstream(tree / "a" / "file") << "x";
  std::ofstream(tree / "a" / "b" / "c" / "deep") << "y";
  fs::create_directory_symlink(outside, tree / "a" / "to-outside");
  fs::create_symlink("/nonexistent", tree / "dangling");
  ASSERT_EQ(::mkfifo((tree / "fifo").c_str(), 0600), 0);
  // A directory as read-only as an image's may be.
  ASSERT_EQ(::chmod((tree / "a" / "b").c_str(), 0555), 0);

  ASSERT_TRUE(RemoveTree(tree).has_value());
  EXPECT_FALSE(fs::exists(fs::symlink_status(tree)));
  EXPECT_TRUE(fs::exists(outside / "keep"));
}

TEST(RemoveTreeTest, RemovesMoreEntriesThanOneDirectoryRead) {
  Result<TempDir> parent = TempDir::Create("imgtool-test-");
  ASSERT_TRUE(parent.has_value());
  fs::path tree = parent->path() / "many";
  fs::create_directories(tree / "sub");
  // Long names: far more than one 4 KB getdents buffer.
  for (int i = 0; i < 400; ++i) {
    std::string name = std::string(100, 'n') + std::to_string(i);
    std::ofstream(tree / name) << i;
    std::ofstream(tree / "sub" / name) << i;
  }
  ASSERT_TRUE(RemoveTree(tree).has_value());
  EXPECT_FALSE(fs::exists(tree));
}

TEST(RemoveTreeTest, MissingPathFileAndSymlink) {
  Result<TempDir> parent = TempDir::Create("imgtool-test-");
  ASSERT_TRUE(parent.has_value());
  EXPECT_TRUE(RemoveTree(parent->path() / "missing").has_value());
  fs::path file = parent->path() / "file";
  std::ofstream(file) << "x";
  EXPECT_TRUE(RemoveTree(file).has_value());
  EXPECT_FALSE(fs::exists(file));
  // A symlink to a directory goes, the directory stays.
  fs::path dir = parent->path() / "dir";
  fs::create_directories(dir / "inner");
  fs::create_directory_symlink(dir, parent->path() / "link");
  EXPECT_TRUE(RemoveTree(parent->path() / "link").has_value());
  EXPECT_FALSE(fs::exists(fs::symlink_status(parent->path() / "link")));
  EXPECT_TRUE(fs::exists(dir / "inner"));
}

TEST(RemoveTreeTest, TreeDeeperThanTheFastPathGoes) {
  Result<TempDir> parent = TempDir::Create("imgtool-test-");
  ASSERT_TRUE(parent.has_value());
  fs::path tree = parent->path() / "deep";
  fs::path leaf = tree;
  for (int i = 0; i < 200; ++i) leaf /= "d";
  fs::create_directories(leaf);
  std::ofstream(leaf / "file") << "x";
  ASSERT_TRUE(RemoveTree(tree).has_value());
  EXPECT_FALSE(fs::exists(tree));
}

}  // namespace
}  // namespace imgtool
