#include "overlay/flatten.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "common/temp_dir.h"
#include "tests/overlay/layer_test_util.h"

namespace imgtool::overlay {
namespace {

namespace fs = std::filesystem;
using testing::BytesFd;
using testing::Compress;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ListTar;
using testing::TarBuilder;
using testing::TarNames;

class FlattenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("imgtool-flatten-");
    ASSERT_TRUE(dir.has_value());
    scratch_ = std::make_unique<TempDir>(std::move(dir).value());
  }

  Result<std::string> Flatten(const std::vector<std::string>& blobs,
                              std::vector<Digest> diff_ids = {}) {
    std::vector<UniqueFd> owned;
    std::vector<int> fds;
    for (const std::string& b : blobs) {
      owned.push_back(BytesFd(b));
      fds.push_back(owned.back().get());
    }
    FlattenOptions options;
    options.scratch_dir = scratch_->path();
    options.expected_diff_ids = std::move(diff_ids);
    StringSink sink;
    IMGTOOL_TRY(FlattenLayers(fds, sink, options));
    return sink.data();
  }

  // The scratch tree is gone afterwards, whatever happened.
  void ExpectScratchEmpty() { EXPECT_TRUE(fs::is_empty(scratch_->path())); }

  std::unique_ptr<TempDir> scratch_;
};

const std::string& Base() {
  static const std::string tar = TarBuilder()
                                     .Dir("etc")
                                     .File("etc/os-release", "v1")
                                     .File("etc/motd", "hello")
                                     .Dir("etc/conf.d")
                                     .File("etc/conf.d/a", "a")
                                     .File("etc/conf.d/b", "b")
                                     .Dir("var")
                                     .Dir("var/cache")
                                     .File("var/cache/big", "cache")
                                     .Symlink("motd-link", "etc/motd")
                                     .Tar();
  return tar;
}

TEST_F(FlattenTest, SquashesLayersAndResolvesWhiteouts) {
  std::string upgrade = TarBuilder()
                            .Dir("etc")
                            .File("etc/os-release", "v2")
                            .File("etc/.wh.motd", "")
                            .Dir("etc/conf.d")
                            .File("etc/conf.d/c", "c")
                            .File("etc/conf.d/.wh..wh..opq", "")  // after its own child
                            .File(".wh.var", "")
                            .Tar();
  std::string last = TarBuilder().Dir("var").File("var/new", "fresh").Tar();
  auto out =
      Flatten({Compress(Base(), Compression::kGzip), Compress(upgrade, Compression::kZstd), last},
              {Digest::Sha256Of(Base()), Digest::Sha256Of(upgrade), Digest::Sha256Of(last)});
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  EXPECT_THAT(TarNames(*out), ElementsAre("etc/", "etc/conf.d/", "etc/conf.d/c", "etc/os-release",
                                          "motd-link", "var/", "var/new"));
  auto entries = ListTar(*out);
  EXPECT_EQ(entries[3].data, "v2");
  EXPECT_EQ(entries[4].type, 'l');  // dangling now, kept as is
  EXPECT_EQ(entries[4].link, "etc/motd");
  ExpectScratchEmpty();
}

TEST_F(FlattenTest, OutputIsAPlainDeterministicTar) {
  auto a = Flatten({Base()});
  auto b = Flatten({Compress(Base(), Compression::kZstd)});
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  ASSERT_TRUE(b.has_value()) << b.error().ToString();
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(DetectCompression(
                std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(a->data()), a->size())),
            Compression::kNone);
  for (const auto& e : ListTar(*a)) {
    EXPECT_EQ(e.name.find(".wh."), std::string::npos) << e.name;
    EXPECT_EQ(e.mtime, testing::kTestMtime) << e.name;  // kept from the layers
  }
}

TEST_F(FlattenTest, WrongDiffIdNamesTheLayer) {
  std::string top = TarBuilder().File("x", "y").Tar();
  Digest wrong = Digest::Sha256Of("wrong");
  auto out = Flatten({Base(), top}, {Digest::Sha256Of(Base()), wrong});
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code(), ErrorCode::kDataLoss);
  EXPECT_THAT(out.error().ToString(),
              HasSubstr("flatten: layer 2 of 2: diffID mismatch: expected " + wrong.ToString()));
  ExpectScratchEmpty();
}

TEST_F(FlattenTest, BadInputsAreErrors) {
  auto count = Flatten({Base()}, {Digest::Sha256Of(Base()), Digest::Sha256Of(Base())});
  ASSERT_FALSE(count.has_value());
  EXPECT_EQ(count.error().code(), ErrorCode::kInvalidArgument);

  auto hostile = Flatten({Base(), TarBuilder().File("../../x", "y").Tar()});
  ASSERT_FALSE(hostile.has_value());
  EXPECT_THAT(hostile.error().ToString(),
              HasSubstr("layer 2 of 2: entry \"../../x\": path leads outside the root"));
  ExpectScratchEmpty();

  StringSink sink;
  auto no_scratch = FlattenLayers({}, sink, FlattenOptions{});
  ASSERT_FALSE(no_scratch.has_value());
  EXPECT_EQ(no_scratch.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(FlattenTest, NoLayersIsAnEmptyTar) {
  auto out = Flatten({});
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  EXPECT_EQ(*out, std::string(1024, '\0'));
}

}  // namespace
}  // namespace imgtool::overlay
