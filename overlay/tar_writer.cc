#include "overlay/tar_writer.h"

#include <algorithm>
#include <cstring>

#include "common/log.h"

namespace imgtool::overlay {

namespace {

constexpr size_t kBlock = 512;
constexpr size_t kBufferSize = 256 * 1024;
constexpr size_t kNameSize = 100;
constexpr size_t kPrefixSize = 155;

// Offsets of the ustar header fields.
constexpr size_t kOffName = 0;
constexpr size_t kOffMode = 100;
constexpr size_t kOffUid = 108;
constexpr size_t kOffGid = 116;
constexpr size_t kOffSize = 124;
constexpr size_t kOffMtime = 136;
constexpr size_t kOffChksum = 148;
constexpr size_t kOffType = 156;
constexpr size_t kOffLinkname = 157;
constexpr size_t kOffMagic = 257;
constexpr size_t kOffDevMajor = 329;
constexpr size_t kOffDevMinor = 337;
constexpr size_t kOffPrefix = 345;

const char kZeros[2 * kBlock] = {};

// The largest value an octal field of `width` bytes holds (width-1 digits + NUL).
constexpr int64_t MaxOctal(size_t width) { return (int64_t{1} << (3 * (width - 1))) - 1; }

void PutOctal(char* block, size_t offset, size_t width, int64_t value) {
  char* field = block + offset;
  field[width - 1] = '\0';
  for (size_t i = width - 1; i-- > 0;) {
    field[i] = static_cast<char>('0' + (value & 7));
    value >>= 3;
  }
}

void PutString(char* block, size_t offset, std::string_view value) {
  if (!value.empty()) std::memcpy(block + offset, value.data(), value.size());
}

// "<len> key=value\n" where len counts the whole record, its own digits included.
void AppendPaxRecord(std::string* out, std::string_view key, std::string_view value) {
  size_t body = key.size() + value.size() + 3;  // ' ', '=', '\n'
  size_t len = body + std::to_string(body).size();
  if (std::to_string(len).size() != std::to_string(body).size()) ++len;
  *out += std::to_string(len);
  *out += ' ';
  out->append(key);
  *out += '=';
  out->append(value);
  *out += '\n';
}

// Splits a long path into ustar prefix and name at a '/', preferring the longest prefix.
bool SplitUstarPath(std::string_view path, std::string_view* prefix, std::string_view* name) {
  if (path.size() <= kNameSize) {
    *prefix = {};
    *name = path;
    return true;
  }
  size_t start = std::min(path.size() - 1, kPrefixSize);
  for (size_t i = start + 1; i-- > 0;) {
    if (path[i] != '/') continue;
    std::string_view rest = path.substr(i + 1);
    if (i == 0 || rest.empty() || rest.size() > kNameSize) return false;
    *prefix = path.substr(0, i);
    *name = rest;
    return true;
  }
  return false;
}

void SetChecksum(char* block) {
  std::memset(block + kOffChksum, ' ', 8);
  unsigned sum = 0;
  for (size_t i = 0; i < kBlock; ++i) sum += static_cast<unsigned char>(block[i]);
  PutOctal(block, kOffChksum, 7, sum);  // six digits and a NUL ...
  block[kOffChksum + 7] = ' ';          // ... then a space, as ustar readers expect
}

void FillUstarCommon(char* block) {
  PutString(block, kOffMagic,
            std::string_view("ustar\0"
                             "00",
                             8));
}

}  // namespace

TarWriter::TarWriter(ByteSink& out) : out_(out), buffer_(new char[kBufferSize]) {}

TarWriter::~TarWriter() = default;

Status TarWriter::Append(const void* data, size_t size) {
  if (size == 0) return OkStatus();
  const char* p = static_cast<const char*>(data);
  bytes_written_ += static_cast<int64_t>(size);
  if (size >= kBufferSize) {
    IMGTOOL_TRY(Flush());
    return out_.Write(p, size);
  }
  if (buffered_ + size > kBufferSize) IMGTOOL_TRY(Flush());
  std::memcpy(buffer_.get() + buffered_, p, size);
  buffered_ += size;
  return OkStatus();
}

Status TarWriter::Flush() {
  if (buffered_ == 0) return OkStatus();
  size_t n = buffered_;
  buffered_ = 0;
  return out_.Write(buffer_.get(), n);
}

Status TarWriter::WritePaxHeader(const std::string& name, const std::string& records) {
  char block[kBlock] = {};
  std::string_view base = name;
  while (!base.empty() && base.back() == '/') base.remove_suffix(1);
  size_t slash = base.rfind('/');
  if (slash != std::string_view::npos) base = base.substr(slash + 1);
  std::string pax_name = "PaxHeaders.0/" + std::string(base);
  if (pax_name.size() > kNameSize) pax_name.resize(kNameSize);
  PutString(block, kOffName, pax_name);
  PutOctal(block, kOffMode, 8, 0644);
  PutOctal(block, kOffUid, 8, 0);
  PutOctal(block, kOffGid, 8, 0);
  PutOctal(block, kOffSize, 12, static_cast<int64_t>(records.size()));
  PutOctal(block, kOffMtime, 12, 0);
  block[kOffType] = 'x';
  FillUstarCommon(block);
  PutOctal(block, kOffDevMajor, 8, 0);
  PutOctal(block, kOffDevMinor, 8, 0);
  SetChecksum(block);
  IMGTOOL_TRY(Append(block, kBlock));
  IMGTOOL_TRY(Append(records.data(), records.size()));
  size_t pad = (kBlock - records.size() % kBlock) % kBlock;
  return Append(kZeros, pad);
}

Status TarWriter::WriteHeader(const TarHeader& header) {
  if (finished_) return FailedPreconditionError("tar: header after end of archive");
  if (remaining_ != 0) {
    return FailedPreconditionError(StrCat("tar: entry \"", header.name, "\" started with ",
                                          remaining_, " data bytes of the previous entry missing"));
  }
  std::string name = header.name;
  if (header.type == TarType::kDirectory && (name.empty() || name.back() != '/')) name += '/';
  if (name.find('\0') != std::string::npos || header.linkname.find('\0') != std::string::npos) {
    return InvalidArgumentError(StrCat("tar: entry \"", name, "\": NUL byte in name"));
  }
  if (header.uid < 0 || header.gid < 0 || header.size < 0) {
    return InvalidArgumentError(StrCat("tar: entry \"", name, "\": negative uid, gid or size"));
  }
  if (header.dev_major > MaxOctal(8) || header.dev_minor > MaxOctal(8)) {
    return InvalidArgumentError(StrCat("tar: entry \"", name, "\": device number too large"));
  }
  int64_t size = header.type == TarType::kRegular ? header.size : 0;

  // PAX records only for what ustar cannot say, in a fixed (sorted) key order.
  std::vector<std::pair<std::string, std::string>> records;
  std::string_view prefix, short_name;
  bool name_fits = SplitUstarPath(name, &prefix, &short_name);
  if (!name_fits) records.emplace_back("path", name);
  if (header.linkname.size() > kNameSize) records.emplace_back("linkpath", header.linkname);
  if (header.uid > MaxOctal(8)) records.emplace_back("uid", std::to_string(header.uid));
  if (header.gid > MaxOctal(8)) records.emplace_back("gid", std::to_string(header.gid));
  if (size > MaxOctal(12)) records.emplace_back("size", std::to_string(size));
  if (header.mtime < 0 || header.mtime > MaxOctal(12)) {
    records.emplace_back("mtime", std::to_string(header.mtime));
  }
  for (const auto& [key, value] : header.xattrs) {
    records.emplace_back("SCHILY.xattr." + key, value);
  }
  if (!records.empty()) {
    std::sort(records.begin(), records.end());
    std::string body;
    for (const auto& [key, value] : records) AppendPaxRecord(&body, key, value);
    IMGTOOL_TRY(WritePaxHeader(name, body));
  }

  char block[kBlock] = {};
  if (name_fits) {
    PutString(block, kOffName, short_name);
    PutString(block, kOffPrefix, prefix);
  } else {
    PutString(block, kOffName, std::string_view(name).substr(0, kNameSize));
  }
  PutOctal(block, kOffMode, 8, header.mode & 07777);
  PutOctal(block, kOffUid, 8, std::min(header.uid, MaxOctal(8)));
  PutOctal(block, kOffGid, 8, std::min(header.gid, MaxOctal(8)));
  PutOctal(block, kOffSize, 12, std::min(size, MaxOctal(12)));
  PutOctal(block, kOffMtime, 12, std::clamp<int64_t>(header.mtime, 0, MaxOctal(12)));
  block[kOffType] = static_cast<char>(header.type);
  PutString(
      block, kOffLinkname,
      std::string_view(header.linkname).substr(0, std::min(kNameSize, header.linkname.size())));
  FillUstarCommon(block);
  PutOctal(block, kOffDevMajor, 8, header.dev_major);
  PutOctal(block, kOffDevMinor, 8, header.dev_minor);
  SetChecksum(block);
  IMGTOOL_TRY(Append(block, kBlock));
  remaining_ = size;
  padding_ = static_cast<int64_t>((kBlock - static_cast<size_t>(size % kBlock)) % kBlock);
  return OkStatus();
}

Status TarWriter::WriteData(const void* data, size_t size) {
  if (static_cast<int64_t>(size) > remaining_) {
    return FailedPreconditionError(
        StrCat("tar: ", size, " data bytes written where ", remaining_, " were left"));
  }
  IMGTOOL_TRY(Append(data, size));
  remaining_ -= static_cast<int64_t>(size);
  if (remaining_ == 0 && padding_ > 0) {
    IMGTOOL_TRY(Append(kZeros, static_cast<size_t>(padding_)));
    padding_ = 0;
  }
  return OkStatus();
}

Status TarWriter::Finish() {
  if (finished_) return FailedPreconditionError("tar: finished twice");
  if (remaining_ != 0) {
    return FailedPreconditionError(StrCat("tar: last entry is missing ", remaining_, " bytes"));
  }
  finished_ = true;
  IMGTOOL_TRY(Append(kZeros, sizeof(kZeros)));
  return Flush();
}

}  // namespace imgtool::overlay
