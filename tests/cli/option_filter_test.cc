#include "cli/option_filter.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/cli/cli_fixture.h"

namespace imgtool::cli {
namespace {

OptionFilter Filter(std::vector<const char*> args) {
  args.insert(args.begin(), "imgtool");
  return OptionFilter::FromArgs(static_cast<int>(args.size()), args.data());
}

TEST(OptionFilterTest, AllWantsEveryOption) {
  OptionFilter all = OptionFilter::All();
  EXPECT_TRUE(all.Wants("--rm"));
  EXPECT_TRUE(all.Wants("-e,--env"));
}

TEST(OptionFilterTest, LongNamesWithAndWithoutValue) {
  OptionFilter filter = Filter({"run", "--rm", "--net=none", "--pull", "never", "img"});
  EXPECT_TRUE(filter.Wants("--rm"));
  EXPECT_TRUE(filter.Wants("--net,--network"));
  EXPECT_TRUE(filter.Wants("--pull"));
  EXPECT_FALSE(filter.Wants("--name"));
  EXPECT_FALSE(filter.Wants("-e,--env"));
  // A long name is whole: --net is not --network, nor --ne.
  EXPECT_FALSE(filter.Wants("--network"));
  EXPECT_FALSE(filter.Wants("--ne"));
}

TEST(OptionFilterTest, ShortLettersAloneClusteredAndWithValue) {
  OptionFilter filter = Filter({"run", "-it", "-eA=1", "-m", "64m", "img"});
  EXPECT_TRUE(filter.Wants("-i,--interactive"));
  EXPECT_TRUE(filter.Wants("-t,--tty"));
  EXPECT_TRUE(filter.Wants("-e,--env"));
  EXPECT_TRUE(filter.Wants("-m,--memory"));
  EXPECT_FALSE(filter.Wants("-d,--detach"));
  EXPECT_FALSE(filter.Wants("-v,--volume"));
  // Words without a dash (values, the image) name nothing.
  EXPECT_FALSE(filter.Wants("-g"));
}

TEST(OptionFilterTest, HelpWantsEveryOption) {
  OptionFilter filter = Filter({"run", "--help"});
  EXPECT_TRUE(filter.Wants("--cpuset-cpus"));
  EXPECT_TRUE(filter.Wants("-p,--publish"));
}

TEST(OptionFilterTest, UnknownSpellingIsWantedToBeSafe) {
  OptionFilter filter = Filter({"run", "img"});
  EXPECT_TRUE(filter.Wants("positional"));
  EXPECT_FALSE(filter.Wants("--rm"));
}

using RunOptionsCliTest = testing::CliTest;

// Each of run's options, named alone, is taken: the run gets as far as the
// image (not in the store), never to "unknown flag".
TEST_F(RunOptionsCliTest, EveryRunOptionIsTakenWhenNamedAlone) {
  const std::vector<std::vector<std::string>> options = {
      {"--rm"},
      {"-i"},
      {"--interactive"},
      {"-t"},
      {"--tty"},
      {"-d"},
      {"--detach"},
      {"--name", "web"},
      {"-e", "A=1"},
      {"--env=A=1"},
      {"-eA=1"},
      {"--env-file", "/dev/null"},
      {"-v", "/tmp:/mnt"},
      {"--volume", "/tmp:/mnt:ro"},
      {"--tmpfs", "/run"},
      {"-w", "/tmp"},
      {"--workdir", "/tmp"},
      {"-u", "1:1"},
      {"--user", "1"},
      {"--entrypoint", "/bin/sh"},
      {"--net", "none"},
      {"--network=host"},
      {"-p", "8080:80"},
      {"--publish", "127.0.0.1:8080:80/udp"},
      {"-m", "64m"},
      {"--memory", "64m"},
      {"--memory", "64m", "--memory-swap", "-1"},
      {"--cpus", "0.5"},
      {"--cpu-shares", "512"},
      {"--cpuset-cpus", "0"},
      {"--pids-limit", "10"},
      {"-h", "box"},
      {"--hostname", "box"},
      {"--read-only"},
      {"--cap-add", "NET_ADMIN"},
      {"--cap-drop", "ALL"},
      {"--privileged"},
      {"--security-opt", "no-new-privileges"},
      {"--userns", "host"},
      {"--init"},
      {"--add-host", "db:10.0.0.2"},
      {"--ulimit", "nofile=10:20"},
      {"-it"},
  };
  for (const std::vector<std::string>& option : options) {
    std::vector<std::string> args = {"run", "--pull", "never"};
    args.insert(args.end(), option.begin(), option.end());
    args.insert(args.end(), {"no-such-image", "true"});
    ::imgtool::testing::CommandResult r = Imgtool(args);
    ExpectError(r, "\"no-such-image\" not found");
    EXPECT_EQ(r.err.find("unknown flag"), std::string::npos) << option[0];
  }
}

// The options that are added get their values: a bad --pull is refused by
// its check, and a cluster sets both of its flags.
TEST_F(RunOptionsCliTest, NamedOptionsGetTheirValues) {
  ::imgtool::testing::CommandResult bad_pull = Imgtool({"run", "--pull", "sometimes", "img"});
  EXPECT_EQ(bad_pull.exit_code, 125) << testing::Describe(bad_pull);
  EXPECT_TRUE(bad_pull.err.starts_with("imgtool: error: --pull: sometimes not in"))
      << testing::Describe(bad_pull);
  ExpectError(Imgtool({"run", "--pull", "never", "-di", "img"}), "-d and -i can not be combined");
  ExpectError(Imgtool({"run", "--bogus", "img"}), "unknown flag \"--bogus\"");
}

TEST_F(RunOptionsCliTest, HelpListsEveryOption) {
  ::imgtool::testing::CommandResult r = Imgtool({"run", "--help"});
  EXPECT_EQ(r.exit_code, 0) << testing::Describe(r);
  for (const char* name : {"--rm", "--cpuset-cpus", "--ulimit", "--add-host", "--hostname"}) {
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace imgtool::cli
