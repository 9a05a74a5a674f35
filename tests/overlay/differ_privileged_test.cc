// The differ on a real overlay upper dir: whiteouts the kernel made (which may
// share one inode) and opaque directories become OCI entries, and the layer
// flattens onto its lower into what the mount showed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <filesystem>
#include <string>

#include "common/mount.h"
#include "common/temp_dir.h"
#include "overlay/differ.h"
#include "overlay/flatten.h"
#include "tests/overlay/layer_test_util.h"
#include "tests/support/test_util.h"

namespace imgtool::overlay {
namespace {

namespace fs = std::filesystem;
using ::imgtool::testing::WriteTestFile;
using testing::BytesFd;
using ::testing::ElementsAre;
using testing::ListTar;
using testing::TarNames;
using testing::TreeNames;

class DifferPrivilegedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    auto dir = TempDir::Create("imgtool-diff-root-");
    ASSERT_TRUE(dir.has_value());
    tmp_ = std::make_unique<TempDir>(std::move(dir).value());
  }
  std::unique_ptr<TempDir> tmp_;
};

TEST_F(DifferPrivilegedTest, OverlayUpperBecomesAnOciLayer) {
  fs::path lower = tmp_->path() / "lower", upper = tmp_->path() / "upper",
           work = tmp_->path() / "work", merged = tmp_->path() / "merged";
  for (const fs::path& p : {upper, work, merged}) fs::create_directories(p);
  WriteTestFile(lower / "a", "a");
  WriteTestFile(lower / "b", "b");
  WriteTestFile(lower / "c", "c");
  WriteTestFile(lower / "d/old1", "1");
  WriteTestFile(lower / "d/old2", "2");
  WriteTestFile(lower / "keep", "k");

  {
    Mount m{
        "overlay",
        "overlay",
        {"lowerdir=" + lower.string(), "upperdir=" + upper.string(), "workdir=" + work.string()}};
    Status mounted = MountAt(m, merged);
    if (!mounted) GTEST_SKIP() << "overlay mount unavailable: " << mounted.error().ToString();
    MountGuard guard(merged);
    fs::remove(merged / "a");
    fs::remove(merged / "b");
    fs::remove(merged / "c");
    fs::remove_all(merged / "d");
    fs::create_directories(merged / "d");  // the kernel makes it opaque
    WriteTestFile(merged / "d/new", "n");
    WriteTestFile(merged / "added", "+");
    ASSERT_TRUE(guard.Unmount().has_value());
  }
  StringSink blob;
  DiffOptions options;
  options.compression = Compression::kNone;
  auto info = WriteLayer(upper, blob, options);
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  // Whiteouts sit where the names they hide sort.
  EXPECT_THAT(TarNames(blob.data()),
              ElementsAre(".wh.a", "added", ".wh.b", ".wh.c", "d/", "d/.wh..wh..opq", "d/new"));
  for (const auto& e : ListTar(blob.data())) {
    EXPECT_NE(e.type, 'h') << e.name;  // shared whiteout inodes are still whiteouts
    for (const auto& [name, value] : e.xattrs) {
      EXPECT_NE(name.rfind("trusted.overlay.", 0), 0u) << e.name << " " << name;
    }
  }

  // Flattened onto its lower, the layer gives what the mount showed.
  StringSink lower_blob;
  DiffOptions plain;
  plain.compression = Compression::kGzip;
  plain.whiteouts = WhiteoutSource::kPlainTree;
  ASSERT_TRUE(WriteLayer(lower, lower_blob, plain).has_value());
  UniqueFd l = BytesFd(lower_blob.data()), u = BytesFd(blob.data());
  FlattenOptions flatten;
  flatten.scratch_dir = tmp_->path();
  StringSink flat;
  auto s = FlattenLayers({l.get(), u.get()}, flat, flatten);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_THAT(TarNames(flat.data()), ElementsAre("added", "d/", "d/new", "keep"));
}

TEST_F(DifferPrivilegedTest, PlainTreeKeepsDevicesAndBigOwners) {
  fs::path tree = tmp_->path() / "tree";
  fs::create_directories(tree);
  ASSERT_EQ(::mknod((tree / "wh").c_str(), S_IFCHR, makedev(0, 0)), 0);
  ASSERT_EQ(::mknod((tree / "tty").c_str(), S_IFCHR | 0620, makedev(5, 0)), 0);
  WriteTestFile(tree / "f", "x");
  ASSERT_EQ(::chown((tree / "f").c_str(), 3000000000u, 7), 0);
  ASSERT_EQ(::setxattr((tree / "f").c_str(), "trusted.overlay.origin", "o", 1, 0), 0);
  ASSERT_EQ(::setxattr((tree / "f").c_str(), "trusted.kept", "k", 1, 0), 0);
  StringSink blob;
  DiffOptions options;
  options.compression = Compression::kNone;
  options.whiteouts = WhiteoutSource::kPlainTree;
  ASSERT_TRUE(WriteLayer(tree, blob, options).has_value());
  auto entries = ListTar(blob.data());
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].name, "f");
  EXPECT_EQ(entries[0].uid, 3000000000);
  EXPECT_EQ(entries[0].xattrs, (std::map<std::string, std::string>{{"trusted.kept", "k"}}));
  EXPECT_EQ(entries[1].name, "tty");
  EXPECT_EQ(entries[1].type, 'c');
  EXPECT_EQ(entries[2].name, "wh");  // a device like any other in a plain tree
  EXPECT_EQ(entries[2].type, 'c');
}

}  // namespace
}  // namespace imgtool::overlay
