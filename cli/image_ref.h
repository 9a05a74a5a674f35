// How image arguments are looked up: a reference first, as docker does, then
// an ID or digest (full, or a hex prefix of at least 4 digits).
#pragma once

#include <optional>
#include <string_view>

#include "common/error.h"
#include "store/reference.h"
#include "store/store.h"

namespace imgtool::cli {

struct FoundImage {
  // Set when the argument named the image by reference (a tag in the store);
  // unset when it was an ID or a digest.
  std::optional<store::Reference> ref;
  store::ResolvedImage image;
};

Result<FoundImage> FindImage(const store::Store& store, std::string_view arg);

// The descriptor without annotations (ref.name belongs to one index entry),
// for tagging the same content under another name.
store::Descriptor CleanDescriptor(const store::Descriptor& descriptor);

}  // namespace imgtool::cli
