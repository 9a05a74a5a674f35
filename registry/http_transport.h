// The HTTP seam of the registry client: one request in, one response out.
// The real transport is libcurl (curl_transport.cc); unit tests use a fake.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/byte_sink.h"
#include "common/error.h"

namespace imgtool::registry {

// Header names are kept lowercase.
using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// The first value of header `name` (any case), or "".
std::string_view FindHeader(const HttpHeaders& headers, std::string_view name);
void SetHeader(HttpHeaders& headers, std::string_view name, std::string value);
void RemoveHeader(HttpHeaders& headers, std::string_view name);

struct HttpResponse {
  long status = 0;
  HttpHeaders headers;
  // The body when it did not go to a sink (errors, redirects, small documents).
  std::string body;

  std::string_view Header(std::string_view name) const { return FindHeader(headers, name); }
};

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  HttpHeaders headers;
  // Request body: `body`, or `body_length` bytes of `body_fd` from `body_offset`
  // (read with pread, the fd is not owned).
  std::string body;
  int body_fd = -1;
  int64_t body_offset = 0;
  int64_t body_length = 0;
  // Called once when a 2xx response's headers are in, before its first body
  // byte goes to the sink; an error aborts the transfer with that error.
  std::function<Status(const HttpResponse&)> on_headers;
};

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // Sends one request and does not follow redirects. A 2xx body goes to `sink`
  // when there is one, any other body to response.body (at most 16 MiB).
  // Connection failures (refused, reset, timed out, cut short) are Unavailable;
  // TLS verification failures are PermissionDenied; a sink error is returned
  // as it is.
  virtual Result<HttpResponse> Send(const HttpRequest& request, ByteSink* sink) = 0;
};

struct TlsOptions {
  bool verify = true;
  // Extra CA certificates: every *.crt in this directory (docker's certs.d
  // layout), trusted in addition to the system's.
  std::string cert_dir;
};

// libcurl with a pool of easy handles, so that connections are reused by
// sequential and parallel requests alike. Safe to use from many threads.
Result<std::shared_ptr<HttpTransport>> NewCurlTransport(const TlsOptions& tls);

}  // namespace imgtool::registry
