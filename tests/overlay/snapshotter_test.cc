// Snapshotter conformance, metadata only (no mounts, no root): a typed suite
// over a factory, so another Snapshotter implementation runs the same cases by
// adding its factory to the INSTANTIATE line at the bottom.
#include "overlay/snapshotter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool::overlay {
namespace conformance {

// Named (not anonymous) so that ctest's test names read
// "Snapshotter.Case<imgtool::overlay::conformance::OverlayFactory>".
struct OverlayFactory {
  static Result<std::unique_ptr<Snapshotter>> Open(const std::filesystem::path& root) {
    IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<OverlaySnapshotter> snapshotter,
                             OverlaySnapshotter::Open(root));
    return std::unique_ptr<Snapshotter>(std::move(snapshotter));
  }
};

}  // namespace conformance

namespace {

using conformance::OverlayFactory;

namespace fs = std::filesystem;
using ::imgtool::testing::ReadTestFile;
using ::imgtool::testing::WriteTestFile;
using ::testing::HasSubstr;

// The lower paths of an overlay mount, topmost first.
std::vector<std::string> LowerDirs(const Mount& mount) {
  std::vector<std::string> lowers;
  for (const std::string& option : mount.options) {
    if (option.rfind("lowerdir=", 0) != 0) continue;
    std::string value = option.substr(9);
    size_t start = 0;
    while (true) {
      size_t colon = value.find(':', start);
      lowers.push_back(value.substr(start, colon - start));
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  return lowers;
}

bool HasOption(const Mount& mount, const std::string& option) {
  return std::find(mount.options.begin(), mount.options.end(), option) != mount.options.end();
}

template <typename Factory>
class SnapshotterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("imgtool-snapshotter-test-");
    ASSERT_TRUE(dir) << dir.error().ToString();
    dir_ = std::make_unique<TempDir>(std::move(*dir));
    auto snapshotter = Factory::Open(root());
    ASSERT_TRUE(snapshotter) << snapshotter.error().ToString();
    snapshotter_ = std::move(*snapshotter);
  }

  fs::path root() const { return dir_->path() / "snapshots"; }

  // Prepares "<name>-active" on `parent`, writes `files` into it and commits it as `name`.
  ::testing::AssertionResult CommitLayer(const std::string& name, const std::string& parent,
                                         const std::map<std::string, std::string>& files,
                                         const Labels& labels = {}) {
    std::string key = name + "-active";
    auto mounts = snapshotter_->Prepare(key, parent);
    if (!mounts) return ::testing::AssertionFailure() << mounts.error().ToString();
    auto upper = snapshotter_->UpperDir(key);
    if (!upper) return ::testing::AssertionFailure() << upper.error().ToString();
    for (const auto& [path, content] : files) {
      fs::create_directories((*upper / path).parent_path());
      WriteTestFile(*upper / path, content);
    }
    Status status = snapshotter_->Commit(name, key, labels);
    if (!status) return ::testing::AssertionFailure() << status.error().ToString();
    return ::testing::AssertionSuccess();
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<Snapshotter> snapshotter_;
};

TYPED_TEST_SUITE_P(SnapshotterTest);

TYPED_TEST_P(SnapshotterTest, PrepareWithoutParentIsAWritableBindOfTheUpperDir) {
  auto mounts = this->snapshotter_->Prepare("a", "");
  ASSERT_TRUE(mounts) << mounts.error().ToString();
  auto upper = this->snapshotter_->UpperDir("a");
  ASSERT_TRUE(upper) << upper.error().ToString();
  EXPECT_TRUE(fs::is_directory(*upper));
  ASSERT_EQ(mounts->size(), 1u);
  EXPECT_EQ((*mounts)[0].type, "bind");
  EXPECT_EQ((*mounts)[0].source, upper->string());
  EXPECT_FALSE(HasOption((*mounts)[0], "ro"));
  auto again = this->snapshotter_->Mounts("a");
  ASSERT_TRUE(again) << again.error().ToString();
  EXPECT_EQ(*again, *mounts);
}

TYPED_TEST_P(SnapshotterTest, PrepareOfAnExistingKeyIsAlreadyExists) {
  ASSERT_TRUE(this->snapshotter_->Prepare("a", ""));
  auto again = this->snapshotter_->Prepare("a", "");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_THAT(again.error().message(), HasSubstr("\"a\""));
  ASSERT_TRUE(this->CommitLayer("base", "", {}));
  auto clash = this->snapshotter_->View("base", "");
  ASSERT_FALSE(clash);
  EXPECT_EQ(clash.error().code(), ErrorCode::kAlreadyExists);
}

TYPED_TEST_P(SnapshotterTest, ParentMustExistAndBeCommitted) {
  auto missing = this->snapshotter_->Prepare("a", "no-such-parent");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_THAT(missing.error().message(), HasSubstr("no-such-parent"));

  ASSERT_TRUE(this->snapshotter_->Prepare("active", ""));
  auto on_active = this->snapshotter_->Prepare("b", "active");
  ASSERT_FALSE(on_active);
  EXPECT_EQ(on_active.error().code(), ErrorCode::kFailedPrecondition);
  auto view_on_active = this->snapshotter_->View("v", "active");
  ASSERT_FALSE(view_on_active);
  EXPECT_EQ(view_on_active.error().code(), ErrorCode::kFailedPrecondition);
  // Failed calls leave nothing behind.
  auto list = this->snapshotter_->List();
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), 1u);
}

TYPED_TEST_P(SnapshotterTest, EmptyKeyOrNameIsInvalid) {
  auto prepared = this->snapshotter_->Prepare("", "");
  ASSERT_FALSE(prepared);
  EXPECT_EQ(prepared.error().code(), ErrorCode::kInvalidArgument);
  ASSERT_TRUE(this->snapshotter_->Prepare("a", ""));
  Status committed = this->snapshotter_->Commit("", "a");
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code(), ErrorCode::kInvalidArgument);
}

TYPED_TEST_P(SnapshotterTest, CommitTurnsTheActiveSnapshotIntoANamedOne) {
  ASSERT_TRUE(this->snapshotter_->Prepare("key", ""));
  auto upper = this->snapshotter_->UpperDir("key");
  ASSERT_TRUE(upper);
  WriteTestFile(*upper / "file", "content");
  Status status = this->snapshotter_->Commit("sha256:aaaa", "key");
  ASSERT_TRUE(status) << status.error().ToString();

  auto info = this->snapshotter_->Stat("sha256:aaaa");
  ASSERT_TRUE(info) << info.error().ToString();
  EXPECT_EQ(info->name, "sha256:aaaa");
  EXPECT_EQ(info->kind, Kind::kCommitted);
  EXPECT_EQ(info->parent, "");
  EXPECT_GT(info->created, 0);
  auto gone = this->snapshotter_->Stat("key");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);

  // Its files are what a child's lower layer shows.
  ASSERT_TRUE(this->snapshotter_->View("view", "sha256:aaaa"));
  auto mounts = this->snapshotter_->Mounts("view");
  ASSERT_TRUE(mounts);
  ASSERT_EQ(mounts->size(), 1u);
  EXPECT_EQ(ReadTestFile(fs::path((*mounts)[0].source) / "file"), "content");
}

TYPED_TEST_P(SnapshotterTest, CommitToAnExistingNameIsAlreadyExistsAndKeepsTheActive) {
  ASSERT_TRUE(this->CommitLayer("sha256:layer", "", {{"first", "1"}}));
  ASSERT_TRUE(this->snapshotter_->Prepare("late", ""));
  Status status = this->snapshotter_->Commit("sha256:layer", "late");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_THAT(status.error().message(), HasSubstr("sha256:layer"));
  auto info = this->snapshotter_->Stat("late");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, Kind::kActive);
  EXPECT_TRUE(this->snapshotter_->Remove("late"));
}

TYPED_TEST_P(SnapshotterTest, OnlyActiveSnapshotsCommit) {
  auto missing = this->snapshotter_->Commit("x", "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);

  ASSERT_TRUE(this->snapshotter_->View("view", ""));
  Status view = this->snapshotter_->Commit("x", "view");
  ASSERT_FALSE(view);
  EXPECT_EQ(view.error().code(), ErrorCode::kFailedPrecondition);

  ASSERT_TRUE(this->CommitLayer("done", "", {}));
  Status committed = this->snapshotter_->Commit("x", "done");
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code(), ErrorCode::kFailedPrecondition);
}

TYPED_TEST_P(SnapshotterTest, ActiveOnAChainIsAnOverlayWithLowersNearestFirst) {
  ASSERT_TRUE(this->CommitLayer("l1", "", {{"layer", "1"}}));
  ASSERT_TRUE(this->CommitLayer("l2", "l1", {{"layer", "2"}}));
  ASSERT_TRUE(this->CommitLayer("l3", "l2", {{"layer", "3"}}));
  auto mounts = this->snapshotter_->Prepare("top", "l3");
  ASSERT_TRUE(mounts) << mounts.error().ToString();
  ASSERT_EQ(mounts->size(), 1u);
  const Mount& mount = (*mounts)[0];
  EXPECT_EQ(mount.type, "overlay");
  std::vector<std::string> lowers = LowerDirs(mount);
  ASSERT_EQ(lowers.size(), 3u);
  EXPECT_EQ(ReadTestFile(fs::path(lowers[0]) / "layer"), "3");
  EXPECT_EQ(ReadTestFile(fs::path(lowers[1]) / "layer"), "2");
  EXPECT_EQ(ReadTestFile(fs::path(lowers[2]) / "layer"), "1");
  auto upper = this->snapshotter_->UpperDir("top");
  ASSERT_TRUE(upper);
  EXPECT_TRUE(HasOption(mount, "upperdir=" + upper->string()));
  bool has_workdir = std::any_of(mount.options.begin(), mount.options.end(),
                                 [](const auto& o) { return o.rfind("workdir=", 0) == 0; });
  EXPECT_TRUE(has_workdir);
  EXPECT_FALSE(HasOption(mount, "ro"));
  auto info = this->snapshotter_->Stat("top");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->parent, "l3");
}

TYPED_TEST_P(SnapshotterTest, ViewsAreReadOnly) {
  ASSERT_TRUE(this->CommitLayer("l1", "", {{"a", "1"}}));
  ASSERT_TRUE(this->CommitLayer("l2", "l1", {{"b", "2"}}));

  auto single = this->snapshotter_->View("v1", "l1");
  ASSERT_TRUE(single) << single.error().ToString();
  ASSERT_EQ(single->size(), 1u);
  EXPECT_EQ((*single)[0].type, "bind");
  EXPECT_TRUE(HasOption((*single)[0], "ro"));
  EXPECT_EQ(ReadTestFile(fs::path((*single)[0].source) / "a"), "1");

  auto stacked = this->snapshotter_->View("v2", "l2");
  ASSERT_TRUE(stacked) << stacked.error().ToString();
  ASSERT_EQ(stacked->size(), 1u);
  EXPECT_EQ((*stacked)[0].type, "overlay");
  EXPECT_TRUE(HasOption((*stacked)[0], "ro"));
  EXPECT_EQ(LowerDirs((*stacked)[0]).size(), 2u);
  for (const std::string& option : (*stacked)[0].options) {
    EXPECT_NE(option.rfind("upperdir=", 0), 0u) << option;
  }

  auto empty = this->snapshotter_->View("v0", "");
  ASSERT_TRUE(empty);
  ASSERT_EQ(empty->size(), 1u);
  EXPECT_TRUE(HasOption((*empty)[0], "ro"));

  auto info = this->snapshotter_->Stat("v2");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, Kind::kView);
  auto upper = this->snapshotter_->UpperDir("v2");
  ASSERT_FALSE(upper);
  EXPECT_EQ(upper.error().code(), ErrorCode::kFailedPrecondition);
}

TYPED_TEST_P(SnapshotterTest, MountsOfCommittedOrMissingSnapshotsFail) {
  ASSERT_TRUE(this->CommitLayer("l1", "", {}));
  auto committed = this->snapshotter_->Mounts("l1");
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code(), ErrorCode::kFailedPrecondition);
  auto upper = this->snapshotter_->UpperDir("l1");
  ASSERT_FALSE(upper);
  EXPECT_EQ(upper.error().code(), ErrorCode::kFailedPrecondition);
  auto missing = this->snapshotter_->Mounts("nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_THAT(missing.error().message(), HasSubstr("\"nope\""));
}

TYPED_TEST_P(SnapshotterTest, RemoveRefusesParentsAndDeletesFiles) {
  ASSERT_TRUE(this->CommitLayer("base", "", {{"f", "x"}}));
  ASSERT_TRUE(this->snapshotter_->Prepare("child", "base"));
  ASSERT_TRUE(this->snapshotter_->View("view", "base"));
  auto child_upper = this->snapshotter_->UpperDir("child");
  ASSERT_TRUE(child_upper);

  Status busy = this->snapshotter_->Remove("base");
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(busy.error().message(), HasSubstr("2 snapshot(s)"));

  EXPECT_TRUE(this->snapshotter_->Remove("child"));
  EXPECT_FALSE(fs::exists(*child_upper));
  EXPECT_FALSE(this->snapshotter_->Remove("base"));
  EXPECT_TRUE(this->snapshotter_->Remove("view"));
  Status removed = this->snapshotter_->Remove("base");
  EXPECT_TRUE(removed) << removed.error().ToString();
  auto list = this->snapshotter_->List();
  ASSERT_TRUE(list);
  EXPECT_TRUE(list->empty());

  Status missing = this->snapshotter_->Remove("base");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TYPED_TEST_P(SnapshotterTest, LabelsAreKeptAndMergedOnCommit) {
  ASSERT_TRUE(this->snapshotter_->Prepare("key", "", {{"a", "1"}, {"b", "2"}}));
  auto active = this->snapshotter_->Stat("key");
  ASSERT_TRUE(active);
  EXPECT_EQ(active->labels, (Labels{{"a", "1"}, {"b", "2"}}));
  ASSERT_TRUE(this->snapshotter_->Commit("name", "key", {{"b", "3"}, {"c", "4"}}));
  auto committed = this->snapshotter_->Stat("name");
  ASSERT_TRUE(committed);
  EXPECT_EQ(committed->labels, (Labels{{"a", "1"}, {"b", "3"}, {"c", "4"}}));
  ASSERT_TRUE(this->snapshotter_->View("v", "name", {{"purpose", "inspect"}}));
  auto view = this->snapshotter_->Stat("v");
  ASSERT_TRUE(view);
  EXPECT_EQ(view->labels, (Labels{{"purpose", "inspect"}}));
}

TYPED_TEST_P(SnapshotterTest, ListAndCommittedNamesShowEverySnapshot) {
  ASSERT_TRUE(this->CommitLayer("c1", "", {}));
  ASSERT_TRUE(this->CommitLayer("c2", "c1", {}));
  ASSERT_TRUE(this->snapshotter_->Prepare("a1", "c2"));
  ASSERT_TRUE(this->snapshotter_->View("v1", "c1"));
  auto list = this->snapshotter_->List();
  ASSERT_TRUE(list) << list.error().ToString();
  std::map<std::string, std::pair<Kind, std::string>> seen;
  for (const SnapshotInfo& info : *list) seen[info.name] = {info.kind, info.parent};
  std::map<std::string, std::pair<Kind, std::string>> want = {
      {"c1", {Kind::kCommitted, ""}},
      {"c2", {Kind::kCommitted, "c1"}},
      {"a1", {Kind::kActive, "c2"}},
      {"v1", {Kind::kView, "c1"}},
  };
  EXPECT_EQ(seen, want);
  auto names = this->snapshotter_->CommittedNames();
  ASSERT_TRUE(names);
  EXPECT_EQ(*names, (std::set<std::string>{"c1", "c2"}));
}

TYPED_TEST_P(SnapshotterTest, UsageCountsOwnFilesOnly) {
  ASSERT_TRUE(this->CommitLayer("base", "", {{"big", std::string(100000, 'x')}}));
  ASSERT_TRUE(this->snapshotter_->Prepare("key", "base"));
  auto upper = this->snapshotter_->UpperDir("key");
  ASSERT_TRUE(upper);
  WriteTestFile(*upper / "one", std::string(5000, 'a'));
  WriteTestFile(*upper / "two", std::string(5000, 'b'));
  fs::create_directory(*upper / "dir");
  fs::create_hard_link(*upper / "one", *upper / "dir" / "one-again");
  auto usage = this->snapshotter_->GetUsage("key");
  ASSERT_TRUE(usage) << usage.error().ToString();
  EXPECT_EQ(usage->inodes, 4);  // the root, "one" (twice linked), "two", "dir"
  EXPECT_GE(usage->size, 10000);
  EXPECT_LT(usage->size, 100000);
  auto base = this->snapshotter_->GetUsage("base");
  ASSERT_TRUE(base);
  EXPECT_GE(base->size, 100000);
  auto missing = this->snapshotter_->GetUsage("nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TYPED_TEST_P(SnapshotterTest, StateSurvivesReopening) {
  ASSERT_TRUE(this->CommitLayer("c1", "", {{"f", "1"}}, {{"l", "v"}}));
  ASSERT_TRUE(this->snapshotter_->Prepare("a1", "c1"));
  this->snapshotter_.reset();
  auto reopened = TypeParam::Open(this->root());
  ASSERT_TRUE(reopened) << reopened.error().ToString();
  auto c1 = (*reopened)->Stat("c1");
  ASSERT_TRUE(c1);
  EXPECT_EQ(c1->kind, Kind::kCommitted);
  EXPECT_EQ(c1->labels, (Labels{{"l", "v"}}));
  auto a1 = (*reopened)->Mounts("a1");
  ASSERT_TRUE(a1) << a1.error().ToString();
  EXPECT_TRUE((*reopened)->Commit("c2", "a1"));
}

// Four processes unpack into one root at once; each also races the others to
// commit the same name, as concurrent pulls of one image do.
TYPED_TEST_P(SnapshotterTest, FourProcessesShareOneRoot) {
  constexpr int kProcesses = 4;
  constexpr int kLayersEach = 15;
  this->snapshotter_.reset();
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Exit codes: 0 won the shared name, 1 lost it cleanly, 2+ something broke.
      auto opened = TypeParam::Open(this->root());
      if (!opened) ::_exit(2);
      Snapshotter& snapshotter = **opened;
      std::string parent;
      for (int i = 0; i < kLayersEach; ++i) {
        std::string name = "p" + std::to_string(p) + "-layer" + std::to_string(i);
        if (!snapshotter.Prepare(name + "-active", parent)) ::_exit(3);
        auto upper = snapshotter.UpperDir(name + "-active");
        if (!upper) ::_exit(4);
        WriteTestFile(*upper / name, name);
        if (!snapshotter.Commit(name, name + "-active")) ::_exit(5);
        parent = name;
      }
      std::string key = "p" + std::to_string(p) + "-shared";
      if (!snapshotter.Prepare(key, "")) ::_exit(6);
      Status committed = snapshotter.Commit("shared", key);
      if (committed) ::_exit(0);
      if (committed.error().code() != ErrorCode::kAlreadyExists) ::_exit(7);
      if (!snapshotter.Remove(key)) ::_exit(8);
      ::_exit(1);
    }
    children.push_back(pid);
  }
  int winners = 0;
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_LE(WEXITSTATUS(status), 1) << "child failed at step " << WEXITSTATUS(status);
    if (WEXITSTATUS(status) == 0) ++winners;
  }
  EXPECT_EQ(winners, 1);

  auto reopened = TypeParam::Open(this->root());
  ASSERT_TRUE(reopened);
  auto list = (*reopened)->List();
  ASSERT_TRUE(list) << list.error().ToString();
  EXPECT_EQ(list->size(), static_cast<size_t>(kProcesses * kLayersEach + 1));
  for (const SnapshotInfo& info : *list) EXPECT_EQ(info.kind, Kind::kCommitted) << info.name;
  // Every chain is intact and each layer has its own directory.
  for (int p = 0; p < kProcesses; ++p) {
    std::string top = "p" + std::to_string(p) + "-layer" + std::to_string(kLayersEach - 1);
    std::string key = "check" + std::to_string(p);
    auto mounts = (*reopened)->View(key, top);
    ASSERT_TRUE(mounts) << mounts.error().ToString();
    std::vector<std::string> lowers = LowerDirs((*mounts)[0]);
    ASSERT_EQ(lowers.size(), static_cast<size_t>(kLayersEach));
    for (int i = 0; i < kLayersEach; ++i) {
      std::string name = "p" + std::to_string(p) + "-layer" + std::to_string(kLayersEach - 1 - i);
      EXPECT_EQ(ReadTestFile(fs::path(lowers[i]) / name), name);
    }
  }
}

REGISTER_TYPED_TEST_SUITE_P(SnapshotterTest, PrepareWithoutParentIsAWritableBindOfTheUpperDir,
                            PrepareOfAnExistingKeyIsAlreadyExists, ParentMustExistAndBeCommitted,
                            EmptyKeyOrNameIsInvalid, CommitTurnsTheActiveSnapshotIntoANamedOne,
                            CommitToAnExistingNameIsAlreadyExistsAndKeepsTheActive,
                            OnlyActiveSnapshotsCommit,
                            ActiveOnAChainIsAnOverlayWithLowersNearestFirst, ViewsAreReadOnly,
                            MountsOfCommittedOrMissingSnapshotsFail,
                            RemoveRefusesParentsAndDeletesFiles, LabelsAreKeptAndMergedOnCommit,
                            ListAndCommittedNamesShowEverySnapshot, UsageCountsOwnFilesOnly,
                            StateSurvivesReopening, FourProcessesShareOneRoot);

using Implementations = ::testing::Types<OverlayFactory>;
INSTANTIATE_TYPED_TEST_SUITE_P(Snapshotter, SnapshotterTest, Implementations);

// ---- OverlaySnapshotter's own layout ----

class OverlaySnapshotterTest : public SnapshotterTest<OverlayFactory> {};

TEST_F(OverlaySnapshotterTest, LayoutIsShortNumericIdsUnderTheRoot) {
  ASSERT_TRUE(snapshotter_->Prepare("a", ""));
  auto upper = snapshotter_->UpperDir("a");
  ASSERT_TRUE(upper);
  EXPECT_EQ(upper->parent_path().parent_path(), root());
  EXPECT_EQ(upper->filename(), "fs");
  EXPECT_TRUE(fs::is_directory(upper->parent_path() / "work"));
  EXPECT_TRUE(fs::exists(root() / "metadata.json"));
  struct stat st {};
  ASSERT_EQ(::stat(root().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(OverlaySnapshotterTest, CommitDropsTheWorkDir) {
  ASSERT_TRUE(snapshotter_->Prepare("a", ""));
  auto upper = snapshotter_->UpperDir("a");
  ASSERT_TRUE(upper);
  ASSERT_TRUE(snapshotter_->Commit("c", "a"));
  EXPECT_TRUE(fs::is_directory(*upper));
  EXPECT_FALSE(fs::exists(upper->parent_path() / "work"));
}

// A crash between creating a directory and writing metadata leaves a
// directory nobody owns; the next Prepare must not reuse it, Cleanup removes it.
TEST_F(OverlaySnapshotterTest, CleanupRemovesWhatACrashLeftBehind) {
  ASSERT_TRUE(CommitLayer("keep", "", {{"f", "1"}}));
  ASSERT_TRUE(snapshotter_->Prepare("active", "keep"));
  auto active_upper = snapshotter_->UpperDir("active");
  ASSERT_TRUE(active_upper);
  // The next id a Prepare would take, already there with stale contents.
  fs::path orphan;
  for (int id = 1; id < 100; ++id) {
    if (!fs::exists(root() / std::to_string(id))) {
      orphan = root() / std::to_string(id);
      break;
    }
  }
  fs::create_directories(orphan / "fs");
  WriteTestFile(orphan / "fs" / "stale", "x");
  fs::create_directories(root() / "9999" / "fs" / "deep");
  WriteTestFile(root() / ".tmp-metadata.json-123", "{");
  WriteTestFile(root() / "not-ours", "left alone");

  ASSERT_TRUE(snapshotter_->Prepare("fresh", ""));
  auto fresh = snapshotter_->UpperDir("fresh");
  ASSERT_TRUE(fresh);
  EXPECT_NE(fresh->parent_path(), orphan);
  EXPECT_TRUE(fs::is_empty(*fresh));

  auto removed = snapshotter_->Cleanup();
  ASSERT_TRUE(removed) << removed.error().ToString();
  EXPECT_EQ(*removed, 3u);
  EXPECT_FALSE(fs::exists(orphan));
  EXPECT_FALSE(fs::exists(root() / "9999"));
  EXPECT_FALSE(fs::exists(root() / ".tmp-metadata.json-123"));
  EXPECT_TRUE(fs::exists(root() / "not-ours"));
  EXPECT_TRUE(fs::exists(*active_upper));
  EXPECT_TRUE(fs::exists(*fresh));
  auto list = snapshotter_->List();
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), 3u);
  auto again = snapshotter_->Cleanup();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0u);
}

TEST_F(OverlaySnapshotterTest, CorruptMetadataIsDataLoss) {
  ASSERT_TRUE(snapshotter_->Prepare("a", ""));
  WriteTestFile(root() / "metadata.json", "{\"version\": 1, \"next_id\": ");
  auto list = snapshotter_->List();
  ASSERT_FALSE(list);
  EXPECT_EQ(list.error().code(), ErrorCode::kDataLoss);
  EXPECT_THAT(list.error().message(), HasSubstr((root() / "metadata.json").string()));
}

TEST_F(OverlaySnapshotterTest, RootWithAColonIsRefused) {
  auto opened = OverlaySnapshotter::Open(dir_->path() / "a:b");
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(opened.error().message(), HasSubstr("a:b"));
}

TEST_F(OverlaySnapshotterTest, OverlayMountsCarryTheSafeUpperOptions) {
  ASSERT_TRUE(CommitLayer("l1", "", {}));
  auto mounts = snapshotter_->Prepare("a", "l1");
  ASSERT_TRUE(mounts);
  for (const char* option : {"index=off", "redirect_dir=off", "metacopy=off"}) {
    EXPECT_TRUE(HasOption((*mounts)[0], option)) << option;
  }
}

// A writable layer kept outside the snapshotter (an --rm container's): the
// mounts name the caller's dirs over the chain, and nothing is recorded.
TEST_F(OverlaySnapshotterTest, MountsOverUsesTheCallersDirsAndRecordsNothing) {
  ASSERT_TRUE(CommitLayer("l1", "", {{"layer", "1"}}));
  ASSERT_TRUE(CommitLayer("l2", "l1", {{"layer", "2"}}));
  std::string metadata_before = ReadTestFile(root() / "metadata.json");
  fs::path upper = dir_->path() / "c" / "upper";
  fs::path work = dir_->path() / "c" / "work";
  auto mounts = snapshotter_->MountsOver("l2", upper, work);
  ASSERT_TRUE(mounts) << mounts.error().ToString();
  ASSERT_EQ(mounts->size(), 1u);
  const Mount& mount = (*mounts)[0];
  EXPECT_EQ(mount.type, "overlay");
  std::vector<std::string> lowers = LowerDirs(mount);
  ASSERT_EQ(lowers.size(), 2u);
  EXPECT_EQ(ReadTestFile(fs::path(lowers[0]) / "layer"), "2");
  EXPECT_EQ(ReadTestFile(fs::path(lowers[1]) / "layer"), "1");
  EXPECT_TRUE(HasOption(mount, "upperdir=" + upper.string()));
  EXPECT_TRUE(HasOption(mount, "workdir=" + work.string()));
  EXPECT_TRUE(HasOption(mount, "index=off"));
  EXPECT_EQ(ReadTestFile(root() / "metadata.json"), metadata_before);

  auto bare = snapshotter_->MountsOver("", upper, work);
  ASSERT_TRUE(bare);
  EXPECT_EQ((*bare)[0].type, "bind");
  EXPECT_EQ((*bare)[0].source, upper.string());

  auto missing = snapshotter_->MountsOver("nope", upper, work);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(snapshotter_->Prepare("active", "l2"));
  auto active = snapshotter_->MountsOver("active", upper, work);
  ASSERT_FALSE(active);
  EXPECT_EQ(active.error().code(), ErrorCode::kFailedPrecondition);
  auto colon = snapshotter_->MountsOver("l2", dir_->path() / "a:b", work);
  ASSERT_FALSE(colon);
  EXPECT_EQ(colon.error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace imgtool::overlay
