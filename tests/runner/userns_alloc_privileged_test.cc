// The runner's side of --userns=auto slices: a container holds its slice's
// claim for as long as it runs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include "common/file_util.h"
#include "runner/container.h"
#include "runner/userns_alloc.h"
#include "tests/runner/runner_test_util.h"

namespace imgtool::runner {
namespace {

using testing::RunnerPrivilegedTest;
using testing::StartUntilUp;

class UsernsContainerTest : public RunnerPrivilegedTest {
 protected:
  void SetUp() override {
    RunnerPrivilegedTest::SetUp();
    if (IsSkipped()) return;
    std::string me = std::to_string(::getuid());
    imgtool::testing::WriteTestFile(Path("subuid"), me + ":700000:10000\n");
    imgtool::testing::WriteTestFile(Path("subgid"), me + ":800000:10000\n");
  }

  UsernsAllocator Allocator() const {
    return UsernsAllocator(
        {.state_dir = Path("state"), .subuid_file = Path("subuid"), .subgid_file = Path("subgid")});
  }

  std::vector<std::string> Owners() const {
    Result<std::vector<UsernsAllocation>> list = Allocator().List();
    EXPECT_TRUE(list.has_value()) << list.error().ToString();
    std::vector<std::string> owners;
    if (list) {
      for (const UsernsAllocation& allocation : *list) owners.push_back(allocation.owner);
    }
    return owners;
  }

  // A --userns=auto spec on a fresh slice; `lease` gets the allocator's share.
  ContainerSpec SpecWithSlice(std::vector<std::string> args, UsernsLease* lease) {
    ContainerSpec spec = Spec(std::move(args));
    UsernsRequest request;
    request.owner = spec.id;
    request.size = 2000;
    Result<UsernsLease> allocated = Allocator().Allocate(request);
    EXPECT_TRUE(allocated.has_value()) << allocated.error().ToString();
    if (allocated) *lease = std::move(*allocated);
    spec.userns = UserNamespaceMode::kAuto;
    spec.id_mappings = lease->mappings;
    spec.userns_claim = lease->claim_path;
    return spec;
  }
};

TEST_F(UsernsContainerTest, TheContainerHoldsItsSliceWhileItRuns) {
  UsernsLease lease;
  ContainerSpec spec = SpecWithSlice({"probe", "echo", "up", "+", "sleep", "30"}, &lease);
  const IdMappings mappings = lease.mappings;
  Result<std::unique_ptr<Container>> container = StartUntilUp(spec);
  ASSERT_TRUE(container.has_value()) << container.error().ToString();
  Result<std::string> uid_map =
      ReadFileToString("/proc/" + std::to_string((*container)->pid()) + "/uid_map");
  ASSERT_TRUE(uid_map.has_value());
  EXPECT_EQ(*uid_map, "         0     700000       2000\n");

  // The allocating process lets go (as `run -d` does once its supervisor
  // runs the container): the container's own share keeps the slice.
  lease = UsernsLease();
  EXPECT_EQ(Owners(), std::vector<std::string>{spec.id});
  UsernsRequest other;
  other.owner = "other";
  other.size = 100;
  Result<UsernsLease> next = Allocator().Allocate(other);
  ASSERT_TRUE(next.has_value()) << next.error().ToString();
  EXPECT_EQ(next->mappings.uids, (std::vector<IdMap>{{0, 702000, 100}}));
  *next = UsernsLease();

  ASSERT_TRUE((*container)->Signal(SIGKILL).has_value());
  EXPECT_EQ((*container)->Wait()->exit_code, 137);
  container->reset();
  // Nobody holds it now: taken back.
  EXPECT_EQ(Owners(), std::vector<std::string>{});
  EXPECT_EQ(mappings.gids, (std::vector<IdMap>{{0, 800000, 2000}}));
}

TEST_F(UsernsContainerTest, ASliceThatIsGoneFailsTheStart) {
  UsernsLease lease;
  ContainerSpec spec = SpecWithSlice({"probe", "echo", "never"}, &lease);
  ASSERT_TRUE(Allocator().Free(spec.id).has_value());
  Result<std::unique_ptr<Container>> container = Container::Start(spec, Stdio{-1, 1, 2});
  ASSERT_FALSE(container.has_value());
  EXPECT_EQ(container.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(container.error().message().find("the user namespace slice is gone"), std::string::npos)
      << container.error().message();
}

TEST_F(UsernsContainerTest, AUserNamespaceWithoutMapsIsRefused) {
  ContainerSpec spec = Spec({"probe", "echo", "never"});
  spec.userns = UserNamespaceMode::kAuto;
  Result<std::unique_ptr<Container>> container = Container::Start(spec, Stdio{-1, 1, 2});
  ASSERT_FALSE(container.has_value());
  EXPECT_EQ(container.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(container.error().message().find("needs id maps"), std::string::npos)
      << container.error().message();
}

}  // namespace
}  // namespace imgtool::runner
