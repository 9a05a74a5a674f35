// Device access in a container's cgroup, enforced by this machine's kernel:
// the v1 devices controller through the manager, and the v2 BPF program on a
// real cgroup2 mount (this hybrid machine has one at /sys/fs/cgroup/unified).
// Root only. A child process moves itself into the cgroup and tries the
// nodes: /dev/null opens, a node it made for /dev/kmsg (1:11) does not.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <string>

#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "runner/cgroup_devices.h"
#include "runner/cgroup_files.h"
#include "runner/cgroup_manager.h"
#include "tests/support/test_util.h"

namespace imgtool::runner {
namespace {

namespace fs = std::filesystem;

// What a process in the cgroup(s) gets, one letter per try: 'y' allowed,
// 'n' EPERM, 'e' another error. Tries: open /dev/null, mknod of a char node
// 1:11, open of that node, mknod of a block node 7:0.
std::string TryDevices(const std::vector<fs::path>& procs_files, const fs::path& scratch) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe";
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    for (const fs::path& procs : procs_files) {
      int fd = open(procs.c_str(), O_WRONLY);
      if (fd < 0 || write(fd, "0", 1) != 1) _exit(3);
      close(fd);
    }
    auto letter = [](int rc) { return rc >= 0 ? 'y' : errno == EPERM ? 'n' : 'e'; };
    char out[4];
    int null_fd = open("/dev/null", O_RDWR);
    out[0] = letter(null_fd);
    fs::path kmsg = scratch / "kmsg";
    out[1] = letter(mknod(kmsg.c_str(), S_IFCHR | 0600, makedev(1, 11)));
    out[2] = letter(open(kmsg.c_str(), O_RDONLY | O_NONBLOCK));
    fs::path loop = scratch / "loop";
    out[3] = letter(mknod(loop.c_str(), S_IFBLK | 0600, makedev(7, 0)));
    (void)!write(fds[1], out, sizeof out);
    _exit(0);
  }
  close(fds[1]);
  char buf[8] = {};
  ssize_t n = read(fds[0], buf, sizeof buf);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (n != 4) return "child exited " + std::to_string(WEXITSTATUS(status));
  return std::string(buf, 4);
}

class CgroupDevicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    auto tmp = TempDir::Create("cgroup-devices-test-");
    ASSERT_TRUE(tmp);
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    // The host itself must be able to open the node, or the test shows nothing.
    fs::path probe = tmp_->path() / "host-kmsg";
    ASSERT_EQ(mknod(probe.c_str(), S_IFCHR | 0600, makedev(1, 11)), 0) << strerror(errno);
    int fd = open(probe.c_str(), O_RDONLY | O_NONBLOCK);
    if (fd < 0) GTEST_SKIP() << "this host denies /dev/kmsg itself: " << strerror(errno);
    close(fd);
  }

  fs::path Scratch(const std::string& name) {
    fs::path dir = tmp_->path() / name;
    fs::create_directories(dir);
    return dir;
  }

  std::unique_ptr<TempDir> tmp_;
};

TEST_F(CgroupDevicesTest, V1DevicesControllerAllowsOnlyDockersList) {
  auto layout = DetectCgroupLayout();
  ASSERT_TRUE(layout) << layout.error().ToString();
  if (layout->version != CgroupVersion::kV1 || !layout->v1_mounts.contains("devices")) {
    GTEST_SKIP() << "this machine has no cgroup v1 devices hierarchy";
  }
  CgroupLayout test_layout = *layout;
  test_layout.parent = "imgtool-devices-test-" + std::to_string(getpid());
  const fs::path devices = test_layout.v1_mounts.at("devices");
  for (bool privileged : {false, true}) {
    SCOPED_TRACE(privileged ? "--privileged" : "default");
    std::string id = privileged ? "privileged" : "default";
    auto manager = NewCgroupManager(id, test_layout);
    ASSERT_TRUE(manager);
    CgroupResources resources;
    resources.all_devices = privileged;
    auto created = (*manager)->Create(resources);
    ASSERT_TRUE(created) << created.error().ToString();
    fs::path dir = devices / test_layout.parent / id;
    auto read = ReadCgroupFile(dir, "devices.list");
    ASSERT_TRUE(read) << read.error().ToString();
    const std::string& list = *read;
    if (privileged) {
      EXPECT_EQ(list, "a *:* rwm\n");
    } else {
      std::string expected;
      for (const DeviceRule& rule : DefaultDeviceRules()) expected += DeviceRuleText(rule) + "\n";
      EXPECT_EQ(list, expected);
    }
    // In every hierarchy, as a container's process is.
    std::vector<fs::path> procs;
    for (const auto& [controller, mount] : test_layout.v1_mounts) {
      fs::path procs_file = mount / test_layout.parent / id / "cgroup.procs";
      if (fs::exists(procs_file) &&
          std::find(procs.begin(), procs.end(), procs_file) == procs.end()) {
        procs.push_back(procs_file);
      }
    }
    EXPECT_EQ(TryDevices(procs, Scratch(id)), privileged ? "yyyy" : "yyny");
    auto destroyed = (*manager)->Destroy();
    EXPECT_TRUE(destroyed) << destroyed.error().ToString();
  }
  for (const auto& [controller, mount] : test_layout.v1_mounts) {
    rmdir((mount / test_layout.parent).c_str());
  }
}

TEST_F(CgroupDevicesTest, V2FilterProgramAllowsOnlyDockersList) {
  // Any cgroup2 mount takes device programs, whatever controllers it holds.
  std::ifstream mounts("/proc/self/mountinfo");
  std::string line;
  fs::path unified;
  while (std::getline(mounts, line)) {
    size_t dash = line.find(" - cgroup2 ");
    if (dash == std::string::npos) continue;
    size_t start = 0;
    for (int field = 0; field < 4; ++field) start = line.find(' ', start) + 1;
    unified = line.substr(start, line.find(' ', start) - start);
    break;
  }
  if (unified.empty()) GTEST_SKIP() << "no cgroup2 mount on this machine";
  fs::path dir = unified / ("imgtool-devices-test-" + std::to_string(getpid()));
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0) << dir << ": " << strerror(errno);
  {
    UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    auto attached = AttachDeviceFilter(fd.get());
    ASSERT_TRUE(attached) << attached.error().ToString();
  }
  EXPECT_EQ(TryDevices({dir / "cgroup.procs"}, Scratch("v2")), "yyny");
  // Its sibling without the program: everything opens.
  fs::path plain = unified / ("imgtool-devices-test-plain-" + std::to_string(getpid()));
  ASSERT_EQ(mkdir(plain.c_str(), 0755), 0);
  EXPECT_EQ(TryDevices({plain / "cgroup.procs"}, Scratch("v2-plain")), "yyyy");
  EXPECT_TRUE(RemoveCgroupDir(dir));
  EXPECT_TRUE(RemoveCgroupDir(plain));
}

}  // namespace
}  // namespace imgtool::runner
