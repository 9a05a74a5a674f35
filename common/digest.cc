#include "common/digest.h"

#include <openssl/sha.h>

#include <cstdlib>

namespace imgtool {

namespace {

constexpr std::string_view kPrefix = "sha256:";
constexpr char kHexDigits[] = "0123456789abcdef";

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

Result<Digest> Digest::Parse(std::string_view text) {
  if (!text.starts_with(kPrefix)) {
    size_t colon = text.find(':');
    if (colon != std::string_view::npos && colon > 0) {
      return InvalidArgumentError("unsupported digest algorithm \"" +
                                  std::string(text.substr(0, colon)) + "\"");
    }
    return InvalidArgumentError("invalid digest \"" + std::string(text.substr(0, 80)) + "\"");
  }
  std::string_view hex = text.substr(kPrefix.size());
  if (hex.size() != 64) {
    return InvalidArgumentError("invalid sha256 digest \"" + std::string(text.substr(0, 80)) +
                                "\": want 64 hex digits");
  }
  for (char c : hex) {
    if (!IsLowerHex(c)) {
      return InvalidArgumentError("invalid sha256 digest \"" + std::string(text) +
                                  "\": not lowercase hex");
    }
  }
  return Digest(std::string(hex));
}

Digest Digest::FromSha256Bytes(std::span<const uint8_t, 32> bytes) {
  std::string hex(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    hex[2 * i] = kHexDigits[bytes[i] >> 4];
    hex[2 * i + 1] = kHexDigits[bytes[i] & 0xf];
  }
  return Digest(std::move(hex));
}

Digest Digest::Sha256Of(std::string_view data) {
  Sha256Hasher hasher;
  hasher.Update(data);
  return hasher.Finish();
}

Sha256Hasher::Sha256Hasher() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) std::abort();
}

void Sha256Hasher::Update(const void* data, size_t size) {
  if (size > 0) EVP_DigestUpdate(ctx_.get(), data, size);
}

Digest Sha256Hasher::Finish() {
  uint8_t out[SHA256_DIGEST_LENGTH];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_.get(), out, &len);
  return Digest::FromSha256Bytes(std::span<const uint8_t, 32>(out, 32));
}

}  // namespace imgtool
