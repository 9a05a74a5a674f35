#include "overlay/flatten.h"

#include "common/log.h"
#include "common/temp_dir.h"
#include "overlay/applier.h"
#include "overlay/differ.h"

namespace imgtool::overlay {

Status FlattenLayers(const std::vector<int>& blob_fds, ByteSink& out,
                     const FlattenOptions& options) {
  if (!options.expected_diff_ids.empty() && options.expected_diff_ids.size() != blob_fds.size()) {
    return InvalidArgumentError(StrCat("flatten: ", blob_fds.size(), " layers but ",
                                       options.expected_diff_ids.size(), " diffIDs"));
  }
  if (options.scratch_dir.empty()) return InvalidArgumentError("flatten: no scratch directory");
  IMGTOOL_ASSIGN_OR_RETURN(TempDir tree, TempDir::Create(options.scratch_dir, "flatten-"));
  for (size_t i = 0; i < blob_fds.size(); ++i) {
    ApplyOptions apply;
    apply.whiteouts = WhiteoutMode::kFlatten;
    apply.description = StrCat("layer ", i + 1, " of ", blob_fds.size());
    if (!options.expected_diff_ids.empty()) apply.expected_diff_id = options.expected_diff_ids[i];
    IMGTOOL_TRY(ApplyLayer(blob_fds[i], tree.path(), apply).Wrap("flatten"));
  }
  DiffOptions diff;
  diff.compression = Compression::kNone;
  diff.whiteouts = WhiteoutSource::kPlainTree;
  diff.source_date_epoch = options.source_date_epoch;
  IMGTOOL_TRY(WriteLayer(tree.path(), out, diff).Wrap("flatten"));
  return OkStatus();
}

}  // namespace imgtool::overlay
