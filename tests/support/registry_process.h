// A real CNCF distribution registry (the docker-registry package) for the
// tests labelled `registry`: started on a free loopback port, plain HTTP or
// TLS with htpasswd Basic auth, and killed with the object.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "tests/support/test_util.h"

namespace imgtool::testing {

// A loopback port free at the time of the call (another process may take it
// before it is bound again: start the registry a few times, see StartRegistry).
inline int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

inline bool ListeningOnLoopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// One docker-registry process, killed with the object. With `tls`, `dir`
// must hold server.crt, server.key and htpasswd.
class RegistryProcess {
 public:
  RegistryProcess(const std::filesystem::path& dir, bool tls) : dir_(dir) {
    std::filesystem::create_directories(dir / "data");
    port_ = FreeLoopbackPort();
    std::string config =
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        "storage:\n  filesystem:\n    rootdirectory: " +
        (dir / "data").string() +
        "\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:" + std::to_string(port_) +
        "\n  secret: imgtool-test\n";
    if (tls) {
      config += "  tls:\n    certificate: " + (dir / "server.crt").string() +
                "\n    key: " + (dir / "server.key").string() + "\n";
      config +=
          "auth:\n  htpasswd:\n    realm: imgtool-test\n    path: " + (dir / "htpasswd").string() +
          "\n";
    }
    WriteTestFile(dir / "config.yml", config);
    pid_ = ::fork();
    if (pid_ == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execl("/usr/bin/docker-registry", "docker-registry", "serve", (dir / "config.yml").c_str(),
              nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 200 && !ListeningOnLoopback(port_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }
  ~RegistryProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  RegistryProcess(const RegistryProcess&) = delete;
  RegistryProcess& operator=(const RegistryProcess&) = delete;

  int port() const { return port_; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  bool up() const { return ListeningOnLoopback(port_); }

 private:
  std::filesystem::path dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// Starts a registry in `dir`, retrying on another port when the probed free
// port was taken meanwhile (ctest -j); null when it never came up.
inline std::unique_ptr<RegistryProcess> StartRegistry(const std::filesystem::path& dir, bool tls) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto registry = std::make_unique<RegistryProcess>(dir, tls);
    if (registry->up()) return registry;
  }
  return nullptr;
}

}  // namespace imgtool::testing
