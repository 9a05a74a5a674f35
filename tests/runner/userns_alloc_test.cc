#include "runner/userns_alloc.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <thread>

#include "common/file_util.h"
#include "common/temp_dir.h"
#include "tests/support/test_util.h"

namespace imgtool::runner {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSubuid =
    "# comment\n"
    "alice:100000:65536\n"
    "root:200000:1000\n"
    "bob:notanumber:65536\n"
    "root:300000:65536\n"
    "1001:400000:65536\n"
    "broken\n"
    "root:500000:0\n"
    "root:4294967000:1000\n";

TEST(UsernsAllocTest, ParsesEveryRangeOfTheUser) {
  EXPECT_EQ(ParseSubordinateRanges(kSubuid, "alice", 1000),
            (std::vector<IdRange>{{100000, 65536}}));
  // All of root's ranges in file order; empty ones and ranges past the last
  // id are left out.
  EXPECT_EQ(ParseSubordinateRanges(kSubuid, "root", 0),
            (std::vector<IdRange>{{200000, 1000}, {300000, 65536}}));
  // By number.
  EXPECT_EQ(ParseSubordinateRanges(kSubuid, "carol", 1001),
            (std::vector<IdRange>{{400000, 65536}}));
  EXPECT_TRUE(ParseSubordinateRanges(kSubuid, "bob", 1002).empty());
}

TEST(UsernsAllocTest, NormalizesRanges) {
  EXPECT_EQ(NormalizeRanges({{300, 10}, {100, 50}, {140, 20}, {160, 5}, {500, 0}}),
            (std::vector<IdRange>{{100, 65}, {300, 10}}));
}

TEST(UsernsAllocTest, PicksTheLowestFreeIdsAcrossRanges) {
  std::vector<IdRange> available = {{300000, 100}, {100000, 50}};
  // Lowest range first; a slice that does not fit one range continues in the next.
  Result<std::vector<IdMap>> map = PickIdMap(available, {}, 120, {});
  ASSERT_TRUE(map.has_value()) << map.error().ToString();
  EXPECT_EQ(*map, (std::vector<IdMap>{{0, 100000, 50}, {50, 300000, 70}}));
  // Used ids are skipped.
  map = PickIdMap(available, {{100000, 10}, {100020, 10}}, 40, {});
  ASSERT_TRUE(map.has_value()) << map.error().ToString();
  EXPECT_EQ(*map, (std::vector<IdMap>{{0, 100010, 10}, {10, 100030, 20}, {30, 300000, 10}}));
}

TEST(UsernsAllocTest, ExtraLinesTakeTheirContainerAndHostIds) {
  // uidmapping=0:5000:1 maps the container's root to 5000; the rest of 0..9
  // goes to the range, skipping the forced host ids where they fall in it.
  Result<std::vector<IdMap>> map = PickIdMap({{1000, 100}}, {}, 10, {{0, 5000, 1}, {4, 1002, 2}});
  ASSERT_TRUE(map.has_value()) << map.error().ToString();
  EXPECT_EQ(*map, (std::vector<IdMap>{
                      {0, 5000, 1}, {1, 1000, 2}, {3, 1004, 1}, {4, 1002, 2}, {6, 1005, 4}}));
}

TEST(UsernsAllocTest, TooFewFreeIdsIsUnavailable) {
  Result<std::vector<IdMap>> map = PickIdMap({{1000, 100}}, {{1000, 60}}, 50, {});
  ASSERT_FALSE(map.has_value());
  EXPECT_EQ(map.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(map.error().message(), "no 50 free ids left: 40 of the 100 in the ranges are free");
}

TEST(UsernsAllocTest, AMapOfMoreLinesThanTheKernelTakesIsRefused) {
  std::vector<IdRange> used;
  for (uint32_t i = 0; i < 400; ++i) used.push_back({1000 + 2 * i, 1});
  Result<std::vector<IdMap>> map = PickIdMap({{1000, 800}}, used, 400, {});
  ASSERT_FALSE(map.has_value());
  EXPECT_EQ(map.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(map.error().message().find("340"), std::string::npos) << map.error().message();
}

TEST(UsernsAllocTest, ValidatesExtraLines) {
  EXPECT_TRUE(ValidateExtraIdMaps({{0, 5000, 1}, {1, 5001, 10}}, "uidmapping").has_value());
  auto error = [](std::vector<IdMap> extra) {
    Status status = ValidateExtraIdMaps(extra, "uidmapping");
    return status ? std::string() : status.error().message();
  };
  EXPECT_EQ(error({{0, 5000, 0}}), "uidmapping 0:5000:0: size 0");
  EXPECT_EQ(error({{4294967295u, 1, 1}}), "uidmapping 4294967295:1:1: ids past 4294967294");
  EXPECT_EQ(error({{0, 4294967290u, 10}}), "uidmapping 0:4294967290:10: ids past 4294967294");
  EXPECT_EQ(error({{0, 5000, 10}, {5, 9000, 1}}), "uidmapping 5:9000:1 overlaps 0:5000:10");
  EXPECT_EQ(error({{0, 5000, 10}, {20, 5009, 1}}), "uidmapping 20:5009:1 overlaps 0:5000:10");
}

// An allocator over subuid/subgid files and a state dir of the test's own.
class AllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("imgtool-userns-alloc-test-");
    ASSERT_TRUE(dir.has_value()) << dir.error().ToString();
    dir_.emplace(std::move(*dir));
    // The caller's entries by number: root's "root" and any user's own uid match.
    std::string me = std::to_string(::getuid());
    WriteRanges(me + ":100000:3000\nsomeone:900000:65536\n" + me + ":200000:2000\n",
                me + ":600000:5000\n");
  }

  void WriteRanges(const std::string& subuid, const std::string& subgid) {
    imgtool::testing::WriteTestFile(Path("subuid"), subuid);
    imgtool::testing::WriteTestFile(Path("subgid"), subgid);
  }

  fs::path Path(const std::string& name) const { return dir_->path() / name; }

  UsernsAllocator Allocator() const {
    return UsernsAllocator(
        {.state_dir = Path("state"), .subuid_file = Path("subuid"), .subgid_file = Path("subgid")});
  }

  static UsernsRequest Request(const std::string& owner, uint32_t size, fs::path keep_while = {}) {
    UsernsRequest request;
    request.owner = owner;
    request.size = size;
    request.keep_while = std::move(keep_while);
    return request;
  }

  UsernsLease AllocateOk(const UsernsRequest& request) {
    Result<UsernsLease> lease = Allocator().Allocate(request);
    EXPECT_TRUE(lease.has_value()) << lease.error().ToString();
    return lease ? std::move(*lease) : UsernsLease();
  }

  std::vector<std::string> Owners() {
    Result<std::vector<UsernsAllocation>> list = Allocator().List();
    EXPECT_TRUE(list.has_value()) << list.error().ToString();
    std::vector<std::string> owners;
    if (list) {
      for (const UsernsAllocation& allocation : *list) owners.push_back(allocation.owner);
    }
    std::sort(owners.begin(), owners.end());
    return owners;
  }

  std::optional<TempDir> dir_;
};

// No host id of `a` is one of `b`'s.
bool Disjoint(const std::vector<IdMap>& a, const std::vector<IdMap>& b) {
  for (const IdMap& x : a) {
    for (const IdMap& y : b) {
      if (x.host_id < uint64_t{y.host_id} + y.size && y.host_id < uint64_t{x.host_id} + x.size) {
        return false;
      }
    }
  }
  return true;
}

uint64_t Count(const std::vector<IdMap>& map) {
  uint64_t total = 0;
  for (const IdMap& line : map) total += line.size;
  return total;
}

TEST_F(AllocatorTest, GivesEveryOwnerSlicesOfItsOwn) {
  UsernsLease a = AllocateOk(Request("a", 1024));
  UsernsLease b = AllocateOk(Request("b", 1024));
  EXPECT_EQ(a.mappings.uids, (std::vector<IdMap>{{0, 100000, 1024}}));
  EXPECT_EQ(a.mappings.gids, (std::vector<IdMap>{{0, 600000, 1024}}));
  EXPECT_EQ(b.mappings.uids, (std::vector<IdMap>{{0, 101024, 1024}}));
  EXPECT_EQ(b.mappings.gids, (std::vector<IdMap>{{0, 601024, 1024}}));
  // The third does not fit what is left of the first uid range: it goes on
  // in the second (someone else's range between them is not touched).
  UsernsLease c = AllocateOk(Request("c", 1024));
  EXPECT_EQ(c.mappings.uids, (std::vector<IdMap>{{0, 102048, 952}, {952, 200000, 72}}));
  EXPECT_EQ(c.mappings.gids, (std::vector<IdMap>{{0, 602048, 1024}}));
  EXPECT_EQ(Owners(), (std::vector<std::string>{"a", "b", "c"}));

  Result<UsernsLease> again = Allocator().Allocate(Request("a", 10));
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
}

TEST_F(AllocatorTest, AFreedSliceIsReused) {
  UsernsLease a = AllocateOk(Request("a", 1000));
  UsernsLease b = AllocateOk(Request("b", 1000));
  ASSERT_TRUE(Allocator().Free("a").has_value());
  EXPECT_FALSE(fs::exists(a.claim_path));
  EXPECT_EQ(Owners(), (std::vector<std::string>{"b"}));
  UsernsLease c = AllocateOk(Request("c", 1000));
  EXPECT_EQ(c.mappings, a.mappings);
  // Freeing what has no slice is fine.
  EXPECT_TRUE(Allocator().Free("nobody-here").has_value());
}

TEST_F(AllocatorTest, RunningOutNamesTheFile) {
  std::string me = std::to_string(::getuid());
  WriteRanges(me + ":100000:3000\n" + me + ":200000:2000\n", me + ":600000:4500\n");
  UsernsLease a = AllocateOk(Request("a", 4000));
  Result<UsernsLease> b = Allocator().Allocate(Request("b", 1001));
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(b.error().message().find("--userns=auto: 1001 uids of \""), std::string::npos)
      << b.error().message();
  EXPECT_NE(b.error().message().find(Path("subuid").string() +
                                     " (containers holding slices: 1): no 1001 free "
                                     "ids left: 1000 of the 5000 in the ranges are free"),
            std::string::npos)
      << b.error().message();
  // gids run out on their own.
  Result<UsernsLease> c = Allocator().Allocate(Request("c", 1000));
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.error().message().find(Path("subgid").string()), std::string::npos)
      << c.error().message();
  // A failed allocation takes nothing.
  EXPECT_EQ(Owners(), (std::vector<std::string>{"a"}));
}

TEST_F(AllocatorTest, NoRangeForTheCallerIsNotFound) {
  WriteRanges("someone:100000:65536\n", "someone:100000:65536\n");
  Result<UsernsLease> a = Allocator().Allocate(Request("a", 10));
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(a.error().message().find("--userns=auto needs subordinate ids: " +
                                     Path("subuid").string() + " has no range for"),
            std::string::npos)
      << a.error().message();
}

TEST_F(AllocatorTest, ContainersRangesComeBeforeRoots) {
  if (::getuid() != 0) GTEST_SKIP() << "the entries looked up are root's";
  WriteRanges("root:100000:65536\ncontainers:700000:5000\ncontainers:800000:5000\n",
              "root:100000:65536\n");
  UsernsLease a = AllocateOk(Request("a", 6000));
  EXPECT_EQ(a.mappings.uids, (std::vector<IdMap>{{0, 700000, 5000}, {5000, 800000, 1000}}));
  EXPECT_EQ(a.mappings.gids, (std::vector<IdMap>{{0, 100000, 6000}}));
}

TEST_F(AllocatorTest, ExtraLinesAreKeptAndAvoided) {
  UsernsRequest request = Request("a", 100);
  request.extra_uids = {{0, 100000, 1}};
  request.extra_gids = {{0, 42, 1}};
  UsernsLease a = AllocateOk(request);
  EXPECT_EQ(a.mappings.uids, (std::vector<IdMap>{{0, 100000, 1}, {1, 100001, 99}}));
  EXPECT_EQ(a.mappings.gids, (std::vector<IdMap>{{0, 42, 1}, {1, 600000, 99}}));
  UsernsLease b = AllocateOk(Request("b", 10));
  EXPECT_EQ(b.mappings.uids, (std::vector<IdMap>{{0, 100100, 10}}));
  EXPECT_EQ(b.mappings.gids, (std::vector<IdMap>{{0, 600099, 10}}));
}

TEST_F(AllocatorTest, ASliceNobodyHoldsIsTakenBack) {
  std::vector<IdMap> first;
  {
    UsernsLease a = AllocateOk(Request("a", 1000));
    first = a.mappings.uids;
    EXPECT_EQ(Owners(), (std::vector<std::string>{"a"}));
  }
  // The lease is gone and nothing keeps the slice: the next allocation takes it.
  EXPECT_EQ(Owners(), std::vector<std::string>{});
  UsernsLease b = AllocateOk(Request("b", 1000));
  EXPECT_EQ(b.mappings.uids, first);
}

TEST_F(AllocatorTest, KeepWhileHoldsTheSliceWithoutAClaim) {
  fs::path kept = Path("container-dir");
  fs::create_directories(kept);
  { UsernsLease a = AllocateOk(Request("a", 1000, kept)); }
  UsernsLease b = AllocateOk(Request("b", 1000));
  EXPECT_EQ(b.mappings.uids, (std::vector<IdMap>{{0, 101000, 1000}}));
  EXPECT_EQ(Owners(), (std::vector<std::string>{"a", "b"}));
  fs::remove(kept);
  EXPECT_EQ(Owners(), (std::vector<std::string>{"b"}));
}

TEST_F(AllocatorTest, AJoinedClaimKeepsTheSlice) {
  UsernsLease a = AllocateOk(Request("a", 1000));
  Result<UsernsClaim> share = UsernsClaim::Join(a.claim_path);
  ASSERT_TRUE(share.has_value()) << share.error().ToString();
  a = UsernsLease();  // the allocating process lets go, as a detached run's imgtool does
  EXPECT_EQ(Owners(), (std::vector<std::string>{"a"}));
  *share = UsernsClaim();
  EXPECT_EQ(Owners(), std::vector<std::string>{});
  Result<UsernsClaim> gone = UsernsClaim::Join(Path("state") / "claims" / "a");
  ASSERT_FALSE(gone.has_value());
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);
}

TEST_F(AllocatorTest, ASliceOfAKilledProcessIsTakenBack) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipe_fds[0]);
    Result<UsernsLease> lease = Allocator().Allocate(Request("killed", 1000));
    char result = lease ? 'y' : 'n';
    (void)!::write(pipe_fds[1], &result, 1);
    while (true) ::pause();
  }
  ::close(pipe_fds[1]);
  char result = 0;
  ASSERT_EQ(::read(pipe_fds[0], &result, 1), 1);
  ::close(pipe_fds[0]);
  ASSERT_EQ(result, 'y');
  // Held while the process lives.
  UsernsLease live = AllocateOk(Request("live", 1000));
  EXPECT_EQ(live.mappings.uids, (std::vector<IdMap>{{0, 101000, 1000}}));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  UsernsLease after = AllocateOk(Request("after", 1000));
  EXPECT_EQ(after.mappings.uids, (std::vector<IdMap>{{0, 100000, 1000}}));
  EXPECT_EQ(Owners(), (std::vector<std::string>{"after", "live"}));
  EXPECT_FALSE(fs::exists(Path("state") / "claims" / "killed"));
}

TEST_F(AllocatorTest, ConcurrentProcessesGetDisjointSlices) {
  WriteRanges(
      std::to_string(::getuid()) + ":100000:2000\n" + std::to_string(::getuid()) + ":300000:6000\n",
      std::to_string(::getuid()) + ":600000:8000\n");
  constexpr int kProcesses = 8;
  // Each child allocates at once, reports its maps, and holds them until the
  // parent closes `hold`.
  int hold[2];
  ASSERT_EQ(::pipe(hold), 0);
  std::vector<pid_t> children;
  std::vector<int> reports;
  for (int i = 0; i < kProcesses; ++i) {
    int report[2];
    ASSERT_EQ(::pipe(report), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(hold[1]);
      ::close(report[0]);
      Result<UsernsLease> lease = Allocator().Allocate(Request("p" + std::to_string(i), 1000));
      std::string text =
          lease ? FormatIdMap(lease->mappings.uids) + "-\n" + FormatIdMap(lease->mappings.gids)
                : "error " + lease.error().ToString();
      (void)!::write(report[1], text.data(), text.size());
      ::close(report[1]);
      char byte;
      (void)!::read(hold[0], &byte, 1);
      ::_exit(0);
    }
    ::close(report[1]);
    children.push_back(pid);
    reports.push_back(report[0]);
  }
  ::close(hold[0]);
  auto parse = [](std::string_view text) {
    std::vector<IdMap> map;
    unsigned c, h, n;
    std::string line;
    for (size_t pos = 0; pos < text.size();) {
      size_t end = text.find('\n', pos);
      line = std::string(text.substr(pos, end - pos));
      if (std::sscanf(line.c_str(), "%u %u %u", &c, &h, &n) == 3) map.push_back({c, h, n});
      pos = end + 1;
    }
    return map;
  };
  std::vector<IdMappings> all;
  for (int fd : reports) {
    Result<std::string> text = ReadFdToString(fd);
    ::close(fd);
    ASSERT_TRUE(text.has_value());
    size_t split = text->find("-\n");
    ASSERT_NE(split, std::string::npos) << *text;
    all.push_back({parse(text->substr(0, split)), parse(text->substr(split + 2))});
  }
  EXPECT_EQ(Owners().size(), static_cast<size_t>(kProcesses));
  ::close(hold[1]);
  for (pid_t pid : children) ::waitpid(pid, nullptr, 0);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(Count(all[i].uids), 1000u);
    EXPECT_EQ(Count(all[i].gids), 1000u);
    for (size_t j = 0; j < i; ++j) {
      EXPECT_TRUE(Disjoint(all[i].uids, all[j].uids)) << i << " " << j;
      EXPECT_TRUE(Disjoint(all[i].gids, all[j].gids)) << i << " " << j;
    }
  }
  // Their processes ended: every slice is free again.
  EXPECT_EQ(Owners(), std::vector<std::string>{});
}

TEST_F(AllocatorTest, ConcurrentThreadsGetDisjointSlices) {
  constexpr int kThreads = 6;
  std::vector<std::optional<Result<UsernsLease>>> leases(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back(
        [&, i] { leases[i].emplace(Allocator().Allocate(Request("t" + std::to_string(i), 800))); });
  }
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kThreads; ++i) {
    const Result<UsernsLease>& lease = *leases[i];
    ASSERT_TRUE(lease.has_value()) << lease.error().ToString();
    for (int j = 0; j < i; ++j) {
      const Result<UsernsLease>& other = *leases[j];
      EXPECT_TRUE(Disjoint(lease->mappings.uids, other->mappings.uids)) << i << " " << j;
      EXPECT_TRUE(Disjoint(lease->mappings.gids, other->mappings.gids)) << i << " " << j;
    }
  }
  EXPECT_EQ(Owners().size(), static_cast<size_t>(kThreads));
}

TEST_F(AllocatorTest, ADamagedTableIsDataLoss) {
  fs::create_directories(Path("state"));
  imgtool::testing::WriteTestFile(Path("state") / "allocations.json", "{not json");
  Result<UsernsLease> a = Allocator().Allocate(Request("a", 10));
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), ErrorCode::kDataLoss);
  EXPECT_NE(a.error().message().find("allocations.json"), std::string::npos);
}

TEST_F(AllocatorTest, BadOwnersAreRefused) {
  for (const char* owner : {"", "..", "a/b", "a b"}) {
    Result<UsernsLease> lease = Allocator().Allocate(Request(owner, 10));
    ASSERT_FALSE(lease.has_value()) << owner;
    EXPECT_EQ(lease.error().code(), ErrorCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace imgtool::runner
