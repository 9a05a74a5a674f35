#include "runner/cgroup_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <set>
#include <thread>

#include "common/file_util.h"
#include "common/log.h"

namespace imgtool::runner {

namespace {

// Opens <dir>/<file> once and writes each value with a write() of its own
// (the kernel parses every write on its own). O_TRUNC is a no-op on
// cgroupfs and keeps fake trees in tests exact.
Status WriteEach(const std::filesystem::path& dir, std::string_view file,
                 const std::vector<std::string_view>& values) {
  std::filesystem::path path = dir / file;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (!fd) return ErrnoError(StrCat("open ", path.string()));
  for (std::string_view value : values) {
    ssize_t n;
    do {
      n = ::write(fd.get(), value.data(), value.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) return ErrnoError(StrCat("write \"", value, "\" to ", path.string()));
    if (static_cast<size_t>(n) != value.size()) {
      return InternalError(StrCat("write \"", value, "\" to ", path.string(), ": short write"));
    }
  }
  return OkStatus();
}

}  // namespace

Status WriteCgroupFile(const std::filesystem::path& dir, std::string_view file,
                       std::string_view value) {
  return WriteEach(dir, file, {value});
}

Status WriteCgroupFileLines(const std::filesystem::path& dir, std::string_view file,
                            const std::vector<std::string>& lines) {
  std::vector<std::string> with_newlines;
  for (const std::string& line : lines) with_newlines.push_back(line + "\n");
  return WriteEach(dir, file, {with_newlines.begin(), with_newlines.end()});
}

Result<std::string> ReadCgroupFile(const std::filesystem::path& dir, std::string_view file) {
  return ReadFileToString(dir / file, 1u << 20);
}

bool CgroupFileExists(const std::filesystem::path& dir, std::string_view file) {
  return ::access((dir / file).c_str(), F_OK) == 0;
}

Result<std::vector<pid_t>> ReadCgroupPids(const std::filesystem::path& dir) {
  IMGTOOL_ASSIGN_OR_RETURN(std::string text, ReadCgroupFile(dir, "cgroup.procs"));
  std::vector<pid_t> pids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    if (!line.empty()) {
      pid_t pid = 0;
      for (char c : line) {
        if (c < '0' || c > '9') {
          return DataLossError(StrCat((dir / "cgroup.procs").string(), ": bad pid \"", line, "\""));
        }
        pid = pid * 10 + (c - '0');
      }
      pids.push_back(pid);
    }
    pos = end + 1;
  }
  return pids;
}

Status SignalCgroupPids(const std::filesystem::path& dir, int sig) {
  const int rounds = sig == SIGKILL ? 20 : 1;
  std::set<pid_t> signalled;
  for (int round = 0; round < rounds; ++round) {
    auto pids = ReadCgroupPids(dir);
    if (!pids) {
      if (pids.error().code() == ErrorCode::kNotFound) return OkStatus();
      return std::move(pids).error().Wrap("signal cgroup");
    }
    bool sent_new = false;
    for (pid_t pid : *pids) {
      if (::kill(pid, sig) != 0 && errno != ESRCH) {
        return ErrnoError(StrCat("signal ", sig, " to pid ", pid, " of cgroup ", dir.string()));
      }
      sent_new |= signalled.insert(pid).second;
    }
    if (pids->empty() || !sent_new) break;
  }
  return OkStatus();
}

std::optional<std::string> V1CgroupPathOf(std::string_view proc_cgroup,
                                          const std::set<std::string>& controllers) {
  std::string_view rest = proc_cgroup;
  while (!rest.empty()) {
    size_t end = rest.find('\n');
    std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    size_t first = line.find(':');
    size_t second = first == std::string_view::npos ? first : line.find(':', first + 1);
    if (second == std::string_view::npos) continue;
    std::string_view listed = line.substr(first + 1, second - first - 1);
    // "cpu,cpuacct" holds "cpu": whole names only.
    bool match = false;
    size_t start = 0;
    while (!match && start <= listed.size()) {
      size_t comma = listed.find(',', start);
      if (comma == std::string_view::npos) comma = listed.size();
      match = controllers.contains(std::string(listed.substr(start, comma - start)));
      start = comma + 1;
    }
    if (!match) continue;
    std::string_view path = line.substr(second + 1);
    while (!path.empty() && path.front() == '/') path.remove_prefix(1);
    return std::string(path);
  }
  return std::nullopt;
}

Status MakeCgroupDir(const std::filesystem::path& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoError(StrCat("create cgroup ", dir.string()));
  }
  return OkStatus();
}

Status RemoveCgroupDir(const std::filesystem::path& dir, int patience_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(patience_ms);
  auto pause = std::chrono::microseconds(200);
  while (true) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return OkStatus();
    int err = errno;
    if (err != EBUSY || std::chrono::steady_clock::now() >= deadline) {
      if (err == EBUSY) {
        auto pids = ReadCgroupPids(dir);
        size_t count = pids ? pids->size() : 0;
        return Error(ErrorCode::kFailedPrecondition,
                     StrCat("remove cgroup ", dir.string(), ": still has ", count, " process(es)"),
                     err);
      }
      return ErrnoError(StrCat("remove cgroup ", dir.string()), err);
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(20000));
  }
}

std::optional<int64_t> FindKeyedValue(std::string_view text, std::string_view key) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ' ') {
      std::string_view number = line.substr(key.size() + 1);
      bool negative = !number.empty() && number.front() == '-';
      if (negative) number.remove_prefix(1);
      if (number.empty()) return std::nullopt;
      int64_t value = 0;
      for (char c : number) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + (c - '0');
      }
      return negative ? -value : value;
    }
    pos = end + 1;
  }
  return std::nullopt;
}

std::vector<LimitController> ControllersFor(const CgroupResources& r) {
  std::vector<LimitController> out;
  if (r.memory_bytes) out.push_back({"memory", "--memory"});
  if (r.cpus) out.push_back({"cpu", "--cpus"});
  if (r.cpu_shares) out.push_back({"cpu", "--cpu-shares"});
  if (r.cpuset_cpus) out.push_back({"cpuset", "--cpuset-cpus"});
  if (r.pids_limit) out.push_back({"pids", "--pids-limit"});
  return out;
}

Status ValidateCgroupResources(const CgroupResources& r) {
  if (r.memory_bytes && *r.memory_bytes <= 0) {
    return InvalidArgumentError(StrCat("--memory ", *r.memory_bytes, ": must be positive"));
  }
  if (r.memory_bytes && *r.memory_bytes < 6 * 1024 * 1024) {
    // Below this the runtime itself cannot start inside the limit.
    return InvalidArgumentError(
        StrCat("--memory ", *r.memory_bytes, ": the minimum memory limit is 6 MiB"));
  }
  if (r.memory_swap_bytes && *r.memory_swap_bytes != -1) {
    if (!r.memory_bytes) {
      return InvalidArgumentError("--memory-swap needs --memory as well");
    }
    if (*r.memory_swap_bytes < *r.memory_bytes) {
      return InvalidArgumentError(StrCat("--memory-swap ", *r.memory_swap_bytes,
                                         ": must be at least --memory (", *r.memory_bytes,
                                         "), it is the total of memory and swap"));
    }
  }
  if (r.cpus && !(*r.cpus > 0 && std::isfinite(*r.cpus))) {
    return InvalidArgumentError(StrCat("--cpus ", *r.cpus, ": must be a positive number"));
  }
  if (r.cpu_shares && (*r.cpu_shares < 2 || *r.cpu_shares > 262144)) {
    return InvalidArgumentError(
        StrCat("--cpu-shares ", *r.cpu_shares, ": must be between 2 and 262144"));
  }
  if (r.cpuset_cpus) {
    if (r.cpuset_cpus->empty() ||
        r.cpuset_cpus->find_first_not_of("0123456789,-") != std::string::npos) {
      return InvalidArgumentError(
          StrCat("--cpuset-cpus \"", *r.cpuset_cpus, "\": expected a list like 0-2,4"));
    }
  }
  return OkStatus();
}

namespace {

// The two functions below are all imgtool needed of libm: computed here, so
// that imgtool loads no libm at start (about 0.09 ms of every run).

double Log2(double x) {  // x > 0, finite
  // x = m * 2^e with m in [1, 2); ln(m) = 2 atanh((m - 1) / (m + 1)).
  uint64_t bits = std::bit_cast<uint64_t>(x);
  int exponent = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  double m = std::bit_cast<double>((bits & ((uint64_t{1} << 52) - 1)) | (uint64_t{1023} << 52));
  if (exponent == -1023) return Log2(x * 0x1p52) - 52;  // subnormal
  double t = (m - 1) / (m + 1);                         // in [0, 1/3)
  double t2 = t * t;
  double sum = 0;
  for (int k = 41; k >= 1; k -= 2) sum = sum * t2 + 1.0 / k;
  constexpr double kLn2 = 0.693147180559945309417232121458176568;
  return exponent + 2 * t * sum / kLn2;
}

double Exp10(double y) {  // |y| < 300
  // 10^y = 2^(y log2 10) = 2^k * e^r with |r| <= ln(2) / 2.
  constexpr double kLog2Of10 = 3.32192809488736234787031942948939018;
  constexpr double kLn2 = 0.693147180559945309417232121458176568;
  double z = y * kLog2Of10;
  auto k = static_cast<int64_t>(z < 0 ? z - 0.5 : z + 0.5);
  double r = (z - static_cast<double>(k)) * kLn2;
  double term = 1;
  double sum = 1;
  for (int n = 1; n < 30; ++n) {
    term *= r / n;
    sum += term;
  }
  return sum * std::bit_cast<double>(static_cast<uint64_t>(k + 1023) << 52);
}

}  // namespace

CpuQuota CpusToQuota(double cpus) {
  constexpr int64_t kPeriod = 100000;
  // Rounded to the nearest microsecond (cpus > 0); the kernel refuses
  // quotas below 1 ms.
  // (Far past what the kernel takes, which then refuses it; no overflow here.)
  double exact = std::min(cpus * kPeriod, 1e15);
  auto quota = static_cast<int64_t>(exact);
  if (exact - static_cast<double>(quota) >= 0.5) ++quota;
  return {std::max<int64_t>(1000, quota), kPeriod};
}

uint64_t CpuSharesToWeight(uint64_t shares) {
  if (shares == 0) return 0;
  if (shares <= 2) return 1;
  if (shares >= 262144) return 10000;
  double l = Log2(static_cast<double>(shares));
  double exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
  // The epsilon keeps exact powers (1024 -> 100) from rounding up past float
  // noise. Ceiling of a positive value below 10001.
  double value = Exp10(exponent) - 1e-6;
  auto weight = static_cast<uint64_t>(value);
  if (static_cast<double>(weight) < value) ++weight;
  return weight;
}

std::optional<int64_t> EffectiveMemorySwap(const CgroupResources& r) {
  if (r.memory_swap_bytes) return *r.memory_swap_bytes;
  if (r.memory_bytes) return 2 * *r.memory_bytes;
  return std::nullopt;
}

}  // namespace imgtool::runner
