#include "registry/client.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/log.h"

namespace imgtool::registry {

namespace {

bool IsRetryableStatus(long status) {
  return status == 429 || status == 502 || status == 503 || status == 504;
}

bool IsRedirect(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

std::chrono::milliseconds Backoff(std::chrono::milliseconds base, int attempt,
                                  std::string_view retry_after) {
  int seconds = 0;
  auto [ptr, ec] =
      std::from_chars(retry_after.data(), retry_after.data() + retry_after.size(), seconds);
  if (ec == std::errc() && ptr == retry_after.data() + retry_after.size() && !retry_after.empty()) {
    return std::chrono::milliseconds(std::min(seconds, 30) * 1000);
  }
  auto wait = base * (1 << std::min(attempt - 1, 6));
  return std::min<std::chrono::milliseconds>(wait, std::chrono::seconds(10));
}

std::string MediaTypeOf(std::string_view content_type) {
  size_t semi = content_type.find(';');
  std::string_view type = content_type.substr(0, semi);
  while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
  return std::string(type);
}

std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (const auto& part : parts) {
    if (!out.empty()) out += sep;
    out += part;
  }
  return out;
}

std::optional<Challenge> PickChallenge(std::string_view header) {
  auto challenges = ParseWwwAuthenticate(header);
  if (!challenges) return std::nullopt;
  for (const Challenge& c : *challenges) {
    if (c.scheme == "bearer") return c;
  }
  for (const Challenge& c : *challenges) {
    if (c.scheme == "basic") return c;
  }
  return std::nullopt;
}

// Writes a blob's bytes to its ingest, dropping the first `skip` (a server
// that answered a Range request with the whole blob) and refusing more bytes
// than the descriptor announced.
class BlobSink final : public ByteSink {
 public:
  BlobSink(store::IngestWriter& writer, int64_t limit, const BytesCallback& progress,
           const std::function<bool()>& cancelled,
           const std::function<void(std::string_view)>& tee)
      : writer_(writer), limit_(limit), progress_(progress), cancelled_(cancelled), tee_(tee) {}

  void set_skip(int64_t skip) { skip_ = skip; }

  Status Write(const void* data, size_t size) override {
    if (cancelled_ && cancelled_()) return UnavailableError("cancelled");
    const char* bytes = static_cast<const char*>(data);
    if (skip_ > 0) {
      size_t dropped = static_cast<size_t>(std::min<int64_t>(skip_, size));
      skip_ -= dropped;
      bytes += dropped;
      size -= dropped;
    }
    if (size == 0) return OkStatus();
    if (writer_.written() + static_cast<int64_t>(size) > limit_) {
      return DataLossError("the registry sent more than the " + std::to_string(limit_) +
                           " bytes the manifest announced");
    }
    IMGTOOL_TRY(writer_.Write(bytes, size));
    if (tee_) tee_(std::string_view(bytes, size));
    if (progress_) progress_(writer_.written());
    return OkStatus();
  }

 private:
  store::IngestWriter& writer_;
  int64_t limit_;
  const BytesCallback& progress_;
  const std::function<bool()>& cancelled_;
  const std::function<void(std::string_view)>& tee_;
  int64_t skip_ = 0;
};

}  // namespace

std::string PullScope(std::string_view repository) {
  return "repository:" + std::string(repository) + ":pull";
}
std::string PushScope(std::string_view repository) {
  return "repository:" + std::string(repository) + ":pull,push";
}

std::string ManifestAccept() {
  return std::string(store::media_type::kOciIndex) + ", " +
         std::string(store::media_type::kOciManifest) + ", " +
         std::string(store::media_type::kDockerManifestList) + ", " +
         std::string(store::media_type::kDockerManifest);
}

Client::Client(std::string registry, std::shared_ptr<HttpTransport> transport,
               ClientOptions options)
    : registry_(std::move(registry)),
      transport_(std::move(transport)),
      options_(std::move(options)) {
  host_ = registry_ == "docker.io" ? "registry-1.docker.io" : registry_;
}

std::string Client::base_url() const {
  std::lock_guard lock(mu_);
  return base_;
}

std::string Client::Url(std::string_view path) const { return base_url() + std::string(path); }

Status Client::Ping() {
  {
    std::lock_guard lock(mu_);
    if (pinged_) return OkStatus();
  }
  std::vector<std::string> schemes = {"https"};
  if (options_.insecure) schemes.push_back("http");
  Error last = UnavailableError("no attempt");
  for (int attempt = 1; attempt <= std::max(1, options_.max_attempts); ++attempt) {
    for (const std::string& scheme : schemes) {
      HttpRequest request;
      request.url = scheme + "://" + host_ + "/v2/";
      Result<HttpResponse> response = transport_->Send(request, nullptr);
      if (!response) {
        last = std::move(response).error();
        continue;
      }
      if (IsRetryableStatus(response->status)) {
        last =
            UnavailableError("GET " + request.url + ": HTTP " + std::to_string(response->status));
        continue;
      }
      if (response->status != 200 && response->status != 401) {
        return UnavailableError("GET " + request.url + ": HTTP " +
                                std::to_string(response->status) +
                                " (not an OCI distribution registry?)");
      }
      std::lock_guard lock(mu_);
      base_ = scheme + "://" + host_;
      if (response->status == 401) challenge_ = PickChallenge(response->Header("www-authenticate"));
      pinged_ = true;
      LogDebug("registry ", registry_, ": ", base_, ", auth ",
               challenge_ ? challenge_->scheme : std::string("none"));
      return OkStatus();
    }
    if (last.code() != ErrorCode::kUnavailable) break;
    if (attempt < options_.max_attempts) {
      std::this_thread::sleep_for(Backoff(options_.backoff, attempt, ""));
    }
  }
  return std::move(last).Wrap("registry " + registry_);
}

Status Client::CheckLogin() {
  IMGTOOL_TRY(Ping());
  std::optional<Challenge> challenge;
  {
    std::lock_guard lock(mu_);
    challenge = challenge_;
  }
  if (!challenge) return OkStatus();  // the registry asks for no credentials
  if (challenge->scheme == "bearer") {
    Result<Token> token = FetchToken(*challenge, {});
    if (!token) return std::move(token).error();
    return OkStatus();
  }
  HttpRequest request;
  request.url = Url("/v2/");
  IMGTOOL_ASSIGN_OR_RETURN(HttpResponse response, Send(request, {}));
  if (response.status == 401) {
    return PermissionDeniedError("login to " + registry_ + ": wrong username or password");
  }
  if (response.status != 200) return ErrorFor(response, "login to " + registry_);
  return OkStatus();
}

Result<Client::Token> Client::FetchToken(const Challenge& challenge,
                                         const std::vector<std::string>& scopes) {
  std::string realm = challenge.Param("realm");
  if (realm.empty())
    return UnavailableError("registry " + registry_ + ": Bearer challenge without realm");
  HttpRequest request;
  request.url = realm;
  if (std::string service = challenge.Param("service"); !service.empty()) {
    request.url = AddQuery(request.url, "service", service);
  }
  for (const std::string& scope : scopes) request.url = AddQuery(request.url, "scope", scope);
  if (options_.credentials) {
    SetHeader(request.headers, "Authorization",
              "Basic " + Base64Encode(options_.credentials->username + ":" +
                                      options_.credentials->password));
  }
  std::string what = "token for " + registry_;
  Result<HttpResponse> response = InternalError("no attempt");
  for (int attempt = 1;; ++attempt) {
    response = SendFollowing(request, nullptr);
    bool retry = response ? IsRetryableStatus(response->status)
                          : response.error().code() == ErrorCode::kUnavailable;
    if (!retry || attempt >= options_.max_attempts) break;
    std::this_thread::sleep_for(
        Backoff(options_.backoff, attempt, response ? response->Header("retry-after") : ""));
  }
  if (!response) return std::move(response).error().Wrap(what);
  if (response->status == 401 || response->status == 403) {
    return PermissionDeniedError(what + ": " +
                                 (options_.credentials
                                      ? "wrong username or password"
                                      : "anonymous access denied (imgtool login)"));
  }
  if (response->status != 200) {
    return UnavailableError(what + ": HTTP " + std::to_string(response->status));
  }
  try {
    nlohmann::json json = nlohmann::json::parse(response->body);
    Token token;
    if (json.contains("token") && json["token"].is_string()) {
      token.value = json["token"].get<std::string>();
    } else if (json.contains("access_token") && json["access_token"].is_string()) {
      token.value = json["access_token"].get<std::string>();
    }
    if (token.value.empty()) return UnavailableError(what + ": response has no token");
    int64_t expires_in = 60;
    if (json.contains("expires_in") && json["expires_in"].is_number_integer()) {
      expires_in = std::max<int64_t>(json["expires_in"].get<int64_t>(), 10);
    }
    // Renew a little early so that a token does not expire mid-request.
    token.expires = std::chrono::steady_clock::now() + std::chrono::seconds(expires_in * 9 / 10);
    return token;
  } catch (const nlohmann::json::exception&) {
    return UnavailableError(what + ": response is not JSON");
  }
}

Result<std::string> Client::AuthorizationFor(const std::vector<std::string>& scopes, bool refresh) {
  std::optional<Challenge> challenge;
  std::string key = Join(scopes, " ");
  {
    std::lock_guard lock(mu_);
    if (!challenge_) return std::string();
    challenge = challenge_;
    if (challenge->scheme == "bearer" && !refresh) {
      auto it = tokens_.find(key);
      if (it != tokens_.end() && it->second.expires > std::chrono::steady_clock::now()) {
        return "Bearer " + it->second.value;
      }
    }
  }
  if (challenge->scheme == "basic") {
    if (!options_.credentials) return std::string();
    return "Basic " +
           Base64Encode(options_.credentials->username + ":" + options_.credentials->password);
  }
  if (challenge->scheme != "bearer") return std::string();
  IMGTOOL_ASSIGN_OR_RETURN(Token token, FetchToken(*challenge, scopes));
  std::string header = "Bearer " + token.value;
  std::lock_guard lock(mu_);
  tokens_[key] = std::move(token);
  return header;
}

Result<HttpResponse> Client::SendFollowing(HttpRequest request, ByteSink* sink) {
  for (int hop = 0; hop < 10; ++hop) {
    IMGTOOL_ASSIGN_OR_RETURN(HttpResponse response, transport_->Send(request, sink));
    std::string_view location = response.Header("location");
    if (!IsRedirect(response.status) || location.empty()) return response;
    std::string next = ResolveUrl(request.url, location);
    // Credentials are for the registry: a blob store elsewhere gets none
    // (its URL is signed instead).
    if (UrlOrigin(next) != UrlOrigin(request.url)) RemoveHeader(request.headers, "authorization");
    if (response.status == 303) {
      request.method = "GET";
      request.body.clear();
      request.body_fd = -1;
    }
    LogDebug(request.method, " redirected to ", UrlOrigin(next));
    request.url = std::move(next);
  }
  return UnavailableError(request.method + " " + request.url + ": too many redirects");
}

Result<HttpResponse> Client::Send(HttpRequest request, const SendOptions& options) {
  IMGTOOL_TRY(Ping());
  bool refresh = false;
  bool refreshed = false;
  int attempt = 0;
  while (true) {
    HttpRequest current = request;
    if (options.prepare) options.prepare(current);
    IMGTOOL_ASSIGN_OR_RETURN(std::string authorization, AuthorizationFor(options.scopes, refresh));
    refresh = false;
    if (!authorization.empty())
      SetHeader(current.headers, "Authorization", std::move(authorization));
    Result<HttpResponse> response = SendFollowing(std::move(current), options.sink);
    ++attempt;
    if (!response) {
      if (options.retry && response.error().code() == ErrorCode::kUnavailable &&
          attempt < options_.max_attempts && !(options.cancelled && options.cancelled())) {
        LogInfo("retrying after: ", response.error().ToString());
        std::this_thread::sleep_for(Backoff(options_.backoff, attempt, ""));
        continue;
      }
      return response;
    }
    if (response->status == 401 && !refreshed) {
      std::optional<Challenge> challenge = PickChallenge(response->Header("www-authenticate"));
      if (challenge && challenge->Param("error") != "insufficient_scope") {
        // A token that expired early, or a registry that only now asks.
        std::lock_guard lock(mu_);
        if (!challenge_ || challenge_->scheme != challenge->scheme) challenge_ = challenge;
        refresh = true;
        refreshed = true;
        continue;
      }
    }
    if (options.retry && IsRetryableStatus(response->status) && attempt < options_.max_attempts) {
      LogInfo(request.method, " ", request.url, ": HTTP ", response->status, ", retrying");
      std::this_thread::sleep_for(
          Backoff(options_.backoff, attempt, response->Header("retry-after")));
      continue;
    }
    return response;
  }
}

Error Client::ErrorFor(const HttpResponse& response, std::string_view what) const {
  std::string message = RegistryErrorMessage(response.body);
  if (message.empty()) message = "HTTP " + std::to_string(response.status);
  std::string prefix(what);
  switch (response.status) {
    case 401: {
      std::optional<Challenge> challenge = PickChallenge(response.Header("www-authenticate"));
      if (challenge && challenge->Param("error") == "insufficient_scope") {
        return PermissionDeniedError(prefix + ": insufficient scope: the registry did not grant " +
                                     (challenge->Param("scope").empty()
                                          ? std::string("the access needed")
                                          : "\"" + challenge->Param("scope") + "\"") +
                                     " to these credentials");
      }
      return PermissionDeniedError(
          prefix + ": unauthorized: " + message +
          (options_.credentials ? "" : " (imgtool login " + registry_ + ")"));
    }
    case 403:
      return PermissionDeniedError(prefix + ": denied: " + message);
    case 404:
      return NotFoundError(prefix + ": not found: " + message);
    case 429:
    case 500:
    case 502:
    case 503:
    case 504:
      return UnavailableError(prefix + ": " + message);
    default:
      return FailedPreconditionError(prefix + ": " + message);
  }
}

Result<FetchedManifest> Client::GetManifest(std::string_view repository,
                                            std::string_view reference) {
  IMGTOOL_TRY(Ping());  // sets the base URL
  std::string what = "manifest " + registry_ + "/" + std::string(repository) +
                     (reference.starts_with("sha256:") ? "@" : ":") + std::string(reference);
  HttpRequest request;
  request.url = Url("/v2/" + std::string(repository) + "/manifests/" + std::string(reference));
  SetHeader(request.headers, "Accept", ManifestAccept());
  SendOptions options;
  options.scopes = {PullScope(repository)};
  IMGTOOL_ASSIGN_OR_RETURN(HttpResponse response, Send(request, options).Wrap(what));
  if (response.status != 200) return ErrorFor(response, what);
  FetchedManifest manifest;
  manifest.body = std::move(response.body);
  manifest.digest = Digest::Sha256Of(manifest.body);
  manifest.media_type = MediaTypeOf(response.Header("content-type"));
  if (!store::IsManifestMediaType(manifest.media_type) &&
      !store::IsIndexMediaType(manifest.media_type)) {
    IMGTOOL_ASSIGN_OR_RETURN(manifest.media_type,
                             store::DetectManifestMediaType(manifest.body).Wrap(what));
  }
  if (reference.starts_with("sha256:") && manifest.digest.ToString() != reference) {
    return DataLossError(what + ": the registry sent content with digest " +
                         manifest.digest.ToString());
  }
  return manifest;
}

Result<bool> Client::FetchBlob(std::string_view repository, const store::Descriptor& descriptor,
                               store::ContentStore& content, const BytesCallback& progress,
                               const std::function<bool()>& cancelled,
                               const std::function<void(std::string_view)>& tee) {
  IMGTOOL_TRY(Ping());  // sets the base URL
  if (content.Exists(descriptor.digest)) return false;
  std::string what = "blob " + descriptor.digest.ToString();
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<store::IngestWriter> writer, content.Writer());
  BlobSink sink(*writer, descriptor.size, progress, cancelled, tee);
  HttpRequest request;
  request.url = Url("/v2/" + std::string(repository) + "/blobs/" + descriptor.digest.ToString());
  SendOptions options;
  options.scopes = {PullScope(repository)};
  options.sink = &sink;
  options.cancelled = cancelled;
  options.prepare = [&](HttpRequest& r) {
    int64_t have = writer->written();
    sink.set_skip(0);
    if (have == 0) return;
    LogInfo(what, ": resuming at byte ", have);
    SetHeader(r.headers, "Range", "bytes=" + std::to_string(have) + "-");
    r.on_headers = [&sink, have](const HttpResponse& response) -> Status {
      if (response.status != 206) {
        sink.set_skip(have);  // the whole blob again: drop what we have
        return OkStatus();
      }
      IMGTOOL_ASSIGN_OR_RETURN(ByteRange range,
                               ParseContentRange(response.Header("content-range")));
      if (range.first != have) {
        return DataLossError("asked for bytes from " + std::to_string(have) + ", got from " +
                             std::to_string(range.first));
      }
      return OkStatus();
    };
  };
  IMGTOOL_ASSIGN_OR_RETURN(HttpResponse response, Send(request, options).Wrap(what));
  if (response.status != 200 && response.status != 206) return ErrorFor(response, what);
  IMGTOOL_TRY(writer->Commit(descriptor.size, descriptor.digest).Wrap(what));
  return true;
}

Result<bool> Client::BlobExists(std::string_view repository, const Digest& digest) {
  IMGTOOL_TRY(Ping());  // sets the base URL
  HttpRequest request;
  request.method = "HEAD";
  request.url = Url("/v2/" + std::string(repository) + "/blobs/" + digest.ToString());
  SendOptions options;
  options.scopes = {PushScope(repository)};
  IMGTOOL_ASSIGN_OR_RETURN(HttpResponse response, Send(request, options));
  if (response.status == 200) return true;
  if (response.status == 404) return false;
  return ErrorFor(response, "blob " + digest.ToString());
}

Result<std::string> Client::PushBlob(std::string_view repository,
                                     const store::Descriptor& descriptor,
                                     const store::ContentStore& content,
                                     std::string_view mount_from, const BytesCallback& progress) {
  IMGTOOL_TRY(Ping());  // sets the base URL
  std::string what = "push blob " + descriptor.digest.ToString();
  IMGTOOL_ASSIGN_OR_RETURN(bool exists, BlobExists(repository, descriptor.digest).Wrap(what));
  if (exists) return std::string("exists");
  SendOptions options;
  options.scopes = {PushScope(repository)};
  if (!mount_from.empty() && mount_from != repository) {
    options.scopes.push_back(PullScope(mount_from));
  }
  IMGTOOL_ASSIGN_OR_RETURN(UniqueFd fd, content.OpenRaw(descriptor.digest));
  for (int attempt = 1;; ++attempt) {
    HttpRequest start;
    start.method = "POST";
    start.url = Url("/v2/" + std::string(repository) + "/blobs/uploads/");
    if (options.scopes.size() > 1) {
      start.url = AddQuery(start.url, "mount", descriptor.digest.ToString());
      start.url = AddQuery(start.url, "from", mount_from);
    }
    IMGTOOL_ASSIGN_OR_RETURN(HttpResponse started, Send(start, options).Wrap(what));
    if (started.status == 201) return std::string("mounted");
    if (started.status != 202) return ErrorFor(started, what);
    std::string location = ResolveUrl(start.url, started.Header("location"));
    int64_t min_chunk = 0;
    if (std::string_view text = started.Header("oci-chunk-min-length"); !text.empty()) {
      std::from_chars(text.data(), text.data() + text.size(), min_chunk);
    }
    if (descriptor.size > monolithic_max_) {
      return UploadChunked(location, repository, descriptor, fd.get(), min_chunk, progress)
          .Wrap(what);
    }
    HttpRequest put;
    put.method = "PUT";
    put.url = AddQuery(location, "digest", descriptor.digest.ToString());
    SetHeader(put.headers, "Content-Type", "application/octet-stream");
    put.body_fd = fd.get();
    put.body_length = descriptor.size;
    SendOptions once = options;
    once.retry = false;
    Result<HttpResponse> done = Send(put, once);
    bool retry =
        done ? IsRetryableStatus(done->status) : done.error().code() == ErrorCode::kUnavailable;
    if (retry && attempt < options_.max_attempts) {
      // The session may hold part of the body: start a new one.
      std::this_thread::sleep_for(Backoff(options_.backoff, attempt, ""));
      continue;
    }
    if (!done) return std::move(done).error().Wrap(what);
    if (done->status != 201) return ErrorFor(*done, what);
    if (progress) progress(descriptor.size);
    return std::string("uploaded");
  }
}

Result<std::string> Client::UploadChunked(std::string location, std::string_view repository,
                                          const store::Descriptor& descriptor, int fd,
                                          int64_t min_chunk, const BytesCallback& progress) {
  SendOptions options;
  options.scopes = {PushScope(repository)};
  options.retry = false;
  int64_t chunk = std::max(chunk_size_, min_chunk);
  int64_t offset = 0;
  int failures = 0;
  while (offset < descriptor.size) {
    int64_t n = std::min(chunk, descriptor.size - offset);
    HttpRequest patch;
    patch.method = "PATCH";
    patch.url = location;
    SetHeader(patch.headers, "Content-Type", "application/octet-stream");
    SetHeader(patch.headers, "Content-Range",
              std::to_string(offset) + "-" + std::to_string(offset + n - 1));
    patch.body_fd = fd;
    patch.body_offset = offset;
    patch.body_length = n;
    Result<HttpResponse> response = Send(patch, options);
    if (response && response->status == 202) {
      location = ResolveUrl(location, response->Header("location"));
      offset += n;
      failures = 0;
      if (progress) progress(offset);
      continue;
    }
    bool retry = response ? IsRetryableStatus(response->status) || response->status == 416
                          : response.error().code() == ErrorCode::kUnavailable;
    if (!retry || ++failures >= options_.max_attempts) {
      if (!response) return std::move(response).error();
      return ErrorFor(*response, "PATCH");
    }
    LogInfo("upload of ", descriptor.digest.ToString(), " interrupted at ", offset,
            "; asking the registry where to resume");
    std::this_thread::sleep_for(Backoff(options_.backoff, failures, ""));
    HttpRequest status;
    status.url = location;
    SendOptions status_options;
    status_options.scopes = options.scopes;
    IMGTOOL_ASSIGN_OR_RETURN(HttpResponse state, Send(status, status_options));
    if (state.status != 204) return ErrorFor(state, "upload status");
    if (std::string_view next = state.Header("location"); !next.empty()) {
      location = ResolveUrl(location, next);
    }
    offset = 0;
    if (std::string_view range = state.Header("range"); !range.empty()) {
      IMGTOOL_ASSIGN_OR_RETURN(ByteRange received, ParseRangeHeader(range));
      // "0-0" is how registries say both "nothing" and "one byte".
      offset = received.last == 0 ? 0 : received.last + 1;
    }
  }
  HttpRequest put;
  put.method = "PUT";
  put.url = AddQuery(location, "digest", descriptor.digest.ToString());
  SendOptions put_options;
  put_options.scopes = options.scopes;
  IMGTOOL_ASSIGN_OR_RETURN(HttpResponse done, Send(put, put_options));
  if (done.status != 201) return ErrorFor(done, "PUT");
  return std::string("uploaded");
}

Result<Digest> Client::PutManifest(std::string_view repository, std::string_view reference,
                                   std::string_view media_type, std::string_view body) {
  IMGTOOL_TRY(Ping());  // sets the base URL
  std::string what =
      "push manifest " + registry_ + "/" + std::string(repository) + ":" + std::string(reference);
  HttpRequest request;
  request.method = "PUT";
  request.url = Url("/v2/" + std::string(repository) + "/manifests/" + std::string(reference));
  SetHeader(request.headers, "Content-Type", std::string(media_type));
  request.body = std::string(body);
  SendOptions options;
  options.scopes = {PushScope(repository)};
  IMGTOOL_ASSIGN_OR_RETURN(HttpResponse response, Send(request, options).Wrap(what));
  if (response.status != 201 && response.status != 200) return ErrorFor(response, what);
  return Digest::Sha256Of(body);
}

}  // namespace imgtool::registry
