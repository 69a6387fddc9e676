// The fast ternary / LM-head kernels (cpu/ternary_kernels.hpp) against naive references written from the
// I2_S layout's definition: every ISA path must give exactly the reference's integers.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <ostream>
#include <string>
#include <vector>

#include "../common/test_util.hpp"
#include "core/error.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "cpu/ternary_kernels.hpp"
#include "model/quant.hpp"

namespace tl {
namespace {

using test::error_of;

const KernelIsa kAllIsas[] = {KernelIsa::Generic, KernelIsa::Avx2, KernelIsa::Avx512Vnni};

}  // namespace

// Readable ISA names in gtest's failure messages.
void PrintTo(KernelIsa isa, std::ostream* os) {
  *os << kernel_isa_name(isa);
}

namespace {

// The weight of element (m, k) of a packed matrix, straight from the layout's definition.
int weight_at(const std::vector<uint8_t>& packed, int64_t K, int64_t m, int64_t k) {
  const int64_t block = k / 128, j = k % 128, group = j / 32, p = j % 32;
  const uint8_t byte = packed[size_t(m * (K / 4) + 32 * block + p)];
  const int code = (byte >> (6 - 2 * group)) & 3;
  return code == 3 ? 0 : code - 1;
}

std::vector<int32_t> naive_gemm(const std::vector<int8_t>& x, int64_t N, const std::vector<uint8_t>& w,
                                int64_t M, int64_t K) {
  std::vector<int32_t> out(static_cast<size_t>(N * M));
  std::vector<int> row(static_cast<size_t>(K));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K; ++k) row[size_t(k)] = weight_at(w, K, m, k);
    for (int64_t n = 0; n < N; ++n) {
      int64_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += int64_t(row[size_t(k)]) * x[size_t(n * K + k)];
      out[size_t(n * M + m)] = int32_t(s);
    }
  }
  return out;
}

// Ternary codes with about `zero_fraction` zeros.
std::vector<int8_t> random_codes(int64_t n, double zero_fraction, Rng& rng) {
  std::vector<int8_t> c(static_cast<size_t>(n));
  for (auto& v : c) v = rng.uniform() < zero_fraction ? 0 : (rng.below(2) ? 1 : -1);
  return c;
}

// Activations in [-128, 127]; some tokens are all -128 or all 127, the extremes of the int16 bounds.
std::vector<int8_t> random_activations(int64_t N, int64_t K, Rng& rng) {
  std::vector<int8_t> x(static_cast<size_t>(N * K));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      int8_t& v = x[size_t(n * K + k)];
      if (n % 5 == 1)
        v = -128;
      else if (n % 5 == 3)
        v = 127;
      else
        v = int8_t(int(rng.below(256)) - 128);
    }
  return x;
}

std::vector<uint8_t> pack(const std::vector<int8_t>& codes, int64_t M, int64_t K) {
  std::vector<uint8_t> p(static_cast<size_t>(M * K / 4));
  pack_i2s(codes.data(), M, K, p.data());
  return p;
}

TEST(Kernels, IsaNamesAndEnvironment) {
  for (KernelIsa isa : kAllIsas) EXPECT_EQ(parse_kernel_isa(kernel_isa_name(isa)), isa);
  EXPECT_NE(error_of([] { parse_kernel_isa("sse9"); }).find("sse9"), std::string::npos);
  EXPECT_TRUE(kernel_isa_supported(KernelIsa::Generic));
  EXPECT_TRUE(kernel_isa_supported(best_kernel_isa()));

  const char* saved = std::getenv("TERNLAB_ISA");
  const std::string saved_value = saved ? saved : "";
  unsetenv("TERNLAB_ISA");
  const KernelIsa best = best_kernel_isa();
  setenv("TERNLAB_ISA", "generic", 1);
  EXPECT_EQ(best_kernel_isa(), KernelIsa::Generic);
  setenv("TERNLAB_ISA", "neon", 1);
  EXPECT_NE(error_of([] { best_kernel_isa(); }).find("neon"), std::string::npos);
  for (KernelIsa isa : kAllIsas) {
    setenv("TERNLAB_ISA", kernel_isa_name(isa), 1);
    if (kernel_isa_supported(isa)) {
      EXPECT_EQ(best_kernel_isa(), isa);
    } else {
      EXPECT_NE(error_of([] { best_kernel_isa(); }).find("does not support"), std::string::npos);
    }
  }
  if (saved)
    setenv("TERNLAB_ISA", saved_value.c_str(), 1);
  else
    unsetenv("TERNLAB_ISA");
  EXPECT_EQ(best_kernel_isa(), saved ? parse_kernel_isa(saved_value) : best);
}

TEST(Kernels, PackByteLayout) {
  // Two blocks (K = 256) of one row, all zeros except a few elements.
  std::vector<int8_t> codes(256, 0);
  codes[0] = 1;    // byte 0, bits 7:6
  codes[32] = -1;  // byte 0, bits 5:4
  codes[64] = 1;   // byte 0, bits 3:2
  codes[97] = -1;  // byte 1, bits 1:0
  codes[159] = 1;  // block 1, byte 31 (byte 63 of the row), bits 7:6
  const auto p = pack(codes, 1, 256);
  ASSERT_EQ(p.size(), 64u);
  EXPECT_EQ(p[0], 0b10'00'10'01);
  EXPECT_EQ(p[1], 0b01'01'01'00);
  EXPECT_EQ(p[63], 0b10'01'01'01);
  for (size_t i = 0; i < p.size(); ++i) {
    if (i != 0 && i != 1 && i != 63) {
      EXPECT_EQ(p[i], 0x55) << i;  // all weights 0: code 1 everywhere
    }
  }
}

TEST(Kernels, PackUnpackRoundTrip) {
  Rng rng(11);
  const int64_t M = 5, K = 384;
  const auto codes = random_codes(M * K, 0.4, rng);
  const auto p = pack(codes, M, K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) ASSERT_EQ(weight_at(p, K, m, k), codes[size_t(m * K + k)]);
  std::vector<int8_t> back(static_cast<size_t>(M * K));
  unpack_i2s(p.data(), M, K, back.data());
  EXPECT_EQ(back, codes);

  // Code 3 (never written) reads as weight 0.
  std::vector<uint8_t> threes(32, 0xFF);
  std::vector<int8_t> w(128, 7);
  unpack_i2s(threes.data(), 1, 128, w.data());
  EXPECT_EQ(w, std::vector<int8_t>(128, 0));
}

TEST(Kernels, BadArguments) {
  std::vector<int8_t> codes(256, 0), x(1024, 0);
  std::vector<uint8_t> p(1024, 0x55);
  std::vector<int32_t> out(64);
  EXPECT_NE(error_of([&] { pack_i2s(codes.data(), 1, 100, p.data()); }).find("multiple of 128"),
            std::string::npos);
  codes[5] = 2;
  EXPECT_NE(error_of([&] { pack_i2s(codes.data(), 1, 128, p.data()); }).find("column 5"), std::string::npos);
  EXPECT_THROW(unpack_i2s(p.data(), -1, 128, codes.data()), Error);
  for (KernelIsa isa : kAllIsas) {
    if (!kernel_isa_supported(isa)) continue;
    EXPECT_NE(error_of([&] {
                ternary_gemm_i32(out.data(), 4, x.data(), 1, p.data(), 4, 192, isa);
              }).find("multiple of 128"),
              std::string::npos);
    EXPECT_THROW(ternary_gemm_i32(out.data(), 4, x.data(), -1, p.data(), 4, 128, isa), Error);
    EXPECT_THROW(ternary_gemm_i32(out.data(), 4, x.data(), 1, p.data(), -4, 128, isa), Error);
    EXPECT_NE(
        error_of([&] { ternary_gemm_i32(out.data(), 3, x.data(), 2, p.data(), 4, 128, isa); }).find("ldo"),
        std::string::npos);
    EXPECT_THROW(ternary_gemm_i32(out.data(), 4, x.data(), 1, p.data(), 4, int64_t(1) << 21, isa), Error);
    std::vector<float> f(4);
    std::vector<uint16_t> h(16);
    EXPECT_THROW(f16_gemv(f.data(), h.data(), -1, 4, f.data(), isa), Error);
    EXPECT_THROW(i8_gemv(f.data(), x.data(), f.data(), 1, int64_t(1) << 17, x.data(), 1.0f, isa), Error);
    EXPECT_THROW(i8_gemv(f.data(), x.data(), f.data(), 1, -2, x.data(), 1.0f, isa), Error);
  }
}

struct Shape {
  int64_t N, M, K;
};

// Shapes that cover: N = 1 (GEMV), 2-3 (multi-token GEMV), >= 4 (GEMM) with partial token tiles; M not a
// multiple of any tile; K an odd number of blocks (K % 256 == 128) and BitNet's 2560 / 6912.
const Shape kShapes[] = {{1, 1, 128},    {1, 37, 256},   {1, 64, 2560},  {1, 13, 6912},  {2, 33, 384},
                         {3, 70, 2560},  {4, 17, 128},   {7, 45, 128},   {13, 65, 6912}, {64, 31, 2560},
                         {100, 96, 640}, {513, 40, 256}, {5, 100, 896},  {25, 33, 1152}, {8, 37, 384},
                         {9, 70, 256},   {15, 33, 128},  {30, 300, 1152}};

class KernelsPerIsa : public ::testing::TestWithParam<KernelIsa> {
 protected:
  void SetUp() override {
    if (!kernel_isa_supported(GetParam())) GTEST_SKIP() << kernel_isa_name(GetParam()) << " not supported";
  }
};

TEST_P(KernelsPerIsa, TernaryGemmEqualsNaive) {
  const KernelIsa isa = GetParam();
  Rng rng(42);
  for (const Shape& s : kShapes) {
    const auto codes = random_codes(s.M * s.K, 0.5, rng);
    const auto w = pack(codes, s.M, s.K);
    const auto x = random_activations(s.N, s.K, rng);
    const auto want = naive_gemm(x, s.N, w, s.M, s.K);
    // ldo > M: the columns past M must stay untouched.
    const int64_t ldo = s.M + 3;
    // Bytes from pack_i2s hold no code 3: the PackedCodes::Valid promise holds and must give the same sums.
    for (const PackedCodes codes : {PackedCodes::Any, PackedCodes::Valid}) {
      std::vector<int32_t> got(static_cast<size_t>(s.N * ldo), -7);
      ternary_gemm_i32(got.data(), ldo, x.data(), s.N, w.data(), s.M, s.K, isa, codes);
      for (int64_t n = 0; n < s.N; ++n) {
        for (int64_t m = 0; m < s.M; ++m)
          ASSERT_EQ(got[size_t(n * ldo + m)], want[size_t(n * s.M + m)])
              << "N=" << s.N << " M=" << s.M << " K=" << s.K << " n=" << n << " m=" << m
              << " valid=" << (codes == PackedCodes::Valid);
        for (int64_t m = s.M; m < ldo; ++m) ASSERT_EQ(got[size_t(n * ldo + m)], -7);
      }
    }
  }
}

// Arbitrary bytes (code 3 included, which must read as 0) and extreme weights: all -1 and all +1 rows.
TEST_P(KernelsPerIsa, TernaryGemmRawBytesAndExtremes) {
  const KernelIsa isa = GetParam();
  Rng rng(7);
  for (const Shape& s : {Shape{1, 21, 2560}, Shape{2, 9, 384}, Shape{9, 40, 2560}, Shape{30, 35, 128}}) {
    std::vector<uint8_t> w(static_cast<size_t>(s.M * s.K / 4));
    for (auto& b : w) b = uint8_t(rng.below(256));
    for (int64_t k = 0; k < s.K / 4; ++k) {
      w[size_t(0 * s.K / 4 + k)] = 0x00;  // row 0: all -1
      w[size_t(1 * s.K / 4 + k)] = 0xAA;  // row 1: all +1
      w[size_t(2 * s.K / 4 + k)] = 0xFF;  // row 2: all code 3 = 0
    }
    const auto x = random_activations(s.N, s.K, rng);
    const auto want = naive_gemm(x, s.N, w, s.M, s.K);
    std::vector<int32_t> got(static_cast<size_t>(s.N * s.M));
    ternary_gemm_i32(got.data(), s.M, x.data(), s.N, w.data(), s.M, s.K, isa);
    ASSERT_EQ(got, want) << "N=" << s.N << " M=" << s.M << " K=" << s.K;
  }
}

TEST_P(KernelsPerIsa, TernaryGemmIndependentOfThreadCount) {
  const KernelIsa isa = GetParam();
  Rng rng(5);
  const int saved = omp_get_max_threads();
  for (const Shape& s : {Shape{1, 1000, 2560}, Shape{3, 300, 2560}, Shape{70, 200, 384}}) {
    const auto w = pack(random_codes(s.M * s.K, 0.4, rng), s.M, s.K);
    const auto x = random_activations(s.N, s.K, rng);
    std::vector<int32_t> one(static_cast<size_t>(s.N * s.M)), two(static_cast<size_t>(s.N * s.M));
    omp_set_num_threads(1);
    ternary_gemm_i32(one.data(), s.M, x.data(), s.N, w.data(), s.M, s.K, isa);
    omp_set_num_threads(2);
    ternary_gemm_i32(two.data(), s.M, x.data(), s.N, w.data(), s.M, s.K, isa);
    EXPECT_EQ(one, two);
    EXPECT_EQ(one, naive_gemm(x, s.N, w, s.M, s.K));
  }
  omp_set_num_threads(saved);
}

// One token prepared once, rows computed in arbitrary ranges (as the engine's decode team does): the same
// sums as the GEMV, on pack_i2s bytes (Any and Valid) and on raw bytes with code 3 (Any).
TEST_P(KernelsPerIsa, TernaryGemvTokenRowsEqualTheGemv) {
  const KernelIsa isa = GetParam();
  Rng rng(31);
  for (const Shape& s : {Shape{1, 1, 128}, Shape{1, 37, 384}, Shape{1, 70, 2560}, Shape{1, 13, 6912}}) {
    const auto x = random_activations(1, s.K, rng);
    std::vector<int8_t> buffer(size_t(s.K));
    const TernaryGemvToken token = prepare_ternary_gemv_token(x.data(), s.K, buffer.data(), isa);
    std::vector<uint8_t> raw(static_cast<size_t>(s.M * s.K / 4));
    for (auto& b : raw) b = uint8_t(rng.below(256));
    const auto packed = pack(random_codes(s.M * s.K, 0.5, rng), s.M, s.K);
    for (const bool use_raw : {false, true})
      for (const PackedCodes codes : {PackedCodes::Any, PackedCodes::Valid}) {
        if (use_raw && codes == PackedCodes::Valid) continue;  // raw bytes break the Valid promise
        const std::vector<uint8_t>& w = use_raw ? raw : packed;
        std::vector<int32_t> got(static_cast<size_t>(s.M + 1), -7);
        // ranges of 0, 1, several rows and the rest, in an order that is not the rows' own
        const int64_t cut1 = std::min<int64_t>(1, s.M), cut2 = std::min<int64_t>(6, s.M);
        ternary_gemv_token_rows(got.data(), token, w.data(), cut2, s.M, codes);
        ternary_gemv_token_rows(got.data(), token, w.data(), cut1, cut1, codes);
        ternary_gemv_token_rows(got.data(), token, w.data(), 0, cut1, codes);
        ternary_gemv_token_rows(got.data(), token, w.data(), cut1, cut2, codes);
        const auto want = naive_gemm(x, 1, w, s.M, s.K);
        for (int64_t m = 0; m < s.M; ++m)
          ASSERT_EQ(got[size_t(m)], want[size_t(m)])
              << "M=" << s.M << " K=" << s.K << " m=" << m << " raw=" << use_raw
              << " valid=" << (codes == PackedCodes::Valid);
        ASSERT_EQ(got[size_t(s.M)], -7);  // past the last range: untouched
      }
  }
  std::vector<int8_t> x(192), buffer(192);
  EXPECT_THROW(prepare_ternary_gemv_token(x.data(), 192, buffer.data(), isa), Error);
  EXPECT_THROW(prepare_ternary_gemv_token(x.data(), -128, buffer.data(), isa), Error);
}

// Called from inside a caller's parallel region, each thread with its own problem: no nested team, no
// deadlock, exact results (the kernels keep their scratch per thread).
TEST_P(KernelsPerIsa, TernaryGemmInsideParallelRegion) {
  const KernelIsa isa = GetParam();
  Rng rng(21);
  constexpr int kThreads = 2;
  std::vector<std::vector<int8_t>> xs;
  std::vector<std::vector<uint8_t>> ws;
  std::vector<Shape> shapes = {{1, 100, 2560}, {40, 70, 384}};
  for (const Shape& s : shapes) {
    xs.push_back(random_activations(s.N, s.K, rng));
    ws.push_back(pack(random_codes(s.M * s.K, 0.3, rng), s.M, s.K));
  }
  std::vector<std::vector<int32_t>> got(kThreads);
#pragma omp parallel num_threads(kThreads)
  {
    const int id = omp_get_thread_num();
    const Shape& s = shapes[size_t(id)];
    got[size_t(id)].resize(size_t(s.N * s.M));
    ternary_gemm_i32(got[size_t(id)].data(), s.M, xs[size_t(id)].data(), s.N, ws[size_t(id)].data(), s.M, s.K,
                     isa);
  }
  for (size_t i = 0; i < shapes.size(); ++i)
    EXPECT_EQ(got[i], naive_gemm(xs[i], shapes[i].N, ws[i], shapes[i].M, shapes[i].K));
}

TEST_P(KernelsPerIsa, F16GemvMatchesNaive) {
  const KernelIsa isa = GetParam();
  Rng rng(3);
  for (const auto& [M, K] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {5, 15}, {7, 16}, {9, 17}, {37, 2563}, {64, 2560}, {2000, 640}}) {
    std::vector<uint16_t> w(static_cast<size_t>(M * K));
    std::vector<float> x(static_cast<size_t>(K));
    for (auto& v : w) v = f32_to_f16(float(rng.normal()));
    for (auto& v : x) v = float(rng.normal());
    std::vector<float> got(static_cast<size_t>(M), -1.0f);
    f16_gemv(got.data(), w.data(), M, K, x.data(), isa);
    for (int64_t m = 0; m < M; ++m) {
      double want = 0, scale = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = double(f16_to_f32(w[size_t(m * K + k)])) * x[size_t(k)];
        want += p;
        scale += std::fabs(p);
      }
      // fp32 accumulation in some order: error below K * eps * sum |p| (loose), and far below typical values.
      ASSERT_NEAR(got[size_t(m)], want, 1e-6 * double(K) * scale + 1e-30) << "M=" << M << " K=" << K;
    }
  }
}

// Every f16 bit pattern (subnormals, inf, NaN) times 1: each path's conversion, and K = 1 < any vector.
TEST_P(KernelsPerIsa, F16GemvConvertsEveryValue) {
  std::vector<uint16_t> w(65536);
  for (size_t i = 0; i < w.size(); ++i) w[i] = uint16_t(i);
  const float one = 1.0f;
  std::vector<float> got(w.size());
  f16_gemv(got.data(), w.data(), int64_t(w.size()), 1, &one, GetParam());
  for (size_t i = 0; i < w.size(); ++i) {
    const float want = f16_to_f32(uint16_t(i));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got[i])) << i;
    } else {
      ASSERT_EQ(got[i], want) << i;
    }
  }
}

TEST_P(KernelsPerIsa, I8GemvExact) {
  const KernelIsa isa = GetParam();
  Rng rng(9);
  for (const auto& [M, K] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {3, 63}, {6, 64}, {5, 65}, {13, 2560}, {2001, 640}, {4, 4099}}) {
    std::vector<int8_t> w(static_cast<size_t>(M * K)), xq(static_cast<size_t>(K));
    std::vector<float> wscale(static_cast<size_t>(M));
    for (auto& v : w) v = int8_t(int(rng.below(256)) - 128);
    for (auto& v : xq) v = int8_t(int(rng.below(256)) - 128);
    for (auto& v : wscale) v = float(rng.uniform() + 0.01);
    if (M > 1) {  // row 1: all -128 against x all -128 below, the largest |dot|
      for (int64_t k = 0; k < K; ++k) w[size_t(K + k)] = -128;
    }
    if (K == 4099)
      for (auto& v : xq) v = -128;
    const float xscale = 3.7f;
    std::vector<float> got(static_cast<size_t>(M));
    i8_gemv(got.data(), w.data(), wscale.data(), M, K, xq.data(), xscale, isa);
    for (int64_t m = 0; m < M; ++m) {
      int64_t d = 0;
      for (int64_t k = 0; k < K; ++k) d += int64_t(w[size_t(m * K + k)]) * xq[size_t(k)];
      const float want = float(d) * wscale[size_t(m)] / xscale;
      ASSERT_EQ(got[size_t(m)], want) << "M=" << M << " K=" << K << " m=" << m;
    }
  }
}

// The ISA quantizer against model/quant's: the same scale and codes bit for bit, over widths that leave
// every tail length, ties at k + 1/2 after scaling, an all-zero row, and values at the int8 limits.
TEST_P(KernelsPerIsa, ActivationQuantizerEqualsTheModelsQuantizer) {
  const KernelIsa isa = GetParam();
  Rng rng(11);
  std::vector<std::vector<float>> rows;
  for (int64_t n : {1, 3, 15, 16, 17, 31, 33, 100, 2560, 6912}) {
    std::vector<float> r(static_cast<size_t>(n));
    for (auto& v : r) v = float(rng.normal() * 3);
    rows.push_back(r);
  }
  std::vector<float> ties(37);  // amax 127: s = 1, so x * s = x exactly; halves round to even
  for (size_t i = 0; i < ties.size(); ++i) ties[i] = float(i) - 18.5f;
  ties[0] = 127.0f;
  ties[1] = -127.0f;
  rows.push_back(ties);
  rows.push_back(std::vector<float>(40, 0.0f));
  rows.push_back({-0.0f, 1e-30f, -1e-30f, 5.0f, -5.0f});
  for (const auto& r : rows) {
    const int64_t n = int64_t(r.size());
    std::vector<int8_t> want(r.size()), got(r.size() + 1, 99);  // the byte past n must stay
    const float ws = quantize_activation_row(r.data(), r.size(), want.data());
    const float gs = quantize_activation_row_isa(r.data(), n, got.data(), isa);
    ASSERT_EQ(gs, ws) << "n=" << n;
    ASSERT_EQ(std::vector<int8_t>(got.begin(), got.begin() + n), want) << "n=" << n;
    ASSERT_EQ(got[size_t(n)], 99) << "n=" << n;
  }
  // The ties are ties (s = 1 exactly at amax 127): 0.5 -> 0, 1.5 -> 2, -2.5 -> -2.
  const std::vector<float> row = {127.0f, 0.5f, 1.5f, -2.5f};
  std::vector<int8_t> q(4);
  ASSERT_EQ(quantize_activation_row_isa(row.data(), 4, q.data(), isa), 1.0f);
  EXPECT_EQ(q[1], 0);
  EXPECT_EQ(q[2], 2);
  EXPECT_EQ(q[3], -2);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, KernelsPerIsa, ::testing::ValuesIn(kAllIsas),
                         [](const ::testing::TestParamInfo<KernelIsa>& info) {
                           return std::string(kernel_isa_name(info.param));
                         });

}  // namespace
}  // namespace tl
