// An in-memory OCI distribution registry behind the HttpTransport seam, with
// knobs for the faults the client must survive. Enough of the protocol for
// pull and push: ping, token endpoint, manifests, blobs (with Range),
// uploads (POST, PATCH, PUT, status GET, mount).
#pragma once

#include <unistd.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/digest.h"
#include "registry/http_transport.h"
#include "registry/parse.h"

namespace imgtool::registry::testing {

struct ManifestEntry {
  std::string media_type;
  std::string body;
};

class FakeRegistry : public HttpTransport {
 public:
  // Auth: "none", "basic" (user/pass), "bearer" (token endpoint at
  // https://auth.test/token; `push_allowed` decides the push scope).
  std::string auth = "none";
  std::string user = "alice";
  std::string pass = "s3cret";
  bool push_allowed = true;
  bool anonymous_pull = true;

  // Faults.
  int fail_503 = 0;              // this many 503s before answering blob GETs
  int drop_blob_after = -1;      // cut a blob GET after this many bytes (once)
  bool corrupt_blob = false;     // serve wrong bytes for blobs
  bool redirect_blobs = false;   // 307 blob GETs to https://cdn.test/...
  bool ignore_range = false;     // answer Range requests with 200 + everything
  int drop_patch_after = -1;     // store only this many bytes of one PATCH, then fail
  int64_t chunk_min_length = 0;  // OCI-Chunk-Min-Length on upload start

  std::map<std::string, ManifestEntry> manifests;              // "repo:tag" and "repo@digest"
  std::map<std::string, std::string> blobs;                    // digest -> bytes (all repositories)
  std::map<std::string, std::vector<std::string>> repo_blobs;  // repo -> digests

  // Observations.
  std::vector<HttpRequest> requests;  // every request, as received
  int blob_gets = 0;
  int patches = 0;
  int mounts = 0;
  int monolithic_puts = 0;

  std::string AddBlob(const std::string& repo, const std::string& data) {
    std::string digest = Digest::Sha256Of(data).ToString();
    blobs[digest] = data;
    repo_blobs[repo].push_back(digest);
    return digest;
  }
  std::string AddManifest(const std::string& repo, const std::string& tag,
                          const std::string& media_type, const std::string& body) {
    std::string digest = Digest::Sha256Of(body).ToString();
    manifests[repo + "@" + digest] = {media_type, body};
    if (!tag.empty()) manifests[repo + ":" + tag] = {media_type, body};
    return digest;
  }

  Result<HttpResponse> Send(const HttpRequest& request, ByteSink* sink) override;

 private:
  bool Authorized(const HttpRequest& request, const std::string& scope, HttpResponse& response);
  Result<HttpResponse> Blob(const HttpRequest& request, const std::string& repo,
                            const std::string& digest, ByteSink* sink);

  std::mutex mu_;
  std::map<std::string, std::string> uploads_;  // id -> bytes so far
  int next_upload_ = 0;
  bool dropped_ = false;
  bool patch_dropped_ = false;
};

// --- implementation (header-only: the test suites glob *_test.cc) ------------

inline bool FakeRegistry::Authorized(const HttpRequest& request, const std::string& scope,
                                     HttpResponse& response) {
  std::string_view header = FindHeader(request.headers, "authorization");
  if (auth == "none") return true;
  if (auth == "basic") {
    if (header == "Basic " + Base64Encode(user + ":" + pass)) return true;
    response.status = 401;
    response.headers.emplace_back("www-authenticate", "Basic realm=\"fake\"");
    return false;
  }
  // bearer: tokens are "tok:<scope>" for what the token endpoint granted.
  std::string want = "Bearer tok:" + scope;
  if (header.starts_with("Bearer tok:")) {
    std::string granted(header.substr(11));
    bool push_needed = scope.ends_with(":push") || scope.ends_with(",push");
    bool ok = granted.find(scope.substr(0, scope.rfind(':'))) != std::string::npos &&
              (!push_needed || granted.find("push") != std::string::npos);
    if (ok) return true;
    response.status = 401;
    response.headers.emplace_back(
        "www-authenticate", "Bearer realm=\"https://auth.test/token\",service=\"fake\",scope=\"" +
                                scope + "\",error=\"insufficient_scope\"");
    return false;
  }
  response.status = 401;
  response.headers.emplace_back("www-authenticate",
                                "Bearer realm=\"https://auth.test/token\",service=\"fake\"");
  return false;
}

inline Result<HttpResponse> FakeRegistry::Blob(const HttpRequest& request, const std::string& repo,
                                               const std::string& digest, ByteSink* sink) {
  HttpResponse response;
  auto it = blobs.find(digest);
  bool in_repo = repo.empty();
  for (const std::string& d : repo_blobs[repo]) in_repo = in_repo || d == digest;
  if (it == blobs.end() || !in_repo) {
    response.status = 404;
    response.body = R"({"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]})";
    return response;
  }
  if (request.method == "HEAD") {
    response.status = 200;
    return response;
  }
  ++blob_gets;
  if (fail_503 > 0) {
    --fail_503;
    response.status = 503;
    return response;
  }
  std::string data = it->second;
  if (corrupt_blob && !data.empty()) data[0] ^= 1;
  int64_t start = 0;
  std::string_view range = FindHeader(request.headers, "range");
  if (!range.empty() && !ignore_range) {
    auto parsed = ParseRangeHeader(std::string(range) + std::to_string(data.size() - 1));
    if (range.ends_with("-")) {
      start = std::stoll(std::string(range.substr(6, range.size() - 7)));
    } else if (parsed) {
      start = parsed->first;
    }
    response.status = 206;
    response.headers.emplace_back("content-range", "bytes " + std::to_string(start) + "-" +
                                                       std::to_string(data.size() - 1) + "/" +
                                                       std::to_string(data.size()));
  } else {
    response.status = 200;
  }
  std::string body = data.substr(start);
  bool drop = false;
  if (drop_blob_after >= 0 && !dropped_ && static_cast<int64_t>(body.size()) > drop_blob_after) {
    dropped_ = true;
    drop = true;
    body.resize(drop_blob_after);
  }
  if (sink != nullptr) {
    if (request.on_headers) IMGTOOL_TRY(request.on_headers(response));
    IMGTOOL_TRY(sink->Write(body.data(), body.size()));
  } else {
    response.body = body;
  }
  if (drop) return UnavailableError("GET " + request.url + ": connection reset (fake)");
  return response;
}

inline Result<HttpResponse> FakeRegistry::Send(const HttpRequest& request, ByteSink* sink) {
  std::lock_guard lock(mu_);
  requests.push_back(request);
  HttpResponse response;
  std::string url = request.url;
  if (url.starts_with("https://auth.test/token")) {
    bool has_creds =
        FindHeader(request.headers, "authorization") == "Basic " + Base64Encode(user + ":" + pass);
    if (!FindHeader(request.headers, "authorization").empty() && !has_creds) {
      response.status = 401;
      return response;
    }
    if (!has_creds && !anonymous_pull) {
      response.status = 401;
      return response;
    }
    std::string granted;
    size_t pos = 0;
    while ((pos = url.find("scope=", pos)) != std::string::npos) {
      pos += 6;
      size_t end = url.find('&', pos);
      std::string scope = url.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
      // undo PercentEncode of ':' and ','
      std::string decoded;
      for (size_t i = 0; i < scope.size(); ++i) {
        if (scope[i] == '%' && i + 2 < scope.size()) {
          decoded += static_cast<char>(std::stoi(scope.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          decoded += scope[i];
        }
      }
      if (!push_allowed || !has_creds) {
        size_t p = decoded.find(",push");
        if (p != std::string::npos) decoded.erase(p);
      }
      granted += decoded + " ";
    }
    response.status = 200;
    response.body = R"({"token":"tok:)" + granted + R"(","expires_in":300})";
    return response;
  }
  if (url.starts_with("https://cdn.test/")) {
    std::string digest = url.substr(std::string("https://cdn.test/").size());
    return Blob(request, "", digest, sink);
  }
  const std::string base = "https://fake.test";
  if (!url.starts_with(base)) return UnavailableError("fake: no such host in " + url);
  std::string path = url.substr(base.size());
  std::string query;
  if (size_t q = path.find('?'); q != std::string::npos) {
    query = path.substr(q + 1);
    path = path.substr(0, q);
  }
  if (path == "/v2/") {
    if (auth == "none") {
      response.status = 200;
      return response;
    }
    Authorized(request, "", response);
    if (response.status == 0) response.status = 200;
    return response;
  }
  // /v2/<repo>/(manifests|blobs)/<ref> or /v2/<repo>/blobs/uploads/[id]
  std::string rest = path.substr(4);
  size_t uploads = rest.find("/blobs/uploads/");
  size_t manifests_at = rest.find("/manifests/");
  size_t blobs_at = rest.find("/blobs/");
  std::string repo;
  bool write = request.method != "GET" && request.method != "HEAD";
  if (uploads != std::string::npos) {
    repo = rest.substr(0, uploads);
    write = true;
  } else if (manifests_at != std::string::npos) {
    repo = rest.substr(0, manifests_at);
  } else if (blobs_at != std::string::npos) {
    repo = rest.substr(0, blobs_at);
  }
  std::string scope = "repository:" + repo + (write ? ":pull,push" : ":pull");
  if (!Authorized(request, scope, response)) return response;

  if (uploads != std::string::npos) {
    std::string id = rest.substr(uploads + 15);
    if (request.method == "POST") {
      if (query.find("mount=") != std::string::npos) {
        std::string digest = query.substr(query.find("mount=") + 6);
        digest = digest.substr(0, digest.find('&'));
        digest.replace(digest.find("%3A"), 3, ":");
        if (blobs.count(digest)) {
          ++mounts;
          repo_blobs[repo].push_back(digest);
          response.status = 201;
          return response;
        }
      }
      std::string new_id = "u" + std::to_string(next_upload_++);
      uploads_[new_id] = "";
      response.status = 202;
      response.headers.emplace_back("location", "/v2/" + repo + "/blobs/uploads/" + new_id);
      if (chunk_min_length > 0) {
        response.headers.emplace_back("oci-chunk-min-length", std::to_string(chunk_min_length));
      }
      return response;
    }
    auto up = uploads_.find(id);
    if (up == uploads_.end()) {
      response.status = 404;
      return response;
    }
    std::string body = request.body;
    if (request.body_fd >= 0) {
      body.resize(request.body_length);
      ssize_t n = ::pread(request.body_fd, body.data(), body.size(), request.body_offset);
      if (n != static_cast<ssize_t>(body.size())) return UnavailableError("fake: short pread");
    }
    if (request.method == "GET") {
      response.status = 204;
      response.headers.emplace_back("location", "/v2/" + repo + "/blobs/uploads/" + id);
      int64_t size = up->second.size();
      response.headers.emplace_back("range", "0-" + std::to_string(size > 0 ? size - 1 : 0));
      return response;
    }
    if (request.method == "PATCH") {
      ++patches;
      std::string_view content_range = FindHeader(request.headers, "content-range");
      if (!content_range.empty()) {
        auto range = ParseRangeHeader(content_range);
        if (!range || range->first != static_cast<int64_t>(up->second.size())) {
          response.status = 416;
          return response;
        }
      }
      if (chunk_min_length > 0 && static_cast<int64_t>(body.size()) < chunk_min_length &&
          request.body_offset + request.body_length < 0) {
        response.status = 416;
        return response;
      }
      if (drop_patch_after >= 0 && !patch_dropped_) {
        patch_dropped_ = true;
        up->second += body.substr(0, drop_patch_after);
        return UnavailableError("PATCH: connection reset (fake)");
      }
      up->second += body;
      response.status = 202;
      response.headers.emplace_back("location", "/v2/" + repo + "/blobs/uploads/" + id);
      response.headers.emplace_back("range", "0-" + std::to_string(up->second.size() - 1));
      return response;
    }
    if (request.method == "PUT") {
      if (body.size() > 0 && up->second.empty()) ++monolithic_puts;
      up->second += body;
      std::string digest = query.substr(query.find("digest=") + 7);
      digest.replace(digest.find("%3A"), 3, ":");
      if (Digest::Sha256Of(up->second).ToString() != digest) {
        response.status = 400;
        response.body = R"({"errors":[{"code":"DIGEST_INVALID","message":"digest mismatch"}]})";
        return response;
      }
      blobs[digest] = up->second;
      repo_blobs[repo].push_back(digest);
      uploads_.erase(up);
      response.status = 201;
      return response;
    }
  }
  if (manifests_at != std::string::npos) {
    std::string ref = rest.substr(manifests_at + 11);
    std::string key = repo + (ref.starts_with("sha256:") ? "@" : ":") + ref;
    if (request.method == "PUT") {
      std::string media(FindHeader(request.headers, "content-type"));
      AddManifest(repo, ref.starts_with("sha256:") ? "" : ref, media, request.body);
      response.status = 201;
      response.headers.emplace_back("docker-content-digest",
                                    Digest::Sha256Of(request.body).ToString());
      return response;
    }
    auto it = manifests.find(key);
    if (it == manifests.end()) {
      response.status = 404;
      response.body = R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]})";
      return response;
    }
    response.status = 200;
    response.headers.emplace_back("content-type", it->second.media_type);
    if (request.method != "HEAD") response.body = it->second.body;
    return response;
  }
  if (blobs_at != std::string::npos) {
    std::string digest = rest.substr(blobs_at + 7);
    if (redirect_blobs && request.method == "GET") {
      response.status = 307;
      response.headers.emplace_back("location", "https://cdn.test/" + digest);
      return response;
    }
    return Blob(request, repo, digest, sink);
  }
  response.status = 404;
  return response;
}

}  // namespace imgtool::registry::testing
