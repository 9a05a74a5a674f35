// Bases that become a layer of their own: a rootfs tar from the build
// context, or a Debian tree made by mmdebstrap (debootstrap when mmdebstrap is
// missing). The mirror is passed only when the recipe names one; otherwise the
// tool's own default is used.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "builder/recipe.h"
#include "common/digest.h"
#include "common/error.h"
#include "overlay/differ.h"
#include "store/store.h"

namespace imgtool::builder {

// "scratch", "image debian:bookworm", "debootstrap bookworm (minbase)", ...
std::string DescribeBase(const Base& base);

// Everything that decides what the bootstrap produces, as text for the cache
// key: the tool, suite, variant, components, packages, mirror, arch.
std::string DebootstrapKeyText(const DebootstrapBase& base);

// The argv for the bootstrap tool ("mmdebstrap" or "debootstrap") writing to
// `target` (a tar for mmdebstrap, a directory for debootstrap). Pure.
std::vector<std::string> DebootstrapCommand(std::string_view tool, const DebootstrapBase& base,
                                            const std::string& target);

// "mmdebstrap" when installed, else "debootstrap", else "".
std::string BootstrapTool();

Result<Digest> HashFile(const std::filesystem::path& path);

struct BaseLayerRequest {
  Base base;  // kRootfs or kDebootstrap
  std::filesystem::path context_dir;
  std::filesystem::path scratch_dir;
  std::optional<int64_t> epoch;               // SOURCE_DATE_EPOCH for the tool, mtime clamp
  std::function<void(std::string_view)> log;  // the tool's output, line by line
};

// Makes the base's layer blob in the store.
Result<overlay::LayerInfo> MakeBaseLayer(store::Store& store, const BaseLayerRequest& request);

// Runs argv (PATH lookup) with `env` added, sending each output line to `log`.
// Non-zero exit is FailedPrecondition naming the command and code.
Status RunTool(const std::vector<std::string>& argv, const std::vector<std::string>& env,
               const std::function<void(std::string_view)>& log);

}  // namespace imgtool::builder
