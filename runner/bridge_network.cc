#include "runner/bridge_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <sstream>

#include "common/digest.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/scope_guard.h"

namespace imgtool::runner {

namespace {

using Clock = std::chrono::steady_clock;

double MillisSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::filesystem::path ReadyMarker(const std::filesystem::path& state_dir,
                                  const std::string& bridge) {
  return state_dir / (bridge + ".ready");
}

std::string ReadSysctl(const std::string& path) {
  auto text = ReadFileToString(path, 64);
  if (!text) return {};
  while (!text->empty() && text->back() == '\n') text->pop_back();
  return *text;
}

Status WriteSysctl(const std::string& path, std::string_view value) {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_WRONLY | O_TRUNC));
  return WriteAll(fd.get(), value).Wrap("write " + path);
}

void ParseResolvConf(std::string_view text, HostDns* dns) {
  std::istringstream lines{std::string(text)};
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (key == "nameserver") {
      std::string server;
      if (words >> server) dns->nameservers.push_back(server);
    } else if (key == "search" || key == "domain") {
      dns->search.clear();
      std::string domain;
      while (words >> domain) dns->search.push_back(domain);
    }
  }
}

bool IsLoopbackNameserver(const std::string& server) {
  return server.starts_with("127.") || server == "::1";
}

const char* ProtocolName(PortMapping::Protocol protocol) {
  return protocol == PortMapping::Protocol::kUdp ? "udp" : "tcp";
}

std::string Comment(const std::string& bridge, std::string_view what) {
  return StrCat("imgtool ", bridge, " ", what);
}

// Removes the rules of entries whose containers are gone; failures are logged,
// not fatal, as they must not stop a new container.
void RemoveRulesOf(const std::vector<IpamEntry>& entries) {
  for (const IpamEntry& entry : entries) {
    LogDebug("releasing stale network of container ", entry.container_id, " (", entry.ip.ToString(),
             ")");
    if (entry.rules.empty()) continue;
    Status removed = RemoveIptablesRules(entry.rules);
    if (!removed) {
      LogWarning("container ", entry.container_id,
                 ": remove port rules: ", removed.error().ToString());
    }
  }
}

}  // namespace

HostDns ReadHostDns(bool for_bridge) {
  HostDns dns;
  if (auto text = ReadFileToString("/etc/resolv.conf", 1 << 20)) ParseResolvConf(*text, &dns);
  if (!for_bridge) return dns;
  std::erase_if(dns.nameservers, IsLoopbackNameserver);
  if (dns.nameservers.empty()) {
    HostDns upstream;
    if (auto text = ReadFileToString("/run/systemd/resolve/resolv.conf", 1 << 20)) {
      ParseResolvConf(*text, &upstream);
    }
    std::erase_if(upstream.nameservers, IsLoopbackNameserver);
    dns.nameservers = std::move(upstream.nameservers);
  }
  if (dns.nameservers.empty()) dns.nameservers = {"8.8.8.8", "1.1.1.1"};
  return dns;
}

std::string VethNameFor(const std::string& container_id) {
  return "imgv" + Digest::Sha256Of(container_id).hex().substr(0, 11);
}

std::vector<IptablesRule> BridgeRules(const std::string& bridge, const Ipv4Subnet& subnet) {
  return {
      {"nat",
       {"-A", "POSTROUTING", "-s", subnet.ToString(), "!", "-o", bridge, "-m", "comment",
        "--comment", Comment(bridge, "egress"), "-j", "MASQUERADE"}},
      {"nat",
       {"-A", "POSTROUTING", "-s", "127.0.0.0/8", "-o", bridge, "-m", "comment", "--comment",
        Comment(bridge, "localhost ports"), "-j", "MASQUERADE"}},
      {"filter",
       {"-I", "FORWARD", "-i", bridge, "-m", "comment", "--comment", Comment(bridge, "out"), "-j",
        "ACCEPT"}},
      {"filter",
       {"-I", "FORWARD", "-o", bridge, "-m", "comment", "--comment", Comment(bridge, "in"), "-j",
        "ACCEPT"}},
  };
}

Result<std::unique_ptr<BridgeNetwork>> BridgeNetwork::Create(const NetworkSpec& spec) {
  NetworkSpec resolved = spec;
  if (resolved.bridge_name.empty()) resolved.bridge_name = std::string(kDefaultBridgeName);
  if (resolved.subnet.empty()) resolved.subnet = std::string(kDefaultSubnet);
  if (resolved.bridge_name.size() >= IFNAMSIZ ||
      resolved.bridge_name.find_first_of("/ \t\n:") != std::string::npos) {
    return InvalidArgumentError(
        StrCat("bridge name \"", resolved.bridge_name, "\": not a valid interface name"));
  }
  if (resolved.container_id.empty()) {
    return InvalidArgumentError("bridge network: the container id is empty");
  }
  if (resolved.state_dir.empty()) {
    return InvalidArgumentError("bridge network: no state dir for the IPAM");
  }
  IMGTOOL_ASSIGN_OR_RETURN(Ipv4Subnet subnet, Ipv4Subnet::Parse(resolved.subnet));
  for (const PortMapping& port : resolved.ports) {
    if (!port.host_ip.empty()) IMGTOOL_TRY(Ipv4::Parse(port.host_ip).Wrap("-p"));
  }
  return std::unique_ptr<BridgeNetwork>(new BridgeNetwork(std::move(resolved), subnet));
}

BridgeNetwork::BridgeNetwork(NetworkSpec spec, Ipv4Subnet subnet)
    : spec_(std::move(spec)), subnet_(subnet), veth_(VethNameFor(spec_.container_id)) {}

Result<int> BridgeNetwork::EnsureBridge(NetlinkSocket& netlink) {
  const std::string& bridge = spec_.bridge_name;
  Result<int> index = netlink.LinkIndex(bridge);
  if (!index && index.error().code() == ErrorCode::kNotFound) {
    Status created = netlink.CreateBridge(bridge);
    if (!created && created.error().code() != ErrorCode::kAlreadyExists) {
      return std::move(created).error();
    }
    index = netlink.LinkIndex(bridge);
  }
  if (!index) return std::move(index).error();
  // Cheap and idempotent, so done every time: survives someone flushing it.
  IMGTOOL_TRY(netlink.AddAddress(*index, subnet_.Gateway(), subnet_.prefix_length));

  if (ReadSysctl("/proc/sys/net/ipv4/ip_forward") != "1") {
    LogInfo("enabling net.ipv4.ip_forward for container egress on ", bridge);
    IMGTOOL_TRY(WriteSysctl("/proc/sys/net/ipv4/ip_forward", "1"));
  }
  // The rules and route_localnet stay with the bridge; a marker naming its
  // ifindex spares each run the iptables checks until the bridge is remade.
  std::string marker = StrCat(*index, " ", subnet_.ToString(), "\n");
  std::filesystem::path marker_path = ReadyMarker(spec_.state_dir, bridge);
  auto current = ReadFileToString(marker_path, 256);
  if (current && *current == marker) return *index;

  IMGTOOL_TRY(WriteSysctl(StrCat("/proc/sys/net/ipv4/conf/", bridge, "/route_localnet"), "1"));
  IMGTOOL_TRY(EnsureBridgeRules());
  IMGTOOL_TRY(WriteFileAtomic(marker_path, marker));
  return *index;
}

Status BridgeNetwork::EnsureBridgeRules() {
  std::vector<IptablesRule> missing;
  for (IptablesRule& rule : BridgeRules(spec_.bridge_name, subnet_)) {
    IMGTOOL_ASSIGN_OR_RETURN(bool present, IptablesRuleExists(rule));
    if (!present) missing.push_back(std::move(rule));
  }
  return ApplyIptablesRules(missing).Wrap(StrCat("NAT rules for bridge ", spec_.bridge_name));
}

Status BridgeNetwork::CheckPortsFree(const Ipam& ipam) const {
  for (size_t i = 0; i < spec_.ports.size(); ++i) {
    const PortMapping& port = spec_.ports[i];
    for (size_t j = 0; j < i; ++j) {
      const PortMapping& other = spec_.ports[j];
      if (other.host_port == port.host_port && other.protocol == port.protocol) {
        return InvalidArgumentError(
            StrCat("-p ", PortMappingToString(port), ": host port given twice"));
      }
    }
    if (const IpamEntry* owner = ipam.FindPortOwner(port)) {
      return AlreadyExistsError(StrCat("-p ", PortMappingToString(port), ": host port ",
                                       port.host_port, "/", ProtocolName(port.protocol),
                                       " is already published by container ", owner->container_id));
    }
    // A host process listening there would be shadowed by the DNAT rule.
    bool udp = port.protocol == PortMapping::Protocol::kUdp;
    UniqueFd probe(::socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0));
    if (!probe) return ErrnoError("socket");
    int one = 1;
    (void)::setsockopt(probe.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port.host_port);
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    if (!port.host_ip.empty()) address.sin_addr = Ipv4::Parse(port.host_ip)->ToInAddr();
    if (::bind(probe.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      if (errno == EADDRINUSE) {
        return AlreadyExistsError(StrCat("-p ", PortMappingToString(port), ": host port ",
                                         port.host_port, "/", ProtocolName(port.protocol),
                                         " is in use by a process on the host"));
      }
      if (errno != EADDRNOTAVAIL) {
        return ErrnoError(StrCat("-p ", PortMappingToString(port), ": probe host port"));
      }
    }
  }
  return OkStatus();
}

std::vector<IptablesRule> BridgeNetwork::PortRules(Ipv4 container_ip) const {
  std::vector<IptablesRule> rules;
  for (const PortMapping& port : spec_.ports) {
    std::vector<std::string> match;
    if (port.host_ip.empty()) {
      match = {"-m", "addrtype", "--dst-type", "LOCAL"};
    } else {
      match = {"-d", port.host_ip + "/32"};
    }
    const char* protocol = ProtocolName(port.protocol);
    for (const char* chain : {"PREROUTING", "OUTPUT"}) {
      // Inserted first so that a catch-all rule of another tool cannot shadow it.
      std::vector<std::string> args = {"-I", chain};
      args.insert(args.end(), match.begin(), match.end());
      std::vector<std::string> tail = {"-p",
                                       protocol,
                                       "-m",
                                       protocol,
                                       "--dport",
                                       std::to_string(port.host_port),
                                       "-m",
                                       "comment",
                                       "--comment",
                                       Comment(spec_.bridge_name, spec_.container_id),
                                       "-j",
                                       "DNAT",
                                       "--to-destination",
                                       StrCat(container_ip.ToString(), ":", port.container_port)};
      args.insert(args.end(), tail.begin(), tail.end());
      rules.push_back({"nat", std::move(args)});
    }
  }
  return rules;
}

Status BridgeNetwork::ConfigureInside(int netns_fd, Ipv4 address) {
  IMGTOOL_ASSIGN_OR_RETURN(NetlinkSocket inside, NetlinkSocket::OpenInNetns(netns_fd));
  IMGTOOL_TRY(inside.SetLinkUp(1).Wrap("bring lo up"));  // lo is ifindex 1 in every netns
  IMGTOOL_ASSIGN_OR_RETURN(int eth0, inside.LinkIndex("eth0"));
  IMGTOOL_TRY(inside.SetLinkUp(eth0).Wrap("bring eth0 up"));
  IMGTOOL_TRY(inside.AddAddress(eth0, address, subnet_.prefix_length));
  IMGTOOL_TRY(inside.AddDefaultRoute(subnet_.Gateway(), eth0));
  return OkStatus();
}

Result<NetworkAttachment> BridgeNetwork::Attach(int netns_fd) {
  if (attached_) return FailedPreconditionError("network already attached");
  const std::string what = StrCat("network of container ", spec_.container_id);
  Clock::time_point start = Clock::now();
  IMGTOOL_ASSIGN_OR_RETURN(NetlinkSocket netlink, NetlinkSocket::Open().Wrap(what));

  Ipv4 address;
  std::vector<IptablesRule> rules;
  bool veth_created = false;
  double locked_ms = 0, veth_ms = 0;
  {
    IMGTOOL_ASSIGN_OR_RETURN(Ipam ipam,
                             Ipam::Open(spec_.state_dir, spec_.bridge_name, subnet_).Wrap(what));
    RemoveRulesOf(ipam.TakeStale());
    IMGTOOL_ASSIGN_OR_RETURN(int bridge_index, EnsureBridge(netlink).Wrap(what));
    IMGTOOL_TRY(CheckPortsFree(ipam).Wrap(what));

    IpamEntry entry;
    entry.container_id = spec_.container_id;
    entry.veth = veth_;
    entry.owner_pid = ::getpid();
    entry.owner_start_time = ProcessStartTime(entry.owner_pid);
    entry.ports = spec_.ports;
    IMGTOOL_ASSIGN_OR_RETURN(address, ipam.Allocate(entry).Wrap(what));
    rules = PortRules(address);
    entry.ip = address;
    entry.rules = rules;
    IMGTOOL_TRY(ipam.Update(entry));
    // Recorded before the rules and veth exist, so a crash from here on
    // leaves an entry through which the next run removes them.
    IMGTOOL_TRY(ipam.Save().Wrap(what));

    auto undo = ScopeGuard([&] {
      if (!rules.empty()) (void)RemoveIptablesRules(rules);
      if (veth_created) {
        if (auto index = netlink.LinkIndex(veth_)) (void)netlink.DeleteLink(*index);
      }
      (void)ipam.Release(spec_.container_id);
      (void)ipam.Save();
    });
    IMGTOOL_TRY(ApplyIptablesRules(rules).Wrap(StrCat(what, ": publish ports")));
    locked_ms = MillisSince(start);
    IMGTOOL_TRY(netlink.CreateVethPair(veth_, bridge_index, "eth0", netns_fd).Wrap(what));
    veth_created = true;
    veth_ms = MillisSince(start);
    Status inside = ConfigureInside(netns_fd, address);
    if (!inside) return std::move(inside).error().Wrap(StrCat(what, ": inside the container"));
    undo.Cancel();
  }
  attached_ = true;
  LogDebug("bridge ", spec_.bridge_name, ": container ", spec_.container_id, " has ",
           address.ToString(), " via ", veth_, " in ", MillisSince(start), " ms (state and rules ",
           locked_ms, ", veth ", veth_ms - locked_ms, ", inside ", MillisSince(start) - veth_ms,
           ")");

  NetworkAttachment attachment;
  attachment.ip = address.ToString();
  attachment.prefix_length = subnet_.prefix_length;
  attachment.gateway = subnet_.Gateway().ToString();
  attachment.interface = "eth0";
  attachment.host_interface = veth_;
  HostDns dns = ReadHostDns(/*for_bridge=*/true);
  attachment.dns = std::move(dns.nameservers);
  attachment.dns_search = std::move(dns.search);
  return attachment;
}

Status BridgeNetwork::Detach() {
  if (!attached_) return OkStatus();
  const std::string what = StrCat("detach network of container ", spec_.container_id);
  // The veth is left to the kernel, which removes it with the container's
  // netns; deleting it here would cost ~30 ms on every run.
  std::optional<IpamEntry> entry;
  {
    IMGTOOL_ASSIGN_OR_RETURN(Ipam ipam,
                             Ipam::Open(spec_.state_dir, spec_.bridge_name, subnet_).Wrap(what));
    entry = ipam.Release(spec_.container_id);
    IMGTOOL_TRY(ipam.Save().Wrap(what));
  }
  attached_ = false;
  if (entry && !entry->rules.empty()) {
    IMGTOOL_TRY(RemoveIptablesRules(entry->rules).Wrap(what));
  }
  return OkStatus();
}

Status CleanupStaleNetworks(const std::filesystem::path& state_dir,
                            const std::function<bool(std::string_view id)>& is_live) {
  std::error_code ec;
  std::filesystem::directory_iterator it(state_dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return OkStatus();
    return Error(ErrorCodeFromErrno(ec.value()), "list " + state_dir.string(), ec.value());
  }
  for (const auto& file : it) {
    std::string name = file.path().filename().string();
    constexpr std::string_view kSuffix = ".ipam.json";
    if (!name.ends_with(kSuffix)) continue;
    std::string bridge = name.substr(0, name.size() - kSuffix.size());
    // The subnet in the file is the one to keep.
    auto subnet = ReadIpamSubnet(file.path()).Wrap("clean up stale networks");
    if (!subnet) return std::move(subnet).error();
    IMGTOOL_ASSIGN_OR_RETURN(Ipam ipam, Ipam::Open(state_dir, bridge, *subnet));
    std::vector<IpamEntry> gone = ipam.TakeIf(is_live);
    std::vector<IpamEntry> stale = ipam.TakeStale();
    gone.insert(gone.end(), stale.begin(), stale.end());
    if (gone.empty()) continue;
    IMGTOOL_TRY(ipam.Save());
    RemoveRulesOf(gone);
  }
  return OkStatus();
}

Status RemoveBridgeNetwork(const std::string& bridge_name, const std::string& subnet_text,
                           const std::filesystem::path& state_dir) {
  IMGTOOL_ASSIGN_OR_RETURN(Ipv4Subnet subnet, Ipv4Subnet::Parse(subnet_text));
  IMGTOOL_ASSIGN_OR_RETURN(Ipam ipam, Ipam::Open(state_dir, bridge_name, subnet));
  std::vector<IpamEntry> all = ipam.TakeIf([](std::string_view) { return false; });
  RemoveRulesOf(all);
  IMGTOOL_TRY(RemoveIptablesRules(BridgeRules(bridge_name, subnet)));
  IMGTOOL_ASSIGN_OR_RETURN(NetlinkSocket netlink, NetlinkSocket::Open());
  if (auto index = netlink.LinkIndex(bridge_name)) {
    IMGTOOL_TRY(netlink.DeleteLink(*index).Wrap("remove bridge " + bridge_name));
  }
  std::error_code ec;
  std::filesystem::remove(ReadyMarker(state_dir, bridge_name), ec);
  std::filesystem::remove(state_dir / (bridge_name + ".ipam.json"), ec);
  return OkStatus();
}

}  // namespace imgtool::runner
