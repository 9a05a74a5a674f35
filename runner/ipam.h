// IPv4 address management for one bridge: a JSON file in a state dir shared by
// every imgtool process, read and rewritten under an exclusive flock. An entry
// is stale (reclaimed by the next allocation) when its container's veth is gone
// and the process that made it is dead: the kernel removes the veth with the
// container's netns, so this holds after crashes too.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/file_lock.h"
#include "runner/iptables.h"
#include "runner/netlink.h"
#include "runner/network.h"

namespace imgtool::runner {

struct Ipv4Subnet {
  Ipv4 network;
  int prefix_length = 0;

  // "10.89.0.0/24"; host bits must be zero, prefix 8..30.
  static Result<Ipv4Subnet> Parse(std::string_view cidr);
  std::string ToString() const;
  uint32_t Mask() const;
  Ipv4 Gateway() const { return Ipv4{network.value + 1}; }    // the bridge's address
  Ipv4 FirstHost() const { return Ipv4{network.value + 2}; }  // first container address
  Ipv4 LastHost() const { return Ipv4{(network.value | ~Mask()) - 1}; }
  bool Contains(Ipv4 address) const { return (address.value & Mask()) == network.value; }
};

struct IpamEntry {
  std::string container_id;
  Ipv4 ip;
  std::string veth;  // host end; its existence means the container's netns lives
  pid_t owner_pid = 0;
  uint64_t owner_start_time = 0;  // /proc/<pid>/stat field 22, against pid reuse
  std::vector<PortMapping> ports;
  std::vector<IptablesRule> rules;  // to remove when the entry goes
};

// How the IPAM tells whether a container is gone; tests replace them.
struct IpamProbes {
  std::function<bool(const std::string& veth)> link_exists;
  std::function<bool(pid_t pid, uint64_t start_time)> process_alive;
};
IpamProbes DefaultIpamProbes();

// The start time of `pid` (clock ticks since boot), or 0 when it is gone.
uint64_t ProcessStartTime(pid_t pid);

// The subnet recorded in an IPAM state file.
Result<Ipv4Subnet> ReadIpamSubnet(const std::filesystem::path& file);

class Ipam {
 public:
  // Locks <state_dir>/<bridge>.lock (blocking) and loads <bridge>.ipam.json.
  // A state file for another subnet with live entries is FailedPrecondition.
  static Result<Ipam> Open(const std::filesystem::path& state_dir, std::string_view bridge,
                           const Ipv4Subnet& subnet, IpamProbes probes = DefaultIpamProbes());

  Ipam(Ipam&&) noexcept = default;
  Ipam& operator=(Ipam&&) noexcept = default;

  // Removes and returns the entries whose containers are gone (their rules are
  // the caller's to remove).
  std::vector<IpamEntry> TakeStale();
  // Removes and returns the entries of containers for which `is_live` is false.
  std::vector<IpamEntry> TakeIf(const std::function<bool(std::string_view id)>& is_live);
  // Gives `entry` the next free address after the last one handed out (so a
  // released address is reused as late as possible) and records it.
  // AlreadyExists when the container has one; Unavailable when the subnet is full.
  Result<Ipv4> Allocate(IpamEntry entry);
  // Updates a recorded entry (e.g. its rules).
  Status Update(const IpamEntry& entry);
  // Forgets the container's entry and returns it. Its address stays out of use
  // while its veth still exists (the kernel tears a netns down asynchronously).
  std::optional<IpamEntry> Release(const std::string& container_id);
  const IpamEntry* Find(const std::string& container_id) const;
  // The entry holding `mapping`'s host port and protocol, if any.
  const IpamEntry* FindPortOwner(const PortMapping& mapping) const;

  const std::map<std::string, IpamEntry>& entries() const { return entries_; }
  size_t draining() const { return draining_.size(); }

  // Writes the state (temp file + rename: atomic; not fsynced, as a crash that
  // loses it also ends every container it describes).
  Status Save();

 private:
  Ipam(FileLock lock, std::filesystem::path file, Ipv4Subnet subnet, IpamProbes probes)
      : lock_(std::move(lock)),
        file_(std::move(file)),
        subnet_(subnet),
        probes_(std::move(probes)) {}
  Status Load();
  bool IsStale(const IpamEntry& entry) const;

  FileLock lock_;
  std::filesystem::path file_;
  Ipv4Subnet subnet_;
  IpamProbes probes_;
  std::map<std::string, IpamEntry> entries_;
  std::map<uint32_t, std::string> draining_;  // address -> veth still alive
  uint32_t last_ = 0;                         // last address handed out
};

}  // namespace imgtool::runner
