// Content digests ("sha256:<64 hex>") and a streaming SHA-256 of our own
// (with the CPU's SHA instructions where it has them): OpenSSL's EVP layer
// costs every imgtool start ~2.5 ms of library loading and provider set-up
// before the first byte is hashed, which `imgtool run` can not afford.
#pragma once

#include <array>
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

  // Which block function runs: "sha-ni" or "portable" (for `imgtool version`).
  static const char* Implementation();

 private:
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

namespace internal {
// The two block functions, exposed so that tests can hold them against each
// other; `blocks` 64-byte blocks from `data` update `state`.
void Sha256BlocksPortable(uint32_t state[8], const uint8_t* data, size_t blocks);
// False when this CPU lacks the SHA extensions (nothing is hashed then).
bool Sha256BlocksShaNi(uint32_t state[8], const uint8_t* data, size_t blocks);
}  // namespace internal

}  // namespace imgtool

template <>
struct std::hash<imgtool::Digest> {
  size_t operator()(const imgtool::Digest& d) const noexcept {
    return std::hash<std::string>()(d.hex());
  }
};
