// Linux capabilities: names, docker's default set, --cap-add/--cap-drop/
// --privileged, and (child side) applying the set before exec.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "runner/child_status.h"

namespace imgtool::runner {

// A set of capability numbers (bit N = capability N; Linux has fewer than 64).
class CapabilitySet {
 public:
  constexpr CapabilitySet() = default;
  static constexpr CapabilitySet FromMask(uint64_t mask) { return CapabilitySet(mask); }
  // Every capability the running kernel knows (0..LastCapability()).
  static CapabilitySet All();
  // The permitted set of the calling process: what it can hand on at most.
  static CapabilitySet OfThisProcess();

  bool Has(int cap) const { return cap >= 0 && cap < 64 && (mask_ >> cap) & 1; }
  void Add(int cap) { mask_ |= uint64_t{1} << cap; }
  void Remove(int cap) { mask_ &= ~(uint64_t{1} << cap); }
  uint64_t mask() const { return mask_; }
  bool empty() const { return mask_ == 0; }
  // "CAP_CHOWN,CAP_KILL", in number order.
  std::string ToString() const;

  friend bool operator==(const CapabilitySet&, const CapabilitySet&) = default;

 private:
  constexpr explicit CapabilitySet(uint64_t mask) : mask_(mask) {}
  uint64_t mask_ = 0;
};

// The highest capability number of the running kernel (/proc/sys/kernel/
// cap_last_cap, read once; CAP_CHECKPOINT_RESTORE's 40 if that is unreadable).
int LastCapability();

// "CAP_NET_ADMIN", "NET_ADMIN", "net_admin" -> 12. Unknown names are
// InvalidArgument. "ALL" is not a capability (see ComputeCapabilities).
Result<int> ParseCapability(std::string_view name);
// 12 -> "CAP_NET_ADMIN"; "CAP_<n>" for numbers without a name.
std::string CapabilityName(int cap);

// Docker's default: CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW, SETGID,
// SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE.
CapabilitySet DefaultCapabilities();

// The container's set, with docker's rules: --privileged is every capability;
// "ALL" in `add` is every capability but the dropped ones; "ALL" in `drop` is
// only the added ones; otherwise the default minus `drop` plus `add` (an add
// wins over a drop of the same name). The result is cut down to `available`
// (what imgtool holds); a capability named in `add` that is not available is
// FailedPrecondition.
Result<CapabilitySet> ComputeCapabilities(bool privileged, const std::vector<std::string>& add,
                                          const std::vector<std::string>& drop,
                                          CapabilitySet available = CapabilitySet::All());

// Child side, as root before the user switch: drops everything outside `set`
// from the bounding set and clears the ambient set.
ChildStatus DropBoundingCapabilities(CapabilitySet set, int last_cap) noexcept;
// Child side, after the user switch: permitted = effective = `set`,
// inheritable empty. A process that is no longer uid 0 keeps nothing: execve
// gives a non-root user no capabilities, as in docker.
ChildStatus SetProcessCapabilities(CapabilitySet set) noexcept;

}  // namespace imgtool::runner
