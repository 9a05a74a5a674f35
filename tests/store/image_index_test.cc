#include "store/image_index.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>

#include "common/file_util.h"
#include "common/temp_dir.h"
#include "store/store.h"
#include "tests/store/store_test_util.h"
#include "tests/support/test_util.h"

namespace imgtool::store {
namespace {

namespace fs = std::filesystem;
using testing::Ref;
using testing::WriteTestImage;

Descriptor ManifestDescriptor(char c, int64_t size = 10) {
  Descriptor d;
  d.media_type = std::string(media_type::kOciManifest);
  d.digest = *Digest::Parse("sha256:" + std::string(64, c));
  d.size = size;
  return d;
}

class ImageIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("store-index-");
    ASSERT_TRUE(dir);
    dir_ = std::make_unique<TempDir>(std::move(dir).value());
    index_ = std::make_unique<ImageIndex>(dir_->path());
    ASSERT_TRUE(index_->InitIfMissing());
  }
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<ImageIndex> index_;
};

TEST_F(ImageIndexTest, InitWritesEmptyIndex) {
  EXPECT_EQ(::imgtool::testing::ReadTestFile(dir_->path() / "index.json"),
            R"({"schemaVersion":2,"manifests":[]})");
  EXPECT_TRUE(index_->List()->empty());
}

TEST_F(ImageIndexTest, SetResolveReplaceRemove) {
  ASSERT_TRUE(index_->Set(Ref("busybox"), ManifestDescriptor('a')));
  Result<Descriptor> got = index_->Resolve(Ref("docker.io/library/busybox:latest"));
  ASSERT_TRUE(got) << got.error().ToString();
  EXPECT_EQ(got->digest, ManifestDescriptor('a').digest);
  EXPECT_EQ(got->RefName(), "docker.io/library/busybox:latest");

  // Same tag again moves it.
  ASSERT_TRUE(index_->Set(Ref("busybox:latest"), ManifestDescriptor('b')));
  EXPECT_EQ(index_->List()->size(), 1u);
  EXPECT_EQ(index_->Resolve(Ref("busybox"))->digest, ManifestDescriptor('b').digest);

  ASSERT_TRUE(index_->Remove(Ref("busybox")));
  Result<Descriptor> gone = index_->Resolve(Ref("busybox"));
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(gone.error().message(), "image \"docker.io/library/busybox:latest\" not found");
  EXPECT_EQ(index_->Remove(Ref("busybox")).error().code(), ErrorCode::kNotFound);
}

TEST_F(ImageIndexTest, EntriesAreSortedAndFileIsDeterministic) {
  ASSERT_TRUE(index_->Set(Ref("zed"), ManifestDescriptor('1')));
  ASSERT_TRUE(index_->Set(Ref("alpha:2"), ManifestDescriptor('2')));
  ASSERT_TRUE(index_->Set(Ref("quay.io/m/n"), ManifestDescriptor('3')));
  std::vector<ImageEntry> entries = *index_->List();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].name, "docker.io/library/alpha:2");
  EXPECT_EQ(entries[1].name, "docker.io/library/zed:latest");
  EXPECT_EQ(entries[2].name, "quay.io/m/n:latest");
  std::string first = ::imgtool::testing::ReadTestFile(dir_->path() / "index.json");

  // The same tags set in another order give the same bytes.
  TempDir other = std::move(TempDir::Create("store-index-")).value();
  ImageIndex index2(other.path());
  ASSERT_TRUE(index2.Set(Ref("quay.io/m/n"), ManifestDescriptor('3')));
  ASSERT_TRUE(index2.Set(Ref("zed"), ManifestDescriptor('1')));
  ASSERT_TRUE(index2.Set(Ref("alpha:2"), ManifestDescriptor('2')));
  EXPECT_EQ(::imgtool::testing::ReadTestFile(other.path() / "index.json"), first);
  Result<Index> parsed = ParseIndex(first);
  ASSERT_TRUE(parsed) << parsed.error().ToString();
}

TEST_F(ImageIndexTest, ResolveByDigestReference) {
  Descriptor d = ManifestDescriptor('a');
  ASSERT_TRUE(index_->Set(Ref("app:1"), d));
  Result<Descriptor> got = index_->Resolve(Ref("app@" + d.digest.ToString()));
  ASSERT_TRUE(got) << got.error().ToString();
  EXPECT_EQ(got->digest, d.digest);
  // Another repository with the same content does not count.
  EXPECT_FALSE(index_->Resolve(Ref("other@" + d.digest.ToString())));
  // A digest reference can itself be an entry.
  ASSERT_TRUE(index_->Set(Ref("other@" + d.digest.ToString()), d));
  EXPECT_TRUE(index_->Resolve(Ref("other@" + d.digest.ToString())));
}

TEST_F(ImageIndexTest, FindByDigestAndRemoveDigest) {
  ASSERT_TRUE(index_->Set(Ref("a:1"), ManifestDescriptor('a')));
  ASSERT_TRUE(index_->Set(Ref("a:2"), ManifestDescriptor('a')));
  ASSERT_TRUE(index_->Set(Ref("b:1"), ManifestDescriptor('b')));
  EXPECT_EQ(index_->FindByDigest(ManifestDescriptor('a').digest)->size(), 2u);
  EXPECT_EQ(*index_->RemoveDigest(ManifestDescriptor('a').digest), 2);
  EXPECT_EQ(index_->List()->size(), 1u);
}

TEST_F(ImageIndexTest, IdPrefixLookup) {
  Descriptor a = ManifestDescriptor('a');
  a.digest = *Digest::Parse("sha256:3f2a" + std::string(60, '0'));
  Descriptor b = ManifestDescriptor('b');
  b.digest = *Digest::Parse("sha256:3f2b" + std::string(60, '0'));
  ASSERT_TRUE(index_->Set(Ref("a"), a));
  ASSERT_TRUE(index_->Set(Ref("a:alias"), a));
  ASSERT_TRUE(index_->Set(Ref("b"), b));

  Result<ImageEntry> found = index_->FindByIdPrefix("3f2a");
  ASSERT_TRUE(found) << found.error().ToString();
  EXPECT_EQ(found->descriptor.digest, a.digest);  // two tags, one image: not ambiguous
  EXPECT_EQ(index_->FindByIdPrefix("sha256:3f2b")->descriptor.digest, b.digest);

  Result<ImageEntry> ambiguous = index_->FindByIdPrefix("3f2");
  ASSERT_FALSE(ambiguous);
  EXPECT_EQ(ambiguous.error().code(), ErrorCode::kInvalidArgument);  // too short
  Descriptor c = ManifestDescriptor('c');
  c.digest = *Digest::Parse("sha256:3f2a1" + std::string(59, '0'));
  ASSERT_TRUE(index_->Set(Ref("c"), c));
  ambiguous = index_->FindByIdPrefix("3f2a");
  ASSERT_FALSE(ambiguous);
  EXPECT_EQ(ambiguous.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(ambiguous.error().message().find("is ambiguous"), std::string::npos)
      << ambiguous.error().message();
  EXPECT_EQ(index_->FindByIdPrefix("3f2a1")->descriptor.digest, c.digest);

  EXPECT_EQ(index_->FindByIdPrefix("ffff").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(index_->FindByIdPrefix("XYZW").error().code(), ErrorCode::kInvalidArgument);
}

TEST(ImageIndexConfigIdTest, PrefixMatchesConfigDigest) {
  TempDir dir = std::move(TempDir::Create("store-index-")).value();
  auto store = std::move(Store::Open(dir.path())).value();
  testing::TestImage image = WriteTestImage(*store, {"layer"});
  ASSERT_TRUE(store->index().Set(Ref("img"), image.manifest));
  std::string config_prefix = image.config.digest.hex().substr(0, 12);
  Result<ImageEntry> found = store->index().FindByIdPrefix(config_prefix);
  ASSERT_TRUE(found) << found.error().ToString();
  EXPECT_EQ(found->descriptor.digest, image.manifest.digest);
  // Without a content store only manifest digests can match.
  ImageIndex bare(dir.path());
  if (!image.manifest.digest.hex().starts_with(config_prefix)) {
    EXPECT_EQ(bare.FindByIdPrefix(config_prefix).error().code(), ErrorCode::kNotFound);
  }
}

TEST_F(ImageIndexTest, ReadersAlwaysSeeAWholeFile) {
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0};
  std::atomic<int> bad{0};
  std::thread reader([&] {
    while (!stop) {
      Result<std::string> text = ReadFileToString(dir_->path() / "index.json");
      if (!text || !ParseIndex(*text)) ++bad;
      ++reads;
    }
  });
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(
        index_->Set(Ref("img:t" + std::to_string(i % 20)), ManifestDescriptor('a' + i % 6)));
  }
  stop = true;
  reader.join();
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(ImageIndexTest, ConcurrentThreadsLoseNoTag) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      ImageIndex own(dir_->path());  // as another user of the root would
      for (int i = 0; i < 20; ++i) {
        if (!own.Set(Ref("t" + std::to_string(t) + ":" + std::to_string(i)),
                     ManifestDescriptor('a' + t % 6))) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(index_->List()->size(), 160u);
}

TEST_F(ImageIndexTest, ConcurrentProcessesLoseNoTag) {
  std::vector<pid_t> children;
  for (int p = 0; p < 8; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ImageIndex own(dir_->path());
      for (int i = 0; i < 20; ++i) {
        Reference ref = *ParseReference("p" + std::to_string(p) + ":" + std::to_string(i));
        if (!own.Set(ref, ManifestDescriptor('a' + p % 6))) ::_exit(1);
      }
      ::_exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  Result<std::vector<ImageEntry>> entries = index_->List();
  ASSERT_TRUE(entries);
  EXPECT_EQ(entries->size(), 160u);
  std::set<std::string> names;
  for (const ImageEntry& e : *entries) names.insert(e.name);
  EXPECT_EQ(names.size(), 160u);
  EXPECT_TRUE(names.contains("docker.io/library/p7:19"));
}

// Entries read once are kept for the same file only: a change made through
// another ImageIndex (another process) is seen by the next read.
TEST_F(ImageIndexTest, ReadsAfterAnotherWriterSeeItsChange) {
  ASSERT_TRUE(index_->Set(Ref("busybox"), ManifestDescriptor('a')));
  ASSERT_EQ(index_->List()->size(), 1u);
  EXPECT_EQ(index_->Resolve(Ref("busybox"))->digest, ManifestDescriptor('a').digest);

  ImageIndex other(dir_->path());
  ASSERT_TRUE(other.Set(Ref("alpine"), ManifestDescriptor('b')));
  ASSERT_TRUE(other.Set(Ref("busybox"), ManifestDescriptor('c')));
  EXPECT_EQ(index_->List()->size(), 2u);
  EXPECT_EQ(index_->Resolve(Ref("busybox"))->digest, ManifestDescriptor('c').digest);
  ASSERT_TRUE(other.Remove(Ref("alpine")));
  EXPECT_EQ(index_->Resolve(Ref("alpine")).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(index_->List()->size(), 1u);
}

TEST_F(ImageIndexTest, CorruptIndexIsAnErrorNamingTheFile) {
  ::imgtool::testing::WriteTestFile(dir_->path() / "index.json", "{\"schemaVersion\":2,");
  Result<std::vector<ImageEntry>> entries = index_->List();
  ASSERT_FALSE(entries);
  EXPECT_EQ(entries.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(entries.error().message().find("index.json: malformed JSON"), std::string::npos)
      << entries.error().message();
  // And a change refuses to overwrite it.
  EXPECT_FALSE(index_->Set(Ref("x"), ManifestDescriptor('a')));
}

}  // namespace
}  // namespace imgtool::store
