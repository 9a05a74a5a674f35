// `imgtool run --userns=auto[:OPTIONS]`: how many ids a container of an
// image needs, and its slice of the subordinate ids (runner/userns_alloc.h).
// Nothing here runs without --userns=auto.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cli/containers.h"
#include "cli/run_options.h"
#include "common/error.h"
#include "common/mount.h"
#include "overlay/snapshotter.h"
#include "runner/userns_alloc.h"

namespace imgtool::cli {

// podman's bounds for a size it chooses (storage.conf's auto-userns-min-size
// and auto-userns-max-size defaults); size= may ask for any size.
inline constexpr uint32_t kAutoUsernsMinSize = 1024;
inline constexpr uint32_t kAutoUsernsMaxSize = 65536;

// The highest uid or gid that layers (top layer first) use: the owners of
// their files, and the accounts of the topmost /etc/passwd and /etc/group,
// leaving out nobody, nogroup and 65534 there as podman does (most images
// would need 65535 ids for them otherwise). Symlinks are never followed.
Result<uint32_t> HighestIdInLayers(const std::vector<std::filesystem::path>& layers);

// The same for the image whose top layer is `chain_id`, cached in
// `cache_dir` (a chain ID names the layers' content, so the answer never
// changes); `layers` is called only when the cache has no answer.
Result<uint32_t> HighestIdOfImage(
    const std::filesystem::path& cache_dir, std::string_view chain_id,
    const std::function<Result<std::vector<std::filesystem::path>>()>& layers);

// The layer directories of rootfs mounts, top first: an overlay's lowerdir=
// entries, a bind's source.
std::vector<std::filesystem::path> LayerDirsOfMounts(const std::vector<Mount>& mounts);

// The highest number among the parts of a "USER[:GROUP]" spec (names: 0).
uint32_t HighestIdInUserSpec(std::string_view user);

// size= when given; else the highest id used plus one, at least 1024. An
// image that uses an id of 65536 or more needs size=: InvalidArgument.
Result<uint32_t> AutoUsernsSize(const UsernsFlag& flag, uint32_t highest_id);

// $IMGTOOL_USERNS_STATE_DIR (tests), else /run/imgtool/userns.
std::filesystem::path UsernsStateDir();

// The slice of a container about to be created with --userns=auto, sized
// for the image whose top layer is `top`, the process's user and the flag;
// kept until the container is removed (with --rm: while a process runs it).
// Fills the maps and the claim into `record` and `spec`. The lease is the
// caller's share of the claim: hold it until the container runs.
Result<std::shared_ptr<runner::UsernsLease>> AllocateRunUserns(
    const RunFlags& flags, const std::filesystem::path& store_state_dir,
    const ContainerStore& containers, overlay::Snapshotter& snapshotter, const std::string& top,
    ContainerRecord* record, runner::ContainerSpec* spec);

}  // namespace imgtool::cli
