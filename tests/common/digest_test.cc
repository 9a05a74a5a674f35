#include "common/digest.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

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

TEST(DigestTest, HashesStandardVectors) {
  EXPECT_EQ(Digest::Sha256Of("").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Digest::Sha256Of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").hex(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256Hasher million;
  std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) million.Update(chunk);
  EXPECT_EQ(million.Finish().hex(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Every length around the padding boundaries, fed whole and in odd pieces,
// hashed by the SHA-NI block function (where the CPU has it) and the portable
// one: both must agree.
TEST(DigestTest, BlockFunctionsAgree) {
  std::mt19937 rng(20261130);
  std::string data(1000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t length : {0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 640, 1000}) {
    std::string_view input(data.data(), length);
    Sha256Hasher pieces;
    for (size_t at = 0; at < length;) {
      size_t n = std::min<size_t>(length - at, 1 + at % 37);
      pieces.Update(input.substr(at, n));
      at += n;
    }
    EXPECT_EQ(pieces.Finish(), Digest::Sha256Of(input)) << length;
  }
  uint32_t portable[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                          0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint32_t sha_ni[8];
  std::memcpy(sha_ni, portable, sizeof(portable));
  const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
  internal::Sha256BlocksPortable(portable, bytes, 15);
  if (!internal::Sha256BlocksShaNi(sha_ni, bytes, 15)) {
    GTEST_SKIP() << "this CPU has no SHA extensions; only the portable code ran";
  }
  EXPECT_EQ(std::memcmp(portable, sha_ni, sizeof(portable)), 0);
  EXPECT_STREQ(Sha256Hasher::Implementation(), "sha-ni");
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
