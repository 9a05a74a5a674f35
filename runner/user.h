// `-u USER[:GROUP]`: names and numbers resolved through the rootfs's own
// /etc/passwd and /etc/group (never the host's), read with SafeOpenAt so that a
// symlinked /etc/passwd in an image can not point at a host file.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace imgtool::runner {

struct UserSpec {
  std::string user;   // name or number; empty means root
  std::string group;  // name or number; empty means the user's primary group
};

// "USER", "USER:GROUP", "UID:GID", ":GROUP" (root with that group). Empty
// text is root. Fields may not contain whitespace or a second ':'.
Result<UserSpec> ParseUserSpec(std::string_view text);

struct ResolvedUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> additional_gids;  // groups of /etc/group that list the user
  std::string home = "/";              // from /etc/passwd, "/" when unknown
};

// Resolves against the text of passwd and group files (empty when missing).
// A number not in passwd is used as is, with group 0 and home "/"; a name not
// in passwd is NotFound. The same for groups.
Result<ResolvedUser> ResolveUserFromFiles(const UserSpec& spec, std::string_view passwd,
                                          std::string_view group);

// Reads /etc/passwd and /etc/group inside the rootfs open at `root_fd`.
Result<ResolvedUser> ResolveUser(int root_fd, const UserSpec& spec);

}  // namespace imgtool::runner
