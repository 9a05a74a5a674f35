// MountAt, MountGuard and MountAll against the real kernel: needs root.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/wait.h>
#include <signal.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/mount.h"
#include "common/scope_guard.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "tests/support/test_util.h"

namespace imgtool {
namespace {

namespace fs = std::filesystem;
using ::imgtool::testing::ReadTestFile;
using ::imgtool::testing::WriteTestFile;

// How many mounts sit on `path` right now (stacked mounts count each).
int MountCount(const fs::path& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  int count = 0;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    if (mount_point == path.string()) ++count;
  }
  return count;
}

bool CanWrite(const fs::path& file) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

class MountPrivilegedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    auto dir = TempDir::Create("imgtool-mount-test-");
    ASSERT_TRUE(dir) << dir.error().ToString();
    dir_ = std::make_unique<TempDir>(std::move(*dir));
  }

  fs::path MakeDir(const std::string& name) {
    fs::path path = dir_->path() / name;
    fs::create_directories(path);
    return path;
  }

  std::unique_ptr<TempDir> dir_;
};

TEST_F(MountPrivilegedTest, TmpfsMountsAndGuardUnmounts) {
  fs::path target = MakeDir("tmpfs");
  {
    Status status = MountAt(Mount{"tmpfs", "tmpfs", {"size=1m", "mode=0750", "nosuid"}}, target);
    ASSERT_TRUE(status) << status.error().ToString();
    MountGuard guard(target);
    struct statfs info {};
    ASSERT_EQ(::statfs(target.c_str(), &info), 0);
    EXPECT_EQ(info.f_type, static_cast<decltype(info.f_type)>(TMPFS_MAGIC));
    EXPECT_TRUE(info.f_flags & ST_NOSUID);
    struct stat st {};
    ASSERT_EQ(::stat(target.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0750u);
    WriteTestFile(target / "f", "x");
    EXPECT_EQ(MountCount(target), 1);
  }
  EXPECT_EQ(MountCount(target), 0);
  EXPECT_FALSE(fs::exists(target / "f"));
}

TEST_F(MountPrivilegedTest, ProcMounts) {
  fs::path target = MakeDir("proc");
  Status status = MountAt(Mount{"proc", "proc", {"nosuid", "nodev", "noexec"}}, target);
  ASSERT_TRUE(status) << status.error().ToString();
  MountGuard guard(target);
  EXPECT_TRUE(fs::exists(target / "self" / "status"));
}

TEST_F(MountPrivilegedTest, ReadOnlyBindRefusesWritesAndLeavesSourceWritable) {
  fs::path source = MakeDir("src");
  fs::path target = MakeDir("ro");
  WriteTestFile(source / "hello", "world");
  Status status = MountAt(Mount{"bind", source.string(), {"rbind", "ro"}}, target);
  ASSERT_TRUE(status) << status.error().ToString();
  MountGuard guard(target);
  EXPECT_EQ(ReadTestFile(target / "hello"), "world");
  errno = 0;
  EXPECT_FALSE(CanWrite(target / "new"));
  EXPECT_EQ(errno, EROFS);
  EXPECT_TRUE(CanWrite(source / "new"));
  EXPECT_TRUE(fs::exists(target / "new"));
}

TEST_F(MountPrivilegedTest, ReadOnlyNonRecursiveBindRemounts) {
  fs::path source = MakeDir("src");
  fs::path target = MakeDir("ro");
  Status status = MountAt(Mount{"bind", source.string(), {"ro", "nodev"}}, target);
  ASSERT_TRUE(status) << status.error().ToString();
  MountGuard guard(target);
  struct statfs info {};
  ASSERT_EQ(::statfs(target.c_str(), &info), 0);
  EXPECT_TRUE(info.f_flags & ST_RDONLY);
  EXPECT_TRUE(info.f_flags & ST_NODEV);
}

TEST_F(MountPrivilegedTest, WritableBindWritesThrough) {
  fs::path source = MakeDir("src");
  fs::path target = MakeDir("rw");
  Status status = MountAt(Mount{"bind", source.string(), {"rbind", "rw"}}, target);
  ASSERT_TRUE(status) << status.error().ToString();
  MountGuard guard(target);
  WriteTestFile(target / "through", "yes");
  EXPECT_EQ(ReadTestFile(source / "through"), "yes");
}

TEST_F(MountPrivilegedTest, BindOfMissingSourceNamesTargetAndType) {
  fs::path target = MakeDir("t");
  Status status = MountAt(Mount{"bind", (dir_->path() / "missing").string(), {"rbind"}}, target);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(status.error().message().rfind("mount bind at " + target.string() + ": bind ", 0), 0u)
      << status.error().ToString();
  EXPECT_EQ(MountCount(target), 0);
}

// Two lowers (the first one on top), an upper and a work dir.
// A user namespace mapping 0..65535 to 300000.., held by an fd (its
// creator, a child that unshared it, has exited).
UniqueFd MappedUserNamespace() {
  int ready[2];
  if (::pipe(ready) != 0) return UniqueFd();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(ready[0]);
    char ok = ::unshare(CLONE_NEWUSER) == 0 ? 1 : 0;
    (void)!::write(ready[1], &ok, 1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char ok = 0;
  (void)!::read(ready[0], &ok, 1);
  ::close(ready[0]);
  UniqueFd ns;
  if (ok == 1) {
    WriteTestFile("/proc/" + std::to_string(pid) + "/uid_map", "0 300000 65536");
    WriteTestFile("/proc/" + std::to_string(pid) + "/gid_map", "0 300000 65536");
    ns.reset(::open(("/proc/" + std::to_string(pid) + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return ns;
}

TEST_F(MountPrivilegedTest, IdmappedBindAndOverlayShiftOwners) {
  UniqueFd userns = MappedUserNamespace();
  ASSERT_TRUE(userns);
  MountIdmap idmap{userns.get(), 300000, 300000};
  fs::path source = MakeDir("source");
  WriteTestFile(source / "f", "x");  // owned by 0, which the mapping shows as 300000
  fs::path bind_target = MakeDir("bind");
  Status bound = MountAt({"bind", source.string(), {"bind", "ro"}}, bind_target, &idmap);
  ASSERT_TRUE(bound) << bound.error().ToString();
  {
    MountGuard guard(bind_target);
    struct stat st {};
    ASSERT_EQ(::stat((bind_target / "f").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 300000u);
    EXPECT_EQ(st.st_gid, 300000u);
    EXPECT_NE(::access((bind_target / "f").c_str(), W_OK), 0);  // "ro" kept
  }

  // The overlay's layers are idmapped (overlayfs itself can not be), and it
  // is created as the mapped root, so its work dir is usable: not read-only.
  fs::path upper = MakeDir("layers/upper");
  fs::path work = MakeDir("layers/work");
  fs::path merged = MakeDir("merged");
  Status mounted = MountAt({"overlay", "overlay",
                            {"lowerdir=" + source.string(), "upperdir=" + upper.string(),
                             "workdir=" + work.string(), "index=off", "metacopy=off"}},
                           merged, &idmap);
  ASSERT_TRUE(mounted) << mounted.error().ToString();
  {
    MountGuard guard(merged);
    struct stat st {};
    ASSERT_EQ(::stat((merged / "f").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 300000u);
    struct statvfs info {};
    ASSERT_EQ(::statvfs(merged.c_str(), &info), 0);
    EXPECT_EQ(info.f_flag & ST_RDONLY, 0u);
  }
  EXPECT_FALSE(MountAt({"tmpfs", "tmpfs", {}}, merged, &idmap));  // only bind and overlay
}

class OverlayMountTest : public MountPrivilegedTest, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    MountPrivilegedTest::SetUp();
    if (IsSkipped()) return;
    SetOverlayLegacyMountForTesting(GetParam());
  }
  void TearDown() override { SetOverlayLegacyMountForTesting(false); }
};

TEST_P(OverlayMountTest, TwoLowersUpperAndWork) {
  fs::path top = MakeDir("top");
  fs::path bottom = MakeDir("bottom");
  fs::path upper = MakeDir("upper");
  fs::path work = MakeDir("work");
  fs::path merged = MakeDir("merged");
  WriteTestFile(bottom / "shared", "bottom");
  WriteTestFile(bottom / "only-bottom", "b");
  WriteTestFile(top / "shared", "top");
  WriteTestFile(top / "only-top", "t");
  Mount overlay{"overlay",
                "overlay",
                {"lowerdir=" + top.string() + ":" + bottom.string(), "upperdir=" + upper.string(),
                 "workdir=" + work.string(), "index=off", "redirect_dir=off", "metacopy=off"}};
  Status status = MountAt(overlay, merged);
  ASSERT_TRUE(status) << status.error().ToString();
  {
    MountGuard guard(merged);
    struct statfs info {};
    ASSERT_EQ(::statfs(merged.c_str(), &info), 0);
    EXPECT_EQ(info.f_type, static_cast<decltype(info.f_type)>(OVERLAYFS_SUPER_MAGIC));
    EXPECT_EQ(ReadTestFile(merged / "shared"), "top");
    EXPECT_EQ(ReadTestFile(merged / "only-bottom"), "b");
    EXPECT_EQ(ReadTestFile(merged / "only-top"), "t");
    WriteTestFile(merged / "written", "new");
    EXPECT_EQ(ReadTestFile(upper / "written"), "new");
    EXPECT_FALSE(fs::exists(top / "written"));
  }
  EXPECT_EQ(MountCount(merged), 0);
}

TEST_P(OverlayMountTest, LowersOnlyIsReadOnly) {
  fs::path a = MakeDir("a");
  fs::path b = MakeDir("b");
  fs::path merged = MakeDir("merged");
  WriteTestFile(b / "file", "b");
  Status status = MountAt(
      Mount{"overlay", "overlay", {"lowerdir=" + a.string() + ":" + b.string(), "ro"}}, merged);
  ASSERT_TRUE(status) << status.error().ToString();
  MountGuard guard(merged);
  EXPECT_EQ(ReadTestFile(merged / "file"), "b");
  errno = 0;
  EXPECT_FALSE(CanWrite(merged / "new"));
  EXPECT_EQ(errno, EROFS);
}

TEST_P(OverlayMountTest, MissingLowerNamesThePath) {
  fs::path a = MakeDir("a");
  fs::path merged = MakeDir("merged");
  std::string missing = (dir_->path() / "missing").string();
  Status status =
      MountAt(Mount{"overlay", "overlay", {"lowerdir=" + a.string() + ":" + missing}}, merged);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().message().rfind("mount overlay at " + merged.string(), 0), 0u)
      << status.error().ToString();
  if (!GetParam()) {
    EXPECT_NE(status.error().message().find(missing), std::string::npos)
        << status.error().ToString();
  }
  EXPECT_EQ(MountCount(merged), 0);
}

// The first lower is also the first one the kernel is asked about (the new
// API's context asks itself whether it takes "lowerdir+"): a missing one is
// still named, not taken for a kernel without the key.
TEST_P(OverlayMountTest, MissingFirstLowerNamesThePath) {
  fs::path a = MakeDir("a");
  fs::path merged = MakeDir("merged");
  std::string missing = (dir_->path() / "missing").string();
  Status status =
      MountAt(Mount{"overlay", "overlay", {"lowerdir=" + missing + ":" + a.string()}}, merged);
  ASSERT_FALSE(status);
  if (!GetParam()) {
    EXPECT_NE(status.error().message().find("lowerdir+ \"" + missing + "\""), std::string::npos)
        << status.error().ToString();
  }
  EXPECT_EQ(MountCount(merged), 0);
  // The same process mounts a good stack afterwards.
  fs::path b = MakeDir("b");
  ASSERT_TRUE(MountAt(Mount{"overlay", "overlay", {"lowerdir=" + a.string() + ":" + b.string()}},
                      merged));
  EXPECT_EQ(MountCount(merged), 1);
  ASSERT_EQ(umount2(merged.c_str(), MNT_DETACH), 0);
}

// 300 lowers with long absolute paths exceed one page joined; the new API takes
// them one by one, the legacy path makes them relative to their common parent.
TEST_P(OverlayMountTest, ManyLongLowerPaths) {
  fs::path base = MakeDir(std::string(60, 'p'));
  std::string lowers;
  for (int i = 0; i < 300; ++i) {
    fs::path layer = base / std::to_string(i);
    fs::create_directories(layer);
    WriteTestFile(layer / ("f" + std::to_string(i)), std::to_string(i));
    if (i > 0) lowers.push_back(':');
    lowers += layer.string();
  }
  ASSERT_GT(lowers.size(), 4096u);
  fs::path merged = MakeDir("merged");
  Status status = MountAt(Mount{"overlay", "overlay", {"lowerdir=" + lowers}}, merged);
  ASSERT_TRUE(status) << status.error().ToString();
  MountGuard guard(merged);
  for (int i = 0; i < 300; ++i) {
    ASSERT_EQ(ReadTestFile(merged / ("f" + std::to_string(i))), std::to_string(i)) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Api, OverlayMountTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Legacy") : std::string("LowerdirPlus");
                         });

TEST_F(MountPrivilegedTest, DetachedOverlayIsMountedNowhereAndMovesIntoANamespace) {
  fs::path lower = MakeDir("lower");
  fs::path upper = MakeDir("upper");
  fs::path work = MakeDir("work");
  fs::path target = MakeDir("target");
  WriteTestFile(lower / "file", "lower");
  Mount overlay{"overlay",
                "overlay",
                {"lowerdir=" + lower.string(), "upperdir=" + upper.string(),
                 "workdir=" + work.string(), "index=off", "nosuid"}};
  // Other tests mount in parallel: only mounts of this test's dir count.
  auto mounts_of_this_test = [&] {
    std::istringstream lines(ReadTestFile("/proc/self/mountinfo"));
    int count = 0;
    for (std::string line; std::getline(lines, line);) {
      count += line.find(dir_->path().string()) != std::string::npos;
    }
    return count;
  };
  auto tree = MountDetached(overlay);
  if (!tree && tree.error().code() == ErrorCode::kNotFound) {
    GTEST_SKIP() << "no fsconfig lowerdir+ here: " << tree.error().ToString();
  }
  ASSERT_TRUE(tree) << tree.error().ToString();
  EXPECT_EQ(mounts_of_this_test(), 0) << "nothing mounted on the host";
  // The fd is the overlay's root: reads and writes go through it.
  UniqueFd file(::openat(tree->get(), "file", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(file);
  char buf[16] = {};
  EXPECT_EQ(::read(file.get(), buf, sizeof(buf)), 5);
  EXPECT_EQ(std::string(buf), "lower");
  UniqueFd created(::openat(tree->get(), "new", O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(created);
  EXPECT_TRUE(fs::exists(upper / "new"));
  // A child in a new mount namespace attaches it; the host never sees it.
  pid_t pid = fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0) _exit(2);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(3);
    if (::syscall(SYS_move_mount, tree->get(), "", AT_FDCWD, target.c_str(),
                  MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      _exit(4);
    }
    struct statfs info {};
    if (::statfs(target.c_str(), &info) != 0) _exit(5);
    if (info.f_type != static_cast<decltype(info.f_type)>(OVERLAYFS_SUPER_MAGIC)) _exit(6);
    struct statvfs flags {};
    if (::statvfs(target.c_str(), &flags) != 0 || (flags.f_flag & ST_NOSUID) == 0) _exit(7);
    std::ifstream in(target / "file");
    std::string text;
    in >> text;
    _exit(text == "lower" ? 0 : 8);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  EXPECT_EQ(MountCount(target), 0);

  // Only overlays, and nothing that needs a place (propagation).
  auto tmpfs = MountDetached({"tmpfs", "tmpfs", {}});
  ASSERT_FALSE(tmpfs);
  EXPECT_EQ(tmpfs.error().code(), ErrorCode::kNotFound);
  Mount shared = overlay;
  shared.options.push_back("rshared");
  auto propagation = MountDetached(shared);
  ASSERT_FALSE(propagation);
  EXPECT_EQ(propagation.error().code(), ErrorCode::kNotFound);
  auto bad = MountDetached({"overlay", "overlay", {"lowerdir=" + (dir_->path() / "gone").string()}});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("gone"), std::string::npos) << bad.error().ToString();
}

TEST_F(MountPrivilegedTest, MountAllStacksAndUndoesEverything) {
  fs::path target = MakeDir("stack");
  std::vector<Mount> mounts = {Mount{"tmpfs", "tmpfs", {"size=1m"}},
                               Mount{"tmpfs", "tmpfs", {"size=2m"}}};
  {
    auto guards = MountAll(mounts, target);
    ASSERT_TRUE(guards) << guards.error().ToString();
    EXPECT_EQ(guards->size(), 2u);
    EXPECT_EQ(MountCount(target), 2);
  }
  EXPECT_EQ(MountCount(target), 0);
}

TEST_F(MountPrivilegedTest, MountAllUndoesEarlierMountsOnFailure) {
  fs::path target = MakeDir("stack");
  std::vector<Mount> mounts = {Mount{"tmpfs", "tmpfs", {}},
                               Mount{"bind", (dir_->path() / "missing").string(), {"rbind"}}};
  auto guards = MountAll(mounts, target);
  ASSERT_FALSE(guards);
  EXPECT_EQ(MountCount(target), 0);
}

TEST_F(MountPrivilegedTest, ReleasedGuardLeavesMountAndUnmountReportsIt) {
  fs::path target = MakeDir("t");
  ASSERT_TRUE(MountAt(Mount{"tmpfs", "tmpfs", {}}, target));
  fs::path released;
  {
    MountGuard guard(target);
    released = guard.Release();
  }
  EXPECT_EQ(released, target);
  EXPECT_EQ(MountCount(target), 1);
  MountGuard again(target);
  EXPECT_TRUE(again.Unmount());
  EXPECT_EQ(MountCount(target), 0);
  MountGuard moved_from(target);
  MountGuard moved_to(std::move(moved_from));
  EXPECT_TRUE(moved_from.target().empty());
  EXPECT_FALSE(moved_to.Unmount());  // nothing mounted there any more
}

}  // namespace
}  // namespace imgtool
