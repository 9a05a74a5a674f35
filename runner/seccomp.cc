#include "runner/seccomp.h"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <nlohmann/json.hpp>
#include <set>

#include "common/file_util.h"
#include "common/log.h"
#include "common/unique_fd.h"
#include "runner/seccomp_compact.h"

namespace imgtool::runner {

namespace {

using Json = nlohmann::json;

struct ContextDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using ContextPtr = std::unique_ptr<void, ContextDeleter>;

Result<SeccompAction> ParseAction(const std::string& name) {
  static const std::map<std::string, SeccompAction, std::less<>> kActions = {
      {"SCMP_ACT_ALLOW", SeccompAction::kAllow},
      {"SCMP_ACT_ERRNO", SeccompAction::kErrno},
      {"SCMP_ACT_KILL", SeccompAction::kKillThread},
      {"SCMP_ACT_KILL_THREAD", SeccompAction::kKillThread},
      {"SCMP_ACT_KILL_PROCESS", SeccompAction::kKillProcess},
      {"SCMP_ACT_TRAP", SeccompAction::kTrap},
      {"SCMP_ACT_TRACE", SeccompAction::kTrace},
      {"SCMP_ACT_LOG", SeccompAction::kLog},
  };
  auto it = kActions.find(name);
  if (it == kActions.end()) return InvalidArgumentError("unknown action \"" + name + "\"");
  return it->second;
}

Result<SeccompOp> ParseOp(const std::string& name) {
  static const std::map<std::string, SeccompOp, std::less<>> kOps = {
      {"SCMP_CMP_NE", SeccompOp::kNotEqual},     {"SCMP_CMP_LT", SeccompOp::kLess},
      {"SCMP_CMP_LE", SeccompOp::kLessEqual},    {"SCMP_CMP_EQ", SeccompOp::kEqual},
      {"SCMP_CMP_GE", SeccompOp::kGreaterEqual}, {"SCMP_CMP_GT", SeccompOp::kGreater},
      {"SCMP_CMP_MASKED_EQ", SeccompOp::kMaskedEqual},
  };
  auto it = kOps.find(name);
  if (it == kOps.end()) return InvalidArgumentError("unknown operator \"" + name + "\"");
  return it->second;
}

// Reads an optional field of the expected type; a field of another type is an
// error rather than a silent default.
template <typename T>
Status ReadField(const Json& object, const char* key, T* out) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return OkStatus();
  try {
    *out = it->get<T>();
  } catch (const Json::exception&) {
    return InvalidArgumentError(StrCat("field \"", key, "\" has the wrong type"));
  }
  return OkStatus();
}

Result<SeccompCondition> ParseCondition(const Json& object) {
  SeccompCondition condition;
  if (!object.is_object()) return InvalidArgumentError("includes/excludes must be objects");
  IMGTOOL_TRY(ReadField(object, "caps", &condition.caps));
  IMGTOOL_TRY(ReadField(object, "arches", &condition.arches));
  // minKernel is checked at parse time: a rule for a newer kernel is dropped.
  return condition;
}

// "5.8" <= running kernel?
bool KernelAtLeast(const std::string& version) {
  struct utsname uts {};
  if (::uname(&uts) != 0) return true;
  int have_major = 0, have_minor = 0, want_major = 0, want_minor = 0;
  if (std::sscanf(uts.release, "%d.%d", &have_major, &have_minor) != 2) return true;
  if (std::sscanf(version.c_str(), "%d.%d", &want_major, &want_minor) < 1) return true;
  return have_major > want_major || (have_major == want_major && have_minor >= want_minor);
}

Result<SeccompRule> ParseRule(const Json& entry, bool* keep) {
  if (!entry.is_object()) return InvalidArgumentError("a syscalls entry is not an object");
  SeccompRule rule;
  IMGTOOL_TRY(ReadField(entry, "names", &rule.names));
  std::string single_name;
  IMGTOOL_TRY(ReadField(entry, "name", &single_name));
  if (!single_name.empty()) rule.names.push_back(single_name);
  if (rule.names.empty()) return InvalidArgumentError("a syscalls entry has no names");
  std::string action;
  IMGTOOL_TRY(ReadField(entry, "action", &action));
  if (action.empty()) return InvalidArgumentError("a syscalls entry has no action");
  IMGTOOL_ASSIGN_OR_RETURN(rule.action, ParseAction(action));
  if (entry.contains("errnoRet") && !entry["errnoRet"].is_null()) {
    int value = 0;
    IMGTOOL_TRY(ReadField(entry, "errnoRet", &value));
    rule.errno_ret = value;
  }
  if (auto it = entry.find("args"); it != entry.end() && !it->is_null()) {
    if (!it->is_array()) return InvalidArgumentError("\"args\" must be an array");
    for (const Json& arg_json : *it) {
      if (!arg_json.is_object()) return InvalidArgumentError("an args entry is not an object");
      SeccompArg arg;
      std::string op;
      IMGTOOL_TRY(ReadField(arg_json, "index", &arg.index));
      IMGTOOL_TRY(ReadField(arg_json, "value", &arg.value));
      IMGTOOL_TRY(ReadField(arg_json, "valueTwo", &arg.value_two));
      IMGTOOL_TRY(ReadField(arg_json, "op", &op));
      if (arg.index > 5) return InvalidArgumentError(StrCat("argument index ", arg.index, " > 5"));
      IMGTOOL_ASSIGN_OR_RETURN(arg.op, ParseOp(op));
      rule.args.push_back(arg);
    }
  }
  *keep = true;
  for (const char* key : {"includes", "excludes"}) {
    auto it = entry.find(key);
    if (it == entry.end() || it->is_null()) continue;
    IMGTOOL_ASSIGN_OR_RETURN(SeccompCondition condition, ParseCondition(*it));
    std::string min_kernel;
    IMGTOOL_TRY(ReadField(*it, "minKernel", &min_kernel));
    if (!min_kernel.empty()) {
      bool at_least = KernelAtLeast(min_kernel);
      if (std::string_view(key) == "includes" ? !at_least : at_least) *keep = false;
    }
    (std::string_view(key) == "includes" ? rule.includes : rule.excludes) = std::move(condition);
  }
  return rule;
}

// The names under which docker profiles refer to the running architecture.
const std::set<std::string>& NativeArchNames() {
#if defined(__x86_64__)
  static const std::set<std::string> kNames = {"amd64", "x86_64", "SCMP_ARCH_X86_64"};
#elif defined(__aarch64__)
  static const std::set<std::string> kNames = {"arm64", "aarch64", "SCMP_ARCH_AARCH64"};
#else
  static const std::set<std::string> kNames = {};
#endif
  return kNames;
}

bool ConditionHolds(const SeccompCondition& condition, CapabilitySet caps, bool include) {
  for (const std::string& name : condition.caps) {
    Result<int> cap = ParseCapability(name);
    bool has = cap && caps.Has(*cap);
    if (include ? !has : has) return false;
  }
  if (!condition.arches.empty()) {
    bool native = std::any_of(condition.arches.begin(), condition.arches.end(),
                              [](const std::string& a) { return NativeArchNames().count(a) > 0; });
    if (include ? !native : native) return false;
  }
  return true;
}

uint32_t ToLibseccompAction(SeccompAction action, std::optional<int> errno_ret,
                            std::optional<int> default_errno) {
  switch (action) {
    case SeccompAction::kAllow:
      return SCMP_ACT_ALLOW;
    case SeccompAction::kErrno:
      return SCMP_ACT_ERRNO(static_cast<uint16_t>(errno_ret.value_or(default_errno.value_or(EPERM))));
    case SeccompAction::kKillThread:
      return SCMP_ACT_KILL_THREAD;
    case SeccompAction::kKillProcess:
      return SCMP_ACT_KILL_PROCESS;
    case SeccompAction::kTrap:
      return SCMP_ACT_TRAP;
    case SeccompAction::kTrace:
      return SCMP_ACT_TRACE(static_cast<uint16_t>(errno_ret.value_or(EPERM)));
    case SeccompAction::kLog:
      return SCMP_ACT_LOG;
  }
  return SCMP_ACT_KILL_PROCESS;
}

scmp_compare ToLibseccompOp(SeccompOp op) {
  switch (op) {
    case SeccompOp::kNotEqual:
      return SCMP_CMP_NE;
    case SeccompOp::kLess:
      return SCMP_CMP_LT;
    case SeccompOp::kLessEqual:
      return SCMP_CMP_LE;
    case SeccompOp::kEqual:
      return SCMP_CMP_EQ;
    case SeccompOp::kGreaterEqual:
      return SCMP_CMP_GE;
    case SeccompOp::kGreater:
      return SCMP_CMP_GT;
    case SeccompOp::kMaskedEqual:
      return SCMP_CMP_MASKED_EQ;
  }
  return SCMP_CMP_EQ;
}

// Syscalls newer than the libseccomp we build against. Since Linux 5.1 new
// syscalls get the same number on every architecture this table covers.
int NewSyscallNumber(std::string_view name) {
  static const std::map<std::string_view, int> kNumbers = {
      {"close_range", 436},      {"openat2", 437},
      {"pidfd_getfd", 438},      {"faccessat2", 439},
      {"process_madvise", 440},  {"epoll_pwait2", 441},
      {"mount_setattr", 442},    {"quotactl_fd", 443},
      {"landlock_create_ruleset", 444}, {"landlock_add_rule", 445},
      {"landlock_restrict_self", 446},  {"memfd_secret", 447},
      {"process_mrelease", 448}, {"futex_waitv", 449},
      {"set_mempolicy_home_node", 450}, {"cachestat", 451},
      {"fchmodat2", 452},        {"map_shadow_stack", 453},
      {"futex_wake", 454},       {"futex_wait", 455},
      {"futex_requeue", 456},    {"statmount", 457},
      {"listmount", 458},        {"mseal", 462},
      {"setxattrat", 463},       {"getxattrat", 464},
      {"listxattrat", 465},      {"removexattrat", 466},
  };
  auto it = kNumbers.find(name);
  return it == kNumbers.end() ? __NR_SCMP_ERROR : it->second;
}

Status AddRule(void* ctx, const std::string& name, uint32_t action,
               const std::vector<SeccompArg>& args) {
  int nr = seccomp_syscall_resolve_name(name.c_str());
  bool raw_number = false;
  if (nr == __NR_SCMP_ERROR) {
    nr = NewSyscallNumber(name);
    raw_number = true;
  }
  if (nr == __NR_SCMP_ERROR) {
    LogDebug("seccomp: syscall \"", name, "\" unknown here, rule skipped");
    return OkStatus();
  }
  std::vector<scmp_arg_cmp> compares;
  std::set<unsigned> indexes;
  bool repeated_index = false;
  for (const SeccompArg& arg : args) {
    scmp_arg_cmp cmp{};
    cmp.arg = arg.index;
    cmp.op = ToLibseccompOp(arg.op);
    cmp.datum_a = arg.value;
    cmp.datum_b = arg.value_two;
    compares.push_back(cmp);
    repeated_index = repeated_index || !indexes.insert(arg.index).second;
  }
  auto add = [&](const scmp_arg_cmp* cmps, unsigned count) -> Status {
    int rc = seccomp_rule_add_array(ctx, action, nr, count, cmps);
    // -EACCES: the action is the filter's default already, nothing to add.
    if (rc == 0 || rc == -EACCES) return OkStatus();
    // A number libseccomp does not know can not be translated to the other
    // architectures of the filter; the rule stays out.
    if (rc == -EFAULT && raw_number) {
      LogDebug("seccomp: syscall \"", name, "\" unknown to libseccomp on some architecture, rule skipped");
      return OkStatus();
    }
    return Error(ErrorCode::kInvalidArgument, "add rule for syscall \"" + name + "\"", -rc);
  };
  if (!repeated_index) return add(compares.data(), static_cast<unsigned>(compares.size()));
  // libseccomp takes one comparison per argument and rule; like docker, a rule
  // that compares one argument twice becomes one rule per comparison.
  for (const scmp_arg_cmp& cmp : compares) IMGTOOL_TRY(add(&cmp, 1));
  return OkStatus();
}

}  // namespace

Result<SeccompProfile> ParseSeccompProfile(std::string_view json_text) {
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::exception& e) {
    return InvalidArgumentError(StrCat("seccomp profile: not JSON: ", e.what()));
  }
  if (!root.is_object()) return InvalidArgumentError("seccomp profile: not a JSON object");
  SeccompProfile profile;
  auto wrap = [](Error error) { return std::move(error.Wrap("seccomp profile")); };
  std::string default_action;
  if (Status s = ReadField(root, "defaultAction", &default_action); !s) return wrap(s.error());
  if (default_action.empty()) return InvalidArgumentError("seccomp profile: no defaultAction");
  Result<SeccompAction> action = ParseAction(default_action);
  if (!action) return wrap(action.error());
  profile.default_action = *action;
  if (root.contains("defaultErrnoRet") && !root["defaultErrnoRet"].is_null()) {
    int value = 0;
    if (Status s = ReadField(root, "defaultErrnoRet", &value); !s) return wrap(s.error());
    profile.default_errno = value;
  }
  if (Status s = ReadField(root, "architectures", &profile.architectures); !s) {
    return wrap(s.error());
  }
  if (auto it = root.find("archMap"); it != root.end() && it->is_array()) {
    for (const Json& entry : *it) {
      std::string arch;
      std::vector<std::string> sub;
      if (!entry.is_object()) return InvalidArgumentError("seccomp profile: bad archMap entry");
      if (Status s = ReadField(entry, "architecture", &arch); !s) return wrap(s.error());
      if (Status s = ReadField(entry, "subArchitectures", &sub); !s) return wrap(s.error());
      if (!NativeArchNames().count(arch)) continue;
      profile.architectures.push_back(arch);
      profile.architectures.insert(profile.architectures.end(), sub.begin(), sub.end());
    }
  }
  if (auto it = root.find("syscalls"); it != root.end() && !it->is_null()) {
    if (!it->is_array()) return InvalidArgumentError("seccomp profile: \"syscalls\" not an array");
    size_t index = 0;
    for (const Json& entry : *it) {
      bool keep = true;
      Result<SeccompRule> rule = ParseRule(entry, &keep);
      if (!rule) return wrap(std::move(rule.error().Wrap(StrCat("syscalls[", index, "]"))));
      if (keep) profile.rules.push_back(std::move(*rule));
      ++index;
    }
  }
  return profile;
}

Result<SeccompProfile> LoadSeccompProfile(const std::string& path) {
  IMGTOOL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 4u << 20));
  return ParseSeccompProfile(text).Wrap(path);
}

Result<SeccompProgram> LibseccompProgram(const SeccompProfile& profile, CapabilitySet caps) {
  uint32_t default_action =
      ToLibseccompAction(profile.default_action, std::nullopt, profile.default_errno);
  ContextPtr ctx(seccomp_init(default_action));
  if (!ctx) return InternalError("seccomp: cannot initialize a filter");
  // no_new_privs is the child's business, set once before the filter goes in.
  seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0);
  // A binary tree of syscall numbers instead of a linear list: shorter filter
  // runs for every syscall the container makes.
  seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2);
  for (const std::string& arch_name : profile.architectures) {
    std::string name = arch_name;
    if (name.starts_with("SCMP_ARCH_")) name = name.substr(10);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    uint32_t arch = seccomp_arch_resolve_name(name.c_str());
    if (arch == 0) return InvalidArgumentError("seccomp: unknown architecture \"" + arch_name + "\"");
    if (arch == seccomp_arch_native()) continue;
    int rc = seccomp_arch_add(ctx.get(), arch);
    if (rc != 0 && rc != -EEXIST) {
      return Error(ErrorCode::kInvalidArgument, "seccomp: add architecture " + arch_name, -rc);
    }
  }
  for (const SeccompRule& rule : profile.rules) {
    if (!ConditionHolds(rule.includes, caps, true) || !ConditionHolds(rule.excludes, caps, false)) {
      continue;
    }
    uint32_t action = ToLibseccompAction(rule.action, rule.errno_ret, profile.default_errno);
    if (action == default_action && rule.args.empty()) continue;
    for (const std::string& name : rule.names) {
      IMGTOOL_TRY(AddRule(ctx.get(), name, action, rule.args).Wrap("seccomp"));
    }
  }
  UniqueFd memfd(::memfd_create("imgtool-seccomp", MFD_CLOEXEC));
  if (!memfd) return ErrnoError("seccomp: memfd_create");
  if (int rc = seccomp_export_bpf(ctx.get(), memfd.get()); rc != 0) {
    return Error(ErrorCode::kInternal, "seccomp: export the filter", -rc);
  }
  struct stat st {};
  if (::fstat(memfd.get(), &st) != 0) return ErrnoError("seccomp: stat the exported filter");
  size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes == 0 || bytes % sizeof(struct sock_filter) != 0) {
    return InternalError("seccomp: exported filter has a bad size");
  }
  SeccompProgram program;
  program.instructions.resize(bytes / sizeof(struct sock_filter));
  if (::pread(memfd.get(), program.instructions.data(), bytes, 0) != static_cast<ssize_t>(bytes)) {
    return ErrnoError("seccomp: read the exported filter");
  }
  return program;
}

Result<SeccompProgram> CompileSeccompProfile(const SeccompProfile& profile, CapabilitySet caps) {
  IMGTOOL_ASSIGN_OR_RETURN(SeccompProgram program, LibseccompProgram(profile, caps));
  if (std::optional<std::vector<struct sock_filter>> compact =
          CompactSyscallDispatch(program.instructions)) {
    program.instructions = std::move(*compact);
  }
  return program;
}

namespace {

// A file or dir of the cache is trusted only if it is ours and nobody else
// may write it: the filter it holds goes straight into every container.
bool Trusted(const struct stat& st) {
  return st.st_uid == ::geteuid() && (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

Result<UniqueFd> OpenCacheDir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir.parent_path(), ec);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoError("mkdir " + dir.string());
  }
  UniqueFd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return ErrnoError("open " + dir.string());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + dir.string());
  if (!Trusted(st)) return PermissionDeniedError(dir.string() + " is not private to imgtool");
  return fd;
}

// The cache lives in a directory only imgtool can write, so its checksums
// guard against torn and damaged files, not against an attacker: a 128-bit
// FNV-1a does that without paying for OpenSSL's start-up (some milliseconds
// in a fresh process) on every container start.
struct Hash128 {
  uint64_t a = 0xcbf29ce484222325ull;
  uint64_t b = 0x84222325cbf29ce4ull;

  void Update(std::string_view data) {
    for (unsigned char c : data) {
      a = (a ^ c) * 0x100000001b3ull;
      b = (b ^ c) * 0x100000001b3ull;
      b ^= b >> 29;
    }
  }
  std::string Bytes() const {
    std::string out(16, '\0');
    std::memcpy(out.data(), &a, 8);
    std::memcpy(out.data() + 8, &b, 8);
    return out;
  }
  std::string Hex() const {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned char c : Bytes()) {
      hex += kHex[c >> 4];
      hex += kHex[c & 15];
    }
    return hex;
  }
};

constexpr size_t kChecksumBytes = 16;

std::optional<SeccompProgram> LoadCached(int dir_fd, const std::string& name) {
  UniqueFd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return std::nullopt;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || !Trusted(st)) return std::nullopt;
  Result<std::string> data = ReadFdToString(fd.get(), 1u << 20);
  if (!data || data->size() <= kChecksumBytes) return std::nullopt;
  size_t program_bytes = data->size() - kChecksumBytes;
  if (program_bytes % sizeof(struct sock_filter) != 0) return std::nullopt;
  std::string_view program_view(data->data(), program_bytes);
  Hash128 checksum;
  checksum.Update(program_view);
  if (checksum.Bytes() != std::string_view(data->data() + program_bytes, kChecksumBytes)) {
    return std::nullopt;
  }
  SeccompProgram program;
  program.instructions.resize(program_bytes / sizeof(struct sock_filter));
  std::memcpy(program.instructions.data(), program_view.data(), program_bytes);
  return program;
}

void StoreCached(int dir_fd, const std::string& name, const SeccompProgram& program) {
  std::string content(reinterpret_cast<const char*>(program.instructions.data()),
                      program.instructions.size() * sizeof(struct sock_filter));
  Hash128 checksum;
  checksum.Update(content);
  content += checksum.Bytes();
  // No fsync: a torn file fails its checksum and is compiled again.
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string tmp = StrCat(".tmp-", name, "-", rng() % 1000000000);
  UniqueFd fd(::openat(dir_fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       0600));
  if (!fd) return;
  if (!WriteAll(fd.get(), content) || ::renameat(dir_fd, tmp.c_str(), dir_fd, name.c_str()) != 0) {
    ::unlinkat(dir_fd, tmp.c_str(), 0);
  }
}

}  // namespace

// Defined by the source runner/gen writes at build time, in the binaries that
// link it; null in the others.
extern "C" {
__attribute__((weak)) extern const unsigned long long imgtool_default_seccomp_caps;
__attribute__((weak)) extern const unsigned imgtool_default_seccomp_length;
__attribute__((weak)) extern const struct sock_filter imgtool_default_seccomp_program[];
}

std::optional<SeccompProgram> EmbeddedDefaultSeccompProgram(CapabilitySet caps) {
  if (&imgtool_default_seccomp_caps == nullptr || &imgtool_default_seccomp_length == nullptr ||
      imgtool_default_seccomp_program == nullptr || imgtool_default_seccomp_caps != caps.mask()) {
    return std::nullopt;
  }
  SeccompProgram program;
  program.instructions.assign(imgtool_default_seccomp_program,
                              imgtool_default_seccomp_program + imgtool_default_seccomp_length);
  return program;
}

std::string SeccompCacheKey(const SeccompProfile& profile, CapabilitySet caps) {
  const scmp_version* version = seccomp_version();
  std::string text = StrCat("imgtool-seccomp-v3\n", version->major, ".", version->minor, ".",
                            version->micro, "\n", seccomp_arch_native(), "\n", caps.mask(), "\n",
                            static_cast<int>(profile.default_action), " ",
                            profile.default_errno.value_or(-1), "\n");
  for (const std::string& arch : profile.architectures) text += "arch " + arch + "\n";
  for (const SeccompRule& rule : profile.rules) {
    text += StrCat("rule ", static_cast<int>(rule.action), " ", rule.errno_ret.value_or(-1), "\n");
    for (const std::string& name : rule.names) text += " " + name;
    for (const SeccompArg& arg : rule.args) {
      text += StrCat("\n arg ", arg.index, " ", static_cast<int>(arg.op), " ", arg.value, " ",
                     arg.value_two);
    }
    for (const std::string& cap : rule.includes.caps) text += "\n +cap " + cap;
    for (const std::string& arch : rule.includes.arches) text += "\n +arch " + arch;
    for (const std::string& cap : rule.excludes.caps) text += "\n -cap " + cap;
    for (const std::string& arch : rule.excludes.arches) text += "\n -arch " + arch;
    text += "\n";
  }
  Hash128 hash;
  hash.Update(text);
  return hash.Hex();
}

Result<SeccompProgram> CompileSeccompProfileCached(const SeccompProfile& profile,
                                                   CapabilitySet caps,
                                                   const std::filesystem::path& cache_dir) {
  static std::mutex mutex;
  static std::map<std::string, SeccompProgram> in_memory;
  std::string key = SeccompCacheKey(profile, caps);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = in_memory.find(key); it != in_memory.end()) return it->second;
  }
  UniqueFd dir;
  if (!cache_dir.empty()) {
    Result<UniqueFd> opened = OpenCacheDir(cache_dir);
    if (opened) {
      dir = std::move(*opened);
    } else {
      LogDebug("seccomp cache not used: ", opened.error().ToString());
    }
  }
  std::string name = key + ".bpf";
  std::optional<SeccompProgram> program;
  if (dir) program = LoadCached(dir.get(), name);
  if (!program) {
    IMGTOOL_ASSIGN_OR_RETURN(SeccompProgram compiled, CompileSeccompProfile(profile, caps));
    if (dir) StoreCached(dir.get(), name, compiled);
    program = std::move(compiled);
  }
  std::lock_guard<std::mutex> lock(mutex);
  in_memory[key] = *program;
  return std::move(*program);
}

ChildStatus InstallSeccompProgram(const SeccompProgram& program) noexcept {
  struct sock_fprog fprog {};
  fprog.len = static_cast<unsigned short>(program.instructions.size());
  fprog.filter = const_cast<struct sock_filter*>(program.instructions.data());
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) {
    return ChildStatus::Failure(errno, "install the seccomp filter");
  }
  return ChildStatus();
}

}  // namespace imgtool::runner
