// curl.h's type-checking macros would turn curl_easy_setopt into a macro;
// the calls below go through function pointers instead.
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "common/file_util.h"
#include "common/log.h"
#include "registry/http_transport.h"

namespace imgtool::registry {

namespace {

// libcurl is loaded with dlopen on first use, not linked: with its
// dependencies (ssh2, ldap, krb5, nghttp2, idn2, ...) it adds about 9 ms of
// dynamic loading to every start of the binary, which `imgtool run` would
// pay without ever making a request.
struct CurlApi {
  CURLcode (*global_init)(long flags);
  CURL* (*easy_init)();
  CURLcode (*easy_setopt)(CURL* curl, CURLoption option, ...);
  CURLcode (*easy_getinfo)(CURL* curl, CURLINFO info, ...);
  CURLcode (*easy_perform)(CURL* curl);
  void (*easy_reset)(CURL* curl);
  void (*easy_cleanup)(CURL* curl);
  const char* (*easy_strerror)(CURLcode code);
  curl_slist* (*slist_append)(curl_slist* list, const char* text);
  void (*slist_free_all)(curl_slist* list);
};

CurlApi g_curl;

// Loads libcurl and runs curl_global_init, once; the error says what is missing.
Status LoadCurl() {
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    void* lib = ::dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = ::dlerror();
      failure = std::string("load libcurl.so.4 (package libcurl4): ") + (why ? why : "not found");
      return;
    }
    auto bind = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(lib, name));
      if (fn == nullptr && failure.empty()) failure = std::string("libcurl.so.4 lacks ") + name;
    };
    bind(g_curl.global_init, "curl_global_init");
    bind(g_curl.easy_init, "curl_easy_init");
    bind(g_curl.easy_setopt, "curl_easy_setopt");
    bind(g_curl.easy_getinfo, "curl_easy_getinfo");
    bind(g_curl.easy_perform, "curl_easy_perform");
    bind(g_curl.easy_reset, "curl_easy_reset");
    bind(g_curl.easy_cleanup, "curl_easy_cleanup");
    bind(g_curl.easy_strerror, "curl_easy_strerror");
    bind(g_curl.slist_append, "curl_slist_append");
    bind(g_curl.slist_free_all, "curl_slist_free_all");
    if (failure.empty() && g_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      failure = "curl_global_init failed";
    }
  });
  if (!failure.empty()) return InternalError(failure);
  return OkStatus();
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

constexpr size_t kMaxBufferedBody = 16u << 20;

struct EasyDeleter {
  void operator()(CURL* curl) const { g_curl.easy_cleanup(curl); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* list) const { g_curl.slist_free_all(list); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

// What the C callbacks of one transfer share; no exception leaves them.
struct Transfer {
  CURL* curl = nullptr;
  const HttpRequest* request = nullptr;
  HttpResponse* response = nullptr;
  ByteSink* sink = nullptr;
  Status error;
  bool failed = false;
  bool headers_checked = false;
  int64_t sent = 0;
};

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * count);
  try {
    if (line.starts_with("HTTP/")) {
      // A new response (after 100 Continue or an auth round): start over.
      t->response->headers.clear();
      return line.size();
    }
    size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      t->response->headers.emplace_back(Lower(Trim(line.substr(0, colon))),
                                        std::string(Trim(line.substr(colon + 1))));
    }
  } catch (...) {
    return 0;
  }
  return line.size();
}

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * count;
  try {
    long code = 0;
    g_curl.easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
    if (t->sink != nullptr && code >= 200 && code < 300) {
      if (!t->headers_checked) {
        t->headers_checked = true;
        t->response->status = code;
        if (t->request->on_headers) {
          Status ok = t->request->on_headers(*t->response);
          if (!ok) {
            t->error = std::move(ok);
            t->failed = true;
            return 0;
          }
        }
      }
      Status ok = t->sink->Write(data, n);
      if (!ok) {
        t->error = std::move(ok);
        t->failed = true;
        return 0;
      }
      return n;
    }
    if (t->response->body.size() + n > kMaxBufferedBody) {
      t->error = InvalidArgumentError("response body larger than 16 MiB");
      t->failed = true;
      return 0;
    }
    t->response->body.append(data, n);
  } catch (const std::exception& e) {
    t->error = InternalError(std::string("response body: ") + e.what());
    t->failed = true;
    return 0;
  }
  return n;
}

size_t OnRead(char* buffer, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const HttpRequest& r = *t->request;
  size_t want = size * count;
  if (r.body_fd >= 0) {
    int64_t left = r.body_length - t->sent;
    if (left <= 0) return 0;
    size_t n = std::min<int64_t>(want, left);
    ssize_t got;
    do {
      got = ::pread(r.body_fd, buffer, n, r.body_offset + t->sent);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
      t->error = got < 0 ? ErrnoError("read upload body") : DataLossError("upload body cut short");
      t->failed = true;
      return CURL_READFUNC_ABORT;
    }
    t->sent += got;
    return static_cast<size_t>(got);
  }
  int64_t left = static_cast<int64_t>(r.body.size()) - t->sent;
  size_t n = std::min<int64_t>(want, left);
  std::copy_n(r.body.data() + t->sent, n, buffer);
  t->sent += n;
  return n;
}

// Trusted CAs: the system bundle plus every *.crt of `dir`.
Result<std::string> LoadCaBundle(const std::string& dir) {
  std::string bundle;
  for (const char* system :
       {"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"}) {
    if (std::filesystem::exists(system)) {
      IMGTOOL_ASSIGN_OR_RETURN(bundle, ReadFileToString(system));
      bundle += "\n";
      break;
    }
  }
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".crt") files.push_back(entry.path());
  }
  if (ec) return ErrnoError("--cert-dir " + dir, ec.value());
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    IMGTOOL_ASSIGN_OR_RETURN(std::string pem, ReadFileToString(file));
    bundle += pem;
    bundle += "\n";
  }
  return bundle;
}

class CurlTransport final : public HttpTransport {
 public:
  CurlTransport(TlsOptions tls, std::string ca_bundle)
      : tls_(std::move(tls)), ca_bundle_(std::move(ca_bundle)) {}

  Result<HttpResponse> Send(const HttpRequest& request, ByteSink* sink) override {
    EasyHandle handle = Acquire();
    if (!handle) return InternalError("curl_easy_init failed");
    Result<HttpResponse> result = SendOn(handle.get(), request, sink);
    Release(std::move(handle));
    return result;
  }

 private:
  EasyHandle Acquire() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        EasyHandle handle = std::move(idle_.back());
        idle_.pop_back();
        return handle;
      }
    }
    return EasyHandle(g_curl.easy_init());
  }
  void Release(EasyHandle handle) {
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(handle));
  }

  Result<HttpResponse> SendOn(CURL* curl, const HttpRequest& request, ByteSink* sink) {
    // Reset keeps the handle's live connections and DNS cache.
    g_curl.easy_reset(curl);
    HttpResponse response;
    Transfer t;
    t.curl = curl;
    t.request = &request;
    t.response = &response;
    t.sink = sink;

    Slist headers;
    auto add_header = [&](const std::string& line) {
      curl_slist* next = g_curl.slist_append(headers.get(), line.c_str());
      if (next != nullptr) {
        (void)headers.release();
        headers.reset(next);
      }
    };
    for (const auto& [name, value] : request.headers) add_header(name + ": " + value);
    add_header("Expect:");

    g_curl.easy_setopt(curl, CURLOPT_URL, request.url.c_str());
    g_curl.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    g_curl.easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    g_curl.easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
    // A stalled transfer (under 1 byte/s for 60 s) counts as a dropped connection.
    g_curl.easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    g_curl.easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
    g_curl.easy_setopt(curl, CURLOPT_USERAGENT, "imgtool");
    g_curl.easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    g_curl.easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    g_curl.easy_setopt(curl, CURLOPT_BUFFERSIZE, 256L * 1024);
    // HTTP/1.1 even where TLS could negotiate HTTP/2: blobs go over parallel
    // connections anyway. Over HTTP/2 a pull of the 63 MB Debian image from a
    // TLS registry took 16.5 s against 4.0 s over HTTP/1.1 (one run each, on
    // a busy machine; skopeo, which uses HTTP/1.1 there, 0.8 s).
    g_curl.easy_setopt(curl, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    g_curl.easy_setopt(curl, CURLOPT_HEADERFUNCTION, &OnHeader);
    g_curl.easy_setopt(curl, CURLOPT_HEADERDATA, &t);
    g_curl.easy_setopt(curl, CURLOPT_WRITEFUNCTION, &OnBody);
    g_curl.easy_setopt(curl, CURLOPT_WRITEDATA, &t);
    if (!tls_.verify) {
      g_curl.easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
      g_curl.easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (!ca_bundle_.empty()) {
      curl_blob blob{ca_bundle_.data(), ca_bundle_.size(), CURL_BLOB_NOCOPY};
      g_curl.easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
    }

    bool has_body = request.body_fd >= 0 || !request.body.empty();
    if (request.method == "HEAD") {
      g_curl.easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (request.method == "GET") {
      g_curl.easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    } else {
      int64_t length =
          request.body_fd >= 0 ? request.body_length : static_cast<int64_t>(request.body.size());
      g_curl.easy_setopt(curl, CURLOPT_UPLOAD, 1L);
      g_curl.easy_setopt(curl, CURLOPT_READFUNCTION, &OnRead);
      g_curl.easy_setopt(curl, CURLOPT_READDATA, &t);
      g_curl.easy_setopt(curl, CURLOPT_INFILESIZE_LARGE,
                       static_cast<curl_off_t>(has_body ? length : 0));
      g_curl.easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
    g_curl.easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());

    CURLcode code = g_curl.easy_perform(curl);
    // Do not leave pointers into this frame in the pooled handle.
    g_curl.easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
    if (t.failed) return std::move(t.error).error();
    std::string what = request.method + " " + request.url;
    if (code != CURLE_OK) {
      std::string message = what + ": " + g_curl.easy_strerror(code);
      switch (code) {
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
          return PermissionDeniedError(message +
                                       " (give the registry's CA with --cert-dir, or "
                                       "--tls-verify=false for a registry you trust)");
        case CURLE_SSL_CONNECT_ERROR:
          // Usually a plain-HTTP server: retrying the handshake will not help.
          return FailedPreconditionError(message +
                                         " (a plain-HTTP registry needs --tls-verify=false)");
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
          return InvalidArgumentError(message);
        default:
          return UnavailableError(message);
      }
    }
    g_curl.easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
    return response;
  }

  TlsOptions tls_;
  std::string ca_bundle_;
  std::mutex mu_;
  std::vector<EasyHandle> idle_;
};

}  // namespace

std::string_view FindHeader(const HttpHeaders& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (key.size() == name.size() &&
        std::equal(key.begin(), key.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return value;
    }
  }
  return {};
}

void RemoveHeader(HttpHeaders& headers, std::string_view name) {
  std::string lower = Lower(name);
  std::erase_if(headers, [&](const auto& header) { return Lower(header.first) == lower; });
}

void SetHeader(HttpHeaders& headers, std::string_view name, std::string value) {
  RemoveHeader(headers, name);
  headers.emplace_back(Lower(name), std::move(value));
}

Result<std::shared_ptr<HttpTransport>> NewCurlTransport(const TlsOptions& tls) {
  IMGTOOL_TRY(LoadCurl());
  std::string bundle;
  if (!tls.cert_dir.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(bundle, LoadCaBundle(tls.cert_dir));
  }
  return std::shared_ptr<HttpTransport>(std::make_shared<CurlTransport>(tls, std::move(bundle)));
}

}  // namespace imgtool::registry
