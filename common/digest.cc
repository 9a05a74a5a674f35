#include "common/digest.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define IMGTOOL_HAVE_SHA_NI 1
#endif

#include <algorithm>
#include <cstring>

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

namespace internal {

namespace {

constexpr uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

constexpr uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

}  // namespace

void Sha256BlocksPortable(uint32_t state[8], const uint8_t* data, size_t blocks) {
  for (; blocks > 0; --blocks, data += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (uint32_t{data[4 * i]} << 24) | (uint32_t{data[4 * i + 1]} << 16) |
             (uint32_t{data[4 * i + 2]} << 8) | uint32_t{data[4 * i + 3]};
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = h + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                    kRoundConstants[i] + w[i];
      uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
  }
}

#ifdef IMGTOOL_HAVE_SHA_NI

namespace {

bool CpuHasShaNi() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  bool sha = (ebx >> 29) & 1;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  bool ssse3 = (ecx >> 9) & 1;
  bool sse41 = (ecx >> 19) & 1;
  return sha && ssse3 && sse41;
}

// Four rounds: the message words of this group plus their constants.
__attribute__((target("sha,sse4.1"))) inline void FourRounds(__m128i& abef, __m128i& cdgh,
                                                             __m128i words, int group) {
  __m128i k = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&kRoundConstants[4 * group]));
  __m128i sum = _mm_add_epi32(words, k);
  cdgh = _mm_sha256rnds2_epu32(cdgh, abef, sum);
  abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(sum, 0x0e));
}

__attribute__((target("sha,sse4.1"))) void ShaNiBlocks(uint32_t state[8], const uint8_t* data,
                                                         size_t blocks) {
  const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  // The instructions want the state as ABEF and CDGH.
  __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[0])),
                                  0xb1);                                   // CDAB
  __m128i cdgh = _mm_shuffle_epi32(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[4])), 0x1b);  // EFGH
  __m128i abef = _mm_alignr_epi8(tmp, cdgh, 8);                             // ABEF
  cdgh = _mm_blend_epi16(cdgh, tmp, 0xf0);                                  // CDGH

  for (; blocks > 0; --blocks, data += 64) {
    const __m128i abef_saved = abef;
    const __m128i cdgh_saved = cdgh;
    __m128i w[4];
    for (int i = 0; i < 4; ++i) {
      w[i] = _mm_shuffle_epi8(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 16 * i)), byte_swap);
      FourRounds(abef, cdgh, w[i], i);
    }
    for (int group = 4; group < 16; ++group) {
      // w[group % 4] holds W[group-4]; the others W[group-3..group-1].
      __m128i& oldest = w[group % 4];
      const __m128i& next = w[(group + 1) % 4];
      const __m128i& before_last = w[(group + 2) % 4];
      const __m128i& last = w[(group + 3) % 4];
      __m128i fresh = _mm_add_epi32(_mm_sha256msg1_epu32(oldest, next),
                                    _mm_alignr_epi8(last, before_last, 4));
      oldest = _mm_sha256msg2_epu32(fresh, last);
      FourRounds(abef, cdgh, oldest, group);
    }
    abef = _mm_add_epi32(abef, abef_saved);
    cdgh = _mm_add_epi32(cdgh, cdgh_saved);
  }

  tmp = _mm_shuffle_epi32(abef, 0x1b);      // FEBA
  cdgh = _mm_shuffle_epi32(cdgh, 0xb1);     // DCHG
  abef = _mm_blend_epi16(tmp, cdgh, 0xf0);  // DCBA
  cdgh = _mm_alignr_epi8(cdgh, tmp, 8);     // HGFE
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[0]), abef);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[4]), cdgh);
}

}  // namespace

bool Sha256BlocksShaNi(uint32_t state[8], const uint8_t* data, size_t blocks) {
  static const bool supported = CpuHasShaNi();
  if (!supported) return false;
  ShaNiBlocks(state, data, blocks);
  return true;
}

#else

bool Sha256BlocksShaNi(uint32_t*, const uint8_t*, size_t) { return false; }

#endif

}  // namespace internal

namespace {

void Sha256Blocks(uint32_t state[8], const uint8_t* data, size_t blocks) {
  if (!internal::Sha256BlocksShaNi(state, data, blocks)) {
    internal::Sha256BlocksPortable(state, data, blocks);
  }
}

}  // namespace

Sha256Hasher::Sha256Hasher()
    : state_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
             0x5be0cd19} {}

const char* Sha256Hasher::Implementation() {
  uint32_t state[8] = {};
  uint8_t block[64] = {};
  return internal::Sha256BlocksShaNi(state, block, 1) ? "sha-ni" : "portable";
}

void Sha256Hasher::Update(const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  total_ += size;
  if (buffered_ > 0) {
    size_t take = std::min(size, buffer_.size() - buffered_);
    std::memcpy(buffer_.data() + buffered_, bytes, take);
    buffered_ += take;
    bytes += take;
    size -= take;
    if (buffered_ < buffer_.size()) return;
    Sha256Blocks(state_.data(), buffer_.data(), 1);
    buffered_ = 0;
  }
  if (size >= 64) {
    Sha256Blocks(state_.data(), bytes, size / 64);
    bytes += size / 64 * 64;
    size %= 64;
  }
  if (size > 0) {
    std::memcpy(buffer_.data(), bytes, size);
    buffered_ = size;
  }
}

Digest Sha256Hasher::Finish() {
  uint64_t bits = total_ * 8;
  uint8_t tail[72] = {0x80};
  size_t pad = (buffered_ < 56 ? 56 : 120) - buffered_;
  for (int i = 0; i < 8; ++i) tail[pad + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  Update(tail, pad + 8);
  uint8_t out[32];
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<uint8_t>(state_[i] >> (24 - 8 * j));
  }
  return Digest::FromSha256Bytes(std::span<const uint8_t, 32>(out, 32));
}

}  // namespace imgtool
