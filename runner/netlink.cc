#include "runner/netlink.h"

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sched.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "common/digest.h"
#include "common/log.h"

namespace imgtool::runner {

namespace {

// Builds one netlink message: a header, a fixed family struct, then attributes
// (nested ones through Begin/End). Offsets, not pointers, as the buffer grows.
class MessageBuilder {
 public:
  MessageBuilder(uint16_t type, uint16_t flags) {
    Grow(NLMSG_HDRLEN);
    auto* header = reinterpret_cast<nlmsghdr*>(buffer_.data());
    header->nlmsg_type = type;
    header->nlmsg_flags = static_cast<uint16_t>(flags | NLM_F_REQUEST | NLM_F_ACK);
  }

  template <typename T>
  void Struct(const T& value) {
    size_t offset = Grow(NLMSG_ALIGN(sizeof(T)));
    std::memcpy(buffer_.data() + offset, &value, sizeof(T));
  }

  void Attr(uint16_t type, const void* data, size_t size) {
    size_t offset = Grow(RTA_ALIGN(RTA_LENGTH(size)));
    auto* attr = reinterpret_cast<rtattr*>(buffer_.data() + offset);
    attr->rta_type = type;
    attr->rta_len = static_cast<uint16_t>(RTA_LENGTH(size));
    if (size > 0) std::memcpy(RTA_DATA(attr), data, size);
  }
  void AttrString(uint16_t type, std::string_view text) {
    std::string copy(text);
    Attr(type, copy.c_str(), copy.size() + 1);
  }
  void AttrU32(uint16_t type, uint32_t value) { Attr(type, &value, sizeof(value)); }
  void AttrIpv4(uint16_t type, Ipv4 address) {
    in_addr raw = address.ToInAddr();
    Attr(type, &raw, sizeof(raw));
  }

  // Starts a nested attribute; returns the offset to pass to End().
  size_t Begin(uint16_t type) {
    size_t offset = Grow(RTA_LENGTH(0));
    reinterpret_cast<rtattr*>(buffer_.data() + offset)->rta_type = type;
    return offset;
  }
  void End(size_t offset) {
    reinterpret_cast<rtattr*>(buffer_.data() + offset)->rta_len =
        static_cast<uint16_t>(buffer_.size() - offset);
  }

  std::vector<char>& Finish() {
    reinterpret_cast<nlmsghdr*>(buffer_.data())->nlmsg_len = static_cast<uint32_t>(buffer_.size());
    return buffer_;
  }

 private:
  size_t Grow(size_t size) {
    size_t offset = buffer_.size();
    buffer_.resize(offset + size, 0);
    return offset;
  }

  std::vector<char> buffer_;
};

ifinfomsg LinkHeader(int ifindex = 0, unsigned flags = 0) {
  ifinfomsg info{};
  info.ifi_family = AF_UNSPEC;
  info.ifi_index = ifindex;
  info.ifi_flags = flags;
  info.ifi_change = flags;
  return info;
}

Result<UniqueFd> OpenRouteSocket() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return ErrnoError("open netlink socket");
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    return ErrnoError("bind netlink socket");
  }
  // Acks for failed requests carry only the header back, not the request.
  int one = 1;
  (void)::setsockopt(fd.get(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  (void)::setsockopt(fd.get(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  return fd;
}

// The kernel's own words for a failed request (NLMSGERR_ATTR_MSG), if sent.
std::string ExtendedAckMessage(const nlmsghdr* header) {
  if (!(header->nlmsg_flags & NLM_F_ACK_TLVS)) return {};
  // With NETLINK_CAP_ACK only the request's header is echoed before the TLVs.
  size_t offset = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nlmsgerr));
  if (header->nlmsg_flags & NLM_F_CAPPED) {
    offset = NLMSG_HDRLEN + sizeof(nlmsgerr);
  } else {
    auto* error = static_cast<const nlmsgerr*>(NLMSG_DATA(header));
    offset = NLMSG_HDRLEN + sizeof(nlmsgerr) - sizeof(nlmsghdr) + error->msg.nlmsg_len;
  }
  offset = NLMSG_ALIGN(offset);
  if (offset >= header->nlmsg_len) return {};
  int remaining = static_cast<int>(header->nlmsg_len - offset);
  for (auto* attr = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(header) + offset);
       RTA_OK(attr, remaining); attr = RTA_NEXT(attr, remaining)) {
    if (attr->rta_type == NLMSGERR_ATTR_MSG && RTA_PAYLOAD(attr) > 1) {
      return std::string(static_cast<const char*>(RTA_DATA(attr)), RTA_PAYLOAD(attr) - 1);
    }
  }
  return {};
}

}  // namespace

Result<Ipv4> Ipv4::Parse(std::string_view text) {
  in_addr raw{};
  std::string copy(text);
  if (::inet_pton(AF_INET, copy.c_str(), &raw) != 1) {
    return InvalidArgumentError(StrCat("\"", text, "\": not an IPv4 address"));
  }
  return Ipv4{ntohl(raw.s_addr)};
}

std::string Ipv4::ToString() const {
  char text[INET_ADDRSTRLEN];
  in_addr raw = ToInAddr();
  ::inet_ntop(AF_INET, &raw, text, sizeof(text));
  return text;
}

in_addr Ipv4::ToInAddr() const {
  in_addr raw{};
  raw.s_addr = htonl(value);
  return raw;
}

Result<NetlinkSocket> NetlinkSocket::Open() {
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, OpenRouteSocket());
  return NetlinkSocket(std::move(fd));
}

Result<NetlinkSocket> NetlinkSocket::OpenInNetns(int netns_fd) {
  Result<UniqueFd> fd = InternalError("netns thread did not run");
  std::thread worker([&] {
    // Only this thread changes netns, and it ends right after.
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      fd = ErrnoError("enter the container's network namespace");
      return;
    }
    fd = OpenRouteSocket();
  });
  worker.join();
  if (!fd) return std::move(fd).error();
  return NetlinkSocket(std::move(fd).value());
}

Status NetlinkSocket::Transact(std::vector<char>& message, std::string_view what) {
  auto* header = reinterpret_cast<nlmsghdr*>(message.data());
  header->nlmsg_seq = ++seq_;
  ssize_t sent;
  do {
    sent = ::send(fd_.get(), message.data(), message.size(), 0);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return ErrnoError(StrCat(what, ": netlink send"));

  alignas(nlmsghdr) char reply[8192];
  while (true) {
    ssize_t n = ::recv(fd_.get(), reply, sizeof(reply), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(StrCat(what, ": netlink receive"));
    }
    int remaining = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(reply); NLMSG_OK(h, remaining);
         h = NLMSG_NEXT(h, remaining)) {
      if (h->nlmsg_seq != seq_) continue;  // a late answer to an earlier request
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* error = static_cast<nlmsgerr*>(NLMSG_DATA(h));
        if (error->error == 0) return OkStatus();
        std::string detail = ExtendedAckMessage(h);
        return ErrnoError(detail.empty() ? std::string(what) : StrCat(what, " (", detail, ")"),
                          -error->error);
      }
    }
  }
}

Result<int> NetlinkSocket::LinkIndex(std::string_view name) {
  MessageBuilder builder(RTM_GETLINK, 0);
  builder.Struct(LinkHeader());
  builder.AttrString(IFLA_IFNAME, name);
  std::vector<char>& message = builder.Finish();
  auto* header = reinterpret_cast<nlmsghdr*>(message.data());
  header->nlmsg_seq = ++seq_;
  if (::send(fd_.get(), message.data(), message.size(), 0) < 0) {
    return ErrnoError(StrCat("look up link ", name, ": netlink send"));
  }
  alignas(nlmsghdr) char reply[16384];
  int index = 0;
  while (true) {
    ssize_t n = ::recv(fd_.get(), reply, sizeof(reply), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(StrCat("look up link ", name, ": netlink receive"));
    }
    int remaining = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(reply); NLMSG_OK(h, remaining);
         h = NLMSG_NEXT(h, remaining)) {
      if (h->nlmsg_seq != seq_) continue;
      if (h->nlmsg_type == RTM_NEWLINK) {
        index = static_cast<ifinfomsg*>(NLMSG_DATA(h))->ifi_index;
      } else if (h->nlmsg_type == NLMSG_ERROR) {
        int err = -static_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
        if (err == 0) return index;
        if (err == ENODEV) return NotFoundError(StrCat("link ", name, ": no such device"));
        return ErrnoError(StrCat("look up link ", name), err);
      }
    }
  }
}

Status NetlinkSocket::CreateBridge(std::string_view name) {
  MessageBuilder builder(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  builder.Struct(LinkHeader(0, IFF_UP));
  builder.AttrString(IFLA_IFNAME, name);
  // A bridge without a MAC of its own takes its lowest port's, so it changes
  // as containers come and go and stale ARP entries for the gateway cut off
  // running containers. A fixed, locally administered one (from the name)
  // keeps it stable.
  std::string hex = Digest::Sha256Of(name).hex();
  unsigned char mac[6] = {0x02};
  for (int i = 1; i < 6; ++i) {
    mac[i] = static_cast<unsigned char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  builder.Attr(IFLA_ADDRESS, mac, sizeof(mac));
  size_t link_info = builder.Begin(IFLA_LINKINFO);
  builder.AttrString(IFLA_INFO_KIND, "bridge");
  builder.End(link_info);
  return Transact(builder.Finish(), StrCat("create bridge ", name));
}

Status NetlinkSocket::CreateVethPair(std::string_view host_name, int master_ifindex,
                                     std::string_view peer_name, int peer_netns_fd) {
  MessageBuilder builder(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  builder.Struct(LinkHeader(0, IFF_UP));
  builder.AttrString(IFLA_IFNAME, host_name);
  if (master_ifindex > 0) builder.AttrU32(IFLA_MASTER, static_cast<uint32_t>(master_ifindex));
  size_t link_info = builder.Begin(IFLA_LINKINFO);
  builder.AttrString(IFLA_INFO_KIND, "veth");
  size_t info_data = builder.Begin(IFLA_INFO_DATA);
  size_t peer = builder.Begin(VETH_INFO_PEER);
  // The peer's attributes follow its own ifinfomsg inside VETH_INFO_PEER.
  builder.Struct(LinkHeader());
  builder.AttrString(IFLA_IFNAME, peer_name);
  builder.AttrU32(IFLA_NET_NS_FD, static_cast<uint32_t>(peer_netns_fd));
  builder.End(peer);
  builder.End(info_data);
  builder.End(link_info);
  return Transact(builder.Finish(), StrCat("create veth ", host_name, " with peer ", peer_name));
}

Status NetlinkSocket::SetLinkUp(int ifindex) {
  MessageBuilder builder(RTM_NEWLINK, 0);
  builder.Struct(LinkHeader(ifindex, IFF_UP));
  return Transact(builder.Finish(), StrCat("set link ", ifindex, " up"));
}

Status NetlinkSocket::AddAddress(int ifindex, Ipv4 address, int prefix_length) {
  MessageBuilder builder(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  ifaddrmsg info{};
  info.ifa_family = AF_INET;
  info.ifa_prefixlen = static_cast<unsigned char>(prefix_length);
  info.ifa_index = static_cast<unsigned>(ifindex);
  builder.Struct(info);
  builder.AttrIpv4(IFA_LOCAL, address);
  builder.AttrIpv4(IFA_ADDRESS, address);
  if (prefix_length < 31) {
    uint32_t host_mask = prefix_length == 0 ? ~0u : (1u << (32 - prefix_length)) - 1;
    builder.AttrIpv4(IFA_BROADCAST, Ipv4{address.value | host_mask});
  }
  Status status = Transact(builder.Finish(), StrCat("add address ", address.ToString(), "/",
                                                    prefix_length, " to link ", ifindex));
  if (!status && status.error().sys_errno() == EEXIST) return OkStatus();
  return status;
}

Status NetlinkSocket::AddDefaultRoute(Ipv4 gateway, int ifindex) {
  MessageBuilder builder(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  rtmsg route{};
  route.rtm_family = AF_INET;
  route.rtm_table = RT_TABLE_MAIN;
  route.rtm_protocol = RTPROT_BOOT;
  route.rtm_scope = RT_SCOPE_UNIVERSE;
  route.rtm_type = RTN_UNICAST;
  builder.Struct(route);
  builder.AttrIpv4(RTA_GATEWAY, gateway);
  builder.AttrU32(RTA_OIF, static_cast<uint32_t>(ifindex));
  return Transact(builder.Finish(), StrCat("add default route via ", gateway.ToString()));
}

Status NetlinkSocket::DeleteLink(int ifindex) {
  MessageBuilder builder(RTM_DELLINK, 0);
  builder.Struct(LinkHeader(ifindex));
  Status status = Transact(builder.Finish(), StrCat("delete link ", ifindex));
  if (!status && status.error().sys_errno() == ENODEV) {
    return NotFoundError(StrCat("delete link ", ifindex, ": no such device"));
  }
  return status;
}

}  // namespace imgtool::runner
