// `--net bridge`: the bridge (default imgtool0) made on first use with the
// subnet's first address, a veth pair per container whose peer is created as
// eth0 directly inside the container's netns, an address from the IPAM, a
// default route via the bridge, NAT for egress (ip_forward and a MASQUERADE
// rule, added once per bridge) and published ports.
//
// Published ports are iptables DNAT rules in nat PREROUTING (traffic from
// outside) and nat OUTPUT (clients on the host, 127.0.0.1 included), tagged
// with a comment naming the container. Reaching 127.0.0.1 works because the
// bridge has route_localnet=1 and a MASQUERADE rule for 127.0.0.0/8 leaving
// through it, so the container answers the bridge address. No proxy process
// is needed, which keeps a detached container free of helpers and makes the
// rules as long-lived as the container's IPAM entry, which removes them.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runner/ipam.h"
#include "runner/network.h"

namespace imgtool::runner {

struct HostDns {
  std::vector<std::string> nameservers;
  std::vector<std::string> search;
};
// The host's resolv.conf. For a bridge, loopback nameservers (unreachable from
// the container) are dropped, systemd-resolved's upstream file is tried next,
// and public resolvers (8.8.8.8, 1.1.1.1) are the last resort.
HostDns ReadHostDns(bool for_bridge);

// The host end of a container's veth: "imgv" + 11 hex digits of a hash of its
// id (interface names have at most 15 characters).
std::string VethNameFor(const std::string& container_id);

class BridgeNetwork : public Network {
 public:
  static Result<std::unique_ptr<BridgeNetwork>> Create(const NetworkSpec& spec);
  ~BridgeNetwork() override = default;

  bool NeedsOwnNetns() const override { return true; }
  Result<NetworkAttachment> Attach(int netns_fd) override;
  Status Detach() override;

 private:
  BridgeNetwork(NetworkSpec spec, Ipv4Subnet subnet);
  // Under the IPAM lock: the bridge exists with its address, sysctls and rules.
  Result<int> EnsureBridge(NetlinkSocket& netlink);
  Status EnsureBridgeRules();
  // Refuses host ports that another container publishes or a host process holds.
  Status CheckPortsFree(const Ipam& ipam) const;
  std::vector<IptablesRule> PortRules(Ipv4 container_ip) const;
  Status ConfigureInside(int netns_fd, Ipv4 address);

  NetworkSpec spec_;
  Ipv4Subnet subnet_;
  std::string veth_;
  bool attached_ = false;
};

// The bridge-level rules (NAT for egress and for 127.0.0.1, forwarding).
std::vector<IptablesRule> BridgeRules(const std::string& bridge, const Ipv4Subnet& subnet);

}  // namespace imgtool::runner
