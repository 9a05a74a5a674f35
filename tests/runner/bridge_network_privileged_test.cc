// Bridge, none and loopback networking on the real kernel (root only). Every
// test makes its own network namespaces (forked children that unshare), its
// own bridge and subnet, and removes them with their iptables rules; the
// host's ip_forward is restored.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "common/file_util.h"
#include "common/temp_dir.h"
#include "runner/bridge_network.h"
#include "runner/ipam.h"
#include "runner/network.h"
#include "tests/support/test_util.h"

namespace imgtool::runner {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint16_t kServerPort = 8080;

// A forked child in a new netns that answers every TCP connection on port
// 8080 with "hello <pid>\n". Killed and reaped by the destructor.
class NetnsChild {
 public:
  // `in_userns`: the netns belongs to a new user namespace, as with --userns=auto.
  explicit NetnsChild(bool in_userns = false) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(ready[0]);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (in_userns && unshare(CLONE_NEWUSER) != 0) _exit(9);
      if (unshare(CLONE_NEWNET) != 0) _exit(10);
      int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(kServerPort);
      if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
          listen(listener, 64) != 0) {
        _exit(11);
      }
      if (write(ready[1], "x", 1) != 1) _exit(12);
      close(ready[1]);
      char greeting[64];
      int length = snprintf(greeting, sizeof(greeting), "hello %d\n", getpid());
      while (true) {
        int client = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) continue;
        (void)!write(client, greeting, static_cast<size_t>(length));
        close(client);
      }
    }
    close(ready[1]);
    char c;
    if (read(ready[0], &c, 1) != 1) pid_ = -1;
    close(ready[0]);
  }
  ~NetnsChild() { Kill(); }
  NetnsChild(const NetnsChild&) = delete;
  NetnsChild& operator=(const NetnsChild&) = delete;

  pid_t pid() const { return pid_; }
  std::string Greeting() const { return "hello " + std::to_string(pid_) + "\n"; }
  UniqueFd Netns() const { return std::move(OpenNetnsOfPid(pid_).value()); }
  void Kill() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
};

// Connects to ip:port and reads until EOF; an error text when that fails.
std::string Fetch(const std::string& ip, uint16_t port) {
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  inet_pton(AF_INET, ip.c_str(), &address.sin_addr);
  timeval timeout{2, 0};
  setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  if (connect(sock.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    return std::string("connect failed: ") + strerror(errno);
  }
  std::string text;
  char buffer[256];
  ssize_t n;
  while ((n = read(sock.get(), buffer, sizeof(buffer))) > 0) text.append(buffer, n);
  return text;
}

// Runs `fn` on a thread inside the netns, so the test can look at it.
void InNetns(int netns_fd, const std::function<void()>& fn) {
  std::thread worker([&] {
    ASSERT_EQ(setns(netns_fd, CLONE_NEWNET), 0) << strerror(errno);
    fn();
  });
  worker.join();
}

struct Interface {
  bool up = false;
  std::vector<std::string> addresses;  // "ip/prefix"
};

// getifaddrs() as seen from the calling thread's netns.
std::map<std::string, Interface> Interfaces() {
  std::map<std::string, Interface> result;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return result;
  for (ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    Interface& interface = result[entry->ifa_name];
    interface.up = (entry->ifa_flags & IFF_UP) != 0;
    if (entry->ifa_addr != nullptr && entry->ifa_addr->sa_family == AF_INET) {
      char text[INET_ADDRSTRLEN];
      auto* address = reinterpret_cast<sockaddr_in*>(entry->ifa_addr);
      auto* mask = reinterpret_cast<sockaddr_in*>(entry->ifa_netmask);
      inet_ntop(AF_INET, &address->sin_addr, text, sizeof(text));
      int prefix = __builtin_popcount(mask->sin_addr.s_addr);
      interface.addresses.push_back(std::string(text) + "/" + std::to_string(prefix));
    }
  }
  freeifaddrs(list);
  return result;
}

// The default route's gateway from the calling thread's netns, "" if none.
std::string DefaultGateway() {
  auto file = ReadFileToString("/proc/thread-self/net/route");
  std::string routes = file ? *file : "";
  std::istringstream lines(routes);
  std::string line;
  while (std::getline(lines, line)) {
    char iface[32];
    unsigned destination, gateway;
    if (sscanf(line.c_str(), "%31s %x %x", iface, &destination, &gateway) == 3 &&
        destination == 0 && gateway != 0) {
      in_addr raw{gateway};
      return inet_ntoa(raw);
    }
  }
  return "";
}

bool WaitForLinkGone(const std::string& name, std::chrono::milliseconds patience) {
  auto deadline = Clock::now() + patience;
  while (if_nametoindex(name.c_str()) != 0) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

std::string NatRules() { return testing::RunCommand({"iptables", "-w", "-t", "nat", "-S"}).out; }

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : values[values.size() / 2];
}

class BridgeNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    IMGTOOL_REQUIRE_COMMAND("iptables");
    auto dir = TempDir::Create("bridge-test-");
    ASSERT_TRUE(dir);
    tmp_ = std::make_unique<TempDir>(std::move(*dir));
    int tag = getpid() % 200 + 20;
    bridge_ = "imgt" + std::to_string(getpid());
    subnet_ = "10.213." + std::to_string(tag) + ".0/24";
    auto forward = ReadFileToString("/proc/sys/net/ipv4/ip_forward");
    ip_forward_ = forward ? *forward : "";
    ready_ = true;
  }
  void TearDown() override {
    if (!ready_) return;
    auto removed = RemoveBridgeNetwork(bridge_, subnet_, tmp_->path());
    EXPECT_TRUE(removed) << removed.error().ToString();
    EXPECT_EQ(if_nametoindex(bridge_.c_str()), 0u) << "bridge removed";
    std::string rules = NatRules() + testing::RunCommand({"iptables", "-w", "-S"}).out;
    EXPECT_EQ(rules.find(bridge_), std::string::npos) << "no rule of this test is left:\n" << rules;
    if (!ip_forward_.empty()) testing::WriteTestFile("/proc/sys/net/ipv4/ip_forward", ip_forward_);
  }

  NetworkSpec Spec(const std::string& id) const {
    NetworkSpec spec;
    spec.mode = NetworkMode::kBridge;
    spec.container_id = id;
    spec.bridge_name = bridge_;
    spec.subnet = subnet_;
    spec.state_dir = tmp_->path();
    return spec;
  }

  size_t Allocations() const {
    auto ipam = Ipam::Open(tmp_->path(), bridge_, Ipv4Subnet::Parse(subnet_).value());
    EXPECT_TRUE(ipam) << ipam.error().ToString();
    return ipam ? ipam->entries().size() : 0;
  }

  std::unique_ptr<TempDir> tmp_;
  std::string bridge_;
  std::string subnet_;
  std::string ip_forward_;
  bool ready_ = false;
};

TEST_F(BridgeNetworkTest, AttachGivesEth0AddressRouteAndNat) {
  NetnsChild child;
  ASSERT_GT(child.pid(), 0);
  auto network = NewNetwork(Spec("first"));
  ASSERT_TRUE(network) << network.error().ToString();
  UniqueFd netns = child.Netns();
  auto attachment = (*network)->Attach(netns.get());
  ASSERT_TRUE(attachment) << attachment.error().ToString();

  std::string prefix = subnet_.substr(0, subnet_.rfind('.') + 1);
  EXPECT_EQ(attachment->ip, prefix + "2");
  EXPECT_EQ(attachment->gateway, prefix + "1");
  EXPECT_EQ(attachment->prefix_length, 24);
  EXPECT_EQ(attachment->interface, "eth0");
  EXPECT_EQ(attachment->host_interface, VethNameFor("first"));
  EXPECT_FALSE(attachment->dns.empty());

  InNetns(netns.get(), [&] {
    auto interfaces = Interfaces();
    ASSERT_TRUE(interfaces.contains("eth0"));
    EXPECT_TRUE(interfaces["eth0"].up);
    EXPECT_EQ(interfaces["eth0"].addresses, std::vector<std::string>{attachment->ip + "/24"});
    EXPECT_TRUE(interfaces["lo"].up);
    EXPECT_EQ(interfaces.size(), 2u) << "only lo and eth0";
    EXPECT_EQ(DefaultGateway(), attachment->gateway);
  });
  // The host end is on the bridge, the bridge has the gateway address.
  auto host = Interfaces();
  EXPECT_TRUE(host[attachment->host_interface].up);
  EXPECT_EQ(host[bridge_].addresses, std::vector<std::string>{attachment->gateway + "/24"});
  EXPECT_TRUE(
      std::filesystem::exists("/sys/class/net/" + bridge_ + "/brif/" + attachment->host_interface));

  EXPECT_EQ(Fetch(attachment->ip, kServerPort), child.Greeting()) << "host reaches container";
  const std::string mac_file = "/sys/class/net/" + bridge_ + "/address";
  const std::string bridge_mac = testing::ReadTestFile(mac_file);
  EXPECT_TRUE(bridge_mac.starts_with("02:")) << bridge_mac;

  std::string nat = NatRules();
  EXPECT_NE(nat.find("-A POSTROUTING -s " + subnet_ + " ! -o " + bridge_), std::string::npos)
      << nat;
  EXPECT_EQ(ReadFileToString("/proc/sys/net/ipv4/ip_forward").value(), "1\n");
  EXPECT_EQ(Allocations(), 1u);

  auto detached = (*network)->Detach();
  ASSERT_TRUE(detached) << detached.error().ToString();
  EXPECT_EQ(Allocations(), 0u);
  netns.reset();
  child.Kill();
  EXPECT_TRUE(WaitForLinkGone(attachment->host_interface, std::chrono::seconds(3)))
      << "the kernel removes the veth with the netns";
  EXPECT_EQ(testing::ReadTestFile(mac_file), bridge_mac) << "the gateway's MAC stays";
  EXPECT_TRUE((*network)->Detach()) << "idempotent";
}

TEST_F(BridgeNetworkTest, AttachIntoNetnsOwnedByAUserNamespace) {
  NetnsChild child(/*in_userns=*/true);
  ASSERT_GT(child.pid(), 0);
  auto network = NewNetwork(Spec("userns"));
  ASSERT_TRUE(network);
  UniqueFd netns = child.Netns();
  auto attachment = (*network)->Attach(netns.get());
  ASSERT_TRUE(attachment) << attachment.error().ToString();
  EXPECT_EQ(Fetch(attachment->ip, kServerPort), child.Greeting());
  ASSERT_TRUE((*network)->Detach());
}

TEST_F(BridgeNetworkTest, PublishedPortIsAnsweredOnLoopback) {
  NetnsChild child;
  ASSERT_GT(child.pid(), 0);
  const uint16_t any_port = static_cast<uint16_t>(21000 + getpid() % 20000);
  const uint16_t loopback_port = any_port + 1;
  NetworkSpec spec = Spec("web");
  spec.ports.push_back(ParsePortMapping(std::to_string(any_port) + ":8080").value());
  spec.ports.push_back(
      ParsePortMapping("127.0.0.1:" + std::to_string(loopback_port) + ":8080/tcp").value());
  auto network = NewNetwork(spec);
  ASSERT_TRUE(network);
  UniqueFd netns = child.Netns();
  auto attachment = (*network)->Attach(netns.get());
  ASSERT_TRUE(attachment) << attachment.error().ToString();

  EXPECT_EQ(Fetch("127.0.0.1", any_port), child.Greeting());
  EXPECT_EQ(Fetch("127.0.0.1", loopback_port), child.Greeting());
  EXPECT_EQ(Fetch(attachment->gateway, any_port), child.Greeting()) << "any local address";
  std::string nat = NatRules();
  EXPECT_NE(nat.find("--dport " + std::to_string(any_port)), std::string::npos) << nat;
  EXPECT_NE(nat.find("imgtool " + bridge_ + " web"), std::string::npos) << nat;

  // A second container cannot take the same host port.
  NetnsChild other;
  NetworkSpec clash = Spec("clash");
  clash.ports.push_back(ParsePortMapping(std::to_string(any_port) + ":80").value());
  auto second = NewNetwork(clash);
  ASSERT_TRUE(second);
  UniqueFd other_netns = other.Netns();
  auto refused = (*second)->Attach(other_netns.get());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(refused.error().message().find("already published by container web"), std::string::npos)
      << refused.error().ToString();
  EXPECT_EQ(Allocations(), 1u) << "the refused attach left nothing";

  ASSERT_TRUE((*network)->Detach());
  nat = NatRules();
  EXPECT_EQ(nat.find("--dport " + std::to_string(any_port)), std::string::npos) << nat;
  EXPECT_NE(Fetch("127.0.0.1", any_port), child.Greeting());
}

TEST_F(BridgeNetworkTest, TwentyConcurrentAttachmentsGetDistinctAddressesAndCleanUp) {
  constexpr int kCount = 20;
  int results[2], go[2];
  ASSERT_EQ(pipe2(results, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
  std::vector<pid_t> workers;
  // Each worker is one `imgtool run`: its own container netns, its own attach.
  for (int i = 0; i < kCount; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      close(results[0]);
      close(go[1]);
      NetnsChild container;
      auto network = NewNetwork(Spec("par" + std::to_string(i)));
      if (!network || container.pid() <= 0) _exit(1);
      UniqueFd netns = container.Netns();
      auto attachment = (*network)->Attach(netns.get());
      if (!attachment) {
        fprintf(stderr, "%s\n", attachment.error().ToString().c_str());
        _exit(2);
      }
      std::string line = attachment->ip + " " + attachment->host_interface + " " +
                         std::to_string(container.pid()) + "\n";
      if (write(results[1], line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        _exit(3);
      }
      char c;
      (void)!read(go[0], &c, 1);  // EOF when the test lets go
      netns.reset();
      container.Kill();
      _exit((*network)->Detach() ? 0 : 4);
    }
    ASSERT_GT(pid, 0);
    workers.push_back(pid);
  }
  close(results[1]);
  close(go[0]);
  std::string text;
  char buffer[4096];
  ssize_t n;
  while (true) {
    pollfd poller{results[0], POLLIN, 0};
    if (poll(&poller, 1, 20000) <= 0) break;
    n = read(results[0], buffer, sizeof(buffer));
    if (n <= 0) break;
    text.append(buffer, n);
    if (std::count(text.begin(), text.end(), '\n') == kCount) break;
  }
  std::istringstream lines(text);
  std::set<std::string> ips, veths;
  std::string ip, veth;
  pid_t container_pid;
  std::vector<std::pair<std::string, pid_t>> endpoints;
  while (lines >> ip >> veth >> container_pid) {
    ips.insert(ip);
    veths.insert(veth);
    endpoints.emplace_back(ip, container_pid);
  }
  EXPECT_EQ(ips.size(), static_cast<size_t>(kCount)) << text;
  EXPECT_EQ(veths.size(), static_cast<size_t>(kCount));
  for (const auto& [address, pid] : endpoints) {
    EXPECT_EQ(Fetch(address, kServerPort), "hello " + std::to_string(pid) + "\n") << address;
  }
  EXPECT_EQ(Allocations(), static_cast<size_t>(kCount));

  close(go[1]);
  for (pid_t pid : workers) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  close(results[0]);
  EXPECT_EQ(Allocations(), 0u);
  for (const std::string& name : veths) {
    EXPECT_TRUE(WaitForLinkGone(name, std::chrono::seconds(5))) << name;
  }
  // The kernel unlists a veth's name before it unhooks the port from the
  // bridge, so the brif entry may outlive the name by a moment.
  const std::filesystem::path ports = "/sys/class/net/" + bridge_ + "/brif";
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!std::filesystem::is_empty(ports) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::string left;
  for (const auto& entry : std::filesystem::directory_iterator(ports)) {
    left += entry.path().filename().string() + " ";
  }
  EXPECT_TRUE(left.empty()) << "ports still on the bridge: " << left;
}

TEST_F(BridgeNetworkTest, CrashedRunIsReclaimedByTheNextAttach) {
  const uint16_t port = static_cast<uint16_t>(41000 + getpid() % 20000);
  std::string veth;
  {
    NetnsChild container;
    int report[2];
    ASSERT_EQ(pipe2(report, O_CLOEXEC), 0);
    pid_t imgtool = fork();
    if (imgtool == 0) {
      NetworkSpec spec = Spec("crashed");
      spec.ports.push_back(ParsePortMapping(std::to_string(port) + ":8080").value());
      auto network = NewNetwork(spec);
      UniqueFd netns = container.Netns();
      auto attachment = network ? (*network)->Attach(netns.get()) : InternalError("spec");
      _exit(attachment ? 0 : 1);  // dies without Detach
    }
    int status = 0;
    waitpid(imgtool, &status, 0);
    close(report[0]);
    close(report[1]);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_NE(NatRules().find("--dport " + std::to_string(port)), std::string::npos);
    veth = VethNameFor("crashed");
    EXPECT_NE(if_nametoindex(veth.c_str()), 0u);
    EXPECT_EQ(Allocations(), 1u) << "still running: its netns lives";
  }  // the container dies
  ASSERT_TRUE(WaitForLinkGone(veth, std::chrono::seconds(3)));

  NetnsChild next;
  auto network = NewNetwork(Spec("next"));
  ASSERT_TRUE(network);
  UniqueFd netns = next.Netns();
  auto attachment = (*network)->Attach(netns.get());
  ASSERT_TRUE(attachment) << attachment.error().ToString();
  EXPECT_EQ(Allocations(), 1u) << "the crashed run's entry was reclaimed";
  EXPECT_EQ(NatRules().find("--dport " + std::to_string(port)), std::string::npos)
      << "and its port rules removed";
  ASSERT_TRUE((*network)->Detach());
}

TEST_F(BridgeNetworkTest, CleanupStaleNetworksReleasesDeadContainers) {
  NetnsChild child;
  auto network = NewNetwork(Spec("kept-running"));
  ASSERT_TRUE(network);
  UniqueFd netns = child.Netns();
  ASSERT_TRUE((*network)->Attach(netns.get()));
  ASSERT_TRUE(CleanupStaleNetworks(tmp_->path(), [](std::string_view) { return true; }));
  EXPECT_EQ(Allocations(), 1u);
  ASSERT_TRUE(CleanupStaleNetworks(tmp_->path(), [](std::string_view) { return false; }));
  EXPECT_EQ(Allocations(), 0u);
}

TEST(NoneNetworkTest, AttachBringsOnlyLoopbackUp) {
  IMGTOOL_REQUIRE_ROOT();
  NetnsChild child;
  ASSERT_GT(child.pid(), 0);
  UniqueFd netns = child.Netns();
  InNetns(netns.get(), [] { EXPECT_FALSE(Interfaces()["lo"].up); });
  NetworkSpec spec;
  spec.mode = NetworkMode::kNone;
  auto network = NewNetwork(spec);
  ASSERT_TRUE(network);
  auto attachment = (*network)->Attach(netns.get());
  ASSERT_TRUE(attachment) << attachment.error().ToString();
  InNetns(netns.get(), [] {
    auto interfaces = Interfaces();
    EXPECT_EQ(interfaces.size(), 1u);
    EXPECT_TRUE(interfaces["lo"].up);
    EXPECT_EQ(interfaces["lo"].addresses, std::vector<std::string>{"127.0.0.1/8"});
  });
}

TEST(NoneNetworkTest, ChildSideLoopback) {
  IMGTOOL_REQUIRE_ROOT();
  pid_t pid = fork();
  if (pid == 0) {
    if (unshare(CLONE_NEWNET) != 0) _exit(10);
    if (BringUpLoopbackErrno() != 0) _exit(11);
    if (BringUpLoopbackErrno() != 0) _exit(12);  // idempotent
    UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(sock.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) _exit(13);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "127.0.0.1 is usable after BringUpLoopback";
}

TEST(NoneNetworkTest, NamespaceMadeAheadHasLoUpAndLeavesTheCallerWhereItWas) {
  IMGTOOL_REQUIRE_ROOT();
  struct stat before {};
  ASSERT_EQ(stat("/proc/thread-self/ns/net", &before), 0);
  auto netns = NewNetworkNamespaceFd();
  ASSERT_TRUE(netns) << netns.error().ToString();
  struct stat after {};
  ASSERT_EQ(stat("/proc/thread-self/ns/net", &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino) << "the caller is back in its own namespace";
  struct stat made {};
  ASSERT_EQ(fstat(netns->get(), &made), 0);
  EXPECT_NE(made.st_ino, before.st_ino);
  InNetns(netns->get(), [] {
    auto interfaces = Interfaces();
    EXPECT_EQ(interfaces.size(), 1u);
    EXPECT_TRUE(interfaces["lo"].up);
  });
  // Held by the fd alone: a second one is another namespace.
  auto other = NewNetworkNamespaceFd();
  ASSERT_TRUE(other);
  struct stat second {};
  ASSERT_EQ(fstat(other->get(), &second), 0);
  EXPECT_NE(second.st_ino, made.st_ino);
}

// For a thread that ends right after (the early start's): it stays in the
// namespace it made, and the process's other threads are untouched.
TEST(NoneNetworkTest, NamespaceMadeAheadCanKeepItsThread) {
  IMGTOOL_REQUIRE_ROOT();
  struct stat main_before {};
  ASSERT_EQ(stat("/proc/thread-self/ns/net", &main_before), 0);
  struct stat thread_after {};
  Result<UniqueFd> netns = InternalError("not run");
  std::thread([&] {
    netns = NewNetworkNamespaceFd(/*stay=*/true);
    stat("/proc/thread-self/ns/net", &thread_after);
  }).join();
  ASSERT_TRUE(netns) << netns.error().ToString();
  struct stat made {};
  ASSERT_EQ(fstat(netns->get(), &made), 0);
  EXPECT_EQ(thread_after.st_ino, made.st_ino) << "the thread stayed in the new namespace";
  struct stat main_after {};
  ASSERT_EQ(stat("/proc/thread-self/ns/net", &main_after), 0);
  EXPECT_EQ(main_after.st_ino, main_before.st_ino);
  InNetns(netns->get(), [] { EXPECT_TRUE(Interfaces()["lo"].up); });
}

// Bridge attach+detach cost, as `imgtool run --net bridge` pays it per run.
TEST_F(BridgeNetworkTest, AttachDetachTiming) {
  constexpr int kRounds = 15;
  std::vector<double> attach_ms, detach_ms, teardown_ms;
  // The first attach makes the bridge and its rules: measured on its own.
  double first_ms = 0;
  for (int round = 0; round < kRounds + 1; ++round) {
    NetnsChild child;
    auto network = NewNetwork(Spec("timing" + std::to_string(round)));
    ASSERT_TRUE(network);
    UniqueFd netns = child.Netns();
    auto start = Clock::now();
    auto attachment = (*network)->Attach(netns.get());
    double attach = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    ASSERT_TRUE(attachment) << attachment.error().ToString();
    netns.reset();
    child.Kill();
    start = Clock::now();
    ASSERT_TRUE((*network)->Detach());
    double detach = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    ASSERT_TRUE(WaitForLinkGone(attachment->host_interface, std::chrono::seconds(3)));
    double gone = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (round == 0) {
      first_ms = attach;
      continue;
    }
    attach_ms.push_back(attach);
    detach_ms.push_back(detach);
    teardown_ms.push_back(gone);
  }
  double attach = Median(attach_ms), detach = Median(detach_ms);
  double attach_min = *std::min_element(attach_ms.begin(), attach_ms.end());
  double detach_min = *std::min_element(detach_ms.begin(), detach_ms.end());
  printf(
      "bridge attach median %.2f ms (min %.2f; first, creating the bridge: %.2f ms), detach "
      "median %.2f ms (min %.2f), veth gone (async, off the run's path) after %.2f ms\n",
      attach, attach_min, first_ms, detach, detach_min, Median(teardown_ms));
  RecordProperty("attach_ms", std::to_string(attach));
  RecordProperty("detach_ms", std::to_string(detach));
  // The minimum, as a loaded CI machine inflates the median.
  EXPECT_LT(attach_min + detach_min, 30.0) << "bridge networking should add little to a run";
}

}  // namespace
}  // namespace imgtool::runner
