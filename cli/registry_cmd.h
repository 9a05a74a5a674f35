// Pulling and pushing from the CLI layer, for commands that need an image the
// store does not have yet (run, build: the same pull as `imgtool pull`, ending
// with the layers unpacked and the tag set) or push what they made (build
// --push: the same push as `imgtool push`).
#pragma once

#include <optional>
#include <string>

#include "cli/context.h"
#include "common/error.h"
#include "store/oci_types.h"
#include "store/reference.h"

namespace imgtool::cli {

struct PullImageOptions {
  std::optional<store::Platform> platform;  // default: the host's
  bool quiet = false;                       // no progress on stderr
  bool tls_verify = true;
  std::string cert_dir;
  std::string authfile;
  std::string creds;  // USER:PASSWORD; else the stored credentials
  int jobs = 4;
};

// Pulls `ref` into the store of `context`; returns the image ID (config digest).
Result<Digest> PullImage(const Context& context, const store::Reference& ref,
                         const PullImageOptions& options = {});

struct PushImageOptions {
  bool quiet = false;  // no progress on stderr
  bool tls_verify = true;
  std::string cert_dir;
  std::string authfile;
  std::string creds;  // USER:PASSWORD; else the stored credentials
  int jobs = 4;
};

// Pushes the image tagged `ref` in the store of `context` to `ref`'s registry;
// returns the pushed manifest's digest.
Result<Digest> PushImage(const Context& context, const store::Reference& ref,
                         const PushImageOptions& options = {});

}  // namespace imgtool::cli
