// Detached containers: start, ps state, logs, exec, stop, kill, wait, rm.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <termios.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>

#include "runner/supervisor.h"
#include "tests/runner/runner_test_util.h"

namespace imgtool::runner {
namespace {

namespace fs = std::filesystem;

using namespace std::chrono_literals;

class SupervisorTest : public testing::RunnerPrivilegedTest {
 protected:
  fs::path StateDir() const { return Path("state"); }

  // Runs `process` in the container with output captured.
  std::pair<ExitStatus, std::string> Exec(std::vector<std::string> args) {
    int out[2];
    EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    UniqueFd out_read(out[0]), out_write(out[1]);
    ProcessSpec process;
    process.args = std::move(args);
    Result<ExitStatus> status =
        ExecInContainer(StateDir(), process, Stdio{-1, out_write.get(), out_write.get()});
    out_write.reset();
    EXPECT_TRUE(status.has_value()) << status.error().ToString();
    return {status ? *status : ExitStatus{}, testing::ReadAllFrom(out_read.get())};
  }

  std::string Logs() {
    int out[2];
    EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    UniqueFd out_read(out[0]), out_write(out[1]);
    Status copied = CopyContainerLogs(StateDir(), out_write.get(), false);
    EXPECT_TRUE(copied.has_value()) << copied.error().ToString();
    out_write.reset();
    return testing::ReadAllFrom(out_read.get());
  }
};

TEST_F(SupervisorTest, StartExecStopRemove) {
  ContainerSpec spec = Spec({"probe", "echo", "started", "+", "sleep", "60"});
  spec.hostname = "detached";
  Result<ContainerState> state = StartDetached(spec, StateDir());
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  EXPECT_EQ(state->status, ContainerStatus::kRunning);
  EXPECT_EQ(state->id, spec.id);
  EXPECT_GT(state->pid, 0);
  EXPECT_NE(state->supervisor_pid, ::getpid());
  EXPECT_EQ(state->command, spec.process.args);

  // exec joins every namespace and the cgroup of the container.
  auto [status, out] = Exec({"probe", "hostname", "+", "pids", "+", "read", "/proc/self/cgroup",
                             "+", "ns", "mnt"});
  EXPECT_EQ(status.exit_code, 0) << out << status.message;
  EXPECT_EQ(out.rfind("hostname=detached\npids=1,", 0), 0u) << out;
  // In the container's cgroup namespace its own cgroup is "/".
  EXPECT_NE(out.find(":memory:/\n"), std::string::npos) << out;
  auto [init_status, init_ns] = Exec({"probe", "read", "/proc/1/cgroup", "+", "ns", "mnt"});
  EXPECT_EQ(init_status.exit_code, 0);
  EXPECT_EQ(out.substr(out.find("ns=mnt")), init_ns.substr(init_ns.find("ns=mnt")));

  auto [failed, failed_out] = Exec({"no-such-thing"});
  EXPECT_EQ(failed.exit_code, 127);
  EXPECT_NE(failed.message.find("not found"), std::string::npos);

  // The log holds the container's output.
  EXPECT_EQ(Logs(), "started\n");

  // Running: rm refuses without force.
  Status removed = RemoveContainer(StateDir(), false);
  ASSERT_FALSE(removed.has_value());
  EXPECT_EQ(removed.error().code(), ErrorCode::kFailedPrecondition);

  // PID 1 ignores SIGTERM (no handler): stop falls back to SIGKILL.
  auto begin = std::chrono::steady_clock::now();
  Status stopped = StopContainer(StateDir(), 200ms);
  ASSERT_TRUE(stopped.has_value()) << stopped.error().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 5s);
  Result<ContainerState> after = ReadContainerState(StateDir());
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->status, ContainerStatus::kExited);
  EXPECT_EQ(after->exit_code, 137);
  EXPECT_GE(after->finished_at, after->started_at);
  ProcessSpec late;
  late.args = {"true"};
  EXPECT_FALSE(ExecInContainer(StateDir(), late, Stdio{}).has_value());

  // An exited container stays until rm.
  Result<std::vector<ContainerState>> listed = ListContainerStates(Path(""));
  ASSERT_TRUE(listed.has_value());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, spec.id);
  ASSERT_TRUE(RemoveContainer(StateDir(), false).has_value());
  EXPECT_FALSE(fs::exists(StateDir()));
}

TEST_F(SupervisorTest, ExecWithATerminalAndAsAnotherUser) {
  ContainerSpec spec = Spec({"probe", "sleep", "60"});
  ASSERT_TRUE(StartDetached(spec, StateDir()).has_value());
  int user_master = -1, user_slave = -1;
  struct winsize size {};
  size.ws_row = 40;
  size.ws_col = 120;
  ASSERT_EQ(::openpty(&user_master, &user_slave, nullptr, nullptr, &size), 0);
  UniqueFd master(user_master), slave(user_slave);
  ProcessSpec process;
  process.args = {"probe", "tty", "+", "id", "+", "status", "CapEff"};
  process.terminal = true;
  process.user = "app";
  Result<ExitStatus> status =
      ExecInContainer(StateDir(), process, Stdio{slave.get(), slave.get(), slave.get()});
  ASSERT_TRUE(status.has_value()) << status.error().ToString();
  EXPECT_EQ(status->exit_code, 0);
  ::fcntl(master.get(), F_SETFL, O_NONBLOCK);
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(master.get(), buffer, sizeof(buffer))) > 0) out.append(buffer, n);
  EXPECT_NE(out.find("isatty=1 ttyname=/dev/pts/0 rows=40 cols=120"), std::string::npos) << out;
  EXPECT_NE(out.find("uid=1000 gid=1000"), std::string::npos) << out;
  EXPECT_NE(out.find("CapEff=0000000000000000"), std::string::npos) << out;
  ASSERT_TRUE(RemoveContainer(StateDir(), true).has_value());
}

TEST_F(SupervisorTest, WaitReturnsTheExitCodeAndFollowGetsAllOutput) {
  ContainerSpec spec = Spec({"probe", "echo", "a", "+", "sleep", "0.3", "+", "echo", "b", "+",
                             "exit", "7"});
  Result<ContainerState> state = StartDetached(spec, StateDir());
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  UniqueFd out_read(out[0]), out_write(out[1]);
  ASSERT_TRUE(CopyContainerLogs(StateDir(), out_write.get(), true).has_value());
  out_write.reset();
  EXPECT_EQ(testing::ReadAllFrom(out_read.get()), "a\nb\n");
  Result<ContainerState> done = WaitContainer(StateDir());
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->status, ContainerStatus::kExited);
  EXPECT_EQ(done->exit_code, 7);
}

TEST_F(SupervisorTest, KillForceRemoveAndOnExit) {
  ContainerSpec spec = Spec({"probe", "trap", "10"});
  spec.init = true;
  fs::path marker = Path("on-exit-ran");
  DetachOptions options;
  options.on_exit = [marker](const ContainerState& state) {
    imgtool::testing::WriteTestFile(marker, std::to_string(state.exit_code));
  };
  Result<ContainerState> state = StartDetached(spec, StateDir(), options);
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  // Under --init, the signal reaches the command, which exits with its number.
  for (int i = 0; i < 100 && Logs().find("ready") == std::string::npos; ++i) ::usleep(10000);
  ASSERT_TRUE(KillContainer(StateDir(), SIGUSR1).has_value());
  Result<ContainerState> done = WaitContainer(StateDir());
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->exit_code, SIGUSR1);
  EXPECT_EQ(imgtool::testing::ReadTestFile(marker), std::to_string(SIGUSR1));
  Status kill_again = KillContainer(StateDir(), SIGKILL);
  ASSERT_FALSE(kill_again.has_value());
  EXPECT_EQ(kill_again.error().code(), ErrorCode::kFailedPrecondition);

  // rm -f of a running container.
  ContainerSpec second = Spec({"probe", "sleep", "60"});
  fs::path second_dir = Path("state2");
  ASSERT_TRUE(StartDetached(second, second_dir).has_value());
  ASSERT_TRUE(RemoveContainer(second_dir, true).has_value());
  EXPECT_FALSE(fs::exists(second_dir));
}

TEST_F(SupervisorTest, StartFailureIsReportedAndRecorded) {
  ContainerSpec spec = Spec({"/bin/true"});
  spec.process.user = "no-such-user";
  Result<ContainerState> state = StartDetached(spec, StateDir());
  ASSERT_FALSE(state.has_value());
  EXPECT_EQ(state.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(state.error().message().find("no-such-user"), std::string::npos);
  Result<ContainerState> recorded = ReadContainerState(StateDir());
  ASSERT_TRUE(recorded.has_value());
  EXPECT_EQ(recorded->status, ContainerStatus::kExited);
  EXPECT_EQ(recorded->exit_code, 125);
  // The dir is in use until removed.
  EXPECT_EQ(StartDetached(spec, StateDir()).error().code(), ErrorCode::kAlreadyExists);
}

}  // namespace
}  // namespace imgtool::runner
