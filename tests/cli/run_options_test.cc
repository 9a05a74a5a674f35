#include "cli/run_options.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstring>

namespace imgtool::cli {
namespace {

const char* FakeEnv(const char* key) {
  if (std::strcmp(key, "HOST_VAR") == 0) return "from-host";
  return nullptr;
}

TEST(RunOptionsTest, ByteSizes) {
  EXPECT_EQ(ParseByteSize("64m").value(), 64 << 20);
  EXPECT_EQ(ParseByteSize("64MB").value(), 64 << 20);
  EXPECT_EQ(ParseByteSize("1g").value(), int64_t{1} << 30);
  EXPECT_EQ(ParseByteSize("512k").value(), 512 << 10);
  EXPECT_EQ(ParseByteSize("100b").value(), 100);
  EXPECT_EQ(ParseByteSize("1048576").value(), 1048576);
  EXPECT_EQ(ParseByteSize("1.5m").value(), 3 << 19);
  EXPECT_EQ(ParseByteSize(".5k").value(), 512);
  EXPECT_EQ(ParseByteSize("2.k").value(), 2048);
  EXPECT_EQ(ParseByteSize("1e3").value(), 1000);
  EXPECT_EQ(ParseByteSize("1E+1k").value(), 10 << 10);
  // Only what std::from_chars reads as a decimal number: no sign, spaces,
  // hex, inf or nan, which strtod alone would take.
  for (const char* bad : {"", "m", "-1m", "0", "12x", "1e400", "abc", " 1m", "+1m", "0x10", "inf",
                          "nan", "1.2.3", "1e", "1e+", ".", "-", "1e-400"}) {
    EXPECT_FALSE(ParseByteSize(bad).has_value()) << bad;
  }
}

TEST(RunOptionsTest, UlimitsLaterOneForALimitWins) {
  auto limits = ParseUlimits({"nofile=10:20", "core=0", "nofile=30"});
  ASSERT_TRUE(limits) << limits.error().ToString();
  EXPECT_EQ(*limits,
            (std::vector<runner::ResourceLimit>{{RLIMIT_CORE, 0, 0}, {RLIMIT_NOFILE, 30, 30}}));
  EXPECT_FALSE(ParseUlimits({"core=0", "nofile=2:1"}));
  RunFlags flags;
  flags.ulimits = {"nproc=100:200"};
  auto spec = BuildContainerSpec(flags, runner::ProcessSpec{});
  ASSERT_TRUE(spec) << spec.error().ToString();
  EXPECT_EQ(spec->process.rlimits, (std::vector<runner::ResourceLimit>{{RLIMIT_NPROC, 100, 200}}));
}

TEST(RunOptionsTest, Signals) {
  EXPECT_EQ(ParseSignal("KILL").value(), SIGKILL);
  EXPECT_EQ(ParseSignal("sigterm").value(), SIGTERM);
  EXPECT_EQ(ParseSignal("USR1").value(), SIGUSR1);
  EXPECT_EQ(ParseSignal("9").value(), 9);
  EXPECT_FALSE(ParseSignal("NOPE").has_value());
  EXPECT_FALSE(ParseSignal("0").has_value());
  EXPECT_FALSE(ParseSignal("").has_value());
}

TEST(RunOptionsTest, Volumes) {
  auto v = ParseVolume("/host/dir:/ctr/dir:ro");
  ASSERT_TRUE(v.has_value()) << v.error().ToString();
  EXPECT_EQ(v->source, "/host/dir");
  EXPECT_EQ(v->destination, "/ctr/dir");
  EXPECT_TRUE(v->read_only);
  EXPECT_FALSE(ParseVolume("/a:/b").value().read_only);
  EXPECT_FALSE(ParseVolume("/a:/b:rw").value().read_only);
  EXPECT_FALSE(ParseVolume("/a").has_value());
  EXPECT_FALSE(ParseVolume("name:/b").has_value());
  EXPECT_FALSE(ParseVolume("/a:b").has_value());
  EXPECT_FALSE(ParseVolume("/a:/b:rx").has_value());
}

TEST(RunOptionsTest, Tmpfs) {
  auto t = ParseTmpfs("/run:size=1m,mode=0700");
  ASSERT_TRUE(t.has_value()) << t.error().ToString();
  EXPECT_EQ(t->destination, "/run");
  EXPECT_EQ(t->options, "size=1m,mode=0700");
  EXPECT_FALSE(ParseTmpfs("/").has_value());
  EXPECT_FALSE(ParseTmpfs("run").has_value());
}

TEST(RunOptionsTest, EnvFile) {
  auto env = ParseEnvFile("# comment\n\nA=1\r\n  B=two words\nHOST_VAR\nUNSET_VAR\n", FakeEnv);
  EXPECT_EQ(env, (std::vector<std::string>{"A=1", "B=two words", "HOST_VAR=from-host"}));
}

TEST(RunOptionsTest, ContainerNames) {
  EXPECT_TRUE(ValidateContainerName("web-1.a_b").has_value());
  EXPECT_FALSE(ValidateContainerName("").has_value());
  EXPECT_FALSE(ValidateContainerName("-web").has_value());
  EXPECT_FALSE(ValidateContainerName("a/b").has_value());
  EXPECT_FALSE(ValidateContainerName(std::string(65, 'a')).has_value());
}

store::ContainerConfig ImageConfig() {
  store::ContainerConfig config;
  config.entrypoint = {"/entry"};
  config.cmd = {"default", "args"};
  config.env = {"PATH=/bin", "A=image"};
  config.working_dir = "/app";
  config.user = "app";
  return config;
}

TEST(RunOptionsTest, MergeKeepsTheImagesConfig) {
  RunFlags flags;
  auto p = MergeProcess(ImageConfig(), flags, {}, FakeEnv);
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  EXPECT_EQ(p->args, (std::vector<std::string>{"/entry", "default", "args"}));
  EXPECT_EQ(p->env, (std::vector<std::string>{"PATH=/bin", "A=image"}));
  EXPECT_EQ(p->cwd, "/app");
  EXPECT_EQ(p->user, "app");
  EXPECT_FALSE(p->terminal);
}

TEST(RunOptionsTest, MergeOverridesTheDockerWay) {
  RunFlags flags;
  flags.command = {"mine"};
  flags.env = {"A=flag", "B=new", "HOST_VAR", "UNSET_VAR"};
  flags.workdir = "/work";
  flags.user = "0:0";
  flags.tty = true;
  auto p = MergeProcess(ImageConfig(), flags, {"A=file", "C=file"}, FakeEnv);
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  EXPECT_EQ(p->args, (std::vector<std::string>{"/entry", "mine"}));
  EXPECT_EQ(p->env, (std::vector<std::string>{"PATH=/bin", "A=flag", "C=file", "B=new",
                                              "HOST_VAR=from-host"}));
  EXPECT_EQ(p->cwd, "/work");
  EXPECT_EQ(p->user, "0:0");
  EXPECT_TRUE(p->terminal);

  // --entrypoint drops the image's Cmd; "" clears the entrypoint.
  RunFlags entry;
  entry.entrypoint = "/other";
  EXPECT_EQ(MergeProcess(ImageConfig(), entry, {}, FakeEnv)->args,
            (std::vector<std::string>{"/other"}));
  entry.entrypoint = "";
  entry.command = {"sh", "-c", "x"};
  EXPECT_EQ(MergeProcess(ImageConfig(), entry, {}, FakeEnv)->args,
            (std::vector<std::string>{"sh", "-c", "x"}));
  // -u "" is root even when the image names a user.
  RunFlags root;
  root.user = "";
  EXPECT_EQ(MergeProcess(ImageConfig(), root, {}, FakeEnv)->user, "");
}

TEST(RunOptionsTest, MergeNeedsACommand) {
  RunFlags flags;
  flags.image = "empty";
  auto p = MergeProcess(store::ContainerConfig{}, flags, {}, FakeEnv);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().message().find("no command"), std::string::npos);
  flags.workdir = "relative";
  flags.command = {"true"};
  EXPECT_FALSE(MergeProcess(store::ContainerConfig{}, flags, {}, FakeEnv).has_value());
}

TEST(RunOptionsTest, ContainerSpecFromFlags) {
  RunFlags flags;
  flags.memory = "64m";
  flags.memory_swap = "128m";
  flags.cpus = "0.5";
  flags.cpu_shares = 512;
  flags.cpuset_cpus = "0";
  flags.pids_limit = 100;
  flags.network = "bridge";
  flags.publish = {"127.0.0.1:8080:80/udp"};
  flags.volumes = {"/a:/b:ro"};
  flags.tmpfs = {"/run"};
  flags.cap_add = {"NET_ADMIN"};
  flags.security_opts = {"seccomp=unconfined", "no-new-privileges=false"};
  flags.userns = "auto";
  flags.add_hosts = {"db:10.0.0.5"};
  flags.read_only = true;
  flags.init = true;
  flags.hostname = "h";
  auto spec = BuildContainerSpec(flags, runner::ProcessSpec{});
  ASSERT_TRUE(spec.has_value()) << spec.error().ToString();
  EXPECT_EQ(*spec->resources.memory_bytes, 64 << 20);
  EXPECT_EQ(*spec->resources.memory_swap_bytes, 128 << 20);
  EXPECT_DOUBLE_EQ(*spec->resources.cpus, 0.5);
  EXPECT_EQ(*spec->resources.cpu_shares, 512u);
  EXPECT_EQ(*spec->resources.cpuset_cpus, "0");
  EXPECT_EQ(*spec->resources.pids_limit, 100);
  EXPECT_EQ(spec->network.mode, runner::NetworkMode::kBridge);
  ASSERT_EQ(spec->network.ports.size(), 1u);
  EXPECT_EQ(spec->network.ports[0].host_port, 8080);
  EXPECT_EQ(spec->volumes.size(), 1u);
  EXPECT_EQ(spec->tmpfs.size(), 1u);
  EXPECT_EQ(spec->security.seccomp, runner::SeccompMode::kUnconfined);
  EXPECT_FALSE(spec->security.no_new_privileges);
  EXPECT_EQ(spec->userns, runner::UserNamespaceMode::kAuto);
  EXPECT_EQ(spec->extra_hosts, (std::vector<std::string>{"db:10.0.0.5"}));
  EXPECT_TRUE(spec->read_only_rootfs);
  EXPECT_TRUE(spec->init);
  EXPECT_EQ(spec->hostname, "h");
}

TEST(RunOptionsTest, UsernsFlagAsPodmanTakesIt) {
  for (const char* host : {"", "host"}) {
    Result<UsernsFlag> flag = ParseUsernsFlag(host);
    ASSERT_TRUE(flag.has_value()) << flag.error().ToString();
    EXPECT_EQ(flag->mode, runner::UserNamespaceMode::kHost);
  }
  Result<UsernsFlag> flag = ParseUsernsFlag("auto");
  ASSERT_TRUE(flag.has_value()) << flag.error().ToString();
  EXPECT_EQ(flag->mode, runner::UserNamespaceMode::kAuto);
  EXPECT_FALSE(flag->size.has_value());
  flag = ParseUsernsFlag("auto:size=8192");
  ASSERT_TRUE(flag.has_value()) << flag.error().ToString();
  EXPECT_EQ(flag->size, 8192u);
  flag = ParseUsernsFlag(
      "auto:uidmapping=0:1000:1,size=2000,gidmapping=0:2000:1,uidmapping=500:3000:10");
  ASSERT_TRUE(flag.has_value()) << flag.error().ToString();
  EXPECT_EQ(flag->size, 2000u);
  EXPECT_EQ(flag->extra_uids, (std::vector<runner::IdMap>{{0, 1000, 1}, {500, 3000, 10}}));
  EXPECT_EQ(flag->extra_gids, (std::vector<runner::IdMap>{{0, 2000, 1}}));
}

TEST(RunOptionsTest, BadUsernsFlagsSayWhatIsWrong) {
  auto error = [](const char* text) {
    Result<UsernsFlag> flag = ParseUsernsFlag(text);
    return flag ? std::string() : flag.error().message();
  };
  EXPECT_EQ(error("keep-id"), "--userns \"keep-id\": want auto[:OPTIONS] or host");
  EXPECT_EQ(error("automatic"), "--userns \"automatic\": want auto[:OPTIONS] or host");
  EXPECT_EQ(error("auto:size=0"), "--userns \"auto:size=0\": size=0: want 1 to 4294967295");
  EXPECT_EQ(error("auto:size=lots"),
            "--userns \"auto:size=lots\": size=lots: want 1 to 4294967295");
  EXPECT_EQ(error("auto:size=4294967296"),
            "--userns \"auto:size=4294967296\": size=4294967296: want 1 to 4294967295");
  EXPECT_EQ(error("auto:"),
            "--userns \"auto:\": unknown option \"\" (want size=, "
            "uidmapping= or gidmapping=)");
  EXPECT_EQ(error("auto:nomap"),
            "--userns \"auto:nomap\": unknown option \"nomap\" (want "
            "size=, uidmapping= or gidmapping=)");
  EXPECT_EQ(error("auto:uidmapping=0:1"),
            "--userns \"auto:uidmapping=0:1\": uidmapping=0:1: want CONTAINER:HOST:SIZE");
  EXPECT_EQ(error("auto:gidmapping=0:1:2:3"),
            "--userns \"auto:gidmapping=0:1:2:3\": gidmapping=0:1:2:3: want CONTAINER:HOST:SIZE");
  EXPECT_EQ(error("auto:uidmapping=0:1:0"),
            "--userns \"auto:uidmapping=0:1:0\": uidmapping 0:1:0: size 0");
  EXPECT_EQ(error("auto:uidmapping=0:1:10,uidmapping=5:100:1"),
            "--userns \"auto:uidmapping=0:1:10,uidmapping=5:100:1\": uidmapping 5:100:1 "
            "overlaps 0:1:10");
  // A bad flag fails the spec too.
  RunFlags flags;
  flags.userns = "auto:size=0";
  EXPECT_FALSE(BuildContainerSpec(flags, runner::ProcessSpec{}).has_value());
}

TEST(RunOptionsTest, ContainerSpecRefusesBadFlags) {
  auto fails = [](auto edit) {
    RunFlags flags;
    edit(flags);
    return !BuildContainerSpec(flags, runner::ProcessSpec{}).has_value();
  };
  EXPECT_TRUE(fails([](RunFlags& f) { f.memory = "lots"; }));
  EXPECT_TRUE(fails([](RunFlags& f) { f.memory_swap = "1g"; }));  // without -m
  EXPECT_TRUE(fails([](RunFlags& f) {
    f.memory = "1g";
    f.memory_swap = "512m";
  }));
  EXPECT_TRUE(fails([](RunFlags& f) { f.cpus = "-1"; }));
  EXPECT_TRUE(fails([](RunFlags& f) { f.cpus = "0x1"; }));
  EXPECT_TRUE(fails([](RunFlags& f) { f.cpus = " 1"; }));
  EXPECT_TRUE(fails([](RunFlags& f) { f.cpus = "infinity"; }));
  EXPECT_TRUE(fails([](RunFlags& f) { f.cpu_shares = 1; }));
  EXPECT_TRUE(fails([](RunFlags& f) { f.network = "weird"; }));
  EXPECT_TRUE(fails([](RunFlags& f) {
    f.network = "none";
    f.publish = {"80:80"};
  }));
  EXPECT_TRUE(fails([](RunFlags& f) { f.userns = "keep-id"; }));
  EXPECT_TRUE(fails([](RunFlags& f) { f.security_opts = {"apparmor=x"}; }));
  EXPECT_TRUE(fails([](RunFlags& f) { f.add_hosts = {"nocolon"}; }));
  EXPECT_FALSE(fails([](RunFlags& f) {
    f.memory = "1g";
    f.memory_swap = "-1";
  }));
}

}  // namespace
}  // namespace imgtool::cli
