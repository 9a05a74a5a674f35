#include "overlay/compression.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "common/temp_dir.h"
#include "tests/overlay/layer_test_util.h"
#include "tests/support/test_util.h"

namespace imgtool::overlay {
namespace {

using ::imgtool::testing::RunCommand;
using ::imgtool::testing::WriteTestFile;
using testing::BytesFd;
using testing::Compress;
using ::testing::HasSubstr;
using testing::TestData;

// Reads a whole stream through DecompressingReader.
Result<std::string> DecompressAll(std::string_view blob, Compression* detected = nullptr,
                                  Digest* blob_digest = nullptr) {
  UniqueFd fd = BytesFd(blob);
  IMGTOOL_ASSIGN_OR_RETURN(DecompressingReader reader, DecompressingReader::Open(fd.get()));
  if (detected != nullptr) *detected = reader.compression();
  std::string out;
  char buf[70000];  // not a multiple of any internal buffer size
  while (true) {
    IMGTOOL_ASSIGN_OR_RETURN(size_t n, reader.Read(buf, sizeof(buf)));
    if (n == 0) break;
    out.append(buf, n);
  }
  if (blob_digest != nullptr) *blob_digest = reader.FinishCompressedDigest();
  return out;
}

std::string RunTool(const std::vector<std::string>& argv, std::string_view blob) {
  auto dir = TempDir::Create("imgtool-comp-");
  EXPECT_TRUE(dir.has_value());
  std::string path = (dir->path() / "blob").string();
  WriteTestFile(path, blob);
  std::vector<std::string> args = argv;
  args.push_back(path);
  auto r = RunCommand(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

TEST(CompressionTest, DetectsByMagic) {
  const uint8_t gz[] = {0x1f, 0x8b, 0x08, 0x00};
  const uint8_t zst[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00};
  const uint8_t tar[] = {'e', 't', 'c', '/'};
  EXPECT_EQ(DetectCompression(gz), Compression::kGzip);
  EXPECT_EQ(DetectCompression(zst), Compression::kZstd);
  EXPECT_EQ(DetectCompression(tar), Compression::kNone);
  EXPECT_EQ(DetectCompression(std::span<const uint8_t>(zst, 3)), Compression::kNone);
  EXPECT_EQ(DetectCompression({}), Compression::kNone);
  EXPECT_EQ(LayerMediaType(Compression::kZstd), "application/vnd.oci.image.layer.v1.tar+zstd");
}

TEST(CompressionTest, GzipIsIdenticalForOneAndTwoThreadsAndReadableByGzip) {
  // Several blocks plus a partial one, so dictionaries and the crc combine matter.
  std::string data = TestData(5 * 128 * 1024 + 12345);
  std::string one = Compress(data, Compression::kGzip, 1);
  std::string two = Compress(data, Compression::kGzip, 2);
  std::string four = Compress(data, Compression::kGzip, 4);
  ASSERT_FALSE(one.empty());
  EXPECT_EQ(one, two);
  EXPECT_EQ(one, four);
  EXPECT_LT(one.size(), data.size() / 2);
  EXPECT_EQ(RunTool({"gzip", "-dc"}, one), data);
  // `gzip -t` also checks the crc32 and length in the trailer.
  EXPECT_EQ(RunTool({"gzip", "-t"}, one), "");
  auto back = DecompressAll(one);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, data);
}

TEST(CompressionTest, GzipHeaderCarriesNoNameTimeOrHost) {
  std::string gz = Compress("hello", Compression::kGzip, 1);
  ASSERT_GE(gz.size(), 18u);
  EXPECT_EQ(static_cast<uint8_t>(gz[0]), 0x1f);
  EXPECT_EQ(static_cast<uint8_t>(gz[1]), 0x8b);
  EXPECT_EQ(gz[2], 8);                               // deflate
  EXPECT_EQ(gz[3], 0);                               // no FNAME/FEXTRA/FCOMMENT
  EXPECT_EQ(gz.substr(4, 4), std::string(4, '\0'));  // mtime 0
  EXPECT_EQ(static_cast<uint8_t>(gz[9]), 0xff);      // OS unknown
  EXPECT_EQ(RunTool({"gzip", "-dc"}, gz), "hello");
}

TEST(CompressionTest, GzipLevelChangesOutputAndIsChecked) {
  std::string data = TestData(400000);
  std::string fast = Compress(data, Compression::kGzip, 2, 1);
  std::string best = Compress(data, Compression::kGzip, 2, 9);
  EXPECT_NE(fast, best);
  EXPECT_EQ(RunTool({"gzip", "-dc"}, fast), data);
  EXPECT_EQ(RunTool({"gzip", "-dc"}, best), data);
  StringSink sink;
  CompressOptions bad;
  bad.level = 10;
  auto c = NewCompressor(bad, sink);
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), ErrorCode::kInvalidArgument);
}

TEST(CompressionTest, GzipOfNothingAndOfExactBlocks) {
  std::string empty = Compress("", Compression::kGzip, 2);
  EXPECT_EQ(RunTool({"gzip", "-dc"}, empty), "");
  std::string exact = TestData(2 * 128 * 1024);
  EXPECT_EQ(RunTool({"gzip", "-dc"}, Compress(exact, Compression::kGzip, 2)), exact);
}

TEST(CompressionTest, GzipDoesNotDependOnWriteSizes) {
  std::string data = TestData(300000);
  StringSink sink;
  CompressOptions options;
  options.threads = 2;
  auto c = NewCompressor(options, sink);
  ASSERT_TRUE(c.has_value());
  for (size_t i = 0; i < data.size(); i += 777) {
    ASSERT_TRUE((*c)->Write(data.data() + i, std::min<size_t>(777, data.size() - i)).has_value());
  }
  ASSERT_TRUE((*c)->Finish().has_value());
  EXPECT_EQ(sink.data(), Compress(data, Compression::kGzip, 1));
}

// Bytes that no compressor can shrink, from a fixed generator (xorshift).
std::string RandomBytes(size_t size, uint64_t seed) {
  std::string out(size, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (char& c : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x >> 32);
  }
  return out;
}

TEST(CompressionTest, GzipStoresIncompressibleBlocksWhateverTheThreadCount) {
  // Text, then random bytes (stored, not deflated), then text again: the
  // choice is made per block from its content, so the output is the same for
  // any thread count and any write size, and readable by gzip.
  std::string data = TestData(300000) + RandomBytes(3 * 128 * 1024 + 5000, 7) + TestData(200000, 2);
  std::string one = Compress(data, Compression::kGzip, 1);
  std::string two = Compress(data, Compression::kGzip, 2);
  std::string four = Compress(data, Compression::kGzip, 4);
  EXPECT_EQ(one, two);
  EXPECT_EQ(one, four);
  StringSink sink;
  CompressOptions options;
  options.threads = 3;
  auto c = NewCompressor(options, sink);
  ASSERT_TRUE(c.has_value());
  for (size_t i = 0; i < data.size(); i += 4099) {
    ASSERT_TRUE((*c)->Write(data.data() + i, std::min<size_t>(4099, data.size() - i)).has_value());
  }
  ASSERT_TRUE((*c)->Finish().has_value());
  EXPECT_EQ(sink.data(), one);
  EXPECT_EQ(RunTool({"gzip", "-dc"}, one), data);
  EXPECT_EQ(RunTool({"gzip", "-t"}, one), "");
  auto back = DecompressAll(one);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, data);
  // Blocks 4 and 5 (from 393216) are all random: stored, so their bytes appear
  // verbatim in the output. The blocks where text and random bytes meet are
  // deflated, and the text around still compresses.
  EXPECT_NE(one.find(data.substr(3 * 128 * 1024, 65535)), std::string::npos);
  std::string text_only = Compress(TestData(300000) + TestData(200000, 2), Compression::kGzip, 1);
  EXPECT_LT(one.size(), text_only.size() + 3 * 128 * 1024 + 5000 + 8192);
}

TEST(CompressionTest, GzipEndsCleanlyOnAStoredOrEmptyLastBlock) {
  // The last block stored (it carries the final-block bit), and random data
  // filling whole blocks (the last block is then empty and deflated).
  for (size_t size : {size_t{3 * 128 * 1024 + 5000}, size_t{2 * 128 * 1024}, size_t{4096}}) {
    std::string data = RandomBytes(size, size);
    std::string gz = Compress(data, Compression::kGzip, 2);
    EXPECT_EQ(gz, Compress(data, Compression::kGzip, 1));
    // Header and trailer, and 5 bytes per stored block of at most 64 KiB.
    EXPECT_LE(gz.size(), data.size() + 18 + 5 * (2 * (size / 65536) + 4)) << size;
    EXPECT_EQ(RunTool({"gzip", "-dc"}, gz), data) << size;
    EXPECT_EQ(RunTool({"gzip", "-t"}, gz), "") << size;
    auto back = DecompressAll(gz);
    ASSERT_TRUE(back.has_value()) << back.error().ToString();
    EXPECT_EQ(*back, data);
  }
}

// Accepts `budget` writes, then fails every one.
class FailingSink final : public ByteSink {
 public:
  explicit FailingSink(int budget) : budget_(budget) {}
  Status Write(const void*, size_t) override {
    if (budget_-- > 0) return OkStatus();
    return Error(ErrorCode::kUnavailable, "disk full");
  }

 private:
  int budget_;
};

TEST(CompressionTest, GzipReportsTheSinksErrorAndStopsCleanly) {
  std::string data = TestData(3 << 20) + RandomBytes(2 << 20, 9);
  for (int threads : {1, 2, 4}) {
    FailingSink sink(5);
    CompressOptions options;
    options.threads = threads;
    auto c = NewCompressor(options, sink);
    ASSERT_TRUE(c.has_value());
    Status status = OkStatus();
    for (size_t i = 0; i < data.size() && status.has_value(); i += 100000) {
      status = (*c)->Write(data.data() + i, std::min<size_t>(100000, data.size() - i));
    }
    if (status.has_value()) status = (*c)->Finish();
    ASSERT_FALSE(status.has_value()) << threads;
    EXPECT_THAT(status.error().ToString(), HasSubstr("disk full"));
  }
  // Destroyed with blocks in flight and no Finish: returns, writes nothing more.
  StringSink sink;
  CompressOptions options;
  options.threads = 2;
  auto c = NewCompressor(options, sink);
  ASSERT_TRUE(c.has_value());
  ASSERT_TRUE((*c)->Write(data.data(), data.size()).has_value());
  c->reset();
  EXPECT_LE(sink.data().size(), data.size());
}

TEST(CompressionTest, GzipStillDeflatesRepeatedRandomData) {
  // Uniform byte histogram but long repeats: a random 1 KiB pattern over and
  // over, and a random 20 KiB block repeated right after itself (the repeat
  // lies in the next block's dictionary). Deflate pays for both.
  std::string pattern = RandomBytes(1024, 3);
  std::string repeated;
  while (repeated.size() < 512 * 1024) repeated += pattern;
  std::string gz = Compress(repeated, Compression::kGzip, 2);
  EXPECT_LT(gz.size(), repeated.size() / 20);
  EXPECT_EQ(RunTool({"gzip", "-dc"}, gz), repeated);

  std::string twice = RandomBytes(128 * 1024 - 20 * 1024, 4);
  std::string chunk = RandomBytes(20 * 1024, 5);
  twice += chunk + chunk;  // the second copy starts the second 128 KiB block
  std::string gz2 = Compress(twice, Compression::kGzip, 2);
  EXPECT_LT(gz2.size(), twice.size() - 15 * 1024);
  EXPECT_EQ(RunTool({"gzip", "-dc"}, gz2), twice);
}

TEST(CompressionTest, ZstdIsDeterministicWithChecksumAndNoContentSize) {
  std::string data = TestData(3 << 20);
  std::string one = Compress(data, Compression::kZstd, 1);
  std::string two = Compress(data, Compression::kZstd, 2);
  EXPECT_EQ(one, two);
  // Same input in small writes: still the same bytes.
  StringSink sink;
  CompressOptions options;
  options.compression = Compression::kZstd;
  options.threads = 2;
  auto c = NewCompressor(options, sink);
  ASSERT_TRUE(c.has_value());
  for (size_t i = 0; i < data.size(); i += 4096) {
    ASSERT_TRUE((*c)->Write(data.data() + i, std::min<size_t>(4096, data.size() - i)).has_value());
  }
  ASSERT_TRUE((*c)->Finish().has_value());
  EXPECT_EQ(sink.data(), one);
  // Frame header descriptor: no content size (bits 7-6, single segment bit 5), checksum (bit 2).
  ASSERT_GT(one.size(), 5u);
  uint8_t fhd = static_cast<uint8_t>(one[4]);
  EXPECT_EQ(fhd & 0xe0, 0);
  EXPECT_EQ(fhd & 0x04, 0x04);
  EXPECT_EQ(RunTool({"zstd", "-dc"}, one), data);
  auto back = DecompressAll(one);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, data);
}

TEST(CompressionTest, ReaderHashesTheCompressedBytes) {
  std::string data = TestData(200000);
  for (Compression c : {Compression::kNone, Compression::kGzip, Compression::kZstd}) {
    std::string blob = c == Compression::kNone ? data : Compress(data, c, 2);
    Compression detected;
    Digest digest;
    auto back = DecompressAll(blob, &detected, &digest);
    ASSERT_TRUE(back.has_value()) << back.error().ToString();
    EXPECT_EQ(*back, data);
    EXPECT_EQ(detected, c);
    EXPECT_EQ(digest, Digest::Sha256Of(blob)) << CompressionName(c);
  }
}

TEST(CompressionTest, ReadsConcatenatedGzipMembersAndZstdFrames) {
  std::string a = TestData(1000, 1), b = TestData(2000, 2);
  auto gz = DecompressAll(Compress(a, Compression::kGzip, 1) + Compress(b, Compression::kGzip, 1));
  ASSERT_TRUE(gz.has_value()) << gz.error().ToString();
  EXPECT_EQ(*gz, a + b);
  auto zst = DecompressAll(Compress(a, Compression::kZstd) + Compress(b, Compression::kZstd));
  ASSERT_TRUE(zst.has_value()) << zst.error().ToString();
  EXPECT_EQ(*zst, a + b);
}

TEST(CompressionTest, TruncatedStreamsAreDataLoss) {
  std::string data = TestData(500000);
  std::string gz = Compress(data, Compression::kGzip, 2);
  std::string zst = Compress(data, Compression::kZstd, 2);
  for (size_t cut : {gz.size() / 2, gz.size() - 4, size_t{5}}) {
    auto r = DecompressAll(std::string_view(gz).substr(0, cut));
    ASSERT_FALSE(r.has_value()) << "gzip cut at " << cut;
    EXPECT_EQ(r.error().code(), ErrorCode::kDataLoss);
    EXPECT_THAT(r.error().ToString(), HasSubstr("gzip"));
  }
  auto r = DecompressAll(std::string_view(gz).substr(0, gz.size() / 2));
  EXPECT_THAT(r.error().ToString(), HasSubstr("truncated"));
  for (size_t cut : {zst.size() / 2, zst.size() - 1, size_t{6}}) {
    auto z = DecompressAll(std::string_view(zst).substr(0, cut));
    ASSERT_FALSE(z.has_value()) << "zstd cut at " << cut;
    EXPECT_EQ(z.error().code(), ErrorCode::kDataLoss);
    EXPECT_THAT(z.error().ToString(), HasSubstr("zstd"));
  }
}

TEST(CompressionTest, CorruptAndTrailingGarbageAreDataLoss) {
  std::string data = TestData(300000);
  std::string gz = Compress(data, Compression::kGzip, 1);
  std::string corrupt = gz;
  for (size_t i = 100; i < 140; ++i) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  auto r = DecompressAll(corrupt);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kDataLoss);

  auto trailing = DecompressAll(gz + "garbage!");
  ASSERT_FALSE(trailing.has_value());
  EXPECT_EQ(trailing.error().code(), ErrorCode::kDataLoss);
  EXPECT_THAT(trailing.error().ToString(), HasSubstr("after member 1"));

  std::string zst = Compress(data, Compression::kZstd, 1);
  std::string zcorrupt = zst;
  for (size_t i = zst.size() / 2; i < zst.size() / 2 + 64; ++i) zcorrupt[i] ^= 0x33;
  auto z = DecompressAll(zcorrupt);
  ASSERT_FALSE(z.has_value());
  EXPECT_EQ(z.error().code(), ErrorCode::kDataLoss);
}

TEST(CompressionTest, HashingSinkHashesAndForwards) {
  StringSink inner;
  HashingSink sink(inner);
  ASSERT_TRUE(sink.Write("abc", 3).has_value());
  ASSERT_TRUE(sink.Write("def", 3).has_value());
  EXPECT_EQ(inner.data(), "abcdef");
  EXPECT_EQ(sink.size(), 6);
  EXPECT_EQ(sink.Finish(), Digest::Sha256Of("abcdef"));
}

}  // namespace
}  // namespace imgtool::overlay
