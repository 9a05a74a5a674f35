// Terminal output shared by the subcommands: docker-style tables, sizes and
// ages, RFC 3339 times, and writes to stdout that report failure.
#pragma once

#include <cstdint>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace imgtool::cli {

// Writes all of `text` to stdout.
Status PrintOut(std::string_view text);
// Pretty-prints JSON (4 spaces, as podman does) to stdout; invalid UTF-8 in
// image metadata becomes U+FFFD instead of failing the command.
Status PrintJson(const nlohmann::ordered_json& json);

// Columns padded to their widest cell and separated by three spaces, as
// `docker images` prints them; the last column is not padded.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// Decimal units with three significant digits, as docker prints sizes:
// "123B", "1.24kB", "4.26MB".
std::string HumanSize(int64_t bytes);

// Seconds since the epoch of an RFC 3339 time ("2024-01-02T03:04:05.5Z",
// "...+02:00"); nullopt when it is not one.
std::optional<int64_t> ParseRfc3339(std::string_view text);
// "2024-01-02T03:04:05Z".
std::string FormatRfc3339(int64_t seconds);

// "2 days ago", "About an hour ago", "Less than a second ago"; "N/A" when
// `created` is empty or unparseable.
std::string TimeAgo(std::string_view created, int64_t now);

// Truncates to `width` characters with "…" as docker does for long cells.
std::string Truncate(std::string_view text, size_t width);

}  // namespace imgtool::cli
