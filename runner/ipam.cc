#include "runner/ipam.h"

#include <fcntl.h>
#include <net/if.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "common/file_util.h"
#include "common/log.h"

namespace imgtool::runner {

namespace {

using nlohmann::json;

json RuleToJson(const IptablesRule& rule) {
  return json{{"table", rule.table}, {"args", rule.args}};
}

json PortToJson(const PortMapping& port) {
  return json{{"host_ip", port.host_ip},
              {"host_port", port.host_port},
              {"container_port", port.container_port},
              {"protocol", port.protocol == PortMapping::Protocol::kUdp ? "udp" : "tcp"}};
}

json EntryToJson(const IpamEntry& entry) {
  json rules = json::array();
  for (const IptablesRule& rule : entry.rules) rules.push_back(RuleToJson(rule));
  json ports = json::array();
  for (const PortMapping& port : entry.ports) ports.push_back(PortToJson(port));
  return json{{"ip", entry.ip.ToString()},
              {"veth", entry.veth},
              {"owner_pid", entry.owner_pid},
              {"owner_start_time", entry.owner_start_time},
              {"ports", ports},
              {"rules", rules}};
}

// Throws nlohmann exceptions on malformed input; Load catches them.
IpamEntry EntryFromJson(const std::string& id, const json& j) {
  IpamEntry entry;
  entry.container_id = id;
  auto ip = Ipv4::Parse(j.at("ip").get<std::string>());
  if (!ip) throw std::invalid_argument(ip.error().message());
  entry.ip = *ip;
  entry.veth = j.at("veth").get<std::string>();
  entry.owner_pid = j.at("owner_pid").get<pid_t>();
  entry.owner_start_time = j.at("owner_start_time").get<uint64_t>();
  for (const json& p : j.value("ports", json::array())) {
    PortMapping port;
    port.host_ip = p.at("host_ip").get<std::string>();
    port.host_port = p.at("host_port").get<uint16_t>();
    port.container_port = p.at("container_port").get<uint16_t>();
    port.protocol = p.at("protocol").get<std::string>() == "udp" ? PortMapping::Protocol::kUdp
                                                                 : PortMapping::Protocol::kTcp;
    entry.ports.push_back(port);
  }
  for (const json& r : j.value("rules", json::array())) {
    entry.rules.push_back(
        {r.at("table").get<std::string>(), r.at("args").get<std::vector<std::string>>()});
  }
  return entry;
}

}  // namespace

Result<Ipv4Subnet> Ipv4Subnet::Parse(std::string_view cidr) {
  size_t slash = cidr.find('/');
  if (slash == std::string_view::npos) {
    return InvalidArgumentError(StrCat("subnet \"", cidr, "\": expected ADDRESS/PREFIX"));
  }
  auto address = Ipv4::Parse(cidr.substr(0, slash));
  if (!address) return std::move(address).error().Wrap(StrCat("subnet \"", cidr, "\""));
  std::string_view prefix_text = cidr.substr(slash + 1);
  int prefix = -1;
  auto [end, ec] =
      std::from_chars(prefix_text.data(), prefix_text.data() + prefix_text.size(), prefix);
  if (ec != std::errc() || end != prefix_text.data() + prefix_text.size() || prefix < 8 ||
      prefix > 30) {
    return InvalidArgumentError(StrCat("subnet \"", cidr, "\": prefix must be 8..30"));
  }
  Ipv4Subnet subnet{*address, prefix};
  if ((address->value & subnet.Mask()) != address->value) {
    return InvalidArgumentError(StrCat("subnet \"", cidr, "\": host bits are set (did you mean ",
                                       Ipv4{address->value & subnet.Mask()}.ToString(), "/", prefix,
                                       "?)"));
  }
  return subnet;
}

std::string Ipv4Subnet::ToString() const { return StrCat(network.ToString(), "/", prefix_length); }

uint32_t Ipv4Subnet::Mask() const { return prefix_length == 0 ? 0 : ~0u << (32 - prefix_length); }

uint64_t ProcessStartTime(pid_t pid) {
  auto stat = ReadFileToString("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!stat) return 0;
  // The command name may hold spaces and parens; fields restart after the last ')'.
  size_t paren = stat->rfind(')');
  if (paren == std::string::npos) return 0;
  size_t pos = paren + 2;
  // Field 3 (state) is at pos; field 22 (starttime) is 19 fields on.
  for (int field = 3; field < 22; ++field) {
    pos = stat->find(' ', pos);
    if (pos == std::string::npos) return 0;
    ++pos;
  }
  uint64_t start = 0;
  std::from_chars(stat->data() + pos, stat->data() + stat->size(), start);
  return start;
}

IpamProbes DefaultIpamProbes() {
  return {
      [](const std::string& veth) { return ::if_nametoindex(veth.c_str()) != 0; },
      [](pid_t pid, uint64_t start_time) {
        return pid > 0 && start_time != 0 && ProcessStartTime(pid) == start_time;
      },
  };
}

Result<Ipv4Subnet> ReadIpamSubnet(const std::filesystem::path& file) {
  IMGTOOL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(file, 16u << 20));
  std::string subnet;
  try {
    subnet = json::parse(text).at("subnet").get<std::string>();
  } catch (const std::exception& e) {
    return DataLossError(StrCat(file.string(), ": unreadable IPAM state: ", e.what()));
  }
  return Ipv4Subnet::Parse(subnet).Wrap(file.string());
}

Result<Ipam> Ipam::Open(const std::filesystem::path& state_dir, std::string_view bridge,
                        const Ipv4Subnet& subnet, IpamProbes probes) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return Error(ErrorCodeFromErrno(ec.value()),
                 StrCat("create network state dir ", state_dir.string()), ec.value());
  }
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(state_dir / StrCat(bridge, ".lock"),
                                                            FileLock::Mode::kExclusive)
                                              .Wrap("lock network state"));
  Ipam ipam(std::move(lock), state_dir / StrCat(bridge, ".ipam.json"), subnet, std::move(probes));
  IMGTOOL_TRY(ipam.Load());
  return ipam;
}

Status Ipam::Load() {
  auto text = ReadFileToString(file_, 16u << 20);
  if (!text) {
    if (text.error().code() == ErrorCode::kNotFound) return OkStatus();
    return std::move(text).error().Wrap("load IPAM state");
  }
  try {
    json state = json::parse(*text);
    std::string subnet = state.at("subnet").get<std::string>();
    std::map<std::string, IpamEntry> entries;
    for (const auto& [id, value] : state.at("allocations").items()) {
      entries.emplace(id, EntryFromJson(id, value));
    }
    std::map<uint32_t, std::string> draining;
    // Named, not a temporary: items() would outlive it inside the range-for.
    const json draining_json = state.value("draining", json::object());
    for (const auto& [ip, veth] : draining_json.items()) {
      auto address = Ipv4::Parse(ip);
      if (address) draining.emplace(address->value, veth.get<std::string>());
    }
    if (subnet != subnet_.ToString()) {
      for (const auto& [id, entry] : entries) {
        if (!IsStale(entry)) {
          return FailedPreconditionError(StrCat(file_.string(),
                                                ": the bridge is in use with subnet ", subnet,
                                                " (container ", id, "), not ", subnet_.ToString()));
        }
      }
      // Only dead containers used the old subnet: start afresh.
      LogInfo("IPAM ", file_.string(), ": subnet changed from ", subnet, " to ",
              subnet_.ToString());
      return OkStatus();
    }
    entries_ = std::move(entries);
    draining_ = std::move(draining);
    auto last = Ipv4::Parse(state.value("last", std::string()));
    if (last && subnet_.Contains(*last)) last_ = last->value;
  } catch (const std::exception& e) {
    return DataLossError(StrCat(file_.string(), ": unreadable IPAM state: ", e.what()));
  }
  return OkStatus();
}

Status Ipam::Save() {
  json allocations = json::object();
  for (const auto& [id, entry] : entries_) allocations[id] = EntryToJson(entry);
  json draining = json::object();
  for (const auto& [ip, veth] : draining_) draining[Ipv4{ip}.ToString()] = veth;
  json state = {{"subnet", subnet_.ToString()},
                {"last", last_ != 0 ? Ipv4{last_}.ToString() : std::string()},
                {"allocations", allocations},
                {"draining", draining}};
  std::string text = state.dump(1);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::filesystem::path temp = file_;
  temp += StrCat(".tmp-", rng());
  {
    IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd,
                             OpenFile(temp, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC, 0644));
    Status written = WriteAll(fd.get(), text);
    if (!written) {
      ::unlink(temp.c_str());
      return std::move(written).error().Wrap("save IPAM state " + temp.string());
    }
  }
  if (::rename(temp.c_str(), file_.c_str()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    return ErrnoError("save IPAM state " + file_.string(), err);
  }
  return OkStatus();
}

bool Ipam::IsStale(const IpamEntry& entry) const {
  return !probes_.link_exists(entry.veth) &&
         !probes_.process_alive(entry.owner_pid, entry.owner_start_time);
}

std::vector<IpamEntry> Ipam::TakeStale() {
  std::vector<IpamEntry> stale;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (IsStale(it->second)) {
      stale.push_back(std::move(it->second));
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  return stale;
}

std::vector<IpamEntry> Ipam::TakeIf(const std::function<bool(std::string_view id)>& is_live) {
  std::vector<IpamEntry> taken;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (!is_live(it->first)) {
      if (probes_.link_exists(it->second.veth)) draining_[it->second.ip.value] = it->second.veth;
      taken.push_back(std::move(it->second));
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  return taken;
}

Result<Ipv4> Ipam::Allocate(IpamEntry entry) {
  if (entries_.contains(entry.container_id)) {
    return AlreadyExistsError(StrCat("container ", entry.container_id, " already has address ",
                                     entries_.at(entry.container_id).ip.ToString()));
  }
  for (auto it = draining_.begin(); it != draining_.end();) {
    it = probes_.link_exists(it->second) ? std::next(it) : draining_.erase(it);
  }
  std::set<uint32_t> used;
  for (const auto& [id, e] : entries_) used.insert(e.ip.value);
  const uint32_t first = subnet_.FirstHost().value;
  const uint32_t last = subnet_.LastHost().value;
  const uint64_t size = uint64_t{last} - first + 1;
  uint32_t start = (last_ >= first && last_ < last) ? last_ + 1 : first;
  for (uint64_t i = 0; i < size; ++i) {
    uint32_t candidate = static_cast<uint32_t>(first + (start - first + i) % size);
    if (used.contains(candidate) || draining_.contains(candidate)) continue;
    entry.ip = Ipv4{candidate};
    last_ = candidate;
    std::string id = entry.container_id;
    entries_.emplace(id, std::move(entry));
    return Ipv4{candidate};
  }
  return UnavailableError(StrCat("subnet ", subnet_.ToString(), " is full: ", used.size(),
                                 " addresses in use, ", draining_.size(),
                                 " waiting for their containers' network to go"));
}

Status Ipam::Update(const IpamEntry& entry) {
  auto it = entries_.find(entry.container_id);
  if (it == entries_.end()) {
    return NotFoundError(StrCat("container ", entry.container_id, " has no address"));
  }
  it->second = entry;
  return OkStatus();
}

std::optional<IpamEntry> Ipam::Release(const std::string& container_id) {
  auto it = entries_.find(container_id);
  if (it == entries_.end()) return std::nullopt;
  IpamEntry entry = std::move(it->second);
  entries_.erase(it);
  if (probes_.link_exists(entry.veth)) draining_[entry.ip.value] = entry.veth;
  return entry;
}

const IpamEntry* Ipam::Find(const std::string& container_id) const {
  auto it = entries_.find(container_id);
  return it == entries_.end() ? nullptr : &it->second;
}

const IpamEntry* Ipam::FindPortOwner(const PortMapping& mapping) const {
  for (const auto& [id, entry] : entries_) {
    for (const PortMapping& port : entry.ports) {
      bool same_ip =
          port.host_ip.empty() || mapping.host_ip.empty() || port.host_ip == mapping.host_ip;
      if (port.host_port == mapping.host_port && port.protocol == mapping.protocol && same_ip) {
        return &entry;
      }
    }
  }
  return nullptr;
}

}  // namespace imgtool::runner
