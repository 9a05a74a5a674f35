// Which device nodes a container may use: docker's default list, enforced by
// the cgroup, as runc and crun do. The capability set keeps CAP_MKNOD (docker's
// default), so without this a container could make a node for the host's disk
// in its /dev tmpfs and read it. Nodes of any device may be made ("m"), only
// the listed ones opened.
//
// cgroup v1 takes the list as rules written to devices.deny / devices.allow;
// cgroup v2 has no devices controller but a BPF program of type
// BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup, built here from the same
// list. --privileged containers get neither.
#pragma once

#include <linux/bpf.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace imgtool::runner {

struct DeviceRule {
  char type;        // 'c' char, 'b' block, 'a' both
  int64_t major;    // -1: any
  int64_t minor;    // -1: any
  unsigned access;  // kDeviceRead | kDeviceWrite | kDeviceMknod
};

inline constexpr unsigned kDeviceMknod = BPF_DEVCG_ACC_MKNOD;
inline constexpr unsigned kDeviceRead = BPF_DEVCG_ACC_READ;
inline constexpr unsigned kDeviceWrite = BPF_DEVCG_ACC_WRITE;

// Docker's default: mknod of any node; null, zero, full, random, urandom, tty,
// console, ptmx, every pty (136:*) and /dev/net/tun used in full.
const std::vector<DeviceRule>& DefaultDeviceRules();

// A rule in devices.allow syntax: "c 1:3 rwm", "c 136:* rwm", "b *:* m".
std::string DeviceRuleText(const DeviceRule& rule);

// The BPF program allowing what `rules` allow and denying everything else.
std::vector<bpf_insn> DeviceFilterProgram(const std::vector<DeviceRule>& rules);

// Loads DeviceFilterProgram(DefaultDeviceRules()) and attaches it to the
// cgroup v2 dir `dir_fd` (BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI). The
// attachment lives as long as the cgroup.
Status AttachDeviceFilter(int dir_fd);

}  // namespace imgtool::runner
