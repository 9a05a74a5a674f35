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
