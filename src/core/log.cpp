#include "core/log.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdio>

namespace tl {

namespace {
std::atomic<LogLevel> g_level{LogLevel::Info};
}

void set_log_level(LogLevel level) {
  g_level = level;
}
LogLevel log_level() {
  return g_level;
}

void log_message(LogLevel level, const std::string& msg) {
  static const char* prefix[] = {"debug: ", "", "warning: ", "error: ", ""};
  std::fprintf(stderr, "%s%s\n", prefix[int(level)], msg.c_str());
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

Progress::Progress(std::string label, uint64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  enabled_ = ::isatty(STDERR_FILENO) && log_level() <= LogLevel::Info;
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  finish();
}

void Progress::update(uint64_t done, uint64_t units_done) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double el = seconds_since(start_);
  std::string rate;
  if (!unit_.empty() && el > 0) rate = fmt::format("  {:.1f} {}/s", double(units_done) / el, unit_);
  std::string eta;
  if (done > 0 && done < total_) {
    const int s = int(el * double(total_ - done) / double(done));
    eta = fmt::format("  ETA {}:{:02d}", s / 60, s % 60);
  }
  std::fprintf(stderr, "\r%s  %llu/%llu%s%s\033[K", label_.c_str(), (unsigned long long)done,
               (unsigned long long)total_, rate.c_str(), eta.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (enabled_ && !finished_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
  finished_ = true;
}

}  // namespace tl
