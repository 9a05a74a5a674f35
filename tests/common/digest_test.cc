#include "common/digest.h"

#include <gtest/gtest.h>

namespace imgtool {
namespace {

TEST(DigestTest, HashesKnownVector) {
  EXPECT_EQ(Digest::Sha256Of("abc").ToString(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(DigestTest, StreamingEqualsWhole) {
  Sha256Hasher hasher;
  hasher.Update("a");
  hasher.Update("bc");
  EXPECT_EQ(hasher.Finish(), Digest::Sha256Of("abc"));
}

TEST(DigestTest, ParseRoundTrips) {
  auto d = Digest::Parse("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->hex().size(), 64u);
  EXPECT_EQ(*d, Digest::Sha256Of("abc"));
}

TEST(DigestTest, ParseRejectsBadInput) {
  EXPECT_FALSE(Digest::Parse("sha256:abc"));
  EXPECT_FALSE(Digest::Parse("md5:ba7816bf8f01cfea414140de5dae2223"));
  EXPECT_FALSE(
      Digest::Parse("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
  EXPECT_FALSE(Digest::Parse("sha256:../../../../etc/passwd0000000000000000000000000000000000000"));
  auto err = Digest::Parse("sha512:00");
  ASSERT_FALSE(err);
  EXPECT_EQ(err.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(err.error().message().find("sha512"), std::string::npos);
}

}  // namespace
}  // namespace imgtool
