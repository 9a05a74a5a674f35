// Network modes none and host, the parsing of -p and --net, the factory, and
// the child-side loopback setup. Bridge mode is in bridge_network.cc.
#include "runner/network.h"

#include <fcntl.h>
#include <sched.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "runner/bridge_network.h"
#include "runner/netlink.h"

namespace imgtool::runner {

namespace {

Result<uint16_t> ParsePort(std::string_view text, std::string_view spec) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value == 0 ||
      value > 65535) {
    return InvalidArgumentError(
        StrCat("-p ", spec, ": port \"", text, "\" is not a number in 1..65535"));
  }
  return static_cast<uint16_t>(value);
}

class NoneNetwork : public Network {
 public:
  bool NeedsOwnNetns() const override { return true; }
  Result<NetworkAttachment> Attach(int netns_fd) override {
    if (netns_fd >= 0) {
      IMGTOOL_ASSIGN_OR_RETURN(NetlinkSocket netlink, NetlinkSocket::OpenInNetns(netns_fd));
      IMGTOOL_TRY(netlink.SetLinkUp(1).Wrap("bring lo up"));  // lo is ifindex 1 in every netns
    }
    NetworkAttachment attachment;
    attachment.interface = "lo";
    return attachment;
  }
  Status Detach() override { return OkStatus(); }
};

class HostNetwork : public Network {
 public:
  bool NeedsOwnNetns() const override { return false; }
  Result<NetworkAttachment> Attach(int) override {
    NetworkAttachment attachment;
    HostDns dns = ReadHostDns(/*for_bridge=*/false);
    attachment.dns = std::move(dns.nameservers);
    attachment.dns_search = std::move(dns.search);
    return attachment;
  }
  Status Detach() override { return OkStatus(); }
};

}  // namespace

Result<NetworkMode> ParseNetworkMode(std::string_view text) {
  if (text == "none") return NetworkMode::kNone;
  if (text == "host") return NetworkMode::kHost;
  if (text == "bridge" || text == "default" || text.empty()) return NetworkMode::kBridge;
  return InvalidArgumentError(StrCat("--net \"", text, "\": expected none, host or bridge"));
}

Result<PortMapping> ParsePortMapping(std::string_view spec) {
  PortMapping mapping;
  std::string_view rest = spec;
  size_t slash = rest.rfind('/');
  if (slash != std::string_view::npos) {
    std::string_view protocol = rest.substr(slash + 1);
    if (protocol == "tcp") {
      mapping.protocol = PortMapping::Protocol::kTcp;
    } else if (protocol == "udp") {
      mapping.protocol = PortMapping::Protocol::kUdp;
    } else {
      return InvalidArgumentError(
          StrCat("-p ", spec, ": protocol \"", protocol, "\" is not tcp or udp"));
    }
    rest = rest.substr(0, slash);
  }
  if (!rest.empty() && rest.front() == '[') {
    return InvalidArgumentError(StrCat("-p ", spec, ": IPv6 host addresses are not supported"));
  }
  size_t last_colon = rest.rfind(':');
  if (last_colon == std::string_view::npos) {
    return InvalidArgumentError(
        StrCat("-p ", spec, ": expected [IP:]HOST:CONTAINER[/tcp|udp] (a host port is needed)"));
  }
  IMGTOOL_ASSIGN_OR_RETURN(mapping.container_port, ParsePort(rest.substr(last_colon + 1), spec));
  std::string_view front = rest.substr(0, last_colon);
  size_t ip_colon = front.rfind(':');
  std::string_view host_port = front;
  if (ip_colon != std::string_view::npos) {
    std::string_view ip = front.substr(0, ip_colon);
    host_port = front.substr(ip_colon + 1);
    if (!ip.empty()) {
      auto parsed = Ipv4::Parse(ip);
      if (!parsed) {
        return InvalidArgumentError(StrCat("-p ", spec, ": \"", ip, "\" is not an IPv4 address"));
      }
      if (parsed->value != 0) mapping.host_ip = parsed->ToString();
    }
  }
  if (host_port.find('-') != std::string_view::npos) {
    return InvalidArgumentError(StrCat("-p ", spec, ": port ranges are not supported"));
  }
  IMGTOOL_ASSIGN_OR_RETURN(mapping.host_port, ParsePort(host_port, spec));
  return mapping;
}

std::string PortMappingToString(const PortMapping& mapping) {
  std::string text;
  if (!mapping.host_ip.empty()) text = mapping.host_ip + ":";
  return StrCat(text, mapping.host_port, ":", mapping.container_port,
                mapping.protocol == PortMapping::Protocol::kUdp ? "/udp" : "/tcp");
}

Result<std::unique_ptr<Network>> NewNetwork(const NetworkSpec& spec) {
  switch (spec.mode) {
    case NetworkMode::kNone:
      if (!spec.ports.empty()) {
        return InvalidArgumentError("-p: publishing ports needs --net bridge, not --net none");
      }
      return std::unique_ptr<Network>(std::make_unique<NoneNetwork>());
    case NetworkMode::kHost:
      if (!spec.ports.empty()) {
        LogWarning("-p is ignored with --net host: the container uses the host's ports");
      }
      return std::unique_ptr<Network>(std::make_unique<HostNetwork>());
    case NetworkMode::kBridge: {
      IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<BridgeNetwork> bridge, BridgeNetwork::Create(spec));
      return std::unique_ptr<Network>(std::move(bridge));
    }
  }
  return InvalidArgumentError("unknown network mode");
}

Result<UniqueFd> OpenNetnsOfPid(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/ns/net";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoError("open " + path);
  return fd;
}

int BringUpLoopbackErrno() {
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return errno;
  ifreq request;
  std::memset(&request, 0, sizeof(request));
  std::memcpy(request.ifr_name, "lo", 3);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &request) != 0) return errno;
  if (request.ifr_flags & IFF_UP) return 0;
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &request) != 0) return errno;
  return 0;
}

Status BringUpLoopback() {
  int err = BringUpLoopbackErrno();
  if (err != 0) return ErrnoError("bring lo up", err);
  return OkStatus();
}

Result<UniqueFd> NewNetworkNamespaceFd(bool stay) {
  UniqueFd own;
  if (!stay) {
    own.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!own) return ErrnoError("open /proc/thread-self/ns/net");
  }
  // Only this thread moves (a network namespace is per thread), and only
  // until the setns back below.
  if (::unshare(CLONE_NEWNET) != 0) return ErrnoError("new network namespace");
  UniqueFd made(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  Error failure = InternalError("");
  bool failed = false;
  if (!made) {
    failure = ErrnoError("open the new network namespace");
    failed = true;
  } else if (int err = BringUpLoopbackErrno(); err != 0) {
    failure = ErrnoError("set the loopback interface up", err);
    failed = true;
  }
  if (!stay && ::setns(own.get(), CLONE_NEWNET) != 0) {
    // A thread left in the wrong network namespace must not go on.
    LogLine(LogLevel::kError, StrCat("return to the network namespace: ", std::strerror(errno)));
    std::abort();
  }
  if (failed) return failure;
  return made;
}

}  // namespace imgtool::runner
