#include "overlay/differ.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "common/temp_dir.h"
#include "tests/overlay/layer_test_util.h"
#include "tests/support/test_util.h"

namespace imgtool::overlay {
namespace {

namespace fs = std::filesystem;
using ::imgtool::testing::RunCommand;
using ::imgtool::testing::WriteTestFile;
using testing::BytesFd;
using testing::Compress;
using testing::Decompress;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ListTar;
using testing::TarBuilder;
using testing::TarNames;
using testing::TestData;

void SetMtime(const fs::path& p, int64_t sec) {
  struct timespec t[2] = {{sec, 0}, {sec, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), t, AT_SYMLINK_NOFOLLOW), 0) << p;
}

void SetAllMtimes(const fs::path& root, int64_t sec) {
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    SetMtime(it->path(), sec);
  }
}

class DifferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("imgtool-diff-");
    ASSERT_TRUE(dir.has_value());
    tmp_ = std::make_unique<TempDir>(std::move(dir).value());
    tree_ = tmp_->path() / "tree";
    fs::create_directories(tree_);
  }

  void MakeSampleTree() {
    WriteTestFile(tree_ / "usr/bin/tool", TestData(700000), 0755);
    WriteTestFile(tree_ / "usr/lib/libx.so", TestData(300000, 7), 0644);
    WriteTestFile(tree_ / "etc/hostname", "box\n", 0644);
    WriteTestFile(tree_ / "a-b", "sorted after a/", 0600);
    WriteTestFile(tree_ / "a/x", "in a", 0644);
    fs::create_symlink("usr/bin/tool", tree_ / "tool-link");
    fs::create_hard_link(tree_ / "usr/bin/tool", tree_ / "usr/bin/tool2");
    ASSERT_EQ(::mkfifo((tree_ / "fifo").c_str(), 0600), 0);
  }

  // Returns the blob; fills `info`.
  std::string Write(const DiffOptions& options, LayerInfo* info = nullptr) {
    StringSink sink;
    auto r = WriteLayer(tree_, sink, options);
    EXPECT_TRUE(r.has_value()) << r.error().ToString();
    if (r && info != nullptr) *info = *r;
    return sink.data();
  }

  std::unique_ptr<TempDir> tmp_;
  fs::path tree_;
};

DiffOptions Plain(Compression c = Compression::kNone) {
  DiffOptions o;
  o.compression = c;
  o.whiteouts = WhiteoutSource::kPlainTree;
  return o;
}

TEST_F(DifferTest, InfoMatchesTheBytes) {
  MakeSampleTree();
  for (Compression c : {Compression::kNone, Compression::kGzip, Compression::kZstd}) {
    LayerInfo info;
    std::string blob = Write(Plain(c), &info);
    EXPECT_EQ(info.digest, Digest::Sha256Of(blob));
    EXPECT_EQ(info.size, static_cast<int64_t>(blob.size()));
    EXPECT_EQ(info.media_type, LayerMediaType(c));
    auto tar = Decompress(blob);
    ASSERT_TRUE(tar.has_value()) << tar.error().ToString();
    EXPECT_EQ(info.diff_id, Digest::Sha256Of(*tar));
    if (c == Compression::kNone) {
      EXPECT_EQ(info.digest, info.diff_id);
    }
  }
}

TEST_F(DifferTest, WriteLayerToStoreCommitsTheSameBlob) {
  MakeSampleTree();
  LayerInfo expected;
  std::string blob = Write(Plain(Compression::kGzip), &expected);
  auto store = store::LocalContentStore::Open(tmp_->path() / "content");
  ASSERT_TRUE(store.has_value()) << store.error().ToString();
  auto writer = (*store)->Writer();
  ASSERT_TRUE(writer.has_value()) << writer.error().ToString();
  auto info = WriteLayerToStore(tree_, **writer, Plain(Compression::kGzip));
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_EQ(info->digest, expected.digest);
  EXPECT_EQ(info->size, expected.size);
  EXPECT_EQ(info->diff_id, expected.diff_id);
  EXPECT_EQ(info->media_type, expected.media_type);
  auto stored = (*store)->ReadBlob(info->digest);
  ASSERT_TRUE(stored.has_value()) << stored.error().ToString();
  EXPECT_EQ(*stored, blob);
  // A failed walk commits nothing.
  auto other = (*store)->Writer();
  ASSERT_TRUE(other.has_value());
  auto missing = WriteLayerToStore(tree_ / "missing", **other, Plain(Compression::kGzip));
  ASSERT_FALSE(missing.has_value());
  auto listed = (*store)->List();
  ASSERT_TRUE(listed.has_value());
  EXPECT_EQ(listed->size(), 1u);
}

TEST_F(DifferTest, EntriesAreWalkOrderedWithoutRootEntry) {
  MakeSampleTree();
  std::string tar = Write(Plain());
  EXPECT_THAT(TarNames(tar), ElementsAre("a/", "a/x", "a-b", "etc/", "etc/hostname", "fifo",
                                         "tool-link", "usr/", "usr/bin/", "usr/bin/tool",
                                         "usr/bin/tool2", "usr/lib/", "usr/lib/libx.so"));
  for (const auto& e : ListTar(tar)) {
    EXPECT_EQ(e.uname, "") << e.name;
    EXPECT_EQ(e.gname, "") << e.name;
    EXPECT_FALSE(e.atime_set) << e.name;
    EXPECT_FALSE(e.ctime_set) << e.name;
  }
  auto entries = ListTar(tar);
  EXPECT_EQ(entries[2].mode, 0600u);
  EXPECT_EQ(entries[2].data, "sorted after a/");
  EXPECT_EQ(entries[5].type, 'p');
  EXPECT_EQ(entries[6].type, 'l');
  EXPECT_EQ(entries[6].link, "usr/bin/tool");
  // The second name of an inode is a hardlink to the first in walk order.
  EXPECT_EQ(entries[9].type, 'f');
  EXPECT_EQ(entries[9].size, 700000);
  EXPECT_EQ(entries[10].type, 'h');
  EXPECT_EQ(entries[10].link, "usr/bin/tool");
  EXPECT_EQ(entries[10].size, 0);
  // GNU tar agrees it is a valid archive.
  auto dir = TempDir::Create("imgtool-difftar-");
  ASSERT_TRUE(dir.has_value());
  WriteTestFile(dir->path() / "l.tar", tar);
  auto listing = RunCommand({"tar", "-tvf", (dir->path() / "l.tar").string()});
  EXPECT_EQ(listing.exit_code, 0) << listing.err;
  EXPECT_THAT(listing.out, HasSubstr("usr/bin/tool2 link to usr/bin/tool"));
}

TEST_F(DifferTest, SameTreeSameDigestWhateverTheMtimesOnDisk) {
  MakeSampleTree();
  DiffOptions options = Plain(Compression::kGzip);
  options.source_date_epoch = 1500000000;
  SetAllMtimes(tree_, 1600000000);
  LayerInfo first;
  Write(options, &first);
  SetAllMtimes(tree_, 1700000000);
  LayerInfo second;
  Write(options, &second);
  EXPECT_EQ(first.digest, second.digest);
  EXPECT_EQ(first.diff_id, second.diff_id);

  // One and two compression threads give the same blob.
  options.threads = 1;
  LayerInfo one;
  Write(options, &one);
  options.threads = 2;
  LayerInfo two;
  Write(options, &two);
  EXPECT_EQ(one.digest, first.digest);
  EXPECT_EQ(two.digest, first.digest);

  // Without an epoch the mtimes show.
  LayerInfo no_epoch;
  Write(Plain(Compression::kGzip), &no_epoch);
  EXPECT_NE(no_epoch.diff_id, first.diff_id);
}

TEST_F(DifferTest, EpochClampsOnlyLaterMtimes) {
  WriteTestFile(tree_ / "old", "o");
  WriteTestFile(tree_ / "new", "n");
  SetMtime(tree_ / "old", 1000);
  SetMtime(tree_ / "new", 2000000000);
  DiffOptions options = Plain();
  options.source_date_epoch = 1500000000;
  auto entries = ListTar(Write(options));
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].name, "new");
  EXPECT_EQ(entries[0].mtime, 1500000000);
  EXPECT_EQ(entries[1].mtime, 1000);
}

TEST_F(DifferTest, RecordsUserXattrsAndOpaqueMarker) {
  WriteTestFile(tree_ / "f", "x");
  fs::create_directories(tree_ / "opaque/sub");
  WriteTestFile(tree_ / "opaque/sub/file", "y");
  ASSERT_EQ(::setxattr((tree_ / "f").c_str(), "user.bin", "a\0b\xff", 4, 0), 0);
  ASSERT_EQ(::setxattr((tree_ / "opaque").c_str(), "user.overlay.opaque", "y", 1, 0), 0);
  ASSERT_EQ(::setxattr((tree_ / "opaque").c_str(), "user.keep", "k", 1, 0), 0);

  DiffOptions upper;
  upper.compression = Compression::kNone;
  auto entries = ListTar(Write(upper));
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(entries[0].name, "f");
  EXPECT_EQ(entries[0].xattrs["user.bin"], std::string("a\0b\xff", 4));
  EXPECT_EQ(entries[1].name, "opaque/");
  // The overlay's own xattr became the marker entry and is not recorded itself.
  EXPECT_EQ(entries[1].xattrs.count("user.overlay.opaque"), 0u);
  EXPECT_EQ(entries[1].xattrs["user.keep"], "k");
  EXPECT_EQ(entries[2].name, "opaque/.wh..wh..opq");
  EXPECT_EQ(entries[2].type, 'f');
  EXPECT_EQ(entries[2].size, 0);
  EXPECT_EQ(entries[3].name, "opaque/sub/");

  // A plain tree makes no marker.
  EXPECT_THAT(TarNames(Write(Plain())),
              ElementsAre("f", "opaque/", "opaque/sub/", "opaque/sub/file"));
}

TEST_F(DifferTest, RefusesNamesWithTheWhiteoutPrefix) {
  WriteTestFile(tree_ / "dir/.wh.sneaky", "x");
  for (const DiffOptions& options : {Plain(), DiffOptions{}}) {
    StringSink sink;
    auto r = WriteLayer(tree_, sink, options);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(r.error().ToString(),
                HasSubstr("entry \"dir/.wh.sneaky\": name uses the reserved whiteout prefix"));
  }
}

TEST_F(DifferTest, SkipsSockets) {
  WriteTestFile(tree_ / "file", "x");
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  UniqueFd sock(s);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::string path = (tree_ / "sock").string();
  ASSERT_LT(path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  ASSERT_EQ(::bind(s, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_THAT(TarNames(Write(Plain())), ElementsAre("file"));
}

TEST_F(DifferTest, MissingDirectoryIsAnError) {
  StringSink sink;
  auto r = WriteLayer(tmp_->path() / "nope", sink, Plain());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_THAT(r.error().ToString(),
              HasSubstr("write layer from " + (tmp_->path() / "nope").string()));
}

TEST(CompressTarStreamTest, CompressesAndHashesBothSides) {
  std::string tar = TarBuilder().Dir("d").File("d/f", TestData(400000)).Tar();
  for (Compression in : {Compression::kNone, Compression::kGzip, Compression::kZstd}) {
    std::string input = in == Compression::kNone ? tar : Compress(tar, in);
    UniqueFd fd = BytesFd(input);
    StringSink sink;
    DiffOptions options;
    options.compression = Compression::kZstd;
    auto info = CompressTarStream(fd.get(), sink, options);
    ASSERT_TRUE(info.has_value()) << info.error().ToString();
    EXPECT_EQ(info->diff_id, Digest::Sha256Of(tar));
    EXPECT_EQ(info->digest, Digest::Sha256Of(sink.data()));
    EXPECT_EQ(info->size, static_cast<int64_t>(sink.data().size()));
    EXPECT_EQ(info->media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
    EXPECT_EQ(*Decompress(sink.data()), tar);
  }
}

TEST(CompressTarStreamTest, RefusesWhatIsNotATar) {
  for (std::string input : {TestData(3000), std::string(), std::string("short"),
                            Compress(TestData(3000), Compression::kGzip)}) {
    UniqueFd fd = BytesFd(input);
    StringSink sink;
    auto info = CompressTarStream(fd.get(), sink, DiffOptions{});
    ASSERT_FALSE(info.has_value());
    EXPECT_EQ(info.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(info.error().ToString(), HasSubstr("not a tar archive"));
  }
  std::string truncated_gz =
      Compress(TarBuilder().File("f", TestData(300000)).Tar(), Compression::kGzip);
  truncated_gz.resize(truncated_gz.size() / 2);
  UniqueFd fd = BytesFd(truncated_gz);
  StringSink sink;
  auto info = CompressTarStream(fd.get(), sink, DiffOptions{});
  ASSERT_FALSE(info.has_value());
  EXPECT_EQ(info.error().code(), ErrorCode::kDataLoss);
}

}  // namespace
}  // namespace imgtool::overlay
