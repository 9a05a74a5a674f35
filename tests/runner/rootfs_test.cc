#include "runner/rootfs.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/temp_dir.h"

namespace imgtool::runner {
namespace {

using Kind = RootfsOp::Kind;

const RootfsOp* Find(const RootfsPlan& plan, Kind kind, const std::string& target) {
  for (const RootfsOp& op : plan.ops) {
    if (op.kind == kind && op.target == target) return &op;
  }
  return nullptr;
}

size_t Count(const RootfsPlan& plan, Kind kind) {
  return static_cast<size_t>(std::count_if(plan.ops.begin(), plan.ops.end(),
                                           [&](const RootfsOp& op) { return op.kind == kind; }));
}

TEST(RootfsPlanTest, DefaultHasTheSystemMountsMasksAndReadOnlyPaths) {
  Result<RootfsPlan> plan = BuildRootfsPlan({});
  ASSERT_TRUE(plan.has_value()) << plan.error().ToString();
  const RootfsOp* proc = Find(*plan, Kind::kMountFs, "proc");
  ASSERT_NE(proc, nullptr);
  EXPECT_EQ(proc->fstype, "proc");
  const RootfsOp* sys = Find(*plan, Kind::kMountFs, "sys");
  ASSERT_NE(sys, nullptr);
  EXPECT_EQ(sys->fstype, "sysfs");
  EXPECT_TRUE(sys->flags & MS_RDONLY);
  const RootfsOp* pts = Find(*plan, Kind::kMountFs, "dev/pts");
  ASSERT_NE(pts, nullptr);
  EXPECT_NE(pts->data.find("newinstance"), std::string::npos);
  EXPECT_NE(pts->data.find("ptmxmode=0666"), std::string::npos);
  for (const char* dev : {"dev/null", "dev/zero", "dev/full", "dev/random", "dev/urandom", "dev/tty"}) {
    EXPECT_NE(Find(*plan, Kind::kDevice, dev), nullptr) << dev;
  }
  EXPECT_NE(Find(*plan, Kind::kMountFs, "dev/shm"), nullptr);
  EXPECT_NE(Find(*plan, Kind::kMountFs, "dev/mqueue"), nullptr);
  EXPECT_EQ(Find(*plan, Kind::kSymlink, "dev/ptmx")->source, "pts/ptmx");
  EXPECT_EQ(Find(*plan, Kind::kSymlink, "dev/fd")->source, "/proc/self/fd");
  EXPECT_EQ(Count(*plan, Kind::kMask), std::size(kMaskedPaths));
  EXPECT_NE(Find(*plan, Kind::kMask, "proc/kcore"), nullptr);
  EXPECT_NE(Find(*plan, Kind::kMask, "sys/firmware"), nullptr);
  EXPECT_EQ(Count(*plan, Kind::kReadOnly), std::size(kReadOnlyPaths));
  EXPECT_NE(Find(*plan, Kind::kReadOnly, "proc/sysrq-trigger"), nullptr);
  EXPECT_FALSE(plan->read_only);
  EXPECT_FALSE(plan->devices_by_bind);
  // /proc comes before anything inside it.
  auto index = [&](Kind kind, const std::string& target) {
    return std::find_if(plan->ops.begin(), plan->ops.end(), [&](const RootfsOp& op) {
             return op.kind == kind && op.target == target;
           }) - plan->ops.begin();
  };
  EXPECT_LT(index(Kind::kMountFs, "proc"), index(Kind::kMask, "proc/kcore"));
  EXPECT_LT(index(Kind::kMountFs, "dev"), index(Kind::kDevice, "dev/null"));
}

TEST(RootfsPlanTest, PrivilegedHasNoMasksAndAWritableSys) {
  RootfsOptions options;
  options.privileged = true;
  Result<RootfsPlan> plan = BuildRootfsPlan(options);
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(Count(*plan, Kind::kMask), 0u);
  EXPECT_EQ(Count(*plan, Kind::kReadOnly), 0u);
  EXPECT_FALSE(Find(*plan, Kind::kMountFs, "sys")->flags & MS_RDONLY);
}

TEST(RootfsPlanTest, CgroupV1HierarchiesUnderAReadOnlyTmpfs) {
  RootfsOptions options;
  options.cgroup_v1 = {{"cpu,cpuacct", "cpu,cpuacct", {"cpu", "cpuacct"}},
                       {"memory", "memory", {}}};
  Result<RootfsPlan> plan = BuildRootfsPlan(options);
  ASSERT_TRUE(plan.has_value()) << plan.error().ToString();
  // Everything after the sysfs mount, in order.
  auto sys = std::find_if(plan->ops.begin(), plan->ops.end(), [](const RootfsOp& op) {
    return op.kind == Kind::kMountFs && op.target == "sys";
  });
  ASSERT_NE(sys, plan->ops.end());
  std::vector<std::string> seen;
  for (auto op = sys + 1; op != plan->ops.end() && op->target.starts_with("sys/fs/cgroup"); ++op) {
    std::string line = std::to_string(static_cast<int>(op->kind)) + " " + op->target;
    if (op->kind == Kind::kMountFs) {
      line += " " + op->fstype + " " + op->data + ((op->flags & MS_RDONLY) ? " ro" : " rw");
    }
    if (op->kind == Kind::kSymlink) line += " -> " + op->source;
    seen.push_back(line);
  }
  auto k = [](Kind kind) { return std::to_string(static_cast<int>(kind)) + " "; };
  EXPECT_EQ(seen, (std::vector<std::string>{
                      k(Kind::kMountFs) + "sys/fs/cgroup tmpfs mode=755 rw",
                      k(Kind::kMkdir) + "sys/fs/cgroup/cpu,cpuacct",
                      k(Kind::kSymlink) + "sys/fs/cgroup/cpu -> cpu,cpuacct",
                      k(Kind::kSymlink) + "sys/fs/cgroup/cpuacct -> cpu,cpuacct",
                      k(Kind::kMkdir) + "sys/fs/cgroup/memory",
                      k(Kind::kSeal) + "sys/fs/cgroup",
                      k(Kind::kMountFs) + "sys/fs/cgroup/cpu,cpuacct cgroup cpu,cpuacct ro",
                      k(Kind::kMountFs) + "sys/fs/cgroup/memory cgroup memory ro",
                  }));

  options.privileged = true;
  plan = BuildRootfsPlan(options);
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(Count(*plan, Kind::kSeal), 0u);
  EXPECT_FALSE(Find(*plan, Kind::kMountFs, "sys/fs/cgroup/memory")->flags & MS_RDONLY);

  for (const char* bad : {"", "..", "a/b"}) {
    options.cgroup_v1 = {{bad, "memory", {}}};
    EXPECT_FALSE(BuildRootfsPlan(options).has_value()) << bad;
  }
  EXPECT_EQ(Count(BuildRootfsPlan({}).value(), Kind::kSeal), 0u) << "nothing without hierarchies";
}

TEST(RootfsPlanTest, UserNamespaceWithHostNetworkBindsSys) {
  RootfsOptions options;
  options.user_namespace = true;
  options.new_netns = false;
  Result<RootfsPlan> plan = BuildRootfsPlan(options);
  ASSERT_TRUE(plan.has_value());
  EXPECT_TRUE(plan->devices_by_bind);
  EXPECT_EQ(Find(*plan, Kind::kMountFs, "sys"), nullptr);
  const RootfsOp* sys = Find(*plan, Kind::kBind, "sys");
  ASSERT_NE(sys, nullptr);
  EXPECT_EQ(sys->source, "/sys");
  EXPECT_TRUE(sys->read_only);
}

TEST(RootfsPlanTest, VolumesTmpfsFilesAndCwd) {
  RootfsOptions options;
  options.read_only = true;
  options.volumes = {{"/host/data", "/srv/data/", true}, {"/host/file", "/etc/app.conf", false}};
  options.tmpfs = {{"/run", "size=1m,exec"}};
  options.file_binds = {{"/state/hosts", "/etc/hosts"}};
  options.cwd = "/work/dir";
  Result<RootfsPlan> plan = BuildRootfsPlan(options);
  ASSERT_TRUE(plan.has_value()) << plan.error().ToString();
  EXPECT_TRUE(plan->read_only);
  const RootfsOp* data = Find(*plan, Kind::kBind, "srv/data");
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(data->source, "/host/data");
  EXPECT_TRUE(data->read_only);
  EXPECT_FALSE(Find(*plan, Kind::kBind, "etc/app.conf")->read_only);
  EXPECT_EQ(Find(*plan, Kind::kBind, "etc/hosts")->source, "/state/hosts");
  const RootfsOp* run = Find(*plan, Kind::kMountFs, "run");
  ASSERT_NE(run, nullptr);
  EXPECT_EQ(run->data, "size=1m");
  EXPECT_FALSE(run->flags & MS_NOEXEC);
  EXPECT_TRUE(run->flags & MS_NOSUID);
  EXPECT_NE(Find(*plan, Kind::kMkdir, "work/dir"), nullptr);
  // Masks come after the user's mounts, so a volume can not uncover them.
  EXPECT_EQ(plan->ops.back().kind, Kind::kMkdir);
  EXPECT_EQ(plan->ops[plan->ops.size() - 2].kind, Kind::kReadOnly);
}

TEST(RootfsPlanTest, RefusesBadContainerPaths) {
  for (const char* destination : {"relative", "/", "/../../etc", ""}) {
    RootfsOptions options;
    options.volumes = {{"/host", destination, false}};
    Result<RootfsPlan> plan = BuildRootfsPlan(options);
    ASSERT_FALSE(plan.has_value()) << destination;
    EXPECT_EQ(plan.error().code(), ErrorCode::kInvalidArgument);
  }
  RootfsOptions options;
  options.volumes = {{"host", "/data", false}};
  EXPECT_FALSE(BuildRootfsPlan(options).has_value());
  options.volumes.clear();
  options.tmpfs = {{"/x", "size=1m,bogus"}};
  Result<RootfsPlan> plan = BuildRootfsPlan(options);
  ASSERT_FALSE(plan.has_value());
  EXPECT_NE(plan.error().message().find("bogus"), std::string::npos);
}

TEST(TmpfsOptionsTest, DefaultsAndOverrides) {
  Result<TmpfsOptions> defaults = ParseTmpfsOptions("");
  ASSERT_TRUE(defaults.has_value());
  EXPECT_EQ(defaults->flags, MS_NOEXEC | MS_NOSUID | MS_NODEV);
  EXPECT_EQ(defaults->data, "");
  Result<TmpfsOptions> custom = ParseTmpfsOptions("ro,exec,size=64m,mode=1777,uid=1000");
  ASSERT_TRUE(custom.has_value());
  EXPECT_EQ(custom->flags, MS_RDONLY | MS_NOSUID | MS_NODEV);
  EXPECT_EQ(custom->data, "size=64m,mode=1777,uid=1000");
  EXPECT_FALSE(ParseTmpfsOptions("size").has_value());
  EXPECT_FALSE(ParseTmpfsOptions("lowerdir=/x").has_value());
}

// The layer is used only over an /etc that is root's and 0755 (its own
// etc/ shows those attributes): ownership by root needs root.
class EtcTargetsLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: the layer goes only over a root-owned /etc";
    Result<TempDir> dir = TempDir::Create("imgtool-test-");
    ASSERT_TRUE(dir.has_value());
    dir_.emplace(std::move(*dir));
  }
  std::filesystem::path Path(const std::string& name) const { return dir_->path() / name; }
  std::vector<Mount> Overlay(const std::string& lowers) const {
    return {Mount{"overlay", "overlay", {"lowerdir=" + lowers, "upperdir=/u", "workdir=/w"}}};
  }
  std::optional<TempDir> dir_;
};

TEST_F(EtcTargetsLayerTest, GoesOnTopOfAnImageWhoseEtcIsAPlainDirectoryOrMissing) {
  namespace fs = std::filesystem;
  fs::create_directories(Path("top"));  // no etc
  fs::create_directories(Path("base/etc"));
  ASSERT_EQ(::chmod(Path("base/etc").c_str(), 0755), 0);
  std::vector<Mount> mounts = Overlay(Path("top").string() + ":" + Path("base").string());
  fs::path layer = Path("etc-targets");
  ASSERT_TRUE(AddEtcTargetsLayer(&mounts, layer).has_value());
  using Lowers = std::vector<std::string>;
  EXPECT_EQ(OverlayLowerDirs(mounts[0]),
            (Lowers{layer.string(), Path("top").string(), Path("base").string()}));
  for (const char* name : kEtcFiles) {
    struct stat st {};
    ASSERT_EQ(::stat((layer / name).c_str(), &st), 0) << name;
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_size, 0);
    EXPECT_EQ(st.st_mode & 07777, 0644u);
  }
  struct stat etc {};
  ASSERT_EQ(::stat((layer / "etc").c_str(), &etc), 0);
  EXPECT_EQ(etc.st_mode & 07777, 0755u);
  // Made once: a second container stacks the same directory.
  std::vector<Mount> again = Overlay(Path("base").string());
  ASSERT_TRUE(AddEtcTargetsLayer(&again, layer).has_value());
  EXPECT_EQ(OverlayLowerDirs(again[0]), (Lowers{layer.string(), Path("base").string()}));
  // No etc anywhere (a scratch image): the layer provides it.
  std::vector<Mount> bare = Overlay(Path("top").string());
  ASSERT_TRUE(AddEtcTargetsLayer(&bare, layer).has_value());
  EXPECT_EQ(OverlayLowerDirs(bare[0]), (Lowers{layer.string(), Path("top").string()}));
}

TEST_F(EtcTargetsLayerTest, LeftOutWhereItsEtcWouldHideOrChangeTheImages) {
  namespace fs = std::filesystem;
  fs::path layer = Path("etc-targets");
  // /etc a symlink in the topmost layer that has one.
  fs::create_directories(Path("link/usr/etc"));
  fs::create_directory_symlink("usr/etc", Path("link/etc"));
  fs::create_directories(Path("base/etc"));
  ASSERT_EQ(::chmod(Path("base/etc").c_str(), 0755), 0);
  std::string lowers = Path("link").string() + ":" + Path("base").string();
  std::vector<Mount> mounts = Overlay(lowers);
  const std::vector<Mount> unchanged = mounts;
  ASSERT_TRUE(AddEtcTargetsLayer(&mounts, layer).has_value());
  EXPECT_EQ(mounts, unchanged);
  // An /etc with other attributes than the layer's.
  fs::create_directories(Path("odd/etc"));
  ASSERT_EQ(::chmod(Path("odd/etc").c_str(), 0750), 0);
  std::vector<Mount> odd = Overlay(Path("odd").string());
  ASSERT_TRUE(AddEtcTargetsLayer(&odd, layer).has_value());
  EXPECT_EQ(odd, Overlay(Path("odd").string()));
  // Not a lone overlay.
  std::vector<Mount> bind = {Mount{"bind", Path("base").string(), {"rbind", "rw"}}};
  ASSERT_TRUE(AddEtcTargetsLayer(&bind, layer).has_value());
  EXPECT_EQ(bind[0].options, (std::vector<std::string>{"rbind", "rw"}));
  // Already at the kernel's limit of lower layers.
  std::string many = Path("base").string();
  for (size_t i = 1; i < kMaxOverlayLowerLayers; ++i) many += ":" + Path("base").string();
  std::vector<Mount> full = Overlay(many);
  ASSERT_TRUE(AddEtcTargetsLayer(&full, layer).has_value());
  EXPECT_EQ(full, Overlay(many));
  EXPECT_FALSE(fs::exists(layer));  // never needed
}

}  // namespace
}  // namespace imgtool::runner
