// imgtool against the real clients of what it reads and writes: umoci builds a
// two-layer image with whiteouts, skopeo turns it into an oci-archive, imgtool
// loads and exports it, and the exported tree must equal `umoci unpack` of the
// same image. skopeo and oci-image-tool read imgtool's store and its oci-dir
// output, and podman loads and runs a docker-archive that imgtool saved.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>

#include "common/digest.h"
#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::RunCommand;
using testing::RunImgtool;
using testing::WriteTestFile;

constexpr char kRef[] = "example.com/interop/test:v1";

std::string Describe(const CommandResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

// One entry of a file tree, as compared between imgtool and umoci.
struct Entry {
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string content;  // file: sha256 of the content; symlink: target
  friend bool operator==(const Entry&, const Entry&) = default;
};

std::map<std::string, Entry> Snapshot(const fs::path& root) {
  std::map<std::string, Entry> tree;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    Entry e{st.st_mode, st.st_uid, st.st_gid, ""};
    if (S_ISREG(st.st_mode)) {
      e.content = Digest::Sha256Of(testing::ReadTestFile(it->path())).hex();
    } else if (S_ISLNK(st.st_mode)) {
      e.content = fs::read_symlink(it->path()).string();
    }
    tree[fs::relative(it->path(), root).string()] = e;
  }
  return tree;
}

std::string Format(const std::string& path, const Entry& e) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s mode=%o uid=%u gid=%u ", path.c_str(), e.mode, e.uid,
                e.gid);
  return buf + e.content.substr(0, 16);
}

class InteropTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    for (const char* tool : {"umoci", "skopeo", "tar"}) {
      if (!testing::HaveCommand(tool)) return;
    }
    auto dir = TempDir::Create("interop-");
    ASSERT_TRUE(dir);
    work_ = new TempDir(std::move(dir).value());
    BuildFixture();
  }
  static void TearDownTestSuite() {
    delete work_;
    work_ = nullptr;
  }

  void SetUp() override {
    IMGTOOL_REQUIRE_ROOT();
    IMGTOOL_REQUIRE_COMMAND("umoci");
    IMGTOOL_REQUIRE_COMMAND("skopeo");
    ASSERT_NE(work_, nullptr);
    ASSERT_TRUE(fixture_ok_) << "fixture setup failed";
  }

  static fs::path Work() { return work_->path(); }
  static fs::path Layout() { return Work() / "layout"; }
  static fs::path Root() { return Work() / "store"; }

  static void Run(const std::vector<std::string>& argv) {
    CommandResult r = RunCommand(argv);
    ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": "
                              << Describe(r);
  }

  // Layer 1: a small busybox rootfs with owners, modes, links. Layer 2 deletes a
  // file and a directory and replaces a directory's contents: whiteouts on the wire.
  static void BuildFixture() {
    fs::path bundle = Work() / "bundle";
    Run({"umoci", "init", "--layout", Layout().string()});
    Run({"umoci", "new", "--image", Layout().string() + ":test"});
    Run({"umoci", "unpack", "--image", Layout().string() + ":test", bundle.string()});
    fs::path rootfs = bundle / "rootfs";
    fs::create_directories(rootfs / "bin");
    fs::copy_file("/bin/busybox", rootfs / "bin" / "busybox");
    for (const char* applet : {"sh", "cat", "ls", "echo"}) {
      fs::create_symlink("busybox", rootfs / "bin" / applet);
    }
    WriteTestFile(rootfs / "etc" / "passwd", "root:x:0:0:root:/root:/bin/sh\n");
    WriteTestFile(rootfs / "hello", "hello from layer one\n");
    WriteTestFile(rootfs / "home" / "user" / "notes.txt", "owned by 1000\n", 0600);
    ASSERT_EQ(::chown((rootfs / "home" / "user").c_str(), 1000, 1000), 0);
    ASSERT_EQ(::chown((rootfs / "home" / "user" / "notes.txt").c_str(), 1000, 1000), 0);
    WriteTestFile(rootfs / "usr" / "bin" / "suid", "#!/bin/sh\n", 04755);
    ASSERT_EQ(::chmod((rootfs / "usr" / "bin" / "suid").c_str(), 04755), 0);
    fs::create_hard_link(rootfs / "hello", rootfs / "hello-link");
    fs::create_symlink("/hello", rootfs / "abs-link");
    WriteTestFile(rootfs / "gone" / "a", "a");
    WriteTestFile(rootfs / "gone" / "b", "b");
    WriteTestFile(rootfs / "replaced" / "old", "old");
    WriteTestFile(rootfs / "delete-me", "bye");
    fs::create_directories(rootfs / "tmp");
    ::chmod((rootfs / "tmp").c_str(), 01777);
    Run({"umoci", "repack", "--image", Layout().string() + ":test", bundle.string()});

    fs::remove_all(rootfs / "gone");
    fs::remove(rootfs / "delete-me");
    fs::remove_all(rootfs / "replaced");
    WriteTestFile(rootfs / "replaced" / "new", "new");
    WriteTestFile(rootfs / "hello", "hello from layer two\n");
    Run({"umoci", "repack", "--image", Layout().string() + ":test", bundle.string()});
    fs::remove_all(bundle);

    Run({"skopeo", "copy", "-q", "oci:" + Layout().string() + ":test",
         "oci-archive:" + (Work() / "image.oci.tar").string() + ":" + kRef});
    CommandResult load = RunImgtool(Root(), {"load", "-i", (Work() / "image.oci.tar").string()});
    ASSERT_EQ(load.exit_code, 0) << Describe(load);
    fixture_ok_ = true;
  }

  static TempDir* work_;
  static bool fixture_ok_;
};

TempDir* InteropTest::work_ = nullptr;
bool InteropTest::fixture_ok_ = false;

TEST_F(InteropTest, ExportEqualsUmociUnpack) {
  fs::path exported = Work() / "exported";
  fs::create_directories(exported);
  CommandResult r = RunImgtool(Root(), {"export", kRef, "-o", (Work() / "rootfs.tar").string()});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  Run({"tar", "--numeric-owner", "-xpf", (Work() / "rootfs.tar").string(), "-C",
       exported.string()});
  fs::path bundle = Work() / "umoci-bundle";
  Run({"umoci", "unpack", "--image", Layout().string() + ":test", bundle.string()});

  auto ours = Snapshot(exported);
  auto theirs = Snapshot(bundle / "rootfs");
  EXPECT_EQ(ours.count("gone"), 0u);
  EXPECT_EQ(ours.count("delete-me"), 0u);
  EXPECT_EQ(ours.count("replaced/old"), 0u);
  EXPECT_EQ(ours.count("replaced/new"), 1u);
  for (const auto& [path, entry] : theirs) {
    auto it = ours.find(path);
    if (it == ours.end()) {
      ADD_FAILURE() << "missing in imgtool export: " << Format(path, entry);
      continue;
    }
    // Directory mtimes and the root differ by design; everything else must match.
    EXPECT_EQ(it->second, entry) << "imgtool: " << Format(path, it->second)
                                 << "\numoci:   " << Format(path, entry);
  }
  for (const auto& [path, entry] : ours) {
    if (!theirs.count(path)) ADD_FAILURE() << "extra in imgtool export: " << Format(path, entry);
  }
  EXPECT_EQ(testing::ReadTestFile(exported / "hello"), "hello from layer two\n");
}

TEST_F(InteropTest, SkopeoReadsTheStore) {
  CommandResult r = RunCommand({"skopeo", "inspect", "oci:" + Root().string() + ":" + kRef});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_NE(r.out.find("\"Layers\""), std::string::npos);
  CommandResult src =
      RunCommand({"skopeo", "inspect", "oci-archive:" + (Work() / "image.oci.tar").string()});
  ASSERT_EQ(src.exit_code, 0) << Describe(src);
  // The manifest digest survives the load unchanged.
  auto digest_of = [](const std::string& json) {
    size_t at = json.find("\"Digest\": \"");
    return at == std::string::npos ? std::string() : json.substr(at + 11, 71);
  };
  EXPECT_FALSE(digest_of(r.out).empty());
  EXPECT_EQ(digest_of(r.out), digest_of(src.out));
}

TEST_F(InteropTest, OciImageToolValidatesStoreAndOciDir) {
  IMGTOOL_REQUIRE_COMMAND("oci-image-tool");
  CommandResult store = RunCommand(
      {"oci-image-tool", "validate", "--type", "image", Root().string(), "--ref", std::string("name=") + kRef});
  EXPECT_EQ(store.exit_code, 0) << Describe(store);

  fs::path dir = Work() / "saved-oci-dir";
  CommandResult save =
      RunImgtool(Root(), {"save", kRef, "--format", "oci-dir", "-o", dir.string()});
  ASSERT_EQ(save.exit_code, 0) << Describe(save);
  CommandResult saved = RunCommand(
      {"oci-image-tool", "validate", "--type", "image", dir.string(), "--ref", std::string("name=") + kRef});
  EXPECT_EQ(saved.exit_code, 0) << Describe(saved);
  CommandResult skopeo = RunCommand({"skopeo", "inspect", "oci:" + dir.string() + ":" + kRef});
  EXPECT_EQ(skopeo.exit_code, 0) << Describe(skopeo);
}

TEST_F(InteropTest, PodmanLoadsAndRunsDockerArchive) {
  IMGTOOL_REQUIRE_COMMAND("podman");
  IMGTOOL_REQUIRE_COMMAND("runc");
  fs::path archive = Work() / "image.docker.tar";
  CommandResult save = RunImgtool(
      Root(), {"save", kRef, "--format", "docker-archive", "-o", archive.string()});
  ASSERT_EQ(save.exit_code, 0) << Describe(save);
  // A private podman storage so the host's is untouched.
  std::vector<std::string> podman = {"podman", "--root", (Work() / "podman-root").string(),
                                     "--runroot", (Work() / "podman-run").string(),
                                     "--storage-driver", "vfs"};
  auto with = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = podman;
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  };
  CommandResult load = with({"load", "-i", archive.string()});
  ASSERT_EQ(load.exit_code, 0) << Describe(load);
  // podman's default crun refuses this machine's hybrid cgroups and its default
  // nofile limit exceeds the hard limit here: runc with explicit ulimits works.
  CommandResult run = with({"run", "--rm", "--runtime", "runc", "--ulimit",
                            "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
                            "--network", "none", kRef, "/bin/cat", "/hello", "/replaced/new"});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_EQ(run.out, "hello from layer two\nnew");
  CommandResult gone = with({"run", "--rm", "--runtime", "runc", "--ulimit",
                             "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
                             "--network", "none", kRef, "/bin/ls", "/gone"});
  EXPECT_NE(gone.exit_code, 0) << "a deleted directory is visible in podman";
  (void)with({"rmi", "-a", "-f"});
}

TEST_F(InteropTest, FsckCleanAfterAll) {
  CommandResult r = RunImgtool(Root(), {"fsck"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
}

}  // namespace
}  // namespace imgtool
