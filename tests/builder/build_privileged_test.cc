// `imgtool build` end to end, as root, from a local busybox-static rootfs:
// every step type, args, multi-stage, the cache, failing steps,
// reproducibility and the --output formats as podman and skopeo read them.
// Run steps use --network none unless networking is what is tested.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/builder/build_fixture.h"

namespace imgtool::testing {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kEveryStep = R"(name: localhost/every:1
args: { GREETING: hello, WHO: world }
from: { rootfs: base.tar }
env: { LANG: C.UTF-8 }
steps:
  - run: echo "$GREETING ${WHO}" > /greeting
  - copy: { src: files/, dest: /opt/app/, chown: "1000:1000", mode: "0750" }
  - copy: { src: "data/*.txt", dest: /data/ }
  - env: { APP_HOME: /opt/app }
  - workdir: ${APP_HOME}
  - run: pwd > where && id -u > /tmp/uid-root
  - user: "1000:1000"
  - run: id -u > /tmp/uid && echo $APP_HOME > /tmp/home
  - label: { org.example.greeting: "${GREETING}" }
  - shell: [/bin/sh, -e, -c]
  - run: [/bin/sh, -c, "echo exec-form > /tmp/exec"]
config:
  entrypoint: [/bin/cat]
  cmd: [/greeting]
  expose: ["8080"]
  volumes: [/data]
)";

TEST_F(BuildTest, EveryStepType) {
  WriteRecipe(kEveryStep);
  WriteTestFile(context_ / "files/app.sh", "#!/bin/sh\necho app\n", 0755);
  WriteTestFile(context_ / "files/sub/conf", "x=1\n");
  WriteTestFile(context_ / "data/a.txt", "a\n");
  WriteTestFile(context_ / "data/b.txt", "b\n");
  WriteTestFile(context_ / "data/c.bin", "c\n");
  CommandResult result =
      Build({(context_ / "recipe.yaml").string(), "--build-arg", "WHO=there", "-t", "extra:tag"});
  ASSERT_EQ(result.exit_code, 0) << result.err << result.out;
  // A fresh build takes nothing from the cache, metadata steps included.
  EXPECT_EQ(result.out.find("CACHED"), std::string::npos) << result.out;

  fs::path tree = Export("extra:tag");
  EXPECT_EQ(ReadTestFile(tree / "greeting"), "hello there\n");
  EXPECT_EQ(ReadTestFile(tree / "opt/app/app.sh"), "#!/bin/sh\necho app\n");
  EXPECT_EQ(ReadTestFile(tree / "opt/app/sub/conf"), "x=1\n");
  struct stat st {};
  ASSERT_EQ(::lstat((tree / "opt/app/app.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1000u);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(ReadTestFile(tree / "data/a.txt"), "a\n");
  EXPECT_EQ(ReadTestFile(tree / "data/b.txt"), "b\n");
  EXPECT_FALSE(fs::exists(tree / "data/c.bin"));
  ASSERT_EQ(::lstat((tree / "data/a.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(ReadTestFile(tree / "opt/app/where"), "/opt/app\n");
  EXPECT_EQ(ReadTestFile(tree / "tmp/uid-root"), "0\n");
  EXPECT_EQ(ReadTestFile(tree / "tmp/uid"), "1000\n");
  EXPECT_EQ(ReadTestFile(tree / "tmp/home"), "/opt/app\n");
  EXPECT_EQ(ReadTestFile(tree / "tmp/exec"), "exec-form\n");
  // The runner's mount points are not part of any layer.
  EXPECT_FALSE(fs::exists(tree / "etc/hosts"));
  EXPECT_FALSE(fs::exists(tree / "proc"));

  nlohmann::json image = Inspect("docker.io/library/extra:tag");
  std::string dump = image.dump();
  EXPECT_NE(dump.find("APP_HOME=/opt/app"), std::string::npos) << dump;
  EXPECT_NE(dump.find("LANG=C.UTF-8"), std::string::npos) << dump;
  EXPECT_NE(dump.find("\"org.example.greeting\":\"hello\""), std::string::npos) << dump;
  EXPECT_NE(dump.find("8080/tcp"), std::string::npos) << dump;
  EXPECT_NE(dump.find("1970-01-01T00:00:00Z"), std::string::npos) << dump;
  // Args are not in the image's environment.
  EXPECT_EQ(dump.find("GREETING=hello"), std::string::npos) << dump;
  // -t replaces the recipe's name.
  EXPECT_NE(RunImgtool(root_, {"inspect", "localhost/every:1"}).exit_code, 0);
  EXPECT_EQ(RunImgtool(root_, {"inspect", "localhost/every:1"}).exit_code, 125);
}

TEST_F(BuildTest, UnknownBuildArgIsAnError) {
  WriteRecipe("args: { A: x }\nfrom: { rootfs: base.tar }\n");
  CommandResult result = Build({(context_ / "recipe.yaml").string(), "--build-arg", "B=1"});
  EXPECT_EQ(result.exit_code, 125);
  EXPECT_NE(result.err.find("--build-arg B:"), std::string::npos) << result.err;
}

TEST_F(BuildTest, BadRecipeNamesFileAndLine) {
  WriteRecipe("from: { rootfs: base.tar }\nsteps:\n  - run: true\n    netwrk: none\n");
  CommandResult result = Build({(context_ / "recipe.yaml").string()});
  EXPECT_EQ(result.exit_code, 125);
  EXPECT_NE(result.err.find("recipe.yaml:4:5: step 1: unknown key \"netwrk\""), std::string::npos)
      << result.err;
}

TEST_F(BuildTest, CopySourceThroughSymlinkOutsideContextIsRefused) {
  fs::create_symlink("/etc", context_ / "escape");
  WriteRecipe(
      "from: { rootfs: base.tar }\nsteps:\n  - run: true\n  - copy: { src: escape/passwd, dest: /x "
      "}\n");
  CommandResult result = Build({(context_ / "recipe.yaml").string()});
  EXPECT_EQ(result.exit_code, 125);
  EXPECT_NE(
      result.err.find("recipe.yaml:4:5: copy source \"escape/passwd\" leads outside the build "
                      "context"),
      std::string::npos)
      << result.err;
  // Refused before anything ran.
  EXPECT_EQ(result.out.find("RUN true"), std::string::npos) << result.out;
}

TEST_F(BuildTest, CacheRebuildsOnlyFromTheChangedCopy) {
  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: echo one > /one
  - copy: { src: a.txt, dest: /a.txt }
  - copy: { src: b.txt, dest: /b.txt }
  - run: cat /a.txt /b.txt > /ab
)");
  WriteTestFile(context_ / "a.txt", "a1\n");
  WriteTestFile(context_ / "b.txt", "b1\n");
  auto cached = [](const nlohmann::json& json) {
    std::vector<bool> out;
    for (const auto& step : json["steps"]) {
      if (step["layer"].get<bool>()) out.push_back(step["cached"].get<bool>());
    }
    return out;
  };
  nlohmann::json first = BuildJson({"-t", "cache:test"});
  EXPECT_EQ(cached(first), (std::vector<bool>{false, false, false, false, false}));
  nlohmann::json second = BuildJson({"-t", "cache:test"});
  EXPECT_EQ(cached(second), (std::vector<bool>{true, true, true, true, true}));
  EXPECT_EQ(first["digest"], second["digest"]);

  // Host metadata that is not content does not matter.
  fs::last_write_time(context_ / "a.txt", fs::file_time_type::clock::now() - std::chrono::hours(5));
  fs::permissions(context_ / "a.txt",
                  fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_write);
  nlohmann::json touched = BuildJson({"-t", "cache:test"});
  EXPECT_EQ(cached(touched), (std::vector<bool>{true, true, true, true, true}));

  WriteTestFile(context_ / "b.txt", "b2\n");
  nlohmann::json third = BuildJson({"-t", "cache:test", "--explain"});
  EXPECT_EQ(cached(third), (std::vector<bool>{true, true, true, false, false}));
  EXPECT_NE(third["digest"], second["digest"]);
  EXPECT_EQ(third["steps"][3]["explain"].get<std::string>().rfind("miss: file b.txt changed", 0),
            0u)
      << third["steps"][3]["explain"];
  EXPECT_EQ(ReadTestFile(Export("cache:test") / "ab"), "a1\nb2\n");

  nlohmann::json no_cache = BuildJson({"-t", "cache:test", "--no-cache"});
  EXPECT_EQ(cached(no_cache), (std::vector<bool>{false, false, false, false, false}));
  EXPECT_EQ(no_cache["digest"], third["digest"]);
}

// The layer steps' cached flags of a --format json build, in order.
std::vector<bool> LayerCached(const nlohmann::json& json) {
  std::vector<bool> out;
  for (const auto& step : json["steps"]) {
    if (step["layer"].get<bool>()) out.push_back(step["cached"].get<bool>());
  }
  return out;
}

TEST_F(BuildTest, MetadataStepsDoNotBreakTheCache) {
  constexpr std::string_view kRecipe = R"(args: { DIR: /srv }
from: { rootfs: base.tar }
steps:
  - run: echo one > /one
  - label: { org.example.a: b }
  - env: { X: "${DIR}" }
  - copy: { src: a.txt, dest: /a.txt }
  - workdir: ${DIR}
  - user: "0:0"
  - shell: [/bin/sh, -c]
  - copy: { src: b.txt, dest: /b.txt }
  - run: cat /a.txt /b.txt > ab && echo $X > x
)";
  WriteRecipe(kRecipe);
  WriteTestFile(context_ / "a.txt", "a1\n");
  WriteTestFile(context_ / "b.txt", "b1\n");
  // base, run, copy a, copy b, run
  nlohmann::json first = BuildJson({"-t", "meta:1"});
  EXPECT_EQ(LayerCached(first), (std::vector<bool>{false, false, false, false, false}));
  nlohmann::json second = BuildJson({"-t", "meta:1", "--explain"});
  EXPECT_EQ(LayerCached(second), (std::vector<bool>{true, true, true, true, true}))
      << second.dump(1);
  EXPECT_EQ(first["digest"], second["digest"]);
  for (const auto& step : second["steps"]) {
    if (!step["layer"].get<bool>() && step["step"].get<int>() > 0) {
      EXPECT_FALSE(step["cached"].get<bool>()) << step;
      EXPECT_EQ(step["explain"], "metadata only") << step;
    }
  }

  // One copied file before the metadata steps changes: it and every later
  // layer rebuild, across the metadata steps; earlier ones stay.
  WriteTestFile(context_ / "a.txt", "a2\n");
  nlohmann::json changed_a = BuildJson({"-t", "meta:1"});
  EXPECT_EQ(LayerCached(changed_a), (std::vector<bool>{true, true, false, false, false}));
  EXPECT_EQ(ReadTestFile(Export("meta:1") / "srv/ab"), "a2\nb1\n");
  // Back to the old content: every layer is in the cache again.
  WriteTestFile(context_ / "a.txt", "a1\n");
  nlohmann::json back = BuildJson({"-t", "meta:1"});
  EXPECT_EQ(LayerCached(back), (std::vector<bool>{true, true, true, true, true}));
  EXPECT_EQ(back["digest"], first["digest"]);
  // A file after the metadata steps: only its step and the last one.
  WriteTestFile(context_ / "b.txt", "b2\n");
  nlohmann::json changed_b = BuildJson({"-t", "meta:1"});
  EXPECT_EQ(LayerCached(changed_b), (std::vector<bool>{true, true, true, false, false}));
  // A metadata step's own value is part of what follows: an arg the env step
  // uses rebuilds every layer after that step.
  nlohmann::json other_dir = BuildJson({"-t", "meta:2", "--build-arg", "DIR=/opt"});
  EXPECT_EQ(LayerCached(other_dir), (std::vector<bool>{true, true, false, false, false}));
  EXPECT_EQ(ReadTestFile(Export("meta:2") / "opt/x"), "/opt\n");
}

// The summary's line for the step described as `description`.
std::string SummaryLine(const std::string& out, const std::string& description) {
  size_t summary = out.find("STEP   DESCRIPTION");
  if (summary == std::string::npos) return "";
  size_t at = out.find(" " + description, summary);
  if (at == std::string::npos) return "";
  size_t begin = out.rfind('\n', at) + 1;
  return out.substr(begin, out.find('\n', at) - begin);
}

TEST_F(BuildTest, SummarySaysCachedOnlyForLayersFromTheCache) {
  WriteRecipe(R"(from: scratch
steps:
  - copy: { src: base.tar, dest: /base.tar }
  - workdir: /app
  - env: { A: b }
)");
  CommandResult fresh = Build({(context_ / "recipe.yaml").string()});
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err << fresh.out;
  EXPECT_EQ(fresh.out.find("CACHED"), std::string::npos) << fresh.out;
  std::string workdir = SummaryLine(fresh.out, "WORKDIR /app");
  EXPECT_NE(workdir.find(" config "), std::string::npos) << fresh.out;
  EXPECT_NE(SummaryLine(fresh.out, "ENV A=b").find(" config "), std::string::npos) << fresh.out;
  EXPECT_NE(SummaryLine(fresh.out, "COPY base.tar").find(" built "), std::string::npos)
      << fresh.out;
  EXPECT_EQ(SummaryLine(fresh.out, "FROM scratch").find("CACHED"), std::string::npos) << fresh.out;

  CommandResult again = Build({(context_ / "recipe.yaml").string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(SummaryLine(again.out, "COPY base.tar").find(" CACHED "), std::string::npos)
      << again.out;
  EXPECT_NE(SummaryLine(again.out, "WORKDIR /app").find(" config "), std::string::npos)
      << again.out;
}

TEST_F(BuildTest, StageCopiesTakeGlobsInsideTheStage) {
  WriteRecipe(R"(stages:
  build:
    from: { rootfs: base.tar }
    steps:
      - run: >-
          mkdir -p /out/sub /out/skip && echo a > /out/a.txt && echo b > /out/b.txt &&
          echo c > /out/c.bin && echo hidden > /out/.h.txt && echo d > /out/sub/d.txt &&
          echo e > /out/skip/e.bin && ln -s /etc/passwd /out/link.txt
from: scratch
steps:
  - copy: { src: "/out/*.txt", dest: /txt/, from: build }
  - copy: { src: ["/out/*/d.txt", "/out/[s]ub"], dest: /deep/, from: build }
)");
  CommandResult result = Build({(context_ / "recipe.yaml").string(), "-t", "globs:1"});
  ASSERT_EQ(result.exit_code, 0) << result.err << result.out;
  fs::path tree = Export("globs:1");
  EXPECT_EQ(ReadTestFile(tree / "txt/a.txt"), "a\n");
  EXPECT_EQ(ReadTestFile(tree / "txt/b.txt"), "b\n");
  EXPECT_FALSE(fs::exists(tree / "txt/c.bin"));
  EXPECT_FALSE(fs::exists(tree / "txt/.h.txt"));  // * does not match a leading dot
  // The absolute symlink resolves inside the stage (its /etc/passwd, not the host's).
  EXPECT_EQ(ReadTestFile(tree / "txt/link.txt"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n");
  EXPECT_EQ(ReadTestFile(tree / "deep/d.txt"), "d\n");
  EXPECT_FALSE(fs::exists(tree / "deep/e.bin"));

  WriteRecipe(R"(stages:
  build:
    from: { rootfs: base.tar }
    steps:
      - run: mkdir /out
from: scratch
steps:
  - copy: { src: "/out/*.txt", dest: /txt/, from: build }
)");
  CommandResult none = Build({(context_ / "recipe.yaml").string()});
  EXPECT_EQ(none.exit_code, 125);
  EXPECT_NE(none.err.find("step 1 (COPY --from=build /out/*.txt /txt/, "), std::string::npos)
      << none.err;
  EXPECT_NE(none.err.find("\"/out/*.txt\" matches nothing in stage build"), std::string::npos)
      << none.err;
}

TEST_F(BuildTest, CacheMountPersistsAcrossBuildsAndStaysOutOfLayers) {
  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: echo run >> /var/cache/app/runs && wc -l < /var/cache/app/runs > /seen
    mounts:
      - { type: cache, target: /var/cache/app }
)");
  ASSERT_EQ(Build({(context_ / "recipe.yaml").string(), "-t", "cm:1"}).exit_code, 0);
  fs::path first = Export("cm:1");
  EXPECT_EQ(ReadTestFile(first / "seen"), "1\n");
  EXPECT_FALSE(fs::exists(first / "var/cache/app/runs"));
  CommandResult again = Build({(context_ / "recipe.yaml").string(), "-t", "cm:1", "--no-cache"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  fs::path second = Export("cm:1");
  EXPECT_EQ(ReadTestFile(second / "seen"), "2\n");  // the first build's file was there
  EXPECT_FALSE(fs::exists(second / "var/cache/app"));
}

TEST_F(BuildTest, BindMountIsReadOnlyFromTheContext) {
  WriteTestFile(context_ / "src/input", "from the context\n");
  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: >-
      cat /src/input > /copied &&
      if touch /src/new 2>/dev/null; then echo writable > /rw; else echo read-only > /rw; fi
    mounts:
      - { type: bind, source: src, target: /src }
)");
  CommandResult result = Build({(context_ / "recipe.yaml").string(), "-t", "bind:1"});
  ASSERT_EQ(result.exit_code, 0) << result.err << result.out;
  fs::path tree = Export("bind:1");
  EXPECT_EQ(ReadTestFile(tree / "copied"), "from the context\n");
  EXPECT_EQ(ReadTestFile(tree / "rw"), "read-only\n");
  EXPECT_FALSE(fs::exists(context_ / "src/new"));
  EXPECT_FALSE(fs::exists(tree / "src"));  // the mount point is not part of the layer

  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: "true"
    mounts:
      - { type: bind, source: ../outside, target: /x }
)");
  CommandResult outside = Build({(context_ / "recipe.yaml").string()});
  EXPECT_EQ(outside.exit_code, 125);
  EXPECT_NE(outside.err.find("recipe.yaml:5:"), std::string::npos) << outside.err;
}

TEST_F(BuildTest, MemoryLimitFailsAStepThatAllocatesMore) {
  // dd reads 96 MiB from /dev/zero into one buffer: every page is touched.
  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: dd if=/dev/zero of=/dev/null bs=96M count=1 && echo fits > /fits
    memory: 256m
  - run: dd if=/dev/zero of=/dev/null bs=96M count=1 && echo fits > /fits2
    memory: 32m
)");
  CommandResult result = Build({(context_ / "recipe.yaml").string()});
  EXPECT_EQ(result.exit_code, 125) << result.out;
  EXPECT_NE(result.err.find("step 2 (RUN dd if=/dev/zero"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("exit code 137"), std::string::npos) << result.err;
  // The first step, under a limit it fits in, was built and cached.
  EXPECT_NE(result.out.find("[1/2] done"), std::string::npos) << result.out;
}

// The step's cgroup is not visible inside it (a cgroup namespace and no
// cgroupfs), so the test finds it on the host while the step sleeps:
// <root>/imgtool/build-* with a CPU quota (v1 cpu.cfs_quota_us, v2 cpu.max).
std::string FindBuildCpuQuota() {
  for (const char* root : {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu",
                           "/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    std::error_code ec;
    fs::path parent = fs::path(root) / "imgtool";
    for (const auto& entry : fs::directory_iterator(parent, ec)) {
      if (!entry.path().filename().string().starts_with("build-")) continue;
      for (const char* file : {"cpu.cfs_quota_us", "cpu.max"}) {
        std::error_code exists;
        if (!fs::exists(entry.path() / file, exists)) continue;
        std::string quota = ReadTestFile(entry.path() / file);
        if (quota.starts_with("50000")) return quota;
      }
    }
  }
  return "";
}

TEST_F(BuildTest, CpusLimitSetsTheStepsCpuQuota) {
  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: sleep 3 && echo slept > /slept
    cpus: "0.5"
)");
  CommandResult result;
  std::thread build([&] { result = Build({(context_ / "recipe.yaml").string(), "-t", "cpus:1"}); });
  std::string quota;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (quota.empty() && std::chrono::steady_clock::now() < deadline) {
    quota = FindBuildCpuQuota();
    if (quota.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  build.join();
  ASSERT_EQ(result.exit_code, 0) << result.err << result.out;
  // 0.5 CPU = 50 ms of each 100 ms period.
  EXPECT_TRUE(quota == "50000\n" || quota == "50000 100000\n") << "quota: \"" << quota << "\"";
  EXPECT_EQ(ReadTestFile(Export("cpus:1") / "slept"), "slept\n");
}

// A TCP server on `address`:port that answers each of (at most) `count`
// connections with `reply` and stops; bounded in time.
class OneShotServer {
 public:
  OneShotServer(const std::string& address, std::string reply) : reply_(std::move(reply)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    if (::inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1) return;
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 60000) != 1) return;
      int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) return;
      (void)!::write(conn, reply_.data(), reply_.size());
      ::close(conn);
      accepted_ = true;
    });
  }
  ~OneShotServer() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  int port() const { return port_; }
  bool accepted() const { return accepted_; }

 private:
  std::string reply_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> accepted_{false};
  std::thread thread_;
};

TEST_F(BuildTest, BridgeNetworkStepReachesTheHostThroughTheBridge) {
  // The first bridge step shows its interface and route (and brings the
  // bridge up); the test then listens on the bridge's own address (the
  // step's gateway), which a second step reaches. No traffic leaves the host.
  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: ip -4 addr show eth0 > /addr && ip route > /route
    network: bridge
)");
  CommandResult first = Build({(context_ / "recipe.yaml").string(), "-t", "net:1"});
  ASSERT_EQ(first.exit_code, 0) << first.err << first.out;
  fs::path tree = Export("net:1");
  EXPECT_NE(ReadTestFile(tree / "addr").find("inet "), std::string::npos)
      << ReadTestFile(tree / "addr");
  std::string route = ReadTestFile(tree / "route");
  size_t via = route.find("default via ");
  ASSERT_NE(via, std::string::npos) << route;
  std::string gateway = route.substr(via + 12, route.find(' ', via + 12) - (via + 12));
  EXPECT_NE(route.find("dev eth0"), std::string::npos) << route;

  OneShotServer server(gateway, "hello over the bridge\n");
  ASSERT_NE(server.port(), 0) << "could not listen on " << gateway;
  WriteRecipe(R"(args: { GW: "", PORT: "" }
from: { rootfs: base.tar }
steps:
  - run: nc -w 10 "$GW" "$PORT" < /dev/null > /got
    network: bridge
)");
  CommandResult second =
      Build({(context_ / "recipe.yaml").string(), "-t", "net:2", "--build-arg", "GW=" + gateway,
             "--build-arg", "PORT=" + std::to_string(server.port())});
  ASSERT_EQ(second.exit_code, 0) << second.err << second.out;
  EXPECT_TRUE(server.accepted());
  EXPECT_EQ(ReadTestFile(Export("net:2") / "got"), "hello over the bridge\n");
}

TEST_F(BuildTest, HostNetworkStepSharesTheHostsLoopback) {
  // network: host keeps the host's network namespace: a server on the host's
  // loopback answers the step; with network: none the step has a loopback of
  // its own, where nothing listens.
  OneShotServer server("127.0.0.1", "hello over the host's loopback\n");
  ASSERT_NE(server.port(), 0);
  std::string port = "PORT=" + std::to_string(server.port());
  WriteRecipe(R"(args: { PORT: "" }
from: { rootfs: base.tar }
steps:
  - run: nc -w 10 127.0.0.1 "$PORT" < /dev/null > /got
    network: host
)");
  CommandResult host = Build({(context_ / "recipe.yaml").string(), "-t", "host:1", "--build-arg", port});
  ASSERT_EQ(host.exit_code, 0) << host.err << host.out;
  EXPECT_TRUE(server.accepted());
  EXPECT_EQ(ReadTestFile(Export("host:1") / "got"), "hello over the host's loopback\n");

  WriteRecipe(R"(args: { PORT: "" }
from: { rootfs: base.tar }
steps:
  - run: nc -w 2 127.0.0.1 "$PORT" < /dev/null > /got
    network: none
)");
  CommandResult none = Build({(context_ / "recipe.yaml").string(), "-t", "host:2", "--build-arg", port});
  EXPECT_NE(none.exit_code, 0) << none.err << none.out;
}

TEST_F(BuildTest, FailingStepTagsNothingAndKeepsEarlierSteps) {
  WriteRecipe(R"(name: localhost/fails:1
from: { rootfs: base.tar }
steps:
  - run: echo before > /before
  - run: echo doomed; exit 3
)");
  CommandResult result = Build({(context_ / "recipe.yaml").string()});
  EXPECT_EQ(result.exit_code, 125);
  EXPECT_NE(result.err.find("step 2 (RUN echo doomed; exit 3, "), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("exit code 3"), std::string::npos) << result.err;
  EXPECT_NE(result.out.find("[2/2] doomed"), std::string::npos) << result.out;
  EXPECT_EQ(RunImgtool(root_, {"images", "-q"}).out, "");

  WriteRecipe(R"(name: localhost/fails:1
from: { rootfs: base.tar }
steps:
  - run: echo before > /before
  - run: echo fixed > /fixed
)");
  nlohmann::json json = BuildJson({});
  ASSERT_TRUE(json.contains("steps"));
  EXPECT_TRUE(json["steps"][1]["cached"].get<bool>()) << json.dump();
  EXPECT_FALSE(json["steps"][2]["cached"].get<bool>()) << json.dump();
}

TEST_F(BuildTest, MultiStageBuildsOnlyWhatTheTargetNeeds) {
  WriteRecipe(R"(name: localhost/multi:1
stages:
  builder:
    from: { rootfs: base.tar }
    steps:
      - run: mkdir -p /out && echo artifact > /out/result && chmod 0700 /out/result
  unused:
    from: { rootfs: base.tar }
    steps:
      - run: exit 1
  tools:
    from: { stage: builder }
    steps:
      - run: echo tools > /out/tools
from: scratch
steps:
  - copy: { src: /out/result, dest: /result, from: builder }
  - copy: { src: /bin/busybox, dest: /bin/busybox, from: tools }
  - copy: { src: /out/, dest: /all/, from: tools }
)");
  CommandResult result = Build({(context_ / "recipe.yaml").string()});
  ASSERT_EQ(result.exit_code, 0) << result.err << result.out;
  fs::path tree = Export("localhost/multi:1");
  EXPECT_EQ(ReadTestFile(tree / "result"), "artifact\n");
  EXPECT_EQ(ReadTestFile(tree / "all/tools"), "tools\n");
  struct stat st {};
  ASSERT_EQ(::lstat((tree / "result").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);  // a stage's metadata is kept
  EXPECT_FALSE(fs::exists(tree / "bin/sh"));

  CommandResult target =
      Build({(context_ / "recipe.yaml").string(), "--target", "tools", "-t", "localhost/tools:1"});
  ASSERT_EQ(target.exit_code, 0) << target.err;
  EXPECT_EQ(ReadTestFile(Export("localhost/tools:1") / "out/tools"), "tools\n");
  CommandResult missing = Build({(context_ / "recipe.yaml").string(), "--target", "nope"});
  EXPECT_EQ(missing.exit_code, 125);
  EXPECT_NE(missing.err.find("--target nope"), std::string::npos) << missing.err;
}

TEST_F(BuildTest, SameDigestInTwoStoresOtherDigestWithAnotherEpoch) {
  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: echo hi > /hi && mkdir -p /var/log/apt && date > /var/log/dpkg.log && date > /etc/machine-id
  - copy: { src: a.txt, dest: /a.txt }
)");
  WriteTestFile(context_ / "a.txt", "a\n");
  fs::path recipe = context_ / "recipe.yaml";
  fs::path digest_a = dir_->path() / "a.digest";
  fs::path digest_b = dir_->path() / "b.digest";
  fs::path digest_c = dir_->path() / "c.digest";
  ASSERT_EQ(Build({recipe.string(), "--digest-file", digest_a.string()}).exit_code, 0);
  ::sleep(1);
  CommandResult second =
      Build({recipe.string(), "--digest-file", digest_b.string()}, dir_->path() / "root2");
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(ReadTestFile(digest_a), ReadTestFile(digest_b));
  EXPECT_EQ(ReadTestFile(digest_a).rfind("sha256:", 0), 0u);
  ASSERT_EQ(Build({recipe.string(), "--source-date-epoch", "1700000000", "--digest-file",
                   digest_c.string()})
                .exit_code,
            0);
  EXPECT_NE(ReadTestFile(digest_a), ReadTestFile(digest_c));

  CommandResult verify = Build({recipe.string(), "--verify-reproducible"});
  EXPECT_EQ(verify.exit_code, 0) << verify.err << verify.out;
  EXPECT_NE(verify.out.find("reproducible: both builds gave"), std::string::npos) << verify.out;
}

TEST_F(BuildTest, VerifyReproducibleNamesDifferingFiles) {
  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: cat /proc/sys/kernel/random/uuid > /random
)");
  CommandResult verify = Build({(context_ / "recipe.yaml").string(), "--verify-reproducible"});
  EXPECT_EQ(verify.exit_code, 1) << verify.err << verify.out;
  EXPECT_NE(verify.out.find("layer 2: random: content"), std::string::npos) << verify.out;

  // Mode and owner: the step depends on its cache mount, which the first
  // build (without cache, so the step runs) finds filled by an earlier build
  // and the second (a store of its own) finds empty.
  WriteRecipe(R"(from: { rootfs: base.tar }
steps:
  - run: >-
      if [ -e /c/seen ]; then echo warm > /f && chmod 600 /f && chown 1000:1000 /f;
      else echo cold > /f; fi; touch /c/seen
    mounts: [{ type: cache, target: /c }]
)");
  ASSERT_EQ(Build({(context_ / "recipe.yaml").string()}).exit_code, 0);
  CommandResult modes =
      Build({(context_ / "recipe.yaml").string(), "--verify-reproducible", "--no-cache"});
  EXPECT_EQ(modes.exit_code, 1) << modes.err << modes.out;
  EXPECT_NE(modes.out.find("NOT reproducible: sha256:"), std::string::npos) << modes.out;
  EXPECT_NE(modes.out.find("layer 2: f: content, mode 0600 vs 0644, owner 1000:1000 vs 0:0"),
            std::string::npos)
      << modes.out;
}

TEST_F(BuildTest, OutputsLoadInSkopeoAndPodman) {
  IMGTOOL_REQUIRE_COMMAND("skopeo");
  WriteRecipe(R"(name: localhost/out:1
from: { rootfs: base.tar }
steps:
  - run: echo from-imgtool > /greeting
config:
  cmd: [/bin/cat, /greeting]
)");
  fs::path oci = dir_->path() / "oci.tar";
  fs::path docker = dir_->path() / "docker.tar";
  fs::path layout = dir_->path() / "layout";
  fs::path rootfs = dir_->path() / "rootfs.tar";
  fs::path iid = dir_->path() / "iid";
  fs::path digest = dir_->path() / "digest";
  CommandResult result =
      Build({(context_ / "recipe.yaml").string(), "--output", "oci-archive=" + oci.string(),
             "--output", "docker-archive=" + docker.string(), "--output",
             "oci-dir=" + layout.string(), "--output", "rootfs.tar=" + rootfs.string(), "--iidfile",
             iid.string(), "--digest-file", digest.string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  // --iidfile holds the config digest, --digest-file the manifest's.
  std::string id = ReadTestFile(iid);
  nlohmann::json image = Inspect("localhost/out:1");
  EXPECT_EQ(image.value("Id", ""), id);
  EXPECT_EQ(image.value("Digest", ""), ReadTestFile(digest));
  CommandResult layout_inspect = RunCommand({"skopeo", "inspect", "oci:" + layout.string()});
  ASSERT_EQ(layout_inspect.exit_code, 0) << layout_inspect.err;
  EXPECT_EQ(nlohmann::json::parse(layout_inspect.out).value("Digest", ""), ReadTestFile(digest));
  for (const std::string& ref : {"oci-archive:" + oci.string(), "docker-archive:" + docker.string(),
                                 "oci:" + layout.string()}) {
    CommandResult inspect = RunCommand({"skopeo", "inspect", "--config", ref});
    EXPECT_EQ(inspect.exit_code, 0) << ref << ": " << inspect.err;
    EXPECT_NE(inspect.out.find("/greeting"), std::string::npos) << inspect.out;
  }
  CommandResult list = RunCommand({"tar", "-tf", rootfs.string()});
  EXPECT_NE(list.out.find("greeting"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("bin/busybox"), std::string::npos) << list.out;

  if (!HaveCommand("podman") || !HaveCommand("runc")) return;
  fs::path podman = dir_->path() / "podman";
  std::vector<std::string> base = {"podman",
                                   "--root",
                                   (podman / "root").string(),
                                   "--runroot",
                                   (podman / "run").string(),
                                   "--storage-driver",
                                   "vfs",
                                   "--runtime",
                                   "runc",
                                   "--cgroup-manager",
                                   "cgroupfs",
                                   "--events-backend",
                                   "none"};
  auto podman_cmd = [&](std::vector<std::string> args) {
    std::vector<std::string> all = base;
    all.insert(all.end(), args.begin(), args.end());
    return RunCommand(all);
  };
  CommandResult load = podman_cmd({"load", "-i", docker.string()});
  ASSERT_EQ(load.exit_code, 0) << load.err;
  CommandResult run = podman_cmd({"run", "--rm", "--net", "none", "--ulimit", "nofile=20000:20000",
                                  "--ulimit", "nproc=32768:32768", "localhost/out:1"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "from-imgtool\n");
  CommandResult oci_load = podman_cmd({"load", "-i", oci.string()});
  EXPECT_EQ(oci_load.exit_code, 0) << oci_load.err;
}

TEST_F(BuildTest, ImageBaseFromTheStoreAndMissingImage) {
  ASSERT_EQ(
      RunImgtool(root_, {"import", (context_ / "base.tar").string(), "localhost/base:1"}).exit_code,
      0);
  WriteRecipe("from: { image: localhost/base:1 }\nsteps:\n  - run: echo on-image > /x\n");
  CommandResult result = Build({(context_ / "recipe.yaml").string(), "-t", "on:image"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  fs::path tree = Export("on:image");
  EXPECT_EQ(ReadTestFile(tree / "x"), "on-image\n");
  EXPECT_TRUE(fs::exists(tree / "bin/busybox"));

  // Not in the store: pulled, and here the registry does not answer.
  WriteRecipe("from: { image: \"localhost:1/missing:1\" }\n");
  CommandResult missing = Build({(context_ / "recipe.yaml").string()});
  EXPECT_EQ(missing.exit_code, 125);
  EXPECT_NE(missing.err.find("imgtool: error: from ("), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("pull localhost:1/missing:1"), std::string::npos) << missing.err;
}

TEST_F(BuildTest, LogFileAndSummary) {
  WriteRecipe("from: { rootfs: base.tar }\nsteps:\n  - run: echo logged-line\n");
  fs::path log = dir_->path() / "build.log";
  CommandResult result = Build({(context_ / "recipe.yaml").string(), "--log-file", log.string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::string text = ReadTestFile(log);
  EXPECT_NE(text.find("[1/1] logged-line"), std::string::npos) << text;
  EXPECT_NE(text.find("STEP"), std::string::npos) << text;
  EXPECT_NE(text.find("RUN echo logged-line"), std::string::npos) << text;
}

}  // namespace
}  // namespace imgtool::testing
