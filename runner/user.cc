#include "runner/user.h"

#include <fcntl.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <optional>

#include "common/file_util.h"
#include "common/safe_path.h"

namespace imgtool::runner {

namespace {

// Files in a rootfs are untrusted; a huge /etc/passwd is refused, not read.
constexpr size_t kMaxAccountFileSize = 4u << 20;

std::optional<uint32_t> ParseId(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  // (uid_t)-1 means "unchanged" to setresuid; it is never a real id.
  if (value == UINT32_MAX) return std::nullopt;
  return value;
}

std::vector<std::string_view> Split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t end = text.find(separator, start);
    if (end == std::string_view::npos) {
      parts.push_back(text.substr(start));
      return parts;
    }
    parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
}

// Calls fn(fields) for every well-formed line of a colon-separated file with at
// least `min_fields` fields; comments and malformed lines are skipped, as libc does.
template <typename Fn>
void ForEachEntry(std::string_view content, size_t min_fields, Fn&& fn) {
  for (std::string_view line : Split(content, '\n')) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    std::vector<std::string_view> fields = Split(line, ':');
    if (fields.size() < min_fields) continue;
    if (fn(fields)) return;
  }
}

struct PasswdEntry {
  std::string name;
  uid_t uid;
  gid_t gid;
  std::string home;
};

std::optional<PasswdEntry> FindPasswd(std::string_view passwd, std::string_view user) {
  std::optional<uint32_t> wanted_id = ParseId(user);
  std::optional<PasswdEntry> found;
  ForEachEntry(passwd, 7, [&](const std::vector<std::string_view>& f) {
    std::optional<uint32_t> uid = ParseId(f[2]);
    std::optional<uint32_t> gid = ParseId(f[3]);
    if (!uid || !gid) return false;
    if (f[0] == user || (wanted_id && *uid == *wanted_id)) {
      found = PasswdEntry{std::string(f[0]), *uid, *gid, std::string(f[5])};
      return true;
    }
    return false;
  });
  return found;
}

std::optional<gid_t> FindGroup(std::string_view group_file, std::string_view group) {
  std::optional<uint32_t> wanted_id = ParseId(group);
  std::optional<gid_t> found;
  ForEachEntry(group_file, 3, [&](const std::vector<std::string_view>& f) {
    std::optional<uint32_t> gid = ParseId(f[2]);
    if (!gid) return false;
    if (f[0] == group || (wanted_id && *gid == *wanted_id)) {
      found = *gid;
      return true;
    }
    return false;
  });
  return found;
}

std::vector<gid_t> GroupsWithMember(std::string_view group_file, std::string_view user) {
  std::vector<gid_t> gids;
  ForEachEntry(group_file, 4, [&](const std::vector<std::string_view>& f) {
    std::optional<uint32_t> gid = ParseId(f[2]);
    if (!gid || f[3].empty()) return false;
    for (std::string_view member : Split(f[3], ',')) {
      if (member == user && std::find(gids.begin(), gids.end(), *gid) == gids.end()) {
        gids.push_back(*gid);
      }
    }
    return false;
  });
  return gids;
}

bool ValidField(std::string_view field) {
  return std::none_of(field.begin(), field.end(), [](char c) {
    return c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\0';
  });
}

Result<std::string> ReadAccountFile(int root_fd, std::string_view path) {
  Result<UniqueFd> fd = SafeOpenAt(root_fd, path, O_RDONLY | O_NOCTTY | O_NONBLOCK);
  if (!fd) {
    if (fd.error().code() == ErrorCode::kNotFound) return std::string();
    return std::move(fd).error().Wrap("read " + std::string(path) + " of the rootfs");
  }
  return ReadFdToString(fd->get(), kMaxAccountFileSize).Wrap("read " + std::string(path) +
                                                               " of the rootfs");
}

}  // namespace

Result<UserSpec> ParseUserSpec(std::string_view text) {
  UserSpec spec;
  size_t colon = text.find(':');
  spec.user = std::string(text.substr(0, colon));
  if (colon != std::string_view::npos) {
    spec.group = std::string(text.substr(colon + 1));
    if (spec.group.empty()) {
      return InvalidArgumentError("user \"" + std::string(text) + "\": empty group after ':'");
    }
  }
  if (!ValidField(spec.user) || !ValidField(spec.group)) {
    return InvalidArgumentError("user \"" + std::string(text) +
                                "\": expected USER[:GROUP] without spaces or a second ':'");
  }
  return spec;
}

Result<ResolvedUser> ResolveUserFromFiles(const UserSpec& spec, std::string_view passwd,
                                          std::string_view group) {
  ResolvedUser resolved;
  std::string user = spec.user.empty() ? "0" : spec.user;
  std::optional<PasswdEntry> entry = FindPasswd(passwd, user);
  if (entry) {
    resolved.uid = entry->uid;
    resolved.gid = entry->gid;
    if (!entry->home.empty()) resolved.home = entry->home;
    resolved.additional_gids = GroupsWithMember(group, entry->name);
  } else if (std::optional<uint32_t> uid = ParseId(user)) {
    resolved.uid = *uid;
  } else {
    return NotFoundError("user \"" + user + "\": no such user in the image's /etc/passwd");
  }
  if (!spec.group.empty()) {
    if (std::optional<gid_t> gid = FindGroup(group, spec.group)) {
      resolved.gid = *gid;
    } else if (std::optional<uint32_t> number = ParseId(spec.group)) {
      resolved.gid = *number;
    } else {
      return NotFoundError("group \"" + spec.group + "\": no such group in the image's /etc/group");
    }
  }
  return resolved;
}

Result<ResolvedUser> ResolveUser(int root_fd, const UserSpec& spec) {
  IMGTOOL_ASSIGN_OR_RETURN(std::string passwd, ReadAccountFile(root_fd, "/etc/passwd"));
  IMGTOOL_ASSIGN_OR_RETURN(std::string group, ReadAccountFile(root_fd, "/etc/group"));
  return ResolveUserFromFiles(spec, passwd, group);
}

}  // namespace imgtool::runner
