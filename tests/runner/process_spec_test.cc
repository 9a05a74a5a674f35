#include "runner/process_spec.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

namespace imgtool::runner {
namespace {

TEST(ProcessSpecTest, UlimitsAsDockerWritesThem) {
  EXPECT_EQ(ParseUlimit("nofile=1024:2048").value(), (ResourceLimit{RLIMIT_NOFILE, 1024, 2048}));
  EXPECT_EQ(ParseUlimit("nofile=1024").value(), (ResourceLimit{RLIMIT_NOFILE, 1024, 1024}));
  EXPECT_EQ(ParseUlimit("core=unlimited").value(),
            (ResourceLimit{RLIMIT_CORE, RLIM_INFINITY, RLIM_INFINITY}));
  EXPECT_EQ(ParseUlimit("memlock=-1:-1").value(),
            (ResourceLimit{RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY}));
  EXPECT_EQ(ParseUlimit("stack=8192:unlimited").value(),
            (ResourceLimit{RLIMIT_STACK, 8192, RLIM_INFINITY}));
  EXPECT_EQ(ParseUlimit("as=0").value(), (ResourceLimit{RLIMIT_AS, 0, 0}));
  for (const char* bad : {"", "nofile", "nofile=", "nofile=:5", "nofile=5:", "nofile=2:1",
                          "nofile=unlimited:5", "nofile=-2", "nofile=1k", "nofile=1:2:3",
                          "files=10", "NOFILE=10", "nofile=99999999999999999999"}) {
    auto parsed = ParseUlimit(bad);
    ASSERT_FALSE(parsed.has_value()) << bad;
    EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(parsed.error().message().find("--ulimit"), std::string::npos);
  }
  for (const char* name :
       {"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
        "rss", "rtprio", "rttime", "sigpending", "stack", "as"}) {
    auto parsed = ParseUlimit(std::string(name) + "=1");
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_STREQ(UlimitName(parsed->resource), name);
  }
}

TEST(ProcessSpecTest, EnvLookupAndSet) {
  std::vector<std::string> env = {"A=1", "AB=2", "EMPTY="};
  EXPECT_EQ(LookupEnv(env, "A"), "1");
  EXPECT_EQ(LookupEnv(env, "AB"), "2");
  EXPECT_EQ(LookupEnv(env, "EMPTY"), "");
  EXPECT_EQ(LookupEnv(env, "B"), std::nullopt);
  SetEnv(&env, "A", "3");
  SetEnv(&env, "C", "x=y");
  EXPECT_EQ(env, (std::vector<std::string>{"A=3", "AB=2", "EMPTY=", "C=x=y"}));
}

TEST(ProcessSpecTest, DefaultsFillOnlyWhatIsMissing) {
  std::vector<std::string> env = EnvWithDefaults({"HOME=/mine"}, "box", "/root", true);
  EXPECT_EQ(LookupEnv(env, "HOME"), "/mine");
  EXPECT_EQ(LookupEnv(env, "PATH"), std::string(kDefaultPath));
  EXPECT_EQ(LookupEnv(env, "HOSTNAME"), "box");
  EXPECT_EQ(LookupEnv(env, "TERM"), "xterm");
  env = EnvWithDefaults({"PATH=/x"}, "", "", false);
  EXPECT_EQ(LookupEnv(env, "PATH"), "/x");
  EXPECT_EQ(LookupEnv(env, "HOME"), "/");
  EXPECT_EQ(LookupEnv(env, "TERM"), std::nullopt);
  EXPECT_EQ(LookupEnv(env, "HOSTNAME"), std::nullopt);
}

TEST(ProcessSpecTest, ContainerIds) {
  for (const char* good : {"a", "web-1", "A_b.c", "0123456789abcdef"}) {
    EXPECT_TRUE(ValidateContainerId(good).has_value()) << good;
  }
  for (const char* bad : {"", ".", "..", ".hidden", "-x", "a/b", "a b", "a:b"}) {
    EXPECT_FALSE(ValidateContainerId(bad).has_value()) << bad;
  }
  EXPECT_FALSE(ValidateContainerId(std::string(65, 'a')).has_value());
}

TEST(ProcessSpecTest, SpecValidationNamesTheProblem) {
  ContainerSpec spec;
  spec.id = "c1";
  spec.rootfs_dir = "/rootfs";
  spec.process.args = {"/bin/true"};
  EXPECT_TRUE(ValidateContainerSpec(spec).has_value());

  ContainerSpec no_command = spec;
  no_command.process.args.clear();
  EXPECT_NE(ValidateContainerSpec(no_command).error().message().find("no command"),
            std::string::npos);
  ContainerSpec relative_root = spec;
  relative_root.rootfs_dir = "rootfs";
  EXPECT_FALSE(ValidateContainerSpec(relative_root).has_value());
  ContainerSpec bad_env = spec;
  bad_env.process.env = {"NOEQUALS"};
  EXPECT_NE(ValidateContainerSpec(bad_env).error().message().find("NOEQUALS"), std::string::npos);
  ContainerSpec bad_cwd = spec;
  bad_cwd.process.cwd = "relative";
  EXPECT_FALSE(ValidateContainerSpec(bad_cwd).has_value());
  ContainerSpec bad_volume = spec;
  bad_volume.volumes = {{"relative", "/data", false}};
  EXPECT_NE(ValidateContainerSpec(bad_volume).error().message().find("relative:/data"),
            std::string::npos);
  bad_volume.volumes = {{"/host", "/", false}};
  EXPECT_FALSE(ValidateContainerSpec(bad_volume).has_value());
  ContainerSpec bad_tmpfs = spec;
  bad_tmpfs.tmpfs = {{"/", ""}};
  EXPECT_FALSE(ValidateContainerSpec(bad_tmpfs).has_value());
}

}  // namespace
}  // namespace imgtool::runner
