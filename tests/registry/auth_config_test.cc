#include "registry/auth_config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>

#include "common/file_util.h"
#include "common/temp_dir.h"

namespace imgtool::registry {
namespace {

TEST(AuthConfigTest, FindsDockerFormats) {
  std::string config = R"({"auths":{
    "https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcmV0"},
    "localhost:5000":{"auth":"Ym9iOnB3OndpdGg6Y29sb25z"},
    "https://quay.io":{"username":"u","password":"p"}}})";
  auto hub = FindCredentials(config, "docker.io");
  ASSERT_TRUE(hub) << hub.error().ToString();
  ASSERT_TRUE(hub->has_value());
  EXPECT_EQ((*hub)->username, "alice");
  EXPECT_EQ((*hub)->password, "s3cret");
  auto local = FindCredentials(config, "localhost:5000");
  ASSERT_TRUE(local && local->has_value());
  EXPECT_EQ((*local)->username, "bob");
  EXPECT_EQ((*local)->password, "pw:with:colons");
  auto quay = FindCredentials(config, "quay.io");
  ASSERT_TRUE(quay && quay->has_value());
  EXPECT_EQ((*quay)->username, "u");
  auto none = FindCredentials(config, "ghcr.io");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  auto empty = FindCredentials("", "ghcr.io");
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->has_value());
}

TEST(AuthConfigTest, BadDocumentsDoNotEchoSecrets) {
  auto bad = FindCredentials(R"({"auths":{"h":{"auth":"c2VjcmV0cGFzc3dvcmQ="}} oops)", "h");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message().find("c2VjcmV0"), std::string::npos);
  auto no_colon = FindCredentials(R"({"auths":{"h":{"auth":"c2VjcmV0cGFzc3dvcmQ="}}})", "h");
  ASSERT_FALSE(no_colon);
  EXPECT_EQ(no_colon.error().message().find("secret"), std::string::npos);
}

TEST(AuthConfigTest, SetAndRemoveKeepOtherKeys) {
  std::string config = R"({"auths":{"other:1":{"auth":"eDp5"}},"credHelpers":{"x":"y"}})";
  auto set = WithCredentials(config, "localhost:5000", {"alice", "s3cret"});
  ASSERT_TRUE(set);
  auto found = FindCredentials(*set, "localhost:5000");
  ASSERT_TRUE(found && found->has_value());
  EXPECT_EQ((*found)->password, "s3cret");
  EXPECT_NE(set->find("credHelpers"), std::string::npos);
  EXPECT_NE(set->find("other:1"), std::string::npos);
  bool removed = false;
  auto gone = WithoutCredentials(*set, "localhost:5000", &removed);
  ASSERT_TRUE(gone);
  EXPECT_TRUE(removed);
  EXPECT_FALSE(FindCredentials(*gone, "localhost:5000")->has_value());
  EXPECT_TRUE(FindCredentials(*gone, "other:1")->has_value());
  auto again = WithoutCredentials(*gone, "localhost:5000", &removed);
  ASSERT_TRUE(again);
  EXPECT_FALSE(removed);
}

TEST(AuthConfigTest, FileIsPrivateAndDockerConfigIsAFallback) {
  auto dir = TempDir::Create("imgtool-auth-");
  ASSERT_TRUE(dir);
  auto file = dir->path() / "cfg" / "imgtool" / "auth.json";
  ASSERT_TRUE(SaveCredentials("localhost:5000", {"alice", "pw"}, file));
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto found = LookupCredentials("localhost:5000", file);
  ASSERT_TRUE(found && found->has_value());
  EXPECT_EQ((*found)->username, "alice");

  ::setenv("DOCKER_CONFIG", (dir->path() / "docker").c_str(), 1);
  std::filesystem::create_directories(dir->path() / "docker");
  ASSERT_TRUE(WriteFileAtomic(dir->path() / "docker" / "config.json",
                              R"({"auths":{"ghcr.io":{"auth":"Ym9iOnB3"}}})"));
  auto docker = LookupCredentials("ghcr.io", file);
  ASSERT_TRUE(docker && docker->has_value());
  EXPECT_EQ((*docker)->username, "bob");
  ::unsetenv("DOCKER_CONFIG");

  ASSERT_TRUE(RemoveCredentials("localhost:5000", file));
  auto removed = RemoveCredentials("localhost:5000", file);
  ASSERT_FALSE(removed);
  EXPECT_EQ(removed.error().code(), ErrorCode::kNotFound);
}

}  // namespace
}  // namespace imgtool::registry
