#include "store/reference.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>

namespace imgtool::store {
namespace {

const std::string kHex(64, 'a');
const std::string kDigest = "sha256:" + kHex;

struct GoodCase {
  std::string input;
  std::string registry;
  std::string repository;
  std::string tag;
  std::string digest;  // "" = none
  std::string full;
  std::string familiar;
};

void PrintTo(const GoodCase& c, std::ostream* os) { *os << '"' << c.input << '"'; }

class ReferenceGoodTest : public ::testing::TestWithParam<GoodCase> {};

TEST_P(ReferenceGoodTest, ParsesAndNormalizes) {
  const GoodCase& c = GetParam();
  Result<Reference> ref = ParseReference(c.input);
  ASSERT_TRUE(ref) << c.input << ": " << ref.error().ToString();
  EXPECT_EQ(ref->registry(), c.registry);
  EXPECT_EQ(ref->repository(), c.repository);
  EXPECT_EQ(ref->tag(), c.tag);
  EXPECT_EQ(ref->digest() ? ref->digest()->ToString() : "", c.digest);
  EXPECT_EQ(ref->ToString(), c.full);
  EXPECT_EQ(ref->FamiliarName(), c.familiar);
  // The normalized form parses back to the same reference.
  Result<Reference> again = ParseReference(ref->ToString());
  ASSERT_TRUE(again) << again.error().ToString();
  EXPECT_EQ(*again, *ref);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ReferenceGoodTest,
    ::testing::Values(
        GoodCase{"busybox", "docker.io", "library/busybox", "latest", "",
                 "docker.io/library/busybox:latest", "busybox:latest"},
        GoodCase{"busybox:1.36", "docker.io", "library/busybox", "1.36", "",
                 "docker.io/library/busybox:1.36", "busybox:1.36"},
        GoodCase{"library/busybox", "docker.io", "library/busybox", "latest", "",
                 "docker.io/library/busybox:latest", "busybox:latest"},
        GoodCase{"docker.io/busybox", "docker.io", "library/busybox", "latest", "",
                 "docker.io/library/busybox:latest", "busybox:latest"},
        GoodCase{"index.docker.io/library/busybox:x", "docker.io", "library/busybox", "x", "",
                 "docker.io/library/busybox:x", "busybox:x"},
        GoodCase{"registry-1.docker.io/user/app", "docker.io", "user/app", "latest", "",
                 "docker.io/user/app:latest", "user/app:latest"},
        GoodCase{"user/app:v2", "docker.io", "user/app", "v2", "", "docker.io/user/app:v2",
                 "user/app:v2"},
        GoodCase{"docker.io/library/a/b", "docker.io", "library/a/b", "latest", "",
                 "docker.io/library/a/b:latest", "library/a/b:latest"},
        GoodCase{"localhost/app", "localhost", "app", "latest", "", "localhost/app:latest",
                 "localhost/app:latest"},
        GoodCase{"localhost:5000/a/b:tag", "localhost:5000", "a/b", "tag", "",
                 "localhost:5000/a/b:tag", "localhost:5000/a/b:tag"},
        GoodCase{"quay.io/coreos/etcd:v3.5.0", "quay.io", "coreos/etcd", "v3.5.0", "",
                 "quay.io/coreos/etcd:v3.5.0", "quay.io/coreos/etcd:v3.5.0"},
        GoodCase{"myhost:443/x", "myhost:443", "x", "latest", "", "myhost:443/x:latest",
                 "myhost:443/x:latest"},
        GoodCase{"[::1]:5000/x:1", "[::1]:5000", "x", "1", "", "[::1]:5000/x:1", "[::1]:5000/x:1"},
        GoodCase{"a@" + kDigest, "docker.io", "library/a", "", kDigest,
                 "docker.io/library/a@" + kDigest, "a@" + kDigest},
        GoodCase{"a:tag@" + kDigest, "docker.io", "library/a", "tag", kDigest,
                 "docker.io/library/a:tag@" + kDigest, "a:tag@" + kDigest},
        GoodCase{"localhost:5000/a@" + kDigest, "localhost:5000", "a", "", kDigest,
                 "localhost:5000/a@" + kDigest, "localhost:5000/a@" + kDigest},
        // A bare host:port is docker's "image localhost, tag 5000".
        GoodCase{"localhost:5000", "docker.io", "library/localhost", "5000", "",
                 "docker.io/library/localhost:5000", "localhost:5000"},
        GoodCase{"x/a-b--c.d_e__f", "docker.io", "x/a-b--c.d_e__f", "latest", "",
                 "docker.io/x/a-b--c.d_e__f:latest", "x/a-b--c.d_e__f:latest"},
        GoodCase{"a:_Tag.With-MIXED_case", "docker.io", "library/a", "_Tag.With-MIXED_case", "",
                 "docker.io/library/a:_Tag.With-MIXED_case", "a:_Tag.With-MIXED_case"},
        GoodCase{"a:" + std::string(128, 't'), "docker.io", "library/a", std::string(128, 't'), "",
                 "docker.io/library/a:" + std::string(128, 't'), "a:" + std::string(128, 't')},
        // An uppercase first component is a registry host, as in docker.
        GoodCase{"Example.COM/x", "Example.COM", "x", "latest", "", "Example.COM/x:latest",
                 "Example.COM/x:latest"}));

struct BadCase {
  std::string input;
  std::string message;  // the whole error line
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << '"' << c.input.substr(0, 80) << '"'; }

class ReferenceBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ReferenceBadTest, RejectsWithClearMessage) {
  const BadCase& c = GetParam();
  Result<Reference> ref = ParseReference(c.input);
  ASSERT_FALSE(ref) << c.input << " parsed as " << ref->ToString();
  EXPECT_EQ(ref.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ref.error().message(), c.message);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ReferenceBadTest,
    ::testing::Values(
        BadCase{"", "invalid reference \"\": empty reference"},
        BadCase{"Foo:bar", "invalid reference \"Foo:bar\": repository name must be lowercase"},
        BadCase{"UPPER", "invalid reference \"UPPER\": repository name must be lowercase"},
        BadCase{"quay.io/Foo/bar",
                "invalid reference \"quay.io/Foo/bar\": repository name must be lowercase"},
        BadCase{":tag", "invalid reference \":tag\": repository name is empty"},
        BadCase{"@" + kDigest, "invalid reference \"@" + kDigest + "\": repository name is empty"},
        BadCase{"a//b", "invalid reference \"a//b\": repository name has an empty path component"},
        BadCase{"a/", "invalid reference \"a/\": repository name has an empty path component"},
        BadCase{"/a", "invalid reference \"/a\": repository name has an empty path component"},
        BadCase{"a:" + std::string(129, 't'), "invalid reference \"a:" + std::string(129, 't') +
                                                  "\": tag is longer than 128 characters"},
        BadCase{"a:.tag",
                "invalid reference \"a:.tag\": invalid tag \".tag\" (want "
                "[A-Za-z0-9_][A-Za-z0-9_.-]*)"},
        BadCase{"a:",
                "invalid reference \"a:\": invalid tag \"\" (want "
                "[A-Za-z0-9_][A-Za-z0-9_.-]*)"},
        BadCase{"a:t@g", "invalid reference \"a:t@g\": invalid digest \"g\""},
        BadCase{"a@sha256:abc",
                "invalid reference \"a@sha256:abc\": invalid sha256 digest "
                "\"sha256:abc\": want 64 hex digits"},
        BadCase{"a@md5:abc",
                "invalid reference \"a@md5:abc\": unsupported digest algorithm "
                "\"md5\""},
        BadCase{"-a", "invalid reference \"-a\": invalid repository path component \"-a\""},
        BadCase{"a-", "invalid reference \"a-\": invalid repository path component \"a-\""},
        BadCase{"a..b", "invalid reference \"a..b\": invalid repository path component \"a..b\""},
        BadCase{"a___b",
                "invalid reference \"a___b\": invalid repository path component \"a___b\""},
        BadCase{"a b", "invalid reference \"a b\": invalid repository path component \"a b\""},
        // A first component with "." is a host, and hosts have no "_".
        BadCase{"a_b.c/x", "invalid reference \"a_b.c/x\": invalid registry \"a_b.c\""},
        BadCase{"-bad.host/x",
                "invalid reference \"-bad.host/x\": invalid registry "
                "\"-bad.host\""},
        BadCase{"host:port/x",
                "invalid reference \"host:port/x\": invalid registry "
                "\"host:port\""},
        BadCase{kHex, "invalid reference \"" + kHex +
                          "\": a 64-digit hex string is an image ID, not a repository name"},
        BadCase{std::string(256, 'a'), "invalid reference \"" + std::string(256, 'a') +
                                           "\": repository name is longer than 255 characters"}));

TEST(ReferenceTest, FamiliarRepositoryDropsDefaults) {
  EXPECT_EQ(ParseReference("busybox:1")->FamiliarRepository(), "busybox");
  EXPECT_EQ(ParseReference("docker.io/user/app")->FamiliarRepository(), "user/app");
  EXPECT_EQ(ParseReference("quay.io/a/b")->FamiliarRepository(), "quay.io/a/b");
}

TEST(ReferenceTest, NameHasNoTagOrDigest) {
  Result<Reference> ref = ParseReference("localhost:5000/a/b:t@" + kDigest);
  ASSERT_TRUE(ref);
  EXPECT_EQ(ref->Name(), "localhost:5000/a/b");
  EXPECT_FALSE(ref->IsDockerHub());
  EXPECT_TRUE(ParseReference("busybox")->IsDockerHub());
}

TEST(ReferenceTest, WithTagWithDigestWithoutDigest) {
  Result<Reference> ref = ParseReference("a@" + kDigest);
  ASSERT_TRUE(ref);
  EXPECT_EQ(ref->WithoutDigest().ToString(), "docker.io/library/a:latest");
  Result<Reference> tagged = ref->WithTag("v1");
  ASSERT_TRUE(tagged);
  EXPECT_EQ(tagged->ToString(), "docker.io/library/a:v1@" + kDigest);
  EXPECT_FALSE(ref->WithTag("-bad"));
  Digest other = Digest::Sha256Of("x");
  EXPECT_EQ(ParseReference("a:1")->WithDigest(other).ToString(),
            "docker.io/library/a:1@" + other.ToString());
}

TEST(ReferenceTest, FromPartsValidates) {
  Result<Reference> ok = Reference::FromParts("quay.io", "x/y", "2", std::nullopt);
  ASSERT_TRUE(ok) << ok.error().ToString();
  EXPECT_EQ(ok->ToString(), "quay.io/x/y:2");
  EXPECT_FALSE(Reference::FromParts("quay.io", "X", "2", std::nullopt));
}

TEST(ReferenceTest, IsValidTag) {
  EXPECT_TRUE(IsValidTag("latest"));
  EXPECT_TRUE(IsValidTag("1.0-rc_1"));
  EXPECT_FALSE(IsValidTag(""));
  EXPECT_FALSE(IsValidTag("-x"));
  EXPECT_FALSE(IsValidTag("a/b"));
  EXPECT_FALSE(IsValidTag(std::string(129, 'a')));
}

}  // namespace
}  // namespace imgtool::store
