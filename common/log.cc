#include "common/log.h"

#include <unistd.h>

#include <atomic>

namespace imgtool {

namespace {
std::atomic<LogLevel> g_level{LogLevel::kWarning};
}

void SetLogLevel(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }
LogLevel GetLogLevel() { return g_level.load(std::memory_order_relaxed); }

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  if (text == "debug") {
    *level = LogLevel::kDebug;
  } else if (text == "info") {
    *level = LogLevel::kInfo;
  } else if (text == "warn" || text == "warning") {
    *level = LogLevel::kWarning;
  } else if (text == "error") {
    *level = LogLevel::kError;
  } else {
    return false;
  }
  return true;
}

bool LogEnabled(LogLevel level) { return level >= GetLogLevel(); }

void LogLine(LogLevel level, std::string_view message) {
  static constexpr std::string_view kNames[] = {"debug", "info", "warning", "error"};
  std::string line = "imgtool: ";
  line += kNames[static_cast<int>(level)];
  line += ": ";
  line += message;
  line += '\n';
  // One write per line so that lines from threads and processes do not interleave.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace imgtool
