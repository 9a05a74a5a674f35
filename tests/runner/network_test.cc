#include "runner/network.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "runner/bridge_network.h"
#include "runner/iptables.h"

namespace imgtool::runner {
namespace {

TEST(NetworkTest, ParsesPortMappings) {
  auto p = ParsePortMapping("8080:80");
  ASSERT_TRUE(p) << p.error().ToString();
  EXPECT_EQ(p->host_ip, "");
  EXPECT_EQ(p->host_port, 8080);
  EXPECT_EQ(p->container_port, 80);
  EXPECT_EQ(p->protocol, PortMapping::Protocol::kTcp);

  p = ParsePortMapping("127.0.0.1:5353:53/udp");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->host_ip, "127.0.0.1");
  EXPECT_EQ(p->host_port, 5353);
  EXPECT_EQ(p->container_port, 53);
  EXPECT_EQ(p->protocol, PortMapping::Protocol::kUdp);
  EXPECT_EQ(PortMappingToString(*p), "127.0.0.1:5353:53/udp");

  p = ParsePortMapping("0.0.0.0:1:65535/tcp");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->host_ip, "") << "0.0.0.0 means every address";
  EXPECT_EQ(p->container_port, 65535);
  EXPECT_EQ(PortMappingToString(*p), "1:65535/tcp");
}

TEST(NetworkTest, RejectsBadPortMappings) {
  for (const char* bad : {"80", "0:80", "80:0", "70000:80", "a:80", "80:80/sctp", "1.2.3:80:80",
                          "[::1]:80:80", "8000-8010:80", ":80", "80:", "80:80/"}) {
    auto p = ParsePortMapping(bad);
    ASSERT_FALSE(p) << bad;
    EXPECT_EQ(p.error().code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(p.error().message().find(bad), std::string::npos)
        << "the error names the spec: " << p.error().message();
  }
}

TEST(NetworkTest, ParsesModes) {
  EXPECT_EQ(ParseNetworkMode("none").value(), NetworkMode::kNone);
  EXPECT_EQ(ParseNetworkMode("host").value(), NetworkMode::kHost);
  EXPECT_EQ(ParseNetworkMode("bridge").value(), NetworkMode::kBridge);
  EXPECT_FALSE(ParseNetworkMode("slirp4netns"));
}

TEST(NetworkTest, FactoryChecksSpec) {
  NetworkSpec none;
  none.mode = NetworkMode::kNone;
  auto network = NewNetwork(none);
  ASSERT_TRUE(network);
  EXPECT_TRUE((*network)->NeedsOwnNetns());

  NetworkSpec host;
  host.mode = NetworkMode::kHost;
  network = NewNetwork(host);
  ASSERT_TRUE(network);
  EXPECT_FALSE((*network)->NeedsOwnNetns());
  auto attachment = (*network)->Attach(-1);
  ASSERT_TRUE(attachment);
  EXPECT_EQ(attachment->ip, "");

  none.ports.push_back(ParsePortMapping("8080:80").value());
  network = NewNetwork(none);
  ASSERT_FALSE(network);
  EXPECT_EQ(network.error().code(), ErrorCode::kInvalidArgument);

  NetworkSpec bridge;
  bridge.container_id = "abc";
  EXPECT_FALSE(NewNetwork(bridge)) << "no state dir";
  bridge.state_dir = "/tmp/x";
  bridge.subnet = "10.89.0.1/24";
  network = NewNetwork(bridge);
  ASSERT_FALSE(network);
  EXPECT_NE(network.error().message().find("host bits"), std::string::npos);
  bridge.subnet = "";
  bridge.bridge_name = "a-name-far-too-long";
  EXPECT_FALSE(NewNetwork(bridge));
  bridge.bridge_name = "";
  network = NewNetwork(bridge);
  ASSERT_TRUE(network) << network.error().ToString();
  EXPECT_TRUE((*network)->NeedsOwnNetns());
  EXPECT_TRUE((*network)->Detach()) << "detach without attach is a no-op";
}

TEST(NetworkTest, VethNamesFitAndDiffer) {
  std::string a = VethNameFor("container-a");
  std::string b = VethNameFor("container-b");
  EXPECT_EQ(a.size(), 15u);
  EXPECT_TRUE(a.starts_with("imgv"));
  EXPECT_NE(a, b);
  EXPECT_EQ(a, VethNameFor("container-a"));
}

TEST(NetworkTest, BridgeRulesNameBridgeAndSubnet) {
  auto subnet = Ipv4Subnet::Parse("10.89.0.0/24");
  ASSERT_TRUE(subnet);
  std::vector<IptablesRule> rules = BridgeRules("imgtool0", *subnet);
  std::string script = IptablesRestoreScript(rules);
  EXPECT_NE(script.find("*nat\n-A POSTROUTING -s 10.89.0.0/24 ! -o imgtool0 -m comment "
                        "--comment \"imgtool imgtool0 egress\" -j MASQUERADE\n"),
            std::string::npos)
      << script;
  EXPECT_NE(script.find("-A POSTROUTING -s 127.0.0.0/8 -o imgtool0"), std::string::npos);
  EXPECT_NE(script.find("*filter\n-I FORWARD -i imgtool0"), std::string::npos);
  EXPECT_EQ(std::count(script.begin(), script.end(), '*'), 2);
  size_t commits = 0;
  for (size_t pos = script.find("COMMIT\n"); pos != std::string::npos;
       pos = script.find("COMMIT\n", pos + 1)) {
    ++commits;
  }
  EXPECT_EQ(commits, 2u) << "one COMMIT per table";
}

TEST(NetworkTest, DeletionOfDropsInsertPosition) {
  IptablesRule rule{"nat", {"-I", "OUTPUT", "1", "-p", "tcp", "-j", "ACCEPT"}};
  EXPECT_EQ(DeletionOf(rule).args,
            (std::vector<std::string>{"-D", "OUTPUT", "-p", "tcp", "-j", "ACCEPT"}));
  IptablesRule append{"nat", {"-A", "POSTROUTING", "-j", "MASQUERADE"}};
  EXPECT_EQ(DeletionOf(append).args,
            (std::vector<std::string>{"-D", "POSTROUTING", "-j", "MASQUERADE"}));
}

TEST(NetworkTest, ToolNotFoundIsNotFound) {
  auto out = RunTool({"imgtool-no-such-tool-xyz"});
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code(), ErrorCode::kNotFound);
  auto cat = RunTool({"sh", "-c", "cat >/dev/null; echo oops >&2; exit 3"}, "input");
  ASSERT_TRUE(cat);
  EXPECT_EQ(cat->exit_code, 3);
  EXPECT_EQ(cat->err, "oops");
}

TEST(NetworkTest, HostDnsForBridgeHasNoLoopback) {
  HostDns dns = ReadHostDns(/*for_bridge=*/true);
  ASSERT_FALSE(dns.nameservers.empty());
  for (const std::string& server : dns.nameservers) {
    EXPECT_FALSE(server.starts_with("127.")) << server;
  }
}

}  // namespace
}  // namespace imgtool::runner
