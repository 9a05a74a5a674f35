// images, inspect, tag, rmi, history: reading and naming what the store holds.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cli/context.h"
#include "cli/image_ref.h"
#include "cli/output.h"
#include "common/log.h"
#include "store/reference.h"

namespace imgtool::cli {

namespace {

using nlohmann::ordered_json;

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One image of the index (all entries that share a top-level digest).
struct ImageSummary {
  store::Descriptor top;
  std::vector<std::string> names;  // sorted; empty for an unnamed image
  std::optional<store::ResolvedImage> resolved;
  std::string problem;  // why `resolved` is missing
};

int64_t ImageSize(const store::ResolvedImage& image) {
  int64_t size = image.manifest.config.size;
  for (const store::Descriptor& layer : image.manifest.layers) size += layer.size;
  return size;
}

std::string ShortId(const Digest& digest) { return digest.hex().substr(0, 12); }

// The ID docker shows: the config digest; the top digest when the image can
// not be read.
Digest ImageId(const ImageSummary& image) {
  return image.resolved ? image.resolved->manifest.config.digest : image.top.digest;
}

Result<std::vector<ImageSummary>> ListImages(const store::Store& store) {
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<store::ImageEntry> entries, store.index().List());
  std::vector<ImageSummary> images;
  std::map<Digest, size_t> by_digest;
  for (const store::ImageEntry& entry : entries) {
    auto [it, added] = by_digest.emplace(entry.descriptor.digest, images.size());
    if (added) {
      ImageSummary summary;
      summary.top = entry.descriptor;
      auto resolved = store.ResolveDescriptor(entry.descriptor);
      if (resolved) {
        summary.resolved = std::move(*resolved);
      } else {
        summary.problem = resolved.error().ToString();
        LogWarning("image ", entry.descriptor.digest.ToString(), ": ", summary.problem);
      }
      images.push_back(std::move(summary));
    }
    if (!entry.name.empty()) images[it->second].names.push_back(entry.name);
  }
  for (ImageSummary& image : images) std::sort(image.names.begin(), image.names.end());
  return images;
}

// --- images -------------------------------------------------------------------

struct ImagesOptions {
  bool quiet = false;
  bool all = false;
  std::string format = "table";
};

Result<int> RunImages(const Context& context, const ImagesOptions& options) {
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<ImageSummary> images, ListImages(*store));
  std::erase_if(images, [&](const ImageSummary& i) { return i.names.empty() && !options.all; });

  if (options.quiet) {
    std::string out;
    std::set<Digest> seen;
    for (const ImageSummary& image : images) {
      if (seen.insert(ImageId(image)).second) out += ShortId(ImageId(image)) + "\n";
    }
    IMGTOOL_TRY(PrintOut(out));
    return 0;
  }
  if (options.format == "json") {
    ordered_json out = ordered_json::array();
    for (const ImageSummary& image : images) {
      ordered_json item;
      item["Id"] = ImageId(image).ToString();
      item["Digest"] = image.top.digest.ToString();
      item["RepoTags"] = image.names;
      item["Created"] = image.resolved ? image.resolved->config.created : "";
      item["Size"] = image.resolved ? ImageSize(*image.resolved) : image.top.size;
      if (!image.problem.empty()) item["Problem"] = image.problem;
      out.push_back(std::move(item));
    }
    IMGTOOL_TRY(PrintJson(out));
    return 0;
  }
  int64_t now = NowSeconds();
  Table table({"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"});
  for (const ImageSummary& image : images) {
    std::string created = image.resolved ? TimeAgo(image.resolved->config.created, now) : "N/A";
    std::string size = image.resolved ? HumanSize(ImageSize(*image.resolved)) : "damaged";
    std::string id = ShortId(ImageId(image));
    if (image.names.empty()) table.AddRow({"<none>", "<none>", id, created, size});
    for (const std::string& name : image.names) {
      auto ref = store::ParseReference(name);
      std::string repository = ref ? ref->Name() : name;
      std::string tag = ref && !ref->tag().empty() ? ref->tag() : "<none>";
      table.AddRow({repository, tag, id, created, size});
    }
  }
  IMGTOOL_TRY(PrintOut(table.Render()));
  return 0;
}

// --- inspect ------------------------------------------------------------------

Result<ordered_json> InspectOne(const store::Store& store, const std::string& arg) {
  IMGTOOL_ASSIGN_OR_RETURN(store::ResolvedImage image, store.ResolveImage(arg));
  IMGTOOL_ASSIGN_OR_RETURN(std::vector<store::ImageEntry> entries,
                           store.index().FindByDigest(image.top.digest));
  std::vector<std::string> tags;
  std::vector<std::string> repo_digests;
  for (const store::ImageEntry& entry : entries) {
    if (entry.name.empty()) continue;
    tags.push_back(entry.name);
    auto ref = store::ParseReference(entry.name);
    if (!ref) continue;
    std::string repo_digest = ref->Name() + "@" + image.top.digest.ToString();
    if (std::find(repo_digests.begin(), repo_digests.end(), repo_digest) == repo_digests.end()) {
      repo_digests.push_back(repo_digest);
    }
  }
  std::sort(tags.begin(), tags.end());
  const store::ImageConfig& config = image.config;
  ordered_json out;
  out["Id"] = image.manifest.config.digest.ToString();
  out["Digest"] = image.top.digest.ToString();
  if (image.manifest_descriptor.digest != image.top.digest) {
    out["ManifestDigest"] = image.manifest_descriptor.digest.ToString();
  }
  out["RepoTags"] = tags;
  out["RepoDigests"] = repo_digests;
  out["Created"] = config.created;
  out["Author"] = config.author;
  out["Architecture"] = config.architecture;
  if (!config.variant.empty()) out["Variant"] = config.variant;
  out["Os"] = config.os;
  // The "config" object exactly as the image's serialized config holds it.
  nlohmann::json serialized =
      nlohmann::json::parse(store::SerializeImageConfig(config), nullptr, false);
  out["Config"] = serialized.is_object() && serialized.contains("config")
                      ? ordered_json(serialized["config"])
                      : ordered_json::object();
  ordered_json rootfs;
  rootfs["Type"] = config.rootfs.type;
  ordered_json diff_ids = ordered_json::array();
  for (const Digest& d : config.rootfs.diff_ids) diff_ids.push_back(d.ToString());
  rootfs["Layers"] = std::move(diff_ids);
  out["RootFS"] = std::move(rootfs);
  out["Size"] = ImageSize(image);
  ordered_json layers = ordered_json::array();
  for (const store::Descriptor& layer : image.manifest.layers) {
    layers.push_back(layer.digest.ToString());
  }
  out["Layers"] = std::move(layers);
  ordered_json history = ordered_json::array();
  for (const store::HistoryEntry& h : config.history) {
    ordered_json item;
    if (!h.created.empty()) item["created"] = h.created;
    if (!h.created_by.empty()) item["created_by"] = h.created_by;
    if (!h.author.empty()) item["author"] = h.author;
    if (!h.comment.empty()) item["comment"] = h.comment;
    if (h.empty_layer) item["empty_layer"] = true;
    history.push_back(std::move(item));
  }
  out["History"] = std::move(history);
  out["ManifestType"] = image.manifest_descriptor.media_type;
  return out;
}

Result<int> RunInspect(const Context& context, const std::vector<std::string>& images) {
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  ordered_json out = ordered_json::array();
  for (const std::string& arg : images) {
    IMGTOOL_ASSIGN_OR_RETURN(ordered_json item, InspectOne(*store, arg).Wrap("inspect " + arg));
    out.push_back(std::move(item));
  }
  IMGTOOL_TRY(PrintJson(out));
  return 0;
}

// --- tag ----------------------------------------------------------------------

Result<int> RunTag(const Context& context, const std::string& source,
                   const std::vector<std::string>& targets) {
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(store::ResolvedImage image,
                           store->ResolveImage(source).Wrap("tag " + source));
  std::vector<store::Reference> refs;
  for (const std::string& target : targets) {
    IMGTOOL_ASSIGN_OR_RETURN(store::Reference ref,
                             store::ParseReference(target).Wrap("tag " + target));
    if (ref.digest()) {
      return InvalidArgumentError("tag " + target + ": a tag can not contain a digest");
    }
    refs.push_back(std::move(ref));
  }
  for (const store::Reference& ref : refs) {
    IMGTOOL_TRY(store->index().Set(ref, CleanDescriptor(image.top)));
  }
  return 0;
}

// --- rmi ----------------------------------------------------------------------

Result<int> RunRmi(const Context& context, const std::vector<std::string>& images, bool force) {
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  std::string out;
  for (const std::string& arg : images) {
    auto found = FindImage(*store, arg);
    if (!found) {
      if (force && found.error().code() == ErrorCode::kNotFound) continue;
      (void)PrintOut(out);
      return std::move(found).error().Wrap("rmi " + arg);
    }
    const Digest& digest = found->image.top.digest;
    IMGTOOL_ASSIGN_OR_RETURN(std::vector<store::ImageEntry> entries,
                             store->index().FindByDigest(digest));
    std::vector<std::string> names;
    for (const store::ImageEntry& e : entries) {
      if (!e.name.empty()) names.push_back(e.name);
    }
    std::string id = found->image.manifest.config.digest.ToString();
    if (found->ref && names.size() > 1) {
      // Other names keep the image: only this one goes.
      IMGTOOL_TRY(store->index().Remove(*found->ref).Wrap("rmi " + arg));
      out += "Untagged: " + found->ref->ToString() + "\n";
      continue;
    }
    if (!found->ref && names.size() > 1 && !force) {
      (void)PrintOut(out);
      std::string list;
      for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
      return FailedPreconditionError("rmi " + arg + ": image is referenced by " +
                                     std::to_string(names.size()) + " names (" + list +
                                     "); remove them by name or use -f");
    }
    IMGTOOL_TRY(store->index().RemoveDigest(digest).Wrap("rmi " + arg));
    for (const std::string& n : names) out += "Untagged: " + n + "\n";
    out += "Deleted: " + id + "\n";
  }
  IMGTOOL_TRY(PrintOut(out));
  return 0;
}

// --- history ------------------------------------------------------------------

struct HistoryOptions {
  std::string image;
  bool no_trunc = false;
  bool quiet = false;
  std::string format = "table";
};

Result<int> RunHistory(const Context& context, const HistoryOptions& options) {
  IMGTOOL_ASSIGN_OR_RETURN(auto store, context.OpenStore());
  IMGTOOL_ASSIGN_OR_RETURN(store::ResolvedImage image,
                           store->ResolveImage(options.image).Wrap("history " + options.image));
  struct Row {
    std::string created;
    std::string created_by;
    int64_t size = 0;
    std::string comment;
    bool empty_layer = false;
  };
  std::vector<Row> rows;
  size_t layer = 0;
  for (const store::HistoryEntry& h : image.config.history) {
    Row row{h.created, h.created_by, 0, h.comment, h.empty_layer};
    if (!h.empty_layer && layer < image.manifest.layers.size()) {
      row.size = image.manifest.layers[layer++].size;
    }
    rows.push_back(std::move(row));
  }
  // Layers the history does not account for (images made by tools that
  // write no history) still show up, one row each.
  for (; layer < image.manifest.layers.size(); ++layer) {
    rows.push_back(Row{"", "", image.manifest.layers[layer].size, "", false});
  }
  std::reverse(rows.begin(), rows.end());

  if (options.format == "json") {
    ordered_json out = ordered_json::array();
    for (const Row& row : rows) {
      ordered_json item;
      item["created"] = row.created;
      item["created_by"] = row.created_by;
      item["size"] = row.size;
      item["comment"] = row.comment;
      item["empty_layer"] = row.empty_layer;
      out.push_back(std::move(item));
    }
    IMGTOOL_TRY(PrintJson(out));
    return 0;
  }
  if (options.quiet) {
    std::string out;
    for (const Row& row : rows) out += row.created_by + "\n";
    IMGTOOL_TRY(PrintOut(out));
    return 0;
  }
  int64_t now = NowSeconds();
  Table table({"CREATED", "CREATED BY", "SIZE", "COMMENT"});
  for (const Row& row : rows) {
    std::string created_by = row.created_by;
    std::replace(created_by.begin(), created_by.end(), '\n', ' ');
    std::replace(created_by.begin(), created_by.end(), '\t', ' ');
    if (!options.no_trunc) created_by = Truncate(created_by, 45);
    table.AddRow({row.created.empty() ? "N/A" : TimeAgo(row.created, now), created_by,
                  HumanSize(row.size), row.comment});
  }
  IMGTOOL_TRY(PrintOut(table.Render()));
  return 0;
}

}  // namespace

void RegisterImageCommands(CLI::App& app, const Context& context, CommandRegistry& registry) {
  {
    auto options = std::make_shared<ImagesOptions>();
    CLI::App* cmd = app.add_subcommand("images", "List images in the store");
    cmd->add_flag("-q,--quiet", options->quiet, "Print image IDs only");
    cmd->add_flag("-a,--all", options->all, "Also list images without a name");
    cmd->add_option("--format", options->format, "Output format: table or json")
        ->check(CLI::IsMember({"table", "json"}));
    registry.Set(cmd, [&context, options] { return RunImages(context, *options); });
  }
  {
    auto images = std::make_shared<std::vector<std::string>>();
    auto format = std::make_shared<std::string>("json");
    CLI::App* cmd = app.add_subcommand("inspect", "Show an image's details as JSON");
    cmd->add_option("IMAGE", *images, "Reference, ID or digest")->required();
    cmd->add_option("--format", *format, "Output format (json)")->check(CLI::IsMember({"json"}));
    registry.Set(cmd, [&context, images] { return RunInspect(context, *images); });
  }
  {
    auto source = std::make_shared<std::string>();
    auto targets = std::make_shared<std::vector<std::string>>();
    CLI::App* cmd = app.add_subcommand("tag", "Add names to an image");
    cmd->add_option("SOURCE", *source, "Reference, ID or digest")->required();
    cmd->add_option("TARGET", *targets, "New name(s), NAME[:TAG]")->required();
    registry.Set(cmd, [&context, source, targets] { return RunTag(context, *source, *targets); });
  }
  {
    auto images = std::make_shared<std::vector<std::string>>();
    auto force = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand("rmi", "Remove image names; unnamed images go at gc");
    cmd->add_option("IMAGE", *images, "Reference, ID or digest")->required();
    cmd->add_flag("-f,--force", *force,
                  "Remove every name of an image given by ID; ignore missing images");
    registry.Set(cmd, [&context, images, force] { return RunRmi(context, *images, *force); });
  }
  {
    auto options = std::make_shared<HistoryOptions>();
    CLI::App* cmd = app.add_subcommand("history", "Show how an image's layers were made");
    cmd->add_option("IMAGE", options->image, "Reference, ID or digest")->required();
    cmd->add_flag("--no-trunc", options->no_trunc, "Do not shorten CREATED BY");
    cmd->add_flag("-q,--quiet", options->quiet, "Print CREATED BY only");
    cmd->add_option("--format", options->format, "Output format: table or json")
        ->check(CLI::IsMember({"table", "json"}));
    registry.Set(cmd, [&context, options] { return RunHistory(context, *options); });
  }
}

}  // namespace imgtool::cli
