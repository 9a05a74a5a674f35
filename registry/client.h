// A client for one OCI distribution registry: ping and auth (Bearer tokens
// per scope, Basic), retries with backoff, redirects that never carry the
// Authorization header to another host, and the manifest and blob calls that
// pull and push are made of.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/byte_sink.h"
#include "common/digest.h"
#include "common/error.h"
#include "registry/auth_config.h"
#include "registry/http_transport.h"
#include "registry/parse.h"
#include "store/content_store.h"
#include "store/oci_types.h"

namespace imgtool::registry {

struct ClientOptions {
  // Use plain HTTP when the registry does not speak TLS, and do not verify
  // certificates (the transport must be made with TlsOptions::verify = false).
  bool insecure = false;
  std::optional<Credentials> credentials;
  // Attempts per request for connection errors and 429/502/503/504.
  int max_attempts = 5;
  std::chrono::milliseconds backoff{200};
};

struct FetchedManifest {
  std::string media_type;
  std::string body;  // the exact bytes, which the digest is of
  Digest digest;
};

// Called with the bytes of a blob done so far (from several threads at once
// when blobs are fetched in parallel).
using BytesCallback = std::function<void(int64_t done)>;

class Client {
 public:
  // `registry` is a reference's registry ("docker.io", "localhost:5000").
  Client(std::string registry, std::shared_ptr<HttpTransport> transport, ClientOptions options);

  const std::string& registry() const { return registry_; }
  // "https://registry-1.docker.io" once pinged.
  std::string base_url() const;

  // GET /v2/: picks the scheme and learns the auth challenge.
  Status Ping();
  // Ping, then proves the credentials (a Basic request or a token fetch);
  // PermissionDenied "wrong username or password" when they are refused.
  Status CheckLogin();

  // GET a manifest by tag or digest ("sha256:..."), any of the four manifest
  // media types. The digest is computed from the bytes; when `reference` is
  // a digest it must match (DataLoss otherwise).
  Result<FetchedManifest> GetManifest(std::string_view repository, std::string_view reference);

  // Streams a blob into a new ingest of `content` and commits it verified
  // against the descriptor's digest and size: wrong bytes are DataLoss and
  // leave nothing. A dropped connection resumes with Range where it stopped.
  // A blob the store already has is not fetched (returns false then).
  // `tee`, when set, also gets every byte written to the ingest, in order
  // (resumed downloads included), as it arrives: not yet verified.
  Result<bool> FetchBlob(std::string_view repository, const store::Descriptor& descriptor,
                         store::ContentStore& content, const BytesCallback& progress = {},
                         const std::function<bool()>& cancelled = {},
                         const std::function<void(std::string_view)>& tee = {});

  // HEAD /v2/R/blobs/D.
  Result<bool> BlobExists(std::string_view repository, const Digest& digest);
  // Uploads a blob of the store (mounting it from `mount_from`, a repository
  // of this registry, when it is non-empty and the registry allows it).
  // Returns "exists", "mounted" or "uploaded".
  Result<std::string> PushBlob(std::string_view repository, const store::Descriptor& descriptor,
                               const store::ContentStore& content, std::string_view mount_from,
                               const BytesCallback& progress = {});
  // PUT /v2/R/manifests/REF with the exact media type; the digest of `body`.
  Result<Digest> PutManifest(std::string_view repository, std::string_view reference,
                             std::string_view media_type, std::string_view body);

  // Uploads larger than this go in chunks of chunk_size (at least the
  // registry's OCI-Chunk-Min-Length).
  void SetChunking(int64_t monolithic_max, int64_t chunk_size) {
    monolithic_max_ = monolithic_max;
    chunk_size_ = chunk_size;
  }

 private:
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point expires;
  };
  struct SendOptions {
    std::vector<std::string> scopes;
    ByteSink* sink = nullptr;
    // Called before every attempt (e.g. to set Range from what has arrived).
    std::function<void(HttpRequest&)> prepare;
    bool retry = true;
    // True once the caller gave up (another blob of the pull failed): no
    // retry then.
    std::function<bool()> cancelled;
  };

  Result<HttpResponse> Send(HttpRequest request, const SendOptions& options);
  // One attempt, following redirects.
  Result<HttpResponse> SendFollowing(HttpRequest request, ByteSink* sink);
  Result<std::string> AuthorizationFor(const std::vector<std::string>& scopes, bool refresh);
  Result<Token> FetchToken(const Challenge& challenge, const std::vector<std::string>& scopes);
  std::string Url(std::string_view path) const;
  Error ErrorFor(const HttpResponse& response, std::string_view what) const;
  Result<std::string> UploadChunked(std::string location, std::string_view repository,
                                    const store::Descriptor& descriptor, int fd, int64_t min_chunk,
                                    const BytesCallback& progress);

  std::string registry_;
  std::string host_;
  std::shared_ptr<HttpTransport> transport_;
  ClientOptions options_;
  int64_t monolithic_max_ = 16 << 20;
  // Every PATCH costs a round trip and the registry's per-request upload
  // work: a 400 MB blob in 16 MiB chunks took ~0.4 s longer than in one
  // (docker-registry on loopback). A dropped connection resumes from the
  // offset the registry reports, so larger chunks lose nothing there.
  int64_t chunk_size_ = 128 << 20;

  mutable std::mutex mu_;
  bool pinged_ = false;
  std::string base_;
  std::optional<Challenge> challenge_;
  std::map<std::string, Token> tokens_;
};

// Scope strings: "repository:a/b:pull", "repository:a/b:pull,push".
std::string PullScope(std::string_view repository);
std::string PushScope(std::string_view repository);

// The Accept header for manifests: OCI and Docker, single and multi-platform.
std::string ManifestAccept();

}  // namespace imgtool::registry
