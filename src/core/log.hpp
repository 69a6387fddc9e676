// Logging to stderr and a progress line for long work (only drawn when stderr is a terminal).
#pragma once
#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace tl {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, Quiet = 4 };
void set_log_level(LogLevel level);
LogLevel log_level();
void log_message(LogLevel level, const std::string& msg);

template <class... A>
void log_info(fmt::format_string<A...> f, A&&... a) {
  if (log_level() <= LogLevel::Info) log_message(LogLevel::Info, fmt::format(f, std::forward<A>(a)...));
}
template <class... A>
void log_warn(fmt::format_string<A...> f, A&&... a) {
  if (log_level() <= LogLevel::Warn) log_message(LogLevel::Warn, fmt::format(f, std::forward<A>(a)...));
}
template <class... A>
void log_debug(fmt::format_string<A...> f, A&&... a) {
  if (log_level() <= LogLevel::Debug) log_message(LogLevel::Debug, fmt::format(f, std::forward<A>(a)...));
}

// Progress("scoring", total).update(done) draws "scoring  42/100  1234 tok/s  ETA 0:12" on a terminal.
class Progress {
 public:
  Progress(std::string label, uint64_t total, std::string unit = "");
  ~Progress();
  void update(uint64_t done, uint64_t units_done = 0);
  void finish();

 private:
  std::string label_, unit_;
  uint64_t total_;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

double seconds_since(std::chrono::steady_clock::time_point t);

}  // namespace tl
