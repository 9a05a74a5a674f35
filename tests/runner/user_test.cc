#include "runner/user.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "tests/support/test_util.h"

namespace imgtool::runner {
namespace {

constexpr std::string_view kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "# a comment\n"
    "broken line\n"
    "app:x:1000:1000:App:/home/app:/bin/sh\n"
    "svc:x:1001:50::/srv:/bin/false\r\n"
    "bad:x:notanumber:1::/:/bin/sh\n";
constexpr std::string_view kGroup =
    "root:x:0:\n"
    "staff:x:50:app,svc\n"
    "app:x:1000:\n"
    "extra:x:2000:app\n"
    "wheel:x:10:root\n";

TEST(UserSpecTest, Parses) {
  EXPECT_EQ(ParseUserSpec("app")->user, "app");
  EXPECT_EQ(ParseUserSpec("app")->group, "");
  EXPECT_EQ(ParseUserSpec("1000:50")->group, "50");
  EXPECT_EQ(ParseUserSpec(":staff")->user, "");
  EXPECT_EQ(ParseUserSpec("")->user, "");
  EXPECT_FALSE(ParseUserSpec("app:").has_value());
  EXPECT_FALSE(ParseUserSpec("a b").has_value());
  EXPECT_FALSE(ParseUserSpec("a:b:c").has_value());
}

TEST(UserSpecTest, EmptyIsRootWithItsGroups) {
  Result<ResolvedUser> user = ResolveUserFromFiles({}, kPasswd, kGroup);
  ASSERT_TRUE(user.has_value());
  EXPECT_EQ(user->uid, 0u);
  EXPECT_EQ(user->gid, 0u);
  EXPECT_EQ(user->home, "/root");
  EXPECT_EQ(user->additional_gids, std::vector<gid_t>{10});
}

TEST(UserSpecTest, NameGivesIdsHomeAndSupplementaryGroups) {
  Result<ResolvedUser> user = ResolveUserFromFiles({"app", ""}, kPasswd, kGroup);
  ASSERT_TRUE(user.has_value());
  EXPECT_EQ(user->uid, 1000u);
  EXPECT_EQ(user->gid, 1000u);
  EXPECT_EQ(user->home, "/home/app");
  EXPECT_EQ(user->additional_gids, (std::vector<gid_t>{50, 2000}));
}

TEST(UserSpecTest, NumberInPasswdIsThatEntry) {
  Result<ResolvedUser> user = ResolveUserFromFiles({"1001", ""}, kPasswd, kGroup);
  ASSERT_TRUE(user.has_value());
  EXPECT_EQ(user->gid, 50u);
  EXPECT_EQ(user->home, "/srv");  // CRLF line endings are accepted
}

TEST(UserSpecTest, UnknownNumberIsUsedAsIs) {
  Result<ResolvedUser> user = ResolveUserFromFiles({"4242", "4343"}, kPasswd, kGroup);
  ASSERT_TRUE(user.has_value());
  EXPECT_EQ(user->uid, 4242u);
  EXPECT_EQ(user->gid, 4343u);
  EXPECT_EQ(user->home, "/");
  EXPECT_TRUE(user->additional_gids.empty());
}

TEST(UserSpecTest, GroupByNameOverridesPrimary) {
  Result<ResolvedUser> user = ResolveUserFromFiles({"app", "staff"}, kPasswd, kGroup);
  ASSERT_TRUE(user.has_value());
  EXPECT_EQ(user->uid, 1000u);
  EXPECT_EQ(user->gid, 50u);
}

TEST(UserSpecTest, UnknownNamesAreNotFound) {
  Result<ResolvedUser> user = ResolveUserFromFiles({"nobody", ""}, kPasswd, kGroup);
  ASSERT_FALSE(user.has_value());
  EXPECT_EQ(user.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(user.error().message().find("\"nobody\""), std::string::npos);
  Result<ResolvedUser> group = ResolveUserFromFiles({"app", "nogroup"}, kPasswd, kGroup);
  ASSERT_FALSE(group.has_value());
  EXPECT_NE(group.error().message().find("\"nogroup\""), std::string::npos);
  // A malformed entry never matches.
  EXPECT_FALSE(ResolveUserFromFiles({"bad", ""}, kPasswd, kGroup).has_value());
}

TEST(UserSpecTest, MissingFilesStillAllowNumbers) {
  Result<ResolvedUser> user = ResolveUserFromFiles({"0", ""}, "", "");
  ASSERT_TRUE(user.has_value());
  EXPECT_EQ(user->uid, 0u);
  EXPECT_FALSE(ResolveUserFromFiles({"root", ""}, "", "").has_value());
}

TEST(UserSpecTest, ReadsTheRootfsFilesNotTheHosts) {
  Result<TempDir> dir = TempDir::Create("imgtool-user-test-");
  ASSERT_TRUE(dir.has_value());
  std::filesystem::path root = dir->path();
  imgtool::testing::WriteTestFile(root / "etc/passwd", "img:x:77:88::/img:/bin/sh\n");
  imgtool::testing::WriteTestFile(root / "etc/group", "g:x:99:img\n");
  UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  Result<ResolvedUser> user = ResolveUser(root_fd.get(), {"img", ""});
  ASSERT_TRUE(user.has_value()) << user.error().ToString();
  EXPECT_EQ(user->uid, 77u);
  EXPECT_EQ(user->gid, 88u);
  EXPECT_EQ(user->additional_gids, std::vector<gid_t>{99});
  // The host's root account does not leak in.
  EXPECT_FALSE(ResolveUser(root_fd.get(), {"root", ""}).has_value());
}

TEST(UserSpecTest, SymlinkedPasswdStaysInsideTheRootfs) {
  Result<TempDir> dir = TempDir::Create("imgtool-user-test-");
  ASSERT_TRUE(dir.has_value());
  std::filesystem::path root = dir->path();
  std::filesystem::create_directories(root / "etc");
  // An image pointing /etc/passwd at the host's file gets its own /etc/shadow-less view:
  // the link is resolved with the rootfs as "/".
  std::filesystem::create_symlink("/../../../../etc/hostpasswd", root / "etc/passwd");
  imgtool::testing::WriteTestFile(root / "etc/hostpasswd", "inside:x:5:5::/:/bin/sh\n");
  UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  Result<ResolvedUser> user = ResolveUser(root_fd.get(), {"inside", ""});
  ASSERT_TRUE(user.has_value()) << user.error().ToString();
  EXPECT_EQ(user->uid, 5u);
}

}  // namespace
}  // namespace imgtool::runner
