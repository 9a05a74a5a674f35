#include "runner/seccomp_compact.h"

#include <gtest/gtest.h>
#include <linux/audit.h>
#include <sched.h>

#include <cstddef>
#include <string>
#include <vector>

#include "runner/caps.h"
#include "runner/seccomp.h"

namespace imgtool::runner {
namespace {

using Program = std::vector<struct sock_filter>;

constexpr uint32_t kAllow = SECCOMP_RET_ALLOW;
constexpr uint32_t kEperm = SECCOMP_RET_ERRNO | 1;
constexpr uint32_t kNr = offsetof(struct seccomp_data, nr);
constexpr uint32_t kArch = offsetof(struct seccomp_data, arch);
constexpr uint32_t kArg0Low = offsetof(struct seccomp_data, args);

struct seccomp_data Data(uint32_t arch, uint32_t nr, uint64_t arg = 0) {
  struct seccomp_data data {};
  data.arch = arch;
  data.nr = static_cast<int>(nr);
  for (auto& a : data.args) a = arg;
  return data;
}

// Every verdict of `a` and `b` agrees for these architectures, every
// syscall number below 2048 and a few past it, and arguments that reach the
// argument checks of docker's profile (clone's namespace flags,
// personality's values).
void ExpectSameVerdicts(const Program& a, const Program& b, const std::vector<uint32_t>& arches) {
  std::vector<uint64_t> args = {0,
                                1,
                                8,
                                0x20000,
                                0x20008,
                                0xffffffff,
                                ~uint64_t{0},
                                CLONE_NEWUSER,
                                CLONE_NEWNS,
                                CLONE_NEWPID | CLONE_NEWNET,
                                uint64_t{1} << 32};
  std::vector<uint32_t> numbers;
  for (uint32_t nr = 0; nr < 2048; ++nr) numbers.push_back(nr);
  for (uint32_t nr = 0x40000000; nr < 0x40000000 + 600; ++nr) numbers.push_back(nr);
  numbers.push_back(0x3fffffff);
  numbers.push_back(0xffffffff);
  size_t differences = 0;
  for (uint32_t arch : arches) {
    for (uint32_t nr : numbers) {
      for (uint64_t arg : args) {
        struct seccomp_data data = Data(arch, nr, arg);
        if (RunSeccompBpf(a, data) != RunSeccompBpf(b, data) && ++differences <= 5) {
          ADD_FAILURE() << "arch " << arch << " nr " << nr << " arg " << arg << ": "
                        << RunSeccompBpf(a, data) << " against " << RunSeccompBpf(b, data);
        }
      }
    }
  }
  EXPECT_EQ(differences, 0u);
}

TEST(RunSeccompBpfTest, RunsClassicBpfAsSeccompDoes) {
  // if (arch != x86_64) kill; if (nr == 39) { if (arg0 & 4) return EPERM;
  // X = arg0; A = X; M[3] = A; A = M[3] + 2; return A; } allow
  Program program = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArch),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kNr),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 39, 0, 9),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArg0Low),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 4, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, kEperm),
      BPF_STMT(BPF_MISC | BPF_TAX, 0),
      BPF_STMT(BPF_MISC | BPF_TXA, 0),
      BPF_STMT(BPF_ST, 3),
      BPF_STMT(BPF_LD | BPF_MEM, 3),
      BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, 2),
      BPF_STMT(BPF_RET | BPF_A, 0),
      BPF_STMT(BPF_RET | BPF_K, kAllow),
  };
  EXPECT_EQ(RunSeccompBpf(program, Data(AUDIT_ARCH_I386, 39)), SECCOMP_RET_KILL_PROCESS);
  EXPECT_EQ(RunSeccompBpf(program, Data(AUDIT_ARCH_X86_64, 40)), kAllow);
  EXPECT_EQ(RunSeccompBpf(program, Data(AUDIT_ARCH_X86_64, 39, 4)), kEperm);
  EXPECT_EQ(RunSeccompBpf(program, Data(AUDIT_ARCH_X86_64, 39, 3)), 5u);

  Program past_the_data = {BPF_STMT(BPF_LD | BPF_W | BPF_ABS, sizeof(struct seccomp_data)),
                           BPF_STMT(BPF_RET | BPF_K, kAllow)};
  EXPECT_EQ(RunSeccompBpf(past_the_data, Data(0, 0)), SECCOMP_RET_KILL_PROCESS);
  Program no_return = {BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kNr)};
  EXPECT_EQ(RunSeccompBpf(no_return, Data(0, 0)), SECCOMP_RET_KILL_PROCESS);
}

TEST(SeccompCompactTest, DefaultProfileBecomesAFifthAndDecidesAlike) {
  Result<SeccompProgram> original =
      LibseccompProgram(DefaultSeccompProfile(), DefaultCapabilities());
  ASSERT_TRUE(original.has_value()) << original.error().ToString();
  std::optional<Program> compact = CompactSyscallDispatch(original->instructions);
  ASSERT_TRUE(compact.has_value());
  EXPECT_LT(compact->size() * 4, original->instructions.size())
      << compact->size() << " of " << original->instructions.size() << " instructions";
  ExpectSameVerdicts(original->instructions, *compact,
                     {AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64, 0});
  // What containers get is the compact one.
  Result<SeccompProgram> compiled =
      CompileSeccompProfile(DefaultSeccompProfile(), DefaultCapabilities());
  ASSERT_TRUE(compiled.has_value());
  EXPECT_EQ(compiled->instructions.size(), compact->size());
}

#if defined(__x86_64__)
// One dispatch per architecture (x86_64, i386, x32): each is compacted.
TEST(SeccompCompactTest, EveryArchitecturesDispatchIsCompacted) {
  Result<SeccompProfile> profile = ParseSeccompProfile(R"({
    "defaultAction": "SCMP_ACT_ERRNO",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                 "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
    "syscalls": [
      {"names": ["read", "write", "open", "close", "stat", "fstat", "lstat", "poll", "lseek",
                 "mmap", "mprotect", "munmap", "brk", "rt_sigaction", "rt_sigprocmask",
                 "ioctl", "pread64", "pwrite64", "readv", "writev", "access", "pipe",
                 "select", "sched_yield", "mremap", "msync", "mincore", "madvise", "dup",
                 "dup2", "pause", "nanosleep", "getitimer", "alarm", "setitimer", "getpid",
                 "exit", "exit_group", "getuid", "getgid", "futex", "openat", "execve"],
       "action": "SCMP_ACT_ALLOW"},
      {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
       "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
    ]})");
  ASSERT_TRUE(profile.has_value()) << profile.error().ToString();
  Result<SeccompProgram> original = LibseccompProgram(*profile, DefaultCapabilities());
  ASSERT_TRUE(original.has_value()) << original.error().ToString();
  std::optional<Program> compact = CompactSyscallDispatch(original->instructions);
  ASSERT_TRUE(compact.has_value());
  // Fewer syscalls, and numbers far apart on i386 and x32: less to merge.
  EXPECT_LT(compact->size() * 4, original->instructions.size() * 3)
      << compact->size() << " of " << original->instructions.size() << " instructions";
  ExpectSameVerdicts(original->instructions, *compact,
                     {AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_ARM, 0});
}
#endif

#if defined(__x86_64__)
// Docker's profile for x86_64, i386 and x32 (as its archMap has it): 1,236
// instructions, whose compares are too far from the argument checks and
// returns they lead to for an 8-bit jump. Each range then gets an
// instruction of its own.
TEST(SeccompCompactTest, FarTargetsGetAnInstructionPerRange) {
  SeccompProfile profile = DefaultSeccompProfile();
  profile.architectures = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"};
  Result<SeccompProgram> original = LibseccompProgram(profile, DefaultCapabilities());
  ASSERT_TRUE(original.has_value()) << original.error().ToString();
  ASSERT_GT(original->instructions.size(), 1000u);
  std::optional<Program> compact = CompactSyscallDispatch(original->instructions);
  ASSERT_TRUE(compact.has_value());
  EXPECT_LT(compact->size() * 2, original->instructions.size())
      << compact->size() << " of " << original->instructions.size() << " instructions";
  ExpectSameVerdicts(original->instructions, *compact, {AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, 0});
}
#endif

// A list of compares, one per syscall (libseccomp without its tree), where
// 0..9 are allowed but 5, and 100.. is refused.
Program LinearDispatch() {
  Program program = {BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kNr)};
  std::vector<uint32_t> allowed = {0, 1, 2, 3, 4, 6, 7, 8, 9};
  for (size_t i = 0; i < allowed.size(); ++i) {
    // Taken: to the allow at the end, past the compares left, the range
    // check and the two refusals.
    uint8_t to_allow = static_cast<uint8_t>(allowed.size() - 1 - i + 1 + 2);
    program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, allowed[i], to_allow, 0));
  }
  program.push_back(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 100, 0, 1));
  program.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 38));
  program.push_back(BPF_STMT(BPF_RET | BPF_K, kEperm));
  program.push_back(BPF_STMT(BPF_RET | BPF_K, kAllow));
  return program;
}

TEST(SeccompCompactTest, AListOfComparesBecomesRanges) {
  Program linear = LinearDispatch();
  ASSERT_EQ(RunSeccompBpf(linear, Data(0, 7)), kAllow);
  ASSERT_EQ(RunSeccompBpf(linear, Data(0, 5)), kEperm);
  ASSERT_EQ(RunSeccompBpf(linear, Data(0, 150)), SECCOMP_RET_ERRNO | 38);
  std::optional<Program> compact = CompactSyscallDispatch(linear);
  ASSERT_TRUE(compact.has_value());
  // Ranges [0,5) [5,6) [6,10) [10,100) [100,..): four compares.
  EXPECT_EQ(compact->size(), 1u + 4u + 3u);
  ExpectSameVerdicts(linear, *compact, {0});
}

TEST(SeccompCompactTest, LeavesAloneWhatItCannotRewrite) {
  // A test of bits in the dispatch.
  Program bits = LinearDispatch();
  bits[3] = BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 2, bits[3].jt, 0);
  EXPECT_FALSE(CompactSyscallDispatch(bits).has_value());

  // A compare of the dispatch reached from outside it: arg0 is loaded and
  // control joins the compares in the middle.
  Program joined = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArg0Low),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 7, 3, 0),  // to the third compare, with A = arg0
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kNr),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 1, 4, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 2, 3, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 3, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 4, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, kEperm),
      BPF_STMT(BPF_RET | BPF_K, kAllow),
  };
  EXPECT_FALSE(CompactSyscallDispatch(joined).has_value());

  // Nothing to gain: two compares for three ranges.
  Program short_one = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kNr), BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 10, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, kEperm),       BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 3, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, kEperm),       BPF_STMT(BPF_RET | BPF_K, kAllow),
  };
  EXPECT_FALSE(CompactSyscallDispatch(short_one).has_value());

  // A jump out of the program.
  Program broken = LinearDispatch();
  broken[2].jt = 200;
  EXPECT_FALSE(CompactSyscallDispatch(broken).has_value());

  // No load of the syscall number at all.
  Program no_dispatch = {BPF_STMT(BPF_RET | BPF_K, kAllow)};
  EXPECT_FALSE(CompactSyscallDispatch(no_dispatch).has_value());
}

}  // namespace
}  // namespace imgtool::runner
