#include "runner/sync_channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

namespace imgtool::runner {
namespace {

// Forks a child that runs `body` with the child end, then exits.
template <typename Body>
pid_t ForkWith(SyncChannelPair& pair, Body body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    pair.parent.Close();
    body(pair.child);
    ::_exit(0);
  }
  pair.child.Close();
  return pid;
}

void Reap(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
}

TEST(SyncChannelTest, ExecShowsUpAsEndOfFile) {
  Result<SyncChannelPair> pair = NewSyncChannel();
  ASSERT_TRUE(pair.has_value());
  pid_t pid = ForkWith(*pair, [](ChildChannel& child) {
    if (!child.WaitForParent()) ::_exit(3);
    char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
    ::execv(argv[0], argv);
    ::_exit(4);
  });
  ASSERT_TRUE(pair->parent.AllowChildToContinue().has_value());
  Result<ChildReport> report = pair->parent.ReceiveReport();
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->kind, ChildReportKind::kExecuted);
  Reap(pid);
}

TEST(SyncChannelTest, SetupFailureCarriesMessageAndErrno) {
  Result<SyncChannelPair> pair = NewSyncChannel();
  ASSERT_TRUE(pair.has_value());
  pid_t pid = ForkWith(*pair, [](ChildChannel& child) {
    child.ReportSetupFailure(ChildStatus::Failure(ENOENT, "mount proc at ", "/proc"));
  });
  Result<ChildReport> report = pair->parent.ReceiveReport();
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->kind, ChildReportKind::kSetupFailed);
  EXPECT_EQ(report->sys_errno, ENOENT);
  Error error = report->ToError();
  EXPECT_EQ(error.code(), ErrorCode::kNotFound);
  EXPECT_EQ(error.ToString(), "mount proc at /proc: No such file or directory");
  EXPECT_EQ(pair->parent.ReceiveReport()->kind, ChildReportKind::kExecuted);
  Reap(pid);
}

TEST(SyncChannelTest, PassesFileDescriptorsAndPids) {
  Result<SyncChannelPair> pair = NewSyncChannel();
  ASSERT_TRUE(pair.has_value());
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  pid_t pid = ForkWith(*pair, [&](ChildChannel& child) {
    child.SendPtyMaster(write_end.get());
    child.SendPid(4242, -1);
  });
  write_end.reset();
  Result<ChildReport> terminal = pair->parent.ReceiveReport();
  ASSERT_TRUE(terminal.has_value());
  ASSERT_EQ(terminal->kind, ChildReportKind::kPtyMaster);
  ASSERT_TRUE(terminal->fd.valid());
  EXPECT_TRUE(::fcntl(terminal->fd.get(), F_GETFD) & FD_CLOEXEC);
  ASSERT_EQ(::write(terminal->fd.get(), "x", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(read_end.get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
  Result<ChildReport> pid_report = pair->parent.ReceiveReport();
  ASSERT_TRUE(pid_report.has_value());
  EXPECT_EQ(pid_report->kind, ChildReportKind::kPid);
  EXPECT_EQ(pid_report->pid, 4242);
  Reap(pid);
}

TEST(SyncChannelTest, ChildStopsWhenTheParentGoesAway) {
  Result<SyncChannelPair> pair = NewSyncChannel();
  ASSERT_TRUE(pair.has_value());
  pid_t pid = ForkWith(*pair, [](ChildChannel& child) { ::_exit(child.WaitForParent() ? 1 : 9); });
  pair->parent.Close();
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_EQ(WEXITSTATUS(status), 9);
}

TEST(ChildStatusTest, FormatsWithoutAllocating) {
  ChildStatus ok;
  EXPECT_TRUE(ok.ok());
  ChildStatus failed = ChildStatus::Failure(EPERM, "a", "b", nullptr, "d");
  EXPECT_FALSE(failed.ok());
  EXPECT_STREQ(failed.message(), "abd");
  std::string long_text(1000, 'x');
  ChildStatus truncated = ChildStatus::Failure(0, long_text.c_str());
  EXPECT_EQ(std::string(truncated.message()).size(), ChildStatus::kMaxMessage - 1);
  char buffer[32];
  FixedString text(buffer, sizeof(buffer));
  text.Append("n=").AppendInt(-9223372036854775807LL - 1);
  EXPECT_STREQ(text.c_str(), "n=-9223372036854775808");
  EXPECT_STREQ(FdPath(17).c_str(), "/proc/self/fd/17");
}

}  // namespace
}  // namespace imgtool::runner
