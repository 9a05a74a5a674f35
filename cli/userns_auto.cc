#include "cli/userns_auto.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <optional>

#include "common/file_util.h"
#include "common/log.h"

namespace imgtool::cli {

namespace {

namespace fs = std::filesystem;

constexpr uint32_t kNobody = 65534;

std::optional<uint32_t> ParseId(std::string_view text) {
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Fields of a colon-separated line.
std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> fields;
  while (true) {
    size_t colon = line.find(':');
    fields.push_back(line.substr(0, colon));
    if (colon == std::string_view::npos) return fields;
    line = line.substr(colon + 1);
  }
}

// The highest id of /etc/passwd (uid and gid, fields 2 and 3) or /etc/group
// (gid, field 2) text, nobody's and nogroup's left out.
uint32_t HighestIdInAccounts(std::string_view text, bool passwd) {
  uint32_t highest = 0;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    std::vector<std::string_view> fields = Fields(line);
    if (fields.size() < (passwd ? 4u : 3u)) continue;
    if (fields[0] == "nobody" || fields[0] == "nogroup") continue;
    for (size_t i = 2; i < (passwd ? 4u : 3u); ++i) {
      std::optional<uint32_t> id = ParseId(fields[i]);
      if (id && *id != kNobody) highest = std::max(highest, *id);
    }
  }
  return highest;
}

// The owners of everything under the directory `fd` (which this closes).
Status ScanOwners(UniqueFd fd, const fs::path& path, uint32_t* highest) {
  DIR* raw = ::fdopendir(fd.get());
  if (raw == nullptr) return ErrnoError("list " + path.string());
  fd.release();
  std::unique_ptr<DIR, int (*)(DIR*)> dir(raw, ::closedir);
  while (true) {
    errno = 0;
    dirent* entry = ::readdir(dir.get());
    if (entry == nullptr) {
      if (errno != 0) return ErrnoError("list " + path.string());
      return OkStatus();
    }
    std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(::dirfd(dir.get()), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("stat " + (path / name).string());
    }
    *highest =
        std::max({*highest, static_cast<uint32_t>(st.st_uid), static_cast<uint32_t>(st.st_gid)});
    if (!S_ISDIR(st.st_mode)) continue;
    UniqueFd child(::openat(::dirfd(dir.get()), entry->d_name,
                            O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!child) return ErrnoError("open " + (path / name).string());
    IMGTOOL_TRY(ScanOwners(std::move(child), path / name, highest));
  }
}

// /etc/NAME of the topmost layer that has it; nullopt when none has (or a
// whiteout, a symlink or an odd file hides it).
std::optional<std::string> TopmostEtcFile(const std::vector<fs::path>& layers, const char* name) {
  for (const fs::path& layer : layers) {
    UniqueFd etc(::open((layer / "etc").c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!etc) {
      if (errno == ENOENT) continue;
      return std::nullopt;
    }
    struct stat st {};
    if (::fstatat(etc.get(), name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISREG(st.st_mode)) return std::nullopt;
    UniqueFd file(::openat(etc.get(), name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!file) return std::nullopt;
    Result<std::string> text = ReadFdToString(file.get(), 16u << 20);
    if (!text) return std::nullopt;
    return std::move(*text);
  }
  return std::nullopt;
}

}  // namespace

Result<uint32_t> HighestIdInLayers(const std::vector<fs::path>& layers) {
  uint32_t highest = 0;
  for (const fs::path& layer : layers) {
    UniqueFd fd(::open(layer.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return ErrnoError("open layer " + layer.string());
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat layer " + layer.string());
    highest =
        std::max({highest, static_cast<uint32_t>(st.st_uid), static_cast<uint32_t>(st.st_gid)});
    IMGTOOL_TRY(ScanOwners(std::move(fd), layer, &highest));
  }
  if (std::optional<std::string> passwd = TopmostEtcFile(layers, "passwd")) {
    highest = std::max(highest, HighestIdInAccounts(*passwd, true));
  }
  if (std::optional<std::string> group = TopmostEtcFile(layers, "group")) {
    highest = std::max(highest, HighestIdInAccounts(*group, false));
  }
  return highest;
}

Result<uint32_t> HighestIdOfImage(const fs::path& cache_dir, std::string_view chain_id,
                                  const std::function<Result<std::vector<fs::path>>()>& layers) {
  std::string name(chain_id);
  std::replace(name.begin(), name.end(), ':', '-');
  bool cacheable = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
  fs::path cached = cache_dir / name;
  if (cacheable) {
    if (Result<std::string> text = ReadFileToString(cached, 64); text) {
      std::string_view value = *text;
      if (value.ends_with('\n')) value.remove_suffix(1);
      if (std::optional<uint32_t> id = ParseId(value)) return *id;
    }
  }
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<fs::path> dirs, layers());
  IMGTOOL_ASSIGN_OR_RETURN(uint32_t highest, HighestIdInLayers(dirs));
  if (cacheable) {
    std::error_code ec;
    fs::create_directories(cache_dir, ec);
    Status written = WriteFileAtomic(cached, std::to_string(highest) + "\n", 0600);
    if (!written) LogDebug("--userns=auto: cache ", written.error().ToString());
  }
  return highest;
}

std::vector<fs::path> LayerDirsOfMounts(const std::vector<Mount>& mounts) {
  std::vector<fs::path> dirs;
  for (const Mount& mount : mounts) {
    if (mount.type == "bind") {
      dirs.push_back(mount.source);
      continue;
    }
    if (mount.type != "overlay") continue;
    for (const std::string& option : mount.options) {
      if (!option.starts_with("lowerdir=")) continue;
      std::string_view rest = std::string_view(option).substr(9);
      while (!rest.empty()) {
        size_t colon = rest.find(':');
        dirs.emplace_back(std::string(rest.substr(0, colon)));
        rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
      }
    }
  }
  return dirs;
}

uint32_t HighestIdInUserSpec(std::string_view user) {
  uint32_t highest = 0;
  for (std::string_view part : Fields(user)) {
    if (std::optional<uint32_t> id = ParseId(part)) highest = std::max(highest, *id);
  }
  return highest;
}

Result<uint32_t> AutoUsernsSize(const UsernsFlag& flag, uint32_t highest_id) {
  if (flag.size) return *flag.size;
  uint64_t needed = uint64_t{highest_id} + 1;
  if (needed > kAutoUsernsMaxSize) {
    return InvalidArgumentError(StrCat("--userns=auto: the container uses id ", highest_id,
                                       ", and without size= it gets at most ", kAutoUsernsMaxSize,
                                       " ids (use --userns=auto:size=", needed, " or more)"));
  }
  return std::max<uint32_t>(kAutoUsernsMinSize, static_cast<uint32_t>(needed));
}

fs::path UsernsStateDir() {
  const char* dir = ::getenv("IMGTOOL_USERNS_STATE_DIR");
  return dir && *dir ? fs::path(dir) : fs::path(runner::kUsernsStateDir);
}

Result<std::shared_ptr<runner::UsernsLease>> AllocateRunUserns(
    const RunFlags& flags, const fs::path& store_state_dir, const ContainerStore& containers,
    overlay::Snapshotter& snapshotter, const std::string& top, ContainerRecord* record,
    runner::ContainerSpec* spec) {
  IMGTOOL_ASSIGN_OR_RETURN(UsernsFlag flag, ParseUsernsFlag(flags.userns));
  uint32_t highest = HighestIdInUserSpec(spec->process.user);
  if (!flag.size) {
    auto layers = [&]() -> Result<std::vector<fs::path>> {
      Result<std::vector<Mount>> mounts = snapshotter.MountsOver(
          top, containers.UpperDirOf(record->id), containers.WorkDirOf(record->id));
      if (!mounts) return std::move(mounts).error();
      return LayerDirsOfMounts(*mounts);
    };
    IMGTOOL_ASSIGN_OR_RETURN(uint32_t image_highest,
                             HighestIdOfImage(store_state_dir / "userns-ids", top, layers)
                                 .Wrap("--userns=auto: the ids the image uses"));
    highest = std::max(highest, image_highest);
  }
  IMGTOOL_ASSIGN_OR_RETURN(uint32_t size, AutoUsernsSize(flag, highest));
  runner::UsernsRequest request;
  request.owner = record->id;
  if (!flags.remove) request.keep_while = containers.DirOf(record->id);
  request.size = size;
  request.extra_uids = flag.extra_uids;
  request.extra_gids = flag.extra_gids;
  fs::path allocations = UsernsStateDir();
  runner::UsernsAllocator allocator({.state_dir = allocations});
  IMGTOOL_ASSIGN_OR_RETURN(runner::UsernsLease lease, allocator.Allocate(request));
  auto one_line = [](const std::vector<runner::IdMap>& map) {
    std::string text = runner::FormatIdMap(map);
    if (!text.empty()) text.pop_back();
    std::replace(text.begin(), text.end(), '\n', ',');
    return text;
  };
  LogDebug("--userns=auto: ", size, " ids; uid map ", one_line(lease.mappings.uids), "; gid map ",
           one_line(lease.mappings.gids));
  record->id_mappings = lease.mappings;
  record->userns_state_dir = allocations.string();
  spec->id_mappings = lease.mappings;
  spec->userns_claim = lease.claim_path;
  return std::make_shared<runner::UsernsLease>(std::move(lease));
}

}  // namespace imgtool::cli
