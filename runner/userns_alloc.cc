#include "runner/userns_alloc.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/file_lock.h"
#include "common/file_util.h"
#include "common/log.h"

namespace imgtool::runner {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// The highest id plus one: uid 4294967295 is (uid_t)-1, never an id.
constexpr uint64_t kIdLimit = 0xffffffffull;

std::optional<uint32_t> ParseU32(std::string_view text) {
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string UserName(uid_t uid) {
  // The host's passwd, read without NSS: imgtool must not load NSS modules.
  Result<std::string> passwd = ReadFileToString("/etc/passwd", 4u << 20);
  if (!passwd) return "";
  std::string_view rest = *passwd;
  while (!rest.empty()) {
    size_t end = rest.find('\n');
    std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    size_t first = line.find(':');
    size_t second = line.find(':', first == std::string_view::npos ? first : first + 1);
    size_t third = line.find(':', second == std::string_view::npos ? second : second + 1);
    if (third == std::string_view::npos) continue;
    std::optional<uint32_t> id = ParseU32(line.substr(second + 1, third - second - 1));
    if (id && *id == uid) return std::string(line.substr(0, first));
  }
  return "";
}

// `from` without `minus`; both normalized.
std::vector<IdRange> Subtract(const std::vector<IdRange>& from, const std::vector<IdRange>& minus) {
  std::vector<IdRange> out;
  size_t j = 0;
  for (const IdRange& range : from) {
    uint64_t start = range.start;
    const uint64_t end = range.end();
    while (j < minus.size() && minus[j].end() <= start) ++j;
    for (size_t k = j; k < minus.size() && minus[k].start < end; ++k) {
      if (minus[k].start > start) {
        out.push_back(
            {static_cast<uint32_t>(start), static_cast<uint32_t>(minus[k].start - start)});
      }
      start = std::max(start, minus[k].end());
    }
    if (start < end) {
      out.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(end - start)});
    }
  }
  return out;
}

uint64_t Total(const std::vector<IdRange>& ranges) {
  uint64_t total = 0;
  for (const IdRange& range : ranges) total += range.count;
  return total;
}

std::vector<IdRange> HostRanges(const std::vector<IdMap>& map) {
  std::vector<IdRange> ranges;
  for (const IdMap& line : map) ranges.push_back({line.host_id, line.size});
  return ranges;
}

std::vector<IdRange> ContainerRanges(const std::vector<IdMap>& map) {
  std::vector<IdRange> ranges;
  for (const IdMap& line : map) ranges.push_back({line.container_id, line.size});
  return ranges;
}

Json MapToJson(const std::vector<IdMap>& map) {
  Json lines = Json::array();
  for (const IdMap& line : map) lines.push_back({line.container_id, line.host_id, line.size});
  return lines;
}

std::vector<IdMap> MapFromJson(const Json& lines) {
  std::vector<IdMap> map;
  for (const Json& line : lines) {
    map.push_back(
        {line.at(0).get<uint32_t>(), line.at(1).get<uint32_t>(), line.at(2).get<uint32_t>()});
  }
  return map;
}

Status ValidateOwner(std::string_view owner) {
  bool ok = !owner.empty() && owner.size() <= 128 && owner != "." && owner != "..";
  for (char c : owner) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      ok = false;
    }
  }
  if (!ok) return InvalidArgumentError("user namespace owner \"" + std::string(owner) + "\"");
  return OkStatus();
}

Status MakeDir(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) return OkStatus();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return ErrnoError("create " + dir.string(), ec.value());
  return OkStatus();
}

}  // namespace

std::vector<IdRange> ParseSubordinateRanges(std::string_view content, std::string_view user,
                                            uid_t uid) {
  std::vector<IdRange> ranges;
  std::string uid_text = std::to_string(uid);
  while (!content.empty()) {
    size_t end = content.find('\n');
    std::string_view line = content.substr(0, end);
    content = end == std::string_view::npos ? std::string_view() : content.substr(end + 1);
    if (line.empty() || line.front() == '#') continue;
    size_t first = line.find(':');
    size_t second = first == std::string_view::npos ? first : line.find(':', first + 1);
    if (second == std::string_view::npos) continue;
    std::string_view name = line.substr(0, first);
    if (name != user && name != uid_text) continue;
    std::optional<uint32_t> start = ParseU32(line.substr(first + 1, second - first - 1));
    std::optional<uint32_t> count = ParseU32(line.substr(second + 1));
    if (!start || !count || *count == 0 || uint64_t{*start} + *count > kIdLimit) continue;
    ranges.push_back({*start, *count});
  }
  return ranges;
}

Result<SubordinateIds> SubordinateIdsOfCaller(const fs::path& file) {
  Result<std::string> content = ReadFileToString(file, 4u << 20);
  if (!content) {
    return std::move(content).error().Wrap("--userns=auto needs subordinate ids in " +
                                           file.string());
  }
  uid_t uid = ::getuid();
  std::vector<std::string> candidates;
  if (uid == 0) {
    candidates = {"containers", "root"};
  } else {
    candidates = {UserName(uid)};
  }
  std::string names;
  for (const std::string& user : candidates) {
    std::vector<IdRange> ranges = ParseSubordinateRanges(*content, user, uid);
    if (!ranges.empty()) return SubordinateIds{user, std::move(ranges)};
    names += (names.empty() ? "\"" : " or \"") + user + "\"";
  }
  return NotFoundError(StrCat("--userns=auto needs subordinate ids: ", file.string(),
                              " has no range for ", names, " (add e.g. \"", candidates.front(),
                              ":1000000:65536\")"));
}

std::vector<IdRange> NormalizeRanges(std::vector<IdRange> ranges) {
  std::erase_if(ranges, [](const IdRange& range) { return range.count == 0; });
  std::sort(ranges.begin(), ranges.end(),
            [](const IdRange& a, const IdRange& b) { return a.start < b.start; });
  std::vector<IdRange> merged;
  for (const IdRange& range : ranges) {
    if (!merged.empty() && range.start <= merged.back().end()) {
      uint64_t end = std::max(merged.back().end(), range.end());
      merged.back().count = static_cast<uint32_t>(end - merged.back().start);
    } else {
      merged.push_back(range);
    }
  }
  return merged;
}

Status ValidateExtraIdMaps(const std::vector<IdMap>& extra, std::string_view what) {
  for (size_t i = 0; i < extra.size(); ++i) {
    const IdMap& line = extra[i];
    std::string text = StrCat(line.container_id, ":", line.host_id, ":", line.size);
    if (line.size == 0) return InvalidArgumentError(StrCat(what, " ", text, ": size 0"));
    if (uint64_t{line.container_id} + line.size > kIdLimit ||
        uint64_t{line.host_id} + line.size > kIdLimit) {
      return InvalidArgumentError(StrCat(what, " ", text, ": ids past 4294967294"));
    }
    for (size_t j = 0; j < i; ++j) {
      const IdMap& other = extra[j];
      bool inside = line.container_id < uint64_t{other.container_id} + other.size &&
                    other.container_id < uint64_t{line.container_id} + line.size;
      bool outside = line.host_id < uint64_t{other.host_id} + other.size &&
                     other.host_id < uint64_t{line.host_id} + line.size;
      if (inside || outside) {
        return InvalidArgumentError(StrCat(what, " ", text, " overlaps ", other.container_id, ":",
                                           other.host_id, ":", other.size));
      }
    }
  }
  return OkStatus();
}

Result<std::vector<IdMap>> PickIdMap(const std::vector<IdRange>& available,
                                     const std::vector<IdRange>& used, uint32_t size,
                                     const std::vector<IdMap>& extra) {
  std::vector<IdRange> wanted =
      Subtract(NormalizeRanges({{0, size}}), NormalizeRanges(ContainerRanges(extra)));
  std::vector<IdRange> taken = used;
  for (const IdRange& range : HostRanges(extra)) taken.push_back(range);
  std::vector<IdRange> all = NormalizeRanges(available);
  std::vector<IdRange> free = Subtract(all, NormalizeRanges(std::move(taken)));
  const uint64_t need = Total(wanted);
  if (Total(free) < need) {
    return UnavailableError(StrCat("no ", need, " free ids left: ", Total(free), " of the ",
                                   Total(all), " in the ranges are free"));
  }
  std::vector<IdMap> map;
  size_t f = 0;
  uint64_t host = free.empty() ? 0 : free[0].start;
  for (const IdRange& target : wanted) {
    uint64_t container = target.start;
    uint64_t left = target.count;
    while (left > 0) {
      while (host >= free[f].end()) host = free[++f].start;
      uint64_t n = std::min(left, free[f].end() - host);
      map.push_back({static_cast<uint32_t>(container), static_cast<uint32_t>(host),
                     static_cast<uint32_t>(n)});
      container += n;
      host += n;
      left -= n;
    }
  }
  map.insert(map.end(), extra.begin(), extra.end());
  std::sort(map.begin(), map.end(),
            [](const IdMap& a, const IdMap& b) { return a.container_id < b.container_id; });
  if (map.size() > kMaxIdMapLines) {
    return InvalidArgumentError(StrCat("the free ids are split into ", map.size(),
                                       " pieces, more than the ", kMaxIdMapLines,
                                       " lines the kernel takes in a map"));
  }
  return map;
}

Result<UsernsClaim> UsernsClaim::Join(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT)
      return NotFoundError("the user namespace slice is gone: no " + path.string());
    return ErrnoError("open " + path.string());
  }
  while (::flock(fd.get(), LOCK_SH) != 0) {
    if (errno != EINTR) return ErrnoError("lock " + path.string());
  }
  // Taken back between the open and the lock: the slice is someone else's now.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + path.string());
  if (st.st_nlink == 0) return NotFoundError("the user namespace slice is gone: " + path.string());
  return UsernsClaim(std::move(fd));
}

fs::path UsernsAllocator::ClaimPath(std::string_view owner) const {
  return options_.state_dir / "claims" / std::string(owner);
}

bool UsernsAllocator::IsLive(const UsernsAllocation& allocation) const {
  fs::path claim = ClaimPath(allocation.owner);
  UniqueFd fd(::open(claim.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  // Shares held by others make the exclusive lock fail; ours is dropped with fd.
  if (fd && ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return true;
  if (allocation.keep_while.empty()) return false;
  struct stat st {};
  return ::lstat(allocation.keep_while.c_str(), &st) == 0 || errno != ENOENT;
}

Result<std::vector<UsernsAllocation>> UsernsAllocator::LoadLive(bool* changed) {
  *changed = false;
  std::vector<UsernsAllocation> live;
  Result<std::string> text = ReadFileToString(TablePath(), 16u << 20);
  if (!text) {
    if (text.error().code() == ErrorCode::kNotFound) return live;
    return std::move(text).error();
  }
  try {
    Json json = Json::parse(*text);
    for (const Json& entry : json.at("allocations")) {
      UsernsAllocation allocation;
      allocation.owner = entry.at("owner").get<std::string>();
      allocation.keep_while = entry.value("keep_while", std::string());
      allocation.mappings.uids = MapFromJson(entry.at("uid_map"));
      allocation.mappings.gids = MapFromJson(entry.at("gid_map"));
      if (!ValidateOwner(allocation.owner)) continue;
      if (IsLive(allocation)) {
        live.push_back(std::move(allocation));
      } else {
        LogDebug("user namespace slice of ", allocation.owner, " taken back (its owner is gone)");
        ::unlink(ClaimPath(allocation.owner).c_str());
        *changed = true;
      }
    }
  } catch (const Json::exception& e) {
    return DataLossError(StrCat(TablePath().string(), ": ", e.what()));
  }
  return live;
}

Status UsernsAllocator::Store(const std::vector<UsernsAllocation>& allocations) {
  Json list = Json::array();
  for (const UsernsAllocation& allocation : allocations) {
    list.push_back({{"owner", allocation.owner},
                    {"keep_while", allocation.keep_while.string()},
                    {"uid_map", MapToJson(allocation.mappings.uids)},
                    {"gid_map", MapToJson(allocation.mappings.gids)}});
  }
  Json json = {{"allocations", list}};
  // Atomic for readers (a rename, under the lock) but not fsynced: the table
  // describes running processes and existing directories, boot-scoped like
  // container records, and an fsync on every run and rm cost several ms.
  fs::path temp = options_.state_dir / "allocations.json.tmp";
  UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return ErrnoError("write " + temp.string());
  IMGTOOL_TRY(WriteAll(fd.get(), json.dump() + "\n").Wrap("write " + temp.string()));
  fd.reset();
  if (::rename(temp.c_str(), TablePath().c_str()) != 0) {
    return ErrnoError("rename to " + TablePath().string());
  }
  return OkStatus();
}

Result<UsernsLease> UsernsAllocator::Allocate(const UsernsRequest& request) {
  IMGTOOL_TRY(ValidateOwner(request.owner));
  if (request.size == 0) return InvalidArgumentError("--userns=auto: size 0");
  IMGTOOL_TRY(ValidateExtraIdMaps(request.extra_uids, "uidmapping"));
  IMGTOOL_TRY(ValidateExtraIdMaps(request.extra_gids, "gidmapping"));
  IMGTOOL_ASSIGN_OR_RETURN(SubordinateIds subuids, SubordinateIdsOfCaller(options_.subuid_file));
  IMGTOOL_ASSIGN_OR_RETURN(SubordinateIds subgids, SubordinateIdsOfCaller(options_.subgid_file));
  std::string what = "--userns=auto: " + options_.state_dir.string();
  IMGTOOL_TRY(MakeDir(options_.state_dir).Wrap(what));
  IMGTOOL_TRY(MakeDir(options_.state_dir / "claims").Wrap(what));
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock,
                           FileLock::Acquire(LockPath(), FileLock::Mode::kExclusive).Wrap(what));
  bool changed = false;
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<UsernsAllocation> live, LoadLive(&changed).Wrap(what));
  for (const UsernsAllocation& allocation : live) {
    if (allocation.owner == request.owner) {
      return AlreadyExistsError("--userns=auto: " + request.owner + " has a slice already");
    }
  }
  std::vector<IdRange> used_uids, used_gids;
  for (const UsernsAllocation& allocation : live) {
    for (const IdRange& range : HostRanges(allocation.mappings.uids)) used_uids.push_back(range);
    for (const IdRange& range : HostRanges(allocation.mappings.gids)) used_gids.push_back(range);
  }
  auto pick = [&](const SubordinateIds& ids, const std::vector<IdRange>& used,
                  const std::vector<IdMap>& extra, const fs::path& file,
                  const char* kind) -> Result<std::vector<IdMap>> {
    Result<std::vector<IdMap>> map =
        PickIdMap(ids.ranges, NormalizeRanges(used), request.size, extra);
    if (!map) {
      return std::move(map).error().Wrap(StrCat("--userns=auto: ", request.size, " ", kind,
                                                " of \"", ids.user, "\" in ", file.string(),
                                                " (containers holding slices: ", live.size(), ")"));
    }
    return map;
  };
  UsernsAllocation allocation;
  allocation.owner = request.owner;
  allocation.keep_while = request.keep_while;
  IMGTOOL_ASSIGN_OR_RETURN(allocation.mappings.uids, pick(subuids, used_uids, request.extra_uids,
                                                          options_.subuid_file, "uids"));
  IMGTOOL_ASSIGN_OR_RETURN(allocation.mappings.gids, pick(subgids, used_gids, request.extra_gids,
                                                          options_.subgid_file, "gids"));

  // The claim is locked before the slice is written: nobody sees it unheld.
  UsernsLease lease;
  lease.claim_path = ClaimPath(request.owner);
  UniqueFd claim(::open(lease.claim_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!claim) return ErrnoError(what + ": create " + lease.claim_path.string());
  if (::flock(claim.get(), LOCK_SH) != 0) {
    return ErrnoError(what + ": lock " + lease.claim_path.string());
  }
  live.push_back(allocation);
  if (Status stored = Store(live); !stored) {
    ::unlink(lease.claim_path.c_str());
    return std::move(stored).error().Wrap(what);
  }
  lease.mappings = std::move(allocation.mappings);
  lease.claim = UsernsClaim(std::move(claim));
  return lease;
}

Status UsernsAllocator::Free(std::string_view owner) {
  IMGTOOL_TRY(ValidateOwner(owner));
  std::error_code ec;
  if (!fs::exists(options_.state_dir, ec)) return OkStatus();
  std::string what = "free the user namespace slice of " + std::string(owner);
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock,
                           FileLock::Acquire(LockPath(), FileLock::Mode::kExclusive).Wrap(what));
  bool changed = false;
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<UsernsAllocation> live, LoadLive(&changed).Wrap(what));
  size_t before = live.size();
  std::erase_if(live, [&](const UsernsAllocation& a) { return a.owner == owner; });
  ::unlink(ClaimPath(owner).c_str());
  if (live.size() == before && !changed) return OkStatus();
  return Store(live).Wrap(what);
}

Result<std::vector<UsernsAllocation>> UsernsAllocator::List() {
  std::error_code ec;
  if (!fs::exists(options_.state_dir, ec)) return std::vector<UsernsAllocation>();
  IMGTOOL_ASSIGN_OR_RETURN(FileLock lock,
                           FileLock::Acquire(LockPath(), FileLock::Mode::kExclusive));
  bool changed = false;
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<UsernsAllocation> live, LoadLive(&changed));
  if (changed) IMGTOOL_TRY(Store(live));
  return live;
}

}  // namespace imgtool::runner
