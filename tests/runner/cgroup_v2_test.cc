// The v2 manager against a fake cgroupfs tree: the test creates the interface
// files, the manager writes them, the test reads back what was written.
#include "runner/cgroup_v2.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <csignal>

#include "common/temp_dir.h"
#include "runner/cgroup_manager.h"
#include "tests/support/test_util.h"

namespace imgtool::runner {
namespace {

using ::imgtool::testing::ReadTestFile;
using ::imgtool::testing::WriteTestFile;

class CgroupV2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("cgroup-v2-test-");
    ASSERT_TRUE(dir);
    tmp_ = std::make_unique<TempDir>(std::move(*dir));
    root_ = tmp_->path();
    WriteTestFile(root_ / "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma\n");
    WriteTestFile(root_ / "cgroup.subtree_control", "cpu\n");
    std::filesystem::create_directories(root_ / "imgtool" / "c1");
    WriteTestFile(root_ / "imgtool" / "cgroup.subtree_control", "");
    for (const char* file : {"memory.max", "memory.swap.max", "cpu.max", "cpu.weight",
                             "cpuset.cpus", "pids.max", "cgroup.procs", "cgroup.kill"}) {
      WriteTestFile(root_ / "imgtool" / "c1" / file, "");
    }
    WriteTestFile(root_ / "imgtool" / "c1" / "memory.events",
                  "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n");
    layout_.version = CgroupVersion::kV2;
    layout_.unified_root = root_;
    layout_.unified_controllers = {"cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma"};
    // No BPF program attaches to a fake tree: the attachments are recorded
    // (the real one is tested in cgroup_devices_privileged_test.cc).
    layout_.attach_device_filter = [this](int dir_fd) -> Status {
      struct stat st;
      if (fstat(dir_fd, &st) != 0) return ErrnoError("fstat");
      filtered_inodes_.push_back(st.st_ino);
      return filter_result_;
    };
  }

  ino_t InodeOf(const std::string& relative) {
    struct stat st{};
    EXPECT_EQ(stat((root_ / relative).c_str(), &st), 0);
    return st.st_ino;
  }

  std::string Read(const std::string& relative) {
    std::string text = ReadTestFile(root_ / relative);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return text;
  }

  std::unique_ptr<TempDir> tmp_;
  std::filesystem::path root_;
  CgroupLayout layout_;
  std::vector<ino_t> filtered_inodes_;
  Status filter_result_;
};

TEST_F(CgroupV2Test, CreateAttachesTheDeviceFilterToTheNewCgroup) {
  auto manager = NewCgroupManager("c1", layout_);
  ASSERT_TRUE(manager);
  ASSERT_TRUE((*manager)->Create({}));
  EXPECT_EQ(filtered_inodes_, std::vector<ino_t>{InodeOf("imgtool/c1")});
}

TEST_F(CgroupV2Test, AllDevicesAttachesNoFilter) {
  auto manager = NewCgroupManager("c1", layout_);
  ASSERT_TRUE(manager);
  CgroupResources r;
  r.all_devices = true;  // --privileged
  ASSERT_TRUE((*manager)->Create(r));
  EXPECT_TRUE(filtered_inodes_.empty());
}

TEST_F(CgroupV2Test, AFilterThatFailsToAttachFailsCreate) {
  filter_result_ = PermissionDeniedError("no BPF here");
  auto manager = NewCgroupManager("c1", layout_);
  ASSERT_TRUE(manager);
  auto status = (*manager)->Create({});
  ASSERT_FALSE(status) << "a container must not run with every device open";
  EXPECT_NE(status.error().ToString().find("no BPF here"), std::string::npos)
      << status.error().ToString();
}

TEST_F(CgroupV2Test, CreateWritesEveryLimit) {
  auto manager = NewCgroupManager("c1", layout_);
  ASSERT_TRUE(manager);
  CgroupResources r;
  r.memory_bytes = 64 << 20;
  r.memory_swap_bytes = 96 << 20;
  r.cpus = 1.5;
  r.cpu_shares = 1024;
  r.cpuset_cpus = "0-1";
  r.pids_limit = 100;
  auto status = (*manager)->Create(r);
  ASSERT_TRUE(status) << status.error().ToString();
  EXPECT_EQ(Read("imgtool/c1/memory.max"), std::to_string(64 << 20));
  EXPECT_EQ(Read("imgtool/c1/memory.swap.max"), std::to_string(32 << 20))
      << "v2 limits swap alone: total minus memory";
  EXPECT_EQ(Read("imgtool/c1/cpu.max"), "150000 100000");
  EXPECT_EQ(Read("imgtool/c1/cpu.weight"), "100");
  EXPECT_EQ(Read("imgtool/c1/cpuset.cpus"), "0-1");
  EXPECT_EQ(Read("imgtool/c1/pids.max"), "100");
  // Controllers enabled along the path, only those missing, in one write each.
  EXPECT_EQ(Read("cgroup.subtree_control"), "+cpuset +memory +pids");
  EXPECT_EQ(Read("imgtool/cgroup.subtree_control"), "+cpu +cpuset +memory +pids");
  EXPECT_EQ((*manager)->Path(), (root_ / "imgtool" / "c1").string());
}

TEST_F(CgroupV2Test, UnsetLimitsAreNotWritten) {
  auto manager = NewCgroupManager("c1", layout_);
  ASSERT_TRUE(manager);
  CgroupResources r;
  r.pids_limit = 0;
  ASSERT_TRUE((*manager)->Create(r));
  EXPECT_EQ(Read("imgtool/c1/pids.max"), "max");
  EXPECT_EQ(Read("imgtool/c1/memory.max"), "");
  EXPECT_EQ(Read("imgtool/c1/cpu.max"), "");
}

TEST_F(CgroupV2Test, MemoryAloneGetsDockerDefaultSwap) {
  auto manager = NewCgroupManager("c1", layout_);
  ASSERT_TRUE(manager);
  CgroupResources r;
  r.memory_bytes = 32 << 20;
  ASSERT_TRUE((*manager)->Create(r));
  EXPECT_EQ(Read("imgtool/c1/memory.swap.max"), std::to_string(32 << 20));
  CgroupResources unlimited;
  unlimited.memory_bytes = 32 << 20;
  unlimited.memory_swap_bytes = -1;
  ASSERT_TRUE((*manager)->Create(unlimited));
  EXPECT_EQ(Read("imgtool/c1/memory.swap.max"), "max");
}

TEST_F(CgroupV2Test, MissingControllerIsClearError) {
  layout_.unified_controllers = {"memory"};
  auto manager = NewCgroupManager("c1", layout_);
  ASSERT_TRUE(manager);
  CgroupResources r;
  r.pids_limit = 10;
  auto status = (*manager)->Create(r);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(status.error().message().find("--pids-limit: the pids controller"), std::string::npos)
      << status.error().ToString();
}

TEST_F(CgroupV2Test, CloneIntoCgroupFdAndAddProcess) {
  auto manager = NewCgroupManager("c1", layout_);
  ASSERT_TRUE(manager);
  ASSERT_TRUE((*manager)->Create({}));
  auto fd = (*manager)->DirFdForCloneIntoCgroup();
  ASSERT_TRUE(fd) << fd.error().ToString();
  struct stat st;
  ASSERT_EQ(fstat(fd->get(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  ASSERT_TRUE((*manager)->AddProcess(4242));
  EXPECT_EQ(Read("imgtool/c1/cgroup.procs"), "4242");
}

TEST_F(CgroupV2Test, OomKilledReadsMemoryEvents) {
  auto manager = NewCgroupManager("c1", layout_);
  ASSERT_TRUE(manager);
  auto oom = (*manager)->OomKilled();
  ASSERT_TRUE(oom);
  EXPECT_FALSE(*oom);
  WriteTestFile(root_ / "imgtool/c1/memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n");
  oom = (*manager)->OomKilled();
  ASSERT_TRUE(oom);
  EXPECT_TRUE(*oom);
}

TEST_F(CgroupV2Test, KillUsesCgroupKill) {
  auto manager = NewCgroupManager("c1", layout_);
  ASSERT_TRUE(manager);
  ASSERT_TRUE((*manager)->Kill(SIGKILL));
  EXPECT_EQ(Read("imgtool/c1/cgroup.kill"), "1");
}

TEST_F(CgroupV2Test, PidsAndDestroy) {
  std::filesystem::create_directories(root_ / "imgtool" / "c2");
  WriteTestFile(root_ / "imgtool/c2/cgroup.procs", "12\n34\n");
  auto manager = NewCgroupManager("c2", layout_);
  ASSERT_TRUE(manager);
  auto pids = (*manager)->Pids();
  ASSERT_TRUE(pids);
  EXPECT_EQ(*pids, (std::vector<pid_t>{12, 34}));
  std::filesystem::remove(root_ / "imgtool/c2/cgroup.procs");
  ASSERT_TRUE((*manager)->Destroy());
  EXPECT_FALSE(std::filesystem::exists(root_ / "imgtool" / "c2"));
  EXPECT_TRUE((*manager)->Destroy()) << "idempotent";
}

TEST_F(CgroupV2Test, CleanupRemovesOnlyDeadContainers) {
  std::filesystem::create_directories(root_ / "imgtool" / "dead");
  std::filesystem::create_directories(root_ / "imgtool" / "alive");
  auto removed =
      CleanupStaleCgroups(layout_, [](std::string_view id) { return id == "alive" || id == "c1"; });
  ASSERT_TRUE(removed) << removed.error().ToString();
  EXPECT_EQ(*removed, std::vector<std::string>{"dead"});
  EXPECT_FALSE(std::filesystem::exists(root_ / "imgtool" / "dead"));
  EXPECT_TRUE(std::filesystem::exists(root_ / "imgtool" / "alive"));
}

TEST_F(CgroupV2Test, RejectsBadIds) {
  EXPECT_FALSE(NewCgroupManager("../escape", layout_));
  EXPECT_FALSE(NewCgroupManager("", layout_));
}

}  // namespace
}  // namespace imgtool::runner
