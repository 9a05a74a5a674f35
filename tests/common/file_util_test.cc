#include "common/file_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool {
namespace {

namespace fs = std::filesystem;

struct stat StatOf(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st;
}

// What the caches of index.json and snapshot metadata go by: the same file,
// unchanged; a replace by rename or a write in place is a change.
TEST(SameFileUnchangedTest, ReplaceAndWriteInPlaceAreChanges) {
  Result<TempDir> dir = TempDir::Create("imgtool-same-file-");
  ASSERT_TRUE(dir);
  fs::path file = dir->path() / "index.json";
  ASSERT_TRUE(WriteFileAtomic(file, "first"));
  struct stat first = StatOf(file);
  EXPECT_TRUE(SameFileUnchanged(first, StatOf(file)));

  // Same size, new file.
  ASSERT_TRUE(WriteFileAtomic(file, "again"));
  struct stat replaced = StatOf(file);
  EXPECT_FALSE(SameFileUnchanged(first, replaced));

  // Same inode, written in place. (Same size too would rest on the
  // kernel's timestamps, coarse on older kernels.)
  ::imgtool::testing::WriteTestFile(file, "third version");
  EXPECT_FALSE(SameFileUnchanged(replaced, StatOf(file)));
}

}  // namespace
}  // namespace imgtool
