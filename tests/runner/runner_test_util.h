// Shared by the runner's privileged tests: a small rootfs built from
// busybox-static and the probe (tests/runner/helper/probe.c), an overlay per
// test on top of it, and a way to run a container with its output captured.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "runner/container.h"
#include "tests/support/test_util.h"

#ifndef IMGTOOL_RUNNER_PROBE
#error "IMGTOOL_RUNNER_PROBE must name the probe binary (tests/CMakeLists.txt)"
#endif

namespace imgtool::runner::testing {

namespace fs = std::filesystem;

inline constexpr const char* kBusyboxApplets[] = {
    "sh", "cat", "echo", "true", "false", "sleep", "ls", "id", "hostname", "ps", "mount",
    "whoami", "env", "kill", "test", "touch", "mkdir", "grep", "wc", "tty", "stty", "uname"};

// /bin/busybox and applet links, the probe as /bin/probe, a few accounts.
inline void BuildTestRootfs(const fs::path& root) {
  for (const char* dir : {"bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev",
                          "usr/bin", "data"}) {
    fs::create_directories(root / dir);
  }
  ::chmod((root / "tmp").c_str(), 01777);
  fs::copy_file("/bin/busybox", root / "bin/busybox", fs::copy_options::overwrite_existing);
  for (const char* applet : kBusyboxApplets) {
    std::error_code ec;
    fs::create_symlink("busybox", root / "bin" / applet, ec);
  }
  fs::copy_file(IMGTOOL_RUNNER_PROBE, root / "bin/probe", fs::copy_options::overwrite_existing);
  ::chmod((root / "bin/probe").c_str(), 0755);
  imgtool::testing::WriteTestFile(root / "etc/passwd",
                                  "root:x:0:0:root:/root:/bin/sh\n"
                                  "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
                                  "app:x:1000:1000:app user:/home/app:/bin/sh\n");
  imgtool::testing::WriteTestFile(root / "etc/group",
                                  "root:x:0:\ntty:x:5:\napp:x:1000:\nstaff:x:50:app,daemon\n"
                                  "extra:x:2000:app\n");
  imgtool::testing::WriteTestFile(root / "data/file", "from the image\n");
  imgtool::testing::WriteTestFile(root / "bin/not-executable", "#!/bin/sh\necho no\n", 0644);
}

struct Captured {
  ExitStatus status;
  std::string out;
  std::string err;
};

inline std::string ReadAllFrom(int fd) {
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) text.append(buffer, static_cast<size_t>(n));
  return text;
}

// Runs to the end with stdout/stderr captured (both must fit a pipe: < 64 KiB)
// and `input` (< 64 KiB) on stdin when given.
inline Result<Captured> RunCaptured(const ContainerSpec& spec, const std::string* input = nullptr) {
  int out[2], err[2], in[2] = {-1, -1};
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return ErrnoError("pipe");
  UniqueFd out_read(out[0]), out_write(out[1]), err_read(err[0]), err_write(err[1]);
  UniqueFd in_read, in_write;
  if (input != nullptr) {
    if (::pipe2(in, O_CLOEXEC) != 0) return ErrnoError("pipe");
    in_read.reset(in[0]);
    in_write.reset(in[1]);
    if (::write(in_write.get(), input->data(), input->size()) !=
        static_cast<ssize_t>(input->size())) {
      return ErrnoError("write input");
    }
    in_write.reset();
  }
  Stdio stdio{in_read ? in_read.get() : -1, out_write.get(), err_write.get()};
  Result<std::unique_ptr<Container>> container = Container::Start(spec, stdio);
  out_write.reset();
  err_write.reset();
  in_read.reset();
  if (!container) return std::move(container).error();
  Captured captured;
  IMGTOOL_ASSIGN_OR_RETURN(captured.status, (*container)->Wait());
  captured.out = ReadAllFrom(out_read.get());
  captured.err = ReadAllFrom(err_read.get());
  return captured;
}

// Starts `spec`, whose command prints "up" first (probe echo up + sleep 30),
// and returns once "up" was read from its stdout: the command runs.
inline Result<std::unique_ptr<Container>> StartUntilUp(const ContainerSpec& spec) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return ErrnoError("pipe");
  UniqueFd out_read(out[0]), out_write(out[1]);
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<Container> container,
                           Container::Start(spec, Stdio{-1, out_write.get(), 2}));
  out_write.reset();
  char buffer[3];
  if (::read(out_read.get(), buffer, 3) != 3) return InternalError("the command printed no \"up\"");
  return container;
}

inline std::string UniqueId(const char* prefix) {
  static std::atomic<int> counter{0};
  return std::string(prefix) + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter++);
}

// A fresh overlay (upper/work/merged) per test over one rootfs per test binary.
class RunnerPrivilegedTest : public ::testing::Test {
 protected:
  static fs::path LowerDir() {
    static TempDir* lower = [] {
      auto dir = TempDir::Create("imgtool-runner-lower-");
      auto* owned = new TempDir(std::move(*dir));
      BuildTestRootfs(owned->path() / "rootfs");
      return owned;
    }();
    return lower->path() / "rootfs";
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, mounts); run as root";
    Result<TempDir> dir = TempDir::Create("imgtool-runner-test-");
    ASSERT_TRUE(dir.has_value()) << dir.error().ToString();
    work_.emplace(std::move(*dir));
    for (const char* sub : {"upper", "work", "merged"}) fs::create_directories(Path(sub));
  }

  fs::path Path(const std::string& sub) const { return work_->path() / sub; }

  ContainerSpec Spec(std::vector<std::string> args) const {
    ContainerSpec spec;
    spec.id = UniqueId("rt");
    spec.rootfs_dir = Path("merged");
    spec.rootfs_mounts = {Mount{"overlay", "overlay",
                                {"lowerdir=" + LowerDir().string(),
                                 "upperdir=" + Path("upper").string(),
                                 "workdir=" + Path("work").string()}}};
    spec.process.args = std::move(args);
    spec.network.mode = NetworkMode::kNone;
    return spec;
  }

  std::optional<TempDir> work_;
};

}  // namespace imgtool::runner::testing
