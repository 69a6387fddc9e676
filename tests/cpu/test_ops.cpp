// The building blocks of the CPU forward: RoPE, the exact ternary matmul, RMSNorm, attention.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "cpu/forward.hpp"

namespace tl {
namespace {

std::vector<float> randn(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(rng.normal());
  return v;
}

TEST(Rope, PositionZeroIsIdentity) {
  const int64_t hd = 128, nh = 3;
  const RopeTable r = make_rope_table(500000.0, hd, 16);
  const auto x = randn(size_t(nh * hd), 1);
  auto y = x;
  rope_forward(y.data(), nh, hd, r.cos_at(0), r.sin_at(0));
  EXPECT_EQ(x, y);
}

TEST(Rope, PreservesNormsAndPairsHalves) {
  const int64_t hd = 64, nh = 2;
  const RopeTable r = make_rope_table(10000.0, hd, 4096);
  for (int64_t pos : {1, 7, 100, 4095}) {
    const auto x = randn(size_t(nh * hd), uint64_t(pos));
    auto y = x;
    rope_forward(y.data(), nh, hd, r.cos_at(pos), r.sin_at(pos));
    // each (i, i + hd/2) pair is rotated: its norm is kept
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double a = std::hypot(x[h * hd + i], x[h * hd + i + hd / 2]);
        const double b = std::hypot(y[h * hd + i], y[h * hd + i + hd / 2]);
        EXPECT_NEAR(a, b, 1e-5 * (1 + a)) << "pos " << pos << " i " << i;
      }
  }
  // Half-split, not interleaved: e_0 at position 1 rotates by 1 radian (inv_freq[0] = 1) into element hd/2.
  std::vector<float> e(size_t(hd), 0.0f);
  e[0] = 1;
  rope_forward(e.data(), 1, hd, r.cos_at(1), r.sin_at(1));
  EXPECT_NEAR(e[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(e[hd / 2], std::sin(1.0), 1e-6);
  for (int64_t i = 0; i < hd; ++i) {
    if (i != 0 && i != hd / 2) {
      EXPECT_EQ(e[i], 0.0f) << i;
    }
  }
  // inv_freq[j] = theta^(-2j/hd): the last pair at position 4095
  const int64_t j = hd / 2 - 1;
  const double ang = 4095.0 * std::pow(10000.0, -2.0 * double(j) / double(hd));
  EXPECT_NEAR(r.cos_at(4095)[j], std::cos(ang), 1e-5);
  EXPECT_NEAR(r.sin_at(4095)[j], std::sin(ang), 1e-5);
}

TEST(Rope, ScoresDependOnRelativePosition) {
  const int64_t hd = 32;
  const RopeTable r = make_rope_table(500000.0, hd, 64);
  const auto q = randn(size_t(hd), 5), k = randn(size_t(hd), 6);
  auto score = [&](int64_t pq, int64_t pk) {
    auto a = q, b = k;
    rope_forward(a.data(), 1, hd, r.cos_at(pq), r.sin_at(pq));
    rope_forward(b.data(), 1, hd, r.cos_at(pk), r.sin_at(pk));
    double s = 0;
    for (int64_t i = 0; i < hd; ++i) s += double(a[i]) * double(b[i]);
    return s;
  };
  EXPECT_NEAR(score(10, 3), score(40, 33), 1e-4);
  EXPECT_GT(std::fabs(score(10, 3) - score(10, 4)), 1e-3);
}

// The ternary matmul must equal the int64 sums exactly, including the largest sums, on both paths
// (int8 dot products up to 8 rows, fp32-expanded sgemm above).
TEST(TernaryMatmul, ExactIntegerSums) {
  Rng rng(9);
  for (auto [N, M, K] : {std::array<int64_t, 3>{1, 7, 5},
                         {3, 100, 5000},
                         {8, 33, 77},
                         {9, 33, 77},
                         {37, 130, 2560},
                         {2, 40, 131072},
                         {12, 20, 131072}}) {
    std::vector<int8_t> xa(size_t(N * K)), codes(size_t(M * K));
    for (auto& x : xa) x = int8_t(int64_t(rng.below(256)) - 128);
    for (auto& c : codes) c = int8_t(int64_t(rng.below(3)) - 1);
    // Row 0 / column 0: the worst case, -128 * -1 everywhere, sum = 128 K.
    for (int64_t k = 0; k < K; ++k) {
      xa[size_t(k)] = -128;
      codes[size_t(k)] = -1;
    }
    std::vector<float> rs(size_t(N), 1.0f), out(size_t(N * M)), scratch;
    ternary_matmul_forward(out.data(), M, xa.data(), rs.data(), codes.data(), N, M, K, scratch);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t m = 0; m < M; ++m) {
        int64_t want = 0;
        for (int64_t k = 0; k < K; ++k) want += int64_t(xa[n * K + k]) * codes[m * K + k];
        ASSERT_EQ(out[n * M + m], float(want)) << N << "x" << M << "x" << K << " at " << n << "," << m;
      }
    EXPECT_EQ(out[0], 128.0f * float(K));
  }
  std::vector<float> s;
  float o = 0, r = 1;
  int8_t x = 0, c = 0;
  EXPECT_THROW(ternary_matmul_forward(&o, 1, &x, &r, &c, 1, 1, 131073, s), Error);
}

TEST(TernaryMatmul, RowScaleAndLeadingDimension) {
  for (int64_t N : {4, 20}) {  // both paths
    const int64_t M = 50, K = 33, ldo = 64;
    std::vector<int8_t> xa(size_t(N * K), 1), codes(size_t(M * K), 1);
    std::vector<float> rs(static_cast<size_t>(N)), out(size_t(N * ldo), -7.0f), s;
    for (int64_t n = 0; n < N; ++n) rs[size_t(n)] = 0.25f * float(n + 1) * (n % 2 ? -1.0f : 1.0f);
    ternary_matmul_forward(out.data(), ldo, xa.data(), rs.data(), codes.data(), N, M, K, s);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t m = 0; m < ldo; ++m) EXPECT_EQ(out[n * ldo + m], m < M ? 33.0f * rs[n] : -7.0f) << N;
  }
}

TEST(RmsNorm, MatchesDefinition) {
  const int64_t N = 3, C = 10;
  const auto x = randn(size_t(N * C), 2), w = randn(size_t(C), 3);
  std::vector<float> y(size_t(N * C));
  rmsnorm_forward(y.data(), x.data(), w.data(), N, C, 1e-5f);
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t i = 0; i < C; ++i) ss += double(x[n * C + i]) * x[n * C + i];
    for (int64_t i = 0; i < C; ++i)
      EXPECT_NEAR(y[n * C + i], w[i] * x[n * C + i] / std::sqrt(ss / C + 1e-5), 1e-5);
  }
}

// attention at position 0 returns v; a query that matches one key strongly returns (nearly) its value;
// GQA heads read their own kv head.
TEST(Attention, CausalAndGrouped) {
  const int64_t T = 3, NH = 4, NKV = 2, hd = 4;
  std::vector<float> q(size_t(T * NH * hd), 0.0f), k(size_t(T * NKV * hd), 0.0f), v(size_t(T * NKV * hd));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i);
  // query 2, head 3 (kv head 1) matches key 1 strongly
  for (int64_t i = 0; i < hd; ++i) {
    q[(2 * NH + 3) * hd + i] = 30;
    k[(1 * NKV + 1) * hd + i] = 1;
  }
  std::vector<float> out(q.size());
  attention_forward(out.data(), q.data(), k.data(), v.data(), 1, T, T, 0, NH, NKV, hd);
  for (int64_t h = 0; h < NH; ++h)
    for (int64_t i = 0; i < hd; ++i) EXPECT_EQ(out[h * hd + i], v[(h / 2) * hd + i]);  // position 0: v_0
  // position 1, zero scores: the mean of v_0 and v_1 of the head's kv head
  for (int64_t h = 0; h < NH; ++h)
    for (int64_t i = 0; i < hd; ++i)
      EXPECT_NEAR(out[(NH + h) * hd + i], 0.5f * (v[(h / 2) * hd + i] + v[(NKV + h / 2) * hd + i]), 1e-5);
  for (int64_t i = 0; i < hd; ++i) EXPECT_NEAR(out[(2 * NH + 3) * hd + i], v[(NKV + 1) * hd + i], 1e-4);
}

}  // namespace
}  // namespace tl
