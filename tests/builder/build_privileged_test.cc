// `imgtool build` end to end, as root, from a local busybox-static rootfs:
// every step type, args, multi-stage, the cache, failing steps,
// reproducibility and the --output formats as podman and skopeo read them.
// Run steps use --network none unless networking is what is tested.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool::testing {
namespace {

namespace fs = std::filesystem;

class BuildTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    if (!fs::exists("/bin/busybox")) GTEST_SKIP() << "needs /bin/busybox (busybox-static)";
    auto dir = TempDir::Create("/var/tmp", "imgtool-build-test-");
    ASSERT_TRUE(dir.has_value()) << dir.error().ToString();
    dir_ = std::move(*dir);
    root_ = dir_->path() / "root";
    context_ = dir_->path() / "ctx";
    fs::create_directories(context_);
    MakeBusyboxTar(context_ / "base.tar");
  }

  // A rootfs with /bin/busybox, its applets as links, /etc/passwd and /tmp.
  void MakeBusyboxTar(const fs::path& tar) {
    fs::path tree = dir_->path() / "busybox-tree";
    fs::create_directories(tree / "bin");
    fs::create_directories(tree / "etc");
    fs::create_directories(tree / "tmp");
    fs::permissions(tree / "tmp", fs::perms::all | fs::perms::sticky_bit);
    fs::copy_file("/bin/busybox", tree / "bin/busybox");
    for (const char* applet : {"sh", "echo", "cat", "ls", "mkdir", "rm", "touch", "id", "stat",
                               "head", "dd", "env", "pwd", "true", "false", "sleep", "wc"}) {
      fs::create_symlink("busybox", tree / "bin" / applet);
    }
    WriteTestFile(tree / "etc/passwd",
                  "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n");
    WriteTestFile(tree / "etc/group", "root:x:0:\nuser:x:1000:\n");
    auto result = RunCommand({"tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0",
                              "--numeric-owner", "-C", tree.string(), "-cf", tar.string(), "."});
    ASSERT_EQ(result.exit_code, 0) << result.err;
  }

  CommandResult Build(const std::vector<std::string>& args, const fs::path& root = {}) {
    std::vector<std::string> all = {"build", "--network", "none"};
    all.insert(all.end(), args.begin(), args.end());
    return RunImgtool(root.empty() ? root_ : root, all);
  }

  void WriteRecipe(std::string_view text, const std::string& name = "recipe.yaml") {
    WriteTestFile(context_ / name, text);
  }

  nlohmann::json BuildJson(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--format", "json", (context_ / "recipe.yaml").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    CommandResult result = Build(args);
    EXPECT_EQ(result.exit_code, 0) << result.err << result.out;
    if (result.exit_code != 0) return nlohmann::json::object();
    return nlohmann::json::parse(result.out);
  }

  // The image's files, flattened, extracted under a fresh directory.
  fs::path Export(const std::string& image) {
    fs::path tar = dir_->path() / ("export-" + std::to_string(++exports_) + ".tar");
    CommandResult result = RunImgtool(root_, {"export", image, "-o", tar.string()});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    fs::path out = dir_->path() / ("export-" + std::to_string(exports_));
    fs::create_directories(out);
    auto untar = RunCommand({"tar", "--numeric-owner", "-xpf", tar.string(), "-C", out.string()});
    EXPECT_EQ(untar.exit_code, 0) << untar.err;
    return out;
  }

  nlohmann::json Inspect(const std::string& image) {
    CommandResult result = RunImgtool(root_, {"inspect", image});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    auto json = nlohmann::json::parse(result.out, nullptr, false);
    return json.is_array() && !json.empty() ? json[0] : json;
  }

  std::optional<TempDir> dir_;
  fs::path root_;
  fs::path context_;
  int exports_ = 0;
};

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
  EXPECT_NE(result.out.find("CACHED"), std::string::npos) << result.out;

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
  CommandResult result = Build(
      {(context_ / "recipe.yaml").string(), "--output", "oci-archive=" + oci.string(), "--output",
       "docker-archive=" + docker.string(), "--output", "oci-dir=" + layout.string(), "--output",
       "rootfs.tar=" + rootfs.string(), "--iidfile", iid.string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::string id = ReadTestFile(iid);
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
  (void)id;
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
