#include "cuda/profile.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <vector>

#include "cuda/check.hpp"

namespace tl::cuda::prof {

namespace {

struct State {
  std::vector<std::pair<const char*, cudaEvent_t>> marks;  // since the last flush; [0] is the chain's start
  std::vector<cudaEvent_t> pool;
  std::map<std::string, std::pair<double, long>> total;  // phase -> (ms, calls)
};

State& state() {
  static State s;
  return s;
}

}  // namespace

bool enabled() {
  static const bool on = [] {
    const char* v = std::getenv("TERNLAB_CUDA_PROFILE");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

void mark(cudaStream_t stream, const char* phase) {
  State& s = state();
  cudaEvent_t e;
  if (s.pool.empty()) {
    TL_CUDA_CHECK(cudaEventCreate(&e));
  } else {
    e = s.pool.back();
    s.pool.pop_back();
  }
  TL_CUDA_CHECK(cudaEventRecord(e, stream));
  s.marks.emplace_back(phase, e);
}

void flush() {
  State& s = state();
  if (s.marks.empty()) return;
  TL_CUDA_CHECK(cudaEventSynchronize(s.marks.back().second));
  for (size_t i = 1; i < s.marks.size(); ++i) {
    float ms = 0;
    TL_CUDA_CHECK(cudaEventElapsedTime(&ms, s.marks[i - 1].second, s.marks[i].second));
    auto& t = s.total[s.marks[i].first];
    t.first += ms;
    t.second += 1;
  }
  for (size_t i = 0; i + 1 < s.marks.size(); ++i) s.pool.push_back(s.marks[i].second);
  s.marks.erase(s.marks.begin(), s.marks.end() - 1);  // the last mark starts the next chain
}

std::string report(int steps) {
  flush();
  State& s = state();
  std::vector<std::pair<std::string, std::pair<double, long>>> rows(s.total.begin(), s.total.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  double sum = 0;
  for (const auto& r : rows) sum += r.second.first;
  const double n = std::max(steps, 1);
  std::string out = fmt::format("  {:<34} {:>10} {:>8} {:>7}\n", "phase", "ms/step", "calls", "share");
  for (const auto& [name, t] : rows)
    out += fmt::format("  {:<34} {:>10.3f} {:>8.0f} {:>6.1f}%\n", name, t.first / n, double(t.second) / n,
                       100 * t.first / std::max(sum, 1e-12));
  out += fmt::format("  {:<34} {:>10.3f}\n", "total", sum / n);
  return out;
}

void reset() {
  flush();
  state().total.clear();
}

}  // namespace tl::cuda::prof
