// llama-bench-style throughput: prompt processing (pp: one decode of P tokens into an empty cache) and
// token generation (tg: N single-token decodes from an empty cache, logits every step), each repeated,
// mean and standard deviation of tokens/s, over a sweep of thread counts; plus the read bandwidth the
// machine gives at each thread count, so each decode figure stands beside its bandwidth floor.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "infer/session.hpp"

namespace tl {

struct BenchOptions {
  int64_t prompt = 512;        // pp tokens; 0 skips pp
  int64_t generate = 128;      // tg tokens; 0 skips tg
  int repetitions = 5;         // >= 1 (>= 5 for figures one reports)
  std::vector<int> threads;    // empty: the current count
  uint64_t seed = 1;           // the random token ids
  bool bandwidth = true;       // measure read bandwidth at each thread count
  size_t bytes_per_token = 0;  // weights read per decoded token (0: unknown, no floor reported)
  bool profile = false;        // time the phases of the timed runs (DecodeProfile); the engine only
};

struct BenchStat {
  std::string test;  // "pp512", "tg128"
  int threads = 0;
  std::vector<double> tokens_per_s;  // one per repetition
  double mean = 0, stddev = 0;       // sample standard deviation (n-1)
  double bandwidth_bound =
      0;  // tg only: the most tokens/s reading bytes_per_token at the measured bandwidth allows (0: unknown)
  DecodeProfile profile;  // summed over the timed runs when options.profile (profile.tokens > 0)
};

struct BenchReport {
  std::string model, backend;
  std::vector<BenchStat> stats;
  std::vector<std::pair<int, double>> bandwidth_gbs;  // (threads, GB/s read: the best before and after tg)
};

// Errors: repetitions < 1, negative sizes, prompt + generate beyond the context, threads < 1, profile on a
// backend without phase timers.
BenchReport run_bench(const LanguageModel& lm, const BenchOptions& options);

// Read bandwidth in GB/s (1e9 bytes/s): the best of a few passes summing a buffer of `bytes` (much larger
// than the caches) on the current OpenMP thread count.
double measure_read_bandwidth(size_t bytes = size_t(1) << 30);

void mean_stddev(const std::vector<double>& v, double& mean, double& stddev);

}  // namespace tl
