// Seccomp: profiles as plain data (imgtool's default allow-list, or docker's
// JSON profile format), compiled to a BPF program with libseccomp in the parent,
// and installed by the child with one seccomp(2) call right before exec.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "runner/caps.h"
#include "runner/child_status.h"

namespace imgtool::runner {

enum class SeccompAction {
  kAllow,
  kErrno,        // fail with an errno (the rule's, else the profile's, else EPERM)
  kKillThread,   // SCMP_ACT_KILL / SCMP_ACT_KILL_THREAD
  kKillProcess,
  kTrap,
  kTrace,
  kLog,
};

enum class SeccompOp { kNotEqual, kLess, kLessEqual, kEqual, kGreaterEqual, kGreater, kMaskedEqual };

struct SeccompArg {
  unsigned index = 0;  // 0..5
  uint64_t value = 0;
  uint64_t value_two = 0;  // kMaskedEqual: (arg & value) == value_two
  SeccompOp op = SeccompOp::kEqual;
};

// A rule applies when its conditions hold for the container: every `caps` of
// includes present and none of excludes, the native architecture among
// includes.arches (when given) and not among excludes.arches.
struct SeccompCondition {
  std::vector<std::string> caps;    // "CAP_SYS_ADMIN"
  std::vector<std::string> arches;  // "amd64", "x86_64", "arm64", ... as docker spells them
};

struct SeccompRule {
  std::vector<std::string> names;
  SeccompAction action = SeccompAction::kAllow;
  std::optional<int> errno_ret;
  std::vector<SeccompArg> args;  // all must match
  SeccompCondition includes;
  SeccompCondition excludes;
};

struct SeccompProfile {
  SeccompAction default_action = SeccompAction::kErrno;
  std::optional<int> default_errno;
  // libseccomp names ("SCMP_ARCH_X86_64"); the native one is always included.
  std::vector<std::string> architectures;
  std::vector<SeccompRule> rules;
};

// Docker's profile format (defaultAction, defaultErrnoRet, architectures,
// archMap, syscalls[names|name, action, errnoRet, args, includes, excludes]).
// Unknown actions, operators or fields of the wrong type are InvalidArgument.
Result<SeccompProfile> ParseSeccompProfile(std::string_view json);
Result<SeccompProfile> LoadSeccompProfile(const std::string& path);

// imgtool's default: an allow-list close to docker's. Denied with EPERM, unless
// the container has the capability that makes them legitimate: mount/umount2,
// pivot_root and the new mount API, unshare and setns (CAP_SYS_ADMIN), clone
// with namespace flags, kexec_load/kexec_file_load and reboot (CAP_SYS_BOOT),
// init_module/finit_module/delete_module (CAP_SYS_MODULE), ptrace, kcmp and
// process_vm_* (CAP_SYS_PTRACE), bpf (CAP_BPF), perf_event_open (CAP_PERFMON),
// swapon/swapoff, quotactl. keyctl/add_key/request_key, userfaultfd and
// io_uring are always denied. clone3 fails with ENOSYS so that libc falls back
// to clone, whose flags the filter can inspect.
SeccompProfile DefaultSeccompProfile();

// A compiled filter, ready for seccomp(SECCOMP_SET_MODE_FILTER).
struct SeccompProgram {
  std::vector<struct sock_filter> instructions;
};

// Compiles `profile` for a container with capabilities `caps`: libseccomp's
// filter with its syscall dispatch made shorter (runner/seccomp_compact.h).
Result<SeccompProgram> CompileSeccompProfile(const SeccompProfile& profile, CapabilitySet caps);

// The same, through caches: libseccomp takes milliseconds for a profile of a
// few hundred rules, a fair share of a container's whole start. Programs are
// kept in memory for the process and as files in `cache_dir` (when not empty),
// keyed by a hash of the profile, the capabilities, the architecture, the
// libseccomp version and the form of the program. The dir is created 0700
// and used only while it and its files belong to the caller and nobody else
// can write them; a file whose checksum does not match is compiled again.
Result<SeccompProgram> CompileSeccompProfileCached(const SeccompProfile& profile,
                                                   CapabilitySet caps,
                                                   const std::filesystem::path& cache_dir);

// The filter exactly as libseccomp writes it, before CompileSeccompProfile
// makes it shorter.
Result<SeccompProgram> LibseccompProgram(const SeccompProfile& profile, CapabilitySet caps);

// DefaultSeccompProfile compiled for `caps` at build time (runner/gen), when
// `caps` is the set it was compiled for (docker's default, DefaultCapabilities)
// and the binary links it in (imgtool and the runner's tests do); otherwise
// nullopt, and the caller compiles. The same libseccomp builds both, so the
// program is the one CompileSeccompProfile would make.
std::optional<SeccompProgram> EmbeddedDefaultSeccompProgram(CapabilitySet caps);

// The cache key (hex) of CompileSeccompProfileCached.
std::string SeccompCacheKey(const SeccompProfile& profile, CapabilitySet caps);

// Child side: installs the filter. Needs no_new_privs or CAP_SYS_ADMIN.
ChildStatus InstallSeccompProgram(const SeccompProgram& program) noexcept;

}  // namespace imgtool::runner
