// ApplyLayer: round trips, hostile tars (each with a sentinel outside the target
// that must stay untouched), whiteouts in flatten mode, truncated and corrupt
// streams, digest checks. Root-only cases are in applier_privileged_test.cc.
#include "overlay/applier.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <filesystem>
#include <string>

#include "common/temp_dir.h"
#include "overlay/differ.h"
#include "tests/overlay/layer_test_util.h"
#include "tests/support/test_util.h"

namespace imgtool::overlay {
namespace {

namespace fs = std::filesystem;
using ::imgtool::testing::ReadTestFile;
using ::imgtool::testing::WriteTestFile;
using testing::BytesFd;
using testing::Compress;
using testing::DescribeTree;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TarBuilder;
using testing::TestData;
using testing::TreeNames;

class ApplierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("imgtool-apply-");
    ASSERT_TRUE(dir.has_value());
    tmp_ = std::make_unique<TempDir>(std::move(dir).value());
    target_ = tmp_->path() / "target";
    outside_ = tmp_->path() / "outside";
    fs::create_directories(target_);
    fs::create_directories(outside_);
    WriteTestFile(outside_ / "sentinel", "untouched");
  }

  Result<ApplyResult> Apply(std::string_view blob, ApplyOptions options = {}) {
    UniqueFd fd = BytesFd(blob);
    return ApplyLayer(fd.get(), target_, options);
  }
  Result<ApplyResult> ApplyFlatten(std::string_view blob) {
    ApplyOptions options;
    options.whiteouts = WhiteoutMode::kFlatten;
    return Apply(blob, options);
  }

  // The outside directory holds exactly its sentinel, unchanged.
  void ExpectOutsideUntouched() {
    EXPECT_EQ(ReadTestFile(outside_ / "sentinel"), "untouched");
    EXPECT_THAT(TreeNames(outside_), ElementsAre("sentinel"));
    // Nothing appeared next to target or outside either.
    std::vector<std::string> top;
    for (const auto& e : fs::directory_iterator(tmp_->path())) {
      top.push_back(e.path().filename().string());
    }
    std::sort(top.begin(), top.end());
    EXPECT_THAT(top, ElementsAre("outside", "target"));
  }

  void ExpectRefused(const std::string& tar, const std::string& entry, const std::string& why,
                     WhiteoutMode mode = WhiteoutMode::kOverlay) {
    ApplyOptions options;
    options.whiteouts = mode;
    auto r = Apply(tar, options);
    ASSERT_FALSE(r.has_value()) << "entry " << entry << " was accepted";
    EXPECT_THAT(r.error().ToString(), HasSubstr("entry \"" + entry + "\": " + why));
    ExpectOutsideUntouched();
  }

  std::unique_ptr<TempDir> tmp_;
  fs::path target_;
  fs::path outside_;
};

TEST_F(ApplierTest, UnpacksEveryKindOfEntry) {
  std::string big = TestData(3 << 20);
  std::string long_dir = std::string(120, 'd');
  std::string long_name = long_dir + "/" + std::string(200, 'n');
  std::string tar = TarBuilder()
                        .Dir("etc")
                        .File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0644)
                        .File("etc/shadow", "secret", 0640)
                        .File("./dotslash", "dot", 0600)
                        .Dir("bin", 0555)  // read-only, yet gets children
                        .File("bin/tool", big, 0755)
                        .Hardlink("bin/tool-link", "bin/tool")
                        .Symlink("bin/sh", "/bin/tool")
                        .Symlink("dangling", "../nowhere/at/all")
                        .Fifo("run.fifo")
                        .File("empty", "")
                        .Dir(long_dir)
                        .File(long_name, "long")
                        .File("implicit/parent/file", "made parents")
                        .Tar();
  auto r = Apply(Compress(tar, Compression::kGzip));
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->compression, Compression::kGzip);
  EXPECT_EQ(r->entries, 14);
  EXPECT_EQ(r->diff_id, Digest::Sha256Of(tar));
  EXPECT_EQ(r->tar_size, static_cast<int64_t>(tar.size()));

  auto tree = DescribeTree(target_);
  EXPECT_EQ(tree["etc/passwd"].content, "root:x:0:0::/root:/bin/sh\n");
  EXPECT_EQ(tree["etc/shadow"].mode, 0640u);
  EXPECT_EQ(tree["dotslash"].content, "dot");
  EXPECT_EQ(tree["bin"].mode, 0555u);
  EXPECT_EQ(tree["bin"].mtime, testing::kTestMtime);  // fixed up after its children
  EXPECT_EQ(tree["bin/tool"].content, big);
  EXPECT_EQ(tree["bin/tool"].mode, 0755u);
  EXPECT_EQ(tree["bin/tool"].mtime, testing::kTestMtime);
  EXPECT_EQ(tree["bin/tool-link"].link_group, "bin/tool");
  EXPECT_EQ(tree["bin/sh"].type, 'l');
  EXPECT_EQ(tree["bin/sh"].content, "/bin/tool");
  EXPECT_EQ(tree["dangling"].content, "../nowhere/at/all");
  EXPECT_EQ(tree["run.fifo"].type, 'p');
  EXPECT_EQ(tree["run.fifo"].mode, 0640u);
  EXPECT_EQ(tree["empty"].type, 'f');
  EXPECT_EQ(tree["empty"].content, "");
  EXPECT_EQ(tree[long_name].content, "long");
  EXPECT_EQ(tree["implicit/parent"].type, 'd');
  EXPECT_EQ(tree["implicit/parent/file"].content, "made parents");
  ExpectOutsideUntouched();
}

TEST_F(ApplierTest, ReadsPlainZstdAndGzipAlike) {
  std::string tar = TarBuilder().Dir("a").File("a/b", "bytes").Tar();
  for (Compression c : {Compression::kNone, Compression::kGzip, Compression::kZstd}) {
    fs::remove_all(target_);
    fs::create_directories(target_);
    std::string blob = c == Compression::kNone ? tar : Compress(tar, c);
    auto r = Apply(blob);
    ASSERT_TRUE(r.has_value()) << CompressionName(c) << ": " << r.error().ToString();
    EXPECT_EQ(r->compression, c);
    EXPECT_EQ(r->digest, Digest::Sha256Of(blob));
    EXPECT_EQ(r->size, static_cast<int64_t>(blob.size()));
    EXPECT_EQ(r->diff_id, Digest::Sha256Of(tar));
    EXPECT_EQ(ReadTestFile(target_ / "a/b"), "bytes");
  }
}

TEST_F(ApplierTest, RoundTripsATreeThroughWriteLayer) {
  fs::path src = tmp_->path() / "src";
  WriteTestFile(src / "usr/bin/app", TestData(1 << 20), 0755);
  WriteTestFile(src / "usr/share/doc/readme", "read me", 0644);
  WriteTestFile(src / "etc/conf", "k=v", 0600);
  WriteTestFile(src / std::string(150, 'x') / std::string(150, 'y'), "deep", 0644);
  fs::create_directories(src / "var/empty");
  fs::create_symlink("../usr/bin/app", src / "etc/app-link");
  fs::create_hard_link(src / "usr/bin/app", src / "usr/bin/app-again");
  ASSERT_EQ(::mkfifo((src / "var/fifo").c_str(), 0600), 0);
  ASSERT_EQ(::setxattr((src / "etc/conf").c_str(), "user.note", "hello\0bin", 9, 0), 0);
  ::chmod((src / "var/empty").c_str(), 0700);
  ::chmod((src / "usr/share").c_str(), 02775);
  struct timespec times[2] = {{1600000000, 0}, {1600000000, 0}};
  for (const char* p : {"usr/share/doc", "var", "etc", "usr/bin/app"}) {
    ASSERT_EQ(::utimensat(AT_FDCWD, (src / p).c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
  }

  DiffOptions diff;
  diff.whiteouts = WhiteoutSource::kPlainTree;
  StringSink blob;
  auto info = WriteLayer(src, blob, diff);
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  auto r = Apply(blob.data());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->digest, info->digest);
  EXPECT_EQ(r->diff_id, info->diff_id);
  EXPECT_EQ(r->size, info->size);

  auto want = DescribeTree(src);
  auto got = DescribeTree(target_);
  EXPECT_EQ(got, want);
  EXPECT_EQ(got["etc/conf"].xattrs["user.note"], std::string("hello\0bin", 9));
  EXPECT_EQ(got["usr/bin/app-again"].link_group, "usr/bin/app");
  EXPECT_EQ(got["usr/share"].mode, 02775u);
}

TEST_F(ApplierTest, ChecksExpectedDigestAndDiffId) {
  std::string tar = TarBuilder().File("f", "x").Tar();
  std::string blob = Compress(tar, Compression::kGzip);
  Digest wrong = Digest::Sha256Of("something else");

  ApplyOptions ok;
  ok.expected_digest = Digest::Sha256Of(blob);
  ok.expected_diff_id = Digest::Sha256Of(tar);
  EXPECT_TRUE(Apply(blob, ok).has_value());

  ApplyOptions bad_digest = ok;
  bad_digest.expected_digest = wrong;
  auto r = Apply(blob, bad_digest);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kDataLoss);
  EXPECT_THAT(r.error().ToString(), HasSubstr("layer " + wrong.ToString()));
  EXPECT_THAT(r.error().ToString(), HasSubstr("expected " + wrong.ToString() + ", got " +
                                              Digest::Sha256Of(blob).ToString()));

  ApplyOptions bad_diff_id = ok;
  bad_diff_id.expected_diff_id = wrong;
  auto d = Apply(blob, bad_diff_id);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), ErrorCode::kDataLoss);
  EXPECT_THAT(d.error().ToString(), HasSubstr("diffID mismatch: expected " + wrong.ToString() +
                                              ", got " + Digest::Sha256Of(tar).ToString()));
}

TEST_F(ApplierTest, HashBlobOffLeavesTheBlobDigestToTheCaller) {
  std::string tar = TarBuilder().File("f", "x").Tar();
  std::string blob = Compress(tar, Compression::kGzip);
  ApplyOptions options;
  options.hash_blob = false;
  options.expected_diff_id = Digest::Sha256Of(tar);
  auto r = Apply(blob, options);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->diff_id, Digest::Sha256Of(tar));  // the tar is still hashed
  EXPECT_EQ(r->digest, Digest());                 // the blob is not
  EXPECT_EQ(r->size, static_cast<int64_t>(blob.size()));

  options.expected_digest = Digest::Sha256Of(blob);
  auto refused = Apply(blob, options);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(ApplierTest, DigestsCoverBytesAfterTheEndOfTheTar) {
  // GNU tar pads to 10 KiB records; the diffID is of the whole stream.
  std::string tar = TarBuilder().File("f", "x").Tar() + std::string(8192, '\0');
  auto r = Apply(Compress(tar, Compression::kZstd));
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->diff_id, Digest::Sha256Of(tar));
  EXPECT_EQ(r->tar_size, static_cast<int64_t>(tar.size()));
}

TEST_F(ApplierTest, EmptyLayers) {
  auto end_only = Apply(Compress(TarBuilder().Tar(), Compression::kGzip));
  ASSERT_TRUE(end_only.has_value()) << end_only.error().ToString();
  EXPECT_EQ(end_only->entries, 0);
  EXPECT_TRUE(TreeNames(target_).empty());
  // Zero bytes are not a tar (an empty tar is its end marker).
  auto nothing = Apply("");
  ASSERT_FALSE(nothing.has_value());
  EXPECT_EQ(nothing.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(nothing.error().ToString(), HasSubstr("not a tar archive"));
}

// ---- hostile input ----------------------------------------------------------

TEST_F(ApplierTest, RefusesParentEscapes) {
  ExpectRefused(TarBuilder().File("../escape", "x").Tar(), "../escape",
                "path leads outside the root");
  ExpectRefused(TarBuilder().File("../outside/sentinel", "pwned").Tar(), "../outside/sentinel",
                "path leads outside the root");
  ExpectRefused(TarBuilder().Dir("a").File("a/../../escape", "x").Tar(), "a/../../escape",
                "path leads outside the root");
  ExpectRefused(TarBuilder().File("a/../inside", "x").Tar(), "a/../inside", "path contains \"..\"");
}

TEST_F(ApplierTest, RefusesAbsolutePaths) {
  std::string abs_outside = (outside_ / "sentinel").string();
  ExpectRefused(TarBuilder().File(abs_outside, "pwned").Tar(), abs_outside,
                "absolute path refused");
  ExpectRefused(TarBuilder().File("/etc/passwd", "x").Tar(), "/etc/passwd",
                "absolute path refused");
}

TEST_F(ApplierTest, RefusesHardlinksLeavingTheTreeOrToNothing) {
  ExpectRefused(TarBuilder().Hardlink("h", "../outside/sentinel").Tar(), "h",
                "hardlink target \"../outside/sentinel\": path leads outside the root");
  std::string abs = (outside_ / "sentinel").string();
  ExpectRefused(TarBuilder().Hardlink("h", abs).Tar(), "h",
                "hardlink target \"" + abs + "\": absolute path refused");
  ExpectRefused(TarBuilder().Hardlink("h", "missing").Tar(), "h",
                "hardlink target \"missing\" does not exist in the tree");
  // Through a symlink that points outside: resolved inside the tree, where there is nothing.
  ExpectRefused(TarBuilder().Symlink("out", outside_.string()).Hardlink("h", "out/sentinel").Tar(),
                "h", "hardlink target \"out/sentinel\" does not exist in the tree");
  ExpectRefused(TarBuilder().Dir("d").Hardlink("h", "d").Tar(), "h",
                "hardlink target \"d\" is a directory");
}

TEST_F(ApplierTest, NeverWritesThroughASymlinkThatLeadsOut) {
  // An absolute link to the real outside dir: the write resolves inside the
  // target, as if the target were "/", and lands there.
  auto r = Apply(TarBuilder().Symlink("evil", outside_.string()).File("evil/pwned", "x").Tar());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  ExpectOutsideUntouched();
  EXPECT_EQ(fs::read_symlink(target_ / "evil"), outside_);  // the link itself is kept
  EXPECT_EQ(ReadTestFile(target_ / outside_.relative_path() / "pwned"), "x");

  // A relative link climbing far up is clamped at the root.
  fs::remove_all(target_);
  fs::create_directories(target_);
  auto up = Apply(
      TarBuilder().Symlink("up", "../../../../../../../../..").File("up/landed", "inside").Tar());
  ASSERT_TRUE(up.has_value()) << up.error().ToString();
  EXPECT_EQ(ReadTestFile(target_ / "landed"), "inside");
  ExpectOutsideUntouched();

  // An absolute link to a directory that exists inside the target: the write lands there.
  fs::remove_all(target_);
  fs::create_directories(target_);
  auto in = Apply(TarBuilder().Dir("sub").Symlink("abs", "/sub").File("abs/f", "in sub").Tar());
  ASSERT_TRUE(in.has_value()) << in.error().ToString();
  EXPECT_EQ(ReadTestFile(target_ / "sub/f"), "in sub");
  ExpectOutsideUntouched();
}

TEST_F(ApplierTest, FileEntryReplacesASymlinkInsteadOfWritingThroughIt) {
  auto r = Apply(TarBuilder()
                     .Symlink("s", (outside_ / "sentinel").string())
                     .File("s", "replaced")
                     .Hardlink("h", "s")
                     .File("h", "also replaced")
                     .Tar());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_FALSE(fs::is_symlink(target_ / "s"));
  EXPECT_EQ(ReadTestFile(target_ / "s"), "replaced");
  EXPECT_EQ(ReadTestFile(target_ / "h"), "also replaced");
  ExpectOutsideUntouched();
}

TEST_F(ApplierTest, CachedDirectoryReplacedBySymlinkIsNotFollowedOut) {
  auto r = Apply(TarBuilder()
                     .Dir("d")
                     .File("d/a", "first")             // caches "d"
                     .Symlink("d", outside_.string())  // replaces the directory
                     .File("d/b", "must not leave")    // must re-resolve "d"
                     .Tar());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_TRUE(fs::is_symlink(target_ / "d"));
  EXPECT_EQ(ReadTestFile(target_ / outside_.relative_path() / "b"), "must not leave");
  ExpectOutsideUntouched();

  // Same with the link pointing inside: the file follows the link within the tree.
  fs::remove_all(target_);
  fs::create_directories(target_);
  auto in = Apply(TarBuilder()
                      .Dir("real")
                      .Dir("d")
                      .File("d/a", "first")
                      .Symlink("d", "real")
                      .File("d/b", "via link")
                      .Tar());
  ASSERT_TRUE(in.has_value()) << in.error().ToString();
  EXPECT_EQ(ReadTestFile(target_ / "real/b"), "via link");
  EXPECT_FALSE(fs::exists(target_ / "real/a"));
}

TEST_F(ApplierTest, RefusesWhiteoutsThatNameNoEntry) {
  for (WhiteoutMode mode : {WhiteoutMode::kOverlay, WhiteoutMode::kFlatten}) {
    ExpectRefused(TarBuilder().File(".wh..", "").Tar(), ".wh..",
                  "whiteout \".wh..\" names no entry", mode);
    ExpectRefused(TarBuilder().File("a/.wh...", "").Tar(), "a/.wh...",
                  "whiteout \".wh...\" names no entry", mode);
    ExpectRefused(TarBuilder().File(".wh.", "").Tar(), ".wh.", "whiteout \".wh.\" names no entry",
                  mode);
    ExpectRefused(TarBuilder().File("a/.wh.../..", "").Tar(), "a/.wh.../..", "path contains \"..\"",
                  mode);
    ExpectRefused(TarBuilder().File(".wh.../../../outside/sentinel", "").Tar(),
                  ".wh.../../../outside/sentinel", "path leads outside the root", mode);
  }
}

TEST_F(ApplierTest, UnprivilegedSkipsDevicesAndOwners) {
  ApplyOptions options;
  options.unprivileged = true;
  TarHeader owned = TarBuilder::Header("owned", TarType::kRegular, 0644);
  owned.uid = 4242;
  owned.gid = 4343;
  auto r =
      Apply(TarBuilder().CharDevice("null", 1, 3).Add(owned, "data").Fifo("fifo").Tar(), options);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_FALSE(fs::exists(fs::symlink_status(target_ / "null")));
  struct stat st;
  ASSERT_EQ(::stat((target_ / "owned").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_TRUE(fs::is_fifo(target_ / "fifo"));
}

TEST_F(ApplierTest, UnprivilegedOverlayModeUsesUserXattrs) {
  ApplyOptions options;
  options.unprivileged = true;
  auto r = Apply(TarBuilder().File(".wh.gone", "").File("d/.wh..wh..opq", "").Tar(), options);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  auto tree = DescribeTree(target_);
  EXPECT_EQ(tree["gone"].type, 'c');  // 0/0 char devices need no privilege (Linux 5.8+)
  EXPECT_EQ(tree["gone"].rdev, 0u);
  EXPECT_EQ(tree["d"].xattrs, (std::map<std::string, std::string>{{"user.overlay.opaque", "y"}}));
}

// ---- broken streams -----------------------------------------------------------

TEST_F(ApplierTest, TruncatedGzipIsDataLoss) {
  std::string tar = TarBuilder().File("big", TestData(2 << 20)).File("after", "x").Tar();
  std::string gz = Compress(tar, Compression::kGzip);
  auto r = Apply(std::string_view(gz).substr(0, gz.size() * 2 / 3));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kDataLoss);
  EXPECT_THAT(r.error().ToString(), HasSubstr("gzip: stream truncated"));
  // Cut inside the 8-byte trailer: every tar byte arrived, the check still fails.
  auto t = Apply(std::string_view(gz).substr(0, gz.size() - 3));
  ASSERT_FALSE(t.has_value());
  EXPECT_THAT(t.error().ToString(), HasSubstr("gzip: stream truncated"));
}

TEST_F(ApplierTest, TruncatedZstdIsDataLoss) {
  std::string tar = TarBuilder().File("big", TestData(2 << 20)).Tar();
  std::string zst = Compress(tar, Compression::kZstd);
  auto r = Apply(std::string_view(zst).substr(0, zst.size() / 2));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kDataLoss);
  EXPECT_THAT(r.error().ToString(), HasSubstr("zstd: stream truncated"));
}

TEST_F(ApplierTest, TruncatedTarIsDataLoss) {
  std::string tar = TarBuilder().File("big", TestData(100000)).Tar();
  auto r = Apply(std::string_view(tar).substr(0, 50000));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kDataLoss);
  EXPECT_THAT(r.error().ToString(), HasSubstr("tar: Truncated tar archive"));
  // Same inside a complete gzip stream.
  auto g = Apply(Compress(std::string_view(tar).substr(0, 50000), Compression::kGzip));
  ASSERT_FALSE(g.has_value());
  EXPECT_THAT(g.error().ToString(), HasSubstr("Truncated tar archive"));
}

TEST_F(ApplierTest, GarbageIsRefused) {
  auto plain = Apply(TestData(5000));
  ASSERT_FALSE(plain.has_value());
  EXPECT_EQ(plain.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(plain.error().ToString(), HasSubstr("not a tar archive"));

  auto gz = Apply(Compress(TestData(5000), Compression::kGzip));
  ASSERT_FALSE(gz.has_value());
  EXPECT_THAT(gz.error().ToString(), HasSubstr("not a tar archive"));

  std::string bad_gzip = "\x1f\x8b" + TestData(5000);
  auto bg = Apply(bad_gzip);
  ASSERT_FALSE(bg.has_value());
  EXPECT_EQ(bg.error().code(), ErrorCode::kDataLoss);
  EXPECT_THAT(bg.error().ToString(), HasSubstr("gzip:"));

  // A tar whose header checksum is broken.
  std::string tar = TarBuilder().File("a", "x").File("b", "y").Tar();
  tar[512 + 512 + 10] ^= 0x40;  // the second header's name
  auto bt = Apply(tar);
  ASSERT_FALSE(bt.has_value());
  EXPECT_THAT(bt.error().ToString(), HasSubstr("tar: Damaged tar archive"));
  EXPECT_EQ(bt.error().code(), ErrorCode::kDataLoss);
  ExpectOutsideUntouched();
}

// ---- flatten-mode whiteouts -------------------------------------------------

TEST_F(ApplierTest, FlattenWhiteoutsDeleteLowerEntries) {
  ASSERT_TRUE(ApplyFlatten(TarBuilder()
                               .Dir("a")
                               .File("a/keep", "1")
                               .File("a/gone", "2")
                               .Dir("tree")
                               .Dir("tree/sub")
                               .File("tree/sub/f", "3")
                               .Symlink("link", "a")
                               .Tar())
                  .has_value());
  auto r = ApplyFlatten(TarBuilder()
                            .File("a/.wh.gone", "")
                            .File(".wh.tree", "")
                            .File(".wh.link", "")
                            .File(".wh.never-existed", "")
                            .File("nodir/.wh.x", "")
                            .Tar());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_THAT(TreeNames(target_), ElementsAre("a", "a/keep"));
}

TEST_F(ApplierTest, FlattenOpaqueKeepsThisLayersEntriesWhateverTheOrder) {
  auto lower = TarBuilder()
                   .Dir("etc")
                   .File("etc/old", "lower")
                   .Dir("etc/old.d")
                   .File("etc/old.d/x", "lower")
                   .Dir("etc/both")
                   .File("etc/both/lower-only", "lower")
                   .File("other", "stays")
                   .Tar();
  // Opaque marker after this layer's children, before some, and merged dirs.
  auto upper = TarBuilder()
                   .Dir("etc")
                   .File("etc/new-before", "upper")
                   .Dir("etc/both")
                   .File("etc/both/upper-only", "upper")
                   .File("etc/.wh..wh..opq", "")
                   .File("etc/new-after", "upper")
                   .Tar();
  ASSERT_TRUE(ApplyFlatten(lower).has_value());
  auto r = ApplyFlatten(upper);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_THAT(TreeNames(target_), ElementsAre("etc", "etc/both", "etc/both/upper-only",
                                              "etc/new-after", "etc/new-before", "other"));
  EXPECT_EQ(ReadTestFile(target_ / "etc/new-before"), "upper");
}

TEST_F(ApplierTest, FlattenOpaqueFirstAndImplicitParents) {
  ASSERT_TRUE(
      ApplyFlatten(TarBuilder().Dir("d").File("d/old", "x").Dir("d/s").File("d/s/o", "x").Tar())
          .has_value());
  // No "d/" entry in the upper layer: "d/s/new" implies d and d/s.
  auto r = ApplyFlatten(TarBuilder().File("d/.wh..wh..opq", "").File("d/s/new", "n").Tar());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_THAT(TreeNames(target_), ElementsAre("d", "d/s", "d/s/new"));
}

TEST_F(ApplierTest, FlattenWhiteoutAfterSameLayerEntryKeepsTheEntry) {
  ASSERT_TRUE(ApplyFlatten(TarBuilder().Dir("x").File("x/lower", "l").Tar()).has_value());
  // Invalid per spec but seen in the wild: the whiteout only hides lower layers.
  auto r = ApplyFlatten(TarBuilder().Dir("x").File("x/upper", "u").File(".wh.x", "").Tar());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_THAT(TreeNames(target_), ElementsAre("x", "x/upper"));
}

TEST_F(ApplierTest, EntriesReplaceEntriesOfAnotherType) {
  ASSERT_TRUE(ApplyFlatten(TarBuilder()
                               .Dir("dir-becomes-file")
                               .File("dir-becomes-file/child", "x")
                               .File("file-becomes-dir", "x")
                               .Symlink("link-becomes-dir", "/elsewhere")
                               .Dir("dir-stays", 0700)
                               .File("dir-stays/old", "kept")
                               .Tar())
                  .has_value());
  auto r = ApplyFlatten(TarBuilder()
                            .File("dir-becomes-file", "now a file")
                            .Dir("file-becomes-dir")
                            .File("file-becomes-dir/inner", "i")
                            .Dir("link-becomes-dir")
                            .Dir("dir-stays", 0750)
                            .File("dir-stays/new", "added")
                            .Tar());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  auto tree = DescribeTree(target_);
  EXPECT_EQ(tree["dir-becomes-file"].type, 'f');
  EXPECT_EQ(tree.count("dir-becomes-file/child"), 0u);
  EXPECT_EQ(tree["file-becomes-dir"].type, 'd');
  EXPECT_EQ(tree["file-becomes-dir/inner"].content, "i");
  EXPECT_EQ(tree["link-becomes-dir"].type, 'd');
  EXPECT_EQ(tree["dir-stays"].mode, 0750u);
  EXPECT_EQ(tree["dir-stays/old"].content, "kept");  // directories merge
  EXPECT_EQ(tree["dir-stays/new"].content, "added");
}

TEST(SanitizeEntryPathTest, CleansAndRefuses) {
  EXPECT_EQ(*SanitizeEntryPath("./etc/passwd"), "etc/passwd");
  EXPECT_EQ(*SanitizeEntryPath("etc//x/./y/"), "etc/x/y");
  EXPECT_EQ(*SanitizeEntryPath("./"), "");
  EXPECT_EQ(*SanitizeEntryPath(".//etc"), "etc");
  EXPECT_FALSE(SanitizeEntryPath("").has_value());
  EXPECT_FALSE(SanitizeEntryPath("/etc").has_value());
  EXPECT_FALSE(SanitizeEntryPath("..").has_value());
  EXPECT_FALSE(SanitizeEntryPath("a/..").has_value());
  EXPECT_FALSE(SanitizeEntryPath("a/../../b").has_value());
}

}  // namespace
}  // namespace imgtool::overlay
