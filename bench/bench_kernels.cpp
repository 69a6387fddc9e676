// Benchmarks of the CPU kernels (cpu/ternary_kernels.hpp) on BitNet b1.58-2B-4T's shapes, per ISA.
//   ternary GEMV (N = 1): GMAC/s and GB/s of packed weights, weights hot in cache ("hot") and streamed from
//     memory ("cold": a rotation over copies larger than the last-level cache; "cold_valid": the same with
//     the PackedCodes::Valid promise, as the engine calls it);
//   ternary GEMM (N = 512, prompt processing): GMAC/s;
//   LM head (128256 x 2560): f16_gemv and i8_gemv, GB/s of weights;
//   vnni_peak: a loop of independent vpdpbusd, the core's int8 multiply-add ceiling (GMAC/s).
// Run with OMP_WAIT_POLICY=passive and OMP_NUM_THREADS=1 / 2; e.g.
//   OMP_NUM_THREADS=2 ./bench_kernels --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/half.hpp"
#include "core/huge_pages.hpp"
#include "core/rng.hpp"
#include "cpu/ternary_kernels.hpp"

namespace {

using namespace tl;

constexpr int64_t kColdBytes = int64_t(256) << 20;  // well above the L3 of the machines we run on

// Packed ternary weights: `copies` copies of one random (M, K/4) matrix of codes 0..2 (code 3 is never
// written), about a third zeros each. Copies keep the set-up fast; a rotation over them defeats the caches.
HugeVector<uint8_t> random_weights(int64_t bytes, int64_t copies,
                                   uint64_t seed) {  // as the engine holds them
  Rng rng(seed);
  HugeVector<uint8_t> v(size_t(bytes * copies));
  for (int64_t i = 0; i < bytes; ++i) {
    uint8_t byte = 0;
    for (int g = 0; g < 4; ++g) byte = uint8_t(byte << 2 | uint8_t(rng.below(3)));
    v[size_t(i)] = byte;
  }
  for (int64_t c = 1; c < copies; ++c) std::copy(v.begin(), v.begin() + bytes, v.begin() + c * bytes);
  return v;
}

std::vector<int8_t> random_activations(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = int8_t(int(rng.below(255)) - 127);
  return v;
}

void set_counters(benchmark::State& state, double macs, double weight_bytes) {
  const auto iters = double(state.iterations());
  state.counters["GMAC/s"] = benchmark::Counter(macs * iters * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GB/s"] = benchmark::Counter(weight_bytes * iters * 1e-9, benchmark::Counter::kIsRate);
  state.counters["threads"] = omp_get_max_threads();
}

// cold: rotate over enough copies of W that each call reads it from memory.
// codes: PackedCodes::Valid is what the engine passes (its bytes come from pack_i2s, as these do).
void bench_ternary(benchmark::State& state, KernelIsa isa, int64_t N, int64_t M, int64_t K, bool cold,
                   PackedCodes codes) {
  const int64_t bytes = M * K / 4;
  const int64_t copies = cold ? std::max<int64_t>(2, kColdBytes / bytes) : 1;
  const auto w = random_weights(bytes, copies, 1);
  const auto x = random_activations(size_t(N * K), 2);
  std::vector<int32_t> out(static_cast<size_t>(N * M));
  int64_t i = 0;
  for (auto _ : state) {
    ternary_gemm_i32(out.data(), M, x.data(), N, w.data() + (i++ % copies) * bytes, M, K, isa, codes);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, double(N * M * K), double(bytes));
}

void bench_f16_head(benchmark::State& state, KernelIsa isa, int64_t M, int64_t K) {
  HugeVector<uint16_t> w(static_cast<size_t>(M * K));  // as the engine holds its head
  Rng rng(3);
  for (int64_t i = 0; i < K * 64; ++i) w[size_t(i)] = f32_to_f16(float(rng.normal() * 0.02));
  for (int64_t r = 64; r < M; r += 64)  // 64 random rows, repeated
    std::copy(w.begin(), w.begin() + std::min<int64_t>(64, M - r) * K, w.begin() + r * K);
  std::vector<float> x(static_cast<size_t>(K), 0.5f), out(static_cast<size_t>(M));
  for (auto _ : state) {
    f16_gemv(out.data(), w.data(), M, K, x.data(), isa);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, double(M * K), double(M * K * 2));
}

void bench_i8_head(benchmark::State& state, KernelIsa isa, int64_t M, int64_t K) {
  const auto values = random_activations(size_t(M * K), 4);
  const HugeVector<int8_t> w(values.begin(), values.end());  // as the engine holds its head
  const auto xq = random_activations(size_t(K), 5);
  std::vector<float> scale(static_cast<size_t>(M), 0.01f), out(static_cast<size_t>(M));
  for (auto _ : state) {
    i8_gemv(out.data(), w.data(), scale.data(), M, K, xq.data(), 12.5f, isa);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, double(M * K), double(M * K));
}

// 24 independent dpbusd chains (latency 5, so enough to fill two ports); 64 MAC each. Inline asm: GCC 12
// surrounds the intrinsic with register copies that would cap the rate.
__attribute__((target("avx512f,avx512vnni"), noinline)) int dpbusd_chains(int64_t iters) {
  __m512i acc[24];
#pragma GCC unroll 24
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
  for (int64_t it = 0; it < iters; ++it) {
    __asm__ volatile("" : "+v"(a), "+v"(b));
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc[i]) : "v"(a), "v"(b));
  }
#pragma GCC unroll 24
  for (int i = 1; i < 24; ++i) acc[0] = _mm512_add_epi32(acc[0], acc[i]);
  int32_t lanes[16];
  _mm512_storeu_si512(lanes, acc[0]);
  return lanes[0];
}

void bench_vnni_peak(benchmark::State& state) {
  const int64_t iters = 1 << 16;
  for (auto _ : state) {
#pragma omp parallel
    benchmark::DoNotOptimize(dpbusd_chains(iters));
  }
  const double macs = double(iters) * 24 * 64 * omp_get_max_threads();
  state.counters["GMAC/s"] =
      benchmark::Counter(macs * double(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
  state.counters["threads"] = omp_get_max_threads();
}

struct LinearShape {
  const char* name;
  int64_t M, K;
};
const LinearShape kShapes[] = {
    {"qo", 2560, 2560}, {"kv", 640, 2560}, {"gate_up", 6912, 2560}, {"down", 2560, 6912}};

int register_all() {
  for (KernelIsa isa : {KernelIsa::Generic, KernelIsa::Avx2, KernelIsa::Avx512Vnni}) {
    if (!kernel_isa_supported(isa)) continue;
    const std::string i = kernel_isa_name(isa);
    for (const LinearShape& s : kShapes) {
      const std::string shape = std::string(s.name) + "/M" + std::to_string(s.M) + "_K" + std::to_string(s.K);
      benchmark::RegisterBenchmark(("gemv_hot/" + i + "/" + shape).c_str(), bench_ternary, isa, 1, s.M, s.K,
                                   false, PackedCodes::Any)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("gemv_cold/" + i + "/" + shape).c_str(), bench_ternary, isa, 1, s.M, s.K,
                                   true, PackedCodes::Any)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("gemv_cold_valid/" + i + "/" + shape).c_str(), bench_ternary, isa, 1, s.M,
                                   s.K, true, PackedCodes::Valid)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
      if (isa != KernelIsa::Generic)  // the generic GEMM at N = 512 takes seconds
        benchmark::RegisterBenchmark(("gemm512/" + i + "/" + shape).c_str(), bench_ternary, isa, 512, s.M,
                                     s.K, false, PackedCodes::Any)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
    }
    // 128 rows (655 KB): the head's arithmetic alone, from L2.
    benchmark::RegisterBenchmark(("head_f16_hot/" + i).c_str(), bench_f16_head, isa, 128, 2560)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("head_f16/" + i).c_str(), bench_f16_head, isa, 128256, 2560)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("head_i8/" + i).c_str(), bench_i8_head, isa, 128256, 2560)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  if (kernel_isa_supported(KernelIsa::Avx512Vnni))
    benchmark::RegisterBenchmark("vnni_peak", bench_vnni_peak)->UseRealTime()->Unit(benchmark::kMillisecond);
  return 0;
}
[[maybe_unused]] const int registered = register_all();

}  // namespace

BENCHMARK_MAIN();
