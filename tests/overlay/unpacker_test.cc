// Unpack: chain IDs, snapshots per layer with the right parents, skipping what
// is committed, cleaning up after a bad layer, and racing unpackers.
#include "overlay/unpacker.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/temp_dir.h"
#include "tests/cli/image_builder.h"

namespace imgtool::overlay {
namespace {

namespace fs = std::filesystem;
using cli::testing::BuildImage;
using cli::testing::BuiltImage;
using cli::testing::MakeTar;

TEST(ChainIdsTest, FollowsTheOciDefinition) {
  Digest a = Digest::Sha256Of("a"), b = Digest::Sha256Of("b"), c = Digest::Sha256Of("c");
  EXPECT_TRUE(ChainIds({}).empty());
  EXPECT_EQ(ChainIds({a}), std::vector<Digest>{a});
  Digest ab = Digest::Sha256Of(a.ToString() + " " + b.ToString());
  Digest abc = Digest::Sha256Of(ab.ToString() + " " + c.ToString());
  EXPECT_EQ(ChainIds({a, b, c}), (std::vector<Digest>{a, ab, abc}));
}

class UnpackerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("unpacker-test-");
    ASSERT_TRUE(dir) << dir.error().ToString();
    dir_ = std::make_unique<TempDir>(std::move(dir).value());
    auto store = store::Store::Open(dir_->path() / "store");
    ASSERT_TRUE(store) << store.error().ToString();
    store_ = std::move(*store);
    snapshotter_ = OpenSnapshotter();
    ASSERT_NE(snapshotter_, nullptr);
  }

  std::unique_ptr<OverlaySnapshotter> OpenSnapshotter() {
    auto snapshotter = OverlaySnapshotter::Open(dir_->path() / "snapshots");
    EXPECT_TRUE(snapshotter) << snapshotter.error().ToString();
    return snapshotter ? std::move(*snapshotter) : nullptr;
  }

  // Writes the image's blobs and returns its parsed manifest and config.
  std::pair<store::Manifest, store::ImageConfig> Store(const BuiltImage& image) {
    for (const std::string& blob : image.layer_blobs) {
      EXPECT_TRUE(store_->content().WriteBlob(blob));
    }
    auto manifest = store::ParseManifest(image.manifest);
    auto config = store::ParseImageConfig(image.config);
    EXPECT_TRUE(manifest && config);
    return {*manifest, *config};
  }

  static std::vector<std::string> Layers(int n, const std::string& tag) {
    std::vector<std::string> layers;
    for (int i = 0; i < n; ++i) {
      layers.push_back(MakeTar({{"layer" + std::to_string(i), tag + std::to_string(i) + "\n"},
                                {"common", "written by layer " + std::to_string(i) + "\n"}}));
    }
    return layers;
  }

  std::vector<SnapshotInfo> List() {
    auto list = snapshotter_->List();
    EXPECT_TRUE(list) << list.error().ToString();
    return list ? *list : std::vector<SnapshotInfo>();
  }

  // Every chain ID is a committed snapshot on the one before, holding exactly
  // its own layer's files (see Layers).
  void ExpectCommittedChain(const std::vector<Digest>& chain) {
    for (size_t i = 0; i < chain.size(); ++i) {
      auto info = snapshotter_->Stat(chain[i].ToString());
      ASSERT_TRUE(info) << info.error().ToString();
      EXPECT_EQ(info->kind, Kind::kCommitted);
      EXPECT_EQ(info->parent, i == 0 ? "" : chain[i - 1].ToString());
      auto usage = snapshotter_->GetUsage(chain[i].ToString());
      ASSERT_TRUE(usage) << usage.error().ToString();
      EXPECT_EQ(usage->inodes, 3) << "root, layerN, common";
    }
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<OverlaySnapshotter> snapshotter_;
};

TEST_F(UnpackerTest, CommitsEveryLayerOnItsParent) {
  BuiltImage image = BuildImage(Layers(5, "x"), /*gzip=*/true, "five");
  auto [manifest, config] = Store(image);
  std::vector<Digest> chain = ChainIds(image.diff_ids);
  auto top = Unpack(*store_, *snapshotter_, manifest, config);
  ASSERT_TRUE(top) << top.error().ToString();
  EXPECT_EQ(*top, chain.back().ToString());
  ASSERT_EQ(List().size(), 5u);
  ExpectCommittedChain(chain);
  // A committed snapshot can be viewed.
  ASSERT_TRUE(snapshotter_->View("check", chain.back().ToString()));
  ASSERT_TRUE(snapshotter_->Remove("check"));
}

TEST_F(UnpackerTest, SkipsWhatIsCommitted) {
  std::vector<std::string> layers = Layers(4, "y");
  BuiltImage base = BuildImage({layers[0], layers[1]}, true, "base");
  BuiltImage full = BuildImage(layers, true, "full");
  auto [base_manifest, base_config] = Store(base);
  ASSERT_TRUE(Unpack(*store_, *snapshotter_, base_manifest, base_config));
  std::vector<SnapshotInfo> before = List();
  ASSERT_EQ(before.size(), 2u);

  auto [manifest, config] = Store(full);
  ASSERT_TRUE(Unpack(*store_, *snapshotter_, manifest, config));
  std::vector<SnapshotInfo> after = List();
  ASSERT_EQ(after.size(), 4u);
  for (const SnapshotInfo& old : before) {
    auto it = std::find_if(after.begin(), after.end(),
                           [&](const SnapshotInfo& s) { return s.name == old.name; });
    ASSERT_NE(it, after.end());
    EXPECT_EQ(it->created, old.created) << "base layers were not unpacked again";
  }
  // Everything committed: nothing to do, no snapshot touched.
  auto again = Unpack(*store_, *snapshotter_, manifest, config);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, ChainIds(full.diff_ids).back().ToString());
  EXPECT_EQ(List().size(), 4u);
}

TEST_F(UnpackerTest, BadLayerLeavesOnlyCompleteSnapshots) {
  std::vector<std::string> layers = Layers(4, "z");
  BuiltImage good = BuildImage(layers, true, "good");
  std::vector<Digest> ids = good.diff_ids;
  ids[2] = Digest::Sha256Of("not the layer");
  BuiltImage bad = BuildImage(layers, true, "bad", cli::testing::ConfigJson(ids, "bad"));
  auto [manifest, config] = Store(bad);
  auto top = Unpack(*store_, *snapshotter_, manifest, config);
  ASSERT_FALSE(top);
  EXPECT_NE(top.error().message().find("unpack layer 3 of 4"), std::string::npos)
      << top.error().ToString();
  EXPECT_NE(top.error().message().find(ids[2].ToString()), std::string::npos)
      << top.error().ToString();
  // Layers 1 and 2 are complete and stay; nothing else is left, active or not.
  std::vector<SnapshotInfo> list = List();
  ASSERT_EQ(list.size(), 2u);
  for (const SnapshotInfo& info : list) EXPECT_EQ(info.kind, Kind::kCommitted) << info.name;
  auto cleaned = snapshotter_->Cleanup();
  ASSERT_TRUE(cleaned);
  EXPECT_EQ(*cleaned, 0u) << "unpack left directories behind";
}

TEST_F(UnpackerTest, MissingBlobIsAnError) {
  BuiltImage image = BuildImage(Layers(2, "m"), true, "missing");
  auto manifest = store::ParseManifest(image.manifest);
  auto config = store::ParseImageConfig(image.config);
  ASSERT_TRUE(manifest && config);
  auto top = Unpack(*store_, *snapshotter_, *manifest, *config);
  ASSERT_FALSE(top);
  EXPECT_EQ(top.error().code(), ErrorCode::kNotFound) << top.error().ToString();
  EXPECT_TRUE(List().empty());
}

TEST_F(UnpackerTest, ConcurrentUnpacksOfOneImageBothSucceed) {
  BuiltImage image = BuildImage(Layers(6, "c"), true, "race");
  auto [manifest, config] = Store(image);
  std::unique_ptr<OverlaySnapshotter> other = OpenSnapshotter();
  ASSERT_NE(other, nullptr);
  Result<std::string> a = InternalError("not run"), b = InternalError("not run");
  std::thread ta([&] { a = Unpack(*store_, *snapshotter_, manifest, config); });
  std::thread tb([&] { b = Unpack(*store_, *other, manifest, config); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a) << a.error().ToString();
  ASSERT_TRUE(b) << b.error().ToString();
  EXPECT_EQ(*a, *b);
  std::vector<SnapshotInfo> list = List();
  EXPECT_EQ(list.size(), 6u);
  for (const SnapshotInfo& info : list) EXPECT_EQ(info.kind, Kind::kCommitted) << info.name;
}

TEST_F(UnpackerTest, OneWorkerAndEmptyImage) {
  BuiltImage image = BuildImage(Layers(3, "s"), false, "serial");
  auto [manifest, config] = Store(image);
  UnpackOptions options;
  options.workers = 1;
  auto top = Unpack(*store_, *snapshotter_, manifest, config, options);
  ASSERT_TRUE(top) << top.error().ToString();
  EXPECT_EQ(List().size(), 3u);

  BuiltImage empty = BuildImage({}, false, "empty");
  auto [empty_manifest, empty_config] = Store(empty);
  auto none = Unpack(*store_, *snapshotter_, empty_manifest, empty_config);
  ASSERT_TRUE(none);
  EXPECT_EQ(*none, "");

  store::ImageConfig mismatched = config;
  mismatched.rootfs.diff_ids.pop_back();
  auto refused = Unpack(*store_, *snapshotter_, manifest, mismatched);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
}

// Streams a blob into a StreamedLayer in small writes, as a download does.
void Feed(StreamedLayer& layer, std::string_view blob) {
  while (!blob.empty()) {
    size_t n = std::min<size_t>(blob.size(), 4096);
    layer.Write(blob.substr(0, n));
    blob.remove_prefix(n);
  }
  layer.End();
}

TEST_F(UnpackerTest, StreamedLayersAppliedOutOfOrderCommitOnTheirParents) {
  BuiltImage image = BuildImage(Layers(3, "t"), true, "streamed");
  std::vector<Digest> chain = ChainIds(image.diff_ids);
  std::vector<std::unique_ptr<StreamedLayer>> layers(3);
  // The last layer arrives first, the first last: none needs its parent.
  for (int i = 2; i >= 0; --i) {
    auto started = StreamedLayer::Start(*snapshotter_, Digest::Sha256Of(image.layer_blobs[i]),
                                        "layer " + std::to_string(i + 1));
    ASSERT_TRUE(started) << started.error().ToString();
    layers[i] = std::move(*started);
    Feed(*layers[i], image.layer_blobs[i]);
  }
  for (size_t i = 0; i < 3; ++i) {
    Status committed = layers[i]->Commit(image.diff_ids[i], i == 0 ? "" : chain[i - 1].ToString(),
                                         chain[i].ToString());
    ASSERT_TRUE(committed) << committed.error().ToString();
    layers[i].reset();
  }
  // The same snapshots as the ordinary unpack makes: one per chain ID on its
  // parent, each with only its own layer's files, nothing active left over.
  ASSERT_EQ(List().size(), 3u);
  ExpectCommittedChain(chain);
  auto [manifest, config] = Store(image);
  auto top = Unpack(*store_, *snapshotter_, manifest, config);
  ASSERT_TRUE(top) << top.error().ToString();
  EXPECT_EQ(*top, chain.back().ToString());
  EXPECT_EQ(List().size(), 3u) << "Unpack found every layer committed";
  auto cleaned = snapshotter_->Cleanup();
  ASSERT_TRUE(cleaned);
  EXPECT_EQ(*cleaned, 0u);
}

TEST_F(UnpackerTest, StreamedLayerWithAnotherDiffIdIsNotCommitted) {
  BuiltImage image = BuildImage(Layers(2, "d"), true, "diff");
  auto started =
      StreamedLayer::Start(*snapshotter_, Digest::Sha256Of(image.layer_blobs[0]), "layer 1");
  ASSERT_TRUE(started) << started.error().ToString();
  Feed(**started, image.layer_blobs[0]);
  Digest other = image.diff_ids[1];
  Status committed = (*started)->Commit(other, "", other.ToString());
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code(), ErrorCode::kDataLoss) << committed.error().ToString();
  EXPECT_NE(committed.error().message().find(other.ToString()), std::string::npos)
      << committed.error().ToString();
  // Until it is destroyed the detached snapshot exists; then nothing does.
  ASSERT_EQ(List().size(), 1u);
  EXPECT_EQ(List()[0].kind, Kind::kActive);
  EXPECT_TRUE(List()[0].name.starts_with(kUnpackKeyPrefix)) << List()[0].name;
  started->reset();
  EXPECT_TRUE(List().empty());
}

TEST_F(UnpackerTest, StreamedLayerOfBadOrCutBytesIsRemoved) {
  BuiltImage image = BuildImage(Layers(1, "b"), true, "bad");
  const std::string& blob = image.layer_blobs[0];
  // Not gzip at all: the apply gives up at once, and later writes (far more
  // than a socket buffer) are dropped rather than blocking the writer.
  {
    auto layer = StreamedLayer::Start(*snapshotter_, Digest::Sha256Of("x"), "garbage");
    ASSERT_TRUE(layer) << layer.error().ToString();
    Feed(**layer, std::string(8 << 20, 'x'));
    Status committed = (*layer)->Commit(image.diff_ids[0], "", image.diff_ids[0].ToString());
    ASSERT_FALSE(committed);
    EXPECT_NE(committed.error().message().find("garbage"), std::string::npos)
        << committed.error().ToString();
  }
  // Cut in the middle and abandoned (the download failed): never committed.
  {
    auto layer = StreamedLayer::Start(*snapshotter_, Digest::Sha256Of(blob), "cut");
    ASSERT_TRUE(layer) << layer.error().ToString();
    (*layer)->Write(std::string_view(blob).substr(0, blob.size() / 2));
  }
  // Cut, then asked to commit: the short stream is the apply's error.
  {
    auto layer = StreamedLayer::Start(*snapshotter_, Digest::Sha256Of(blob), "short");
    ASSERT_TRUE(layer) << layer.error().ToString();
    Feed(**layer, std::string_view(blob).substr(0, blob.size() / 2));
    EXPECT_FALSE((*layer)->Commit(image.diff_ids[0], "", image.diff_ids[0].ToString()));
  }
  EXPECT_TRUE(List().empty());
  auto cleaned = snapshotter_->Cleanup();
  ASSERT_TRUE(cleaned);
  EXPECT_EQ(*cleaned, 0u);
}

TEST_F(UnpackerTest, StreamedLayerCommittedMeanwhileElsewhereIsSuccess) {
  BuiltImage image = BuildImage(Layers(2, "r"), true, "raced");
  std::vector<Digest> chain = ChainIds(image.diff_ids);
  auto [manifest, config] = Store(image);
  auto started =
      StreamedLayer::Start(*snapshotter_, Digest::Sha256Of(image.layer_blobs[1]), "layer 2");
  ASSERT_TRUE(started) << started.error().ToString();
  Feed(**started, image.layer_blobs[1]);
  // Another unpack commits both layers before the stream's commit.
  ASSERT_TRUE(Unpack(*store_, *snapshotter_, manifest, config));
  Status committed =
      (*started)->Commit(image.diff_ids[1], chain[0].ToString(), chain[1].ToString());
  EXPECT_TRUE(committed) << committed.error().ToString();
  started->reset();
  std::vector<SnapshotInfo> list = List();
  ASSERT_EQ(list.size(), 2u);
  for (const SnapshotInfo& info : list) EXPECT_EQ(info.kind, Kind::kCommitted) << info.name;
}

}  // namespace
}  // namespace imgtool::overlay
