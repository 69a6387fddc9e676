// Packed-ternary x int8 kernels and the LM-head GEMVs; see ternary_kernels.hpp for the contracts.
//
// This file holds the public API: ISA detection, argument checks, pack/unpack, scratch buffers, and the
// drivers that split work over OpenMP threads and call the kernels of the chosen ISA. The kernels live one
// file per ISA in cpu/kernels/ (generic.cpp, x86_avx2.cpp, x86_avx512.cpp); kernels/kernels.hpp declares
// them and says how they are built.
#include "cpu/ternary_kernels.hpp"

#include <cpuid.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/enum_names.hpp"
#include "core/error.hpp"
#include "cpu/kernels/kernels.hpp"
#include "model/i2s_layout.hpp"
#include "model/quant.hpp"

namespace tl {

using namespace kernels_detail;

namespace {

// Up to this many tokens the GEMV kernels (which unpack the weights in registers, shared by the tokens)
// beat the GEMM (whose panel unpacking pays off over many tokens); measured on a Cascade Lake Xeon.
constexpr int64_t kGemvMaxTokensAvx2 = 3;
constexpr int64_t kGemvMaxTokensAvx512 = 8;
// Work (multiply-adds) below which a call stays on one thread: waking threads costs more than it saves.
constexpr int64_t kParallelMinWork = int64_t(1) << 21;

// ---------------------------------------------------------------------------------------------------------
// ISA detection.

bool cpu_has_f16c() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  return (ecx & bit_F16C) != 0;
}

bool cpu_supports(KernelIsa isa) {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  switch (isa) {
    case KernelIsa::Generic:
      return true;
    case KernelIsa::Avx2:
      return avx2;
    case KernelIsa::Avx512Vnni:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vnni");
  }
  return false;
}

void check_isa(KernelIsa isa, const char* what) {
  TL_CHECK(kernel_isa_supported(isa), "{}: this CPU does not support the {} kernels", what,
           kernel_isa_name(isa));
}

// ---------------------------------------------------------------------------------------------------------
// Thread splitting: units [0, n) cut into contiguous chunks (a few per thread), handed out dynamically so
// that a thread slowed down by a busy core takes fewer. Every output is computed by exactly one call of f,
// so the bits never depend on the thread count or the schedule.
template <class F>
void split_over_threads(int64_t units, bool parallel, F&& f) {
  if (!parallel || units < 2 || omp_get_max_threads() < 2 || omp_in_parallel()) {
    f(int64_t(0), units);
    return;
  }
  const int64_t chunks = std::min<int64_t>(units, 8 * int64_t(omp_get_max_threads()));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) f(units * c / chunks, units * (c + 1) / chunks);
}

}  // namespace

// The slots of kernels.hpp, one set of buffers per thread.
uint8_t* kernels_detail::scratch(Slot slot, size_t bytes) {
  static thread_local std::vector<uint8_t> buffers[int(Slot::Count)];
  std::vector<uint8_t>& b = buffers[int(slot)];
  if (b.size() < bytes + 64) b.resize(bytes + 64);
  const uintptr_t p = reinterpret_cast<uintptr_t>(b.data());
  return b.data() + ((64 - p % 64) % 64);
}

namespace {

// sum(x) of each of N tokens (N,K) into xsum (N).
void token_sums(const int8_t* x, int64_t N, int64_t K, int32_t* xsum) {
  for (int64_t n = 0; n < N; ++n) {
    const int8_t* xr = x + n * K;
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += xr[k];
    xsum[n] = s;
  }
}

// Activations for the GEMM micro-kernels: tokens in tiles of `nr`, interleaved per 16 elements:
// xpanel (ceil(N/nr), K/16, nr, 16), so the words a micro-kernel broadcasts for 4 consecutive steps (4
// elements each) of all its tokens are contiguous, and building it is a copy of 16-byte pieces (no
// transposition). Missing tokens of the last tile are zero.
void build_activation_panel(const int8_t* x, int64_t N, int64_t K, int64_t nr, uint8_t* xpanel) {
  const int64_t tiles = (N + nr - 1) / nr, pieces = K / 16;
  for (int64_t tile = 0; tile < tiles; ++tile) {
    uint8_t* dst = xpanel + tile * K * nr;
    for (int64_t t = 0; t < nr; ++t) {
      const int64_t n = tile * nr + t;
      for (int64_t q = 0; q < pieces; ++q) {
        uint8_t* d = dst + (q * nr + t) * 16;
        if (n < N)
          std::memcpy(d, x + n * K + 16 * q, 16);
        else
          std::memset(d, 0, 16);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Drivers.

void check_sizes(const char* what, int64_t M, int64_t K) {
  TL_CHECK(M >= 0 && K >= 0, "{}: negative size (M = {}, K = {})", what, M, K);
}

void ternary_gemv(int32_t* out, int64_t ldo, const int8_t* x, int64_t N, const uint8_t* w, int64_t M,
                  int64_t K, KernelIsa isa, const int32_t* xsum, bool parallel, bool valid_codes) {
  const int8_t* xs = x;
  if (isa == KernelIsa::Avx512Vnni) {  // permuted copy of the activations, shared by all threads
    int8_t* xp = reinterpret_cast<int8_t*>(scratch(Slot::Activations, size_t(N * K)));
    for (int64_t n = 0; n < N; ++n) permute_gemv_activations(x + n * K, K, xp + n * K);
    xs = xp;
  }
  // Units of 4 rows, so threads split on whole row groups.
  const int64_t groups = (M + 3) / 4;
  split_over_threads(groups, parallel, [&](int64_t g0, int64_t g1) {
    const int64_t m0 = g0 * 4, m1 = std::min(M, g1 * 4);
    if (isa == KernelIsa::Avx512Vnni)
      ternary_gemv_avx512(out, ldo, xs, N, w, K, m0, m1, xsum, valid_codes);
    else if (N == 1)
      ternary_gemv_rows_avx2<1>(out, ldo, xs, w, K, m0, m1, xsum);
    else if (N == 2)
      ternary_gemv_rows_avx2<2>(out, ldo, xs, w, K, m0, m1, xsum);
    else
      ternary_gemv_rows_avx2<3>(out, ldo, xs, w, K, m0, m1, xsum);
  });
}

// The GEMM driver's view of each ISA: its panel builder and micro-kernel tile.
struct Avx2Gemm {
  static constexpr int64_t kTokens = kTokensAvx2;
  static void build_panel(const uint8_t* w, int64_t K, int64_t m0, int64_t rows, int64_t b0, int64_t b1,
                          uint8_t* panel) {
    build_panel_avx2(w, K, m0, rows, b0, b1, panel);
  }
  static void tile(int nt, const uint8_t* panel, const uint8_t* xtile, int64_t steps, int32_t* partial,
                   bool first, bool last, const int32_t* xsum, int32_t* out, int64_t ldo, int64_t rows) {
    gemm_tile_avx2(nt, panel, xtile, steps, partial, first, last, xsum, out, ldo, rows);
  }
};

struct Avx512Gemm {
  static constexpr int64_t kTokens = kTokensAvx512;
  static void build_panel(const uint8_t* w, int64_t K, int64_t m0, int64_t rows, int64_t b0, int64_t b1,
                          uint8_t* panel) {
    build_panel_avx512(w, K, m0, rows, b0, b1, panel);
  }
  static void tile(int nt, const uint8_t* panel, const uint8_t* xtile, int64_t steps, int32_t* partial,
                   bool first, bool last, const int32_t* xsum, int32_t* out, int64_t ldo, int64_t rows) {
    gemm_tile_avx512(nt, panel, xtile, steps, partial, first, last, xsum, out, ldo, rows);
  }
};

// Cache blocking of the GEMM (per thread): K in chunks of kChunkBlocks blocks, so that a panel chunk
// (kPanelRows x 512 codes = 16 KiB) stays in L1 while all the token tiles pass over it; panel tiles in
// groups of kGroupTiles, so that the group's partial sums (N x 128 int32, in a contiguous per-thread
// buffer: out's row stride would alias cache sets) and the activation chunk (N x 512) stay in L2 while the
// group's tiles pass over them. Each panel chunk is unpacked once per call.
constexpr int64_t kChunkBlocks = 4;
constexpr int64_t kGroupTiles = 4;

// The first kilobyte of a micro-kernel call's activations and its partial sums, requested one call ahead
// (the micro-kernel prefetches its activations further on itself).
inline void prefetch_tile_start(const uint8_t* xtile, const int32_t* partial, int64_t nr) {
  for (int64_t i = 0; i < 1024; i += 64) _mm_prefetch(reinterpret_cast<const char*>(xtile + i), _MM_HINT_T0);
  const auto* p = reinterpret_cast<const char*>(partial);
  for (int64_t i = 0; i < nr * kPanelRows * 4; i += 64) _mm_prefetch(p + i, _MM_HINT_T0);
}

// Panel tiles [t0, t1) (rows 32 t0 .. 32 t1 - 1) against all N tokens of xpanel.
template <class Kernels>
void ternary_gemm_tiles(int32_t* out, int64_t ldo, const uint8_t* xpanel, int64_t N, const uint8_t* w,
                        int64_t M, int64_t K, const int32_t* xsum, int64_t t0, int64_t t1) {
  constexpr int64_t nr = Kernels::kTokens;
  const int64_t blocks = K / kBlock, token_tiles = (N + nr - 1) / nr;
  uint8_t* panel = scratch(Slot::Panel, size_t(kChunkBlocks * kBlock * kPanelRows));
  const int64_t partial_tile = nr * kPanelRows;  // partial sums of one micro-kernel call (nr, kPanelRows)
  int32_t* partials = reinterpret_cast<int32_t*>(
      scratch(Slot::Partial, size_t(kGroupTiles * token_tiles * partial_tile) * sizeof(int32_t)));
  for (int64_t g0 = t0; g0 < t1; g0 += kGroupTiles) {
    const int64_t g1 = std::min(t1, g0 + kGroupTiles);
    for (int64_t b0 = 0; b0 < blocks; b0 += kChunkBlocks) {
      const int64_t b1 = std::min(blocks, b0 + kChunkBlocks), steps = (b1 - b0) * kBlock / 4;
      for (int64_t tile = g0; tile < g1; ++tile) {
        const int64_t m0 = tile * kPanelRows, rows = std::min(kPanelRows, M - m0);
        Kernels::build_panel(w, K, m0, rows, b0, b1, panel);
        int32_t* partial = partials + (tile - g0) * token_tiles * partial_tile;
        for (int64_t tt = 0; tt < token_tiles; ++tt) {
          const int64_t n = tt * nr;
          if (tt + 1 < token_tiles)
            prefetch_tile_start(xpanel + (n + nr) * K + b0 * kBlock * nr, partial + (tt + 1) * partial_tile,
                                nr);
          Kernels::tile(int(std::min(nr, N - n)), panel, xpanel + n * K + b0 * kBlock * nr, steps,
                        partial + tt * partial_tile, b0 == 0, b1 == blocks, xsum + n, out + n * ldo + m0, ldo,
                        rows);
        }
      }
    }
  }
}

// Both phases in one parallel region: the activation panel and token sums (split over token tiles), then,
// after a barrier, the groups of panel tiles.
template <class Kernels>
void ternary_gemm(int32_t* out, int64_t ldo, const int8_t* x, int64_t N, const uint8_t* w, int64_t M,
                  int64_t K, bool parallel) {
  constexpr int64_t nr = Kernels::kTokens;
  const int64_t token_tiles = (N + nr - 1) / nr, tiles = (M + kPanelRows - 1) / kPanelRows;
  uint8_t* xpanel = scratch(Slot::Activations, size_t(token_tiles * nr * K));
  static thread_local std::vector<int32_t> xsum_buffer;
  xsum_buffer.resize(size_t(N));
  int32_t* xsum = xsum_buffer.data();
  auto run = [&](int64_t id, int64_t threads) {
    const int64_t a0 = token_tiles * id / threads, a1 = token_tiles * (id + 1) / threads;
    const int64_t n0 = std::min(N, a0 * nr), n1 = std::min(N, a1 * nr);
    build_activation_panel(x + n0 * K, n1 - n0, K, nr, xpanel + n0 * K);
    token_sums(x + n0 * K, n1 - n0, K, xsum + n0);
    if (threads == 1) {  // the serial path (it may run inside a caller's parallel region: no barrier)
      ternary_gemm_tiles<Kernels>(out, ldo, xpanel, N, w, M, K, xsum, 0, tiles);
      return;
    }
#pragma omp barrier
    // Groups of tiles handed out dynamically: a thread slowed down (a busy core) gets fewer. Each group
    // is computed whole by one thread, so the bits never depend on the schedule.
    const int64_t groups = (tiles + kGroupTiles - 1) / kGroupTiles;
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t g = 0; g < groups; ++g)
      ternary_gemm_tiles<Kernels>(out, ldo, xpanel, N, w, M, K, xsum, g * kGroupTiles,
                                  std::min(tiles, (g + 1) * kGroupTiles));
  };
  if (parallel && tiles > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    run(omp_get_thread_num(), omp_get_num_threads());
  } else {
    run(0, 1);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Public API.

bool kernel_isa_supported(KernelIsa isa) {
  static const bool supported[3] = {cpu_supports(KernelIsa::Generic), cpu_supports(KernelIsa::Avx2),
                                    cpu_supports(KernelIsa::Avx512Vnni)};
  const int i = int(isa);
  return i >= 0 && i < 3 && supported[i];
}

namespace {
constexpr std::array<EnumName<KernelIsa>, 3> kKernelIsas{
    {{KernelIsa::Generic, "generic"}, {KernelIsa::Avx2, "avx2"}, {KernelIsa::Avx512Vnni, "avx512vnni"}}};
}  // namespace

const char* kernel_isa_name(KernelIsa isa) {
  return name_of(kKernelIsas, isa).data();  // the table's literals are NUL-terminated
}

KernelIsa parse_kernel_isa(std::string_view name) {
  return parse_enum(kKernelIsas, name, "kernel ISA");
}

KernelIsa best_kernel_isa() {
  KernelIsa best = KernelIsa::Generic;
  for (KernelIsa isa : {KernelIsa::Avx2, KernelIsa::Avx512Vnni})
    if (kernel_isa_supported(isa)) best = isa;
  const char* forced = std::getenv("TERNLAB_ISA");
  if (forced == nullptr || *forced == '\0') return best;
  const KernelIsa want = parse_kernel_isa(forced);
  TL_CHECK(kernel_isa_supported(want), "TERNLAB_ISA={}: this CPU does not support these kernels (best: {})",
           forced, kernel_isa_name(best));
  return want;
}

void pack_i2s(const int8_t* codes, int64_t M, int64_t K, uint8_t* packed) {
  check_sizes("pack_i2s", M, K);
  TL_CHECK(K % kBlock == 0, "pack_i2s: K = {} is not a multiple of {}", K, kBlock);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < K / kBlock; ++b) {
      const int8_t* blk = codes + m * K + b * kBlock;
      const int bad = pack_i2s_block(blk, packed + m * (K / 4) + b * kBlockBytes);
      TL_CHECK(bad < 0, "pack_i2s: code {} at row {}, column {} is not in {{-1, 0, 1}}", int(blk[bad]), m,
               b * kBlock + bad);
    }
}

void unpack_i2s(const uint8_t* packed, int64_t M, int64_t K, int8_t* codes) {
  check_sizes("unpack_i2s", M, K);
  TL_CHECK(K % kBlock == 0, "unpack_i2s: K = {} is not a multiple of {}", K, kBlock);
  for (int64_t m = 0; m < M; ++m) decode_row(packed + m * (K / 4), K, codes + m * K);
}

void ternary_gemm_i32(int32_t* out, int64_t ldo, const int8_t* x, int64_t N, const uint8_t* w, int64_t M,
                      int64_t K, KernelIsa isa, PackedCodes codes) {
  TL_CHECK(N >= 0 && M >= 0 && K >= 0, "ternary_gemm_i32: negative size (N = {}, M = {}, K = {})", N, M, K);
  TL_CHECK(K % kBlock == 0, "ternary_gemm_i32: K = {} is not a multiple of {}", K, kBlock);
  TL_CHECK(K <= kMaxK, "ternary_gemm_i32: K = {} is above the supported {}", K, kMaxK);
  TL_CHECK(ldo >= M, "ternary_gemm_i32: ldo = {} is less than M = {}", ldo, M);
  check_isa(isa, "ternary_gemm_i32");
  if (N == 0 || M == 0) return;
  if (K == 0) {
    for (int64_t n = 0; n < N; ++n) std::fill(out + n * ldo, out + n * ldo + M, 0);
    return;
  }
  const bool parallel = M * K * N >= kParallelMinWork;
  if (isa == KernelIsa::Generic) {
    split_over_threads(M, parallel,
                       [&](int64_t m0, int64_t m1) { ternary_rows_generic(out, ldo, x, N, w, K, m0, m1); });
    return;
  }
  const bool avx512 = isa == KernelIsa::Avx512Vnni;
  if (N > (avx512 ? kGemvMaxTokensAvx512 : kGemvMaxTokensAvx2)) {
    if (avx512)
      ternary_gemm<Avx512Gemm>(out, ldo, x, N, w, M, K, parallel);
    else
      ternary_gemm<Avx2Gemm>(out, ldo, x, N, w, M, K, parallel);
    return;
  }
  int32_t xsum[std::max(kGemvMaxTokensAvx2, kGemvMaxTokensAvx512)];
  token_sums(x, N, K, xsum);
  ternary_gemv(out, ldo, x, N, w, M, K, isa, xsum, parallel, codes == PackedCodes::Valid);
}

TernaryGemvToken prepare_ternary_gemv_token(const int8_t* x, int64_t K, int8_t* buffer, KernelIsa isa) {
  TL_CHECK(K >= 0 && K % kBlock == 0 && K <= kMaxK,
           "prepare_ternary_gemv_token: K = {} is not a multiple of {} in [0, {}]", K, kBlock, kMaxK);
  check_isa(isa, "prepare_ternary_gemv_token");
  TernaryGemvToken t{x, K, 0, isa};
  token_sums(x, 1, K, &t.sum);
  if (isa == KernelIsa::Avx512Vnni) {
    permute_gemv_activations(x, K, buffer);
    t.x = buffer;
  }
  return t;
}

void ternary_gemv_token_rows(int32_t* out, const TernaryGemvToken& t, const uint8_t* w, int64_t m0,
                             int64_t m1, PackedCodes codes) {
  if (m1 <= m0) return;
  if (t.K == 0) {
    std::fill(out + m0, out + m1, 0);
    return;
  }
  switch (t.isa) {
    case KernelIsa::Avx512Vnni:
      if (codes == PackedCodes::Valid)
        ternary_gemv_one_token_avx512<false>(out, t.x, w, t.K, m0, m1, t.sum);
      else
        ternary_gemv_one_token_avx512<true>(out, t.x, w, t.K, m0, m1, t.sum);
      return;
    case KernelIsa::Avx2:
      return ternary_gemv_rows_avx2<1>(out, 0, t.x, w, t.K, m0, m1, &t.sum);
    case KernelIsa::Generic:
      return ternary_rows_generic(out, 0, t.x, 1, w, t.K, m0, m1);
  }
}

float quantize_activation_row_isa(const float* x, int64_t n, int8_t* q, KernelIsa isa) {
  check_sizes("quantize_activation_row_isa", 0, n);
  check_isa(isa, "quantize_activation_row_isa");
  if (isa != KernelIsa::Avx512Vnni) return quantize_activation_row(x, size_t(n), q);
  const float s = act_scale(abs_max_avx512(x, n));
  quantize_codes_avx512(x, n, s, q);
  return s;
}

void f16_gemv(float* out, const uint16_t* w, int64_t M, int64_t K, const float* x, KernelIsa isa) {
  check_sizes("f16_gemv", M, K);
  check_isa(isa, "f16_gemv");
  const bool parallel = M * K >= kParallelMinWork;
  const int64_t groups = (M + 3) / 4;
  split_over_threads(groups, parallel, [&](int64_t g0, int64_t g1) {
    const int64_t m0 = g0 * 4, m1 = std::min(M, g1 * 4);
    switch (isa) {
      case KernelIsa::Avx512Vnni:
        return f16_rows_avx512(out, w, K, x, m0, m1);
      case KernelIsa::Avx2:
        return f16_rows_avx2(out, w, K, x, m0, m1);
      case KernelIsa::Generic:
        return f16_rows_generic(out, w, K, x, m0, m1);
    }
  });
}

void i8_gemv(float* out, const int8_t* w, const float* wscale, int64_t M, int64_t K, const int8_t* xq,
             float xscale, KernelIsa isa) {
  check_sizes("i8_gemv", M, K);
  TL_CHECK(K <= kMaxKI8, "i8_gemv: K = {} is above the supported {}", K, kMaxKI8);
  check_isa(isa, "i8_gemv");
  int32_t xsum = 0;
  for (int64_t k = 0; k < K; ++k) xsum += xq[k];
  const int16_t* x16 = nullptr;
  if (isa == KernelIsa::Avx2) {
    int16_t* buf = reinterpret_cast<int16_t*>(scratch(Slot::Activations, size_t(K) * 2));
    for (int64_t k = 0; k < K; ++k) buf[k] = xq[k];
    x16 = buf;
  }
  const bool parallel = M * K >= kParallelMinWork;
  const int64_t groups = (M + 3) / 4;
  split_over_threads(groups, parallel, [&](int64_t g0, int64_t g1) {
    const int64_t m0 = g0 * 4, m1 = std::min(M, g1 * 4);
    int32_t* dots = reinterpret_cast<int32_t*>(scratch(Slot::Row, size_t(m1 - m0) * 4));  // rows m0..m1-1
    switch (isa) {
      case KernelIsa::Avx512Vnni:
        i8_rows_avx512(dots, w, K, xq, xsum, m0, m1);
        break;
      case KernelIsa::Avx2:
        i8_rows_avx2(dots, w, K, xq, x16, m0, m1);
        break;
      case KernelIsa::Generic:
        for (int64_t m = m0; m < m1; ++m) dots[m - m0] = i8_dot_generic(w + m * K, xq, K);
        break;
    }
    for (int64_t m = m0; m < m1; ++m) out[m] = float(dots[m - m0]) * wscale[m] / xscale;
  });
}

}  // namespace tl
