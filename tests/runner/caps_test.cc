#include "runner/caps.h"

#include <gtest/gtest.h>
#include <linux/capability.h>

namespace imgtool::runner {
namespace {

TEST(CapsTest, ParsesNamesInEverySpelling) {
  for (const char* name : {"CAP_NET_ADMIN", "NET_ADMIN", "net_admin", "cap_net_admin"}) {
    Result<int> cap = ParseCapability(name);
    ASSERT_TRUE(cap.has_value()) << name;
    EXPECT_EQ(*cap, CAP_NET_ADMIN) << name;
  }
  EXPECT_EQ(*ParseCapability("CAP_CHECKPOINT_RESTORE"), 40);
  EXPECT_EQ(*ParseCapability("chown"), CAP_CHOWN);
}

TEST(CapsTest, RefusesUnknownNames) {
  Result<int> cap = ParseCapability("CAP_FLY");
  ASSERT_FALSE(cap.has_value());
  EXPECT_EQ(cap.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(cap.error().message().find("CAP_FLY"), std::string::npos);
  EXPECT_FALSE(ParseCapability("").has_value());
  EXPECT_FALSE(ParseCapability("ALL").has_value());
}

TEST(CapsTest, NamesRoundTrip) {
  for (int cap = 0; cap <= 40; ++cap) {
    EXPECT_EQ(*ParseCapability(CapabilityName(cap)), cap);
  }
  EXPECT_EQ(CapabilityName(62), "CAP_62");
}

TEST(CapsTest, DefaultIsDockersFourteen) {
  CapabilitySet set = DefaultCapabilities();
  EXPECT_EQ(set.ToString(),
            "CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_FOWNER,CAP_FSETID,CAP_KILL,CAP_SETGID,CAP_SETUID,"
            "CAP_SETPCAP,CAP_NET_BIND_SERVICE,CAP_NET_RAW,CAP_SYS_CHROOT,CAP_MKNOD,"
            "CAP_AUDIT_WRITE,CAP_SETFCAP");
  EXPECT_FALSE(set.Has(CAP_SYS_ADMIN));
  EXPECT_FALSE(set.Has(CAP_NET_ADMIN));
}

TEST(CapsTest, AddAndDrop) {
  Result<CapabilitySet> set = ComputeCapabilities(false, {"NET_ADMIN"}, {"chown", "CAP_KILL"});
  ASSERT_TRUE(set.has_value());
  EXPECT_TRUE(set->Has(CAP_NET_ADMIN));
  EXPECT_FALSE(set->Has(CAP_CHOWN));
  EXPECT_FALSE(set->Has(CAP_KILL));
  EXPECT_TRUE(set->Has(CAP_SETUID));
}

TEST(CapsTest, AddWinsOverDropOfTheSameName) {
  Result<CapabilitySet> set = ComputeCapabilities(false, {"CHOWN"}, {"CHOWN"});
  ASSERT_TRUE(set.has_value());
  EXPECT_TRUE(set->Has(CAP_CHOWN));
}

TEST(CapsTest, DropAllKeepsOnlyAdded) {
  Result<CapabilitySet> set = ComputeCapabilities(false, {"NET_BIND_SERVICE"}, {"ALL"});
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->ToString(), "CAP_NET_BIND_SERVICE");
}

TEST(CapsTest, AddAllKeepsEverythingButDropped) {
  Result<CapabilitySet> set = ComputeCapabilities(false, {"all"}, {"SYS_ADMIN"});
  ASSERT_TRUE(set.has_value());
  EXPECT_FALSE(set->Has(CAP_SYS_ADMIN));
  EXPECT_TRUE(set->Has(CAP_SYS_MODULE));
  EXPECT_EQ(set->mask() | (uint64_t{1} << CAP_SYS_ADMIN), CapabilitySet::All().mask());
}

TEST(CapsTest, PrivilegedIsEverything) {
  Result<CapabilitySet> set = ComputeCapabilities(true, {}, {"CHOWN"});
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(*set, CapabilitySet::All());
  EXPECT_EQ(LastCapability() + 1, __builtin_popcountll(set->mask()));
}

TEST(CapsTest, UnknownNameInAFlagSaysWhichFlag) {
  Result<CapabilitySet> set = ComputeCapabilities(false, {}, {"NOPE"});
  ASSERT_FALSE(set.has_value());
  EXPECT_NE(set.error().message().find("--cap-drop"), std::string::npos);
  EXPECT_NE(set.error().message().find("NOPE"), std::string::npos);
}

}  // namespace
}  // namespace imgtool::runner
