// save / load round trips in every format, export, and the ways a load must
// fail: with one clear line, exit 125, no tag and a clean store afterwards.
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "tests/cli/cli_fixture.h"
#include "tests/cli/image_builder.h"

namespace imgtool::cli::testing {
namespace {

using ::imgtool::testing::ReadTestFile;
using ::imgtool::testing::WriteTestFile;

// Layer 1 has a few files; layer 2 deletes one (whiteout), replaces a
// directory's contents (opaque) and changes a file.
std::vector<std::string> TwoLayers() {
  std::string base = MakeTar({
      {"etc", "", 'd', "", 0755},
      {"etc/greeting", "hello from layer one\n"},
      {"etc/motd", "motd\n"},
      {"opt", "", 'd', "", 0755},
      {"opt/old", "old\n"},
      {"usr", "", 'd', "", 0755},
      {"usr/bin", "", 'd', "", 0755},
      {"usr/bin/tool", "#!/bin/sh\n", 'f', "", 0755},
      {"usr/bin/tool-link", "", 'l', "tool"},
  });
  std::string top = MakeTar({
      {"etc", "", 'd', "", 0755},
      {"etc/.wh.motd", ""},
      {"etc/greeting", "hello from layer two\n"},
      {"opt", "", 'd', "", 0755},
      {"opt/.wh..wh..opq", ""},
      {"opt/new", "new\n"},
  });
  return {base, top};
}

class ArchiveCmdTest : public CliTest {
 protected:
  fs::path WriteArchive(const std::string& name, const std::string& bytes) {
    fs::path path = Work() / name;
    WriteTestFile(path, bytes);
    return path;
  }

  // The store has no names and no problems: what a failed load must leave.
  void ExpectNothingTagged(const fs::path& root) {
    CommandResult images = ImgtoolIn(root, {"images", "-a", "-q"});
    EXPECT_EQ(images.exit_code, 0) << Describe(images);
    EXPECT_EQ(images.out, "");
    CommandResult fsck = ImgtoolIn(root, {"fsck"});
    EXPECT_EQ(fsck.exit_code, 0) << Describe(fsck);
    EXPECT_EQ(fsck.out, "no problems\n");
  }

  void ExpectLoadFails(const std::string& archive, std::string_view want) {
    fs::path path = WriteArchive("bad.tar", archive);
    ExpectError(Imgtool({"load", "-i", path.string()}), want);
    ExpectNothingTagged(Root());
  }

  BuiltImage two_layer_ = BuildImage(TwoLayers(), /*gzip=*/true, "two");
};

TEST_F(ArchiveCmdTest, SaveLoadRoundTripEveryFormat) {
  fs::path tar = RootfsTar();
  Ok({"import", tar.string(), "app:1"});
  fs::path oci =
      WriteArchive("two.oci.tar", TarOf(OciLayout({{&two_layer_, "example.com/two:1"}})));
  EXPECT_EQ(Ok({"load", "-i", oci.string()}), "Loaded image: example.com/two:1\n");
  nlohmann::json app = Inspect("app:1");
  nlohmann::json two = Inspect("example.com/two:1");
  EXPECT_EQ(two["Digest"], two_layer_.ManifestDigest().ToString());

  for (const char* format : {"oci-archive", "oci-dir", "docker-archive"}) {
    SCOPED_TRACE(format);
    fs::path out = Work() / (std::string("saved.") + format);
    Ok({"save", "app:1", "example.com/two:1", "--format", format, "-o", out.string()});
    fs::path root = Work() / (std::string("root.") + format);
    CommandResult load = ImgtoolIn(root, {"load", "-i", out.string()});
    ASSERT_EQ(load.exit_code, 0) << Describe(load);
    EXPECT_EQ(load.out, "Loaded image: docker.io/library/app:1\nLoaded image: example.com/two:1\n");
    for (const auto& [name, before] :
         {std::pair{"app:1", app}, std::pair{"example.com/two:1", two}}) {
      CommandResult inspect = ImgtoolIn(root, {"inspect", name});
      ASSERT_EQ(inspect.exit_code, 0) << Describe(inspect);
      nlohmann::json after = nlohmann::json::parse(inspect.out)[0];
      // The image ID (config digest) and the layers' diffIDs survive every
      // format; OCI formats keep the manifest byte for byte, docker-archive
      // carries no manifest (its layers are stored uncompressed).
      EXPECT_EQ(after["Id"], before["Id"]);
      EXPECT_EQ(after["RootFS"], before["RootFS"]);
      if (std::string(format) != "docker-archive") {
        EXPECT_EQ(after["Digest"], before["Digest"]);
        EXPECT_EQ(after["Layers"], before["Layers"]);
      } else {
        EXPECT_EQ(after["Layers"], before["RootFS"]["Layers"]);
      }
    }
    CommandResult fsck = ImgtoolIn(root, {"fsck"});
    EXPECT_EQ(fsck.out, "no problems\n") << Describe(fsck);
    if (std::string(format) != "oci-dir") {
      // Deterministic: the same images give the same bytes.
      fs::path again = Work() / (std::string("again.") + format);
      Ok({"save", "app:1", "example.com/two:1", "--format", format, "-o", again.string()});
      EXPECT_EQ(ReadTestFile(again), ReadTestFile(out));
    }
  }
}

TEST_F(ArchiveCmdTest, OciArchiveLayout) {
  fs::path oci =
      WriteArchive("two.oci.tar", TarOf(OciLayout({{&two_layer_, "example.com/two:1"}})));
  Ok({"load", "-i", oci.string()});
  fs::path out = Work() / "out.tar";
  Ok({"save", "--format", "oci-archive", "-o", out.string(), "example.com/two:1"});
  std::map<std::string, TarItem> entries = ReadTar(ReadTestFile(out));
  std::vector<std::string> names;
  for (const auto& [name, item] : entries) names.push_back(name);
  std::vector<std::string> want = {"blobs",
                                   "blobs/sha256",
                                   BlobPath(two_layer_.config),
                                   BlobPath(two_layer_.manifest),
                                   BlobPath(two_layer_.layer_blobs[0]),
                                   BlobPath(two_layer_.layer_blobs[1]),
                                   "index.json",
                                   "oci-layout"};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(names, want);
  nlohmann::json index = nlohmann::json::parse(entries["index.json"].data);
  ASSERT_EQ(index["manifests"].size(), 1u);
  EXPECT_EQ(index["manifests"][0]["digest"], two_layer_.ManifestDigest().ToString());
  EXPECT_EQ(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "example.com/two:1");
  EXPECT_EQ(entries["blobs/sha256"].mode, 0755u);
  EXPECT_EQ(entries["index.json"].mode, 0644u);
}

TEST_F(ArchiveCmdTest, DockerArchiveHasUncompressedLayersNamedByDiffId) {
  fs::path oci =
      WriteArchive("two.oci.tar", TarOf(OciLayout({{&two_layer_, "example.com/two:1"}})));
  Ok({"load", "-i", oci.string()});
  fs::path out = Work() / "out.docker.tar";
  Ok({"save", "example.com/two:1", "-o", out.string()});  // docker-archive is the default
  std::map<std::string, TarItem> entries = ReadTar(ReadTestFile(out));
  nlohmann::json manifest = nlohmann::json::parse(entries["manifest.json"].data);
  ASSERT_EQ(manifest.size(), 1u);
  EXPECT_EQ(manifest[0]["Config"], two_layer_.ConfigDigest().hex() + ".json");
  EXPECT_EQ(manifest[0]["RepoTags"], nlohmann::json::array({"example.com/two:1"}));
  ASSERT_EQ(manifest[0]["Layers"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    std::string name = manifest[0]["Layers"][i];
    EXPECT_EQ(name, two_layer_.diff_ids[i].hex() + ".tar");
    EXPECT_EQ(Digest::Sha256Of(entries[name].data), two_layer_.diff_ids[i]);
  }
  EXPECT_EQ(entries[two_layer_.ConfigDigest().hex() + ".json"].data, two_layer_.config);
}

TEST_F(ArchiveCmdTest, StdinAndStdout) {
  fs::path tar = RootfsTar();
  Ok({"import", tar.string(), "app"});
  CommandResult saved = Imgtool({"save", "--format", "oci-archive", "app"});
  ASSERT_EQ(saved.exit_code, 0) << Describe(saved);
  ASSERT_GT(saved.out.size(), 100000u);
  CommandResult loaded = ImgtoolIn(Work() / "root2", {"load"}, saved.out);
  ASSERT_EQ(loaded.exit_code, 0) << Describe(loaded);
  EXPECT_EQ(loaded.out, "Loaded image: docker.io/library/app:latest\n");
  // A gzip-compressed archive loads the same.
  CommandResult gz = ImgtoolIn(Work() / "root3", {"load"}, Gzip(saved.out));
  ASSERT_EQ(gz.exit_code, 0) << Describe(gz);
  EXPECT_EQ(gz.out, loaded.out);
  EXPECT_EQ(nlohmann::json::parse(ImgtoolIn(Work() / "root3", {"inspect", "app"}).out)[0]["Digest"],
            Inspect("app")["Digest"]);
}

TEST_F(ArchiveCmdTest, DockerArchiveAsDockerSavesIt) {
  // Legacy layout: <n>/layer.tar, VERSION files, and a layer shared by
  // symlink as docker writes it for identical layers.
  BuiltImage one = BuildImage({MakeTar({{"a", "a\n"}})}, false, "one");
  BuiltImage two = BuildImage({MakeTar({{"a", "a\n"}}), MakeTar({{"b", "b\n"}})}, true, "two");
  Files files = DockerArchive({{&one, "one:1"}});
  std::vector<TarEntry> entries;
  for (const auto& [name, data] : files) {
    if (name != "manifest.json") entries.push_back({name, data});
  }
  entries.push_back({"shared/layer.tar", "", 'l', "../layer0/layer.tar"});
  entries.push_back({"layer7/layer.tar", two.layer_blobs[1]});
  entries.push_back({two.ConfigDigest().hex() + ".json", two.config});
  nlohmann::json manifest = nlohmann::json::parse(files["manifest.json"]);
  manifest.push_back({{"Config", two.ConfigDigest().hex() + ".json"},
                      {"RepoTags", {"quay.io/x/two:2", "two:latest"}},
                      {"Layers", {"shared/layer.tar", "layer7/layer.tar"}}});
  entries.push_back({"manifest.json", manifest.dump()});
  entries.push_back({"repositories", "{}"});
  fs::path archive = WriteArchive("docker.tar", MakeTar(entries));
  EXPECT_EQ(Ok({"load", "-i", archive.string()}),
            "Loaded image: docker.io/library/one:1\nLoaded image: quay.io/x/two:2\n"
            "Loaded image: docker.io/library/two:latest\n");
  nlohmann::json info = Inspect("quay.io/x/two:2");
  EXPECT_EQ(info["Id"], two.ConfigDigest().ToString());
  EXPECT_EQ(info["ManifestType"], "application/vnd.oci.image.manifest.v1+json");
  // Layer 0 came uncompressed (via the symlink), layer 1 as gzip.
  EXPECT_EQ(info["Layers"][0], two.diff_ids[0].ToString());
  EXPECT_EQ(info["Layers"][1], Digest::Sha256Of(two.layer_blobs[1]).ToString());
  EXPECT_EQ(Ok({"fsck"}), "no problems\n");
  // Loading the same archive again gives the same generated manifest.
  std::string digest = info["Digest"];
  Ok({"load", "-i", archive.string()});
  EXPECT_EQ(Inspect("two")["Digest"], digest);
}

TEST_F(ArchiveCmdTest, BareTagNeedsAName) {
  // skopeo copy ... oci-archive:f.tar:latest writes ref.name "latest".
  fs::path archive = WriteArchive("bare.tar", TarOf(OciLayout({{&two_layer_, "latest"}})));
  CommandResult first = Imgtool({"load", "-i", archive.string()});
  ASSERT_EQ(first.exit_code, 0) << Describe(first);
  EXPECT_EQ(first.out, "Loaded image: " + two_layer_.ManifestDigest().ToString() + "\n");
  EXPECT_NE(first.err.find("is tagged \"latest\" in the archive, without a repository"),
            std::string::npos)
      << first.err;
  EXPECT_EQ(Ok({"images", "-q"}), "");
  EXPECT_EQ(Ok({"images", "-q", "-a"}), two_layer_.ConfigDigest().hex().substr(0, 12) + "\n");
  EXPECT_EQ(Ok({"load", "-i", archive.string(), "--name", "registry.local/team/img"}),
            "Loaded image: registry.local/team/img:latest\n");
  // No name at all: --name is the whole name.
  fs::path unnamed = WriteArchive("unnamed.tar", TarOf(OciLayout({{&two_layer_, ""}})));
  EXPECT_EQ(Ok({"load", "-i", unnamed.string(), "--name", "plain:v1"}),
            "Loaded image: docker.io/library/plain:v1\n");
  EXPECT_EQ(Inspect("plain:v1")["Digest"], two_layer_.ManifestDigest().ToString());
}

TEST_F(ArchiveCmdTest, LoadOciDirectory) {
  fs::path oci =
      WriteArchive("two.oci.tar", TarOf(OciLayout({{&two_layer_, "example.com/two:1"}})));
  Ok({"load", "-i", oci.string()});
  fs::path dir = Work() / "layout";
  Ok({"save", "--format", "oci-dir", "-o", dir.string(), "example.com/two:1"});
  EXPECT_TRUE(fs::is_regular_file(dir / "oci-layout"));
  // An existing non-empty directory is not overwritten.
  ExpectError(Imgtool({"save", "--format", "oci-dir", "-o", dir.string(), "example.com/two:1"}),
              "directory exists and is not empty");
  CommandResult r = ImgtoolIn(Work() / "root2", {"load", "-i", dir.string()});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "Loaded image: example.com/two:1\n");
}

TEST_F(ArchiveCmdTest, ExportFlattensLayers) {
  fs::path oci =
      WriteArchive("two.oci.tar", TarOf(OciLayout({{&two_layer_, "example.com/two:1"}})));
  Ok({"load", "-i", oci.string()});
  fs::path out = Work() / "rootfs.tar";
  Ok({"export", "example.com/two:1", "-o", out.string()});
  std::map<std::string, TarItem> tree = ReadTar(ReadTestFile(out));
  EXPECT_EQ(tree["etc/greeting"].data, "hello from layer two\n");
  EXPECT_EQ(tree.count("etc/motd"), 0u);
  EXPECT_EQ(tree.count("opt/old"), 0u);
  EXPECT_EQ(tree["opt/new"].data, "new\n");
  EXPECT_EQ(tree["usr/bin/tool"].mode, 0755u);
  EXPECT_EQ(tree["usr/bin/tool-link"].type, 'l');
  EXPECT_EQ(tree["usr/bin/tool-link"].data, "tool");
  for (const auto& [name, item] : tree) {
    EXPECT_EQ(name.find(".wh."), std::string::npos) << name;
  }
  // To stdout, the same bytes.
  CommandResult piped = Imgtool({"export", "example.com/two:1"});
  ASSERT_EQ(piped.exit_code, 0) << Describe(piped);
  EXPECT_EQ(piped.out, ReadTestFile(out));
  ExpectError(Imgtool({"export", "missing", "-o", (Work() / "x.tar").string()}), "not found");
  EXPECT_FALSE(fs::exists(Work() / "x.tar"));
}

TEST_F(ArchiveCmdTest, ExportOfImportedRootfs) {
  fs::path tar = RootfsTar();
  Ok({"import", tar.string(), "app"});
  fs::path out = Work() / "exported.tar";
  Ok({"export", "app", "-o", out.string()});
  std::map<std::string, TarItem> tree = ReadTar(ReadTestFile(out));
  EXPECT_EQ(tree["bin/busybox"].data, ReadTestFile("/bin/busybox"));
  EXPECT_EQ(tree["bin/sh"].type, 'l');
  EXPECT_EQ(tree["etc/greeting"].data, "hello\n");
  EXPECT_EQ(tree["etc/secret"].mode, 0600u);
}

// --- load failures -------------------------------------------------------------

TEST_F(ArchiveCmdTest, LoadMissingFile) {
  ExpectError(Imgtool({"load", "-i", (Work() / "nope.tar").string()}),
              "nope.tar: No such file or directory");
}

TEST_F(ArchiveCmdTest, LoadNotAnArchive) {
  ExpectLoadFails(std::string(3000, 'x'), "Unrecognized archive format");
}

TEST_F(ArchiveCmdTest, LoadEmptyInput) {
  ExpectError(Imgtool({"load", "-i", WriteArchive("empty.tar", "").string()}),
              "empty.tar: archive is empty");
  ExpectError(Imgtool({"load"}, ""), "load: archive is empty");
  ExpectNothingTagged(Root());
}

TEST_F(ArchiveCmdTest, LoadDirectoryThatIsNoLayout) {
  fs::path dir = Work() / "not-a-layout";
  WriteTestFile(dir / "file", "x");
  ExpectError(Imgtool({"load", "-i", dir.string()}),
              "not-a-layout: not an OCI layout directory (no index.json)");
  ExpectNothingTagged(Root());
}

TEST_F(ArchiveCmdTest, LoadNeitherLayout) {
  ExpectLoadFails(TarOf({{"hello.txt", "hi"}}),
                  "found neither index.json (OCI layout) nor manifest.json");
}

TEST_F(ArchiveCmdTest, LoadTruncatedArchive) {
  std::string good = TarOf(OciLayout({{&two_layer_, "example.com/two:1"}}));
  // Cut inside the data of the first blob.
  ExpectLoadFails(good.substr(0, 1024 + 300), "read archive: Truncated");
  // Cut inside a header.
  ExpectLoadFails(good.substr(0, 700), "Truncated tar archive");
}

TEST_F(ArchiveCmdTest, LoadBlobWithWrongDigest) {
  Files files = OciLayout({{&two_layer_, "example.com/two:1"}});
  std::string path = BlobPath(two_layer_.layer_blobs[0]);
  files[path] = Gzip(MakeTar({{"evil", "not what the name says"}}));
  ExpectLoadFails(TarOf(files), "blob " + path + ": digest mismatch: content is sha256:" +
                                    Digest::Sha256Of(files[path]).hex());
}

TEST_F(ArchiveCmdTest, LoadMissingBlob) {
  Files files = OciLayout({{&two_layer_, "example.com/two:1"}});
  files.erase(BlobPath(two_layer_.layer_blobs[1]));
  ExpectLoadFails(TarOf(files), Digest::Sha256Of(two_layer_.layer_blobs[1]).ToString() +
                                    ": not in the archive and not in the store");
}

TEST_F(ArchiveCmdTest, LoadDiffIdCountMismatch) {
  std::vector<Digest> ids = {Digest::Sha256Of("a"), Digest::Sha256Of("b"), Digest::Sha256Of("c")};
  BuiltImage image = BuildImage(TwoLayers(), true, "bad", ConfigJson(ids, "bad"));
  ExpectLoadFails(TarOf(OciLayout({{&image, "example.com/bad:1"}})),
                  "rootfs.diff_ids has 3 entries but the manifest has 2 layers");
}

TEST_F(ArchiveCmdTest, FailedLoadOfBareTagIsStillOneLine) {
  std::vector<Digest> ids = {Digest::Sha256Of("a")};
  BuiltImage image = BuildImage(TwoLayers(), true, "bad", ConfigJson(ids, "bad"));
  ExpectLoadFails(TarOf(OciLayout({{&image, "latest"}})), "rootfs.diff_ids has 1 entries");
}

TEST_F(ArchiveCmdTest, LoadDiffIdValueMismatchUncompressed) {
  BuiltImage image = BuildImage(TwoLayers(), false, "bad",
                                ConfigJson({Digest::Sha256Of("a"), Digest::Sha256Of("b")}, "bad"));
  ExpectLoadFails(TarOf(OciLayout({{&image, "example.com/bad:1"}})),
                  "does not match config rootfs.diff_ids[0]");
}

TEST_F(ArchiveCmdTest, LoadDiffIdValueMismatchCompressed) {
  // Only visible once the layer is decompressed, which the unpack does before
  // any tag is set.
  BuiltImage good = BuildImage(TwoLayers(), true, "bad");
  std::vector<Digest> ids = good.diff_ids;
  ids[1] = Digest::Sha256Of("something else");
  BuiltImage image = BuildImage(TwoLayers(), true, "bad", ConfigJson(ids, "bad"));
  ExpectLoadFails(TarOf(OciLayout({{&image, "example.com/bad:1"}})), ids[1].ToString());
}

TEST_F(ArchiveCmdTest, LoadMalformedManifest) {
  Files files = OciLayout({{&two_layer_, "example.com/two:1"}});
  std::string broken = R"({"schemaVersion":2,"config":)";
  files.erase(BlobPath(two_layer_.manifest));
  files[BlobPath(broken)] = broken;
  nlohmann::json index = nlohmann::json::parse(files["index.json"]);
  index["manifests"][0]["digest"] = Digest::Sha256Of(broken).ToString();
  index["manifests"][0]["size"] = broken.size();
  files["index.json"] = index.dump();
  ExpectLoadFails(TarOf(files), "manifest " + Digest::Sha256Of(broken).ToString());
}

TEST_F(ArchiveCmdTest, LoadManifestOfWrongShape) {
  Files files = OciLayout({{&two_layer_, "example.com/two:1"}});
  std::string wrong =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:zz","size":1},"layers":[]})";
  files.erase(BlobPath(two_layer_.manifest));
  files[BlobPath(wrong)] = wrong;
  nlohmann::json index = nlohmann::json::parse(files["index.json"]);
  index["manifests"][0]["digest"] = Digest::Sha256Of(wrong).ToString();
  index["manifests"][0]["size"] = wrong.size();
  files["index.json"] = index.dump();
  ExpectLoadFails(TarOf(files), "config.digest");
}

TEST_F(ArchiveCmdTest, LoadMalformedIndexAndDockerManifest) {
  Files files = OciLayout({{&two_layer_, "example.com/two:1"}});
  files["index.json"] = "{\"schemaVersion\":2,\"manifests\":[";
  ExpectLoadFails(TarOf(files), "index.json");
  Files docker = DockerArchive({{&two_layer_, "two:1"}});
  docker["manifest.json"] = "[{\"Config\":";
  ExpectLoadFails(TarOf(docker), "manifest.json: malformed JSON");
  docker["manifest.json"] = R"([{"Config":"x.json","Layers":"nope"}])";
  ExpectLoadFails(TarOf(docker), "manifest.json: [0].Layers: missing or not an array");
}

TEST_F(ArchiveCmdTest, LoadRefusesEntriesOutsideTheArchive) {
  Files files = OciLayout({{&two_layer_, "example.com/two:1"}});
  std::vector<TarEntry> entries;
  for (const auto& [name, data] : files) entries.push_back({name, data});
  entries.push_back({"../../etc/evil", "x"});
  ExpectLoadFails(MakeTar(entries), "\"../../etc/evil\": path leads outside the archive");
}

TEST_F(ArchiveCmdTest, SaveErrors) {
  ExpectError(Imgtool({"save", "nope", "-o", (Work() / "x.tar").string()}),
              "save nope: image \"docker.io/library/nope:latest\" not found");
  EXPECT_FALSE(fs::exists(Work() / "x.tar"));
  ExpectError(Imgtool({"save", "--format", "oci-dir", "nope"}), "oci-dir needs -o DIRECTORY");
  CommandResult bad_format = Imgtool({"save", "--format", "zip", "-o", "x", "nope"});
  EXPECT_EQ(bad_format.exit_code, 125);
  EXPECT_NE(bad_format.err.find("--format"), std::string::npos) << bad_format.err;
}

TEST_F(ArchiveCmdTest, SaveOfDamagedBlobLeavesNoFile) {
  fs::path tar = RootfsTar();
  Ok({"import", tar.string(), "app"});
  std::string layer = Inspect("app")["Layers"][0];
  fs::path blob = Root() / "blobs" / "sha256" / layer.substr(7);
  std::string content = ReadTestFile(blob);
  content[content.size() / 3] ^= 0x20;
  ::chmod(blob.c_str(), 0644);
  WriteTestFile(blob, content);
  for (const char* format : {"oci-archive", "docker-archive", "oci-dir"}) {
    SCOPED_TRACE(format);
    fs::path out = Work() / (std::string("damaged.") + format);
    CommandResult r = Imgtool({"save", "--format", format, "-o", out.string(), "app"});
    ExpectError(r, layer.substr(0, 19));
    EXPECT_FALSE(fs::exists(out));
  }
  // Nothing but the store itself in the work directory: no temporary leftovers.
  for (const auto& entry : fs::directory_iterator(Work())) {
    std::string name = entry.path().filename().string();
    EXPECT_FALSE(name.starts_with(".damaged")) << name;
  }
}

TEST_F(ArchiveCmdTest, SkopeoReadsSavedArchives) {
  IMGTOOL_REQUIRE_COMMAND("skopeo");
  fs::path oci =
      WriteArchive("two.oci.tar", TarOf(OciLayout({{&two_layer_, "example.com/two:1"}})));
  Ok({"load", "-i", oci.string()});
  fs::path out_oci = Work() / "s.oci.tar";
  fs::path out_docker = Work() / "s.docker.tar";
  Ok({"save", "--format", "oci-archive", "-o", out_oci.string(), "example.com/two:1"});
  Ok({"save", "--format", "docker-archive", "-o", out_docker.string(), "example.com/two:1"});
  CommandResult oci_inspect = ::imgtool::testing::RunCommand(
      {"skopeo", "inspect", "oci-archive:" + out_oci.string() + ":example.com/two:1"});
  ASSERT_EQ(oci_inspect.exit_code, 0) << Describe(oci_inspect);
  EXPECT_EQ(nlohmann::json::parse(oci_inspect.out)["Digest"],
            two_layer_.ManifestDigest().ToString());
  CommandResult docker_inspect = ::imgtool::testing::RunCommand(
      {"skopeo", "inspect", "--config", "docker-archive:" + out_docker.string()});
  ASSERT_EQ(docker_inspect.exit_code, 0) << Describe(docker_inspect);
  nlohmann::json config = nlohmann::json::parse(docker_inspect.out);
  EXPECT_EQ(config["rootfs"]["diff_ids"][1], two_layer_.diff_ids[1].ToString());
}

// ---- hostile layers, end to end ---------------------------------------------
// Each is refused with one line naming the entry (or confined to the
// snapshot), nothing lands outside the store, and fsck stays clean.

class HostileLayerTest : public ArchiveCmdTest {
 protected:
  static constexpr const char* kMarker = "imgtool-hostile-marker";

  fs::path ArchiveOf(const std::string& layer_blob) {
    BuiltImage image = BuildImage({layer_blob}, /*gzip=*/false, "hostile");
    return WriteArchive("hostile.tar", TarOf(OciLayout({{&image, "example.com/hostile:1"}})));
  }

  // The marker file appears nowhere but inside the store's state (where a
  // confined write lands): not in the work dir, not in /tmp.
  void ExpectNoMarkerOutside() {
    fs::path state = Work() / "root-state";
    for (auto it = fs::recursive_directory_iterator(Work()); it != fs::recursive_directory_iterator();
         ++it) {
      if (it->path() == state) {
        it.disable_recursion_pending();
        continue;
      }
      EXPECT_NE(it->path().filename(), kMarker) << it->path();
    }
    EXPECT_FALSE(fs::exists(fs::path("/tmp") / kMarker));
    EXPECT_FALSE(fs::exists(Work().parent_path() / kMarker));
  }

  void ExpectRefused(const std::string& layer_blob, const std::string& want) {
    ExpectError(Imgtool({"load", "-i", ArchiveOf(layer_blob).string()}), want);
    ExpectNothingTagged(Root());
    ExpectNoMarkerOutside();
  }
};

TEST_F(HostileLayerTest, PathTraversal) {
  std::string name = std::string("../../../") + kMarker;
  ExpectRefused(MakeTar({{name, "x"}}), "entry \"" + name + "\": path leads outside the root");
}

TEST_F(HostileLayerTest, AbsolutePath) {
  std::string name = std::string("/tmp/") + kMarker;
  ExpectRefused(MakeTar({{name, "x"}}), "entry \"" + name + "\"");
}

TEST_F(HostileLayerTest, HardlinkToAFileOutside) {
  ExpectRefused(MakeTar({{"h", "", 'h', "../../../../../../etc/passwd"}}), "entry \"h\"");
  ExpectRefused(MakeTar({{"h", "", 'h', "/etc/passwd"}}), "entry \"h\"");
}

TEST_F(HostileLayerTest, WhiteoutWithTraversal) {
  ExpectRefused(MakeTar({{"a", "", 'd', "", 0755}, {"a/.wh...", ""}}), "entry \"a/.wh...\"");
  std::string name = std::string(".wh.../../") + kMarker;
  ExpectRefused(MakeTar({{name, ""}}), "entry \"" + name + "\"");
}

TEST_F(HostileLayerTest, TruncatedTarAndTruncatedGzip) {
  std::string tar = MakeTar({{"big", std::string(256 * 1024, 'x')}, {"after", "y"}});
  ExpectRefused(tar.substr(0, 100 * 1024), "layer");
  std::string gz = Gzip(MakeTar({{"big", std::string(1 << 20, 'z')}, {"after", "y"}}));
  ExpectRefused(gz.substr(0, gz.size() / 2), "gzip: stream truncated");
}

TEST_F(HostileLayerTest, SymlinkEscapeThenWriteThroughIsConfined) {
  // The write resolves inside the snapshot as if it were "/": the load works
  // and the file lands inside the store's state, never in /tmp.
  fs::path archive = ArchiveOf(MakeTar({{"evil", "", 'l', "/tmp"},
                                        {std::string("evil/") + kMarker, "pwned"},
                                        {"up", "", 'l', "../../../../../../../.."},
                                        {std::string("up/") + kMarker + "2", "pwned"}}));
  Ok({"load", "-i", archive.string()});
  ExpectNoMarkerOutside();
  EXPECT_FALSE(fs::exists(fs::path("/") / (std::string(kMarker) + "2")));
  CommandResult fsck = Imgtool({"fsck"});
  EXPECT_EQ(fsck.exit_code, 0) << Describe(fsck);
  // export shows the file where the layer's own root put it.
  fs::path rootfs = Work() / "rootfs.tar";
  Ok({"export", "-o", rootfs.string(), "example.com/hostile:1"});
  CommandResult listing = ::imgtool::testing::RunCommand({"tar", "-tf", rootfs.string()});
  ASSERT_EQ(listing.exit_code, 0) << Describe(listing);
  EXPECT_NE(listing.out.find(std::string("tmp/") + kMarker + "\n"), std::string::npos)
      << listing.out;
}

}  // namespace
}  // namespace imgtool::cli::testing
