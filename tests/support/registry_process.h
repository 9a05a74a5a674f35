// A real CNCF distribution registry (the docker-registry package) for the
// tests labelled `registry`: started on a free loopback port, plain HTTP or
// TLS with htpasswd Basic auth, and killed with the object.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
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
#include <vector>

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

// Makes certs/ca.crt, server.crt and server.key (for 127.0.0.1 and
// localhost) and an htpasswd with USER:PASSWORD in `dir`, for a TLS registry
// with Basic auth (StartRegistry(dir, true)); false, with what failed as a
// test failure, when the openssl or htpasswd CLI did.
inline bool MakeTlsRegistryFiles(const std::filesystem::path& dir, const std::string& user,
                                 const std::string& password) {
  auto run = [](const std::vector<std::string>& argv) {
    CommandResult r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, 0) << argv[0] << ": " << r.err;
    return r;
  };
  std::filesystem::create_directories(dir / "certs");
  WriteTestFile(dir / "ext.cnf", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  if (run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
           (dir / "ca.key").string(), "-out", (dir / "certs" / "ca.crt").string(), "-subj",
           "/CN=imgtool-test-ca", "-days", "2"})
          .exit_code != 0 ||
      run({"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout",
           (dir / "server.key").string(), "-out", (dir / "server.csr").string(), "-subj",
           "/CN=localhost"})
              .exit_code != 0 ||
      run({"openssl", "x509", "-req", "-in", (dir / "server.csr").string(), "-CA",
           (dir / "certs" / "ca.crt").string(), "-CAkey", (dir / "ca.key").string(),
           "-CAcreateserial", "-out", (dir / "server.crt").string(), "-days", "2", "-extfile",
           (dir / "ext.cnf").string()})
              .exit_code != 0) {
    return false;
  }
  CommandResult htpasswd = run({"htpasswd", "-Bbn", user, password});
  if (htpasswd.exit_code != 0) return false;
  WriteTestFile(dir / "htpasswd", htpasswd.out);
  return true;
}

}  // namespace imgtool::testing
