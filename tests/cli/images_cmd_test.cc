// import -> images -> inspect -> history -> tag -> rmi -> gc through the real
// binary, and the errors those commands report.
#include <nlohmann/json.hpp>

#include "tests/cli/cli_fixture.h"

namespace imgtool::cli::testing {
namespace {

class ImagesCmdTest : public CliTest {};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

TEST_F(ImagesCmdTest, ImportListInspectHistoryTagRmiGc) {
  fs::path tar = RootfsTar();
  CommandResult imported = ImgtoolEnv({"import", "-m", "first import", tar.string(), "app:1"},
                                      {"SOURCE_DATE_EPOCH=1700000000"});
  ASSERT_EQ(imported.exit_code, 0) << Describe(imported);
  std::string id = imported.out.substr(0, imported.out.find('\n'));
  ASSERT_TRUE(id.starts_with("sha256:")) << imported.out;
  ASSERT_EQ(id.size(), 71u);

  // images: one row, docker columns, 12-digit ID of the config digest.
  std::vector<std::string> rows = Lines(Ok({"images"}));
  ASSERT_EQ(rows.size(), 2u) << Ok({"images"});
  EXPECT_TRUE(rows[0].starts_with("REPOSITORY")) << rows[0];
  EXPECT_NE(rows[0].find("IMAGE ID"), std::string::npos);
  EXPECT_TRUE(rows[1].starts_with("docker.io/library/app")) << rows[1];
  EXPECT_NE(rows[1].find(" 1 "), std::string::npos) << rows[1];
  EXPECT_NE(rows[1].find(id.substr(7, 12)), std::string::npos) << rows[1];
  EXPECT_EQ(Ok({"images", "-q"}), id.substr(7, 12) + "\n");

  // inspect: podman's shape, the fields filled from the image.
  nlohmann::json info = Inspect("app:1");
  EXPECT_EQ(info["Id"], id);
  EXPECT_EQ(info["RepoTags"], nlohmann::json::array({"docker.io/library/app:1"}));
  EXPECT_EQ(info["Created"], "2023-11-14T22:13:20Z");
  EXPECT_EQ(info["Os"], "linux");
  EXPECT_FALSE(info["Architecture"].get<std::string>().empty());
  ASSERT_EQ(info["RootFS"]["Layers"].size(), 1u);
  ASSERT_EQ(info["Layers"].size(), 1u);
  EXPECT_GT(info["Size"].get<int64_t>(), 500000);  // busybox, compressed
  EXPECT_TRUE(info["Config"].contains("Env")) << info.dump();
  std::string digest = info["Digest"];
  // The same image by short ID, full ID, and manifest digest.
  EXPECT_EQ(Inspect(id.substr(7, 6))["Digest"], digest);
  EXPECT_EQ(Inspect(id)["Digest"], digest);
  EXPECT_EQ(Inspect(digest)["Id"], id);

  // history: the import's entry with its comment.
  std::string history = Ok({"history", "app:1"});
  EXPECT_NE(history.find("CREATED BY"), std::string::npos) << history;
  EXPECT_NE(history.find("imgtool import rootfs.tar"), std::string::npos) << history;
  EXPECT_NE(history.find("first import"), std::string::npos) << history;
  nlohmann::json history_json = nlohmann::json::parse(Ok({"history", "--format", "json", "app:1"}));
  ASSERT_EQ(history_json.size(), 1u);
  // The layer's size: the image's size less its small config.
  EXPECT_LT(history_json[0]["size"].get<int64_t>(), info["Size"].get<int64_t>());
  EXPECT_GT(history_json[0]["size"].get<int64_t>(), info["Size"].get<int64_t>() - 2000);

  // tag: two more names for the same image.
  Ok({"tag", "app:1", "app:2", "localhost:5000/team/app:v2"});
  nlohmann::json listed = nlohmann::json::parse(Ok({"images", "--format", "json"}));
  ASSERT_EQ(listed.size(), 1u) << listed.dump();
  EXPECT_EQ(listed[0]["RepoTags"],
            nlohmann::json::array({"docker.io/library/app:1", "docker.io/library/app:2",
                                   "localhost:5000/team/app:v2"}));
  EXPECT_EQ(Lines(Ok({"images"})).size(), 4u);

  // rmi by ID with several names is refused without -f.
  ExpectError(Imgtool({"rmi", id.substr(7, 12)}), "referenced by 3 names");
  // rmi by name only untags while other names remain.
  EXPECT_EQ(Ok({"rmi", "app:2"}), "Untagged: docker.io/library/app:2\n");
  EXPECT_EQ(Ok({"rmi", "localhost:5000/team/app:v2"}), "Untagged: localhost:5000/team/app:v2\n");
  // Another image so that gc has something to keep.
  fs::path other = RootfsTar("other.tar", "other\n");
  Ok({"import", other.string(), "other"});

  // The last name goes, and the image with it.
  EXPECT_EQ(Ok({"rmi", "app:1"}), "Untagged: docker.io/library/app:1\nDeleted: " + id + "\n");
  ExpectError(Imgtool({"inspect", "app:1"}), "image \"docker.io/library/app:1\" not found");
  std::string gc = Ok({"gc"});
  // Manifest, config and layer of app:1 went; other's three blobs stay.
  EXPECT_NE(gc.find("Removed 3 blobs"), std::string::npos) << gc;
  EXPECT_NE(gc.find("kept 3 blobs"), std::string::npos) << gc;
  EXPECT_EQ(Ok({"fsck"}), "no problems\n");
  EXPECT_EQ(Inspect("other")["RepoTags"],
            nlohmann::json::array({"docker.io/library/other:latest"}));
  EXPECT_NE(Ok({"gc"}).find("Removed 0 blobs"), std::string::npos);
}

TEST_F(ImagesCmdTest, ImportIsReproducibleWithSourceDateEpoch) {
  fs::path tar = RootfsTar();
  std::vector<std::string> env = {"SOURCE_DATE_EPOCH=1700000000"};
  CommandResult a = ImgtoolEnv({"import", tar.string(), "a"}, env);
  ASSERT_EQ(a.exit_code, 0) << Describe(a);
  std::string digest_a = Inspect("a")["Digest"];
  // Another root, another path to the same bytes: the same image.
  fs::path copy = Work() / "copy" / "rootfs.tar";
  fs::create_directories(copy.parent_path());
  fs::copy_file(tar, copy);
  fs::path root_b = Work() / "root-b";
  CommandResult b = ::imgtool::testing::RunCommand({::imgtool::testing::ImgtoolBinary(), "--root",
                                                    root_b.string(), "import", copy.string(), "a"},
                                                   "", env);
  ASSERT_EQ(b.exit_code, 0) << Describe(b);
  EXPECT_EQ(a.out, b.out);
  CommandResult inspect_b = ImgtoolIn(root_b, {"inspect", "a"});
  EXPECT_EQ(nlohmann::json::parse(inspect_b.out)[0]["Digest"], digest_a);
}

TEST_F(ImagesCmdTest, ImportFromStdinGzipAndUnnamed) {
  fs::path tar = RootfsTar();
  std::string gz = Work() / "rootfs.tar.gz";
  ASSERT_EQ(::imgtool::testing::RunCommand({"gzip", "-k", "-f", tar.string()}).exit_code, 0);
  std::string bytes = ::imgtool::testing::ReadTestFile(gz);
  CommandResult r = Imgtool({"import", "-"}, bytes);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::string id = r.out.substr(0, 71);
  // Unnamed: hidden from the default listing, shown with -a, found by ID.
  EXPECT_EQ(Lines(Ok({"images"})).size(), 1u);
  std::string all = Ok({"images", "-a"});
  EXPECT_NE(all.find("<none>"), std::string::npos) << all;
  EXPECT_NE(all.find(id.substr(7, 12)), std::string::npos) << all;
  EXPECT_EQ(Inspect(id.substr(7, 12))["Id"], id);
  // Same content as the plain tar: the layer's diffID does not depend on the
  // outer compression.
  Ok({"import", tar.string(), "plain"});
  EXPECT_EQ(Inspect("plain")["RootFS"]["Layers"], Inspect(id)["RootFS"]["Layers"]);
  EXPECT_NE(Ok({"history", id}).find("imgtool import -"), std::string::npos);
}

TEST_F(ImagesCmdTest, RmiForceRemovesAllNamesAndIgnoresMissing) {
  fs::path tar = RootfsTar();
  Ok({"import", tar.string(), "x:1"});
  Ok({"tag", "x:1", "x:2"});
  std::string id = Inspect("x:1")["Id"];
  std::string out = Ok({"rmi", "-f", id.substr(7, 12), "does-not-exist"});
  EXPECT_EQ(out, "Untagged: docker.io/library/x:1\nUntagged: docker.io/library/x:2\nDeleted: " +
                     id + "\n");
  EXPECT_EQ(Lines(Ok({"images", "-a"})).size(), 1u);
  ExpectError(Imgtool({"rmi", "does-not-exist"}),
              "rmi does-not-exist: image \"docker.io/library/does-not-exist:latest\" not found");
}

TEST_F(ImagesCmdTest, Errors) {
  ExpectError(Imgtool({"inspect", "nope"}),
              "inspect nope: image \"docker.io/library/nope:latest\" not found");
  ExpectError(Imgtool({"history", "nope:1"}), "not found");
  ExpectError(Imgtool({"inspect", "Bad:Ref"}), "invalid reference \"Bad:Ref\"");
  fs::path tar = RootfsTar();
  Ok({"import", tar.string(), "x"});
  ExpectError(Imgtool({"tag", "x", "team/UPPER"}), "invalid reference");
  ExpectError(Imgtool({"tag", "x", "x@sha256:" + std::string(64, 'a')}),
              "a tag can not contain a digest");
  ExpectError(Imgtool({"tag", "missing", "y"}), "not found");
  ExpectError(Imgtool({"import", (Work() / "missing.tar").string(), "y"}),
              "missing.tar: No such file or directory");
  ::imgtool::testing::WriteTestFile(Work() / "not-a-tar", std::string(4096, 'x'));
  ExpectError(Imgtool({"import", (Work() / "not-a-tar").string(), "y"}), "not a tar archive");
  ExpectError(ImgtoolEnv({"import", tar.string(), "y"}, {"SOURCE_DATE_EPOCH=soon"}),
              "SOURCE_DATE_EPOCH");
  // Nothing was tagged by the failures.
  EXPECT_EQ(Lines(Ok({"images"})).size(), 2u);
}

TEST_F(ImagesCmdTest, UsageErrorsAreOneLinePlusHint) {
  CommandResult r = Imgtool({"images", "--bogus"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_TRUE(r.err.starts_with("imgtool: error: ")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 2) << r.err;
  EXPECT_NE(r.err.find("--help"), std::string::npos) << r.err;

  CommandResult unknown = Imgtool({"imagez"});
  EXPECT_EQ(unknown.exit_code, 125);
  EXPECT_TRUE(unknown.err.starts_with("imgtool: error: unknown command \"imagez\"\n"))
      << unknown.err;
  CommandResult missing = Imgtool({"tag", "only-one"});
  EXPECT_EQ(missing.exit_code, 125);
  EXPECT_NE(missing.err.find("TARGET"), std::string::npos) << missing.err;
  CommandResult help = Imgtool({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* command : {"load", "save", "import", "export", "images", "inspect", "tag", "rmi",
                              "history", "gc", "fsck", "version"}) {
    EXPECT_NE(help.out.find(command), std::string::npos) << command;
  }
}

// A run of one command registers only its group's options (app.cc): every
// command must still resolve, with its own help, and the list in --help
// must be whole.
TEST_F(ImagesCmdTest, EveryCommandHasItsHelp) {
  const char* commands[] = {"images", "inspect", "tag",  "rmi",  "history", "save",  "load",
                            "import", "export",  "build", "gc",  "fsck",    "version", "pull",
                            "push",   "login",   "logout", "run", "ps",      "logs",  "stop",
                            "kill",   "rm",      "wait",  "exec"};
  CommandResult help = Imgtool({"--help"});
  ASSERT_EQ(help.exit_code, 0);
  for (const char* command : commands) {
    EXPECT_NE(help.out.find(std::string("  ") + command + " "), std::string::npos) << command;
    CommandResult own = Imgtool({"--log-level", "error", command, "--help"});
    EXPECT_EQ(own.exit_code, 0) << command << ": " << own.err;
    EXPECT_NE(own.out.find(command), std::string::npos) << command << ": " << own.out;
  }
}

}  // namespace
}  // namespace imgtool::cli::testing
