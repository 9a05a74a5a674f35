// A shorter form of the seccomp filters libseccomp writes.
//
// libseccomp dispatches on the syscall number with one comparison per
// syscall the profile names, arranged as a binary tree: docker's profile
// becomes a 412-instruction filter in which 66 ranges of syscall numbers
// end in only 7 places (allow, the default errno, ENOSYS, and the blocks
// that look at the arguments of clone, personality, ...). The kernel
// converts and JIT-compiles every instruction of a filter when a container
// installs it, on the path to its command: about 0.25 ms more than a short
// filter here.
//
// CompactSyscallDispatch replaces each such dispatch by a binary search over
// the ranges: about 70 comparisons instead of 400, and 7 instead of 11 per
// syscall at run time. (Where a compare's 8-bit jump cannot reach what its
// range leads to, as in filters for several architectures, each range gets
// an instruction of its own: a copy of its return, or a long jump.)
// Everything else (the architecture checks, the argument blocks, the return
// values) is kept as libseccomp wrote it; only jump offsets change. The
// result is checked against the original by running both on every syscall
// number where a comparison changes its answer, for each architecture the
// filter checks and a set of argument values; a filter of another shape, or
// one that would not get shorter, is left alone.
#pragma once

#include <linux/filter.h>
#include <linux/seccomp.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace imgtool::runner {

// What the kernel's seccomp returns for `program` run on `data`. `program`
// must be a filter seccomp accepts (forward jumps only, loads within
// seccomp_data); anything else returns SECCOMP_RET_KILL_PROCESS.
uint32_t RunSeccompBpf(std::span<const struct sock_filter> program,
                       const struct seccomp_data& data);

// `program` with its syscall-number dispatch trees rewritten as range
// searches (see above), or nullopt when there is none to rewrite, the result
// would not be shorter, or it did not check out.
std::optional<std::vector<struct sock_filter>> CompactSyscallDispatch(
    std::span<const struct sock_filter> program);

}  // namespace imgtool::runner
