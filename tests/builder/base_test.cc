#include "builder/base.h"

#include <gtest/gtest.h>

#include "builder/builder.h"

namespace imgtool::builder {
namespace {

TEST(BaseTest, MmdebstrapCommandWithoutMirror) {
  DebootstrapBase base;
  base.suite = "bookworm";
  base.variant = "minbase";
  base.include = {"ca-certificates", "curl"};
  base.exclude = {"vim-tiny"};
  base.components = {"main", "contrib"};
  std::vector<std::string> argv = DebootstrapCommand("mmdebstrap", base, "/tmp/out.tar");
  EXPECT_EQ(argv, (std::vector<std::string>{"mmdebstrap", "--quiet", "--variant=minbase",
                                            "--components=main,contrib",
                                            "--include=ca-certificates,curl,vim-tiny-",
                                            "--format=tar", "bookworm", "/tmp/out.tar"}));
}

TEST(BaseTest, DebootstrapCommandPassesTheMirrorOnlyWhenGiven) {
  DebootstrapBase base;
  base.suite = "bookworm";
  base.exclude = {"a"};
  base.arch = "arm64";
  EXPECT_EQ(
      DebootstrapCommand("debootstrap", base, "/t"),
      (std::vector<std::string>{"debootstrap", "--exclude=a", "--arch=arm64", "bookworm", "/t"}));
  base.mirror = "http://mirror.invalid/debian";
  EXPECT_EQ(DebootstrapCommand("debootstrap", base, "/t").back(), base.mirror);
}

TEST(BaseTest, KeyTextCoversEveryInput) {
  DebootstrapBase a;
  a.suite = "bookworm";
  DebootstrapBase b = a;
  b.include = {"x"};
  EXPECT_NE(DebootstrapKeyText(a), DebootstrapKeyText(b));
  b = a;
  b.variant = "minbase";
  EXPECT_NE(DebootstrapKeyText(a), DebootstrapKeyText(b));
}

TEST(BaseTest, ParsesOutputs) {
  auto out = ParseBuildOutput("oci-archive=/tmp/x.tar");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->type, "oci-archive");
  EXPECT_EQ(out->path, "/tmp/x.tar");
  EXPECT_TRUE(ParseBuildOutput("rootfs.tar=r.tar").has_value());
  EXPECT_FALSE(ParseBuildOutput("zip=x").has_value());
  EXPECT_FALSE(ParseBuildOutput("oci-archive").has_value());
}

}  // namespace
}  // namespace imgtool::builder
