#include "cli/output.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "common/file_util.h"

namespace imgtool::cli {

Status PrintOut(std::string_view text) {
  return WriteAll(STDOUT_FILENO, text).Wrap("write to stdout");
}

Status PrintJson(const nlohmann::ordered_json& json) {
  return PrintOut(json.dump(4, ' ', false, nlohmann::ordered_json::error_handler_t::replace) +
                  "\n");
}

std::string Table::Render() const {
  std::vector<size_t> widths(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  };
  measure(header_);
  for (const auto& row : rows_) measure(row);
  std::string out;
  auto render = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 3, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  };
  render(header_);
  for (const auto& row : rows_) render(row);
  return out;
}

std::string HumanSize(int64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  double size = static_cast<double>(bytes);
  size_t unit = 0;
  while (size >= 1000.0 && unit + 1 < std::size(kUnits)) {
    size /= 1000.0;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g%s", size, kUnits[unit]);
  return buf;
}

std::optional<int64_t> ParseRfc3339(std::string_view text) {
  std::string s(text);
  int year, month, day, hour, minute, second, consumed = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute,
                  &second, &consumed) != 6 ||
      consumed != 19) {
    return std::nullopt;
  }
  size_t pos = 19;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
  }
  int64_t offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om, n = 0;
    if (std::sscanf(s.c_str() + pos + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5) {
      return std::nullopt;
    }
    offset = (oh * 3600 + om * 60) * (s[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  struct tm tm = {};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return static_cast<int64_t>(::timegm(&tm)) - offset;
}

std::string FormatRfc3339(int64_t seconds) {
  time_t t = static_cast<time_t>(seconds);
  struct tm tm;
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string TimeAgo(std::string_view created, int64_t now) {
  std::optional<int64_t> when = ParseRfc3339(created);
  if (!when) return "N/A";
  int64_t d = now - *when;
  if (d < 0) d = 0;
  auto plural = [](int64_t n, const char* unit) {
    return std::to_string(n) + " " + unit + (n == 1 ? "" : "s");
  };
  std::string text;
  constexpr int64_t kMinute = 60, kHour = 3600, kDay = 86400;
  if (d < 1) {
    text = "Less than a second";
  } else if (d < kMinute) {
    text = plural(d, "second");
  } else if (d < 2 * kMinute) {
    text = "About a minute";
  } else if (d < kHour) {
    text = plural(d / kMinute, "minute");
  } else if (d < 2 * kHour) {
    text = "About an hour";
  } else if (d < 2 * kDay) {
    text = plural(d / kHour, "hour");
  } else if (d < 14 * kDay) {
    text = plural(d / kDay, "day");
  } else if (d < 90 * kDay) {
    text = plural(d / (7 * kDay), "week");
  } else if (d < 2 * 365 * kDay) {
    text = plural(d / (30 * kDay), "month");
  } else {
    text = plural(d / (365 * kDay), "year");
  }
  return text + " ago";
}

std::string Truncate(std::string_view text, size_t width) {
  // Counts bytes; the cells truncated here are commands, mostly ASCII.
  if (text.size() <= width || width == 0) return std::string(text);
  std::string out(text.substr(0, width - 1));
  // Never cut a UTF-8 sequence in half.
  while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
  if (!out.empty() && (static_cast<unsigned char>(out.back()) & 0x80) != 0) out.pop_back();
  return out + "…";
}

}  // namespace imgtool::cli
