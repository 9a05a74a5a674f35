// Cgroup claims and the cleanup at container start, against a fake v1
// cgroupfs tree (empty cgroup dirs: no processes to kill, rmdir works).
#include <gtest/gtest.h>

#include <filesystem>
#include <optional>

#include "common/temp_dir.h"
#include "runner/cgroup_manager.h"
#include "tests/support/test_util.h"

namespace imgtool::runner {
namespace {

namespace fs = std::filesystem;

class CgroupClaimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("cgroup-claim-test-");
    ASSERT_TRUE(dir);
    tmp_.emplace(std::move(*dir));
    claims_ = tmp_->path() / "claims";
    for (const char* controller : {"memory", "pids"}) {
      layout_.v1_mounts[controller] = tmp_->path() / controller;
    }
    layout_.version = CgroupVersion::kV1;
  }

  // The cgroup dirs a container would have in every hierarchy.
  void MakeCgroup(const std::string& id) {
    for (const auto& [controller, mount] : layout_.v1_mounts) {
      fs::create_directories(mount / layout_.parent / id);
    }
  }
  bool CgroupExists(const std::string& id) {
    return fs::exists(layout_.v1_mounts["memory"] / layout_.parent / id) ||
           fs::exists(layout_.v1_mounts["pids"] / layout_.parent / id);
  }

  std::optional<TempDir> tmp_;
  fs::path claims_;
  CgroupLayout layout_;
};

TEST_F(CgroupClaimTest, HeldClaimKeepsItsCgroup) {
  auto claim = CgroupClaim::Acquire(claims_, "live");
  ASSERT_TRUE(claim) << claim.error().ToString();
  MakeCgroup("live");
  auto removed = CleanupUnclaimedCgroups(layout_, claims_);
  ASSERT_TRUE(removed) << removed.error().ToString();
  EXPECT_TRUE(removed->empty());
  EXPECT_TRUE(CgroupExists("live"));
  EXPECT_TRUE(fs::exists(claims_ / "live"));
  claim->Release();
  EXPECT_FALSE(fs::exists(claims_ / "live"));
  EXPECT_FALSE(claim->held());
}

TEST_F(CgroupClaimTest, ClaimOfADeadCreatorIsCleanedWithItsCgroup) {
  {
    // Dropped without Release, as when imgtool is killed: the file stays,
    // unlocked.
    auto claim = CgroupClaim::Acquire(claims_, "dead");
    ASSERT_TRUE(claim) << claim.error().ToString();
    MakeCgroup("dead");
  }
  auto live = CgroupClaim::Acquire(claims_, "live");
  ASSERT_TRUE(live);
  MakeCgroup("live");
  ASSERT_TRUE(fs::exists(claims_ / "dead"));

  auto removed = CleanupUnclaimedCgroups(layout_, claims_);
  ASSERT_TRUE(removed) << removed.error().ToString();
  EXPECT_EQ(*removed, std::vector<std::string>{"dead"});
  EXPECT_FALSE(CgroupExists("dead"));
  EXPECT_FALSE(fs::exists(claims_ / "dead"));
  EXPECT_TRUE(CgroupExists("live"));
  EXPECT_TRUE(fs::exists(claims_ / "live"));
}

TEST_F(CgroupClaimTest, ClaimWithoutCgroupAndHalfMadeClaimGo) {
  { ASSERT_TRUE(CgroupClaim::Acquire(claims_, "never-made")); }
  ::imgtool::testing::WriteTestFile(claims_ / ".half.tmp", "");
  MakeCgroup("half");  // not the temp claim's to remove: its creator never renamed it
  auto removed = CleanupUnclaimedCgroups(layout_, claims_);
  ASSERT_TRUE(removed) << removed.error().ToString();
  EXPECT_EQ(*removed, std::vector<std::string>{"never-made"});
  EXPECT_TRUE(fs::is_empty(claims_));
  EXPECT_TRUE(CgroupExists("half"));
}

TEST_F(CgroupClaimTest, NoClaimDirIsNothingToDo) {
  auto removed = CleanupUnclaimedCgroups(layout_, tmp_->path() / "missing");
  ASSERT_TRUE(removed) << removed.error().ToString();
  EXPECT_TRUE(removed->empty());
}

TEST_F(CgroupClaimTest, RejectsIdsThatAreNoCgroupNames) {
  EXPECT_FALSE(CgroupClaim::Acquire(claims_, "a/b"));
  EXPECT_FALSE(CgroupClaim::Acquire(claims_, ".."));
}

}  // namespace
}  // namespace imgtool::runner
