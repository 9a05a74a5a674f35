// Rules that make a run step's layer depend only on what the step did, not on
// when or where it ran (docs/recipe.md, "Reproducibility").
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace imgtool::builder {

// Files known to differ between two otherwise identical runs. Truncated: the
// file stays (programs expect it) but is empty. Removed: caches that programs
// rebuild when missing.
inline constexpr std::string_view kTruncatedFiles[] = {
    "etc/machine-id",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/bootstrap.log",
    "var/log/lastlog",
    "var/log/faillog",
    "var/log/wtmp",
    "var/log/btmp",
};
inline constexpr std::string_view kRemovedFiles[] = {
    "var/log/apt/eipp.log.xz",          "var/cache/ldconfig/aux-cache",
    "var/cache/apt/pkgcache.bin",       "var/cache/apt/srcpkgcache.bin",
    "var/lib/systemd/random-seed",      "var/lib/dbus/machine-id",
    "var/cache/debconf/config.dat-old", "var/cache/debconf/templates.dat-old",
};

// Applies the rules above to regular files in an overlay upper dir (what the
// step wrote); files only in lower layers are not touched.
Status NormalizeUpperDir(const std::filesystem::path& upper);

// The runner creates mount targets that the image lacks (/etc/hosts,
// /etc/hostname, /etc/resolv.conf, /proc, /sys, /dev and the step's own mount
// targets) as empty files and directories; they are not the step's work.
// Removes those still empty from the upper dir, and directories that became
// empty by it.
Status RemoveRunnerMountTargets(const std::filesystem::path& upper,
                                const std::vector<std::string>& extra_targets);

}  // namespace imgtool::builder
