#include "runner/container.h"

#include <gtest/gtest.h>

namespace imgtool::runner {
namespace {

TEST(EtcFilesTest, HostsNameTheContainer) {
  EXPECT_EQ(HostsFileContent("box", "", {}),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tbox\n");
  std::string bridged = HostsFileContent("web", "10.89.0.5", {"db:10.89.0.9", "v6:fd00::1", "bad"});
  EXPECT_NE(bridged.find("10.89.0.5\tweb\n"), std::string::npos);
  EXPECT_NE(bridged.find("10.89.0.9\tdb\n"), std::string::npos);
  EXPECT_NE(bridged.find("fd00::1\tv6\n"), std::string::npos);
  EXPECT_EQ(bridged.find("bad"), std::string::npos);
}

TEST(EtcFilesTest, ResolvConfDropsLoopbackServers) {
  constexpr std::string_view kHost =
      "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch example.org\n";
  EXPECT_EQ(ResolvConfContent(kHost, {}, false),
            "# generated\nnameserver 192.0.2.1\nsearch example.org\n");
  // With only loopback servers left, public ones stand in.
  std::string only_local = ResolvConfContent("nameserver 127.0.0.53\n", {}, false);
  EXPECT_EQ(only_local, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
  // The network's servers win, the rest of the host's file stays.
  EXPECT_EQ(ResolvConfContent(kHost, {"10.89.0.1"}, false),
            "nameserver 10.89.0.1\n# generated\nsearch example.org\n");
  // Host networking: the host's file as it is.
  EXPECT_EQ(ResolvConfContent(kHost, {}, true), std::string(kHost));
}

}  // namespace
}  // namespace imgtool::runner
