#include "store/content_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/file_util.h"
#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool::store {
namespace {

namespace fs = std::filesystem;

class ContentStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("store-content-");
    ASSERT_TRUE(dir) << dir.error().ToString();
    dir_ = std::make_unique<TempDir>(std::move(dir).value());
    Result<std::unique_ptr<LocalContentStore>> store = LocalContentStore::Open(root());
    ASSERT_TRUE(store) << store.error().ToString();
    store_ = std::move(store).value();
  }

  fs::path root() const { return dir_->path(); }
  size_t CountFiles(const fs::path& dir) const {
    size_t n = 0;
    for (auto it = fs::directory_iterator(dir); it != fs::directory_iterator(); ++it) ++n;
    return n;
  }
  void Corrupt(const Digest& d, std::string_view content) {
    fs::path p = store_->BlobPath(d);
    ::chmod(p.c_str(), 0644);
    ::imgtool::testing::WriteTestFile(p, content);
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<LocalContentStore> store_;
};

TEST_F(ContentStoreTest, OpenCreatesLayout) {
  EXPECT_TRUE(fs::is_directory(root() / "blobs" / "sha256"));
  EXPECT_TRUE(fs::is_directory(root() / "ingest"));
}

TEST_F(ContentStoreTest, CommitWithExpectedSizeAndDigest) {
  std::string data = "hello, blob";
  Digest want = Digest::Sha256Of(data);
  Result<std::unique_ptr<IngestWriter>> w = store_->Writer();
  ASSERT_TRUE(w) << w.error().ToString();
  EXPECT_EQ((*w)->digest().error().code(), ErrorCode::kFailedPrecondition);
  ASSERT_TRUE((*w)->Write(data.data(), 5));
  ASSERT_TRUE((*w)->Write(data.data() + 5, data.size() - 5));
  EXPECT_EQ((*w)->written(), static_cast<int64_t>(data.size()));
  Status s = (*w)->Commit(static_cast<int64_t>(data.size()), want);
  ASSERT_TRUE(s) << s.error().ToString();
  EXPECT_EQ(*(*w)->digest(), want);

  EXPECT_TRUE(store_->Exists(want));
  EXPECT_EQ(*store_->Size(want), static_cast<int64_t>(data.size()));
  EXPECT_EQ(::imgtool::testing::ReadTestFile(root() / "blobs/sha256" / want.hex()), data);
  EXPECT_EQ(*store_->ReadBlob(want), data);
  EXPECT_EQ(CountFiles(root() / "ingest"), 0u);
  // Blobs are immutable on disk.
  struct stat st {};
  ASSERT_EQ(::stat(store_->BlobPath(want).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
}

TEST_F(ContentStoreTest, CommitWithUnknownSizeAndDigest) {
  Digest got;
  ASSERT_TRUE(store_->WriteBlob("abc", &got));
  EXPECT_EQ(got, Digest::Sha256Of("abc"));
  EXPECT_TRUE(store_->Exists(got));
}

TEST_F(ContentStoreTest, WrongDigestIsDataLossAndLeavesNothing) {
  auto w = std::move(store_->Writer()).value();
  ASSERT_TRUE(w->Write("abc", 3));
  Digest wrong = Digest::Sha256Of("abd");
  Status s = w->Commit(3, wrong);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kDataLoss);
  EXPECT_EQ(s.error().message(), "blob digest mismatch: expected " + wrong.ToString() + ", got " +
                                     Digest::Sha256Of("abc").ToString() + " (3 bytes)");
  EXPECT_FALSE(store_->Exists(wrong));
  EXPECT_FALSE(store_->Exists(Digest::Sha256Of("abc")));
  EXPECT_EQ(CountFiles(root() / "ingest"), 0u);
  EXPECT_EQ(CountFiles(root() / "blobs/sha256"), 0u);
  EXPECT_FALSE(w->Write("x", 1));  // the ingest is closed
}

TEST_F(ContentStoreTest, WrongSizeIsDataLoss) {
  auto w = std::move(store_->Writer()).value();
  ASSERT_TRUE(w->Write("abc", 3));
  Status s = w->Commit(4, Digest());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kDataLoss);
  EXPECT_NE(s.error().message().find("size mismatch: expected 4 bytes, got 3"), std::string::npos)
      << s.error().message();
  EXPECT_EQ(CountFiles(root() / "ingest"), 0u);
  EXPECT_EQ(CountFiles(root() / "blobs/sha256"), 0u);
}

TEST_F(ContentStoreTest, ExistingBlobIsSuccessAndUntouched) {
  Digest d;
  ASSERT_TRUE(store_->WriteBlob("same", &d));
  struct stat before {};
  ASSERT_EQ(::stat(store_->BlobPath(d).c_str(), &before), 0);
  auto w = std::move(store_->Writer()).value();
  ASSERT_TRUE(w->Write("same", 4));
  Status s = w->Commit(4, d);
  ASSERT_TRUE(s) << s.error().ToString();
  EXPECT_EQ(*w->digest(), d);
  struct stat after {};
  ASSERT_EQ(::stat(store_->BlobPath(d).c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);  // readers of the old file are undisturbed
  EXPECT_EQ(CountFiles(root() / "ingest"), 0u);
}

TEST_F(ContentStoreTest, CommitReplacesATruncatedBlob) {
  Digest d;
  ASSERT_TRUE(store_->WriteBlob("complete content", &d));
  Corrupt(d, "compl");
  ASSERT_TRUE(store_->WriteBlob("complete content"));
  EXPECT_EQ(*store_->ReadBlob(d), "complete content");
}

TEST_F(ContentStoreTest, AbortAndDestructorRemoveIngest) {
  {
    auto w = std::move(store_->Writer()).value();
    ASSERT_TRUE(w->Write("partial", 7));
    EXPECT_EQ(CountFiles(root() / "ingest"), 1u);
  }
  EXPECT_EQ(CountFiles(root() / "ingest"), 0u);
  auto w = std::move(store_->Writer()).value();
  ASSERT_TRUE(w->Write("partial", 7));
  w->Abort();
  w->Abort();
  EXPECT_EQ(CountFiles(root() / "ingest"), 0u);
  EXPECT_FALSE(w->Commit(-1, Digest()));
  EXPECT_EQ(CountFiles(root() / "blobs/sha256"), 0u);
}

TEST_F(ContentStoreTest, VerifiedReadsDetectCorruption) {
  Digest d;
  ASSERT_TRUE(store_->WriteBlob("original content", &d));
  Corrupt(d, "tampered content");  // same size, different bytes

  Result<std::string> whole = store_->ReadBlob(d);
  ASSERT_FALSE(whole);
  EXPECT_EQ(whole.error().code(), ErrorCode::kDataLoss);
  EXPECT_EQ(whole.error().message(), "blob " + d.ToString() + ": content hashes to " +
                                         Digest::Sha256Of("tampered content").ToString());

  // Streaming: the bytes come through, and the error comes at EOF.
  Result<BlobReader> reader = store_->Open(d);
  ASSERT_TRUE(reader);
  char buf[64];
  Result<size_t> n = reader->Read(buf, sizeof(buf));
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 16u);
  Result<size_t> eof = reader->Read(buf, sizeof(buf));
  ASSERT_FALSE(eof);
  EXPECT_EQ(eof.error().code(), ErrorCode::kDataLoss);

  // OpenRaw does not verify: it is for callers that hash on their own.
  Result<UniqueFd> raw = store_->OpenRaw(d);
  ASSERT_TRUE(raw);
  EXPECT_EQ(*ReadFdToString(raw->get()), "tampered content");
}

TEST_F(ContentStoreTest, VerifiedReadDetectsTruncationAndGrowth) {
  Digest d;
  ASSERT_TRUE(store_->WriteBlob("0123456789", &d));
  Result<BlobReader> reader = store_->Open(d);  // size recorded as 10
  ASSERT_TRUE(reader);
  Corrupt(d, "01234");  // truncates the same inode
  StringSink sink;
  Status s = reader->CopyTo(sink);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(), "blob " + d.ToString() + ": ended after 5 of 10 bytes");

  Corrupt(d, "0123456789 and more");
  Result<std::string> grown = store_->ReadBlob(d);
  ASSERT_FALSE(grown);
  EXPECT_EQ(grown.error().code(), ErrorCode::kDataLoss);
}

TEST_F(ContentStoreTest, ReadBlobRespectsMaxSize) {
  Digest d;
  ASSERT_TRUE(store_->WriteBlob(std::string(100, 'x'), &d));
  Result<std::string> r = store_->ReadBlob(d, 10);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(ContentStoreTest, MissingBlobIsNotFound) {
  Digest d = Digest::Sha256Of("nope");
  EXPECT_FALSE(store_->Exists(d));
  EXPECT_EQ(store_->Open(d).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->OpenRaw(d).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->Size(d).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->Delete(d).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->ReadBlob(d).error().message(), "blob " + d.ToString() + " not found");
}

TEST_F(ContentStoreTest, ListDeleteAndStrays) {
  Digest a, b;
  ASSERT_TRUE(store_->WriteBlob("a", &a));
  ASSERT_TRUE(store_->WriteBlob("bb", &b));
  ::imgtool::testing::WriteTestFile(root() / "blobs/sha256/not-a-digest", "x");
  fs::create_directory(root() / "blobs/sha256" / std::string(64, '0'));
  Result<std::vector<BlobInfo>> list = store_->List();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_TRUE((*list)[0].digest < (*list)[1].digest);
  for (const BlobInfo& info : *list) {
    EXPECT_EQ(info.size, info.digest == a ? 1 : 2);
  }
  Result<std::vector<std::string>> strays = store_->StrayFiles();
  ASSERT_TRUE(strays);
  EXPECT_EQ(*strays, (std::vector<std::string>{std::string(64, '0'), "not-a-digest"}));

  ASSERT_TRUE(store_->Delete(a));
  EXPECT_FALSE(store_->Exists(a));
  EXPECT_EQ(store_->List()->size(), 1u);
}

TEST_F(ContentStoreTest, ConcurrentWritersOfTheSameBlob) {
  std::string data(1 << 20, 'z');
  Digest want = Digest::Sha256Of(data);
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      Status s = store_->WriteBlob(data);
      ok[i] = s ? 1 : 0;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int v : ok) EXPECT_EQ(v, 1);
  EXPECT_EQ(*store_->ReadBlob(want), data);
  EXPECT_EQ(CountFiles(root() / "ingest"), 0u);
}

TEST_F(ContentStoreTest, StaleIngestCleanupSkipsLiveWriters) {
  auto live = std::move(store_->Writer()).value();
  ASSERT_TRUE(live->Write("live", 4));
  ::imgtool::testing::WriteTestFile(root() / "ingest/old-abandoned", "junk");
  ::imgtool::testing::WriteTestFile(root() / "ingest/new-abandoned", "junk");
  // Age two of them past the limit.
  struct timespec old_times[2] = {{::time(nullptr) - 7200, 0}, {::time(nullptr) - 7200, 0}};
  for (const auto& entry : fs::directory_iterator(root() / "ingest")) {
    if (entry.path().filename() != "new-abandoned") {
      ASSERT_EQ(::utimensat(AT_FDCWD, entry.path().c_str(), old_times, 0), 0);
    }
  }
  Result<int> removed = store_->CleanStaleIngests(LocalContentStore::kStaleIngestAge);
  ASSERT_TRUE(removed);
  EXPECT_EQ(*removed, 1);  // old-abandoned only: the live one is locked, the new one young
  EXPECT_FALSE(fs::exists(root() / "ingest/old-abandoned"));
  EXPECT_TRUE(fs::exists(root() / "ingest/new-abandoned"));
  ASSERT_TRUE(live->Commit(4, Digest::Sha256Of("live")));

  // A reopened store cleans what is stale when it first writes; a store only
  // opened (to read, as `imgtool run` does) leaves ingest/ alone.
  ASSERT_EQ(::utimensat(AT_FDCWD, (root() / "ingest/new-abandoned").c_str(), old_times, 0), 0);
  auto reopened = LocalContentStore::Open(root());
  ASSERT_TRUE(reopened);
  EXPECT_TRUE(fs::exists(root() / "ingest/new-abandoned"));
  auto writer = (*reopened)->Writer();
  ASSERT_TRUE(writer) << writer.error().ToString();
  EXPECT_FALSE(fs::exists(root() / "ingest/new-abandoned"));
}

// A forked writer killed with SIGKILL mid-blob must leave no blob behind, only
// an ingest file, and must not stop a later write of the same content.
TEST_F(ContentStoreTest, KillDashNineMidIngestLeavesNoPartialBlob) {
  const size_t kChunk = 1 << 20;
  const size_t kChunks = 64;
  std::string chunk(kChunk, '\0');
  for (size_t i = 0; i < kChunk; ++i) chunk[i] = static_cast<char>(i * 7 + 3);
  Sha256Hasher hasher;
  for (size_t i = 0; i < kChunks; ++i) hasher.Update(chunk);
  Digest full = hasher.Finish();

  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  UniqueFd ready_read(ready[0]), ready_write(ready[1]);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: write slowly forever after announcing the first chunk.
    auto child_store = LocalContentStore::Open(root());
    if (!child_store) ::_exit(2);
    auto w = (*child_store)->Writer();
    if (!w) ::_exit(3);
    for (size_t i = 0;; ++i) {
      if (!(*w)->Write(chunk.data(), chunk.size())) ::_exit(4);
      if (i == 3) {
        char c = 'r';
        if (::write(ready_write.get(), &c, 1) != 1) ::_exit(5);
      }
      if (i + 1 == kChunks - 1) ::pause();  // never reaches the end
    }
  }
  // Reaps the child on every path out of this test.
  struct Child {
    pid_t pid;
    int status = 0;
    bool reaped = false;
    void KillAndReap() {
      if (reaped) return;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      reaped = true;
    }
    ~Child() { KillAndReap(); }
  } child{pid};
  ready_write.reset();
  char c;
  ASSERT_EQ(::read(ready_read.get(), &c, 1), 1) << "child did not start writing";
  child.KillAndReap();
  ASSERT_TRUE(WIFSIGNALED(child.status));
  EXPECT_EQ(WTERMSIG(child.status), SIGKILL);

  EXPECT_EQ(CountFiles(root() / "blobs/sha256"), 0u);
  EXPECT_FALSE(store_->Exists(full));
  EXPECT_EQ(store_->List()->size(), 0u);
  EXPECT_EQ(CountFiles(root() / "ingest"), 1u);  // the abandoned ingest, never a blob

  auto w = std::move(store_->Writer()).value();
  for (size_t i = 0; i < kChunks; ++i) ASSERT_TRUE(w->Write(chunk.data(), chunk.size()));
  Status s = w->Commit(static_cast<int64_t>(kChunk * kChunks), full);
  ASSERT_TRUE(s) << s.error().ToString();
  EXPECT_TRUE(store_->Exists(full));

  // The killed writer's lock died with it, so cleanup may take its file.
  Result<int> removed = store_->CleanStaleIngests(std::chrono::seconds(0));
  ASSERT_TRUE(removed);
  EXPECT_EQ(*removed, 1);
  EXPECT_EQ(CountFiles(root() / "ingest"), 0u);
}

}  // namespace
}  // namespace imgtool::store
