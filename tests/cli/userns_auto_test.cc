#include "cli/userns_auto.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool::cli {
namespace {

namespace fs = std::filesystem;
using ::imgtool::testing::WriteTestFile;

class UsernsAutoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("imgtool-userns-auto-test-");
    ASSERT_TRUE(dir.has_value()) << dir.error().ToString();
    dir_.emplace(std::move(*dir));
  }
  fs::path Path(const std::string& name) const { return dir_->path() / name; }
  // What the test's own files add: their owner (root when run as root).
  static uint32_t Own() { return std::max<uint32_t>(::getuid(), ::getgid()); }

  std::optional<TempDir> dir_;
};

TEST_F(UsernsAutoTest, AccountsOfTheTopmostPasswdAndGroupCount) {
  // The lower layer's passwd is hidden by the upper one's.
  WriteTestFile(Path("lower/etc/passwd"), "root:x:0:0::/:/bin/sh\nbig:x:9000:9000::/:/bin/sh\n");
  WriteTestFile(Path("upper/etc/passwd"),
                "root:x:0:0::/:/bin/sh\napp:x:1000:1500::/:/bin/sh\n"
                "nobody:x:65534:65534::/:/bin/false\nother:x:65534:7::/:/bin/false\nshort:x\n");
  WriteTestFile(Path("lower/etc/group"), "root:x:0:\nstaff:x:2500:app\nnogroup:x:65534:\n");
  Result<uint32_t> highest = HighestIdInLayers({Path("upper"), Path("lower")});
  ASSERT_TRUE(highest.has_value()) << highest.error().ToString();
  EXPECT_EQ(*highest, std::max<uint32_t>(2500, Own()));
  // A whiteout (or anything but a plain file) in the upper layer hides the lower passwd.
  fs::remove(Path("upper/etc/passwd"));
  fs::create_symlink("/etc/passwd", Path("upper/etc/passwd"));
  fs::remove(Path("lower/etc/group"));
  highest = HighestIdInLayers({Path("upper"), Path("lower")});
  ASSERT_TRUE(highest.has_value()) << highest.error().ToString();
  EXPECT_EQ(*highest, Own());
  // Without the upper layer the lower passwd counts.
  highest = HighestIdInLayers({Path("lower")});
  ASSERT_TRUE(highest.has_value()) << highest.error().ToString();
  EXPECT_EQ(*highest, std::max<uint32_t>(9000, Own()));
}

TEST_F(UsernsAutoTest, AMissingLayerIsAnError) {
  Result<uint32_t> highest = HighestIdInLayers({Path("nope")});
  ASSERT_FALSE(highest.has_value());
  EXPECT_NE(highest.error().message().find(Path("nope").string()), std::string::npos);
}

TEST_F(UsernsAutoTest, TheAnswerIsCachedPerChainId) {
  WriteTestFile(Path("layer/etc/passwd"), "app:x:3000:3000::/:/bin/sh\n");
  int calls = 0;
  auto layers = [&]() -> Result<std::vector<fs::path>> {
    ++calls;
    return std::vector<fs::path>{Path("layer")};
  };
  uint32_t expected = std::max<uint32_t>(3000, Own());
  EXPECT_EQ(HighestIdOfImage(Path("cache"), "sha256:abc", layers).value(), expected);
  EXPECT_EQ(HighestIdOfImage(Path("cache"), "sha256:abc", layers).value(), expected);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(::imgtool::testing::ReadTestFile(Path("cache/sha256-abc")),
            std::to_string(expected) + "\n");
  // Another chain ID is scanned again.
  EXPECT_EQ(HighestIdOfImage(Path("cache"), "sha256:def", layers).value(), expected);
  EXPECT_EQ(calls, 2);
  // Failures are the caller's, and cache nothing.
  auto failing = []() -> Result<std::vector<fs::path>> { return NotFoundError("no layers"); };
  Result<uint32_t> failed = HighestIdOfImage(Path("cache"), "sha256:0ff", failing);
  ASSERT_FALSE(failed.has_value());
  EXPECT_FALSE(fs::exists(Path("cache/sha256-0ff")));
}

TEST(UsernsAutoPureTest, LayerDirsOfMounts) {
  EXPECT_EQ(LayerDirsOfMounts({Mount{"overlay",
                                     "overlay",
                                     {"lowerdir=/s/3/fs:/s/2/fs:/s/1/fs", "upperdir=/c/upper",
                                      "workdir=/c/work", "index=off"}}}),
            (std::vector<fs::path>{"/s/3/fs", "/s/2/fs", "/s/1/fs"}));
  EXPECT_EQ(LayerDirsOfMounts({Mount{"bind", "/s/1/fs", {"rbind", "rw"}}}),
            (std::vector<fs::path>{"/s/1/fs"}));
}

TEST(UsernsAutoPureTest, HighestIdInUserSpec) {
  EXPECT_EQ(HighestIdInUserSpec(""), 0u);
  EXPECT_EQ(HighestIdInUserSpec("app"), 0u);
  EXPECT_EQ(HighestIdInUserSpec("5000"), 5000u);
  EXPECT_EQ(HighestIdInUserSpec("app:7000"), 7000u);
  EXPECT_EQ(HighestIdInUserSpec("100:20"), 100u);
}

TEST(UsernsAutoPureTest, SizeIsAtLeast1024AndCoversTheImage) {
  UsernsFlag flag;
  EXPECT_EQ(AutoUsernsSize(flag, 0).value(), 1024u);
  EXPECT_EQ(AutoUsernsSize(flag, 1023).value(), 1024u);
  EXPECT_EQ(AutoUsernsSize(flag, 2000).value(), 2001u);
  EXPECT_EQ(AutoUsernsSize(flag, 65535).value(), 65536u);
  Result<uint32_t> too_big = AutoUsernsSize(flag, 100000);
  ASSERT_FALSE(too_big.has_value());
  EXPECT_EQ(too_big.error().message(),
            "--userns=auto: the container uses id 100000, and without size= it gets at most 65536 "
            "ids (use --userns=auto:size=100001 or more)");
  // size= is taken as it is, smaller or larger.
  flag.size = 10;
  EXPECT_EQ(AutoUsernsSize(flag, 100000).value(), 10u);
  flag.size = 200000;
  EXPECT_EQ(AutoUsernsSize(flag, 0).value(), 200000u);
}

}  // namespace
}  // namespace imgtool::cli
