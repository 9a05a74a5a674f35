// The registry client over real HTTP (libcurl) against a small fault-injecting
// server of our own on loopback: wrong bytes, a connection dropped mid-blob,
// 503s, a redirect to another host, and a Bearer token flow.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "common/temp_dir.h"
#include "registry/client.h"
#include "registry/pull.h"
#include "store/store.h"

namespace imgtool::registry {
namespace {

struct Request {
  std::string method;
  std::string path;
  std::map<std::string, std::string> headers;  // lowercase names
  int port = 0;                                // which listener got it
};

std::string Header(const Request& r, const std::string& name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? "" : it->second;
}

struct Response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Send only this many body bytes (announcing them all), then close.
  int64_t cut_after = -1;
};

// A tiny HTTP/1.1 server: one request per connection, a thread per
// connection, listening on two loopback ports (two "hosts").
class FaultServer {
 public:
  using Handler = std::function<Response(const Request&)>;

  explicit FaultServer(Handler handler) : handler_(std::move(handler)) {
    for (int i = 0; i < 2; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof(addr);
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
      ::listen(fd, 64);
      listeners_[i] = fd;
      ports_[i] = ntohs(addr.sin_port);
      threads_.emplace_back([this, i] { Accept(i); });
    }
  }
  ~FaultServer() {
    stop_ = true;
    for (int fd : listeners_) ::shutdown(fd, SHUT_RDWR);
    for (auto& t : threads_) t.join();
    std::lock_guard lock(mu_);
    for (auto& t : workers_) t.join();
    for (int fd : listeners_) ::close(fd);
  }

  int port(int i = 0) const { return ports_[i]; }
  std::vector<Request> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void Accept(int i) {
    while (!stop_) {
      int fd = ::accept4(listeners_[i], nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      std::lock_guard lock(mu_);
      workers_.emplace_back([this, fd, i] { Serve(fd, ports_[i]); });
    }
  }

  void Serve(int fd, int port) {
    std::string data;
    char buf[4096];
    while (data.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n <= 0 || (data.empty() && buf[0] == 0x16)) {  // closed, or a TLS hello
        ::close(fd);
        return;
      }
      data.append(buf, n);
    }
    Request request;
    request.port = port;
    size_t end = data.find("\r\n\r\n");
    std::string head = data.substr(0, end);
    size_t line_end = head.find("\r\n");
    std::string first = head.substr(0, line_end);
    request.method = first.substr(0, first.find(' '));
    request.path = first.substr(first.find(' ') + 1);
    request.path = request.path.substr(0, request.path.find(' '));
    size_t pos = line_end;
    while (pos != std::string::npos && pos < head.size()) {
      size_t next = head.find("\r\n", pos + 2);
      std::string line =
          head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        request.headers[name] = value;
      }
      pos = next;
    }
    {
      std::lock_guard lock(mu_);
      requests_.push_back(request);
    }
    Response response = handler_(request);
    std::string out = "HTTP/1.1 " + std::to_string(response.status) + " X\r\n";
    for (const auto& [k, v] : response.headers) out += k + ": " + v + "\r\n";
    out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
    out += "Connection: close\r\n\r\n";
    if (response.cut_after >= 0) {
      out += response.body.substr(0, response.cut_after);
    } else if (request.method != "HEAD") {
      out += response.body;
    }
    size_t sent = 0;
    while (sent < out.size()) {
      ssize_t n = ::write(fd, out.data() + sent, out.size() - sent);
      if (n <= 0) break;
      sent += n;
    }
    ::close(fd);
  }

  Handler handler_;
  int listeners_[2] = {-1, -1};
  int ports_[2] = {0, 0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::vector<std::thread> workers_;
  std::vector<Request> requests_;
};

// One image: a layer and a config, served under /v2/r/.
struct Image {
  std::string layer;
  std::string config;
  std::string manifest;
  Digest layer_digest;
  Digest config_digest;
  Digest manifest_digest;
};

Image MakeImage() {
  Image image;
  image.layer.resize(300000);
  for (size_t i = 0; i < image.layer.size(); ++i)
    image.layer[i] = static_cast<char>(i * 31 + i / 7);
  image.layer_digest = Digest::Sha256Of(image.layer);
  store::ImageConfig config;
  config.os = "linux";
  config.architecture = store::HostPlatform().architecture;
  config.rootfs.diff_ids = {image.layer_digest};
  image.config = store::SerializeImageConfig(config);
  image.config_digest = Digest::Sha256Of(image.config);
  store::Manifest manifest;
  manifest.media_type = std::string(store::media_type::kOciManifest);
  manifest.config = {std::string(store::media_type::kOciConfig),
                     image.config_digest,
                     static_cast<int64_t>(image.config.size()),
                     {},
                     {},
                     std::nullopt,
                     ""};
  manifest.layers = {{std::string(store::media_type::kOciLayerTarGzip),
                      image.layer_digest,
                      static_cast<int64_t>(image.layer.size()),
                      {},
                      {},
                      std::nullopt,
                      ""}};
  image.manifest = store::SerializeManifest(manifest);
  image.manifest_digest = Digest::Sha256Of(image.manifest);
  return image;
}

class FaultServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("imgtool-fault-");
    ASSERT_TRUE(dir);
    dir_.emplace(std::move(*dir));
    auto opened = store::Store::Open(dir_->path() / "root");
    ASSERT_TRUE(opened);
    store_ = std::move(*opened);
    image_ = MakeImage();
  }

  // Serves the image; `blob` may override the layer's response.
  Response Serve(const Request& r,
                 const std::function<std::optional<Response>(const Request&)>& blob) {
    Response response;
    if (r.path == "/v2/") return response;
    if (r.path == "/v2/r/manifests/1") {
      response.headers.push_back({"Content-Type", std::string(store::media_type::kOciManifest)});
      response.body = image_.manifest;
      return response;
    }
    if (r.path == "/v2/r/blobs/" + image_.config_digest.ToString()) {
      response.body = image_.config;
      return response;
    }
    if (r.path.find(image_.layer_digest.ToString()) != std::string::npos) {
      if (auto custom = blob(r)) return *custom;
      response.body = image_.layer;
      return response;
    }
    response.status = 404;
    return response;
  }

  // What PullOptions::stream handed to a stream, per blob digest.
  struct Streamed {
    std::string bytes;
    int ends = 0;
    bool committed = false;
  };
  class RecordingStream final : public BlobStream {
   public:
    explicit RecordingStream(Streamed* into) : into_(into) {}
    void Write(std::string_view bytes) override { into_->bytes.append(bytes); }
    void End(bool committed) override {
      ++into_->ends;
      into_->committed = committed;
    }

   private:
    Streamed* into_;
  };
  std::mutex streamed_mu_;
  std::map<std::string, Streamed> streamed_;

  Result<PulledImage> PullFrom(int port, std::optional<Credentials> creds = std::nullopt) {
    auto transport = NewCurlTransport(TlsOptions{});
    if (!transport) return std::move(transport).error();
    ClientOptions options;
    options.insecure = true;
    options.backoff = std::chrono::milliseconds(5);
    options.credentials = std::move(creds);
    Client client("127.0.0.1:" + std::to_string(port), *transport, options);
    PullOptions pull;
    pull.stream = [&](const store::Descriptor& blob) -> std::unique_ptr<BlobStream> {
      std::lock_guard lock(streamed_mu_);
      return std::make_unique<RecordingStream>(&streamed_[blob.digest.ToString()]);
    };
    return Pull(*store_, client,
                *store::ParseReference("127.0.0.1:" + std::to_string(port) + "/r:1"), pull);
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<store::Store> store_;
  Image image_;
};

TEST_F(FaultServerTest, WrongBytesAreRejectedAndNothingIsStored) {
  FaultServer server([&](const Request& r) {
    return Serve(r, [&](const Request&) -> std::optional<Response> {
      Response bad;
      bad.body = image_.layer;
      bad.body[1000] ^= 0x55;
      return bad;
    });
  });
  auto pulled = PullFrom(server.port());
  ASSERT_FALSE(pulled);
  EXPECT_EQ(pulled.error().code(), ErrorCode::kDataLoss) << pulled.error().ToString();
  EXPECT_FALSE(store_->content().Exists(image_.layer_digest));
  EXPECT_TRUE(std::filesystem::is_empty(store_->root() / "ingest"));
  EXPECT_TRUE(store_->index().List()->empty());
  // A stream of the layer saw the bad bytes, then heard that they were not committed.
  const Streamed& layer = streamed_[image_.layer_digest.ToString()];
  EXPECT_EQ(layer.ends, 1);
  EXPECT_FALSE(layer.committed);
}

TEST_F(FaultServerTest, ADroppedConnectionIsResumedWithRange) {
  std::atomic<int> gets{0};
  FaultServer server([&](const Request& r) {
    return Serve(r, [&](const Request& req) -> std::optional<Response> {
      Response response;
      if (gets++ == 0) {
        response.body = image_.layer;
        response.cut_after = 100000;
        return response;
      }
      auto range = req.headers.find("range");
      if (range == req.headers.end()) return std::nullopt;
      int64_t from = std::stoll(range->second.substr(6));
      response.status = 206;
      response.headers.push_back({"Content-Range", "bytes " + std::to_string(from) + "-" +
                                                       std::to_string(image_.layer.size() - 1) +
                                                       "/" + std::to_string(image_.layer.size())});
      response.body = image_.layer.substr(from);
      return response;
    });
  });
  auto pulled = PullFrom(server.port());
  ASSERT_TRUE(pulled) << pulled.error().ToString();
  EXPECT_TRUE(store_->content().Exists(image_.layer_digest));
  bool resumed = false;
  for (const Request& r : server.requests()) {
    auto range = r.headers.find("range");
    if (range != r.headers.end()) {
      EXPECT_EQ(range->second, "bytes=100000-");
      resumed = true;
    }
  }
  EXPECT_TRUE(resumed);
  EXPECT_TRUE(store_->Fsck()->empty());
  // A stream of the layer got every byte once, in order, across the resume.
  const Streamed& layer = streamed_[image_.layer_digest.ToString()];
  EXPECT_TRUE(layer.bytes == image_.layer) << layer.bytes.size() << " of " << image_.layer.size();
  EXPECT_EQ(layer.ends, 1);
  EXPECT_TRUE(layer.committed);
}

TEST_F(FaultServerTest, ABlobCancelledByAnotherBlobsFailureIsNotRetried) {
  std::atomic<int> layer_gets{0};
  FaultServer server([&](const Request& r) {
    if (r.path == "/v2/r/blobs/" + image_.config_digest.ToString()) {
      // Late enough that the layer's download has started.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      Response missing;
      missing.status = 404;
      return missing;
    }
    return Serve(r, [&](const Request&) -> std::optional<Response> {
      ++layer_gets;
      // The config's 404 has stopped the pull by the time this answers.
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
      return std::nullopt;
    });
  });
  auto pulled = PullFrom(server.port());
  ASSERT_FALSE(pulled);
  EXPECT_NE(pulled.error().message().find(image_.config_digest.ToString()), std::string::npos)
      << pulled.error().ToString();
  EXPECT_EQ(layer_gets.load(), 1) << "the cancelled layer download was retried";
  EXPECT_FALSE(store_->content().Exists(image_.layer_digest));
  // Its stream heard that the blob was not committed.
  const Streamed& layer = streamed_[image_.layer_digest.ToString()];
  EXPECT_EQ(layer.ends, 1);
  EXPECT_FALSE(layer.committed);
}

TEST_F(FaultServerTest, Two503sAreRetriedA404IsNot) {
  std::atomic<int> gets{0};
  FaultServer server([&](const Request& r) {
    return Serve(r, [&](const Request&) -> std::optional<Response> {
      if (gets++ < 2) {
        Response busy;
        busy.status = 503;
        return busy;
      }
      return std::nullopt;
    });
  });
  auto pulled = PullFrom(server.port());
  ASSERT_TRUE(pulled) << pulled.error().ToString();
  EXPECT_EQ(gets.load(), 3);

  FaultServer missing([&](const Request& r) {
    return Serve(r, [&](const Request&) -> std::optional<Response> {
      Response gone;
      gone.status = 404;
      gone.body = R"({"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]})";
      return gone;
    });
  });
  (void)store_->content().Delete(image_.layer_digest);
  auto failed = PullFrom(missing.port());
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code(), ErrorCode::kNotFound);
  int layer_gets = 0;
  for (const Request& r : missing.requests()) {
    if (r.path.find(image_.layer_digest.ToString()) != std::string::npos) ++layer_gets;
  }
  EXPECT_EQ(layer_gets, 1);
}

TEST_F(FaultServerTest, ARedirectToAnotherHostCarriesNoAuthorization) {
  FaultServer* self = nullptr;
  FaultServer server([&](const Request& r) {
    if (r.path != "/v2/" && r.headers.count("authorization") == 0 && r.port == self->port(0)) {
      Response challenge;
      challenge.status = 401;
      challenge.headers.push_back({"WWW-Authenticate", "Basic realm=\"fault\""});
      return challenge;
    }
    if (r.path == "/v2/") {
      Response challenge;
      challenge.status = 401;
      challenge.headers.push_back({"WWW-Authenticate", "Basic realm=\"fault\""});
      if (r.headers.count("authorization")) challenge.status = 200;
      return challenge;
    }
    return Serve(r, [&](const Request& req) -> std::optional<Response> {
      if (req.port == self->port(1)) return std::nullopt;  // the "CDN": serve it
      Response redirect;
      redirect.status = 307;
      redirect.headers.push_back(
          {"Location", "http://localhost:" + std::to_string(self->port(1)) + req.path});
      return redirect;
    });
  });
  self = &server;
  auto pulled = PullFrom(server.port(), Credentials{"alice", "pw"});
  ASSERT_TRUE(pulled) << pulled.error().ToString();
  int cdn = 0;
  for (const Request& r : server.requests()) {
    if (r.port == server.port(1)) {
      ++cdn;
      EXPECT_EQ(r.headers.count("authorization"), 0u) << r.path;
      EXPECT_EQ(Header(r, "host"), "localhost:" + std::to_string(server.port(1)));
    } else if (r.path.find("/blobs/") != std::string::npos) {
      EXPECT_EQ(r.headers.count("authorization"), 1u);
    }
  }
  EXPECT_EQ(cdn, 1);
}

TEST_F(FaultServerTest, BearerTokenFlow) {
  FaultServer* self = nullptr;
  std::atomic<int> token_requests{0};
  FaultServer server([&](const Request& r) {
    std::string realm = "http://127.0.0.1:" + std::to_string(self->port(1)) + "/token";
    if (r.path.starts_with("/token")) {
      ++token_requests;
      Response token;
      if (r.path.find("service=fault") == std::string::npos ||
          r.path.find("scope=repository%3Ar%3Apull") == std::string::npos ||
          Header(r, "authorization") != "Basic YWxpY2U6cHc=") {
        token.status = 401;
        return token;
      }
      token.body = R"({"access_token":"tok-123","expires_in":300})";
      return token;
    }
    if (Header(r, "authorization") != "Bearer tok-123") {
      Response challenge;
      challenge.status = 401;
      challenge.headers.push_back(
          {"WWW-Authenticate",
           "Bearer realm=\"" + realm + "\",service=\"fault\",scope=\"repository:r:pull\""});
      return challenge;
    }
    return Serve(r, [](const Request&) { return std::optional<Response>(); });
  });
  self = &server;
  auto pulled = PullFrom(server.port(), Credentials{"alice", "pw"});
  ASSERT_TRUE(pulled) << pulled.error().ToString();
  // One token for the repository's pull scope, reused by every request.
  EXPECT_EQ(token_requests.load(), 1);
  auto denied = PullFrom(server.port(), Credentials{"alice", "wrong"});
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(denied.error().message().find("wrong username or password"), std::string::npos);
}

}  // namespace
}  // namespace imgtool::registry
