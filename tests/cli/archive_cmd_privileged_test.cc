// load as root: layers unpacked into snapshots with owners, device nodes and
// overlay whiteouts, checked through a real overlay mount; many loads at once
// into one store.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/context.h"
#include <thread>

#include "common/mount.h"
#include "overlay/snapshotter.h"
#include "overlay/unpacker.h"
#include "tests/cli/cli_fixture.h"
#include "tests/cli/image_builder.h"

namespace imgtool::cli::testing {
namespace {

using ::imgtool::testing::ReadTestFile;
using ::imgtool::testing::WriteTestFile;

class ArchiveCmdPrivilegedTest : public CliTest {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    CliTest::SetUp();
  }

  std::unique_ptr<overlay::OverlaySnapshotter> Snapshots() {
    auto snapshotter = overlay::OverlaySnapshotter::Open(StateDirFor(Root()) / "snapshots");
    EXPECT_TRUE(snapshotter) << snapshotter.error().ToString();
    return snapshotter ? std::move(*snapshotter) : nullptr;
  }
};

TEST_F(ArchiveCmdPrivilegedTest, LoadUnpacksOwnersDevicesAndWhiteouts) {
  TarEntry owned("home/user/notes", "mine\n", 'f', "", 0600);
  owned.uid = 1000;
  owned.gid = 1000;
  TarEntry home("home/user", "", 'd', "", 0700);
  home.uid = 1000;
  home.gid = 1000;
  TarEntry null_device("dev/null", "", 'c', "", 0666);
  null_device.dev_major = 1;
  null_device.dev_minor = 3;
  std::string base = MakeTar({
      {"dev", "", 'd', "", 0755},
      null_device,
      {"etc", "", 'd', "", 0755},
      {"etc/greeting", "one\n"},
      {"etc/motd", "motd\n"},
      {"home", "", 'd', "", 0755},
      home,
      owned,
      {"opt", "", 'd', "", 0755},
      {"opt/old", "old\n"},
      {"bin", "", 'd', "", 0755},
      {"bin/busybox", ReadTestFile("/bin/busybox"), 'f', "", 0755},
      {"bin/sh", "", 'l', "busybox"},
  });
  std::string top = MakeTar({
      {"etc", "", 'd', "", 0755},
      {"etc/.wh.motd", ""},
      {"etc/greeting", "two\n"},
      {"opt", "", 'd', "", 0755},
      {"opt/.wh..wh..opq", ""},
      {"opt/new", "new\n"},
  });
  BuiltImage image = BuildImage({base, top}, true, "priv");
  fs::path archive = Work() / "priv.tar";
  WriteTestFile(archive, TarOf(OciLayout({{&image, "example.com/priv:1"}})));
  EXPECT_EQ(Ok({"load", "-i", archive.string()}), "Loaded image: example.com/priv:1\n");

  auto snapshots = Snapshots();
  ASSERT_NE(snapshots, nullptr);
  std::vector<Digest> chain = overlay::ChainIds(image.diff_ids);
  auto top_info = snapshots->Stat(chain[1].ToString());
  ASSERT_TRUE(top_info) << top_info.error().ToString();
  EXPECT_EQ(top_info->kind, overlay::Kind::kCommitted);
  EXPECT_EQ(top_info->parent, chain[0].ToString());

  // What a container would see: the view of the top chain ID, mounted.
  auto mounts = snapshots->View("test-view", chain[1].ToString());
  ASSERT_TRUE(mounts) << mounts.error().ToString();
  fs::path merged = Work() / "merged";
  fs::create_directories(merged);
  auto guards = MountAll(*mounts, merged);
  ASSERT_TRUE(guards) << guards.error().ToString();
  EXPECT_EQ(ReadTestFile(merged / "etc" / "greeting"), "two\n");
  EXPECT_FALSE(fs::exists(merged / "etc" / "motd"));
  EXPECT_FALSE(fs::exists(merged / "opt" / "old"));
  EXPECT_EQ(ReadTestFile(merged / "opt" / "new"), "new\n");
  struct stat st;
  ASSERT_EQ(::lstat((merged / "home" / "user" / "notes").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1000u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::lstat((merged / "dev" / "null").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(major(st.st_rdev), 1u);
  EXPECT_EQ(minor(st.st_rdev), 3u);
  EXPECT_EQ(ReadTestFile(merged / "bin" / "busybox"), ReadTestFile("/bin/busybox"));
  guards->clear();
  ASSERT_TRUE(snapshots->Remove("test-view"));

  // A second load finds every layer committed and unpacks nothing.
  auto before = snapshots->List();
  ASSERT_TRUE(before);
  Ok({"load", "-i", archive.string()});
  auto after = snapshots->List();
  ASSERT_TRUE(after);
  ASSERT_EQ(after->size(), before->size());
  for (size_t i = 0; i < after->size(); ++i) {
    EXPECT_EQ((*after)[i].name, (*before)[i].name);
    EXPECT_EQ((*after)[i].created, (*before)[i].created);
  }
  EXPECT_EQ(Ok({"fsck"}), "no problems\n");
}

TEST_F(ArchiveCmdPrivilegedTest, EightConcurrentLoadsAndTags) {
  constexpr int kLoads = 8;
  std::string shared = MakeTar(
      {{"bin", "", 'd', "", 0755}, {"bin/busybox", ReadTestFile("/bin/busybox"), 'f', "", 0755}});
  std::vector<BuiltImage> images;
  for (int i = 0; i < kLoads; ++i) {
    std::string mine = MakeTar({{"id", std::to_string(i) + "\n"}});
    images.push_back(BuildImage({shared, mine}, true, "img" + std::to_string(i)));
  }
  std::vector<fs::path> archives;
  for (int i = 0; i < kLoads; ++i) {
    archives.push_back(Work() / ("img" + std::to_string(i) + ".tar"));
    WriteTestFile(archives.back(),
                  TarOf(OciLayout({{&images[i], "example.com/img:" + std::to_string(i)}})));
  }
  std::vector<CommandResult> loads(kLoads), tags(kLoads);
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kLoads; ++i) {
      threads.emplace_back([&, i] {
        loads[i] = Imgtool({"load", "-i", archives[i].string()});
        tags[i] = Imgtool({"tag", "example.com/img:" + std::to_string(i),
                           "example.com/alias:" + std::to_string(i)});
      });
    }
    for (std::thread& t : threads) t.join();
  }
  for (int i = 0; i < kLoads; ++i) {
    EXPECT_EQ(loads[i].exit_code, 0) << i << ": " << Describe(loads[i]);
    EXPECT_EQ(loads[i].out, "Loaded image: example.com/img:" + std::to_string(i) + "\n");
    EXPECT_EQ(tags[i].exit_code, 0) << i << ": " << Describe(tags[i]);
  }
  nlohmann::json listed = nlohmann::json::parse(Ok({"images", "--format", "json"}));
  ASSERT_EQ(listed.size(), static_cast<size_t>(kLoads));
  std::set<std::string> names;
  for (const auto& image : listed) {
    for (const auto& name : image["RepoTags"]) names.insert(name.get<std::string>());
  }
  EXPECT_EQ(names.size(), 2u * kLoads);
  for (int i = 0; i < kLoads; ++i) {
    EXPECT_TRUE(names.contains("example.com/img:" + std::to_string(i))) << i;
    EXPECT_TRUE(names.contains("example.com/alias:" + std::to_string(i))) << i;
  }
  // One snapshot for the shared base, one per image on top; nothing left
  // half-done by the processes that lost a race.
  auto snapshots = Snapshots();
  ASSERT_NE(snapshots, nullptr);
  auto all = snapshots->List();
  ASSERT_TRUE(all) << all.error().ToString();
  EXPECT_EQ(all->size(), static_cast<size_t>(kLoads + 1));
  for (const overlay::SnapshotInfo& info : *all) {
    EXPECT_EQ(info.kind, overlay::Kind::kCommitted) << info.name;
  }
  EXPECT_EQ(Ok({"fsck"}), "no problems\n");
}

}  // namespace
}  // namespace imgtool::cli::testing
