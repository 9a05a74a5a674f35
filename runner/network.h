// Container networking, parent side: `--net none`, `--net host`, and
// `--net bridge` (a veth pair per container on the bridge imgtool0, an address
// from a file-based IPAM, NAT for egress, published ports). The child side is
// only BringUpLoopback().
//
// Sequence for the runner core: NewNetwork(spec) -> clone the child with
// CLONE_NEWNET (unless NeedsOwnNetns() is false) -> the child waits -> parent
// calls Attach(netns fd of the child) -> writes /etc/hosts and resolv.conf from
// the attachment -> lets the child go on -> after the container ends (and is
// reaped), Detach(). Detach must be called on every path after a successful
// Attach; Attach undoes its own partial work when it fails.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace imgtool::runner {

enum class NetworkMode { kNone, kHost, kBridge };

// "none", "host", "bridge" (docker/podman spellings "default" = bridge too).
Result<NetworkMode> ParseNetworkMode(std::string_view text);

struct PortMapping {
  enum class Protocol { kTcp, kUdp };
  std::string host_ip;  // empty: every local address, 127.0.0.1 included
  uint16_t host_port = 0;
  uint16_t container_port = 0;
  Protocol protocol = Protocol::kTcp;
};

// `-p [IP:]HOST:CTR[/tcp|udp]`. HOST and CTR are 1..65535.
Result<PortMapping> ParsePortMapping(std::string_view spec);
std::string PortMappingToString(const PortMapping& mapping);

// Defaults chosen to be unlikely to clash with LANs, docker (172.17/16) and
// podman (10.88/16).
inline constexpr std::string_view kDefaultBridgeName = "imgtool0";
inline constexpr std::string_view kDefaultSubnet = "10.89.0.0/24";
// Where bridge state belongs: host-wide, because the bridge is (two store
// roots with their own IPAM files would hand out the same addresses on one
// bridge), and boot-scoped like the bridge and the containers, so a tmpfs:
// a save there costs ~0.05 ms, against ~1 ms or more on ext4, which flushes
// data when a file is renamed over another.
inline constexpr std::string_view kDefaultNetworkStateDir = "/run/imgtool/network";

struct NetworkSpec {
  NetworkMode mode = NetworkMode::kBridge;
  std::string container_id;  // unique; names the veth and the IPAM entry
  std::string hostname;
  std::vector<PortMapping> ports;  // bridge mode only
  // Bridge mode: the bridge and its IPv4 subnet (the bridge takes the first
  // host address, containers the others). Empty: the defaults above.
  std::string bridge_name;
  std::string subnet;
  // Bridge mode: where the IPAM file and the lock live, shared by every
  // imgtool process using this bridge: kDefaultNetworkStateDir unless a test
  // wants its own.
  std::filesystem::path state_dir;
};

struct NetworkAttachment {
  std::string ip;                       // container's IPv4 address, empty for none/host
  int prefix_length = 0;                // of the subnet
  std::string gateway;                  // bridge address, the container's default route
  std::string interface;                // name inside the container ("eth0")
  std::string host_interface;           // the host end of the veth
  std::vector<std::string> dns;         // nameservers for the container's resolv.conf
  std::vector<std::string> dns_search;  // the host's search domains
};

class Network {
 public:
  virtual ~Network() = default;
  // False for host mode: the container shares the host's netns.
  virtual bool NeedsOwnNetns() const = 0;
  // Configures the container's netns (an fd on /proc/<pid>/ns/net of the
  // waiting child). For none mode this brings lo up, so the child need not;
  // pass -1 there when the child calls BringUpLoopback() itself (cheaper: no
  // thread has to enter the netns). Host mode ignores the fd.
  virtual Result<NetworkAttachment> Attach(int netns_fd) = 0;
  // Undoes Attach: port rules, IPAM entry. The veth goes with the netns (the
  // kernel removes both ends when the container's netns dies), so Detach does
  // not pay for deleting it. Idempotent.
  virtual Status Detach() = 0;
};

Result<std::unique_ptr<Network>> NewNetwork(const NetworkSpec& spec);

// Opens /proc/<pid>/ns/net.
Result<UniqueFd> OpenNetnsOfPid(pid_t pid);

// Child side, inside the new netns: sets lo up. Allocation-free on success and
// safe in a child after clone; BringUpLoopbackErrno returns 0 or an errno.
int BringUpLoopbackErrno();
Status BringUpLoopback();

// A new network namespace with lo up, held only by the returned fd, for a
// container to join (setns) instead of making its own at clone: made ahead,
// off the container's start. The calling thread is back in its own
// namespace on return, unless `stay`: a thread that ends right after (the
// early start's) is left in the new one, which saves it the way back. The
// namespace belongs to the caller's user namespace.
Result<UniqueFd> NewNetworkNamespaceFd(bool stay = false);

// After a crash of imgtool: releases IPAM entries and port rules of containers
// for which `is_live(id)` is false. Bridge and NAT rules stay (shared).
Status CleanupStaleNetworks(const std::filesystem::path& state_dir,
                            const std::function<bool(std::string_view id)>& is_live);

// Removes the bridge, its NAT/forward rules and the IPAM state: `imgtool
// system reset` and tests. Containers still attached lose their network.
Status RemoveBridgeNetwork(const std::string& bridge_name, const std::string& subnet,
                           const std::filesystem::path& state_dir);

}  // namespace imgtool::runner
