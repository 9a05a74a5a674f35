// A small rtnetlink client: just what container networking needs (bridge,
// veth pair with the peer created straight inside the container's netns,
// IPv4 addresses, links up, default route). No `ip` subprocess.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace imgtool::runner {

// An IPv4 address in host byte order, so that arithmetic on it is plain.
struct Ipv4 {
  uint32_t value = 0;

  static Result<Ipv4> Parse(std::string_view text);
  std::string ToString() const;
  in_addr ToInAddr() const;
  friend bool operator==(Ipv4, Ipv4) = default;
  friend auto operator<=>(Ipv4, Ipv4) = default;
};

class NetlinkSocket {
 public:
  // A NETLINK_ROUTE socket in the caller's netns.
  static Result<NetlinkSocket> Open();
  // A socket bound to another netns: a short-lived thread enters the netns and
  // opens it there (a socket keeps the netns it was made in), so the caller's
  // threads never change namespace.
  static Result<NetlinkSocket> OpenInNetns(int netns_fd);

  NetlinkSocket(NetlinkSocket&&) noexcept = default;
  NetlinkSocket& operator=(NetlinkSocket&&) noexcept = default;

  // The ifindex of `name`; NotFound when there is none.
  Result<int> LinkIndex(std::string_view name);
  // A bridge, up. AlreadyExists when `name` exists.
  Status CreateBridge(std::string_view name);
  // A veth pair: `host_name` here, up and enslaved to `master_ifindex` (0 for
  // none); `peer_name` made directly in the netns of `peer_netns_fd`, still
  // down (the kernel refuses to bring a peer up in the creating request; do it
  // through a socket in that netns). One request: no later move of the peer
  // between namespaces, which costs the kernel ~28 ms.
  Status CreateVethPair(std::string_view host_name, int master_ifindex, std::string_view peer_name,
                        int peer_netns_fd);
  Status SetLinkUp(int ifindex);
  // Adds addr/prefix (with its broadcast); an address already there is fine.
  Status AddAddress(int ifindex, Ipv4 address, int prefix_length);
  Status AddDefaultRoute(Ipv4 gateway, int ifindex);
  // NotFound when the link is already gone.
  Status DeleteLink(int ifindex);

 private:
  explicit NetlinkSocket(UniqueFd fd) : fd_(std::move(fd)) {}
  // Sends one request with NLM_F_ACK and waits for its ack; the error carries
  // the kernel's errno and `what`.
  Status Transact(std::vector<char>& message, std::string_view what);

  UniqueFd fd_;
  uint32_t seq_ = 0;
};

}  // namespace imgtool::runner
