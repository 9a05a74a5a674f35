// RootfsAhead and DetachRootfs against the real kernel: needs root.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "runner/rootfs.h"
#include "tests/support/test_util.h"

namespace imgtool::runner {
namespace {

namespace fs = std::filesystem;
using ::imgtool::testing::WriteTestFile;

class RootfsAheadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    auto dir = TempDir::Create("imgtool-rootfs-ahead-");
    ASSERT_TRUE(dir) << dir.error().ToString();
    dir_ = std::make_unique<TempDir>(std::move(*dir));
    for (const char* name : {"lower", "upper", "work"}) fs::create_directories(Path(name));
    WriteTestFile(Path("lower") / "etc" / "greeting", "hello\n");
  }
  fs::path Path(const std::string& name) const { return dir_->path() / name; }
  Mount Overlay(const fs::path& lower) const {
    return Mount{"overlay",
                 "overlay",
                 {"lowerdir=" + lower.string(), "upperdir=" + Path("upper").string(),
                  "workdir=" + Path("work").string(), "index=off"}};
  }

  std::unique_ptr<TempDir> dir_;
};

// A lone overlay made on the thread is the tree DetachRootfs hands back: the
// inspection reads the image through it, and nothing is mounted at the dir.
TEST_F(RootfsAheadTest, LoneOverlayIsMadeAheadAndTakenOver) {
  std::vector<Mount> mounts = {Overlay(Path("lower"))};
  RootfsAhead ahead;
  ahead.Begin(mounts);
  std::optional<Result<UniqueFd>> made = ahead.Take();
  ASSERT_TRUE(made.has_value());
  if (!*made && made->error().code() == ErrorCode::kNotFound) {
    GTEST_SKIP() << "no detached overlay here: " << made->error().ToString();
  }
  ASSERT_TRUE(*made) << made->error().ToString();
  EXPECT_FALSE(ahead.Take().has_value()) << "taken once";
  std::string seen;
  Result<UniqueFd> tree = DetachRootfs(
      mounts, Path("rootfs"),
      [&](int root_fd) -> Status {
        UniqueFd file(::openat(root_fd, "etc/greeting", O_RDONLY | O_CLOEXEC));
        if (!file) return ErrnoError("open etc/greeting");
        char buf[16] = {};
        ssize_t n = ::read(file.get(), buf, sizeof(buf));
        seen.assign(buf, n > 0 ? static_cast<size_t>(n) : 0);
        return OkStatus();
      },
      nullptr, std::move(made));
  ASSERT_TRUE(tree) << tree.error().ToString();
  EXPECT_EQ(seen, "hello\n");
  EXPECT_FALSE(fs::exists(Path("rootfs"))) << "a lone overlay needs no mount point";
}

// Anything but a lone overlay is left to DetachRootfs.
TEST_F(RootfsAheadTest, NothingBegunForOtherMountLists) {
  RootfsAhead none;
  none.Begin({});
  EXPECT_FALSE(none.Take().has_value());
  RootfsAhead two;
  two.Begin({Overlay(Path("lower")), Mount{"tmpfs", "tmpfs", {}}});
  EXPECT_FALSE(two.Take().has_value());
}

// A failure on the thread is DetachRootfs's error, naming the rootfs and the
// missing layer.
TEST_F(RootfsAheadTest, FailureAheadIsReportedByDetachRootfs) {
  std::vector<Mount> mounts = {Overlay(Path("gone"))};
  RootfsAhead ahead;
  ahead.Begin(mounts);
  std::optional<Result<UniqueFd>> made = ahead.Take();
  ASSERT_TRUE(made.has_value());
  ASSERT_FALSE(*made);
  // (A missing path is NotFound, which DetachRootfs also takes for a kernel
  // without detached overlays: it then tries the mount at the dir, which
  // fails on the same path.)
  Result<UniqueFd> tree = DetachRootfs(mounts, Path("rootfs"), nullptr, nullptr, std::move(made));
  ASSERT_FALSE(tree);
  EXPECT_NE(tree.error().ToString().find(Path("gone").string()), std::string::npos)
      << tree.error().ToString();
  EXPECT_FALSE(fs::exists(Path("upper") / "etc")) << "nothing was mounted";
}

// Never taken: the destructor waits for the thread and closes what it made.
TEST_F(RootfsAheadTest, UntakenMountIsClosed) {
  {
    RootfsAhead ahead;
    ahead.Begin({Overlay(Path("lower"))});
  }
  // The upper dir is free again: another overlay may use it.
  RootfsAhead again;
  again.Begin({Overlay(Path("lower"))});
  std::optional<Result<UniqueFd>> made = again.Take();
  ASSERT_TRUE(made.has_value());
  if (!*made && made->error().code() == ErrorCode::kNotFound) GTEST_SKIP();
  EXPECT_TRUE(*made) << made->error().ToString();
}

}  // namespace
}  // namespace imgtool::runner
