// Pulling and pushing from the CLI layer, for commands that need an image the
// store does not have yet (run, build: the same pull as `imgtool pull`, ending
// with the layers unpacked and the tag set) or push what they made (build
// --push: the same push as `imgtool push`).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cli/context.h"
#include "common/error.h"
#include "store/oci_types.h"
#include "store/reference.h"

namespace CLI {
class App;
}

namespace imgtool::cli {

// How to reach a registry: what pull, push, login and build's --push and
// pulled bases take from the command line.
struct RegistryAccess {
  bool tls_verify = true;
  std::string cert_dir;
  std::string authfile;
  std::string creds;  // USER:PASSWORD; else the stored credentials
};

// Adds --tls-verify, --cert-dir and --authfile to `cmd` (not --creds: login
// takes -u and -p instead); `use` says what they are for in the help, "" for
// the command itself.
void AddRegistryFlags(CLI::App* cmd, RegistryAccess& access, std::string_view use = "");

struct PullImageOptions {
  std::optional<store::Platform> platform;  // default: the host's
  bool quiet = false;                       // no progress on stderr
  RegistryAccess registry;
  int jobs = 4;
};

// Pulls `ref` into the store of `context`; returns the image ID (config digest).
Result<Digest> PullImage(const Context& context, const store::Reference& ref,
                         const PullImageOptions& options = {});

struct PushImageOptions {
  bool quiet = false;  // no progress on stderr
  RegistryAccess registry;
  int jobs = 4;
};

// Pushes the image tagged `ref` in the store of `context` to `ref`'s registry;
// returns the pushed manifest's digest.
Result<Digest> PushImage(const Context& context, const store::Reference& ref,
                         const PushImageOptions& options = {});

}  // namespace imgtool::cli
