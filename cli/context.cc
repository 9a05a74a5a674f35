#include "cli/context.h"

namespace imgtool::cli {

Result<std::unique_ptr<store::Store>> Context::OpenStore() const {
  return store::Store::Open(root);
}

Result<std::unique_ptr<overlay::OverlaySnapshotter>> Context::OpenSnapshotter() const {
  return overlay::OverlaySnapshotter::Open(SnapshotRoot()).Wrap("open snapshots");
}

}  // namespace imgtool::cli
