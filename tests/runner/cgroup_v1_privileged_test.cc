// The v1 manager on this machine's real hierarchies (root only). Each test uses
// its own parent dir, so nothing touches imgtool's real cgroups.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <functional>
#include <future>
#include <set>
#include <thread>
#include <vector>

#include "common/file_util.h"
#include "runner/cgroup_files.h"
#include "runner/cgroup_manager.h"
#include "tests/support/test_util.h"

namespace imgtool::runner {
namespace {

// A forked child that waits for Release() before it runs `body`, so that the
// parent can put it into a cgroup first.
class GatedChild {
 public:
  explicit GatedChild(const std::function<int()>& body) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(fds[1]);
      char c;
      if (read(fds[0], &c, 1) != 1) _exit(90);
      _exit(body());
    }
    close(fds[0]);
    gate_ = fds[1];
  }
  ~GatedChild() {
    if (gate_ >= 0) close(gate_);
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  void Release() {
    (void)!write(gate_, "x", 1);
    close(gate_);
    gate_ = -1;
  }
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int gate_ = -1;
  bool reaped_ = false;
};

// True when `pid` is gone or a zombie within a second.
bool IsDeadSoon(pid_t pid) {
  for (int i = 0; i < 100; ++i) {
    std::string stat;
    FILE* f = fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "re");
    if (f == nullptr) return true;
    char buf[512] = {};
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    stat.assign(buf, n);
    size_t paren = stat.rfind(')');
    if (paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z') {
      return true;
    }
    usleep(10000);
  }
  return false;
}

class CgroupV1Test : public ::testing::Test {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    auto layout = DetectCgroupLayout();
    ASSERT_TRUE(layout) << layout.error().ToString();
    if (layout->version != CgroupVersion::kV1) GTEST_SKIP() << "this machine has no cgroup v1";
    layout_ = *layout;
    layout_.parent = "imgtool-test-" + std::to_string(getpid());
  }
  void TearDown() override {
    for (const auto& [controller, mount] : layout_.v1_mounts) {
      rmdir((mount / layout_.parent).c_str());
    }
  }

  // No dir named `id` is left in any hierarchy.
  void ExpectGone(const std::string& id) {
    for (const auto& [controller, mount] : layout_.v1_mounts) {
      EXPECT_FALSE(std::filesystem::exists(mount / layout_.parent / id)) << controller;
    }
  }

  CgroupLayout layout_;
};

TEST_F(CgroupV1Test, MemoryLimitOomKills) {
  auto manager = NewCgroupManager("oom", layout_);
  ASSERT_TRUE(manager);
  CgroupResources r;
  r.memory_bytes = 32 << 20;
  auto created = (*manager)->Create(r);
  ASSERT_TRUE(created) << created.error().ToString();
  EXPECT_EQ(ReadCgroupFile(layout_.v1_mounts.at("memory") / layout_.parent / "oom",
                           "memory.limit_in_bytes")
                .value(),
            std::to_string(32 << 20) + "\n");

  GatedChild child([] {
    for (int i = 0; i < 512; ++i) {
      char* block = static_cast<char*>(malloc(1 << 20));
      if (block == nullptr) return 3;
      memset(block, i, 1 << 20);
    }
    return 0;
  });
  ASSERT_GT(child.pid(), 0);
  ASSERT_TRUE((*manager)->AddProcess(child.pid()));
  auto oom = (*manager)->OomKilled();
  ASSERT_TRUE(oom);
  EXPECT_FALSE(*oom);
  child.Release();
  int status = child.Wait();
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  oom = (*manager)->OomKilled();
  ASSERT_TRUE(oom) << oom.error().ToString();
  EXPECT_TRUE(*oom);
  auto destroyed = (*manager)->Destroy();
  ASSERT_TRUE(destroyed) << destroyed.error().ToString();
  ExpectGone("oom");
}

TEST_F(CgroupV1Test, PidsLimitStopsForkLoop) {
  auto manager = NewCgroupManager("pids", layout_);
  ASSERT_TRUE(manager);
  CgroupResources r;
  r.pids_limit = 16;
  ASSERT_TRUE((*manager)->Create(r));
  GatedChild child([] {
    int forked = 0;
    for (int i = 0; i < 100; ++i) {
      pid_t pid = fork();
      if (pid == 0) {
        pause();
        _exit(0);
      }
      if (pid < 0) break;
      ++forked;
    }
    return forked;
  });
  ASSERT_TRUE((*manager)->AddProcess(child.pid()));
  child.Release();
  int status = child.Wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 15) << "16 tasks: the child and 15 of its forks";

  // The host is fine: this process still forks.
  pid_t pid = fork();
  if (pid == 0) _exit(7);
  ASSERT_GT(pid, 0);
  int host_status = 0;
  waitpid(pid, &host_status, 0);
  EXPECT_EQ(WEXITSTATUS(host_status), 7);

  auto pids = (*manager)->Pids();
  ASSERT_TRUE(pids);
  EXPECT_EQ(pids->size(), 15u) << "the orphaned forks";
  auto still_busy = (*manager)->Destroy();
  ASSERT_FALSE(still_busy);
  EXPECT_EQ(still_busy.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(still_busy.error().message().find("still has 15 process(es)"), std::string::npos)
      << still_busy.error().ToString();
  ASSERT_TRUE((*manager)->Kill(SIGKILL));
  auto destroyed = (*manager)->Destroy();
  ASSERT_TRUE(destroyed) << destroyed.error().ToString();
  ExpectGone("pids");
}

// /proc/<pid>/task/<tid>/cgroup's path in the hierarchy of `controller`.
std::string CgroupOf(const std::string& task_dir, const std::string& controller) {
  auto text = ReadFileToString(task_dir + "/cgroup", 1 << 16);
  if (!text) return "unreadable";
  return V1CgroupPathOf(*text, {controller}).value_or("none");
}

TEST_F(CgroupV1Test, ThreadEntersForTheCloneAndLeaves) {
  auto manager = NewCgroupManager("enter", layout_);
  ASSERT_TRUE(manager);
  CgroupResources r;
  r.pids_limit = 1;  // the child alone: the thread inside must not count
  ASSERT_TRUE((*manager)->Create(r));
  const std::filesystem::path pids_dir = layout_.v1_mounts.at("pids") / layout_.parent / "enter";
  const std::string self = "/proc/self/task/" + std::to_string(gettid());
  const std::string before = CgroupOf(self, "pids");
  const std::string inside = layout_.parent + "/enter";

  // A thread that existed before stays where it is.
  std::promise<void> go;
  std::string other_thread;
  std::thread other([&, started = go.get_future()]() mutable {
    started.wait();
    other_thread = CgroupOf("/proc/self/task/" + std::to_string(gettid()), "pids");
  });
  auto entered = (*manager)->EnterWithThisThread();
  go.set_value();
  other.join();
  ASSERT_TRUE(entered) << entered.error().ToString();
  for (const auto& [controller, mount] : layout_.v1_mounts) {
    if (controller == "pids" || controller == "memory" || controller == "cpu" ||
        controller == "cpuset") {
      EXPECT_EQ(CgroupOf(self, controller), inside) << controller;
    }
  }
  EXPECT_EQ(ReadCgroupFile(pids_dir, "pids.max").value(), "2\n") << "one more for the thread";
  EXPECT_FALSE((*manager)->EnterWithThisThread()) << "entered twice";
  pid_t pid = fork();
  if (pid == 0) {
    pause();
    _exit(0);
  }
  ASSERT_GT(pid, 0);
  auto left = (*manager)->LeaveWithThisThread();
  ASSERT_TRUE(left) << left.error().ToString();

  EXPECT_EQ(CgroupOf(self, "pids"), before);
  EXPECT_EQ(other_thread, before);
  EXPECT_EQ(CgroupOf("/proc/" + std::to_string(pid), "pids"), inside);
  EXPECT_EQ(CgroupOf("/proc/" + std::to_string(pid), "memory"), inside);
  EXPECT_EQ(ReadCgroupFile(pids_dir, "pids.max").value(), "1\n");
  auto pids = (*manager)->Pids();
  ASSERT_TRUE(pids);
  EXPECT_EQ(*pids, std::vector<pid_t>{pid});
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  auto destroyed = (*manager)->Destroy();
  ASSERT_TRUE(destroyed) << destroyed.error().ToString();
  ExpectGone("enter");
}

// exec joins a container's cgroup with a manager that did not create it:
// the limit the creator wrote is read, raised by one while the thread is in,
// and put back.
TEST_F(CgroupV1Test, ThreadEntersACgroupItJoinsWithItsPidsLimit) {
  auto creator = NewCgroupManager("joined", layout_);
  ASSERT_TRUE(creator);
  CgroupResources r;
  r.pids_limit = 3;
  ASSERT_TRUE((*creator)->Create(r));
  const std::filesystem::path pids_dir =
      layout_.v1_mounts.at("pids") / layout_.parent / "joined";
  auto joiner = NewCgroupManager("joined", layout_);
  ASSERT_TRUE(joiner);
  auto entered = (*joiner)->EnterWithThisThread();
  ASSERT_TRUE(entered) << entered.error().ToString();
  EXPECT_EQ(CgroupOf("/proc/self/task/" + std::to_string(gettid()), "pids"),
            layout_.parent + "/joined");
  EXPECT_EQ(ReadCgroupFile(pids_dir, "pids.max").value(), "4\n");
  ASSERT_TRUE((*joiner)->LeaveWithThisThread());
  EXPECT_EQ(ReadCgroupFile(pids_dir, "pids.max").value(), "3\n");
  ASSERT_TRUE((*creator)->Destroy());
  ExpectGone("joined");
}

// PrepareSelfEntry, run on another thread (the early start's), opens the
// cgroup's tasks files; a forked child moves itself in with one write to
// each, and the thread that forked it never moves. The dirs are renamed
// after the files were opened, so a move by path would fail. The files are
// handed over once.
TEST_F(CgroupV1Test, ChildMovesItselfInThroughFilesOpenedAhead) {
  auto manager = NewCgroupManager("prepared", layout_);
  ASSERT_TRUE(manager);
  CgroupResources resources;
  resources.pids_limit = 1;
  ASSERT_TRUE((*manager)->Create(resources));
  const std::string self = "/proc/self/task/" + std::to_string(gettid());
  const std::string before = CgroupOf(self, "pids");
  Status prepared = OkStatus();
  std::thread([&] { prepared = (*manager)->PrepareSelfEntry(); }).join();
  ASSERT_TRUE(prepared) << prepared.error().ToString();

  // The hierarchies the manager made a dir in.
  std::set<std::filesystem::path> mounts;
  for (const auto& [controller, mount] : layout_.v1_mounts) {
    if (std::filesystem::exists(mount / layout_.parent / "prepared")) mounts.insert(mount);
  }
  auto rename_all = [&](const char* from, const char* to) {
    for (const std::filesystem::path& mount : mounts) {
      std::filesystem::path parent = mount / layout_.parent;
      ASSERT_EQ(rename((parent / from).c_str(), (parent / to).c_str()), 0)
          << parent << ": " << strerror(errno);
    }
  };
  rename_all("prepared", "renamed");
  std::vector<UniqueFd> files = (*manager)->TakeSelfEntryFiles();
  EXPECT_EQ(files.size(), mounts.size());
  EXPECT_TRUE((*manager)->TakeSelfEntryFiles().empty());

  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Moves itself in, although pids.max (1) is reached once it is in.
    for (const UniqueFd& file : files) {
      if (write(file.get(), "0", 1) != 1) _exit(1);
    }
    Result<std::string> own = ReadFileToString("/proc/self/cgroup");
    if (!own) _exit(2);
    (void)!write(pipe_fds[1], own->data(), own->size());
    _exit(0);
  }
  close(pipe_fds[1]);
  std::string child_cgroups;
  char buf[4096];
  for (ssize_t n; (n = read(pipe_fds[0], buf, sizeof buf)) > 0;) child_cgroups.append(buf, n);
  close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  for (const std::filesystem::path& mount : mounts) {
    const std::string controller = mount.filename().string();
    EXPECT_NE(child_cgroups.find(":" + controller + ":/" + layout_.parent + "/renamed\n"),
              std::string::npos)
        << controller << " in:\n" << child_cgroups;
  }
  EXPECT_EQ(CgroupOf(self, "pids"), before);
  files.clear();
  rename_all("renamed", "prepared");
  ASSERT_TRUE((*manager)->Destroy());
  ExpectGone("prepared");
  ExpectGone("renamed");
}

TEST_F(CgroupV1Test, EnteringAMissingCgroupLeavesTheThreadWhereItWas) {
  auto manager = NewCgroupManager("never-made", layout_);
  ASSERT_TRUE(manager);
  const std::string self = "/proc/self/task/" + std::to_string(gettid());
  const std::string before = CgroupOf(self, "pids");
  auto entered = (*manager)->EnterWithThisThread();
  ASSERT_FALSE(entered);
  EXPECT_NE(entered.error().message().find("tasks"), std::string::npos)
      << entered.error().ToString();
  EXPECT_EQ(CgroupOf(self, "pids"), before);
  EXPECT_EQ(CgroupOf(self, "memory"), CgroupOf("/proc/self", "memory"));
}

TEST_F(CgroupV1Test, CpuLimitsAreWritten) {
  auto manager = NewCgroupManager("cpu", layout_);
  ASSERT_TRUE(manager);
  CgroupResources r;
  r.cpus = 0.5;
  r.cpu_shares = 512;
  r.cpuset_cpus = "0";
  r.memory_bytes = 64 << 20;
  r.memory_swap_bytes = 128 << 20;
  auto created = (*manager)->Create(r);
  ASSERT_TRUE(created) << created.error().ToString();
  auto dir = [&](const char* controller) {
    return layout_.v1_mounts.at(controller) / layout_.parent / "cpu";
  };
  EXPECT_EQ(ReadCgroupFile(dir("cpu"), "cpu.cfs_quota_us").value(), "50000\n");
  EXPECT_EQ(ReadCgroupFile(dir("cpu"), "cpu.cfs_period_us").value(), "100000\n");
  EXPECT_EQ(ReadCgroupFile(dir("cpu"), "cpu.shares").value(), "512\n");
  EXPECT_EQ(ReadCgroupFile(dir("cpuset"), "cpuset.cpus").value(), "0\n");
  EXPECT_NE(ReadCgroupFile(dir("cpuset"), "cpuset.mems").value(), "\n")
      << "mems inherited, or no task could join";
  if (CgroupFileExists(dir("memory"), "memory.memsw.limit_in_bytes")) {
    EXPECT_EQ(ReadCgroupFile(dir("memory"), "memory.memsw.limit_in_bytes").value(),
              std::to_string(128 << 20) + "\n");
  }
  EXPECT_TRUE(std::filesystem::exists(dir("cpuacct")));
  EXPECT_EQ((*manager)->Path(), dir("memory").string());
  EXPECT_FALSE((*manager)->DirFdForCloneIntoCgroup());

  // A process joins every hierarchy.
  GatedChild child([] { return 0; });
  ASSERT_TRUE((*manager)->AddProcess(child.pid()));
  for (const char* controller : {"cpu", "cpuacct", "cpuset", "memory", "pids"}) {
    EXPECT_EQ(ReadCgroupFile(dir(controller), "cgroup.procs").value(),
              std::to_string(child.pid()) + "\n")
        << controller;
  }
  child.Release();
  child.Wait();
  auto destroyed = (*manager)->Destroy();
  ASSERT_TRUE(destroyed) << destroyed.error().ToString();
  ExpectGone("cpu");
}

TEST_F(CgroupV1Test, CpusetIsInheritedWhetherOrNotTheParentClonesChildren) {
  if (!layout_.v1_mounts.contains("cpuset")) GTEST_SKIP() << "no cpuset hierarchy";
  const std::filesystem::path parent = layout_.v1_mounts.at("cpuset") / layout_.parent;
  auto tasks_may_join = [&](const std::string& id) {
    auto manager = NewCgroupManager(id, layout_);
    ASSERT_TRUE(manager);
    auto created = (*manager)->Create({});
    ASSERT_TRUE(created) << created.error().ToString();
    EXPECT_NE(ReadCgroupFile(parent / id, "cpuset.cpus").value(), "\n") << id;
    EXPECT_NE(ReadCgroupFile(parent / id, "cpuset.mems").value(), "\n") << id;
    GatedChild child([] { return 0; });
    EXPECT_TRUE((*manager)->AddProcess(child.pid())) << id;
    child.Release();
    child.Wait();
    ASSERT_TRUE((*manager)->Destroy());
  };
  // The first container makes the parent, which then clones children.
  tasks_may_join("first");
  EXPECT_EQ(ReadCgroupFile(parent, "cgroup.clone_children").value(), "1\n");
  tasks_may_join("second");
  // A parent made without it (an older imgtool, another tool): still filled
  // in, and clone_children set for the next one.
  ASSERT_TRUE(WriteCgroupFile(parent, "cgroup.clone_children", "0"));
  tasks_may_join("third");
  EXPECT_EQ(ReadCgroupFile(parent, "cgroup.clone_children").value(), "1\n");
}

TEST_F(CgroupV1Test, CleanupKillsAndRemovesStaleCgroups) {
  auto stale = NewCgroupManager("stale", layout_);
  auto live = NewCgroupManager("live", layout_);
  ASSERT_TRUE(stale && live);
  ASSERT_TRUE((*stale)->Create({}));
  ASSERT_TRUE((*live)->Create({}));
  // A leftover process whose imgtool died: not our child any more.
  GatedChild middle([&] {
    pid_t orphan = fork();
    if (orphan == 0) {
      setsid();
      pause();
      _exit(0);
    }
    return 0;
  });
  ASSERT_TRUE((*stale)->AddProcess(middle.pid()));
  middle.Release();
  middle.Wait();
  auto pids = (*stale)->Pids();
  ASSERT_TRUE(pids);
  ASSERT_EQ(pids->size(), 1u);
  pid_t orphan = (*pids)[0];

  auto removed = CleanupStaleCgroups(layout_, [](std::string_view id) { return id == "live"; });
  ASSERT_TRUE(removed) << removed.error().ToString();
  EXPECT_EQ(*removed, std::vector<std::string>{"stale"});
  ExpectGone("stale");
  EXPECT_TRUE(std::filesystem::exists(layout_.v1_mounts.at("memory") / layout_.parent / "live"));
  EXPECT_TRUE(IsDeadSoon(orphan)) << "the leftover process was killed";
  ASSERT_TRUE((*live)->Destroy());
  ExpectGone("live");
}

}  // namespace
}  // namespace imgtool::runner
