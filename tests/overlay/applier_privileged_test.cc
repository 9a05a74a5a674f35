// ApplyLayer as root: owners, setuid bits, capabilities, trusted xattrs,
// device nodes, overlay-mode whiteouts, and a real overlay mount over layers
// unpacked in overlay mode.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <filesystem>
#include <string>

#include "common/mount.h"
#include "common/temp_dir.h"
#include "overlay/applier.h"
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
using testing::TarBuilder;
using testing::TreeNames;

// A valid VFS_CAP_REVISION_2 value granting CAP_NET_BIND_SERVICE (permitted).
std::string NetBindCapability() {
  std::string v(20, '\0');
  v[3] = 0x02;      // magic_etc = 0x02000000
  v[4 + 1] = 0x04;  // permitted[0] bit 10
  return v;
}

std::string GetXattr(const fs::path& p, const char* name) {
  char buf[256];
  ssize_t n = ::lgetxattr(p.c_str(), name, buf, sizeof(buf));
  return n < 0 ? "<none>" : std::string(buf, static_cast<size_t>(n));
}

class ApplierPrivilegedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    auto dir = TempDir::Create("imgtool-apply-root-");
    ASSERT_TRUE(dir.has_value());
    tmp_ = std::make_unique<TempDir>(std::move(dir).value());
    target_ = tmp_->path() / "target";
    fs::create_directories(target_);
  }

  Result<ApplyResult> Apply(std::string_view blob, const fs::path& target,
                            WhiteoutMode mode = WhiteoutMode::kOverlay) {
    UniqueFd fd = BytesFd(blob);
    ApplyOptions options;
    options.whiteouts = mode;
    return ApplyLayer(fd.get(), target, options);
  }

  std::unique_ptr<TempDir> tmp_;
  fs::path target_;
};

TEST_F(ApplierPrivilegedTest, KeepsOwnersSetuidCapabilitiesAndTrustedXattrs) {
  TarHeader suid = TarBuilder::Header("usr/bin/ping", TarType::kRegular, 04755);
  suid.uid = 1000;
  suid.gid = 2000;
  suid.xattrs = {{"security.capability", NetBindCapability()},
                 {"trusted.note", "t"},
                 {"user.note", "u"},
                 {"security.selinux", "system_u:object_r:bin_t:s0"}};
  TarHeader sgid_dir = TarBuilder::Header("srv", TarType::kDirectory, 02775);
  sgid_dir.uid = 33;
  sgid_dir.gid = 33;
  TarHeader link = TarBuilder::Header("srv/link", TarType::kSymlink, 0777);
  link.linkname = "/usr/bin/ping";
  link.uid = 5;
  link.gid = 6;
  TarHeader big_ids = TarBuilder::Header("big", TarType::kRegular, 0600);
  big_ids.uid = 3000000000;
  big_ids.gid = 3000000001;
  std::string tar =
      TarBuilder().Add(suid, "binary").Add(sgid_dir).Add(link).Add(big_ids, "b").Tar();
  auto r = Apply(Compress(tar, Compression::kGzip), target_);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();

  struct stat st;
  ASSERT_EQ(::lstat((target_ / "usr/bin/ping").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 2000u);
  EXPECT_EQ(st.st_mode & 07777, 04755u);  // chmod came after chown
  EXPECT_EQ(GetXattr(target_ / "usr/bin/ping", "security.capability"), NetBindCapability());
  EXPECT_EQ(GetXattr(target_ / "usr/bin/ping", "trusted.note"), "t");
  EXPECT_EQ(GetXattr(target_ / "usr/bin/ping", "user.note"), "u");
  EXPECT_NE(GetXattr(target_ / "usr/bin/ping", "security.selinux"), "system_u:object_r:bin_t:s0");
  ASSERT_EQ(::lstat((target_ / "srv").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 33u);
  EXPECT_EQ(st.st_mode & 07777, 02775u);
  ASSERT_EQ(::lstat((target_ / "srv/link").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(st.st_uid, 5u);
  EXPECT_EQ(st.st_gid, 6u);
  ASSERT_EQ(::lstat((target_ / "big").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 3000000000u);
  EXPECT_EQ(st.st_gid, 3000000001u);
}

TEST_F(ApplierPrivilegedTest, CreatesDeviceNodes) {
  TarHeader blk = TarBuilder::Header("dev/loop9", TarType::kBlockDevice, 0660);
  blk.dev_major = 7;
  blk.dev_minor = 9;
  blk.gid = 6;
  auto r = Apply(TarBuilder().CharDevice("dev/null", 1, 3).Add(blk).Tar(), target_);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  auto tree = DescribeTree(target_);
  EXPECT_EQ(tree["dev/null"].type, 'c');
  EXPECT_EQ(tree["dev/null"].rdev, makedev(1, 3));
  EXPECT_EQ(tree["dev/null"].mode, 0666u);
  EXPECT_EQ(tree["dev/loop9"].type, 'b');
  EXPECT_EQ(tree["dev/loop9"].rdev, makedev(7, 9));
  EXPECT_EQ(tree["dev/loop9"].mode, 0660u);
  EXPECT_EQ(tree["dev/loop9"].gid, 6u);
}

TEST_F(ApplierPrivilegedTest, OverlayModeWritesOverlayWhiteouts) {
  auto r = Apply(TarBuilder()
                     .File(".wh.gone", "")
                     .Dir("dir")
                     .File("dir/.wh..wh..opq", "")
                     .File("dir/new", "n")
                     .File("implicit/.wh..wh..opq", "")
                     .File("whited-then-dir/.wh.x", "")
                     .File(".wh.later-dir", "")
                     .Dir("later-dir")
                     .Dir("earlier-dir")
                     .File(".wh.earlier-dir", "")
                     .File(".wh..wh.plnk", "")  // aufs metadata: ignored
                     .Tar(),
                 target_);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  auto tree = DescribeTree(target_);
  EXPECT_EQ(tree["gone"].type, 'c');
  EXPECT_EQ(tree["gone"].rdev, makedev(0, 0));
  EXPECT_EQ(tree["gone"].mode, 0u);
  EXPECT_EQ(tree["dir"].xattrs["trusted.overlay.opaque"], "y");
  EXPECT_EQ(tree["dir/new"].content, "n");
  EXPECT_EQ(tree["implicit"].xattrs["trusted.overlay.opaque"], "y");
  EXPECT_EQ(tree["whited-then-dir/x"].type, 'c');
  // A directory replacing a whiteout, or whited out after it was written, hides the lower one.
  EXPECT_EQ(tree["later-dir"].type, 'd');
  EXPECT_EQ(tree["later-dir"].xattrs["trusted.overlay.opaque"], "y");
  EXPECT_EQ(tree["earlier-dir"].type, 'd');
  EXPECT_EQ(tree["earlier-dir"].xattrs["trusted.overlay.opaque"], "y");
  EXPECT_EQ(tree.count(".wh..wh.plnk"), 0u);
  EXPECT_EQ(tree.count("dir/.wh..wh..opq"), 0u);
}

TEST_F(ApplierPrivilegedTest, NeverTakesOverlayXattrsFromTheTar) {
  TarHeader dir = TarBuilder::Header("d", TarType::kDirectory, 0755);
  dir.xattrs = {{"trusted.overlay.opaque", "y"},
                {"trusted.overlay.redirect", "/etc"},
                {"user.overlay.opaque", "y"}};
  TarHeader file = TarBuilder::Header("f", TarType::kRegular, 0644);
  file.xattrs = {{"trusted.overlay.metacopy", ""}, {"trusted.ok", "1"}};
  auto r = Apply(TarBuilder().Add(dir).Add(file, "x").Tar(), target_);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  auto tree = DescribeTree(target_);
  EXPECT_TRUE(tree["d"].xattrs.empty()) << tree["d"].xattrs.begin()->first;
  EXPECT_EQ(tree["f"].xattrs, (std::map<std::string, std::string>{{"trusted.ok", "1"}}));
}

TEST_F(ApplierPrivilegedTest, RoundTripsOwnersThroughWriteLayer) {
  fs::path src = tmp_->path() / "src";
  WriteTestFile(src / "home/user/file", "mine", 0640);
  WriteTestFile(src / "usr/bin/su", "su", 04755);
  fs::create_symlink("file", src / "home/user/link");
  ASSERT_EQ(::mknod((src / "null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  ASSERT_EQ(::lchown((src / "home/user").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::lchown((src / "home/user/file").c_str(), 1000, 100), 0);
  ASSERT_EQ(::lchown((src / "home/user/link").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::chmod((src / "usr/bin/su").c_str(), 04755), 0);
  ASSERT_EQ(::setxattr((src / "usr/bin/su").c_str(), "trusted.x", "1", 1, 0), 0);
  ASSERT_EQ(::setxattr((src / "usr/bin/su").c_str(), "security.capability",
                       NetBindCapability().data(), 20, 0),
            0);
  DiffOptions options;
  options.whiteouts = WhiteoutSource::kPlainTree;
  StringSink blob;
  auto info = WriteLayer(src, blob, options);
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  auto r = Apply(blob.data(), target_);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(DescribeTree(target_), DescribeTree(src));
}

// Layers unpacked in overlay mode and stacked by the kernel show the image.
TEST_F(ApplierPrivilegedTest, OverlayMountOfUnpackedLayersHidesWhitedOutEntries) {
  fs::path lower = tmp_->path() / "l1", upper = tmp_->path() / "l2", merged = tmp_->path() / "m";
  fs::create_directories(lower);
  fs::create_directories(upper);
  fs::create_directories(merged);
  ASSERT_TRUE(Apply(TarBuilder()
                        .File("a", "a")
                        .File("b", "b")
                        .Dir("d")
                        .File("d/x", "x")
                        .File("d/y", "y")
                        .Dir("e")
                        .File("e/keep", "k")
                        .Tar(),
                    lower)
                  .has_value());
  auto r = Apply(TarBuilder()
                     .File(".wh.a", "")
                     .Dir("d")
                     .File("d/.wh..wh..opq", "")
                     .File("d/z", "z")
                     .File("e/.wh.keep", "")
                     .File("e/added", "+")
                     .Tar(),
                 upper);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  Mount m{"overlay", "overlay", {"lowerdir=" + upper.string() + ":" + lower.string()}};
  Status mounted = MountAt(m, merged);
  if (!mounted) GTEST_SKIP() << "overlay mount unavailable: " << mounted.error().ToString();
  MountGuard guard(merged);
  EXPECT_THAT(TreeNames(merged), ElementsAre("b", "d", "d/z", "e", "e/added"));
  EXPECT_EQ(ReadTestFile(merged / "d/z"), "z");
}

}  // namespace
}  // namespace imgtool::overlay
