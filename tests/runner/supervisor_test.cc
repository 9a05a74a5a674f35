#include "runner/supervisor.h"

#include <gtest/gtest.h>

namespace imgtool::runner {
namespace {

TEST(SupervisorStateTest, JsonRoundTrip) {
  ContainerState state;
  state.id = "web";
  state.status = ContainerStatus::kRunning;
  state.pid = 1234;
  state.pid_start_time = 99887766;
  state.supervisor_pid = 1200;
  state.supervisor_start_time = 99887700;
  state.exit_code = -1;
  state.created_at = 1700000000;
  state.started_at = 1700000001;
  state.command = {"sh", "-c", "echo \"hi\""};
  state.hostname = "web";
  state.own_cgroup = true;
  state.security.cap_add = {"NET_ADMIN"};
  state.security.seccomp = SeccompMode::kProfile;
  state.security.seccomp_profile = "/p.json";
  state.security.no_new_privileges = false;
  Result<ContainerState> back = ContainerStateFromJson(ContainerStateToJson(state));
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->id, "web");
  EXPECT_EQ(back->status, ContainerStatus::kRunning);
  EXPECT_EQ(back->pid, 1234);
  EXPECT_EQ(back->pid_start_time, 99887766u);
  EXPECT_EQ(back->supervisor_start_time, 99887700u);
  EXPECT_EQ(back->command, state.command);
  EXPECT_TRUE(back->own_cgroup);
  EXPECT_EQ(back->security.cap_add, state.security.cap_add);
  EXPECT_EQ(back->security.seccomp, SeccompMode::kProfile);
  EXPECT_EQ(back->security.seccomp_profile, "/p.json");
  EXPECT_FALSE(back->security.no_new_privileges);
}

TEST(SupervisorStateTest, RefusesDamagedState) {
  EXPECT_EQ(ContainerStateFromJson("{").error().code(), ErrorCode::kDataLoss);
  EXPECT_EQ(ContainerStateFromJson(R"({"id": "x"})").error().code(), ErrorCode::kDataLoss);
  Result<ContainerState> bad = ContainerStateFromJson(R"({"id": "x", "status": "zombie"})");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("zombie"), std::string::npos);
}

TEST(SupervisorStateTest, StatusNames) {
  EXPECT_EQ(ContainerStatusName(ContainerStatus::kCreated), "created");
  EXPECT_EQ(ContainerStatusName(ContainerStatus::kRunning), "running");
  EXPECT_EQ(ContainerStatusName(ContainerStatus::kExited), "exited");
}

TEST(SupervisorStateTest, MissingStateDirIsNotFound) {
  Result<ContainerState> state = ReadContainerState("/nonexistent/imgtool/container");
  ASSERT_FALSE(state.has_value());
  EXPECT_EQ(state.error().code(), ErrorCode::kNotFound);
  Result<std::vector<ContainerState>> none = ListContainerStates("/nonexistent/imgtool");
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());
}

}  // namespace
}  // namespace imgtool::runner
