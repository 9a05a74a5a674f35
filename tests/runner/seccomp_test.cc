#include "runner/seccomp.h"

#include <errno.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>

#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool::runner {
namespace {

constexpr char kProfile[] = R"({
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 38,
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
  "syscalls": [
    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
    {"name": "getpid", "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
    {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
     "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
    {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
    {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_PTRACE"]}},
    {"names": ["future"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}}
  ]
})";

TEST(SeccompProfileTest, ParsesDockerFormat) {
  Result<SeccompProfile> profile = ParseSeccompProfile(kProfile);
  ASSERT_TRUE(profile.has_value()) << profile.error().ToString();
  EXPECT_EQ(profile->default_action, SeccompAction::kErrno);
  EXPECT_EQ(profile->default_errno, 38);
  EXPECT_EQ(profile->architectures.size(), 2u);
  // The minKernel 99 rule is dropped at parse time.
  ASSERT_EQ(profile->rules.size(), 5u);
  EXPECT_EQ(profile->rules[0].names, (std::vector<std::string>{"read", "write"}));
  EXPECT_EQ(profile->rules[1].names, std::vector<std::string>{"getpid"});
  EXPECT_EQ(profile->rules[1].errno_ret, 13);
  ASSERT_EQ(profile->rules[2].args.size(), 1u);
  EXPECT_EQ(profile->rules[2].args[0].value, 8u);
  EXPECT_EQ(profile->rules[2].args[0].op, SeccompOp::kEqual);
  EXPECT_EQ(profile->rules[3].includes.caps, std::vector<std::string>{"CAP_SYS_ADMIN"});
  EXPECT_EQ(profile->rules[4].excludes.caps, std::vector<std::string>{"CAP_SYS_PTRACE"});
}

TEST(SeccompProfileTest, ArchMapAddsTheNativeSubArchitectures) {
  Result<SeccompProfile> profile = ParseSeccompProfile(R"({
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [
      {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
      {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
    ]})");
  ASSERT_TRUE(profile.has_value()) << profile.error().ToString();
#if defined(__x86_64__)
  EXPECT_EQ(profile->architectures,
            (std::vector<std::string>{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"}));
#endif
}

TEST(SeccompProfileTest, RefusesBadProfilesWithAReason) {
  struct Case {
    const char* json;
    const char* reason;
  } cases[] = {
      {"not json", "not JSON"},
      {"[]", "not a JSON object"},
      {"{}", "no defaultAction"},
      {R"({"defaultAction": "SCMP_ACT_MAYBE"})", "SCMP_ACT_MAYBE"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]})", "no action"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]})",
       "no names"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "read",
           "action": "SCMP_ACT_ALLOW"}]})",
       "wrong type"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
           "action": "SCMP_ACT_ALLOW", "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]})",
       "index 7"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
           "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}]}]})",
       "SCMP_CMP_XX"},
  };
  for (const Case& c : cases) {
    Result<SeccompProfile> profile = ParseSeccompProfile(c.json);
    ASSERT_FALSE(profile.has_value()) << c.json;
    EXPECT_EQ(profile.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(profile.error().ToString().find(c.reason), std::string::npos)
        << profile.error().ToString();
    EXPECT_NE(profile.error().ToString().find("seccomp profile"), std::string::npos);
  }
}

TEST(SeccompProfileTest, BadArgumentSaysWhichEntry) {
  Result<SeccompProfile> profile = ParseSeccompProfile(R"({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                   {"names": ["write"], "action": "bogus"}]})");
  ASSERT_FALSE(profile.has_value());
  EXPECT_NE(profile.error().message().find("syscalls[1]"), std::string::npos);
}

TEST(SeccompCompileTest, DefaultProfileCompiles) {
  Result<SeccompProgram> program =
      CompileSeccompProfile(DefaultSeccompProfile(), DefaultCapabilities());
  ASSERT_TRUE(program.has_value()) << program.error().ToString();
  EXPECT_GT(program->instructions.size(), 50u);
  EXPECT_LT(program->instructions.size(), 4096u);  // BPF_MAXINSNS
}

// The program compiled at build time is the one this libseccomp compiles now
// from the same profile, and is offered only for the capabilities it was
// compiled for.
TEST(SeccompCompileTest, EmbeddedDefaultProgramIsTheCompiledOne) {
  std::optional<SeccompProgram> embedded = EmbeddedDefaultSeccompProgram(DefaultCapabilities());
  ASSERT_TRUE(embedded.has_value()) << "the runner's tests link the build-time program";
  Result<SeccompProgram> compiled =
      CompileSeccompProfile(DefaultSeccompProfile(), DefaultCapabilities());
  ASSERT_TRUE(compiled.has_value()) << compiled.error().ToString();
  ASSERT_EQ(embedded->instructions.size(), compiled->instructions.size());
  for (size_t i = 0; i < compiled->instructions.size(); ++i) {
    const struct sock_filter& want = compiled->instructions[i];
    const struct sock_filter& got = embedded->instructions[i];
    EXPECT_TRUE(got.code == want.code && got.jt == want.jt && got.jf == want.jf && got.k == want.k)
        << "instruction " << i;
  }
  CapabilitySet with_admin = DefaultCapabilities();
  with_admin.Add(21);  // CAP_SYS_ADMIN
  EXPECT_FALSE(EmbeddedDefaultSeccompProgram(with_admin).has_value());
  EXPECT_FALSE(EmbeddedDefaultSeccompProgram(CapabilitySet()).has_value());
}

TEST(SeccompCompileTest, UnknownArchitectureIsRefused) {
  SeccompProfile profile;
  profile.default_action = SeccompAction::kAllow;
  profile.architectures = {"SCMP_ARCH_VAX"};
  Result<SeccompProgram> program = CompileSeccompProfile(profile, {});
  ASSERT_FALSE(program.has_value());
  EXPECT_NE(program.error().message().find("SCMP_ARCH_VAX"), std::string::npos);
}

// Runs `body` in a forked child under `program` (with no_new_privs, which
// needs no privilege) and returns its exit code.
int RunFiltered(const SeccompProgram& program, const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(100);
    if (!InstallSeccompProgram(program).ok()) ::_exit(101);
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int ErrnoOf(long rc) { return rc == -1 ? errno : 0; }

TEST(SeccompCompileTest, DefaultProfileBlocksWhatItShould) {
  Result<SeccompProgram> program =
      CompileSeccompProfile(DefaultSeccompProfile(), DefaultCapabilities());
  ASSERT_TRUE(program.has_value());
  struct Case {
    const char* what;
    std::function<long()> call;
    int expected_errno;
  } cases[] = {
      {"getpid", [] { return ::syscall(SYS_getpid) > 0 ? 0L : -1L; }, 0},
      {"mount", [] { return ::syscall(SYS_mount, "none", "/", "tmpfs", 0, nullptr); }, EPERM},
      {"umount2", [] { return ::syscall(SYS_umount2, "/", 0); }, EPERM},
      {"unshare(NEWUSER)", [] { return ::syscall(SYS_unshare, CLONE_NEWUSER); }, EPERM},
      {"setns", [] { return ::syscall(SYS_setns, 0, CLONE_NEWUSER); }, EPERM},
      {"keyctl", [] { return ::syscall(SYS_keyctl, 0, -3, 0); }, EPERM},
      {"add_key", [] { return ::syscall(SYS_add_key, "user", "k", "v", 1, -3); }, EPERM},
      {"ptrace", [] { return ::syscall(SYS_ptrace, 0, 0, 0, 0); }, EPERM},
      {"kexec_load", [] { return ::syscall(SYS_kexec_load, 0, 0, 0, 0); }, EPERM},
      {"init_module", [] { return ::syscall(SYS_init_module, nullptr, 0, ""); }, EPERM},
      {"finit_module", [] { return ::syscall(SYS_finit_module, -1, "", 0); }, EPERM},
      {"delete_module", [] { return ::syscall(SYS_delete_module, "x", 0); }, EPERM},
      {"reboot", [] { return ::syscall(SYS_reboot, 0, 0, 0, nullptr); }, EPERM},
      {"swapon", [] { return ::syscall(SYS_swapon, "/x", 0); }, EPERM},
      {"bpf", [] { return ::syscall(SYS_bpf, 0, nullptr, 0); }, EPERM},
      {"perf_event_open", [] { return ::syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0); },
       EPERM},
      {"clone(NEWUSER)", [] { return ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0); },
       EPERM},
      {"clone3", [] { return ::syscall(SYS_clone3, nullptr, 0); }, ENOSYS},
  };
  for (const Case& c : cases) {
    int got = RunFiltered(*program, [&] { return ErrnoOf(c.call()); });
    EXPECT_EQ(got, c.expected_errno) << c.what;
  }
}

// The shortened filter of a profile for three architectures (its searches
// reach their targets through instructions of their own) is one the kernel
// takes, and decides as the profile says.
TEST(SeccompCompileTest, MultiArchitectureFilterInstallsAndDecides) {
  SeccompProfile profile = DefaultSeccompProfile();
#if defined(__x86_64__)
  profile.architectures = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"};
#endif
  Result<SeccompProgram> program = CompileSeccompProfile(profile, DefaultCapabilities());
  ASSERT_TRUE(program.has_value()) << program.error().ToString();
  EXPECT_EQ(RunFiltered(*program, [] { return ::syscall(SYS_getpid) > 0 ? 0 : 1; }), 0);
  EXPECT_EQ(
      RunFiltered(*program,
                  [] { return ErrnoOf(::syscall(SYS_mount, "none", "/", "tmpfs", 0, nullptr)); }),
      EPERM);
  EXPECT_EQ(RunFiltered(*program, [] { return ErrnoOf(::syscall(SYS_unshare, CLONE_NEWUSER)); }),
            EPERM);
  EXPECT_EQ(RunFiltered(*program, [] { return ErrnoOf(::syscall(SYS_clone3, nullptr, 0)); }),
            ENOSYS);
}

TEST(SeccompCompileTest, CapabilitiesOpenTheirSyscalls) {
  CapabilitySet caps = DefaultCapabilities();
  caps.Add(21);  // CAP_SYS_ADMIN
  Result<SeccompProgram> program = CompileSeccompProfile(DefaultSeccompProfile(), caps);
  ASSERT_TRUE(program.has_value());
  // The filter lets umount2 through; the kernel then answers for itself.
  int got =
      RunFiltered(*program, [] { return ErrnoOf(::syscall(SYS_umount2, "/nonexistent", 0)); });
  EXPECT_NE(got, EPERM);
  EXPECT_NE(got, 0);
}

TEST(SeccompCompileTest, ProfileRulesAndErrnoValuesApply) {
  Result<SeccompProfile> profile = ParseSeccompProfile(R"({
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [
      {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
      {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
       "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
      {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
       "includes": {"caps": ["CAP_SYS_ADMIN"]}}
    ]})");
  ASSERT_TRUE(profile.has_value()) << profile.error().ToString();
  Result<SeccompProgram> program = CompileSeccompProfile(*profile, DefaultCapabilities());
  ASSERT_TRUE(program.has_value()) << program.error().ToString();
  EXPECT_EQ(RunFiltered(*program, [] { return ErrnoOf(::syscall(SYS_getppid)); }), 13);
  EXPECT_EQ(RunFiltered(*program, [] { return ErrnoOf(::syscall(SYS_personality, 8)); }), EPERM);
  EXPECT_EQ(
      RunFiltered(*program,
                  [] { return ErrnoOf(::syscall(SYS_personality, 0xffffffff)) == 0 ? 0 : 1; }),
      0);
  // The CAP_SYS_ADMIN rule does not apply to a default container.
  EXPECT_EQ(RunFiltered(*program, [] { return ErrnoOf(::syscall(SYS_mkdirat, -1, "", 0)); }),
            ENOENT);
}

}  // namespace
}  // namespace imgtool::runner

namespace imgtool::runner {
namespace {

TEST(SeccompCacheTest, StoresLoadsAndRejectsTamperedFiles) {
  Result<TempDir> dir = TempDir::Create("imgtool-seccomp-cache-");
  ASSERT_TRUE(dir.has_value());
  std::filesystem::path cache = dir->path() / "cache";
  SeccompProfile profile = DefaultSeccompProfile();
  // Capability sets no other test compiles, so the in-memory cache is cold.
  CapabilitySet first = CapabilitySet::FromMask(uint64_t{1} << 35);
  CapabilitySet second = CapabilitySet::FromMask(uint64_t{1} << 36);
  Result<SeccompProgram> direct = CompileSeccompProfile(profile, first);
  ASSERT_TRUE(direct.has_value());

  Result<SeccompProgram> cached = CompileSeccompProfileCached(profile, first, cache);
  ASSERT_TRUE(cached.has_value()) << cached.error().ToString();
  EXPECT_EQ(cached->instructions.size(), direct->instructions.size());
  std::filesystem::path file = cache / (SeccompCacheKey(profile, first) + ".bpf");
  ASSERT_TRUE(std::filesystem::exists(file));
  EXPECT_EQ(std::filesystem::file_size(file), direct->instructions.size() * 8 + 16);
  struct stat st {};
  ASSERT_EQ(::stat(cache.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  // A file planted under the next key with a bad checksum is not used.
  std::filesystem::path planted = cache / (SeccompCacheKey(profile, second) + ".bpf");
  imgtool::testing::WriteTestFile(planted, std::string(8 * 4, '\0') + std::string(16, 'x'), 0600);
  Result<SeccompProgram> recompiled = CompileSeccompProfileCached(profile, second, cache);
  ASSERT_TRUE(recompiled.has_value());
  EXPECT_GT(recompiled->instructions.size(), 4u);
  EXPECT_EQ(std::filesystem::file_size(planted), recompiled->instructions.size() * 8 + 16);
  EXPECT_NE(SeccompCacheKey(profile, first), SeccompCacheKey(profile, second));
}

TEST(SeccompCacheTest, AnOpenDirIsNotUsed) {
  Result<TempDir> dir = TempDir::Create("imgtool-seccomp-cache-");
  ASSERT_TRUE(dir.has_value());
  ASSERT_EQ(::chmod(dir->path().c_str(), 0777), 0);
  CapabilitySet caps = CapabilitySet::FromMask(uint64_t{1} << 37);
  Result<SeccompProgram> program =
      CompileSeccompProfileCached(DefaultSeccompProfile(), caps, dir->path());
  ASSERT_TRUE(program.has_value());
  EXPECT_TRUE(std::filesystem::is_empty(dir->path()));
}

}  // namespace
}  // namespace imgtool::runner
