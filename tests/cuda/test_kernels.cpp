// Every launcher of cuda/kernels.hpp, op by op, against the CPU reference it stands in for (train/ops.hpp,
// model/quant.hpp, core/half.hpp), in the spirit of ggml's test-backend-ops: shapes that are not multiples of
// the block size, both activation functions, the optional pointers (no acc, no s_row), accumulate and
// overwrite. Where the kernel does the reference's arithmetic in the same order (copies, codes, bf16
// conversions, elementwise scaling) the results must be equal bit for bit (a + b·c either fused, as nvcc
// contracts it, or rounded twice, as the CPU does); where it only sums in another
// order (reductions in double, attention) the bound is a relative L2 of 1e-6 (1e-5 for attention), and
// quantization codes may differ by one step on at most a handful of round-half ties.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <vector>

#include "core/half.hpp"
#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda_test_util.hpp"
#include "model/quant.hpp"
#include "model/rope.hpp"
#include "train/ops.hpp"

namespace tl::cuda {
namespace {

using cuda_test::randn;
using cuda_test::rel_l2;

// A device copy of a host vector (or n zeroed elements), read back with host().
template <class T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) {
    TL_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(T)));
    TL_CUDA_CHECK(cudaMemset(p, 0, std::max<size_t>(1, n) * sizeof(T)));
  }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) {
    TL_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() { cudaFree(p); }
  std::vector<T> host() const {
    TL_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> h(n);
    TL_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};
using DevF = Dev<float>;
using DevBf = Dev<uint16_t>;  // bf16 bits; passed to the launchers as k::bf16*
k::bf16* bf(DevBf& d) {
  return reinterpret_cast<k::bf16*>(d.p);
}
std::vector<float> from_bf16(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = bf16_to_f32(h[i]);
  return f;
}
std::vector<float> positive(size_t n, uint64_t seed) {  // ActQuant scales and the like: in [0.5, 2)
  auto v = randn(n, seed, 0.3f);
  for (auto& x : v) x = std::exp(x) > 2.f ? 1.9f : std::max(0.5f, std::exp(x));
  return v;
}

// Bits equal element by element (the first difference reported).
void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      ADD_FAILURE() << what << "[" << i << "]: " << got[i] << " vs " << want[i];
      return;
    }
}
void expect_same_bits(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) {
      ADD_FAILURE() << what << "[" << i << "]: " << bf16_to_f32(got[i]) << " vs " << bf16_to_f32(want[i]);
      return;
    }
}

// out[i] = a[i] + b[i] * scale[row]: nvcc contracts that into one fused multiply-add (its default), the
// CPU rounds twice; each element must be one of the two, bit for bit.
void expect_add_scaled(const std::vector<float>& got, const std::vector<float>& a,
                       const std::vector<float>& b, const std::vector<float>& row_scale, int64_t C,
                       const char* what) {
  ASSERT_EQ(got.size(), a.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const float sc = row_scale[i / size_t(C)];
    const float twice = a[i] + b[i] * sc, fused = std::fma(b[i], sc, a[i]);
    if (std::memcmp(&got[i], &twice, 4) != 0 && std::memcmp(&got[i], &fused, 4) != 0) {
      ADD_FAILURE() << what << "[" << i << "]: " << got[i] << " vs " << twice << " (or fused " << fused
                    << ")";
      return;
    }
  }
}

// Integer codes (as floats): equal except at most `ties` entries one step apart.
void expect_codes(const std::vector<float>& got, const std::vector<float>& want, size_t ties,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t off = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LE(std::fabs(got[i] - want[i]), 1.f) << what << "[" << i << "]";
    off += got[i] != want[i];
  }
  EXPECT_LE(off, ties) << what;
}

// bf16 results from a kernel whose float before rounding may differ from the reference's in its last bits
// (another summation order, the GPU's expf): within one bf16 step (2^-7 relative), plus 1e-5 of the
// vector's RMS for values that cancel to nearly nothing.
void expect_bf16_close(const std::vector<uint16_t>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double ss = 0;
  for (const float w : want) ss += double(w) * double(w);
  const float floor = float(1e-5 * std::sqrt(ss / double(std::max<size_t>(1, want.size()))));
  for (size_t i = 0; i < got.size(); ++i) {
    const float g = bf16_to_f32(got[i]);
    if (std::fabs(g - want[i]) > std::ldexp(std::fabs(want[i]), -7) + floor) {
      ADD_FAILURE() << what << "[" << i << "]: " << g << " vs " << want[i];
      return;
    }
  }
}

// The reference of norm_quant: RMSNorm (train::rmsnorm_forward) then ActQuant (model/quant) per row.
struct NormQuantRef {
  std::vector<float> h, rstd, codes, s;  // h (N, C) before quantization
};
NormQuantRef norm_quant_ref(const std::vector<float>& x, const std::vector<float>& w, int64_t N, int64_t C,
                            float eps) {
  NormQuantRef r;
  r.h.resize(static_cast<size_t>(N * C));
  r.rstd.resize(static_cast<size_t>(N));
  train::rmsnorm_forward(r.h.data(), r.rstd.data(), x.data(), w.data(), N, C, eps);
  r.codes.resize(static_cast<size_t>(N * C));
  r.s.resize(static_cast<size_t>(N));
  std::vector<int8_t> q(static_cast<size_t>(C));
  for (int64_t n = 0; n < N; ++n) {
    r.s[size_t(n)] = quantize_activation_row(r.h.data() + n * C, size_t(C), q.data());
    for (int64_t i = 0; i < C; ++i) r.codes[size_t(n * C + i)] = q[size_t(i)];
  }
  return r;
}

TEST(CudaKernels, WeightStatsAbsmeanRptFixedAndOff) {
  SKIP_WITHOUT_GPU();
  // Two linears, the first over two statistics blocks (70000 > 2^16), the second in one.
  const int64_t n0 = 70000, n1 = 1000;
  std::vector<float> params = randn(static_cast<size_t>(n0 + n1), 1, 0.02f);
  const std::vector<k::LinearDesc> lin = {{0, n0, 0}, {n0, n1, 2}};
  const int64_t nblocks = 3;
  Dev<uint8_t> lin_d(lin.size() * sizeof(k::LinearDesc));
  TL_CUDA_CHECK(cudaMemcpy(lin_d.p, lin.data(), lin_d.n, cudaMemcpyHostToDevice));
  const auto* lin_p = reinterpret_cast<const k::LinearDesc*>(lin_d.p);
  const std::vector<float> fixed = {0.015f, 0.03f};
  DevF params_d(params), fixed_d(fixed), alpha(2), eff(2);
  Dev<double> psum(static_cast<size_t>(nblocks));
  Dev<unsigned long long> pcnt(static_cast<size_t>(nblocks));

  k::weight_stats_partial(psum.p, pcnt.p, params_d.p, lin_p, 2, nblocks, nullptr, nullptr);
  k::weight_stats_finalize(alpha.p, eff.p, psum.p, pcnt.p, lin_p, 2, WeightQuant::Absmean, nullptr, nullptr);
  auto a = alpha.host(), e = eff.host();
  for (int i = 0; i < 2; ++i) {
    const float want = absmean_scale(params.data() + lin[size_t(i)].offset, size_t(lin[size_t(i)].numel));
    EXPECT_EQ(a[size_t(i)], want) << "absmean alpha of linear " << i;
    EXPECT_EQ(e[size_t(i)], 1.0f / (1.0f / want)) << "absmean eff of linear " << i;
  }

  k::weight_stats_partial(psum.p, pcnt.p, params_d.p, lin_p, 2, nblocks, fixed_d.p, nullptr);
  k::weight_stats_finalize(alpha.p, eff.p, psum.p, pcnt.p, lin_p, 2, WeightQuant::RptFixed, fixed_d.p,
                           nullptr);
  a = alpha.host();
  e = eff.host();
  for (int i = 0; i < 2; ++i) {
    const auto& d = lin[size_t(i)];
    std::vector<int8_t> codes(static_cast<size_t>(d.numel));
    const size_t zeros = ternarize(params.data() + d.offset, size_t(d.numel), fixed[size_t(i)], codes.data());
    ASSERT_GT(zeros, 0u);
    ASSERT_LT(zeros, size_t(d.numel));
    EXPECT_EQ(a[size_t(i)], fixed[size_t(i)]);
    const float nonzero = float(double(static_cast<size_t>(d.numel) - zeros) / double(d.numel));
    EXPECT_EQ(e[size_t(i)], (1.0f / (1.0f / fixed[size_t(i)])) * nonzero) << "rpt-fixed eff of linear " << i;
  }

  k::weight_stats_finalize(alpha.p, eff.p, psum.p, pcnt.p, lin_p, 2, WeightQuant::Off, nullptr, nullptr);
  EXPECT_EQ(alpha.host(), std::vector<float>({0.f, 0.f}));
  EXPECT_EQ(eff.host(), std::vector<float>({1.f, 1.f}));
}

TEST(CudaKernels, WeightCodesAndBf16AreTheCpuQuantizerBitForBit) {
  SKIP_WITHOUT_GPU();
  for (const int64_t n : {int64_t(4096), int64_t(4099)}) {  // the four-wide path, and a tail
    std::vector<float> w = randn(static_cast<size_t>(n), 2, 0.05f);
    const float alpha = 0.04f;
    w[0] = 0.02f;  // exactly half a step: round half to even gives 0
    w[1] = -0.06f;
    DevF w_d(w), alpha_d(std::vector<float>{alpha});
    DevBf codes(static_cast<size_t>(n));
    k::weight_codes(bf(codes), w_d.p, n, alpha_d.p, nullptr);
    std::vector<int8_t> want(static_cast<size_t>(n));
    ternarize(w.data(), size_t(n), alpha, want.data());
    // Equal as values: the GPU's rintf keeps the sign of a small negative weight (code -0), the CPU's int8
    // code has none; -0 and +0 are the same code to every GEMM.
    const std::vector<float> got_codes = from_bf16(codes.host());
    for (size_t i = 0; i < size_t(n); ++i)
      ASSERT_EQ(got_codes[i], float(want[i])) << "code " << i << " of " << w[i] << " at alpha " << alpha;
    std::vector<uint16_t> bf_bits(static_cast<size_t>(n));

    k::weight_codes(bf(codes), w_d.p, n, nullptr, nullptr);  // quantizer off: bf16(w)
    for (size_t i = 0; i < size_t(n); ++i) bf_bits[i] = f32_to_bf16(w[i]);
    expect_same_bits(codes.host(), bf_bits, "bf16(w)");
    DevBf out(static_cast<size_t>(n));
    k::to_bf16(bf(out), w_d.p, n, nullptr);
    expect_same_bits(out.host(), bf_bits, "to_bf16");
  }
}

TEST(CudaKernels, EmbeddingForwardCopiesAndBackwardAddsInPositionOrder) {
  SKIP_WITHOUT_GPU();
  const int64_t V = 11, C = 300, N = 9;
  const std::vector<int32_t> tokens = {3, 7, 3, 0, 10, 7, 3, 5, 0};
  const auto table = randn(static_cast<size_t>(V * C), 3, 1.f),
             dout = randn(static_cast<size_t>(N * C), 4, 1.f);
  auto dtable = randn(static_cast<size_t>(V * C), 5, 0.1f);  // backward adds onto what is there
  DevF table_d(table), out(static_cast<size_t>(N * C)), dout_d(dout), dtable_d(dtable);
  Dev<int32_t> tokens_d(tokens);
  k::embedding_forward(out.p, tokens_d.p, table_d.p, N, C, nullptr);
  std::vector<float> want(static_cast<size_t>(N * C));
  train::embedding_forward(want.data(), tokens.data(), table.data(), N, C);
  expect_same_bits(out.host(), want, "embedding_forward");

  // The device model's segments: positions grouped by token, ascending within each.
  std::map<int32_t, std::vector<int32_t>> by_token;
  for (int32_t n = 0; n < int32_t(N); ++n) by_token[tokens[size_t(n)]].push_back(n);
  std::vector<int32_t> order, seg_start, seg_token;
  for (const auto& [tok, rows] : by_token) {
    seg_start.push_back(int32_t(order.size()));
    seg_token.push_back(tok);
    order.insert(order.end(), rows.begin(), rows.end());
  }
  seg_start.push_back(int32_t(order.size()));
  Dev<int32_t> order_d(order), start_d(seg_start), tok_d(seg_token);
  k::embedding_backward(dtable_d.p, dout_d.p, order_d.p, start_d.p, tok_d.p, int64_t(seg_token.size()), C,
                        nullptr);
  train::embedding_backward(dtable.data(), dout.data(), tokens.data(), N, C);
  expect_same_bits(dtable_d.host(), dtable, "embedding_backward");
}

TEST(CudaKernels, ResidualNormQuantAndRmsnormForward) {
  SKIP_WITHOUT_GPU();
  const int64_t N = 6, C = 300;
  const float eps = 1e-5f;
  const auto res_in = randn(static_cast<size_t>(N * C), 6, 1.f),
             acc = randn(static_cast<size_t>(N * C), 7, 40.f);
  const auto w = positive(static_cast<size_t>(C), 8), acc_s = positive(static_cast<size_t>(N), 9);
  const float acc_eff = 0.0123f;
  DevF res_in_d(res_in), acc_d(acc), w_d(w), acc_s_d(acc_s), eff_d(std::vector<float>{acc_eff});
  DevF res_out(static_cast<size_t>(N * C)), rstd(static_cast<size_t>(N)), s_out(static_cast<size_t>(N));
  DevBf out(static_cast<size_t>(N * C));
  for (const bool with_acc : {true, false})
    for (const bool with_s : {true, false})
      for (const bool quant : {true, false}) {
        SCOPED_TRACE(testing::Message() << "acc " << with_acc << " s_row " << with_s << " quant " << quant);
        k::residual_norm_quant(res_out.p, res_in_d.p, with_acc ? acc_d.p : nullptr, eff_d.p,
                               with_s ? acc_s_d.p : nullptr, w_d.p, N, C, eps, bf(out), rstd.p, s_out.p,
                               quant, nullptr);
        std::vector<float> x = res_in;
        if (with_acc) {  // the GPU's residual sum, checked, is the norm's input below
          std::vector<float> scale(static_cast<size_t>(N));
          for (int64_t n = 0; n < N; ++n) scale[size_t(n)] = acc_eff / (with_s ? acc_s[size_t(n)] : 1.f);
          x = res_out.host();
          expect_add_scaled(x, res_in, acc, scale, C, "res_out");
        }
        const NormQuantRef ref = norm_quant_ref(x, w, N, C, eps);
        EXPECT_LT(rel_l2(rstd.host(), ref.rstd), 1e-6);
        if (quant) {
          expect_codes(from_bf16(out.host()), ref.codes, 2, "ActQuant codes");
          EXPECT_LT(rel_l2(s_out.host(), ref.s), 1e-6);
        } else {
          std::vector<uint16_t> want(ref.h.size());
          for (size_t i = 0; i < want.size(); ++i) want[i] = f32_to_bf16(ref.h[i]);
          const auto got = out.host();
          size_t off = 0;  // the h's float may differ in its last bit where rstd does; bf16 hides nearly all
          for (size_t i = 0; i < want.size(); ++i) off += got[i] != want[i];
          EXPECT_LE(off, 2u);
          EXPECT_EQ(s_out.host(), std::vector<float>(size_t(N), 1.f));
        }
      }

  DevF out32(static_cast<size_t>(N * C));
  k::rmsnorm_forward(out32.p, rstd.p, res_in_d.p, w_d.p, N, C, eps, nullptr);
  const NormQuantRef ref = norm_quant_ref(res_in, w, N, C, eps);
  EXPECT_LT(rel_l2(out32.host(), ref.h), 1e-6);
  EXPECT_LT(rel_l2(rstd.host(), ref.rstd), 1e-6);
}

TEST(CudaKernels, ResidualAddScaledAndDyConvertAreElementwiseExact) {
  SKIP_WITHOUT_GPU();
  const int64_t N = 5, C = 300;
  const auto a = randn(static_cast<size_t>(N * C), 10, 1.f),
             acc = randn(static_cast<size_t>(N * C), 11, 30.f);
  const auto s_row = positive(static_cast<size_t>(N), 12);
  const std::vector<float> eff = {0.011f, 0.022f, 0.033f};
  DevF a_d(a), acc_d(acc), s_d(s_row), eff_d(eff), out(static_cast<size_t>(N * C));
  for (const bool with_s : {true, false}) {
    k::residual_add_scaled(out.p, a_d.p, acc_d.p, eff_d.p, with_s ? s_d.p : nullptr, N, C, nullptr);
    std::vector<float> scale(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) scale[size_t(n)] = eff[0] / (with_s ? s_row[size_t(n)] : 1.f);
    expect_add_scaled(out.host(), a, acc, scale, C, "residual_add_scaled");
  }
  // dy_convert: three segments (q|k|v), and a single segment (b1 = b2 = OC).
  DevBf dyb(static_cast<size_t>(N * C)), dys(static_cast<size_t>(N * C));
  for (const auto& [b1, b2] : {std::pair<int64_t, int64_t>{100, 200}, {C, C}}) {
    k::dy_convert(bf(dyb), bf(dys), acc_d.p, N, C, b1, b2, eff_d.p, s_d.p, nullptr);
    std::vector<uint16_t> wb(static_cast<size_t>(N * C)), ws(static_cast<size_t>(N * C));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < C; ++i) {
        const float v = acc[size_t(n * C + i)], e = i < b1 ? eff[0] : (i < b2 ? eff[1] : eff[2]);
        wb[size_t(n * C + i)] = f32_to_bf16(v * e);
        ws[size_t(n * C + i)] = f32_to_bf16(v * (1.f / s_row[size_t(n)]));
      }
    expect_same_bits(dyb.host(), wb, "dy_convert dyb");
    expect_same_bits(dys.host(), ws, "dy_convert dys");
  }
}

// q|k|v rows (N, Q+2KV) split into train/ops' q (N, NH, hd), k and v (N, NKV, hd), and back.
struct Qkv {
  std::vector<float> q, k, v;
};
Qkv split_qkv(const std::vector<float>& x, int64_t N, int64_t Q, int64_t KV) {
  Qkv s;
  const int64_t W = Q + 2 * KV;
  for (int64_t n = 0; n < N; ++n) {
    const float* r = x.data() + n * W;
    s.q.insert(s.q.end(), r, r + Q);
    s.k.insert(s.k.end(), r + Q, r + Q + KV);
    s.v.insert(s.v.end(), r + Q + KV, r + W);
  }
  return s;
}
std::vector<float> join_qkv(const Qkv& s, int64_t N, int64_t Q, int64_t KV) {
  std::vector<float> x;
  for (int64_t n = 0; n < N; ++n) {
    x.insert(x.end(), s.q.begin() + n * Q, s.q.begin() + (n + 1) * Q);
    x.insert(x.end(), s.k.begin() + n * KV, s.k.begin() + (n + 1) * KV);
    x.insert(x.end(), s.v.begin() + n * KV, s.v.begin() + (n + 1) * KV);
  }
  return x;
}

TEST(CudaKernels, QkvPostScalesThenRotatesAndRopeBackwardIsItsTranspose) {
  SKIP_WITHOUT_GPU();
  const int64_t B = 2, T = 7, NH = 4, NKV = 2, hd = 16, N = B * T, Q = NH * hd, KV = NKV * hd;
  const RopeTable rope = make_rope_table(500000.0, hd, T);
  const auto sums = randn(static_cast<size_t>(N * (Q + 2 * KV)), 13, 50.f);
  const auto s_row = positive(static_cast<size_t>(N), 14);
  const std::vector<float> eff3 = {0.01f, 0.02f, 0.03f};
  DevF cos_d(rope.cos), sin_d(rope.sin), eff_d(eff3), s_d(s_row);
  for (const bool with_s : {true, false}) {
    DevF qkv(sums);
    k::qkv_post(qkv.p, N, T, NH, NKV, hd, eff_d.p, with_s ? s_d.p : nullptr, cos_d.p, sin_d.p, nullptr);
    Qkv ref = split_qkv(sums, N, Q, KV);
    for (int64_t n = 0; n < N; ++n) {
      const float s = with_s ? s_row[size_t(n)] : 1.f;
      for (int64_t i = 0; i < Q; ++i) ref.q[size_t(n * Q + i)] *= eff3[0] / s;
      for (int64_t i = 0; i < KV; ++i) ref.k[size_t(n * KV + i)] *= eff3[1] / s;
      for (int64_t i = 0; i < KV; ++i) ref.v[size_t(n * KV + i)] *= eff3[2] / s;
    }
    train::rope_forward(ref.q.data(), N, T, NH, hd, rope.cos.data(), rope.sin.data());
    train::rope_forward(ref.k.data(), N, T, NKV, hd, rope.cos.data(), rope.sin.data());
    expect_same_bits(qkv.host(), join_qkv(ref, N, Q, KV), "qkv_post");
  }
  const auto g = randn(static_cast<size_t>(N * (Q + 2 * KV)), 15, 1.f);
  DevF dqkv(g);
  k::rope_backward(dqkv.p, N, T, NH, NKV, hd, cos_d.p, sin_d.p, nullptr);
  Qkv ref = split_qkv(g, N, Q, KV);  // v passes through unchanged
  train::rope_backward(ref.q.data(), N, T, NH, hd, rope.cos.data(), rope.sin.data());
  train::rope_backward(ref.k.data(), N, T, NKV, hd, rope.cos.data(), rope.sin.data());
  expect_same_bits(dqkv.host(), join_qkv(ref, N, Q, KV), "rope_backward");
}

TEST(CudaKernels, GatedNormQuantForBothActivations) {
  SKIP_WITHOUT_GPU();
  const int64_t N = 5, F = 300;
  const float eps = 1e-5f;
  const auto sums = randn(static_cast<size_t>(N * 2 * F), 16, 60.f);
  const auto w = positive(static_cast<size_t>(F), 17), s_row = positive(static_cast<size_t>(N), 18);
  const std::vector<float> eff2 = {0.02f, 0.015f};
  DevF w_d(w), s_d(s_row), eff_d(eff2), hact(static_cast<size_t>(N * F)), rstd(static_cast<size_t>(N)),
      s_out(static_cast<size_t>(N));
  DevBf out(static_cast<size_t>(N * F));
  for (const bool relu2 : {true, false})
    for (const bool quant : {true, false}) {
      SCOPED_TRACE(testing::Message() << (relu2 ? "relu2" : "silu") << " quant " << quant);
      DevF gu(sums);
      k::gated_norm_quant(gu.p, hact.p, eff_d.p, s_d.p, N, F, relu2, w_d.p, eps, bf(out), rstd.p, s_out.p,
                          quant, nullptr);
      std::vector<float> gu_ref = sums, h(static_cast<size_t>(N * F));
      for (int64_t n = 0; n < N; ++n) {
        const float sg = eff2[0] / s_row[size_t(n)], su = eff2[1] / s_row[size_t(n)];
        float* r = gu_ref.data() + n * 2 * F;
        for (int64_t i = 0; i < F; ++i) {
          r[i] *= sg;
          r[F + i] *= su;
        }
        train::gated_act_forward(h.data() + n * F, r, r + F, F, relu2);
      }
      expect_same_bits(gu.host(), gu_ref, "gate|up scaled");
      if (relu2) {
        expect_same_bits(hact.host(), h, "act(gate) * up");
      } else {  // expf on the GPU is not the CPU's exp to the last bit
        EXPECT_LT(rel_l2(hact.host(), h), 1e-6);
      }
      const NormQuantRef ref = norm_quant_ref(h, w, N, F, eps);
      EXPECT_LT(rel_l2(rstd.host(), ref.rstd), 1e-6);
      if (quant) {
        expect_codes(from_bf16(out.host()), ref.codes, relu2 ? 2 : 8, "ActQuant codes");
        EXPECT_LT(rel_l2(s_out.host(), ref.s), 1e-6);
      } else {
        expect_bf16_close(out.host(), ref.h, "ffn_sub_norm output");
      }
    }
}

TEST(CudaKernels, AttentionForwardAndBackwardMatchTheCpuReference) {
  SKIP_WITHOUT_GPU();
  struct Shape {
    int64_t B, T, NH, NKV, hd;
  };
  for (const Shape sh : {Shape{2, 9, 4, 2, 16}, Shape{1, 33, 2, 2, 32}, Shape{3, 5, 6, 1, 8}}) {
    SCOPED_TRACE(testing::Message() << "B" << sh.B << " T" << sh.T << " heads " << sh.NH << "/" << sh.NKV
                                    << " hd" << sh.hd);
    const int64_t N = sh.B * sh.T, Q = sh.NH * sh.hd, KV = sh.NKV * sh.hd, W = Q + 2 * KV;
    const auto qkv = randn(static_cast<size_t>(N * W), 19, 1.5f),
               dout = randn(static_cast<size_t>(N * Q), 20, 1.f);
    DevF qkv_d(qkv), dout_d(dout), out(static_cast<size_t>(N * Q)), lse(static_cast<size_t>(N * sh.NH)),
        dqkv(static_cast<size_t>(N * W)), D(static_cast<size_t>(N * sh.NH));
    k::attention_forward(out.p, lse.p, qkv_d.p, sh.B, sh.T, sh.NH, sh.NKV, sh.hd, nullptr);
    k::attention_backward(dqkv.p, D.p, dout_d.p, out.p, qkv_d.p, lse.p, sh.B, sh.T, sh.NH, sh.NKV, sh.hd,
                          nullptr);
    const Qkv in = split_qkv(qkv, N, Q, KV);
    std::vector<float> out_ref(static_cast<size_t>(N * Q)), lse_ref(static_cast<size_t>(N * sh.NH));
    train::attention_forward(out_ref.data(), lse_ref.data(), in.q.data(), in.k.data(), in.v.data(), sh.B,
                             sh.T, sh.NH, sh.NKV, sh.hd);
    EXPECT_LT(rel_l2(out.host(), out_ref), 1e-5);
    EXPECT_LT(rel_l2(lse.host(), lse_ref), 1e-6);
    Qkv grad{std::vector<float>(size_t(N * Q)), std::vector<float>(size_t(N * KV)),
             std::vector<float>(size_t(N * KV))};
    train::attention_backward(grad.q.data(), grad.k.data(), grad.v.data(), dout.data(), in.q.data(),
                              in.k.data(), in.v.data(), lse_ref.data(), sh.B, sh.T, sh.NH, sh.NKV, sh.hd);
    const Qkv got = split_qkv(dqkv.host(), N, Q, KV);
    EXPECT_LT(rel_l2(got.q, grad.q), 1e-5) << "dq";
    EXPECT_LT(rel_l2(got.k, grad.k), 1e-5) << "dk";
    EXPECT_LT(rel_l2(got.v, grad.v), 1e-5) << "dv";
  }
}

TEST(CudaKernels, RmsnormBackwardAndDweightMatchTheCpuReference) {
  SKIP_WITHOUT_GPU();
  const int64_t N = 70, C = 300;  // N over several dweight chunks, C not a multiple of 32
  const auto x = randn(static_cast<size_t>(N * C), 21, 1.f),
             dout = randn(static_cast<size_t>(N * C), 22, 1.f);
  const auto w = positive(static_cast<size_t>(C), 23);
  std::vector<float> h(static_cast<size_t>(N * C)), rstd(static_cast<size_t>(N));
  train::rmsnorm_forward(h.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
  const auto dinp0 = randn(static_cast<size_t>(N * C), 24, 0.5f),
             dw0 = randn(static_cast<size_t>(C), 25, 0.5f);
  std::vector<float> dinp_ref = dinp0, dw_ref = dw0;
  train::rmsnorm_backward(dinp_ref.data(), dw_ref.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);

  DevF x_d(x), dout_d(dout), w_d(w), rstd_d(rstd), dinp(dinp0), dw(dw0);
  Dev<double> partial(static_cast<size_t>(k::kDweightChunks * C));
  k::rmsnorm_backward(dinp.p, true, dout_d.p, x_d.p, w_d.p, rstd_d.p, N, C, nullptr);
  EXPECT_LT(rel_l2(dinp.host(), dinp_ref), 1e-6) << "accumulate";
  std::vector<float> fresh(static_cast<size_t>(N * C));
  for (size_t i = 0; i < fresh.size(); ++i) fresh[i] = dinp_ref[i] - dinp0[i];
  k::rmsnorm_backward(dinp.p, false, dout_d.p, x_d.p, w_d.p, rstd_d.p, N, C, nullptr);
  EXPECT_LT(rel_l2(dinp.host(), fresh), 1e-6) << "overwrite";
  k::rmsnorm_dweight(dw.p, partial.p, dout_d.p, x_d.p, rstd_d.p, N, C, nullptr);
  EXPECT_LT(rel_l2(dw.host(), dw_ref), 1e-6) << "dweight";
}

TEST(CudaKernels, GatedNormBackwardAndDweightForBothActivations) {
  SKIP_WITHOUT_GPU();
  const int64_t N = 40, F = 300;
  const auto gu = randn(static_cast<size_t>(N * 2 * F), 26, 1.f),
             dffn = randn(static_cast<size_t>(N * F), 27, 1.f);
  const auto w = positive(static_cast<size_t>(F), 28), s_row = positive(static_cast<size_t>(N), 29);
  const std::vector<float> eff2 = {0.02f, 0.015f};
  DevF gu_d(gu), dffn_d(dffn), w_d(w), s_d(s_row), eff_d(eff2);
  Dev<double> partial(static_cast<size_t>(k::kDweightChunks * F));
  for (const bool relu2 : {true, false}) {
    SCOPED_TRACE(relu2 ? "relu2" : "silu");
    // Reference: h = act(gate) * up, ffn_sub_norm's backward to dh, then the gated activation's.
    std::vector<float> h(static_cast<size_t>(N * F)), out(static_cast<size_t>(N * F)),
        rstd(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n)
      train::gated_act_forward(h.data() + n * F, gu.data() + n * 2 * F, gu.data() + n * 2 * F + F, F, relu2);
    train::rmsnorm_forward(out.data(), rstd.data(), h.data(), w.data(), N, F, 1e-5f);
    std::vector<float> dh(static_cast<size_t>(N * F)), dw_ref(static_cast<size_t>(F)),
        dgate(static_cast<size_t>(N * F)), dup(static_cast<size_t>(N * F));
    train::rmsnorm_backward(dh.data(), dw_ref.data(), dffn.data(), h.data(), w.data(), rstd.data(), N, F);
    for (int64_t n = 0; n < N; ++n)
      train::gated_act_backward(dgate.data() + n * F, dup.data() + n * F, dh.data() + n * F,
                                gu.data() + n * 2 * F, gu.data() + n * 2 * F + F, F, relu2);
    std::vector<float> want_b(static_cast<size_t>(N * 2 * F)), want_s(static_cast<size_t>(N * 2 * F));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < F; ++i) {
        const float dg = dgate[size_t(n * F + i)], du = dup[size_t(n * F + i)],
                    inv_s = 1.f / s_row[size_t(n)];
        want_b[size_t(n * 2 * F + i)] = dg * eff2[0];
        want_b[size_t(n * 2 * F + F + i)] = du * eff2[1];
        want_s[size_t(n * 2 * F + i)] = dg * inv_s;
        want_s[size_t(n * 2 * F + F + i)] = du * inv_s;
      }
    DevF rstd_d(rstd), dw(static_cast<size_t>(F));
    DevBf dyb(static_cast<size_t>(N * 2 * F)), dys(static_cast<size_t>(N * 2 * F));
    k::gated_norm_backward(bf(dyb), bf(dys), dffn_d.p, gu_d.p, w_d.p, rstd_d.p, eff_d.p, s_d.p, N, F, relu2,
                           nullptr);
    expect_bf16_close(dyb.host(), want_b, "dyb");
    expect_bf16_close(dys.host(), want_s, "dys");
    k::gated_rmsnorm_dweight(dw.p, partial.p, dffn_d.p, gu_d.p, rstd_d.p, N, F, relu2, nullptr);
    EXPECT_LT(rel_l2(dw.host(), dw_ref), 1e-6) << "dweight";
  }
}

TEST(CudaKernels, CrossEntropyLossesAndGradientsWithIgnoredRows) {
  SKIP_WITHOUT_GPU();
  const int64_t rows = 6, V = 1000;
  const auto logits = randn(static_cast<size_t>(rows * V), 30, 3.f);
  const std::vector<int32_t> targets = {5, 999, kIgnoreTarget, 0, 512, kIgnoreTarget};
  std::vector<float> loss_ref(static_cast<size_t>(rows)), dl_ref(static_cast<size_t>(rows * V));
  const int64_t counted =
      train::crossentropy_forward(loss_ref.data(), logits.data(), targets.data(), rows, V);
  ASSERT_EQ(counted, 4);
  const float dloss = 1.f / float(counted);
  train::crossentropy_softmax_backward(dl_ref.data(), logits.data(), targets.data(), dloss, rows, V);
  DevF logits_d(logits), losses(static_cast<size_t>(rows)), dlogits(static_cast<size_t>(rows * V));
  Dev<int32_t> targets_d(targets);
  k::crossentropy(losses.p, dlogits.p, logits_d.p, targets_d.p, rows, V, dloss, nullptr);
  const auto l = losses.host();
  EXPECT_LT(rel_l2(l, loss_ref), 1e-6);
  EXPECT_EQ(l[2], 0.f);
  EXPECT_EQ(l[5], 0.f);
  const auto d = dlogits.host();
  EXPECT_LT(rel_l2(d, dl_ref), 1e-5);
  for (int64_t i = 0; i < V; ++i) ASSERT_EQ(d[size_t(2 * V + i)], 0.f) << "an ignored row has no gradient";
  // In place (dlogits = logits) and without losses: the same gradient.
  k::crossentropy(nullptr, logits_d.p, logits_d.p, targets_d.p, rows, V, dloss, nullptr);
  expect_same_bits(logits_d.host(), d, "in place");
}

}  // namespace
}  // namespace tl::cuda
