#include "infer/bench.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "cpu/threads.hpp"

namespace tl {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {  // 128 bytes a step, four independent chains
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) s += p[i];
  return s;
}

uint64_t sum_plain(const uint64_t* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

void mean_stddev(const std::vector<double>& v, double& mean, double& stddev) {
  mean = stddev = 0;
  if (v.empty()) return;
  for (double x : v) mean += x;
  mean /= double(v.size());
  if (v.size() < 2) return;
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  stddev = std::sqrt(ss / double(v.size() - 1));
}

double measure_read_bandwidth(size_t bytes) {
  const size_t n = bytes / sizeof(uint64_t);
  uint64_t* buf = static_cast<uint64_t*>(std::aligned_alloc(64, n * sizeof(uint64_t)));
  TL_CHECK(buf != nullptr, "bandwidth: cannot allocate {} bytes", bytes);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) buf[i] = i;  // touch every page (first touch by the reading thread)
  const bool avx2 = __builtin_cpu_supports("avx2");
  double best = 0;
  volatile uint64_t sink = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const double t0 = now_s();
    uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
    {
      const size_t T = size_t(omp_get_num_threads()), t = size_t(omp_get_thread_num());
      const size_t chunk = (n / T) & ~size_t(15), begin = t * chunk, len = t + 1 == T ? n - begin : chunk;
      total += avx2 ? sum_avx2(buf + begin, len) : sum_plain(buf + begin, len);
    }
    const double dt = now_s() - t0;
    sink = sink + total;
    best = std::max(best, double(n * sizeof(uint64_t)) / dt / 1e9);
  }
  std::free(buf);
  return best;
}

BenchReport run_bench(const LanguageModel& lm, const BenchOptions& o) {
  TL_CHECK(o.repetitions >= 1, "bench: repetitions must be >= 1, found {}", o.repetitions);
  TL_CHECK(o.prompt >= 0 && o.generate >= 0, "bench: prompt and generate must be >= 0");
  TL_CHECK(o.prompt > 0 || o.generate > 0, "bench: nothing to measure (prompt and generate are both 0)");
  const int64_t ctx = lm.config().max_position_embeddings;
  TL_CHECK(o.prompt <= ctx && o.generate <= ctx, "bench: {} / {} tokens exceed the context of {}", o.prompt,
           o.generate, ctx);
  std::vector<int> threads = o.threads;
  if (threads.empty()) threads.push_back(num_threads());
  for (int t : threads) TL_CHECK(t >= 1, "bench: thread counts must be >= 1, found {}", t);

  BenchReport rep;
  rep.backend = lm.describe();
  Rng rng(o.seed);
  const int64_t V = lm.config().vocab_size;
  std::vector<int32_t> prompt(size_t(o.prompt)), gen(size_t(o.generate));
  for (auto& x : prompt) x = int32_t(rng.below(uint64_t(V)));
  for (auto& x : gen) x = int32_t(rng.below(uint64_t(V)));
  const int64_t cap = std::max<int64_t>(1, std::max(o.prompt, o.generate));
  auto session = lm.new_session(cap);
  TL_CHECK(!o.profile || session->set_profile(nullptr),
           "bench: --profile needs phase timers, which this backend ({}) does not have", lm.describe());
  // Runs one repetition, its phases added to `profile` when timed (r >= 0) and asked for.
  auto timed = [&](int r, DecodeProfile& profile, auto&& body) {
    if (o.profile && r >= 0) session->set_profile(&profile);
    const double t0 = now_s();
    body();
    const double dt = now_s() - t0;
    session->set_profile(nullptr);
    return dt;
  };

  for (int t : threads) {
    set_num_threads(t);
    // The read bandwidth, before the tests and again after them: the better of the two. On a shared machine
    // the bandwidth drifts within a run; the larger figure gives the stricter bound.
    double bw = o.bandwidth ? measure_read_bandwidth() : 0;
    // A warm-up of each test first (page faults, caches, thread start-up), as llama-bench does.
    if (o.prompt > 0) {
      BenchStat s{"pp" + std::to_string(o.prompt), t, {}, 0, 0, 0, {}};
      for (int r = -1; r < o.repetitions; ++r) {
        session->clear();
        const double dt = timed(r, s.profile, [&] { session->decode(prompt); });
        if (r >= 0) s.tokens_per_s.push_back(double(o.prompt) / dt);
      }
      mean_stddev(s.tokens_per_s, s.mean, s.stddev);
      rep.stats.push_back(std::move(s));
    }
    if (o.generate > 0) {
      BenchStat s{"tg" + std::to_string(o.generate), t, {}, 0, 0, 0, {}};
      for (int r = -1; r < o.repetitions; ++r) {
        session->clear();
        const double dt = timed(r, s.profile, [&] {
          for (int64_t i = 0; i < o.generate; ++i) session->decode(std::span(gen).subspan(size_t(i), 1));
        });
        if (r >= 0) s.tokens_per_s.push_back(double(o.generate) / dt);
      }
      mean_stddev(s.tokens_per_s, s.mean, s.stddev);
      if (o.bandwidth) bw = std::max(bw, measure_read_bandwidth());
      if (bw > 0 && o.bytes_per_token > 0) s.bandwidth_bound = bw * 1e9 / double(o.bytes_per_token);
      rep.stats.push_back(std::move(s));
    }
    if (o.bandwidth) rep.bandwidth_gbs.emplace_back(t, bw);
  }
  return rep;
}

}  // namespace tl
