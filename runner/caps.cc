#include "runner/caps.h"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

#include "common/file_util.h"

namespace imgtool::runner {

namespace {

// Indexed by capability number (include/uapi/linux/capability.h).
constexpr std::string_view kCapabilityNames[] = {
    "CHOWN",            "DAC_OVERRIDE",    "DAC_READ_SEARCH", "FOWNER",
    "FSETID",           "KILL",            "SETGID",          "SETUID",
    "SETPCAP",          "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN",        "NET_RAW",         "IPC_LOCK",        "IPC_OWNER",
    "SYS_MODULE",       "SYS_RAWIO",       "SYS_CHROOT",      "SYS_PTRACE",
    "SYS_PACCT",        "SYS_ADMIN",       "SYS_BOOT",        "SYS_NICE",
    "SYS_RESOURCE",     "SYS_TIME",        "SYS_TTY_CONFIG",  "MKNOD",
    "LEASE",            "AUDIT_WRITE",     "AUDIT_CONTROL",   "SETFCAP",
    "MAC_OVERRIDE",     "MAC_ADMIN",       "SYSLOG",          "WAKE_ALARM",
    "BLOCK_SUSPEND",    "AUDIT_READ",      "PERFMON",         "BPF",
    "CHECKPOINT_RESTORE",
};
constexpr int kKnownCapabilities = static_cast<int>(std::size(kCapabilityNames));

std::string Upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool IsAll(std::string_view name) { return Upper(name) == "ALL" || Upper(name) == "CAP_ALL"; }

}  // namespace

int LastCapability() {
  static const int last = [] {
    Result<std::string> text = ReadFileToString("/proc/sys/kernel/cap_last_cap", 64);
    if (text) {
      try {
        int value = std::stoi(*text);
        if (value > 0 && value < 64) return value;
      } catch (...) {
      }
    }
    return kKnownCapabilities - 1;
  }();
  return last;
}

CapabilitySet CapabilitySet::All() {
  int last = LastCapability();
  return FromMask(last >= 63 ? ~uint64_t{0} : (uint64_t{1} << (last + 1)) - 1);
}

CapabilitySet CapabilitySet::OfThisProcess() {
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return CapabilitySet();
  return FromMask(uint64_t{data[0].permitted} | (uint64_t{data[1].permitted} << 32));
}

std::string CapabilitySet::ToString() const {
  std::string out;
  for (int cap = 0; cap < 64; ++cap) {
    if (!Has(cap)) continue;
    if (!out.empty()) out += ',';
    out += CapabilityName(cap);
  }
  return out;
}

Result<int> ParseCapability(std::string_view name) {
  std::string upper = Upper(name);
  std::string_view bare = upper;
  if (bare.starts_with("CAP_")) bare.remove_prefix(4);
  for (int cap = 0; cap < kKnownCapabilities; ++cap) {
    if (kCapabilityNames[cap] == bare) return cap;
  }
  return InvalidArgumentError("unknown capability \"" + std::string(name) + "\"");
}

std::string CapabilityName(int cap) {
  if (cap >= 0 && cap < kKnownCapabilities) return "CAP_" + std::string(kCapabilityNames[cap]);
  return "CAP_" + std::to_string(cap);
}

CapabilitySet DefaultCapabilities() {
  CapabilitySet set;
  for (int cap : {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FSETID, CAP_FOWNER, CAP_MKNOD, CAP_NET_RAW,
                  CAP_SETGID, CAP_SETUID, CAP_SETFCAP, CAP_SETPCAP, CAP_NET_BIND_SERVICE,
                  CAP_SYS_CHROOT, CAP_KILL, CAP_AUDIT_WRITE}) {
    set.Add(cap);
  }
  return set;
}

Result<CapabilitySet> ComputeCapabilities(bool privileged, const std::vector<std::string>& add,
                                          const std::vector<std::string>& drop,
                                          CapabilitySet available) {
  auto parse_list = [](const std::vector<std::string>& names, const char* flag,
                       bool* all) -> Result<CapabilitySet> {
    CapabilitySet set;
    for (const std::string& name : names) {
      if (IsAll(name)) {
        *all = true;
        continue;
      }
      Result<int> cap = ParseCapability(name);
      if (!cap) return std::move(cap).error().Wrap(flag);
      set.Add(*cap);
    }
    return set;
  };
  bool add_all = false;
  bool drop_all = false;
  IMGTOOL_ASSIGN_OR_RETURN(CapabilitySet added, parse_list(add, "--cap-add", &add_all));
  IMGTOOL_ASSIGN_OR_RETURN(CapabilitySet dropped, parse_list(drop, "--cap-drop", &drop_all));
  uint64_t missing = added.mask() & ~available.mask();
  if (missing != 0 && !privileged) {
    return FailedPreconditionError("--cap-add " + CapabilitySet::FromMask(missing).ToString() +
                                   ": imgtool itself does not hold it");
  }
  uint64_t all = CapabilitySet::All().mask() & available.mask();
  if (privileged) return CapabilitySet::FromMask(all);
  if (add_all) return CapabilitySet::FromMask(all & ~dropped.mask());
  if (drop_all) return CapabilitySet::FromMask(added.mask() & all);
  uint64_t mask = (DefaultCapabilities().mask() & ~dropped.mask()) | added.mask();
  return CapabilitySet::FromMask(mask & all);
}

ChildStatus DropBoundingCapabilities(CapabilitySet set, int last_cap) noexcept {
  for (int cap = 0; cap <= last_cap; ++cap) {
    if (set.Has(cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      return ChildStatus::Failure(errno, "drop capabilities from the bounding set");
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return ChildStatus::Failure(errno, "clear the ambient capabilities");
  }
  return ChildStatus();
}

ChildStatus SetProcessCapabilities(CapabilitySet set) noexcept {
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  if (::geteuid() == 0) {
    for (int i = 0; i < 2; ++i) {
      uint32_t word = static_cast<uint32_t>(set.mask() >> (32 * i));
      data[i].effective = word;
      data[i].permitted = word;
    }
  }
  if (::syscall(SYS_capset, &header, data) != 0) {
    return ChildStatus::Failure(errno, "set the process capabilities");
  }
  return ChildStatus();
}

}  // namespace imgtool::runner
