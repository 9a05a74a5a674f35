#include "runner/namespaces.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/sched.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

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

// The child of VforkChild: writes "ran" to the pipe, then execs or exits.
struct VforkProbe {
  int pipe_write = -1;
  const char* exec = nullptr;  // nullptr: _exit(exit_code)
  int exit_code = 0;
};

int VforkProbeMain(void* arg) {
  const auto* probe = static_cast<const VforkProbe*>(arg);
  (void)!::write(probe->pipe_write, "ran", 3);
  if (probe->exec != nullptr) {
    char* const argv[] = {const_cast<char*>(probe->exec), nullptr};
    ::execv(probe->exec, argv);
  }
  ::_exit(probe->exit_code);
}

int ExitCodeOf(const ClonedChild& child) {
  siginfo_t info{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(child.pidfd.get()), &info,
               WEXITED) != 0) {
    return -1;
  }
  return info.si_code == CLD_EXITED ? info.si_status : -2;
}

TEST(VforkChildTest, TheCallerWaitsUntilTheChildExecsOrExits) {
  for (const char* exec : {"/bin/true", static_cast<const char*>(nullptr)}) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    VforkProbe probe{fds[1], exec, 3};
    Result<ClonedChild> child = VforkChild(0, VforkProbeMain, &probe);
    ASSERT_TRUE(child.has_value()) << child.error().ToString();
    EXPECT_GT(child->pid, 0);
    // Back here only once the child exec'd or exited: what it wrote before
    // is there already.
    char buffer[8] = {};
    EXPECT_EQ(::read(fds[0], buffer, sizeof(buffer)), 3) << (exec ? exec : "_exit");
    EXPECT_STREQ(buffer, "ran");
    EXPECT_EQ(ExitCodeOf(*child), exec ? 0 : 3);
    ::close(fds[0]);
    ::close(fds[1]);
  }
}

TEST(VforkChildTest, FlagsLegacyCloneCanNotCarryAreRefused) {
  VforkProbe probe;
  for (uint64_t flags : {uint64_t{CLONE_NEWTIME}, uint64_t{CLONE_INTO_CGROUP}, uint64_t{CLONE_VM},
                         uint64_t{SIGCHLD}}) {
    Result<ClonedChild> child = VforkChild(flags, VforkProbeMain, &probe);
    ASSERT_FALSE(child.has_value()) << flags;
    EXPECT_EQ(child.error().code(), ErrorCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace imgtool::runner
