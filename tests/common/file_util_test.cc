#include "common/file_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/file_cache.h"
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

// Sorted by byte value whatever order the filesystem lists in, without "."
// and "..", through a descriptor of its own: the caller's stays open.
TEST(ListDirNamesTest, SortedNamesAndTheCallersFdUntouched) {
  Result<TempDir> dir = TempDir::Create("imgtool-list-dir-");
  ASSERT_TRUE(dir);
  for (const char* name : {"b", "a", "Z", "a.b", "a-b", ".hidden"}) {
    ASSERT_TRUE(WriteFileAtomic(dir->path() / name, "x"));
  }
  fs::create_directory(dir->path() / "sub");
  UniqueFd fd(::open(dir->path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  Result<std::vector<std::string>> names = ListDirNames(fd.get());
  ASSERT_TRUE(names) << names.error().ToString();
  EXPECT_EQ(*names, (std::vector<std::string>{".hidden", "Z", "a", "a-b", "a.b", "b", "sub"}));
  Result<std::vector<std::string>> again = ListDirNames(fd.get());
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *names);

  Result<std::vector<std::string>> empty = ListDirNames(
      UniqueFd(::open((dir->path() / "sub").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)).get());
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());

  UniqueFd file(::open((dir->path() / "a").c_str(), O_RDONLY | O_CLOEXEC));
  Result<std::vector<std::string>> not_dir = ListDirNames(file.get());
  ASSERT_FALSE(not_dir);
  EXPECT_NE(not_dir.error().message().find("open directory"), std::string::npos)
      << not_dir.error().ToString();
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

// FileContentCache parses a file once while it stays the same file, again
// after a replace, and answers nullopt (no parse) for a missing file.
TEST(FileContentCacheTest, ParsesOncePerVersionOfTheFile) {
  Result<TempDir> dir = TempDir::Create("imgtool-file-cache-");
  ASSERT_TRUE(dir);
  fs::path file = dir->path() / "metadata.json";
  FileContentCache<std::string> cache;
  int parses = 0;
  auto parse = [&parses](const std::string& text) -> Result<std::string> {
    ++parses;
    if (text == "bad") return InvalidArgumentError("bad contents");
    return "parsed " + text;
  };
  Result<std::optional<std::string>> missing = cache.Get(file, 1024, parse);
  ASSERT_TRUE(missing) << missing.error().ToString();
  EXPECT_FALSE(missing->has_value());

  ASSERT_TRUE(WriteFileAtomic(file, "one"));
  for (int i = 0; i < 2; ++i) {
    Result<std::optional<std::string>> got = cache.Get(file, 1024, parse);
    ASSERT_TRUE(got && got->has_value());
    EXPECT_EQ(**got, "parsed one");
  }
  EXPECT_EQ(parses, 1);

  ASSERT_TRUE(WriteFileAtomic(file, "two"));
  Result<std::optional<std::string>> replaced = cache.Get(file, 1024, parse);
  ASSERT_TRUE(replaced && replaced->has_value());
  EXPECT_EQ(**replaced, "parsed two");
  EXPECT_EQ(parses, 2);

  // A parse error is the caller's, and nothing is kept from it.
  ASSERT_TRUE(WriteFileAtomic(file, "bad"));
  Result<std::optional<std::string>> bad = cache.Get(file, 1024, parse);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().ToString().find("bad contents"), std::string::npos);
  EXPECT_FALSE(cache.Get(file, 1024, parse));
  EXPECT_EQ(parses, 4);
}

}  // namespace
}  // namespace imgtool
