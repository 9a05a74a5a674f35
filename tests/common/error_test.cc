#include "common/error.h"

#include <gtest/gtest.h>

#include "common/file_lock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/scope_guard.h"
#include "common/temp_dir.h"

namespace imgtool {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgumentError(std::to_string(x));
  return x / 2;
}

TEST(ErrorTest, WrapPrependsContext) {
  Error e = ErrnoError("rename a b", EEXIST);
  e.Wrap("commit snapshot").Wrap("build step 3");
  EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(e.ToString(), "build step 3: commit snapshot: rename a b: File exists");
}

Status Chain(int x) {
  IMGTOOL_ASSIGN_OR_RETURN(int h, Half(x));
  IMGTOOL_ASSIGN_OR_RETURN(h, Half(h));
  (void)h;
  return OkStatus();
}

TEST(ErrorTest, MacrosPropagate) {
  EXPECT_TRUE(Chain(8));
  Status s = Chain(6);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.error().message(), "3");
}

TEST(ErrorTest, ErrnoCodes) {
  EXPECT_EQ(ErrnoError("x", ENOENT).code(), ErrorCode::kNotFound);
  EXPECT_EQ(ErrnoError("x", EACCES).code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(ErrnoError("x", ENOSPC).code(), ErrorCode::kUnavailable);
}

TEST(ScopeGuardTest, RunsUnlessCancelled) {
  int runs = 0;
  {
    ScopeGuard g([&] { ++runs; });
  }
  {
    ScopeGuard g([&] { ++runs; });
    g.Cancel();
  }
  EXPECT_EQ(runs, 1);
}

TEST(TempDirTest, RemovesReadOnlyTrees) {
  std::filesystem::path path;
  {
    auto dir = TempDir::Create("tempdir-test-");
    ASSERT_TRUE(dir);
    path = dir->path();
    std::filesystem::create_directories(path / "a" / "b");
    ASSERT_TRUE(WriteFileAtomic(path / "a" / "b" / "f", "x"));
    std::filesystem::permissions(path / "a", std::filesystem::perms::owner_read |
                                                 std::filesystem::perms::owner_exec);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(FileUtilTest, AtomicWriteReplaces) {
  auto dir = TempDir::Create("atomic-");
  ASSERT_TRUE(dir);
  auto file = dir->path() / "f";
  ASSERT_TRUE(WriteFileAtomic(file, "one"));
  ASSERT_TRUE(WriteFileAtomic(file, "two", 0600));
  EXPECT_EQ(*ReadFileToString(file), "two");
  EXPECT_EQ(std::filesystem::status(file).permissions(),
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  // Only the file itself is left: no temp files.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir->path()),
                          std::filesystem::directory_iterator()),
            1);
}

TEST(FileLockTest, ExclusiveExcludes) {
  auto dir = TempDir::Create("lock-");
  ASSERT_TRUE(dir);
  auto path = dir->path() / "lock";
  auto first = FileLock::Acquire(path, FileLock::Mode::kExclusive);
  ASSERT_TRUE(first);
  auto second = FileLock::TryAcquire(path, FileLock::Mode::kShared);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace imgtool
