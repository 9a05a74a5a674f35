// Snapshotter conformance with real mounts (needs root): what a container
// sees through the mounts a snapshotter returns. Typed over a factory like
// snapshotter_test.cc; add another implementation at the INSTANTIATE line.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "common/mount.h"
#include "common/scope_guard.h"
#include "common/temp_dir.h"
#include "overlay/snapshotter.h"
#include "tests/support/test_util.h"

namespace imgtool::overlay {
namespace conformance {

// Named (not anonymous) so that ctest's test names read
// "Snapshotter.Case<imgtool::overlay::conformance::OverlayFactory>".
struct OverlayFactory {
  static Result<std::unique_ptr<Snapshotter>> Open(const std::filesystem::path& root) {
    IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<OverlaySnapshotter> snapshotter,
                             OverlaySnapshotter::Open(root));
    return std::unique_ptr<Snapshotter>(std::move(snapshotter));
  }
};

}  // namespace conformance

namespace {

using conformance::OverlayFactory;

namespace fs = std::filesystem;
using ::imgtool::testing::ReadTestFile;
using ::imgtool::testing::WriteTestFile;
using ::testing::HasSubstr;

// Writes an OverlayFS whiteout: a 0/0 character device.
void MakeWhiteout(const fs::path& path) {
  ASSERT_EQ(::mknod(path.c_str(), S_IFCHR | 0000, ::makedev(0, 0)), 0) << path;
}

void MakeOpaque(const fs::path& dir) {
  ASSERT_EQ(::setxattr(dir.c_str(), "trusted.overlay.opaque", "y", 1, 0), 0) << dir;
}

int OpenForWriteErrno(const fs::path& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

template <typename Factory>
class SnapshotterMountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    auto dir = TempDir::Create("imgtool-snapshotter-mount-test-");
    ASSERT_TRUE(dir) << dir.error().ToString();
    dir_ = std::make_unique<TempDir>(std::move(*dir));
    auto snapshotter = Factory::Open(dir_->path() / "snapshots");
    ASSERT_TRUE(snapshotter) << snapshotter.error().ToString();
    snapshotter_ = std::move(*snapshotter);
  }

  // Prepares a layer on `parent`, lets `fill` write into its upper dir and commits it.
  template <typename Fill>
  ::testing::AssertionResult CommitLayer(const std::string& name, const std::string& parent,
                                         Fill fill) {
    std::string key = name + "-active";
    auto mounts = snapshotter_->Prepare(key, parent);
    if (!mounts) return ::testing::AssertionFailure() << mounts.error().ToString();
    auto upper = snapshotter_->UpperDir(key);
    if (!upper) return ::testing::AssertionFailure() << upper.error().ToString();
    fill(*upper);
    if (::testing::Test::HasFatalFailure()) return ::testing::AssertionFailure() << "fill failed";
    Status status = snapshotter_->Commit(name, key);
    if (!status) return ::testing::AssertionFailure() << status.error().ToString();
    return ::testing::AssertionSuccess();
  }

  ::testing::AssertionResult CommitFiles(const std::string& name, const std::string& parent,
                                         const std::map<std::string, std::string>& files) {
    return CommitLayer(name, parent, [&](const fs::path& upper) {
      for (const auto& [path, content] : files) {
        fs::create_directories((upper / path).parent_path());
        WriteTestFile(upper / path, content);
      }
    });
  }

  // Builds a chain of `count` layers, layer i adding file "f<i>"; returns the top name.
  std::string CommitChain(int count) {
    std::string parent;
    for (int i = 0; i < count; ++i) {
      std::string name = "sha256:layer" + std::to_string(i);
      EXPECT_TRUE(CommitFiles(name, parent, {{"f" + std::to_string(i), std::to_string(i)}}));
      parent = name;
    }
    return parent;
  }

  Result<std::vector<MountGuard>> MountSnapshot(const std::string& key, const fs::path& target) {
    fs::create_directories(target);
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<Mount> mounts, snapshotter_->Mounts(key));
    return MountAll(mounts, target);
  }

  fs::path Target(const std::string& name) const { return dir_->path() / ("mnt-" + name); }

  // Moves the snapshotter to a fresh root on tmpfs. The tests about layer
  // counts use it: each commit fsyncs metadata, which costs ~18 ms on this
  // kind of VM disk and would make 500-layer chains take minutes.
  void UseTmpfsRoot() {
    fs::path tmpfs = dir_->path() / "tmpfs";
    fs::create_directories(tmpfs);
    Status mounted = MountAt(Mount{"tmpfs", "tmpfs", {"mode=0700"}}, tmpfs);
    ASSERT_TRUE(mounted) << mounted.error().ToString();
    tmpfs_guard_ = MountGuard(tmpfs);
    auto snapshotter = Factory::Open(tmpfs / "snapshots");
    ASSERT_TRUE(snapshotter) << snapshotter.error().ToString();
    snapshotter_ = std::move(*snapshotter);
  }

  std::unique_ptr<TempDir> dir_;
  MountGuard tmpfs_guard_;  // after dir_, so it is unmounted before dir_ goes
  std::unique_ptr<Snapshotter> snapshotter_;
};

TYPED_TEST_SUITE_P(SnapshotterMountTest);

TYPED_TEST_P(SnapshotterMountTest, ActiveWithoutParentIsWritable) {
  ASSERT_TRUE(this->snapshotter_->Prepare("a", ""));
  fs::path target = this->Target("a");
  auto guards = this->MountSnapshot("a", target);
  ASSERT_TRUE(guards) << guards.error().ToString();
  WriteTestFile(target / "hello", "world");
  auto upper = this->snapshotter_->UpperDir("a");
  ASSERT_TRUE(upper);
  EXPECT_EQ(ReadTestFile(*upper / "hello"), "world");
}

TYPED_TEST_P(SnapshotterMountTest, LayersAreVisibleAndWritesLandInTheUpperDir) {
  ASSERT_TRUE(this->CommitFiles("l1", "", {{"etc/one", "1"}, {"etc/shadowed", "old"}}));
  ASSERT_TRUE(this->CommitFiles("l2", "l1", {{"etc/two", "2"}, {"etc/shadowed", "new"}}));
  ASSERT_TRUE(this->snapshotter_->Prepare("c", "l2"));
  fs::path target = this->Target("c");
  {
    auto guards = this->MountSnapshot("c", target);
    ASSERT_TRUE(guards) << guards.error().ToString();
    EXPECT_EQ(ReadTestFile(target / "etc/one"), "1");
    EXPECT_EQ(ReadTestFile(target / "etc/two"), "2");
    EXPECT_EQ(ReadTestFile(target / "etc/shadowed"), "new");
    WriteTestFile(target / "etc/three", "3");
    WriteTestFile(target / "etc/one", "changed");
    fs::remove(target / "etc/two");
  }
  EXPECT_FALSE(fs::exists(target / "etc"));  // unmounted
  auto upper = this->snapshotter_->UpperDir("c");
  ASSERT_TRUE(upper);
  EXPECT_EQ(ReadTestFile(*upper / "etc/three"), "3");
  EXPECT_EQ(ReadTestFile(*upper / "etc/one"), "changed");
  struct stat st {};
  ASSERT_EQ(::lstat((*upper / "etc/two").c_str(), &st), 0);  // the removal is a whiteout
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, ::makedev(0, 0));
  // The committed layers are untouched.
  ASSERT_TRUE(this->snapshotter_->View("check", "l2"));
  auto view = this->snapshotter_->Mounts("check");
  ASSERT_TRUE(view);
  fs::path check = this->Target("check");
  auto guards = this->MountSnapshot("check", check);
  ASSERT_TRUE(guards) << guards.error().ToString();
  EXPECT_EQ(ReadTestFile(check / "etc/one"), "1");
  EXPECT_TRUE(fs::exists(check / "etc/two"));
}

TYPED_TEST_P(SnapshotterMountTest, WhiteoutHidesALowerFile) {
  ASSERT_TRUE(this->CommitFiles("l1", "", {{"gone", "x"}, {"kept", "y"}}));
  ASSERT_TRUE(
      this->CommitLayer("l2", "l1", [](const fs::path& upper) { MakeWhiteout(upper / "gone"); }));
  for (const char* kind : {"view", "active"}) {
    std::string key = std::string(kind) + "-top";
    if (std::string(kind) == "view") {
      ASSERT_TRUE(this->snapshotter_->View(key, "l2"));
    } else {
      ASSERT_TRUE(this->snapshotter_->Prepare(key, "l2"));
    }
    fs::path target = this->Target(key);
    auto guards = this->MountSnapshot(key, target);
    ASSERT_TRUE(guards) << guards.error().ToString();
    EXPECT_FALSE(fs::exists(fs::symlink_status(target / "gone"))) << kind;
    EXPECT_EQ(ReadTestFile(target / "kept"), "y") << kind;
  }
}

TYPED_TEST_P(SnapshotterMountTest, OpaqueDirectoryHidesLowerContents) {
  ASSERT_TRUE(this->CommitFiles("l1", "", {{"d/old", "x"}, {"d/sub/older", "z"}, {"other", "o"}}));
  ASSERT_TRUE(this->CommitLayer("l2", "l1", [](const fs::path& upper) {
    fs::create_directories(upper / "d");
    MakeOpaque(upper / "d");
    WriteTestFile(upper / "d" / "new", "n");
  }));
  ASSERT_TRUE(this->snapshotter_->View("v", "l2"));
  fs::path target = this->Target("v");
  auto guards = this->MountSnapshot("v", target);
  ASSERT_TRUE(guards) << guards.error().ToString();
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(target / "d")) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"new"});
  EXPECT_EQ(ReadTestFile(target / "other"), "o");
}

TYPED_TEST_P(SnapshotterMountTest, ViewsAreReadOnly) {
  ASSERT_TRUE(this->CommitFiles("l1", "", {{"a", "1"}}));
  ASSERT_TRUE(this->CommitFiles("l2", "l1", {{"b", "2"}}));
  for (const char* parent : {"l1", "l2"}) {
    std::string key = std::string("view-") + parent;
    ASSERT_TRUE(this->snapshotter_->View(key, parent));
    fs::path target = this->Target(key);
    auto guards = this->MountSnapshot(key, target);
    ASSERT_TRUE(guards) << guards.error().ToString();
    EXPECT_EQ(ReadTestFile(target / "a"), "1");
    EXPECT_EQ(OpenForWriteErrno(target / "new"), EROFS) << parent;
    EXPECT_EQ(OpenForWriteErrno(target / "a"), EROFS) << parent;
  }
}

TYPED_TEST_P(SnapshotterMountTest, ChainOf200LayersShowsEveryFile) {
  constexpr int kLayers = 200;
  auto start = std::chrono::steady_clock::now();
  std::string top = this->CommitChain(kLayers);
  auto built = std::chrono::steady_clock::now();
  ASSERT_TRUE(this->snapshotter_->Prepare("container", top));
  fs::path target = this->Target("container");
  auto guards = this->MountSnapshot("container", target);
  ASSERT_TRUE(guards) << guards.error().ToString();
  auto mounted = std::chrono::steady_clock::now();
  for (int i = 0; i < kLayers; ++i) {
    ASSERT_EQ(ReadTestFile(target / ("f" + std::to_string(i))), std::to_string(i)) << i;
  }
  WriteTestFile(target / "top", "t");
  auto ms = [](auto d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  this->RecordProperty("commit_200_layers_ms", ms(built - start));
  this->RecordProperty("mount_200_layers_ms", ms(mounted - built));
}

// 500 lower layers is the kernel's limit: a container on a 500-layer chain
// mounts, a view of 501 layers gets an error that says why.
TYPED_TEST_P(SnapshotterMountTest, ChainOf501LayersIsAClearError) {
  constexpr int kLayers = 501;
  ASSERT_NO_FATAL_FAILURE(this->UseTmpfsRoot());
  std::string top = this->CommitChain(kLayers);
  ASSERT_TRUE(this->snapshotter_->Prepare("on-500", "sha256:layer499"));
  {
    fs::path target = this->Target("on-500");
    auto guards = this->MountSnapshot("on-500", target);
    ASSERT_TRUE(guards) << guards.error().ToString();
    EXPECT_EQ(ReadTestFile(target / "f0"), "0");
    EXPECT_EQ(ReadTestFile(target / "f499"), "499");
  }
  ASSERT_TRUE(this->snapshotter_->View("on-501", top));
  fs::path target = this->Target("on-501");
  auto guards = this->MountSnapshot("on-501", target);
  ASSERT_FALSE(guards);
  EXPECT_EQ(guards.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(guards.error().message(), HasSubstr("mount overlay at " + target.string()));
  EXPECT_THAT(guards.error().message(), HasSubstr("501 lower layers"));
  EXPECT_THAT(guards.error().message(), HasSubstr("limit of 500"));
}

REGISTER_TYPED_TEST_SUITE_P(SnapshotterMountTest, ActiveWithoutParentIsWritable,
                            LayersAreVisibleAndWritesLandInTheUpperDir, WhiteoutHidesALowerFile,
                            OpaqueDirectoryHidesLowerContents, ViewsAreReadOnly,
                            ChainOf200LayersShowsEveryFile, ChainOf501LayersIsAClearError);

using Implementations = ::testing::Types<OverlayFactory>;
INSTANTIATE_TYPED_TEST_SUITE_P(SnapshotterMount, SnapshotterMountTest, Implementations);

// On kernels without fsconfig "lowerdir+" (before 6.8) MountAt falls back to
// one mount(2) option string; 500 snapshot layers must still fit in it.
class OverlaySnapshotterLegacyMountTest : public SnapshotterMountTest<OverlayFactory> {};

TEST_F(OverlaySnapshotterLegacyMountTest, FiveHundredLayersFitOneLegacyMountCall) {
  SetOverlayLegacyMountForTesting(true);
  ScopeGuard restore([] { SetOverlayLegacyMountForTesting(false); });
  ASSERT_NO_FATAL_FAILURE(UseTmpfsRoot());
  std::string top = CommitChain(500);
  ASSERT_TRUE(snapshotter_->Prepare("container", top));
  auto mounts = snapshotter_->Mounts("container");
  ASSERT_TRUE(mounts);
  size_t joined = 0;
  for (const std::string& option : (*mounts)[0].options) joined += option.size() + 1;
  EXPECT_GT(joined, 4096u);  // the absolute paths alone would not fit
  fs::path target = Target("container");
  auto guards = MountSnapshot("container", target);
  ASSERT_TRUE(guards) << guards.error().ToString();
  for (int i = 0; i < 500; ++i) {
    ASSERT_EQ(ReadTestFile(target / ("f" + std::to_string(i))), std::to_string(i)) << i;
  }
  WriteTestFile(target / "written", "w");
  auto upper = snapshotter_->UpperDir("container");
  ASSERT_TRUE(upper);
  EXPECT_EQ(ReadTestFile(*upper / "written"), "w");
}

}  // namespace
}  // namespace imgtool::overlay
