// MountAt's checks that fail before any mount call, so they run without root.
#include "common/mount.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/scope_guard.h"

namespace imgtool {
namespace {

std::string JoinLowers(size_t count, const std::string& prefix) {
  std::string joined;
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) joined.push_back(':');
    joined += prefix + std::to_string(i);
  }
  return joined;
}

TEST(MountTest, MoreThan500LowerLayersIsAClearError) {
  Mount overlay{"overlay", "overlay", {"lowerdir=" + JoinLowers(501, "/nonexistent/l")}};
  Status status = MountAt(overlay, "/nonexistent/merged");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(status.error().message().find("mount overlay at /nonexistent/merged"),
            std::string::npos)
      << status.error().ToString();
  EXPECT_NE(status.error().message().find("501 lower layers"), std::string::npos);
  EXPECT_NE(status.error().message().find("500"), std::string::npos);
}

TEST(MountTest, EmptyLowerPathIsRefused) {
  Mount overlay{"overlay", "overlay", {"lowerdir=/a::/b"}};
  Status status = MountAt(overlay, "/nonexistent/merged");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(status.error().message().find("empty path"), std::string::npos);
}

TEST(MountTest, OverlayLowerDirsInTheirStackingOrder) {
  Mount overlay{"overlay",
                "overlay",
                {"lowerdir+=/top", "ro", "lowerdir=/a:/b", "upperdir=/u", "lowerdir+=/c"}};
  EXPECT_EQ(OverlayLowerDirs(overlay), (std::vector<std::string>{"/top", "/a", "/b", "/c"}));
  EXPECT_TRUE(OverlayLowerDirs(Mount{"bind", "/a", {"lowerdir=/x"}}).empty());
  EXPECT_TRUE(OverlayLowerDirs(Mount{"overlay", "overlay", {"upperdir=/u"}}).empty());
}

TEST(MountTest, OverlayWithoutLowerIsRefused) {
  Status status = MountAt(Mount{"overlay", "overlay", {"upperdir=/u", "workdir=/w"}}, "/x");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(status.error().message().find("no lowerdir"), std::string::npos);
}

TEST(MountTest, BindWithoutSourceIsRefused) {
  Status status = MountAt(Mount{"bind", "", {"rbind", "ro"}}, "/x");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(status.error().message(), "mount bind at /x: bind without a source");
}

// Lowers that share no directory stay too long even when made relative; the
// legacy path must say so rather than let the kernel cut the list.
TEST(MountTest, LegacyOverlayOverOnePageIsAClearError) {
  SetOverlayLegacyMountForTesting(true);
  ScopeGuard restore([] { SetOverlayLegacyMountForTesting(false); });
  std::string lowers;
  for (int i = 0; i < 60; ++i) {
    if (i > 0) lowers.push_back(':');
    lowers += "/" + std::string(80, static_cast<char>('a' + i % 26)) + std::to_string(i) + "/fs";
  }
  Status status = MountAt(Mount{"overlay", "overlay", {"lowerdir=" + lowers}}, "/x");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(status.error().message().find("over the kernel's limit of 4095 bytes"),
            std::string::npos)
      << status.error().ToString();
  EXPECT_NE(status.error().message().find("60 lower layers"), std::string::npos);
}

TEST(MountTest, MountGuardWithoutTargetDoesNothing) {
  MountGuard guard;
  EXPECT_TRUE(guard.Unmount());
  EXPECT_TRUE(guard.Release().empty());
}

TEST(MountTest, MountGuardUnmountOfNonMountPointFails) {
  MountGuard not_mounted("/nonexistent/imgtool-not-a-mount");
  Status status = not_mounted.Unmount();
  ASSERT_FALSE(status);
  EXPECT_NE(status.error().message().find("unmount /nonexistent/imgtool-not-a-mount"),
            std::string::npos);
  EXPECT_TRUE(not_mounted.target().empty());
}

}  // namespace
}  // namespace imgtool
