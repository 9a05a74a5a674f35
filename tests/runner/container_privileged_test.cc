// Runs real containers: needs root. Every container runs the busybox + probe
// rootfs through an overlay of its own (runner_test_util.h).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "common/file_util.h"
#include "runner/caps.h"
#include "runner/container.h"
#include "tests/runner/runner_test_util.h"

namespace imgtool::runner {
namespace {

namespace fs = std::filesystem;

using testing::Captured;
using testing::RunCaptured;
using testing::StartUntilUp;

class ContainerTest : public testing::RunnerPrivilegedTest {
 protected:
  // Runs and expects a normal exit with code 0; returns stdout.
  std::string RunOk(const ContainerSpec& spec, const std::string* input = nullptr) {
    Result<Captured> run = RunCaptured(spec, input);
    EXPECT_TRUE(run.has_value()) << run.error().ToString();
    if (!run) return "";
    EXPECT_EQ(run->status.exit_code, 0) << run->out << run->err << run->status.message;
    return run->out;
  }

  static std::string HostLink(const std::string& path) {
    char target[256] = {};
    ssize_t n = ::readlink(path.c_str(), target, sizeof(target) - 1);
    return n > 0 ? std::string(target) : "";
  }
};

TEST_F(ContainerTest, RunsTrue) {
  Result<Captured> run = RunCaptured(Spec({"/bin/true"}));
  ASSERT_TRUE(run.has_value()) << run.error().ToString();
  EXPECT_EQ(run->status.exit_code, 0);
  EXPECT_EQ(run->status.signal, 0);
  EXPECT_TRUE(run->status.message.empty());
}

TEST_F(ContainerTest, CommandIsPid1AndSeesOnlyItsProcesses) {
  EXPECT_EQ(RunOk(Spec({"probe", "pid", "+", "pids"})), "pid=1\npids=1\n");
}

TEST_F(ContainerTest, EveryNamespaceDiffersFromTheHost) {
  for (const char* ns : {"pid", "uts", "mnt", "ipc", "net", "cgroup", "time"}) {
    std::string inside = RunOk(Spec({"probe", "ns", ns}));
    std::string host = "ns=" + HostLink(std::string("/proc/self/ns/") + ns) + "\n";
    EXPECT_NE(inside, host) << ns;
    EXPECT_EQ(inside.rfind(std::string("ns=") + ns + ":[", 0), 0u) << inside;
  }
  // --net host shares the host's.
  ContainerSpec host_net = Spec({"probe", "ns", "net"});
  host_net.network.mode = NetworkMode::kHost;
  EXPECT_EQ(RunOk(host_net), "ns=" + HostLink("/proc/self/ns/net") + "\n");
}

TEST_F(ContainerTest, HostnameIsTheContainersOwn) {
  char host_before[256] = {};
  ::gethostname(host_before, sizeof(host_before) - 1);
  ContainerSpec spec = Spec({"probe", "hostname", "+", "sethostname", "changed", "+", "hostname",
                             "+", "env", "HOSTNAME"});
  spec.hostname = "box";
  spec.security.cap_add = {"SYS_ADMIN"};  // as in docker, sethostname needs it
  EXPECT_EQ(RunOk(spec), "hostname=box\nsethostname=ok\nhostname=changed\nenv=box\n");
  char host_after[256] = {};
  ::gethostname(host_after, sizeof(host_after) - 1);
  EXPECT_STREQ(host_before, host_after);

  ContainerSpec by_id = Spec({"probe", "hostname", "+", "read", "/etc/hostname"});
  by_id.id = "abcdefghijklmnopqrstuvwxyz";
  EXPECT_EQ(RunOk(by_id), "hostname=abcdefghijkl\nabcdefghijkl\n");
}

TEST_F(ContainerTest, EtcHostsNamesTheContainer) {
  ContainerSpec spec = Spec({"probe", "read", "/etc/hosts"});
  spec.hostname = "web";
  spec.extra_hosts = {"db:192.0.2.7"};
  std::string hosts = RunOk(spec);
  EXPECT_NE(hosts.find("127.0.0.1\tlocalhost"), std::string::npos) << hosts;
  EXPECT_NE(hosts.find("\tweb\n"), std::string::npos) << hosts;
  EXPECT_NE(hosts.find("192.0.2.7\tdb\n"), std::string::npos) << hosts;
}

TEST_F(ContainerTest, NoNetworkHasOnlyLoopbackAndItIsUp) {
  std::string out = RunOk(Spec({"probe", "ls", "/sys/class/net", "+", "read",
                                "/sys/class/net/lo/flags"}));
  EXPECT_EQ(out, "ls=lo\n0x9\n");  // IFF_UP | IFF_LOOPBACK
}

TEST_F(ContainerTest, ExitCodes) {
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    int signal;
    const char* message;
  } cases[] = {
      {{"probe", "exit", "3"}, 3, 0, ""},
      {{"sh", "-c", "exit 42"}, 42, 0, ""},
      {{"false"}, 1, 0, ""},
      // A fault kills even PID 1.
      {{"probe", "segv"}, 128 + SIGSEGV, SIGSEGV, ""},
      {{"no-such-command"}, 127, 0, "exec \"no-such-command\": executable file not found in $PATH"},
      {{"/bin/missing"}, 127, 0, "exec \"/bin/missing\": No such file or directory"},
      {{"/bin/not-executable"}, 126, 0, "exec \"/bin/not-executable\": Permission denied"},
      {{"/etc"}, 126, 0, "exec \"/etc\": Permission denied"},
  };
  for (const Case& c : cases) {
    Result<Captured> run = RunCaptured(Spec(c.args));
    ASSERT_TRUE(run.has_value()) << c.args[0] << ": " << run.error().ToString();
    EXPECT_EQ(run->status.exit_code, c.exit_code) << c.args[0];
    EXPECT_EQ(run->status.signal, c.signal) << c.args[0];
    EXPECT_EQ(run->status.message, c.message) << c.args[0];
  }
}

TEST_F(ContainerTest, ExecFailureUnderInitIsReportedToo) {
  ContainerSpec spec = Spec({"no-such-command"});
  spec.init = true;
  Result<Captured> run = RunCaptured(spec);
  ASSERT_TRUE(run.has_value()) << run.error().ToString();
  EXPECT_EQ(run->status.exit_code, 127);
  EXPECT_NE(run->status.message.find("not found"), std::string::npos);
}

TEST_F(ContainerTest, SetupFailureIsAnErrorNamingWhatAndWhere) {
  ContainerSpec spec = Spec({"/bin/true"});
  spec.volumes = {{"/nonexistent/host/dir", "/data", false}};
  Result<Captured> run = RunCaptured(spec);
  ASSERT_FALSE(run.has_value());
  std::string text = run.error().ToString();
  EXPECT_NE(text.find(spec.id), std::string::npos) << text;
  EXPECT_NE(text.find("/nonexistent/host/dir"), std::string::npos) << text;
  EXPECT_NE(text.find("No such file or directory"), std::string::npos) << text;
}

TEST_F(ContainerTest, KilledBySignalIs128PlusN) {
  Result<std::unique_ptr<Container>> container =
      StartUntilUp(Spec({"probe", "echo", "up", "+", "sleep", "30"}));
  ASSERT_TRUE(container.has_value()) << container.error().ToString();
  ASSERT_TRUE((*container)->Signal(SIGKILL).has_value());
  Result<ExitStatus> status = (*container)->Wait();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->exit_code, 137);
  EXPECT_EQ(status->signal, SIGKILL);
  EXPECT_FALSE(status->oom_killed);
}

TEST_F(ContainerTest, SignalsReachingImgtoolAreForwarded) {
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  UniqueFd out_read(out[0]), out_write(out[1]);
  Result<std::unique_ptr<Container>> container =
      Container::Start(Spec({"probe", "trap", "15"}), Stdio{-1, out_write.get(), 2});
  ASSERT_TRUE(container.has_value()) << container.error().ToString();
  out_write.reset();
  // Start() blocked SIGTERM in this thread, and the thread below inherits
  // that, so the signal waits for Wait() to forward it.
  std::thread sender([&] {
    char buffer[6] = {};
    if (::read(out_read.get(), buffer, 6) == 6) ::kill(::getpid(), SIGTERM);
  });
  Result<ExitStatus> status = (*container)->Wait();
  sender.join();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->exit_code, SIGTERM);  // the trap exits with the signal's number
  EXPECT_EQ(testing::ReadAllFrom(out_read.get()), "got=15\n");
}

TEST_F(ContainerTest, StdinIsPiped) {
  std::string input = "line one\nline two\n";
  EXPECT_EQ(RunOk(Spec({"probe", "cat"}), &input), input);
  std::string counted = "a\nb\nc\n";
  EXPECT_EQ(RunOk(Spec({"wc", "-l"}), &counted), "3\n");
  // Without -i, stdin is /dev/null.
  EXPECT_EQ(RunOk(Spec({"probe", "cat"})), "");
}

TEST_F(ContainerTest, EnvironmentCwdAndDefaults) {
  ContainerSpec spec = Spec({"probe", "env", "FOO", "+", "env", "PATH", "+", "env", "HOME", "+",
                             "cwd", "+", "umask"});
  spec.process.env = {"FOO=bar baz"};
  spec.process.cwd = "/work/sub";
  EXPECT_EQ(RunOk(spec), "env=bar baz\nenv=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                         "/sbin:/bin\nenv=/root\ncwd=/work/sub\numask=0022\n");
}

TEST_F(ContainerTest, UserByNameNumberAndGroup) {
  ContainerSpec by_name = Spec({"probe", "id", "+", "env", "HOME", "+", "status", "CapEff"});
  by_name.process.user = "app";
  EXPECT_EQ(RunOk(by_name), "uid=1000 gid=1000 groups=50,2000\nenv=/home/app\n"
                            "CapEff=0000000000000000\n");
  ContainerSpec with_group = Spec({"probe", "id"});
  with_group.process.user = "app:staff";
  EXPECT_EQ(RunOk(with_group), "uid=1000 gid=50 groups=50,2000\n");
  ContainerSpec numeric = Spec({"probe", "id"});
  numeric.process.user = "4242:4343";
  EXPECT_EQ(RunOk(numeric), "uid=4242 gid=4343 groups=\n");
  ContainerSpec unknown = Spec({"probe", "id"});
  unknown.process.user = "nobody-here";
  Result<Captured> run = RunCaptured(unknown);
  ASSERT_FALSE(run.has_value());
  EXPECT_NE(run.error().ToString().find("nobody-here"), std::string::npos);
}

// The child after clone must not use glibc's setuid family: in a process
// that has other threads it synchronizes with them under a lock that one of
// them may hold at the clone (here: a thread creating and joining threads,
// which takes glibc's stack-cache lock), and the child then hangs in a futex.
TEST_F(ContainerTest, UserSwitchWhileOtherThreadsComeAndGo) {
  std::atomic<bool> stop{false};
  std::thread churn([&stop] {
    while (!stop.load()) std::thread([] {}).join();
  });
  for (int i = 0; i < 25; ++i) {
    ContainerSpec spec = Spec({"probe", "id"});
    spec.process.user = "app";
    EXPECT_EQ(RunOk(spec), "uid=1000 gid=1000 groups=50,2000\n") << "run " << i;
  }
  stop = true;
  churn.join();
}

TEST_F(ContainerTest, DefaultSecurity) {
  std::string out = RunOk(Spec({"probe", "status", "CapEff", "+", "status", "CapBnd", "+",
                                "status", "NoNewPrivs", "+", "status", "Seccomp", "+", "mount-tmpfs",
                                "/tmp", "+", "unshare-user", "+", "keyctl", "+", "ptrace"}));
  EXPECT_EQ(out,
            "CapEff=00000000a80425fb\nCapBnd=00000000a80425fb\nNoNewPrivs=1\nSeccomp=2\n"
            "mount=EPERM\nunshare=EPERM\nkeyctl=EPERM\nptrace=EPERM\n");
}

TEST_F(ContainerTest, CapAddDropAndUnconfined) {
  ContainerSpec spec = Spec({"probe", "status", "CapEff", "+", "status", "Seccomp"});
  spec.security.cap_drop = {"ALL"};
  spec.security.cap_add = {"NET_ADMIN"};
  spec.security.seccomp = SeccompMode::kUnconfined;
  EXPECT_EQ(RunOk(spec), "CapEff=0000000000001000\nSeccomp=0\n");
}

TEST_F(ContainerTest, SeccompProfileFromAFile) {
  fs::path profile = Path("profile.json");
  imgtool::testing::WriteTestFile(profile, R"({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]})");
  ContainerSpec spec = Spec({"probe", "sethostname", "x", "+", "keyctl"});
  spec.security.seccomp = SeccompMode::kProfile;
  spec.security.seccomp_profile = profile.string();
  // The profile replaced the default one, which denies keyctl.
  EXPECT_EQ(RunOk(spec), "sethostname=EACCES\nkeyctl=ok\n");
}

TEST_F(ContainerTest, PrivilegedHasEverything) {
  ContainerSpec spec = Spec({"probe", "status", "CapEff", "+", "status", "Seccomp", "+",
                             "mount-tmpfs", "/tmp", "+", "write", "/proc/sys/kernel/domainname",
                             "priv", "+", "ls", "/sys/firmware"});
  spec.security.privileged = true;
  std::string out = RunOk(spec);
  // Every capability imgtool itself holds (some sandboxes hold fewer than all).
  uint64_t all = CapabilitySet::All().mask() & CapabilitySet::OfThisProcess().mask();
  char caps[32];
  std::snprintf(caps, sizeof(caps), "%016llx", static_cast<unsigned long long>(all));
  EXPECT_NE(out.find(std::string("CapEff=") + caps), std::string::npos) << out;
  EXPECT_NE(out.find("Seccomp=0\nmount=ok\nwrite=ok\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("ls=\n"), std::string::npos) << out;  // /sys/firmware not masked
}

TEST_F(ContainerTest, MaskedAndReadOnlyPaths) {
  // Some kernels have no /proc/kcore or /proc/sysrq-trigger: what the host
  // lacks, the container lacks too.
  auto host_has = [](const char* path) { return ::access(path, F_OK) == 0; };
  std::vector<std::string> args = {"probe"};
  std::string expected;
  for (const char* masked_file : {"/proc/kcore", "/proc/keys", "/proc/timer_list"}) {
    args.insert(args.end(), {"read", masked_file, "+"});
    if (!host_has(masked_file)) expected += "read=ENOENT\n";  // masked files read as empty
  }
  args.insert(args.end(), {"ls", "/sys/firmware", "+"});
  expected += "ls=\n";
  for (const char* read_only : {"/proc/sysrq-trigger", "/proc/sys/kernel/domainname"}) {
    args.insert(args.end(), {"write", read_only, "x", "+"});
    expected += host_has(read_only) ? "write=EROFS\n" : "write=ENOENT\n";
  }
  // sysfs is read-only as a whole: even creating a file there is EROFS.
  args.insert(args.end(), {"write", "/sys/kernel/uevent_helper", "x", "+"});
  expected += "write=EROFS\n";
  args.insert(args.end(), {"mount-tmpfs", "/tmp", "+", "write", "/tmp/ok", "y"});
  expected += "mount=EPERM\nwrite=ok\n";
  EXPECT_EQ(RunOk(Spec(args)), expected);
}

TEST_F(ContainerTest, DevHasTheUsualNodes) {
  std::string out = RunOk(Spec({"probe", "ls", "/dev", "+", "read", "/dev/null", "+", "write",
                                "/dev/null", "x", "+", "status", "Uid"}));
  EXPECT_EQ(out.substr(0, out.find('\n')),
            "ls=core,fd,full,mqueue,null,ptmx,pts,random,shm,stderr,stdin,stdout,tty,urandom,zero");
  EXPECT_NE(out.find("write=ok"), std::string::npos);
  std::string shm = RunOk(Spec({"probe", "write", "/dev/shm/x", "1", "+", "ls", "/dev/pts"}));
  EXPECT_EQ(shm, "write=ok\nls=ptmx\n");
}

TEST_F(ContainerTest, VolumesReadWriteAndReadOnly) {
  fs::path host_dir = Path("volume");
  fs::create_directories(host_dir);
  imgtool::testing::WriteTestFile(host_dir / "in", "from the host\n");
  fs::path host_file = Path("single-file");
  imgtool::testing::WriteTestFile(host_file, "single\n");
  ContainerSpec spec = Spec({"probe", "read", "/data/in", "+", "write", "/data/out", "hello",
                             "+", "write", "/ro/x", "y", "+", "read", "/new/dir/file", "+",
                             "write", "/new/dir/file", "z"});
  spec.volumes = {{host_dir.string(), "/data", false},
                  {host_dir.string(), "/ro", true},
                  {host_file.string(), "/new/dir/file", true}};
  EXPECT_EQ(RunOk(spec), "from the host\nwrite=ok\nwrite=EROFS\nsingle\nwrite=EROFS\n");
  EXPECT_EQ(imgtool::testing::ReadTestFile(host_dir / "out"), "hello");
  EXPECT_FALSE(fs::exists(host_dir / "x"));
}

TEST_F(ContainerTest, MountsOverAMountPointMadeEarlierLandOnTop) {
  // The child keeps the directory it last created in (dev, for the device
  // nodes) open; a volume over /dev itself must make the next target in
  // the volume, not in the /dev tmpfs it covers.
  fs::path over_dev = Path("over-dev");
  fs::create_directories(over_dev);
  imgtool::testing::WriteTestFile(over_dev / "marker", "the volume\n");
  fs::path inner = Path("inner");
  fs::create_directories(inner);
  imgtool::testing::WriteTestFile(inner / "file", "inner volume\n");
  ContainerSpec spec = Spec({"probe", "read", "/dev/marker", "+", "read", "/dev/inner/file", "+",
                             "read", "/dev/pts-new/file"});
  spec.volumes = {{over_dev.string(), "/dev", false},
                  {inner.string(), "/dev/inner", true},
                  {inner.string(), "/dev/pts-new", true}};
  EXPECT_EQ(RunOk(spec), "the volume\ninner volume\ninner volume\n");
  // The mount points were made in the volume over /dev, where the container
  // saw them.
  EXPECT_TRUE(fs::is_directory(over_dev / "inner"));
  EXPECT_TRUE(fs::is_directory(over_dev / "pts-new"));
}

TEST_F(ContainerTest, ReadOnlyRootfsWithTmpfs) {
  ContainerSpec spec = Spec({"probe", "write", "/file", "x", "+", "write", "/scratch/file", "y",
                             "+", "write", "/dev/shm/z", "1", "+", "read", "/data/file"});
  spec.read_only_rootfs = true;
  spec.tmpfs = {{"/scratch", "size=1m"}};
  EXPECT_EQ(RunOk(spec), "write=EROFS\nwrite=ok\nwrite=ok\nfrom the image\n");
}

TEST_F(ContainerTest, WritesLandInTheUpperDirAndNoMountStaysBehind) {
  RunOk(Spec({"probe", "write", "/created-here", "content"}));
  EXPECT_EQ(imgtool::testing::ReadTestFile(Path("upper") / "created-here"), "content");
  EXPECT_FALSE(fs::exists(testing::RunnerPrivilegedTest::LowerDir() / "created-here"));
  Result<std::string> mountinfo = ReadFileToString("/proc/self/mountinfo");
  ASSERT_TRUE(mountinfo.has_value());
  EXPECT_EQ(mountinfo->find(work_->path().string()), std::string::npos) << *mountinfo;
}

TEST_F(ContainerTest, InitReapsOrphans) {
  EXPECT_EQ(RunOk(Spec({"probe", "orphan"})), "orphan=zombie\n");
  ContainerSpec with_init = Spec({"probe", "orphan", "+", "pid"});
  with_init.init = true;
  EXPECT_EQ(RunOk(with_init), "orphan=reaped\npid=2\n");
}

TEST_F(ContainerTest, InitForwardsSignalsAndReportsThem) {
  ContainerSpec spec = Spec({"probe", "kill-self", "15"});
  spec.init = true;
  Result<Captured> run = RunCaptured(spec);
  ASSERT_TRUE(run.has_value()) << run.error().ToString();
  EXPECT_EQ(run->status.exit_code, 128 + SIGTERM);
  // Without --init, PID 1 has no default action for SIGTERM: it survives.
  ContainerSpec pid1 = Spec({"probe", "kill-self", "15"});
  EXPECT_EQ(RunOk(pid1), "kill-self=survived\n");
}

TEST_F(ContainerTest, TerminalSession) {
  int user_master = -1, user_slave = -1;
  struct winsize size {};
  size.ws_row = 33;
  size.ws_col = 101;
  ASSERT_EQ(::openpty(&user_master, &user_slave, nullptr, nullptr, &size), 0);
  UniqueFd master(user_master), slave(user_slave);
  // Typed ahead: sits in the user's terminal until the relay copies it.
  std::string typed = "hello\n";
  ASSERT_EQ(::write(master.get(), typed.data(), typed.size()), 6);
  ContainerSpec spec = Spec({"sh", "-c", "probe tty; read line; echo got:$line"});
  spec.process.terminal = true;
  Result<std::unique_ptr<Container>> container =
      Container::Start(spec, Stdio{slave.get(), slave.get(), slave.get()});
  ASSERT_TRUE(container.has_value()) << container.error().ToString();
  Result<ExitStatus> status = (*container)->Wait();
  ASSERT_TRUE(status.has_value()) << status.error().ToString();
  EXPECT_EQ(status->exit_code, 0);
  // The user's terminal is back in cooked mode.
  struct termios settings {};
  ASSERT_EQ(::tcgetattr(slave.get(), &settings), 0);
  EXPECT_TRUE(settings.c_lflag & ICANON);
  std::string out;
  ::fcntl(master.get(), F_SETFL, O_NONBLOCK);
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(master.get(), buffer, sizeof(buffer))) > 0) out.append(buffer, n);
  EXPECT_NE(out.find("isatty=1 ttyname=/dev/pts/0 rows=33 cols=101"), std::string::npos) << out;
  EXPECT_NE(out.find("got:hello"), std::string::npos) << out;
}

TEST_F(ContainerTest, MemoryLimitEndsWith137AndSaysOom) {
  ContainerSpec spec = Spec({"probe", "alloc", "256"});
  spec.resources.memory_bytes = 32 << 20;
  spec.resources.memory_swap_bytes = 32 << 20;
  Result<Captured> run = RunCaptured(spec);
  ASSERT_TRUE(run.has_value()) << run.error().ToString();
  EXPECT_EQ(run->status.exit_code, 137) << run->out;
  EXPECT_TRUE(run->status.oom_killed);
  EXPECT_NE(run->status.message.find("OOM"), std::string::npos) << run->status.message;
}

TEST_F(ContainerTest, PlainDirectoryRootfs) {
  ContainerSpec spec = Spec({"probe", "write", "/in-plain-dir", "1", "+", "pid"});
  fs::path plain = Path("plain");
  testing::BuildTestRootfs(plain);
  spec.rootfs_dir = plain;
  spec.rootfs_mounts.clear();
  EXPECT_EQ(RunOk(spec), "write=ok\npid=1\n");
  EXPECT_TRUE(fs::exists(plain / "in-plain-dir"));
}

TEST_F(ContainerTest, TwoHundredLayerOverlay) {
  // 200 layers above the base, each adding a file: every one must be visible.
  std::string lowerdir = "lowerdir=";
  for (int i = 199; i >= 0; --i) {
    fs::path layer = Path("layers/" + std::to_string(i));
    imgtool::testing::WriteTestFile(layer / "layers" / ("file" + std::to_string(i)), "x");
    lowerdir += layer.string() + ":";
  }
  lowerdir += testing::RunnerPrivilegedTest::LowerDir().string();
  ContainerSpec spec = Spec({"sh", "-c", "ls /layers | wc -l"});
  spec.rootfs_mounts = {Mount{"overlay", "overlay",
                              {lowerdir, "upperdir=" + Path("upper").string(),
                               "workdir=" + Path("work").string()}}};
  ASSERT_GT(lowerdir.size(), 4096u);  // past what one mount(2) page holds
  EXPECT_EQ(RunOk(spec), "200\n");
}

TEST_F(ContainerTest, BridgeNetworkGivesEth0AndReachesTheHost) {
  // A bridge and subnet of this test's own, removed at the end.
  const std::string bridge = "imgtrt" + std::to_string(::getpid() % 10000);
  const std::string subnet = "10.89.213.0/24";
  fs::path network_state = Path("network");
  // A listener on the host that the container connects to through the bridge.
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener.valid());
  int one = 1;
  ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in address {};
  address.sin_family = AF_INET;
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  socklen_t length = sizeof(address);
  ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length);
  std::string port = std::to_string(ntohs(address.sin_port));

  ContainerSpec spec = Spec({"probe", "ls", "/sys/class/net", "+", "connect", "10.89.213.1", port,
                             "+", "read", "/etc/hosts"});
  spec.hostname = "bridged";
  spec.network.mode = NetworkMode::kBridge;
  spec.network.bridge_name = bridge;
  spec.network.subnet = subnet;
  spec.network.state_dir = network_state;
  Result<Captured> run = RunCaptured(spec);
  Status removed = RemoveBridgeNetwork(bridge, subnet, network_state);
  ASSERT_TRUE(run.has_value()) << run.error().ToString();
  EXPECT_EQ(run->status.exit_code, 0) << run->err;
  EXPECT_EQ(run->out.rfind("ls=eth0,lo\nconnect=ok\n", 0), 0u) << run->out;
  // /etc/hosts names the container at its bridge address.
  EXPECT_NE(run->out.find("10.89.213."), std::string::npos) << run->out;
  EXPECT_NE(run->out.find("\tbridged\n"), std::string::npos) << run->out;
  EXPECT_EQ(run->out.find("127.0.1.1"), std::string::npos) << run->out;
  EXPECT_TRUE(removed.has_value()) << removed.error().ToString();
  // The veth went with the container's netns.
  Result<std::string> links = ReadFileToString("/proc/net/dev");
  ASSERT_TRUE(links.has_value());
  EXPECT_EQ(links->find("imgv"), std::string::npos) << *links;
}

TEST_F(ContainerTest, AutoUserNamespace) {
  ContainerSpec spec = Spec({"probe", "id", "+", "read", "/proc/self/uid_map", "+", "read",
                             "/proc/self/gid_map", "+", "pid", "+", "sethostname", "u", "+",
                             "write", "/dev/shm/x", "1", "+", "status", "CapEff"});
  spec.userns = UserNamespaceMode::kAuto;
  spec.id_mappings = {{{0, 200000, 65536}}, {{0, 300000, 65536}}};
  spec.security.cap_add = {"SYS_ADMIN"};  // over the container's own namespaces only
  EXPECT_EQ(RunOk(spec),
            "uid=0 gid=0 groups=\n         0     200000      65536\n"
            "         0     300000      65536\npid=1\nsethostname=ok\nwrite=ok\n"
            "CapEff=00000000a82425fb\n");

  // Seen from the host, the container's root is the first subordinate id.
  spec.process.args = {"probe", "echo", "up", "+", "sleep", "30"};
  Result<std::unique_ptr<Container>> container = StartUntilUp(spec);
  ASSERT_TRUE(container.has_value()) << container.error().ToString();
  Result<std::string> status =
      ReadFileToString("/proc/" + std::to_string((*container)->pid()) + "/status");
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(status->find("Uid:\t200000\t200000\t200000\t200000"), std::string::npos) << *status;
  EXPECT_NE(status->find("Gid:\t300000\t300000\t300000\t300000"), std::string::npos) << *status;
  ASSERT_TRUE((*container)->Signal(SIGKILL).has_value());
  EXPECT_EQ((*container)->Wait()->exit_code, 137);
}

}  // namespace
}  // namespace imgtool::runner
