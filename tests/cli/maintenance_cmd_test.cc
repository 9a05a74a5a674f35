// version, fsck and gc through the real binary.
#include <nlohmann/json.hpp>

#include "cli/context.h"
#include "overlay/snapshotter.h"
#include "overlay/unpacker.h"
#include "tests/cli/cli_fixture.h"
#include "tests/cli/image_builder.h"

namespace imgtool::cli::testing {
namespace {

class MaintenanceCmdTest : public CliTest {
 protected:
  std::set<std::string> CommittedSnapshots() {
    auto snapshotter = overlay::OverlaySnapshotter::Open(StateDirFor(Root()) / "snapshots");
    EXPECT_TRUE(snapshotter) << snapshotter.error().ToString();
    if (!snapshotter) return {};
    auto names = (*snapshotter)->CommittedNames();
    EXPECT_TRUE(names) << names.error().ToString();
    return names ? *names : std::set<std::string>();
  }
};

TEST_F(MaintenanceCmdTest, Version) {
  std::string out = Ok({"version"});
  EXPECT_TRUE(out.starts_with("imgtool version 0.1.0\n")) << out;
  for (const char* lib : {"git commit:", "libarchive:", "openssl:", "zlib:", "zstd:"}) {
    EXPECT_NE(out.find(lib), std::string::npos) << lib;
  }
  nlohmann::json json = nlohmann::json::parse(Ok({"version", "--format", "json"}));
  EXPECT_EQ(json["Version"], "0.1.0");
  EXPECT_FALSE(json["Libarchive"].get<std::string>().empty());
  EXPECT_EQ(Ok({"--version"}), "imgtool version 0.1.0\n");
}

TEST_F(MaintenanceCmdTest, FsckReportsDamagedBlobsAndExitsOne) {
  fs::path tar = RootfsTar();
  Ok({"import", tar.string(), "app"});
  EXPECT_EQ(Ok({"fsck"}), "no problems\n");
  nlohmann::json info = Inspect("app");
  std::string layer = info["Layers"][0];
  fs::path blob = Root() / "blobs" / "sha256" / layer.substr(7);
  std::string content = ::imgtool::testing::ReadTestFile(blob);
  content[content.size() / 2] ^= 0x55;
  ::imgtool::testing::WriteTestFile(blob, content);
  CommandResult r = Imgtool({"fsck"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_NE(r.out.find(layer.substr(0, 19)), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("no problems"), std::string::npos);
  for (size_t start = 0; start < r.out.size();) {
    size_t end = r.out.find('\n', start);
    ASSERT_NE(end, std::string::npos);
    EXPECT_GT(end, start) << "empty problem line";
    start = end + 1;
  }
}

TEST_F(MaintenanceCmdTest, GcRemovesSnapshotsNoImageUses) {
  // Two images sharing their first layer; load unpacks both.
  std::string shared = MakeTar({{"shared", "shared\n"}});
  BuiltImage a = BuildImage({shared, MakeTar({{"a", "a\n"}})}, true, "a");
  BuiltImage b = BuildImage({shared, MakeTar({{"b", "b\n"}})}, true, "b");
  fs::path archive = Work() / "ab.tar";
  ::imgtool::testing::WriteTestFile(
      archive, TarOf(OciLayout({{&a, "example.com/a:1"}, {&b, "example.com/b:1"}})));
  Ok({"load", "-i", archive.string()});
  std::vector<Digest> chain_a = overlay::ChainIds(a.diff_ids);
  std::vector<Digest> chain_b = overlay::ChainIds(b.diff_ids);
  ASSERT_EQ(chain_a[0], chain_b[0]);
  EXPECT_EQ(
      CommittedSnapshots(),
      (std::set<std::string>{chain_a[0].ToString(), chain_a[1].ToString(), chain_b[1].ToString()}));
  Ok({"rmi", "example.com/b:1"});
  std::string gc = Ok({"gc"});
  EXPECT_NE(gc.find("and 1 snapshots"), std::string::npos) << gc;
  EXPECT_NE(gc.find("kept 4 blobs and 2 snapshots"), std::string::npos) << gc;
  EXPECT_EQ(CommittedSnapshots(),
            (std::set<std::string>{chain_a[0].ToString(), chain_a[1].ToString()}));
  Ok({"rmi", "example.com/a:1"});
  Ok({"gc"});
  EXPECT_TRUE(CommittedSnapshots().empty());
  EXPECT_EQ(Ok({"fsck"}), "no problems\n");
}

}  // namespace
}  // namespace imgtool::cli::testing
