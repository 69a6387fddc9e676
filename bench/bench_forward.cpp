// Throughput of the fp32 reference forward (tl::CpuModel): prefill tokens/s and decode tokens/s.
//   bench_forward                          tiny and small shapes (seconds)
//   TERNLAB_BENCH_2B4T=1 bench_forward     adds the real BitNet b1.58-2B-4T shape (30 layers, random
//                                          weights; ~12 GB of memory, a minute to build)
// Times are wall clock (UseRealTime) and CPU time of the whole process (all threads); on a shared machine
// their ratio shows how much of the cores the run got.
// Counters: tokens/s (per wall second), threads (OpenMP), peak_rss_GB (of the whole process so far),
// prepare_s (CpuModel construction: every linear quantized once).
// On a shared machine run with OMP_WAIT_POLICY=passive: spinning OpenMP threads slow a contended run ~5x.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "cpu/forward.hpp"
#include "cpu/threads.hpp"

namespace {

using namespace tl;

// One model per preset, built on first use and kept (the 2b4t one takes a while).
struct Prepared {
  Model model;
  std::unique_ptr<CpuModel> cpu;
  double prepare_s = 0;  // CpuModel construction: quantizing every linear once
};
Prepared& prepared(const std::string& preset) {
  static std::map<std::string, std::unique_ptr<Prepared>> cache;
  auto& p = cache[preset];
  if (!p) {
    p = std::make_unique<Prepared>();
    p->model = make_model(config_preset(preset));
    init_random(p->model, 1);
    const auto t0 = std::chrono::steady_clock::now();
    p->cpu = std::make_unique<CpuModel>(p->model);
    p->prepare_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return *p;
}

std::vector<int32_t> tokens(int64_t n, int64_t vocab) {
  Rng rng(7);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng.below(uint64_t(vocab)));
  return t;
}

void set_counters(benchmark::State& st, int64_t tokens_per_iter, const Prepared& p) {
  st.counters["prepare_s"] = p.prepare_s;
  st.counters["tokens/s"] =
      benchmark::Counter(double(tokens_per_iter), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["threads"] = num_threads();
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  st.counters["peak_rss_GB"] = double(ru.ru_maxrss) / (1024.0 * 1024.0);
}

// Sets the OpenMP and OpenBLAS thread count for one benchmark; 0 keeps the default.
struct ThreadScope {
  int saved = num_threads();
  explicit ThreadScope(int n) { set_num_threads(n); }
  ~ThreadScope() { set_num_threads(saved); }
};

// Full forward of B sequences of T tokens (through the final norm; with_logits adds the LM head).
void BM_Forward(benchmark::State& st, std::string preset, int64_t B, int64_t T, bool with_logits,
                int threads) {
  ThreadScope ts(threads);
  Prepared& p = prepared(preset);
  const auto& c = p.model.config;
  const auto tok = tokens(B * T, c.vocab_size);
  std::vector<float> hidden, logits(with_logits ? size_t(B * T * c.vocab_size) : 0);
  for (auto _ : st) {
    p.cpu->forward(tok, B, T, hidden);
    if (with_logits) p.cpu->logits(hidden.data(), B * T, logits.data());
    benchmark::DoNotOptimize(hidden.data());
    benchmark::DoNotOptimize(logits.data());
  }
  set_counters(st, B * T, p);
}

// One decoded token (forward_step + its logits) after a prompt of `prompt` tokens.
void BM_Decode(benchmark::State& st, std::string preset, int64_t prompt, int threads) {
  ThreadScope ts(threads);
  Prepared& p = prepared(preset);
  const auto& c = p.model.config;
  const auto tok = tokens(prompt + 1, c.vocab_size);
  KVCache cache = p.cpu->make_cache(prompt + 1);
  std::vector<float> hidden, logits(size_t(c.vocab_size));
  p.cpu->forward_step(cache, std::span(tok).subspan(0, size_t(prompt)), hidden);
  for (auto _ : st) {
    cache.length = prompt;  // decode the same position again
    p.cpu->forward_step(cache, std::span(tok).subspan(size_t(prompt), 1), hidden);
    p.cpu->logits(hidden.data(), 1, logits.data());
    benchmark::DoNotOptimize(logits.data());
  }
  set_counters(st, 1, p);
}

}  // namespace

int main(int argc, char** argv) {
  auto reg = [](const std::string& name, auto fn, auto... args) {
    return benchmark::RegisterBenchmark(name.c_str(), fn, args...)->UseRealTime()->MeasureProcessCPUTime();
  };
  reg("forward/tiny/B=4/T=64", BM_Forward, "tiny", 4, 64, false, 0)->Unit(benchmark::kMillisecond);
  reg("forward/small/B=1/T=256", BM_Forward, "small", 1, 256, false, 0)->Unit(benchmark::kMillisecond);
  reg("forward+logits/small/B=1/T=256", BM_Forward, "small", 1, 256, true, 0)->Unit(benchmark::kMillisecond);
  reg("decode/small/prompt=128", BM_Decode, "small", 128, 0)->Unit(benchmark::kMillisecond);
  const char* big = std::getenv("TERNLAB_BENCH_2B4T");
  if (big && std::string(big) == "1") {
    // One model build (the slow part) serves every variant; threads 1 and the default.
    for (int th : {0, 1}) {
      const std::string t = th ? "/threads=1" : "/threads=default";
      reg("forward/2b4t/B=1/T=128" + t, BM_Forward, "2b4t", 1, 128, false, th)
          ->Unit(benchmark::kSecond)
          ->Iterations(1)
          ->Repetitions(5);
      reg("forward+logits/2b4t/B=1/T=128" + t, BM_Forward, "2b4t", 1, 128, true, th)
          ->Unit(benchmark::kSecond)
          ->Iterations(1)
          ->Repetitions(5);
      reg("decode/2b4t/prompt=128" + t, BM_Decode, "2b4t", 128, th)
          ->Unit(benchmark::kMillisecond)
          ->Iterations(2)
          ->Repetitions(5);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
