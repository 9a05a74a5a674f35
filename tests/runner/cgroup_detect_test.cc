#include "runner/cgroup_detect.h"

#include <gtest/gtest.h>

namespace imgtool::runner {
namespace {

// This machine's layout: v1 controllers plus a cgroup2 mount holding hugetlb only.
constexpr std::string_view kHybrid =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

TEST(CgroupDetectTest, ParsesV1AndUnifiedMounts) {
  std::vector<CgroupMount> mounts = ParseCgroupMounts(kHybrid);
  ASSERT_EQ(mounts.size(), 8u);
  EXPECT_EQ(mounts[0].mount_point, "/sys/fs/cgroup/cpu");
  EXPECT_EQ(mounts[0].controllers, std::set<std::string>{"cpu"});
  EXPECT_TRUE(mounts[6].controllers.empty()) << "name=systemd is no controller";
  EXPECT_TRUE(mounts[7].unified);
  EXPECT_EQ(mounts[7].mount_point, "/sys/fs/cgroup/unified");
}

TEST(CgroupDetectTest, HybridChoosesV1ForItsControllers) {
  auto layout = ChooseCgroupLayout(ParseCgroupMounts(kHybrid), "hugetlb\n");
  ASSERT_TRUE(layout) << layout.error().ToString();
  EXPECT_EQ(layout->version, CgroupVersion::kV1);
  EXPECT_EQ(layout->v1_mounts.at("memory"), "/sys/fs/cgroup/memory");
  EXPECT_EQ(layout->v1_mounts.at("pids"), "/sys/fs/cgroup/pids");
  EXPECT_EQ(layout->v1_mounts.at("cpuacct"), "/sys/fs/cgroup/cpuacct");
  EXPECT_EQ(layout->unified_root, "/sys/fs/cgroup/unified");
  EXPECT_EQ(layout->unified_controllers, std::set<std::string>{"hugetlb"});
}

TEST(CgroupDetectTest, CoMountedControllersShareAHierarchy) {
  auto layout = ChooseCgroupLayout(
      ParseCgroupMounts("1 0 0:1 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
                        "2 0 0:2 / /cg/memory rw - cgroup cgroup rw,memory\n"),
      "");
  ASSERT_TRUE(layout);
  EXPECT_EQ(layout->version, CgroupVersion::kV1);
  EXPECT_EQ(layout->v1_mounts.at("cpu"), "/cg/cpu,cpuacct");
  EXPECT_EQ(layout->v1_mounts.at("cpuacct"), "/cg/cpu,cpuacct");
}

TEST(CgroupDetectTest, PureV2) {
  auto layout = ChooseCgroupLayout(
      ParseCgroupMounts("30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 "
                        "rw,nsdelegate,memory_recursiveprot\n"),
      "cpuset cpu io memory hugetlb pids rdma misc\n");
  ASSERT_TRUE(layout);
  EXPECT_EQ(layout->version, CgroupVersion::kV2);
  EXPECT_EQ(layout->unified_root, "/sys/fs/cgroup");
  EXPECT_TRUE(layout->unified_controllers.contains("memory"));
  EXPECT_TRUE(layout->unified_controllers.contains("pids"));
  EXPECT_TRUE(layout->v1_mounts.empty());
}

TEST(CgroupDetectTest, UnescapesMountPoints) {
  std::vector<CgroupMount> mounts =
      ParseCgroupMounts("1 0 0:1 / /tmp/my\\040cg rw - cgroup2 none rw\n");
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].mount_point, "/tmp/my cg");
}

TEST(CgroupDetectTest, NoHierarchyIsAnError) {
  auto layout =
      ChooseCgroupLayout(ParseCgroupMounts("1 0 0:1 / /proc rw - proc proc rw\n"
                                           "2 0 0:2 / /cg/devices rw - cgroup cgroup rw,devices\n"),
                         "");
  ASSERT_FALSE(layout);
  EXPECT_EQ(layout.error().code(), ErrorCode::kFailedPrecondition);
}

TEST(CgroupDetectTest, ThisMachineIsDetected) {
  auto layout = DetectCgroupLayout();
  ASSERT_TRUE(layout) << layout.error().ToString();
  if (layout->version == CgroupVersion::kV1) {
    EXPECT_FALSE(layout->v1_mounts.empty());
  } else {
    EXPECT_FALSE(layout->unified_root.empty());
  }
}

TEST(CgroupDetectTest, ValidatesNames) {
  EXPECT_TRUE(ValidateCgroupName("abc123"));
  EXPECT_FALSE(ValidateCgroupName(""));
  EXPECT_FALSE(ValidateCgroupName(".."));
  EXPECT_FALSE(ValidateCgroupName("a/b"));
  EXPECT_FALSE(ValidateCgroupName(".hidden"));
}

}  // namespace
}  // namespace imgtool::runner
