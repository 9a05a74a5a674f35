#include "runner/cgroup_files.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/temp_dir.h"

namespace imgtool::runner {
namespace {

TEST(CgroupFilesTest, SharesToWeightMatchesCrunMapping) {
  EXPECT_EQ(CpuSharesToWeight(0), 0u);
  EXPECT_EQ(CpuSharesToWeight(2), 1u);
  EXPECT_EQ(CpuSharesToWeight(1024), 100u);
  EXPECT_EQ(CpuSharesToWeight(262144), 10000u);
  EXPECT_LT(CpuSharesToWeight(512), 100u);
  EXPECT_GT(CpuSharesToWeight(2048), 100u);
  uint64_t previous = 0;
  for (uint64_t shares = 2; shares <= 262144; shares *= 2) {
    uint64_t weight = CpuSharesToWeight(shares);
    EXPECT_GE(weight, previous) << shares;
    EXPECT_GE(weight, 1u);
    EXPECT_LE(weight, 10000u);
    previous = weight;
  }
}

// The mapping is computed without libm (imgtool loads none); it must agree
// with libm's log2 and pow for every valid value.
TEST(CgroupFilesTest, SharesToWeightAgreesWithLibmEverywhere) {
  for (uint64_t shares = 3; shares < 262144; ++shares) {
    double l = std::log2(static_cast<double>(shares));
    double exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    auto expected = static_cast<uint64_t>(std::ceil(std::pow(10.0, exponent) - 1e-6));
    ASSERT_EQ(CpuSharesToWeight(shares), expected) << shares;
  }
}

TEST(CgroupFilesTest, CpusToQuotaRoundsLikeLlround) {
  for (int i = 1; i < 200000; ++i) {
    double cpus = i * 0.00037;
    ASSERT_EQ(CpusToQuota(cpus).quota_us, std::max<int64_t>(1000, std::llround(cpus * 100000)))
        << cpus;
  }
  EXPECT_EQ(CpusToQuota(1.000005).quota_us, 100001);
  EXPECT_EQ(CpusToQuota(1.5).quota_us, 150000);
}

TEST(CgroupFilesTest, CpusToQuota) {
  EXPECT_EQ(CpusToQuota(0.5).quota_us, 50000);
  EXPECT_EQ(CpusToQuota(0.5).period_us, 100000);
  EXPECT_EQ(CpusToQuota(2).quota_us, 200000);
  EXPECT_EQ(CpusToQuota(0.001).quota_us, 1000) << "the kernel's minimum";
}

TEST(CgroupFilesTest, MemorySwapDefaultsToTwiceMemory) {
  CgroupResources r;
  EXPECT_FALSE(EffectiveMemorySwap(r));
  r.memory_bytes = 64 << 20;
  EXPECT_EQ(EffectiveMemorySwap(r), 128 << 20);
  r.memory_swap_bytes = 64 << 20;
  EXPECT_EQ(EffectiveMemorySwap(r), 64 << 20);
  r.memory_swap_bytes = -1;
  EXPECT_EQ(EffectiveMemorySwap(r), -1);
}

TEST(CgroupFilesTest, ValidationRejectsContradictions) {
  CgroupResources r;
  EXPECT_TRUE(ValidateCgroupResources(r));
  r.memory_swap_bytes = 100 << 20;
  EXPECT_FALSE(ValidateCgroupResources(r)) << "swap without memory";
  r.memory_bytes = 200 << 20;
  auto status = ValidateCgroupResources(r);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(status.error().message().find("--memory-swap"), std::string::npos);
  r.memory_swap_bytes = 300 << 20;
  EXPECT_TRUE(ValidateCgroupResources(r));

  CgroupResources tiny;
  tiny.memory_bytes = 1024;
  EXPECT_FALSE(ValidateCgroupResources(tiny));
  CgroupResources cpus;
  cpus.cpus = -1;
  EXPECT_FALSE(ValidateCgroupResources(cpus));
  CgroupResources shares;
  shares.cpu_shares = 1;
  EXPECT_FALSE(ValidateCgroupResources(shares));
  CgroupResources cpuset;
  cpuset.cpuset_cpus = "0;rm -rf";
  EXPECT_FALSE(ValidateCgroupResources(cpuset));
}

TEST(CgroupFilesTest, ControllersForNamesEachLimitsControllerAndFlag) {
  EXPECT_TRUE(ControllersFor({}).empty());
  CgroupResources r;
  r.memory_bytes = 64 << 20;
  r.memory_swap_bytes = -1;  // rides on memory: no entry of its own
  r.cpus = 0.5;
  r.cpu_shares = 512;
  r.cpuset_cpus = "0";
  r.pids_limit = 10;
  r.all_devices = true;  // not a limit with a controller to check
  std::vector<std::pair<std::string, std::string>> got;
  for (const LimitController& need : ControllersFor(r))
    got.emplace_back(need.controller, need.flag);
  EXPECT_EQ(got, (std::vector<std::pair<std::string, std::string>>{{"memory", "--memory"},
                                                                   {"cpu", "--cpus"},
                                                                   {"cpu", "--cpu-shares"},
                                                                   {"cpuset", "--cpuset-cpus"},
                                                                   {"pids", "--pids-limit"}}));
}

// Both managers refuse a limit whose controller they lack before they make
// anything, naming the flag: v1 with only a memory hierarchy (the v2 manager
// is tested the same way in cgroup_v2_test.cc).
TEST(CgroupFilesTest, V1RefusesALimitWhoseHierarchyIsNotMounted) {
  Result<TempDir> tmp = TempDir::Create("cgroup-v1-missing-");
  ASSERT_TRUE(tmp);
  CgroupLayout layout;
  layout.version = CgroupVersion::kV1;
  layout.v1_mounts = {{"memory", tmp->path() / "memory"}};
  Result<std::unique_ptr<CgroupManager>> manager = NewCgroupManager("c1", layout);
  ASSERT_TRUE(manager);
  CgroupResources r;
  r.cpuset_cpus = "0";
  Status status = (*manager)->Create(r);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(status.error().message(),
            "--cpuset-cpus: the cgroup v1 cpuset controller is not mounted");
  EXPECT_FALSE(std::filesystem::exists(tmp->path() / "memory")) << "made something";
}

TEST(CgroupFilesTest, FindsKeyedValues) {
  constexpr std::string_view kEvents = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n";
  EXPECT_EQ(FindKeyedValue(kEvents, "oom_kill"), 2);
  EXPECT_EQ(FindKeyedValue(kEvents, "oom"), 3);
  EXPECT_EQ(FindKeyedValue(kEvents, "max"), 12);
  EXPECT_FALSE(FindKeyedValue(kEvents, "oom_group_kill"));
  EXPECT_EQ(FindKeyedValue("oom_kill_disable 0\nunder_oom 0\noom_kill 1", "oom_kill"), 1);
}

TEST(CgroupFilesTest, V1CgroupPathOfMatchesWholeControllerNames) {
  constexpr std::string_view kCgroup =
      "12:pids:/system.slice/a.service\n"
      "4:cpu,cpuacct:/user.slice\n"
      "3:cpuset:/\n"
      "1:name=systemd:/init.scope\n"
      "0::/unified\n";
  EXPECT_EQ(V1CgroupPathOf(kCgroup, {"pids"}), "system.slice/a.service");
  EXPECT_EQ(V1CgroupPathOf(kCgroup, {"cpuacct"}), "user.slice");
  EXPECT_EQ(V1CgroupPathOf(kCgroup, {"cpu", "cpuacct"}), "user.slice");
  EXPECT_EQ(V1CgroupPathOf(kCgroup, {"cpuset"}), "");
  EXPECT_FALSE(V1CgroupPathOf(kCgroup, {"cp"})) << "a prefix of a name is no match";
  EXPECT_FALSE(V1CgroupPathOf(kCgroup, {"memory"}));
  EXPECT_FALSE(V1CgroupPathOf("garbage\n", {"pids"}));
}

}  // namespace
}  // namespace imgtool::runner
