#include "registry/parse.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace imgtool::registry {
namespace {

TEST(WwwAuthenticateTest, ParsesBearerWithQuotedParams) {
  auto challenges = ParseWwwAuthenticate(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push")");
  ASSERT_TRUE(challenges) << challenges.error().ToString();
  ASSERT_EQ(challenges->size(), 1u);
  const Challenge& c = (*challenges)[0];
  EXPECT_EQ(c.scheme, "bearer");
  EXPECT_EQ(c.Param("realm"), "https://auth.docker.io/token");
  EXPECT_EQ(c.Param("service"), "registry.docker.io");
  EXPECT_EQ(c.Param("scope"), "repository:samalba/my-app:pull,push");
  EXPECT_EQ(c.Param("error"), "");
}

TEST(WwwAuthenticateTest, ParsesSeveralChallengesAndTokens) {
  auto challenges = ParseWwwAuthenticate(
      R"(Basic realm="Registry Realm", Bearer realm=https://a/t,error="insufficient_scope", Negotiate)");
  ASSERT_TRUE(challenges) << challenges.error().ToString();
  ASSERT_EQ(challenges->size(), 3u);
  EXPECT_EQ((*challenges)[0].scheme, "basic");
  EXPECT_EQ((*challenges)[0].Param("realm"), "Registry Realm");
  EXPECT_EQ((*challenges)[1].scheme, "bearer");
  EXPECT_EQ((*challenges)[1].Param("realm"), "https://a/t");
  EXPECT_EQ((*challenges)[1].Param("error"), "insufficient_scope");
  EXPECT_EQ((*challenges)[2].scheme, "negotiate");
}

TEST(WwwAuthenticateTest, EscapesAndErrors) {
  auto c = ParseWwwAuthenticate(R"(Bearer realm="a\"b")");
  ASSERT_TRUE(c);
  EXPECT_EQ((*c)[0].Param("realm"), "a\"b");
  EXPECT_FALSE(ParseWwwAuthenticate(R"(Bearer realm="open)"));
  EXPECT_FALSE(ParseWwwAuthenticate(""));
  EXPECT_FALSE(ParseWwwAuthenticate("=x"));
}

TEST(RangeTest, UploadRangeAndContentRange) {
  auto r = ParseRangeHeader("0-1023");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, 0);
  EXPECT_EQ(r->last, 1023);
  ASSERT_TRUE(ParseRangeHeader("bytes=5-9"));
  EXPECT_EQ(ParseRangeHeader("bytes=5-9")->first, 5);
  EXPECT_FALSE(ParseRangeHeader("9-5"));
  EXPECT_FALSE(ParseRangeHeader("abc"));
  EXPECT_FALSE(ParseRangeHeader("-5"));
  auto cr = ParseContentRange("bytes 100-199/200");
  ASSERT_TRUE(cr);
  EXPECT_EQ(cr->first, 100);
  EXPECT_EQ(cr->last, 199);
  EXPECT_TRUE(ParseContentRange("bytes 0-0/*"));
  EXPECT_FALSE(ParseContentRange("100-199/200"));
  EXPECT_FALSE(ParseContentRange("bytes 100-199"));
}

TEST(LinkTest, FindsNext) {
  EXPECT_EQ(ParseLinkNext(R"(</v2/_catalog?last=b&n=2>; rel="next")"), "/v2/_catalog?last=b&n=2");
  EXPECT_EQ(ParseLinkNext(R"(</p>; rel="prev", </n>; rel="next")"), "/n");
  EXPECT_EQ(ParseLinkNext(R"(</p>; rel="prev")"), "");
  EXPECT_EQ(ParseLinkNext(""), "");
}

TEST(UrlTest, OriginResolveAndQuery) {
  EXPECT_EQ(UrlOrigin("https://Host:5000/v2/x?y"), "https://host:5000");
  EXPECT_EQ(UrlOrigin("http://h"), "http://h");
  EXPECT_EQ(UrlOrigin("/v2/"), "");
  EXPECT_EQ(ResolveUrl("https://h:1/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/u1?x=1"),
            "https://h:1/v2/a/blobs/uploads/u1?x=1");
  EXPECT_EQ(ResolveUrl("https://h/v2/a", "http://other:2/z"), "http://other:2/z");
  EXPECT_EQ(ResolveUrl("https://h/v2/a/b?q", "c"), "https://h/v2/a/c");
  EXPECT_EQ(ResolveUrl("https://h/v2/a", "//cdn/x"), "https://cdn/x");
  EXPECT_EQ(AddQuery("https://h/u", "digest", "sha256:ab"), "https://h/u?digest=sha256%3Aab");
  EXPECT_EQ(AddQuery("https://h/u?_state=x", "a", "b c"), "https://h/u?_state=x&a=b%20c");
}

TEST(RegistryErrorTest, FormatsErrors) {
  EXPECT_EQ(
      RegistryErrorMessage(
          R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]})"),
      "MANIFEST_UNKNOWN: manifest unknown");
  EXPECT_EQ(RegistryErrorMessage("<html>"), "");
  EXPECT_EQ(RegistryErrorMessage(R"({"x":1})"), "");
}

TEST(Base64Test, RoundTrips) {
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "user:p@ss:word", std::string("\0\xff", 2)}) {
    auto decoded = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(decoded);
    EXPECT_EQ(*decoded, s);
  }
  EXPECT_EQ(Base64Encode("alice:s3cret"), "YWxpY2U6czNjcmV0");
  EXPECT_FALSE(Base64Decode("abc"));
}

}  // namespace
}  // namespace imgtool::registry
