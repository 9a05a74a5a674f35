#include "cli/image_ref.h"

namespace imgtool::cli {

Result<FoundImage> FindImage(const store::Store& store, std::string_view arg) {
  FoundImage found;
  if (auto ref = store::ParseReference(arg); ref && !arg.starts_with("sha256:")) {
    if (auto descriptor = store.index().Resolve(*ref); descriptor) {
      IMGTOOL_ASSIGN_OR_RETURN(found.image, store.ResolveDescriptor(*descriptor));
      // "name@sha256:..." finds a tagged image too, but names no tag to act on.
      if (!ref->digest()) found.ref = std::move(*ref);
      return found;
    }
  }
  IMGTOOL_ASSIGN_OR_RETURN(found.image, store.ResolveImage(arg));
  return found;
}

store::Descriptor CleanDescriptor(const store::Descriptor& descriptor) {
  store::Descriptor clean;
  clean.media_type = descriptor.media_type;
  clean.digest = descriptor.digest;
  clean.size = descriptor.size;
  return clean;
}

}  // namespace imgtool::cli
