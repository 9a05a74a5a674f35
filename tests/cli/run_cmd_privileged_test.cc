// `imgtool run` and the container commands, through the real binary, on a
// small image the test builds (busybox-static, the runner's probe, a few
// accounts) and imports. Bridge tests use a bridge, subnet and IPAM dir of
// this test process (IMGTOOL_BRIDGE, IMGTOOL_BRIDGE_SUBNET,
// IMGTOOL_NETWORK_STATE_DIR), removed at the end.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "common/digest.h"
#include "common/file_util.h"
#include "common/temp_dir.h"
#include "runner/network.h"
#include "tests/cli/cli_fixture.h"
#include "tests/runner/runner_test_util.h"

namespace imgtool::cli::testing {
namespace {

using ::imgtool::testing::RunCommand;
using ::imgtool::testing::WriteTestFile;
using Json = nlohmann::json;

class RunTest : public CliTest {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    IMGTOOL_REQUIRE_COMMAND("tar");
    CliTest::SetUp();
    int tag = static_cast<int>(::getpid() % 250) + 1;
    bridge_ = "imgtcli" + std::to_string(::getpid() % 100000);
    subnet_ = "10.214." + std::to_string(tag) + ".0/24";
    gateway_ = "10.214." + std::to_string(tag) + ".1";
    network_dir_ = Work() / "network";
    fs::path rootfs = Work() / "rootfs";
    ::imgtool::runner::testing::BuildTestRootfs(rootfs);
    fs::path tar = Work() / "rootfs.tar";
    CommandResult r = RunCommand({"tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner",
                                  "-C", rootfs.string(), "-cf", tar.string(), "."});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    Ok({"import", tar.string(), "test:latest"});
  }

  void TearDown() override {
    if (::geteuid() != 0 || work_ == nullptr) return;
    // Whatever a failed test left running goes, so that it holds no cgroup.
    CommandResult ids = Run({"ps", "-aq"});
    std::vector<std::string> args = {"rm", "-f"};
    std::istringstream lines(ids.out);
    for (std::string id; std::getline(lines, id);) args.push_back(id);
    if (args.size() > 2) Run(args);
    if (used_bridge_) {
      Status removed = runner::RemoveBridgeNetwork(bridge_, subnet_, network_dir_);
      EXPECT_TRUE(removed.has_value()) << removed.error().ToString();
    }
  }

  // imgtool with this test's root and network settings.
  CommandResult Run(const std::vector<std::string>& args, std::string_view input = "") {
    std::vector<std::string> argv = {::imgtool::testing::ImgtoolBinary(), "--root",
                                     Root().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    if (!args.empty() && args[0] == "run" &&
        std::find(args.begin(), args.end(), "none") == args.end()) {
      used_bridge_ = true;
    }
    return RunCommand(argv, input,
                      {"IMGTOOL_BRIDGE=" + bridge_, "IMGTOOL_BRIDGE_SUBNET=" + subnet_,
                       "IMGTOOL_NETWORK_STATE_DIR=" + network_dir_.string()});
  }

  // `run --rm --net none IMAGE ARGS...`, which must exit 0; returns stdout.
  std::string Probe(const std::vector<std::string>& args,
                    const std::vector<std::string>& flags = {},
                    const std::string& image = "test:latest") {
    std::vector<std::string> argv = {"run", "--rm", "--net", "none"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.push_back(image);
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult r = Run(argv);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return r.out;
  }

  fs::path ContainersDir() const { return fs::path(Root().string() + "-state") / "containers"; }

  // Ids of the container dirs that exist.
  std::vector<std::string> ContainerDirs() const {
    std::vector<std::string> ids;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(ContainersDir(), ec)) {
      std::string name = entry.path().filename().string();
      if (!name.starts_with(".")) ids.push_back(name);
    }
    return ids;
  }

  // Snapshot names from the snapshotter's metadata.
  std::vector<std::string> SnapshotNames() const {
    std::vector<std::string> names;
    fs::path metadata = fs::path(Root().string() + "-state") / "snapshots" / "metadata.json";
    if (!fs::exists(metadata)) return names;
    Json json = Json::parse(::imgtool::testing::ReadTestFile(metadata), nullptr, false);
    if (!json.is_object() || !json.contains("snapshots")) return names;
    for (auto it = json["snapshots"].begin(); it != json["snapshots"].end(); ++it) {
      names.push_back(it.key());
    }
    return names;
  }

  static int CountContainerSnapshots(const std::vector<std::string>& names) {
    return static_cast<int>(std::count_if(names.begin(), names.end(), [](const std::string& n) {
      return n.starts_with("container-");
    }));
  }

  // The loaded image with its config's `config` object changed by `edit`,
  // stored as `name` (save as an OCI dir, edit config and manifest, load).
  void DeriveImage(const std::string& name, const std::function<void(Json&)>& edit) {
    fs::path dir = Work() / ("derive-" + std::to_string(derived_++));
    Ok({"save", "test:latest", "--format", "oci-dir", "-o", dir.string()});
    Json index = Json::parse(::imgtool::testing::ReadTestFile(dir / "index.json"));
    auto blob = [&](const std::string& digest) {
      return dir / "blobs" / "sha256" / digest.substr(7);
    };
    std::string manifest_digest = index["manifests"][0]["digest"];
    Json manifest = Json::parse(::imgtool::testing::ReadTestFile(blob(manifest_digest)));
    Json config = Json::parse(::imgtool::testing::ReadTestFile(blob(manifest["config"]["digest"])));
    edit(config["config"]);
    std::string config_text = config.dump();
    std::string config_digest = Digest::Sha256Of(config_text).ToString();
    WriteTestFile(blob(config_digest), config_text);
    manifest["config"]["digest"] = config_digest;
    manifest["config"]["size"] = config_text.size();
    std::string manifest_text = manifest.dump();
    std::string new_manifest_digest = Digest::Sha256Of(manifest_text).ToString();
    WriteTestFile(blob(new_manifest_digest), manifest_text);
    index["manifests"][0]["digest"] = new_manifest_digest;
    index["manifests"][0]["size"] = manifest_text.size();
    index["manifests"][0]["annotations"] = {{"org.opencontainers.image.ref.name", name}};
    WriteTestFile(dir / "index.json", index.dump());
    Ok({"load", "-i", dir.string()});
  }

  // True once no veth is attached to this test's bridge any more. The
  // kernel removes a veth with its netns from a work queue, a moment after
  // the container ended; other tests' veths (ctest -j) are on other bridges.
  bool BridgePortsGone(std::chrono::seconds patience = std::chrono::seconds(5)) {
    fs::path ports = "/sys/class/net/" + bridge_ + "/brif";
    auto deadline = std::chrono::steady_clock::now() + patience;
    std::error_code ec;
    while (fs::exists(ports, ec) && !fs::is_empty(ports, ec)) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  // `run --rm --net none FLAGS test:latest probe sleep 60` in the
  // foreground, killed with SIGKILL once the container runs: what a crash of
  // imgtool leaves behind is one container dir.
  void RunAndKillImgtool(const std::vector<std::string>& flags) {
    std::vector<std::string> args = {::imgtool::testing::ImgtoolBinary(), "--root", Root().string(),
                                     "run", "--rm", "--net", "none"};
    args.insert(args.end(), flags.begin(), flags.end());
    for (const char* arg : {"test:latest", "probe", "sleep", "60"}) args.push_back(arg);
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    bool running = false;
    for (int i = 0; i < 300 && !running; ++i) {
      running = Run({"ps", "-q"}).out.size() == 13;
      if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(running);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_EQ(ContainerDirs().size(), 1u);
  }

  std::string bridge_;
  std::string subnet_;
  std::string gateway_;
  fs::path network_dir_;
  bool used_bridge_ = false;
  int derived_ = 0;
};

// ---- namespaces ----

TEST_F(RunTest, ProcessRunsAsPid1AndSeesOnlyItsOwnProcesses) {
  EXPECT_EQ(Probe({"probe", "pid", "+", "pids"}), "pid=1\npids=1\n");
  // busybox ps reads /proc: itself as PID 1 (sh -c execs it), nothing of the host.
  std::string ps = Probe({"ps"});
  ASSERT_EQ(std::count(ps.begin(), ps.end(), '\n'), 2) << ps;
  std::string line = ps.substr(ps.find('\n') + 1);
  EXPECT_TRUE(line.find(" 1 ") != std::string::npos && line.find("ps") != std::string::npos) << ps;
}

TEST_F(RunTest, HostnameIsTheContainersOwn) {
  char host_before[256] = {};
  ::gethostname(host_before, sizeof(host_before) - 1);
  EXPECT_EQ(Probe({"probe", "hostname"}, {"--hostname", "box"}), "hostname=box\n");
  EXPECT_EQ(Probe({"probe", "sethostname", "changed", "+", "hostname"}, {"--cap-add", "SYS_ADMIN"}),
            "sethostname=ok\nhostname=changed\n");
  char host_after[256] = {};
  ::gethostname(host_after, sizeof(host_after) - 1);
  EXPECT_STREQ(host_before, host_after);
  // The default hostname is the id's first 12 digits.
  std::string name = Probe({"probe", "hostname"});
  EXPECT_EQ(name.size(), std::string("hostname=\n").size() + 12) << name;
}

TEST_F(RunTest, NetNoneHasOnlyLoopback) {
  EXPECT_EQ(Probe({"probe", "ls", "/sys/class/net"}), "ls=lo\n");
}

TEST_F(RunTest, BridgeGivesEth0AndReachesTheHost) {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener.valid());
  struct sockaddr_in address {};
  address.sin_family = AF_INET;
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  socklen_t length = sizeof(address);
  ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length);
  std::string port = std::to_string(ntohs(address.sin_port));
  CommandResult r =
      Run({"run", "--rm", "--hostname", "bridged", "test:latest", "probe", "ls", "/sys/class/net",
           "+", "connect", gateway_, port, "+", "read", "/etc/hosts"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out.rfind("ls=eth0,lo\nconnect=ok\n", 0), 0u) << r.out;
  std::string prefix = gateway_.substr(0, gateway_.rfind('.') + 1);
  EXPECT_NE(r.out.find(prefix), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\tbridged\n"), std::string::npos) << r.out;
}

TEST_F(RunTest, PublishedPortAnswersOnLoopback) {
  // A free host port: bind, read it, close.
  int port = 0;
  {
    UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    struct sockaddr_in address {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(probe.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    socklen_t length = sizeof(address);
    ::getsockname(probe.get(), reinterpret_cast<sockaddr*>(&address), &length);
    port = ntohs(address.sin_port);
  }
  CommandResult started =
      Run({"run", "-d", "--name", "web", "-p", "127.0.0.1:" + std::to_string(port) + ":8080",
           "test:latest", "sh", "-c", "echo served | nc -l -p 8080"});
  ASSERT_EQ(started.exit_code, 0) << Describe(started);
  std::string answer;
  for (int attempt = 0; attempt < 100 && answer.empty(); ++attempt) {
    UniqueFd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    struct sockaddr_in address {};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
      struct pollfd p = {sock.get(), POLLIN, 0};
      if (::poll(&p, 1, 2000) == 1) {
        char buffer[64];
        ssize_t n = ::read(sock.get(), buffer, sizeof(buffer));
        if (n > 0) answer.assign(buffer, static_cast<size_t>(n));
      }
    }
    if (answer.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(answer, "served\n");
  CommandResult removed = Run({"rm", "-f", "web"});
  EXPECT_EQ(removed.exit_code, 0) << Describe(removed);
}

// ---- security ----

TEST_F(RunTest, MaskedAndReadOnlyPaths) {
  // What the host lacks, the container lacks too.
  auto host_has = [](const char* path) { return ::access(path, F_OK) == 0; };
  std::string expected = host_has("/proc/kcore") ? "" : "read=ENOENT\n";  // masked: reads empty
  expected += "ls=\n";
  expected += host_has("/proc/sysrq-trigger") ? "write=EROFS\n" : "write=ENOENT\n";
  expected += "write=EROFS\nmount=EPERM\n";
  EXPECT_EQ(Probe({"probe", "read", "/proc/kcore", "+", "ls", "/sys/firmware", "+", "write",
                   "/proc/sysrq-trigger", "h", "+", "write", "/proc/sys/kernel/hostname", "x", "+",
                   "mount-tmpfs", "/tmp"}),
            expected);
}

TEST_F(RunTest, PrivilegedMayMount) {
  EXPECT_EQ(Probe({"probe", "mount-tmpfs", "/tmp"}, {"--privileged"}), "mount=ok\n");
}

TEST_F(RunTest, DeviceNodesAreLimitedToDockersListUnlessPrivileged) {
  // CAP_MKNOD is in docker's default set: any node may be made, but only
  // null, zero, full, random, urandom, tty, console, ptmx, the ptys and tun
  // opened. /dev/fuse (10:229), which opens without any capability, stands
  // for the rest; the host must be able to open it.
  {
    auto tmp = TempDir::Create("fuse-probe-");
    ASSERT_TRUE(tmp);
    std::filesystem::path node = tmp->path() / "fuse";
    ASSERT_EQ(::mknod(node.c_str(), S_IFCHR | 0600, makedev(10, 229)), 0);
    int fd = ::open(node.c_str(), O_RDONLY | O_NONBLOCK);
    if (fd < 0) GTEST_SKIP() << "this host has no /dev/fuse to open";
    ::close(fd);
  }
  const std::vector<std::string> args = {"probe", "open", "/dev/null", "+", "mknod", "/dev/fuse2",
                                         "c", "10", "229", "+", "open", "/dev/fuse2", "+", "mknod",
                                         "/tmp/disk", "b", "7", "0"};
  EXPECT_EQ(Probe(args), "open=ok\nmknod=ok\nopen=EPERM\nmknod=ok\n");
  EXPECT_EQ(Probe(args, {"--privileged"}), "open=ok\nmknod=ok\nopen=ok\nmknod=ok\n");
}

TEST_F(RunTest, SeccompBlocksKeyctlUnlessUnconfined) {
  EXPECT_EQ(Probe({"probe", "keyctl"}), "keyctl=EPERM\n");
  EXPECT_NE(Probe({"probe", "keyctl"}, {"--security-opt", "seccomp=unconfined"}), "keyctl=EPERM\n");
}

TEST_F(RunTest, ReadOnlyRootfs) {
  EXPECT_EQ(Probe({"probe", "write", "/data/new", "x", "+", "write", "/tmp/x", "y"},
                  {"--read-only", "--tmpfs", "/tmp"}),
            "write=EROFS\nwrite=ok\n");
}

TEST_F(RunTest, CapabilityFlags) {
  // Docker's default set, then without CHOWN, then none, then one more.
  EXPECT_EQ(Probe({"probe", "status", "CapEff"}), "CapEff=00000000a80425fb\n");
  EXPECT_EQ(Probe({"probe", "status", "CapEff"}, {"--cap-drop", "CHOWN"}),
            "CapEff=00000000a80425fa\n");
  // Root without CAP_DAC_OVERRIDE can not read a file of mode 000.
  const char* script = "busybox chmod 0 /data/file; cat /data/file >/dev/null 2>&1 && echo read; "
                       "probe status CapEff";
  EXPECT_EQ(Probe({"sh", "-c", script}, {"--cap-drop", "ALL"}), "CapEff=0000000000000000\n");
  EXPECT_EQ(Probe({"sh", "-c", script}), "read\nCapEff=00000000a80425fb\n");
  EXPECT_EQ(Probe({"probe", "status", "CapEff", "+", "sethostname", "h"},
                  {"--cap-add", "SYS_ADMIN"}),
            "CapEff=00000000a82425fb\nsethostname=ok\n");
  ExpectError(Run({"run", "--rm", "--net", "none", "--cap-drop", "NOPE", "test:latest", "true"}),
              "NOPE");
}

TEST_F(RunTest, SeccompProfileFromAFile) {
  // docker's format: allow everything but sethostname, which fails with ENOSYS.
  fs::path profile = Work() / "seccomp.json";
  WriteTestFile(profile,
                R"({"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO",
                                  "errnoRet": 38}]})");
  std::string opt = "seccomp=" + profile.string();
  // keyctl, which the default profile refuses, goes through this one.
  std::string out =
      Probe({"probe", "sethostname", "h", "+", "keyctl"}, {"--cap-add", "SYS_ADMIN", "--security-opt", opt});
  EXPECT_TRUE(out.starts_with("sethostname=ENOSYS\nkeyctl=")) << out;
  EXPECT_EQ(out.find("keyctl=EPERM"), std::string::npos) << out;
  EXPECT_EQ(Probe({"probe", "sethostname", "h", "+", "keyctl"}, {"--cap-add", "SYS_ADMIN"}),
            "sethostname=ok\nkeyctl=EPERM\n");
  WriteTestFile(Work() / "bad.json", R"({"defaultAction": "SCMP_ACT_NOPE"})");
  ExpectError(Run({"run", "--rm", "--net", "none", "--security-opt",
                   "seccomp=" + (Work() / "bad.json").string(), "test:latest", "true"}),
              "SCMP_ACT_NOPE");
}

// /etc/subuid and /etc/subgid with a range for root's containers for the
// test's duration (--userns=auto as root takes "containers", else "root");
// an entry already there is used as it is. The slices are allocated in
// `state_dir` (IMGTOOL_USERNS_STATE_DIR), so that the test's containers get
// the first ids of the range whatever else runs on the host.
class SubordinateIds {
 public:
  explicit SubordinateIds(const fs::path& state_dir) {
    ::setenv("IMGTOOL_USERNS_STATE_DIR", state_dir.c_str(), 1);
    for (const char* file : {"/etc/subuid", "/etc/subgid"}) {
      std::string content;
      bool existed = fs::exists(file);
      if (existed) content = ::imgtool::testing::ReadTestFile(file);
      std::optional<uint32_t> start;
      std::istringstream lines(content);
      for (std::string line; std::getline(lines, line) && !start;) {
        for (const char* user : {"containers:", "root:"}) {
          if (line.starts_with(user)) {
            start = static_cast<uint32_t>(std::stoul(line.substr(line.find(':') + 1)));
            break;
          }
        }
      }
      if (!start) {
        saved_.emplace_back(file, existed ? std::optional<std::string>(content) : std::nullopt);
        start = 1500000000u;
        std::string entry = "containers:" + std::to_string(*start) + ":65536\n";
        WriteTestFile(file, content + (content.empty() || content.back() == '\n' ? "" : "\n") +
                                entry);
      }
      starts_.push_back(*start);
    }
  }
  ~SubordinateIds() {
    ::unsetenv("IMGTOOL_USERNS_STATE_DIR");
    for (const auto& [file, content] : saved_) {
      if (content) {
        WriteTestFile(file, *content);
      } else {
        fs::remove(file);
      }
    }
  }
  uint32_t uid_start() const { return starts_[0]; }
  uint32_t gid_start() const { return starts_[1]; }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
  std::vector<uint32_t> starts_;
};

TEST_F(RunTest, UserNamespaceAutoOwnsTheImagesFiles) {
  SubordinateIds ids(Work() / "userns");
  // The image's files belong to the container's root, who may change them
  // (copy-up with owners kept) and create new ones, while the host sees the
  // process as the first subordinate id.
  CommandResult r = Run({"run", "--rm", "--net", "none", "--userns=auto", "test:latest", "sh",
                         "-c",
                         "cat /proc/self/uid_map; ls -ln /data/file; echo more >> /data/file && "
                         "ls -ln /data/file | grep -c ' 0 *0 '; touch /data/new && "
                         "ls -ln /data/new | grep -c ' 0 *0 '; probe id"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  std::istringstream out(r.out);
  std::string uid_map, listing, copied_up, created, id;
  std::getline(out, uid_map);
  std::getline(out, listing);
  std::getline(out, copied_up);
  std::getline(out, created);
  std::getline(out, id);
  std::istringstream map_fields(uid_map);
  uint32_t inside = 1, outside = 0, count = 0;
  map_fields >> inside >> outside >> count;
  EXPECT_EQ(inside, 0u) << uid_map;
  EXPECT_EQ(outside, ids.uid_start()) << uid_map;
  // Enough for the image's highest id (group "extra", 2000).
  EXPECT_EQ(count, 2001u) << uid_map;
  EXPECT_NE(listing.find(" 0 "), std::string::npos) << Describe(r);
  EXPECT_EQ(listing.find("65534"), std::string::npos) << Describe(r);
  EXPECT_EQ(copied_up, "1") << Describe(r);
  EXPECT_EQ(created, "1") << Describe(r);
  EXPECT_EQ(id, "uid=0 gid=0 groups=") << Describe(r);
  // The image itself did not change.
  EXPECT_EQ(Probe({"probe", "read", "/data/file"}), "from the image\n");
  EXPECT_TRUE(ContainerDirs().empty());
}

// "0 400000 2001" lines of a uid_map or gid_map, as the kernel prints them.
std::vector<runner::IdMap> ParseIdMap(const std::string& text) {
  std::vector<runner::IdMap> map;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    runner::IdMap entry;
    if (fields >> entry.container_id >> entry.host_id >> entry.size) map.push_back(entry);
  }
  return map;
}

TEST_F(RunTest, UserNamespaceAutoGivesEveryContainerIdsOfItsOwn) {
  SubordinateIds ids(Work() / "userns");
  const uint32_t u = ids.uid_start();
  const uint32_t g = ids.gid_start();
  auto start = [&](const std::vector<std::string>& flags) {
    std::vector<std::string> args = {"run", "-d", "--net", "none"};
    args.insert(args.end(), flags.begin(), flags.end());
    for (const char* arg : {"test:latest", "probe", "sleep", "60"}) args.push_back(arg);
    CommandResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return r.out.substr(0, r.out.find('\n'));
  };
  auto host_map = [&](const std::string& id, const char* file) {
    Json state = Json::parse(::imgtool::testing::ReadTestFile(ContainersDir() / id / "state.json"));
    int pid = state["pid"];
    return ParseIdMap(
        ::imgtool::testing::ReadTestFile("/proc/" + std::to_string(pid) + "/" + file));
  };
  // Two at once: the second's ids follow the first's. The second is a
  // detached --rm container: its supervisor holds the slice once run -d ended.
  std::string first = start({"--userns=auto"});
  std::string second = start({"--rm", "--userns=auto"});
  ASSERT_EQ(first.size(), 64u);
  ASSERT_EQ(second.size(), 64u);
  std::vector<runner::IdMap> first_uids = host_map(first, "uid_map");
  EXPECT_EQ(first_uids, (std::vector<runner::IdMap>{{0, u, 2001}}));
  EXPECT_EQ(host_map(first, "gid_map"), (std::vector<runner::IdMap>{{0, g, 2001}}));
  EXPECT_EQ(host_map(second, "uid_map"), (std::vector<runner::IdMap>{{0, u + 2001, 2001}}));
  EXPECT_EQ(host_map(second, "gid_map"), (std::vector<runner::IdMap>{{0, g + 2001, 2001}}));

  // exec joins the container's user namespace: the same ids.
  CommandResult exec = Run({"exec", first, "cat", "/proc/self/uid_map"});
  EXPECT_EQ(exec.exit_code, 0) << Describe(exec);
  EXPECT_EQ(ParseIdMap(exec.out), first_uids);
  // The record keeps the maps (and where to give them back).
  Json record =
      Json::parse(::imgtool::testing::ReadTestFile(ContainersDir() / first / "container.json"));
  EXPECT_EQ(record["userns"]["uid_map"], Json::parse("[[0, " + std::to_string(u) + ", 2001]]"));
  EXPECT_EQ(record["userns"]["gid_map"], Json::parse("[[0, " + std::to_string(g) + ", 2001]]"));
  EXPECT_EQ(record["userns"]["state_dir"], (Work() / "userns").string());

  // size= and the forced lines of uidmapping=/gidmapping=.
  EXPECT_EQ(ParseIdMap(Probe({"cat", "/proc/self/uid_map"}, {"--userns=auto:size=5000"})),
            (std::vector<runner::IdMap>{{0, u + 4002, 5000}}));
  EXPECT_EQ(
      ParseIdMap(Probe({"cat", "/proc/self/gid_map"}, {"--userns=auto:size=100,gidmapping=50:" +
                                                       std::to_string(g + 60000) + ":1"})),
      (std::vector<runner::IdMap>{{0, g + 4002, 50}, {50, g + 60000, 1}, {51, g + 4052, 49}}));

  // rm gives the first slice back; the next container takes it.
  CommandResult removed = Run({"rm", "-f", first});
  EXPECT_EQ(removed.exit_code, 0) << Describe(removed);
  EXPECT_EQ(ParseIdMap(Probe({"cat", "/proc/self/uid_map"}, {"--userns=auto"})), first_uids);
  // So does the end of a detached --rm container.
  CommandResult stopped = Run({"stop", "-t", "0", second});
  EXPECT_EQ(stopped.exit_code, 0) << Describe(stopped);
  for (int i = 0; i < 200 && !ContainerDirs().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(ContainerDirs().empty());
  EXPECT_EQ(ParseIdMap(Probe({"cat", "/proc/self/uid_map"}, {"--userns=auto:size=4002"})),
            (std::vector<runner::IdMap>{{0, u, 4002}}));
  Json table = Json::parse(::imgtool::testing::ReadTestFile(Work() / "userns/allocations.json"));
  EXPECT_EQ(table["allocations"].size(), 0u) << table.dump();
}

TEST_F(RunTest, UserNamespaceAutoTakesBackTheSliceOfAKilledImgtool) {
  SubordinateIds ids(Work() / "userns");
  RunAndKillImgtool({"--userns=auto"});
  // Its container may still run, but nothing holds the slice: the next run
  // takes it (and the cgroup cleanup at its start ends that container).
  EXPECT_EQ(ParseIdMap(Probe({"cat", "/proc/self/uid_map"}, {"--userns=auto"})),
            (std::vector<runner::IdMap>{{0, ids.uid_start(), 2001}}));
}

TEST_F(RunTest, UserNamespaceAutoCoversTheIdsTheImageAndUserUse) {
  SubordinateIds ids(Work() / "userns");
  // An image with files of 5000:6000 (tar keeps the owners).
  fs::path rootfs = Work() / "owned-rootfs";
  ::imgtool::runner::testing::BuildTestRootfs(rootfs);
  WriteTestFile(rootfs / "data/owned", "x\n");
  ASSERT_EQ(::chown((rootfs / "data/owned").c_str(), 5000, 6000), 0);
  fs::path tar = Work() / "owned.tar";
  CommandResult made = RunCommand(
      {"tar", "--sort=name", "--numeric-owner", "-C", rootfs.string(), "-cf", tar.string(), "."});
  ASSERT_EQ(made.exit_code, 0) << Describe(made);
  Ok({"import", tar.string(), "owned:latest"});
  std::vector<std::string> flags = {"--userns=auto"};
  std::string out = Probe({"sh", "-c", "cat /proc/self/uid_map; stat -c '%u:%g' /data/owned"},
                          flags, "owned:latest");
  EXPECT_EQ(out, "         0     " + std::to_string(ids.uid_start()) + "       6001\n5000:6000\n");
  // Worked out once: the answer is kept per chain ID.
  fs::path cache = fs::path(Root().string() + "-state") / "userns-ids";
  ASSERT_TRUE(fs::exists(cache));
  EXPECT_EQ(std::distance(fs::directory_iterator(cache), fs::directory_iterator()), 1);
  EXPECT_EQ(ParseIdMap(Probe({"cat", "/proc/self/uid_map"}, flags, "owned:latest")),
            (std::vector<runner::IdMap>{{0, ids.uid_start(), 6001}}));
  // A numeric user past the image's ids counts too.
  EXPECT_EQ(ParseIdMap(Probe({"cat", "/proc/self/uid_map"}, {"--userns=auto", "-u", "7000"})),
            (std::vector<runner::IdMap>{{0, ids.uid_start(), 7001}}));
  // gc removes the entry of an image whose snapshots went, and keeps the rest.
  auto entries = [&] {
    return std::distance(fs::directory_iterator(cache), fs::directory_iterator());
  };
  const auto before = entries();
  ASSERT_GE(before, 2);
  Ok({"rmi", "owned:latest"});
  Ok({"gc"});
  EXPECT_EQ(entries(), before - 1);
}

TEST_F(RunTest, UserNamespaceAutoErrors) {
  SubordinateIds ids(Work() / "userns");
  ExpectError(Run({"run", "--rm", "--net", "none", "--userns=auto:size=0", "test:latest", "true"}),
              "--userns \"auto:size=0\": size=0: want 1 to 4294967295");
  ExpectError(Run({"run", "--rm", "--net", "none", "--userns=auto:bogus", "test:latest", "true"}),
              "unknown option \"bogus\"");
  CommandResult r =
      Run({"run", "--rm", "--net", "none", "--userns=auto:size=4294967295", "test:latest", "true"});
  ExpectError(r, "uids of \"");
  EXPECT_NE(r.err.find("/etc/subuid"), std::string::npos) << Describe(r);
  EXPECT_NE(r.err.find("no 4294967295 free ids left"), std::string::npos) << Describe(r);
  EXPECT_TRUE(ContainerDirs().empty());
}

TEST_F(RunTest, CpuLimitsReachTheCgroup) {
  CommandResult r = Run({"run", "-d", "--net", "none", "--cpus", "0.5", "--cpu-shares", "512",
                         "--cpuset-cpus", "0", "test:latest", "sleep", "30"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::string id = r.out.substr(0, r.out.find('\n'));
  Json state = Json::parse(::imgtool::testing::ReadTestFile(ContainersDir() / id / "state.json"));
  int pid = state["pid"];
  // Where the container's process sits, per controller (v1 here; v2: one "0::" line).
  std::string cgroups =
      ::imgtool::testing::ReadTestFile("/proc/" + std::to_string(pid) + "/cgroup");
  std::map<std::string, std::string> paths;
  std::istringstream lines(cgroups);
  for (std::string line; std::getline(lines, line);) {
    size_t first = line.find(':');
    size_t second = line.find(':', first + 1);
    std::string controllers = line.substr(first + 1, second - first - 1);
    std::istringstream names(controllers);
    for (std::string name; std::getline(names, name, ',');) paths[name] = line.substr(second + 1);
  }
  auto read = [&](const std::string& controller, const std::string& file) {
    fs::path dir = fs::path("/sys/fs/cgroup") / controller;
    if (!fs::exists(dir / fs::path(paths[controller]).relative_path() / file)) {
      dir = fs::path("/sys/fs/cgroup") / "cpu,cpuacct";
    }
    std::string text =
        ::imgtool::testing::ReadTestFile(dir / fs::path(paths[controller]).relative_path() / file);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return text;
  };
  if (fs::exists("/sys/fs/cgroup/cgroup.controllers")) {
    EXPECT_EQ(read("", "cpu.max"), "50000 100000");
    EXPECT_EQ(read("", "cpuset.cpus"), "0");
  } else {
    ASSERT_NE(paths["cpu"].find(id), std::string::npos) << cgroups;
    EXPECT_EQ(read("cpu", "cpu.cfs_quota_us"), "50000");
    EXPECT_EQ(read("cpu", "cpu.cfs_period_us"), "100000");
    EXPECT_EQ(read("cpu", "cpu.shares"), "512");
    EXPECT_EQ(read("cpuset", "cpuset.cpus"), "0");
  }
  EXPECT_EQ(Probe({"probe", "status", "Cpus_allowed_list"}, {"--cpuset-cpus", "0"}),
            "Cpus_allowed_list=0\n");
  EXPECT_EQ(Run({"rm", "-f", id}).exit_code, 0);
  ExpectError(Run({"run", "--rm", "--net", "none", "--cpus", "-1", "test:latest", "true"}),
              "--cpus");
}

// ---- limits ----

TEST_F(RunTest, OwnCgroupLimitsShowUnderSysFsCgroupReadOnly) {
  // What docker shows on a cgroup v1 host, and what JVMs and Go runtimes
  // read to size themselves: the container's own cgroups, read-only.
  if (!fs::exists("/sys/fs/cgroup/memory/memory.limit_in_bytes")) {
    GTEST_SKIP() << "not a cgroup v1 host (v2 mounts cgroup2 there instead)";
  }
  EXPECT_EQ(Probe({"probe", "read", "/sys/fs/cgroup/memory/memory.limit_in_bytes", "+", "read",
                   "/sys/fs/cgroup/pids/pids.max", "+", "write", "/sys/fs/cgroup/pids/pids.max",
                   "1", "+", "write", "/sys/fs/cgroup/new", "x", "+", "exists",
                   "/sys/fs/cgroup/cpu/cpu.shares"},
                  {"-m", "64m", "--pids-limit", "77"}),
            std::to_string(64 << 20) + "\n77\nwrite=EROFS\nwrite=EROFS\nexists=1\n");
  // --privileged: writable, as docker's.
  EXPECT_EQ(Probe({"probe", "write", "/sys/fs/cgroup/pids/pids.max", "66", "+", "read",
                   "/sys/fs/cgroup/pids/pids.max"},
                  {"--privileged", "--pids-limit", "77"}),
            "write=ok\n66\n");
}

TEST_F(RunTest, MemoryLimitEndsWithOomAnd137) {
  CommandResult r = Run({"run", "--rm", "--net", "none", "-m", "32m", "--memory-swap", "32m",
                         "test:latest", "probe", "alloc", "256"});
  EXPECT_EQ(r.exit_code, 137) << Describe(r);
  EXPECT_NE(r.err.find("OOM"), std::string::npos) << Describe(r);
}

TEST_F(RunTest, PidsLimitStopsAForkLoop) {
  CommandResult r =
      Run({"run", "--rm", "--net", "none", "--pids-limit", "10", "test:latest", "sh", "-c",
           "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do "
           "sleep 1 & done; wait; echo all-forked"});
  // The forks past the limit failed inside (busybox sh gives up the script) ...
  EXPECT_NE(r.err.find("can't fork"), std::string::npos) << Describe(r);
  EXPECT_EQ(r.out.find("all-forked"), std::string::npos) << Describe(r);
  // ... and the host is fine: this process can still fork, a container still runs.
  EXPECT_EQ(RunCommand({"true"}).exit_code, 0);
  EXPECT_EQ(Probe({"probe", "pid"}, {"--pids-limit", "10"}), "pid=1\n");
}

// ---- exit codes ----

TEST_F(RunTest, ExitCodes) {
  auto code = [&](const std::vector<std::string>& args,
                  const std::vector<std::string>& flags = {}) {
    std::vector<std::string> argv = {"run", "--rm", "--net", "none"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.push_back("test:latest");
    argv.insert(argv.end(), args.begin(), args.end());
    return Run(argv);
  };
  EXPECT_EQ(code({"true"}).exit_code, 0);
  EXPECT_EQ(code({"probe", "exit", "3"}).exit_code, 3);
  EXPECT_EQ(code({"probe", "segv"}).exit_code, 128 + SIGSEGV);
  // Under --init the command is PID 2, so a signal it sends itself counts.
  EXPECT_EQ(code({"probe", "kill-self", "15"}, {"--init"}).exit_code, 128 + SIGTERM);
  CommandResult not_executable = code({"/bin/not-executable"});
  EXPECT_EQ(not_executable.exit_code, 126) << Describe(not_executable);
  EXPECT_FALSE(not_executable.err.empty());
  CommandResult not_found = code({"no-such-command"});
  EXPECT_EQ(not_found.exit_code, 127) << Describe(not_found);
  EXPECT_NE(not_found.err.find("no-such-command"), std::string::npos) << Describe(not_found);
  ExpectError(Run({"run", "--rm", "--pull=never", "nope:latest", "true"}),
              "image \"nope:latest\" not found in the store (--pull=never)");
  ExpectError(Run({"run", "--rm", "--net", "none", "-v", "relative:/x", "test:latest", "true"}),
              "must be absolute");
  ExpectError(Run({"run", "--rm", "--bogus", "test:latest", "true"}), "--bogus");
  // Nothing stayed behind of any of them.
  EXPECT_TRUE(ContainerDirs().empty());
}

// ---- stdio ----

TEST_F(RunTest, StdinIsPipedWithDashI) {
  CommandResult r =
      Run({"run", "--rm", "-i", "--net", "none", "test:latest", "probe", "cat"}, "piped through\n");
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "piped through\n");
  // Without -i the command reads /dev/null.
  r = Run({"run", "--rm", "--net", "none", "test:latest", "probe", "cat"}, "not passed\n");
  EXPECT_EQ(r.out, "");
}

TEST_F(RunTest, PtySessionWithDashT) {
  IMGTOOL_REQUIRE_COMMAND("script");
  std::string command = ::imgtool::testing::ImgtoolBinary() + " --root " + Root().string() +
                        " run --rm -it --net none test:latest probe tty";
  CommandResult r = RunCommand({"script", "-qec", command, "/dev/null"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_NE(r.out.find("isatty=1 ttyname=/dev/pts/0"), std::string::npos) << Describe(r);
  // Input typed at the terminal reaches the container's shell.
  CommandResult shell = RunCommand({"script", "-qec",
                                    ::imgtool::testing::ImgtoolBinary() + " --root " +
                                        Root().string() + " run --rm -it --net none test:latest sh",
                                    "/dev/null"},
                                   "echo from-the-pty-$((6*7))\nexit 5\n");
  EXPECT_NE(shell.out.find("from-the-pty-42"), std::string::npos) << Describe(shell);
}

TEST_F(RunTest, PtyFollowsWindowResize) {
  // imgtool on a terminal of its own (session leader, controlling tty): a
  // resize of that terminal must reach the container's as SIGWINCH.
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(master, 0);
  UniqueFd master_fd(master);
  ASSERT_EQ(::grantpt(master), 0);
  ASSERT_EQ(::unlockpt(master), 0);
  std::string slave_name = ::ptsname(master);
  struct winsize size {};
  size.ws_row = 24;
  size.ws_col = 80;
  ASSERT_EQ(::ioctl(master, TIOCSWINSZ, &size), 0);
  std::vector<std::string> args = {::imgtool::testing::ImgtoolBinary(), "--root", Root().string(),
                                   "run", "--rm", "-it", "--net", "none", "test:latest",
                                   "probe", "winch"};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setsid();
    int slave = ::open(slave_name.c_str(), O_RDWR);  // becomes the controlling terminal
    if (slave < 0) ::_exit(120);
    ::dup2(slave, 0);
    ::dup2(slave, 1);
    ::dup2(slave, 2);
    ::execv(argv[0], argv.data());
    ::_exit(121);
  }
  std::string out;
  auto read_until = [&](std::string_view want) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (out.find(want) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      struct pollfd p {master, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buffer[256];
      ssize_t n = ::read(master, buffer, sizeof(buffer));
      if (n <= 0) break;
      out.append(buffer, static_cast<size_t>(n));
    }
    return out.find(want) != std::string::npos;
  };
  EXPECT_TRUE(read_until("size=24x80 ready")) << out;
  size.ws_row = 33;
  size.ws_col = 77;
  ASSERT_EQ(::ioctl(master, TIOCSWINSZ, &size), 0);
  EXPECT_TRUE(read_until("resized=33x77")) << out;
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << " " << out;
}

// ---- filesystem ----

TEST_F(RunTest, VolumesReadWriteAndReadOnly) {
  fs::path host = Work() / "shared";
  fs::create_directories(host);
  WriteTestFile(host / "in", "from the host\n");
  EXPECT_EQ(Probe({"probe", "read", "/mnt/in", "+", "write", "/mnt/out", "back"},
                  {"-v", host.string() + ":/mnt"}),
            "from the host\nwrite=ok\n");
  EXPECT_EQ(::imgtool::testing::ReadTestFile(host / "out"), "back");
  EXPECT_EQ(Probe({"probe", "write", "/mnt/again", "x"}, {"-v", host.string() + ":/mnt:ro"}),
            "write=EROFS\n");
  EXPECT_FALSE(fs::exists(host / "again"));
}

TEST_F(RunTest, ContainerChangesDoNotReachTheImage) {
  EXPECT_EQ(Probe({"probe", "write", "/data/file", "changed"}), "write=ok\n");
  EXPECT_EQ(Probe({"probe", "read", "/data/file"}), "from the image\n");
}

TEST_F(RunTest, UserFlag) {
  EXPECT_EQ(Probe({"probe", "id"}, {"-u", "app"}), "uid=1000 gid=1000 groups=50,2000\n");
  EXPECT_EQ(Probe({"probe", "id"}, {"-u", "1234:5678"}), "uid=1234 gid=5678 groups=\n");
  EXPECT_EQ(Probe({"probe", "id"}), "uid=0 gid=0 groups=\n");
}

// ---- image config ----

TEST_F(RunTest, ImageConfigAndOverrides) {
  DeriveImage("configured:1", [](Json& config) {
    config["Entrypoint"] = {"/bin/probe"};
    config["Cmd"] = {"env", "GREETING", "+", "cwd", "+", "id"};
    config["Env"] = {"PATH=/bin", "GREETING=from-image"};
    config["WorkingDir"] = "/home/app";
    config["User"] = "app";
  });
  EXPECT_EQ(Probe({}, {}, "configured:1"),
            "env=from-image\ncwd=/home/app\nuid=1000 gid=1000 groups=50,2000\n");
  // CMD arguments replace Cmd, -e Env, -w WorkingDir, -u User.
  EXPECT_EQ(Probe({"env", "GREETING", "+", "cwd", "+", "id"},
                  {"-e", "GREETING=from-flag", "-w", "/tmp", "-u", "0"}, "configured:1"),
            "env=from-flag\ncwd=/tmp\nuid=0 gid=0 groups=\n");
  // --env-file, then -e wins.
  WriteTestFile(Work() / "env", "# comment\nGREETING=from-file\nOTHER=x\n");
  EXPECT_EQ(Probe({"env", "GREETING", "+", "env", "OTHER"},
                  {"--env-file", (Work() / "env").string()}, "configured:1"),
            "env=from-file\nenv=x\n");
  // --entrypoint replaces the entrypoint and drops the image's Cmd.
  EXPECT_EQ(Probe({"from-entrypoint"}, {"--entrypoint", "/bin/echo"}, "configured:1"),
            "from-entrypoint\n");
}

// ---- lifecycle ----

TEST_F(RunTest, RmLeavesNothingBehind) {
  std::string mounts_before = ::imgtool::testing::ReadTestFile("/proc/self/mountinfo");
  CommandResult r =
      Run({"run", "--rm", "--name", "gone", "-m", "64m", "-v", Work().string() + ":/mnt",
           "test:latest", "probe", "ls", "/sys/class/net"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "ls=eth0,lo\n");
  EXPECT_TRUE(ContainerDirs().empty());
  EXPECT_EQ(CountContainerSnapshots(SnapshotNames()), 0);
  std::string mounts_after = ::imgtool::testing::ReadTestFile("/proc/self/mountinfo");
  EXPECT_EQ(mounts_after.find(Root().string() + "-state"), std::string::npos) << mounts_after;
  EXPECT_TRUE(BridgePortsGone()) << "veths left on " << bridge_;
  // No cgroup of the container under any hierarchy (its hostname is the
  // id's first 12 digits).
  CommandResult named = Run({"run", "--rm", "--net", "none", "-m", "64m", "--pids-limit", "50",
                             "test:latest", "probe", "hostname"});
  ASSERT_EQ(named.exit_code, 0) << Describe(named);
  std::string short_id = named.out.substr(9, 12);
  std::error_code ec;
  for (const auto& hierarchy : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    for (const auto& entry : fs::directory_iterator(hierarchy.path() / "imgtool", ec)) {
      EXPECT_FALSE(entry.path().filename().string().starts_with(short_id)) << entry.path();
    }
  }
  EXPECT_TRUE(ContainerDirs().empty());
  // The name is free again.
  EXPECT_EQ(Probe({"true"}, {"--name", "gone"}), "");
  EXPECT_EQ(Run({"ps", "-a", "-q"}).out, "");
}

TEST_F(RunTest, EtcFilesNeedNoCopyUpOfTheImagesEtc) {
  // The test image's /etc has no hosts, hostname or resolv.conf: the bind
  // targets come from the shared etc targets layer, so the container's
  // writable layer gets no etc/ of its own.
  CommandResult r = Run({"run", "--net", "none", "--name", "etc", "--hostname", "box",
                         "test:latest", "probe", "read", "/etc/hostname", "+", "read",
                         "/etc/hosts"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "box");
  EXPECT_NE(r.out.find("127.0.0.1\tlocalhost"), std::string::npos) << r.out;
  fs::path snapshots = fs::path(Root().string() + "-state") / "snapshots";
  std::error_code ec;
  int uppers = 0;
  for (const auto& entry : fs::directory_iterator(snapshots, ec)) {
    if (!fs::is_directory(entry.path() / "fs")) continue;
    ++uppers;
    EXPECT_FALSE(fs::exists(entry.path() / "fs" / "etc" / "hosts")) << entry.path();
  }
  EXPECT_EQ(uppers, 2);  // the image's layer and the container's
  EXPECT_TRUE(fs::exists(fs::path(Root().string() + "-state") / "etc-targets" / "etc" / "hosts"));
  Ok({"rm", "etc"});
  // gc keeps the layer: it is no snapshot.
  Ok({"gc"});
  EXPECT_TRUE(fs::exists(fs::path(Root().string() + "-state") / "etc-targets" / "etc" / "hosts"));
}

TEST_F(RunTest, EtcFilesOverAnImageWhoseEtcIsASymlink) {
  // The targets layer's etc/ would hide the symlink: left out, the targets
  // are made where the symlink leads, as before.
  fs::path rootfs = Work() / "symlinked-etc";
  ::imgtool::runner::testing::BuildTestRootfs(rootfs);
  fs::create_directories(rootfs / "usr");
  fs::rename(rootfs / "etc", rootfs / "usr" / "etc");
  fs::create_directory_symlink("usr/etc", rootfs / "etc");
  fs::path tar = Work() / "symlinked-etc.tar";
  CommandResult packed = RunCommand({"tar", "--sort=name", "--owner=0", "--group=0",
                                     "--numeric-owner", "-C", rootfs.string(), "-cf",
                                     tar.string(), "."});
  ASSERT_EQ(packed.exit_code, 0) << Describe(packed);
  Ok({"import", tar.string(), "symlinked:latest"});
  std::string out = Probe({"probe", "readlink", "/etc", "+", "read", "/etc/hostname", "+", "read",
                           "/usr/etc/hosts"},
                          {"--hostname", "linked"}, "symlinked:latest");
  EXPECT_EQ(out.substr(0, out.find('\n')), "readlink=usr/etc") << out;
  EXPECT_NE(out.find("linked\n"), std::string::npos) << out;
  EXPECT_NE(out.find("127.0.0.1\tlocalhost"), std::string::npos) << out;
}

TEST_F(RunTest, ExitedContainerStaysUntilRm) {
  CommandResult r =
      Run({"run", "--net", "none", "--name", "kept", "test:latest", "probe", "exit", "4"});
  EXPECT_EQ(r.exit_code, 4) << Describe(r);
  CommandResult ps = Run({"ps", "-a", "--format", "json"});
  ASSERT_EQ(ps.exit_code, 0) << Describe(ps);
  Json list = Json::parse(ps.out);
  ASSERT_EQ(list.size(), 1u) << ps.out;
  EXPECT_EQ(list[0]["Names"][0], "kept");
  EXPECT_EQ(list[0]["State"], "exited");
  EXPECT_EQ(list[0]["ExitCode"], 4);
  EXPECT_EQ(Run({"ps", "-q"}).out, "");  // not running
  // The name is taken while it exists.
  ExpectError(Run({"run", "--net", "none", "--name", "kept", "test:latest", "true"}),
              "already in use");
  // gc keeps its writable layer and the image layers under it, even with
  // the image's name gone.
  Ok({"rmi", "test:latest"});
  Ok({"gc"});
  std::vector<std::string> names = SnapshotNames();
  EXPECT_EQ(CountContainerSnapshots(names), 1);
  EXPECT_EQ(names.size(), 2u);  // the layer and the container
  EXPECT_EQ(Run({"rm", "kept"}).exit_code, 0);
  EXPECT_TRUE(ContainerDirs().empty());
  Ok({"gc"});
  EXPECT_TRUE(SnapshotNames().empty());
}

TEST_F(RunTest, UlimitSetsLimitsInTheContainerAndItsExecs) {
  auto limit_line = [](const std::string& limits, const std::string& name) {
    size_t at = limits.find(name);
    if (at == std::string::npos) return std::string("missing");
    std::string line = limits.substr(at, limits.find('\n', at) - at);
    // "Max open files            1000                 2000                 files"
    std::istringstream words(line.substr(name.size()));
    std::string soft, hard;
    words >> soft >> hard;
    return soft + ":" + hard;
  };
  std::string limits = Probe({"probe", "read", "/proc/self/limits"},
                             {"--ulimit", "nofile=1000:2000", "--ulimit", "core=0",
                              "--ulimit", "nproc=500", "--ulimit", "nproc=600:700"});
  EXPECT_EQ(limit_line(limits, "Max open files"), "1000:2000") << limits;
  EXPECT_EQ(limit_line(limits, "Max core file size"), "0:0") << limits;
  EXPECT_EQ(limit_line(limits, "Max processes"), "600:700") << "the later one wins\n" << limits;
  // Unset limits stay imgtool's own.
  struct rlimit own {};
  ASSERT_EQ(::getrlimit(RLIMIT_STACK, &own), 0);
  std::string stack = limit_line(limits, "Max stack size");
  EXPECT_EQ(stack.substr(0, stack.find(':')),
            own.rlim_cur == RLIM_INFINITY ? "unlimited" : std::to_string(own.rlim_cur));

  // exec'd processes get them too, as docker's do.
  CommandResult started = Run({"run", "-d", "--net", "none", "--name", "limited", "--ulimit",
                               "nofile=900:1900", "test:latest", "probe", "sleep", "60"});
  ASSERT_EQ(started.exit_code, 0) << Describe(started);
  CommandResult exec = Run({"exec", "limited", "probe", "read", "/proc/self/limits"});
  EXPECT_EQ(limit_line(exec.out, "Max open files"), "900:1900") << Describe(exec);
  EXPECT_EQ(Run({"rm", "-f", "limited"}).exit_code, 0);

  // Past the kernel's nr_open: refused in the container's setup, 125, named.
  CommandResult refused = Run({"run", "--rm", "--net", "none", "--ulimit",
                               "nofile=1000:2000000000", "test:latest", "true"});
  EXPECT_EQ(refused.exit_code, 125) << Describe(refused);
  EXPECT_NE(refused.err.find("--ulimit nofile"), std::string::npos) << Describe(refused);
  // A malformed one fails before anything is made.
  CommandResult bad = Run({"run", "--rm", "--ulimit", "nofile=5:1", "test:latest", "true"});
  EXPECT_EQ(bad.exit_code, 125) << Describe(bad);
  EXPECT_NE(bad.err.find("soft limit is above the hard one"), std::string::npos) << Describe(bad);
}

TEST_F(RunTest, DetachedContainerExecStopRm) {
  CommandResult started = Run({"run", "-d", "--net", "none", "--name", "bg", "-e", "MARK=set",
                               "test:latest", "sh", "-c", "echo started; exec probe sleep 60"});
  ASSERT_EQ(started.exit_code, 0) << Describe(started);
  std::string id = started.out.substr(0, started.out.size() - 1);
  EXPECT_EQ(id.size(), 64u) << started.out;
  CommandResult ps = Run({"ps"});
  EXPECT_NE(ps.out.find("bg"), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("Up "), std::string::npos) << ps.out;
  // exec joins its namespaces: not PID 1, the container's processes only,
  // its environment.
  CommandResult exec = Run({"exec", "bg", "probe", "pid", "+", "pids", "+", "env", "MARK"});
  EXPECT_EQ(exec.exit_code, 0) << Describe(exec);
  EXPECT_EQ(exec.out.rfind("pid=", 0), 0u);
  EXPECT_NE(exec.out.find("pids=1,"), std::string::npos) << exec.out;
  EXPECT_NE(exec.out.find("env=set\n"), std::string::npos) << exec.out;
  EXPECT_EQ(Run({"exec", id.substr(0, 8), "probe", "exit", "7"}).exit_code, 7);
  CommandResult piped = Run({"exec", "-i", "bg", "probe", "cat"}, "into exec\n");
  EXPECT_EQ(piped.out, "into exec\n");
  EXPECT_EQ(Run({"logs", "bg"}).out, "started\n");
  ExpectError(Run({"rm", "bg"}), "is running");
  CommandResult stopped = Run({"stop", "-t", "1", "bg"});
  EXPECT_EQ(stopped.exit_code, 0) << Describe(stopped);
  // probe sleep, as PID 1 without a handler, ignores SIGTERM: stop sent
  // SIGKILL after the timeout.
  CommandResult waited = Run({"wait", "bg"});
  EXPECT_EQ(waited.out, "137\n") << Describe(waited);
  EXPECT_EQ(Run({"ps", "-q"}).out, "");
  EXPECT_NE(Run({"ps", "-a"}).out.find("Exited (137)"), std::string::npos);
  ExpectError(Run({"exec", "bg", "true"}), "not running");
  EXPECT_EQ(Run({"rm", "bg"}).exit_code, 0);
  EXPECT_TRUE(ContainerDirs().empty());
  EXPECT_EQ(CountContainerSnapshots(SnapshotNames()), 0);
  ExpectError(Run({"rm", "bg"}), "no such container");
  EXPECT_EQ(Run({"rm", "-f", "bg"}).exit_code, 0);
}

TEST_F(RunTest, DetachedRmKillAndLogsFollow) {
  CommandResult started = Run({"run", "-d", "--rm", "--net", "none", "--name", "tmp", "test:latest",
                               "sh", "-c", "echo one; exec probe trap 10"});
  ASSERT_EQ(started.exit_code, 0) << Describe(started);
  // logs -f follows until the end; kill -s USR1 ends the trap.
  auto follow = std::async(std::launch::async, [&] { return Run({"logs", "-f", "tmp"}); });
  for (int i = 0; i < 200; ++i) {
    if (Run({"logs", "tmp"}).out.find("ready") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CommandResult killed = Run({"kill", "-s", "USR1", "tmp"});
  EXPECT_EQ(killed.exit_code, 0) << Describe(killed);
  CommandResult logs = follow.get();
  EXPECT_EQ(logs.out, "one\nready\ngot=10\n") << Describe(logs);
  // --rm: the supervisor removed it.
  for (int i = 0; i < 200 && !ContainerDirs().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(ContainerDirs().empty());
  EXPECT_EQ(CountContainerSnapshots(SnapshotNames()), 0);
  ExpectError(Run({"kill", "tmp"}), "no such container");
}

TEST_F(RunTest, GcRemovesWhatAKilledRunLeft) {
  // imgtool run --rm killed with SIGKILL: the container dies with it
  // (PDEATHSIG), its record, writable layer (in its own dir, not a
  // snapshot) and cgroup stay until gc.
  ASSERT_NO_FATAL_FAILURE(RunAndKillImgtool({"--name", "doomed", "-m", "64m"}));
  EXPECT_TRUE(fs::is_directory(ContainersDir() / ContainerDirs().front() / "upper"));
  EXPECT_EQ(CountContainerSnapshots(SnapshotNames()), 0);
  CommandResult ps = Run({"ps", "-a"});
  EXPECT_NE(ps.out.find("Exited (-1)"), std::string::npos) << ps.out;
  std::string short_id = Run({"ps", "-aq"}).out.substr(0, 12);
  Ok({"gc"});
  EXPECT_TRUE(ContainerDirs().empty());
  EXPECT_EQ(CountContainerSnapshots(SnapshotNames()), 0);
  EXPECT_EQ(Run({"ps", "-aq"}).out, "");
  std::error_code ec;
  for (const auto& hierarchy : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    for (const auto& entry : fs::directory_iterator(hierarchy.path() / "imgtool", ec)) {
      EXPECT_FALSE(entry.path().filename().string().starts_with(short_id)) << entry.path();
    }
  }
}

// The cgroup dirs of container `id` that exist (v1: one per hierarchy).
std::vector<fs::path> CgroupDirsOf(const std::string& id) {
  std::vector<fs::path> dirs;
  std::error_code ec;
  if (fs::exists(fs::path("/sys/fs/cgroup/imgtool") / id, ec)) {
    dirs.push_back(fs::path("/sys/fs/cgroup/imgtool") / id);
  }
  for (const auto& hierarchy : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    fs::path dir = hierarchy.path() / "imgtool" / id;
    if (fs::exists(dir, ec)) dirs.push_back(dir);
  }
  return dirs;
}

TEST_F(RunTest, NextRunRemovesTheCgroupOfAKilledRun) {
  // imgtool killed with SIGKILL can not remove the container's cgroup; the
  // next container start finds its claim unheld and removes it (no gc).
  ASSERT_NO_FATAL_FAILURE(RunAndKillImgtool({"-m", "64m"}));
  std::string id = ContainerDirs().front();
  EXPECT_FALSE(CgroupDirsOf(id).empty());
  EXPECT_TRUE(fs::exists(fs::path("/run/imgtool/cgroups") / id));

  CommandResult next = Run({"run", "--rm", "--net", "none", "test:latest", "probe", "exit", "0"});
  EXPECT_EQ(next.exit_code, 0) << Describe(next);
  // The container's process may take a moment to die of PDEATHSIG and be
  // reaped by the kernel; the cleanup waits for that (rmdir of a busy cgroup).
  EXPECT_TRUE(CgroupDirsOf(id).empty());
  EXPECT_FALSE(fs::exists(fs::path("/run/imgtool/cgroups") / id));
  Ok({"gc"});
  EXPECT_TRUE(ContainerDirs().empty());
}

TEST_F(RunTest, TwentyParallelRunsGetDistinctAddressesAndCleanUp) {
  std::vector<std::future<CommandResult>> runs;
  for (int i = 0; i < 20; ++i) {
    runs.push_back(std::async(std::launch::async, [this, i] {
      return Run({"run", "--rm", "--hostname", "par" + std::to_string(i), "test:latest", "probe",
                  "read", "/etc/hosts"});
    }));
  }
  std::set<std::string> addresses;
  std::string prefix = gateway_.substr(0, gateway_.rfind('.') + 1);
  for (int i = 0; i < 20; ++i) {
    CommandResult r = runs[i].get();
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    std::string needle = "\tpar" + std::to_string(i) + "\n";
    size_t at = r.out.find(needle);
    ASSERT_NE(at, std::string::npos) << r.out;
    size_t line = r.out.rfind('\n', at);
    std::string address = r.out.substr(line + 1, at - line - 1);
    EXPECT_TRUE(address.starts_with(prefix)) << address;
    addresses.insert(address);
  }
  EXPECT_EQ(addresses.size(), 20u);
  EXPECT_TRUE(ContainerDirs().empty());
  EXPECT_EQ(CountContainerSnapshots(SnapshotNames()), 0);
  EXPECT_TRUE(BridgePortsGone()) << "veths left on " << bridge_;
}

}  // namespace
}  // namespace imgtool::cli::testing
