// The engine does not print: it hands messages to a sink the embedding program provides (the
// CLI writes them to stderr). Sinks must be thread-safe; workers call them concurrently.
#pragma once

#include <functional>
#include <string_view>

namespace ackxfer {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

using LogSink = std::function<void(LogLevel, std::string_view)>;

class Logger {
 public:
  Logger() = default;
  Logger(LogSink sink, LogLevel level) : sink_(std::move(sink)), level_(level) {}
  bool enabled(LogLevel l) const { return sink_ && l <= level_; }
  void log(LogLevel l, std::string_view msg) const {
    if (enabled(l)) sink_(l, msg);
  }
  void error(std::string_view m) const { log(LogLevel::kError, m); }
  void warn(std::string_view m) const { log(LogLevel::kWarn, m); }
  void info(std::string_view m) const { log(LogLevel::kInfo, m); }
  void debug(std::string_view m) const { log(LogLevel::kDebug, m); }

 private:
  LogSink sink_;
  LogLevel level_ = LogLevel::kInfo;
};

}  // namespace ackxfer
