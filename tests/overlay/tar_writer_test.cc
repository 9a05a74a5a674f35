#include "overlay/tar_writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "common/temp_dir.h"
#include "tests/overlay/layer_test_util.h"
#include "tests/support/test_util.h"

namespace imgtool::overlay {
namespace {

using ::imgtool::testing::RunCommand;
using ::imgtool::testing::WriteTestFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ListTar;
using testing::TarBuilder;

TEST(TarWriterTest, UstarWhenItFitsPaxOnlyWhenNeeded) {
  std::string split = std::string(60, 'p') + "/" + std::string(90, 'n');  // prefix + name
  std::string unsplittable = std::string(300, 'q');
  std::string long_link = "/" + std::string(150, 'l');
  TarHeader big_ids = TarBuilder::Header("ids", TarType::kRegular, 0644);
  big_ids.uid = 3000000000;
  big_ids.gid = 2097152;  // one past the 7 octal digits
  std::string tar = TarBuilder()
                        .File("short", "s")
                        .File(split, "p")
                        .File(unsplittable, "q")
                        .Symlink("sym", long_link)
                        .Add(big_ids, "")
                        .Tar();
  // Only "short" and the split name need no extended header: blocks 0 and 2 are ustar.
  EXPECT_EQ(tar[156], '0');
  EXPECT_EQ(tar[512 * 2 + 156], '0');
  EXPECT_EQ(tar[512 * 4 + 156], 'x');
  auto entries = ListTar(tar);
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(entries[0].name, "short");
  EXPECT_EQ(entries[1].name, split);
  EXPECT_EQ(entries[1].data, "p");
  EXPECT_EQ(entries[2].name, unsplittable);
  EXPECT_EQ(entries[2].data, "q");
  EXPECT_EQ(entries[3].link, long_link);
  EXPECT_EQ(entries[4].uid, 3000000000);
  EXPECT_EQ(entries[4].gid, 2097152);
  // GNU tar reads it too.
  auto dir = TempDir::Create("imgtool-tarw-");
  ASSERT_TRUE(dir.has_value());
  WriteTestFile(dir->path() / "t.tar", tar);
  auto r = RunCommand({"tar", "-tf", (dir->path() / "t.tar").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(unsplittable));
}

TEST(TarWriterTest, XattrsAreSortedBinarySafePaxRecords) {
  TarHeader h = TarBuilder::Header("f", TarType::kRegular, 0644);
  h.xattrs = {{"user.z", "last"},
              {"security.capability", std::string("\x01\0\0\x02", 4)},
              {"user.a", "first"}};
  std::string tar = TarBuilder().Add(h, "data").Tar();
  std::string pax(tar.data() + 512, 512);
  size_t cap = pax.find("SCHILY.xattr.security.capability");
  size_t a = pax.find("SCHILY.xattr.user.a=first");
  size_t z = pax.find("SCHILY.xattr.user.z=last");
  ASSERT_NE(cap, std::string::npos);
  ASSERT_NE(a, std::string::npos);
  ASSERT_NE(z, std::string::npos);
  EXPECT_LT(cap, a);
  EXPECT_LT(a, z);
  auto entries = ListTar(tar);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].xattrs["security.capability"], std::string("\x01\0\0\x02", 4));
  EXPECT_EQ(entries[0].xattrs["user.a"], "first");
  EXPECT_EQ(entries[0].data, "data");
}

TEST(TarWriterTest, HugeSizeGoesToPax) {
  StringSink sink;
  TarWriter writer(sink);
  TarHeader h = TarBuilder::Header("huge", TarType::kRegular, 0644);
  h.size = int64_t{9} << 30;
  ASSERT_TRUE(writer.WriteHeader(h).has_value());
  EXPECT_THAT(sink.data(), ::testing::IsEmpty());  // still buffered
  auto finish = writer.Finish();
  ASSERT_FALSE(finish.has_value());  // the data never came
  EXPECT_THAT(finish.error().ToString(), HasSubstr("missing 9663676416 bytes"));
}

TEST(TarWriterTest, EnforcesEntrySizes) {
  StringSink sink;
  TarWriter writer(sink);
  TarHeader h = TarBuilder::Header("f", TarType::kRegular, 0644);
  h.size = 3;
  ASSERT_TRUE(writer.WriteHeader(h).has_value());
  EXPECT_FALSE(writer.WriteData("toolong", 7).has_value());
  ASSERT_TRUE(writer.WriteData("ab", 2).has_value());
  auto early = writer.WriteHeader(TarBuilder::Header("g", TarType::kRegular, 0644));
  ASSERT_FALSE(early.has_value());
  EXPECT_EQ(early.error().code(), ErrorCode::kFailedPrecondition);
  ASSERT_TRUE(writer.WriteData("c", 1).has_value());
  ASSERT_TRUE(writer.Finish().has_value());
  EXPECT_EQ(sink.data().size(), 512u * 4);  // header, one data block, two end blocks
  EXPECT_EQ(writer.bytes_written(), 512 * 4);
}

TEST(TarWriterTest, SameHeadersSameBytes) {
  auto build = [] {
    return TarBuilder().Dir("d").File("d/f", "x").Symlink("l", "d/f").CharDevice("c", 1, 3).Tar();
  };
  EXPECT_EQ(build(), build());
  auto entries = ListTar(build());
  EXPECT_EQ(entries[0].name, "d/");
  EXPECT_EQ(entries[3].type, 'c');
}

}  // namespace
}  // namespace imgtool::overlay
