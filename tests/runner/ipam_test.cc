#include "runner/ipam.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>

#include "common/temp_dir.h"

namespace imgtool::runner {
namespace {

// Probes over sets the test controls: which veths exist, which owners live.
struct FakeWorld {
  std::set<std::string> links;
  std::set<pid_t> processes;
  IpamProbes Probes() {
    return {[this](const std::string& veth) { return links.contains(veth); },
            [this](pid_t pid, uint64_t) { return processes.contains(pid); }};
  }
};

class IpamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("ipam-test-");
    ASSERT_TRUE(dir);
    tmp_ = std::make_unique<TempDir>(std::move(*dir));
    subnet_ = Ipv4Subnet::Parse("10.89.0.0/29").value();  // hosts .2 to .6
  }
  Ipam Open() {
    auto ipam = Ipam::Open(tmp_->path(), "br0", subnet_, world_.Probes());
    EXPECT_TRUE(ipam) << ipam.error().ToString();
    return std::move(ipam).value();
  }
  static IpamEntry Entry(const std::string& id, pid_t owner = 1) {
    IpamEntry entry;
    entry.container_id = id;
    entry.veth = "v-" + id;
    entry.owner_pid = owner;
    entry.owner_start_time = 1;
    return entry;
  }

  std::unique_ptr<TempDir> tmp_;
  Ipv4Subnet subnet_;
  FakeWorld world_;
};

TEST(Ipv4SubnetTest, Parses) {
  auto subnet = Ipv4Subnet::Parse("10.89.0.0/24");
  ASSERT_TRUE(subnet);
  EXPECT_EQ(subnet->Gateway().ToString(), "10.89.0.1");
  EXPECT_EQ(subnet->FirstHost().ToString(), "10.89.0.2");
  EXPECT_EQ(subnet->LastHost().ToString(), "10.89.0.254");
  EXPECT_TRUE(subnet->Contains(Ipv4::Parse("10.89.0.77").value()));
  EXPECT_FALSE(subnet->Contains(Ipv4::Parse("10.89.1.1").value()));
  EXPECT_EQ(subnet->ToString(), "10.89.0.0/24");
  EXPECT_FALSE(Ipv4Subnet::Parse("10.89.0.0"));
  EXPECT_FALSE(Ipv4Subnet::Parse("10.89.0.0/31"));
  EXPECT_FALSE(Ipv4Subnet::Parse("10.89.0.0/x"));
  EXPECT_FALSE(Ipv4Subnet::Parse("10.89.0.300/24"));
  EXPECT_FALSE(Ipv4Subnet::Parse("10.89.0.5/24"));
}

TEST(IpamProbesTest, ProcessLivenessUsesStartTime) {
  IpamProbes probes = DefaultIpamProbes();
  uint64_t start = ProcessStartTime(getpid());
  ASSERT_NE(start, 0u);
  EXPECT_TRUE(probes.process_alive(getpid(), start));
  EXPECT_FALSE(probes.process_alive(getpid(), start + 1)) << "a reused pid is not the owner";
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);
  EXPECT_EQ(ProcessStartTime(child), 0u);
  EXPECT_FALSE(probes.link_exists("imgtool-nope0"));
  EXPECT_TRUE(probes.link_exists("lo"));
}

TEST_F(IpamTest, AllocatesDistinctAddressesAndPersists) {
  world_.processes = {1};
  {
    Ipam ipam = Open();
    EXPECT_EQ(ipam.Allocate(Entry("a")).value().ToString(), "10.89.0.2");
    EXPECT_EQ(ipam.Allocate(Entry("b")).value().ToString(), "10.89.0.3");
    auto again = ipam.Allocate(Entry("a"));
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
    ASSERT_TRUE(ipam.Save());
  }
  Ipam ipam = Open();
  ASSERT_NE(ipam.Find("a"), nullptr);
  EXPECT_EQ(ipam.Find("a")->ip.ToString(), "10.89.0.2");
  EXPECT_EQ(ipam.Find("b")->veth, "v-b");
  EXPECT_EQ(ipam.Allocate(Entry("c")).value().ToString(), "10.89.0.4");
}

TEST_F(IpamTest, RoundRobinAndDraining) {
  world_.processes = {1};
  Ipam ipam = Open();
  ASSERT_TRUE(ipam.Allocate(Entry("a")));  // .2
  world_.links.insert("v-a");
  ASSERT_TRUE(ipam.Release("a"));
  EXPECT_EQ(ipam.draining(), 1u);
  EXPECT_EQ(ipam.Allocate(Entry("b")).value().ToString(), "10.89.0.3") << "round robin";
  EXPECT_TRUE(ipam.Allocate(Entry("c")));  // .4
  EXPECT_TRUE(ipam.Allocate(Entry("d")));  // .5
  EXPECT_TRUE(ipam.Allocate(Entry("e")));  // .6
  auto full = ipam.Allocate(Entry("f"));
  ASSERT_FALSE(full) << ".2 drains while a's veth exists";
  EXPECT_EQ(full.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(full.error().message().find("subnet 10.89.0.0/29 is full"), std::string::npos);
  world_.links.erase("v-a");
  EXPECT_EQ(ipam.Allocate(Entry("f")).value().ToString(), "10.89.0.2");
  EXPECT_EQ(ipam.draining(), 0u);
}

TEST_F(IpamTest, ReclaimsStaleEntries) {
  world_.processes = {1, 2};
  world_.links = {"v-running"};
  Ipam ipam = Open();
  ASSERT_TRUE(ipam.Allocate(Entry("crashed", 2)));
  ASSERT_TRUE(ipam.Allocate(Entry("running", 2)));
  ASSERT_TRUE(ipam.Allocate(Entry("starting", 1)));
  world_.processes.erase(2);  // imgtool of "crashed" and "running" died
  std::vector<IpamEntry> stale = ipam.TakeStale();
  ASSERT_EQ(stale.size(), 1u);
  EXPECT_EQ(stale[0].container_id, "crashed") << "no veth and no owner";
  EXPECT_NE(ipam.Find("running"), nullptr) << "its netns (veth) lives";
  EXPECT_NE(ipam.Find("starting"), nullptr) << "its owner lives";
}

TEST_F(IpamTest, TakeIfRemovesDeadContainers) {
  world_.processes = {1};
  Ipam ipam = Open();
  ASSERT_TRUE(ipam.Allocate(Entry("a")));
  ASSERT_TRUE(ipam.Allocate(Entry("b")));
  auto taken = ipam.TakeIf([](std::string_view id) { return id == "b"; });
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0].container_id, "a");
  EXPECT_EQ(ipam.entries().size(), 1u);
}

TEST_F(IpamTest, RecordsPortsAndRules) {
  world_.processes = {1};
  {
    Ipam ipam = Open();
    IpamEntry entry = Entry("web");
    PortMapping port;
    port.host_port = 8080;
    port.container_port = 80;
    entry.ports.push_back(port);
    entry.rules.push_back({"nat", {"-I", "OUTPUT", "-j", "DNAT"}});
    ASSERT_TRUE(ipam.Allocate(entry));
    ASSERT_TRUE(ipam.Save());
  }
  Ipam ipam = Open();
  PortMapping same;
  same.host_ip = "127.0.0.1";
  same.host_port = 8080;
  ASSERT_NE(ipam.FindPortOwner(same), nullptr);
  EXPECT_EQ(ipam.FindPortOwner(same)->container_id, "web");
  same.protocol = PortMapping::Protocol::kUdp;
  EXPECT_EQ(ipam.FindPortOwner(same), nullptr);
  EXPECT_EQ(ipam.Find("web")->rules.at(0).args.at(1), "OUTPUT");
}

TEST_F(IpamTest, OtherSubnetInUseIsRefused) {
  world_.processes = {1};
  {
    Ipam ipam = Open();
    ASSERT_TRUE(ipam.Allocate(Entry("a")));
    ASSERT_TRUE(ipam.Save());
  }
  auto other = Ipv4Subnet::Parse("10.90.0.0/24").value();
  auto refused = Ipam::Open(tmp_->path(), "br0", other, world_.Probes());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  world_.processes.clear();  // the container is gone: the new subnet may take over
  auto reopened = Ipam::Open(tmp_->path(), "br0", other, world_.Probes());
  ASSERT_TRUE(reopened);
  EXPECT_TRUE(reopened->entries().empty());
}

TEST_F(IpamTest, CorruptStateIsDataLoss) {
  FILE* f = fopen((tmp_->path() / "br0.ipam.json").c_str(), "we");
  ASSERT_NE(f, nullptr);
  fputs("{not json", f);
  fclose(f);
  auto ipam = Ipam::Open(tmp_->path(), "br0", subnet_, world_.Probes());
  ASSERT_FALSE(ipam);
  EXPECT_EQ(ipam.error().code(), ErrorCode::kDataLoss);
  EXPECT_NE(ipam.error().message().find("br0.ipam.json"), std::string::npos);
}

// 20 processes allocate at once from one state file: the flock serializes
// them, every address is distinct, and all releases leave nothing behind.
TEST_F(IpamTest, TwentyConcurrentProcessesGetDistinctAddresses) {
  Ipv4Subnet subnet = Ipv4Subnet::Parse("10.89.0.0/24").value();
  const std::filesystem::path dir = tmp_->path();
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  std::vector<pid_t> children;
  for (int i = 0; i < 20; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      close(pipe_fds[0]);
      // Owners are these live processes (real probes): nothing is stale.
      auto ipam = Ipam::Open(dir, "br0", subnet);
      if (!ipam) _exit(1);
      IpamEntry entry;
      entry.container_id = "c" + std::to_string(i);
      entry.veth = "none" + std::to_string(i);
      entry.owner_pid = getpid();
      entry.owner_start_time = ProcessStartTime(getpid());
      auto ip = ipam->Allocate(entry);
      if (!ip || !ipam->Save()) _exit(2);
      uint32_t value = ip->value;
      if (write(pipe_fds[1], &value, sizeof(value)) != sizeof(value)) _exit(3);
      _exit(0);
    }
    ASSERT_GT(pid, 0);
    children.push_back(pid);
  }
  close(pipe_fds[1]);
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  std::set<uint32_t> addresses;
  uint32_t value;
  while (read(pipe_fds[0], &value, sizeof(value)) == sizeof(value)) addresses.insert(value);
  close(pipe_fds[0]);
  EXPECT_EQ(addresses.size(), 20u);

  auto ipam = Ipam::Open(dir, "br0", subnet);
  ASSERT_TRUE(ipam);
  EXPECT_EQ(ipam->entries().size(), 20u) << "no allocation lost to a race";
  // Their owners have exited and they have no veth: all stale now.
  EXPECT_EQ(ipam->TakeStale().size(), 20u);
  ASSERT_TRUE(ipam->Save());
  EXPECT_TRUE(ipam->entries().empty());
}

}  // namespace
}  // namespace imgtool::runner
