#include "runner/namespaces.h"

#include <gtest/gtest.h>
#include <sched.h>

#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool::runner {
namespace {

TEST(NamespacesTest, CloneFlags) {
  uint64_t flags = ContainerCloneFlags(true, false);
  for (uint64_t flag : {uint64_t{CLONE_NEWPID}, uint64_t{CLONE_NEWUTS}, uint64_t{CLONE_NEWNS},
                        uint64_t{CLONE_NEWIPC}, uint64_t{CLONE_NEWNET},
                        uint64_t{0x80} /* CLONE_NEWTIME */}) {
    EXPECT_TRUE(flags & flag) << std::hex << flag;
  }
  EXPECT_FALSE(flags & CLONE_NEWUSER);
  EXPECT_FALSE(flags & CLONE_NEWCGROUP);  // unshared by the child once in its cgroup
  EXPECT_FALSE(ContainerCloneFlags(false, false) & CLONE_NEWNET);
  EXPECT_TRUE(ContainerCloneFlags(false, true) & CLONE_NEWUSER);
}

constexpr std::string_view kSubuid =
    "# comment\n"
    "alice:100000:65536\n"
    "root:200000:1000\n"
    "root:300000:65536\n"
    "1001:400000:65536\n"
    "broken\n"
    "bob:notanumber:65536\n";

TEST(NamespacesTest, FindsTheFirstRangeBigEnough) {
  Result<IdMap> alice = FindSubordinateRange(kSubuid, "alice", 1000, 65536);
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(*alice, (IdMap{0, 100000, 65536}));
  // root's first range is too small for 65536 ids; the second fits.
  Result<IdMap> root = FindSubordinateRange(kSubuid, "root", 0, 65536);
  ASSERT_TRUE(root.has_value());
  EXPECT_EQ(root->host_id, 300000u);
  EXPECT_EQ(FindSubordinateRange(kSubuid, "root", 0, 1000)->host_id, 200000u);
  // By number.
  EXPECT_EQ(FindSubordinateRange(kSubuid, "carol", 1001, 65536)->host_id, 400000u);
  Result<IdMap> bob = FindSubordinateRange(kSubuid, "bob", 1002, 65536);
  ASSERT_FALSE(bob.has_value());
  EXPECT_EQ(bob.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(bob.error().message().find("\"bob\""), std::string::npos);
}

TEST(NamespacesTest, AutoMappingsPreferContainersThenRoot) {
  if (::getuid() != 0) GTEST_SKIP() << "the entries looked up are root's";
  Result<TempDir> dir = TempDir::Create("imgtool-userns-test-");
  ASSERT_TRUE(dir.has_value());
  imgtool::testing::WriteTestFile(dir->path() / "subuid", "root:100000:65536\n");
  imgtool::testing::WriteTestFile(dir->path() / "subgid",
                                  "root:100000:65536\ncontainers:500000:65536\n");
  Result<IdMappings> mappings = AutoIdMappings(dir->path() / "subuid", dir->path() / "subgid");
  ASSERT_TRUE(mappings.has_value()) << mappings.error().ToString();
  EXPECT_EQ(mappings->uids, std::vector<IdMap>{(IdMap{0, 100000, 65536})});
  EXPECT_EQ(mappings->gids, std::vector<IdMap>{(IdMap{0, 500000, 65536})});
  Result<IdMappings> missing = AutoIdMappings(dir->path() / "nope", dir->path() / "subgid");
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message().find("--userns=auto"), std::string::npos);
}

TEST(NamespacesTest, FormatsIdMaps) {
  EXPECT_EQ(FormatIdMap({{0, 100000, 65536}, {65536, 1, 1}}), "0 100000 65536\n65536 1 1\n");
}

TEST(NamespacesTest, NoNamespaceToJoinInOurOwnProcess) {
  Result<uint64_t> flags = NamespacesToJoin(::getpid());
  ASSERT_TRUE(flags.has_value()) << flags.error().ToString();
  EXPECT_EQ(*flags, 0u);
}

}  // namespace
}  // namespace imgtool::runner
