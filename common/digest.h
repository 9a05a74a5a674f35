// Content digests ("sha256:<64 hex>") and a streaming SHA-256 over OpenSSL EVP.
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/error.h"

namespace imgtool {

class Digest {
 public:
  Digest() = default;

  // Accepts only "sha256:" followed by 64 lowercase hex digits.
  static Result<Digest> Parse(std::string_view text);
  // From a raw 32-byte SHA-256.
  static Digest FromSha256Bytes(std::span<const uint8_t, 32> bytes);
  // SHA-256 of a whole buffer.
  static Digest Sha256Of(std::string_view data);

  bool empty() const { return hex_.empty(); }
  std::string_view algorithm() const { return "sha256"; }
  // The 64 hex digits.
  const std::string& hex() const { return hex_; }
  // "sha256:<hex>".
  std::string ToString() const { return "sha256:" + hex_; }

  friend bool operator==(const Digest&, const Digest&) = default;
  friend auto operator<=>(const Digest&, const Digest&) = default;

 private:
  explicit Digest(std::string hex) : hex_(std::move(hex)) {}
  std::string hex_;
};

// Hashes bytes as they stream past; Finish() may be called once.
class Sha256Hasher {
 public:
  Sha256Hasher();
  Sha256Hasher(Sha256Hasher&&) noexcept = default;
  Sha256Hasher& operator=(Sha256Hasher&&) noexcept = default;

  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  Digest Finish();

 private:
  struct CtxDeleter {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  std::unique_ptr<EVP_MD_CTX, CtxDeleter> ctx_;
};

}  // namespace imgtool

template <>
struct std::hash<imgtool::Digest> {
  size_t operator()(const imgtool::Digest& d) const noexcept {
    return std::hash<std::string>()(d.hex());
  }
};
