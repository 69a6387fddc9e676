// Per-op gradient checks of src/train/ops: every backward against central finite differences in double
// (quantizers off: a smooth function), the quantizers against model/quant.hpp, and the straight-through
// estimator of the quantized linear checked as the identity it is.
//
// Each check uses the scalar loss L = sum(wout * out) for a fixed random wout, so dout = wout.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/rng.hpp"
#include "cpu/forward.hpp"
#include "fd_util.hpp"
#include "model/quant.hpp"
#include "train/ops.hpp"

namespace tl::train {
namespace {

using test::check_all;
using test::dot;
using test::GradCheck;
using test::randn;
using Vec = std::vector<double>;

TEST(TrainOps, EmbeddingGradient) {
  Rng rng(1);
  const int64_t V = 7, C = 5, N = 6;
  const std::vector<int32_t> tok = {3, 0, 3, 6, 1, 3};  // repeats: backward must scatter-ADD
  Vec table = randn(size_t(V * C), rng), wout = randn(size_t(N * C), rng), out(size_t(N * C));
  auto loss = [&] {
    embedding_forward(out.data(), tok.data(), table.data(), N, C);
    return dot(out, wout);
  };
  loss();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < C; ++i) EXPECT_EQ(out[size_t(n * C + i)], table[size_t(tok[size_t(n)] * C + i)]);
  Vec dtable(table.size(), 0.0);
  embedding_backward(dtable.data(), wout.data(), tok.data(), N, C);
  GradCheck gc;
  check_all(table.data(), dtable.data(), table.size(), loss, gc, "dtable");
}

TEST(TrainOps, RmsNormGradient) {
  Rng rng(2);
  const int64_t N = 3, C = 8;
  Vec x = randn(size_t(N * C), rng), w(static_cast<size_t>(C)), wout = randn(size_t(N * C), rng);
  for (auto& v : w) v = 0.5 + rng.uniform();
  Vec out(x.size()), rstd(static_cast<size_t>(N));
  auto loss = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
    return dot(out, wout);
  };
  loss();
  Vec dx(x.size(), 0.0), dw(w.size(), 0.0);
  rmsnorm_backward(dx.data(), dw.data(), wout.data(), x.data(), w.data(), rstd.data(), N, C);
  GradCheck gc;
  check_all(x.data(), dx.data(), x.size(), loss, gc, "dx");
  check_all(w.data(), dw.data(), w.size(), loss, gc, "dw");
  std::printf("rmsnorm: max rel err %.2e over %lld entries\n", gc.max_rel, (long long)gc.checked);
}

TEST(TrainOps, RmsNormFloatMatchesInference) {
  // The float forward gives the inference forward's bits (same double sum, same fp32 rounding).
  Rng rng(3);
  const int64_t N = 4, C = 40;
  std::vector<float> x(size_t(N * C)), w(static_cast<size_t>(C)), a(x.size()), b(x.size()),
      rstd(static_cast<size_t>(N));
  for (auto& v : x) v = float(rng.normal());
  for (auto& v : w) v = float(0.5 + rng.uniform());
  rmsnorm_forward(a.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
  tl::rmsnorm_forward(b.data(), x.data(), w.data(), N, C, 1e-5f);
  EXPECT_EQ(a, b);
}

TEST(TrainOps, LinearGradientQuantOff) {
  Rng rng(4);
  const int64_t N = 4, IC = 6, OC = 5;
  Vec x = randn(size_t(N * IC), rng), W = randn(size_t(OC * IC), rng), wout = randn(size_t(N * OC), rng);
  Vec out(size_t(N * OC)), xe(x.size());
  auto loss = [&] {
    quant_linear_forward(out.data(), xe.data(), static_cast<double*>(nullptr), x.data(), W.data(), N, IC, OC,
                         QuantFlags{false, false});
    return dot(out, wout);
  };
  loss();
  Vec dx(x.size(), 0.0), dW(W.size(), 0.0);
  quant_linear_backward(dx.data(), dW.data(), wout.data(), xe.data(), W.data(), N, IC, OC);
  GradCheck gc;
  check_all(x.data(), dx.data(), x.size(), loss, gc, "dx");
  check_all(W.data(), dW.data(), W.size(), loss, gc, "dW");
}

TEST(TrainOps, BackwardAccumulates) {
  // Every backward adds into its outputs (llm.c convention): running it on a non-zero buffer adds.
  Rng rng(5);
  const int64_t N = 3, IC = 4, OC = 2;
  Vec x = randn(size_t(N * IC), rng), W = randn(size_t(OC * IC), rng), g = randn(size_t(N * OC), rng);
  Vec dx1(x.size(), 0.0), dW1(W.size(), 0.0);
  matmul_backward(dx1.data(), dW1.data(), g.data(), x.data(), W.data(), N, IC, OC);
  Vec dx2(x.size(), 1.0), dW2(W.size(), -2.0);
  matmul_backward(dx2.data(), dW2.data(), g.data(), x.data(), W.data(), N, IC, OC);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(dx2[i], dx1[i] + 1.0, 1e-12);
  for (size_t i = 0; i < W.size(); ++i) EXPECT_NEAR(dW2[i], dW1[i] - 2.0, 1e-12);
}

TEST(TrainOps, RopeGradientAndInferenceParity) {
  Rng rng(6);
  const int64_t B = 2, T = 5, N = B * T, nh = 3, hd = 8;
  const RopeTable tab = make_rope_table(10000.0, hd, 16);
  const Vec cos(tab.cos.begin(), tab.cos.end()), sin(tab.sin.begin(), tab.sin.end());
  Vec x = randn(size_t(N * nh * hd), rng), wout = randn(x.size(), rng), y(x.size());
  auto loss = [&] {
    y = x;
    rope_forward(y.data(), N, T, nh, hd, cos.data(), sin.data());
    return dot(y, wout);
  };
  loss();
  Vec dx = wout;  // rope_backward maps d(rotated) to d(input) in place
  rope_backward(dx.data(), N, T, nh, hd, cos.data(), sin.data());
  GradCheck gc;
  check_all(x.data(), dx.data(), x.size(), loss, gc, "dx");

  // float: the same bits as the inference rope at each row's position n % T
  std::vector<float> xf(x.begin(), x.end()), ref = xf;
  rope_forward(xf.data(), N, T, nh, hd, tab.cos.data(), tab.sin.data());
  for (int64_t n = 0; n < N; ++n)
    tl::rope_forward(ref.data() + n * nh * hd, nh, hd, tab.cos_at(n % T), tab.sin_at(n % T));
  EXPECT_EQ(xf, ref);
}

void attention_fd(int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t hd, uint64_t seed) {
  Rng rng(seed);
  Vec q = randn(size_t(B * T * NH * hd), rng), k = randn(size_t(B * T * NKV * hd), rng),
      v = randn(k.size(), rng);
  Vec wout = randn(q.size(), rng), out(q.size()), lse(size_t(B * T * NH));
  auto loss = [&] {
    attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, hd);
    return dot(out, wout);
  };
  loss();
  Vec dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
  attention_backward(dq.data(), dk.data(), dv.data(), wout.data(), q.data(), k.data(), v.data(), lse.data(),
                     B, T, NH, NKV, hd);
  GradCheck gc;
  check_all(q.data(), dq.data(), q.size(), loss, gc, "dq");
  check_all(k.data(), dk.data(), k.size(), loss, gc, "dk");
  check_all(v.data(), dv.data(), v.size(), loss, gc, "dv");
  std::printf("attention NH=%lld NKV=%lld: max rel err %.2e over %lld entries\n", (long long)NH,
              (long long)NKV, gc.max_rel, (long long)gc.checked);
}

TEST(TrainOps, AttentionGradientGqa) {
  attention_fd(2, 5, 4, 2, 4, 7);
}
TEST(TrainOps, AttentionGradientMha) {
  attention_fd(1, 6, 2, 2, 6, 8);
}
TEST(TrainOps, AttentionGradientMqa) {
  attention_fd(2, 4, 3, 1, 4, 9);
}

TEST(TrainOps, AttentionForwardMatchesInference) {
  Rng rng(10);
  const int64_t B = 2, T = 7, NH = 4, NKV = 2, hd = 8;
  std::vector<float> q(size_t(B * T * NH * hd)), k(size_t(B * T * NKV * hd)), v(k.size());
  for (auto* t : {&q, &k, &v})
    for (auto& x : *t) x = float(rng.normal());
  std::vector<float> a(q.size()), b(q.size()), lse(size_t(B * T * NH));
  attention_forward(a.data(), lse.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, hd);
  tl::attention_forward(b.data(), q.data(), k.data(), v.data(), B, T, T, 0, NH, NKV, hd);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5f) << i;
}

void gated_fd(bool relu2, uint64_t seed) {
  Rng rng(seed);
  const int64_t n = 40;
  Vec gate = randn(size_t(n), rng), up = randn(size_t(n), rng), wout = randn(size_t(n), rng),
      out(static_cast<size_t>(n));
  auto loss = [&] {
    gated_act_forward(out.data(), gate.data(), up.data(), n, relu2);
    return dot(out, wout);
  };
  loss();
  Vec dg(size_t(n), 0.0), du(size_t(n), 0.0);
  gated_act_backward(dg.data(), du.data(), wout.data(), gate.data(), up.data(), n, relu2);
  GradCheck gc;
  check_all(gate.data(), dg.data(), gate.size(), loss, gc, "dgate");
  check_all(up.data(), du.data(), up.size(), loss, gc, "dup");
}

TEST(TrainOps, ReluSquaredGradient) {
  gated_fd(true, 11);
}
TEST(TrainOps, SiluGradient) {
  gated_fd(false, 12);
}

TEST(TrainOps, ResidualGradient) {
  Rng rng(13);
  const int64_t n = 10;
  Vec a = randn(size_t(n), rng), b = randn(size_t(n), rng), wout = randn(size_t(n), rng),
      out(static_cast<size_t>(n));
  auto loss = [&] {
    residual_forward(out.data(), a.data(), b.data(), n);
    return dot(out, wout);
  };
  loss();
  Vec da(size_t(n), 0.0), db(size_t(n), 0.0);
  residual_backward(da.data(), db.data(), wout.data(), n);
  GradCheck gc;
  check_all(a.data(), da.data(), a.size(), loss, gc, "da");
  check_all(b.data(), db.data(), b.size(), loss, gc, "db");
}

TEST(TrainOps, CrossEntropyGradientWithIgnore) {
  Rng rng(14);
  const int64_t N = 5, V = 6;
  const std::vector<int32_t> tgt = {2, kIgnoreTarget, 0, 5, kIgnoreTarget};
  Vec logits = randn(size_t(N * V), rng, 2.0), losses(static_cast<size_t>(N));
  int64_t count = 0;
  auto loss = [&] {
    count = crossentropy_forward(losses.data(), logits.data(), tgt.data(), N, V);
    double s = 0;
    for (double l : losses) s += l;
    return s / double(count);
  };
  const double L = loss();
  EXPECT_EQ(count, 3);
  // By hand: mean of -log softmax(row)[target] over the counted rows.
  double ref = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (tgt[size_t(n)] < 0) continue;
    double z = 0;
    for (int64_t i = 0; i < V; ++i) z += std::exp(logits[size_t(n * V + i)]);
    ref += std::log(z) - logits[size_t(n * V + tgt[size_t(n)])];
  }
  EXPECT_NEAR(L, ref / 3, 1e-12);
  Vec dlogits(logits.size(), 7.0);  // written, not accumulated
  crossentropy_softmax_backward(dlogits.data(), logits.data(), tgt.data(), 1.0 / double(count), N, V);
  for (int64_t i = 0; i < V; ++i) EXPECT_EQ(dlogits[size_t(1 * V + i)], 0.0);  // ignored row
  GradCheck gc;
  check_all(logits.data(), dlogits.data(), logits.size(), loss, gc, "dlogits");
}

TEST(TrainOps, QuantizersMatchModelQuant) {
  Rng rng(15);
  const int64_t OC = 9, IC = 33, N = 5;
  std::vector<float> W(size_t(OC * IC)), x(size_t(N * IC));
  for (auto& v : W) v = float(rng.normal() * 0.05);
  for (auto& v : x) v = float(rng.normal() * 3);
  // weights: absmean alpha and codes exactly as model/quant.hpp
  const float alpha = absmean_alpha(W.data(), W.size());
  EXPECT_EQ(alpha, tl::absmean_scale(W.data(), W.size()));
  std::vector<float> we(W.size());
  std::vector<int8_t> codes(W.size());
  weight_quant_forward(we.data(), W.data(), W.size(), alpha);
  tl::ternarize(W.data(), W.size(), alpha, codes.data());
  const float inv = 1.0f / alpha;
  for (size_t i = 0; i < W.size(); ++i) EXPECT_EQ(we[i], float(codes[i]) / inv) << i;
  // ties round half to even: w*inv = 0.5 -> 0, 1.5 -> 2 -> clamp 1, -0.5 -> -0
  const float tw[4] = {1.0f, 3.0f, -1.0f, 0.9f}, expect[4] = {0.0f, 2.0f, -0.0f, 0.0f};
  float to[4];
  weight_quant_forward(to, tw, 4, 2.0f);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(to[i], expect[i]) << i;
  // activations: the fake-quantized values and the int8 codes of quantize_activation_row
  std::vector<float> xe(x.size());
  act_quant_forward(xe.data(), x.data(), N, IC);
  std::vector<int8_t> q(static_cast<size_t>(IC));
  for (int64_t n = 0; n < N; ++n) {
    const float s = tl::quantize_activation_row(x.data() + n * IC, size_t(IC), q.data());
    for (int64_t i = 0; i < IC; ++i) EXPECT_EQ(xe[size_t(n * IC + i)], float(q[size_t(i)]) / s);
  }
  // double: the same codes on these inputs (no value is near a rounding tie)
  const std::vector<double> Wd(W.begin(), W.end()), xd(x.begin(), x.end());
  std::vector<double> wed(Wd.size()), xed(xd.size());
  weight_quant_forward(wed.data(), Wd.data(), Wd.size(), absmean_alpha(Wd.data(), Wd.size()));
  act_quant_forward(xed.data(), xd.data(), N, IC);
  for (size_t i = 0; i < we.size(); ++i) EXPECT_NEAR(wed[i], we[i], 1e-6 * std::fabs(we[i]) + 1e-12);
  for (size_t i = 0; i < xe.size(); ++i) EXPECT_NEAR(xed[i], xe[i], 1e-5 * std::fabs(xe[i]) + 1e-9);
}

// The STE of a BitLinear, numerically: with both quantizers on, the gradients equal those of a PLAIN linear
// evaluated at the quantized operands (x_eff, W_eff), obtained by finite differences of that plain linear.
// That is the identity pass-through: dX = dY . W_eff and dW = dY^T . x_eff.
TEST(TrainOps, QuantLinearStraightThrough) {
  Rng rng(16);
  const int64_t N = 4, IC = 12, OC = 5;
  Vec x = randn(size_t(N * IC), rng), W = randn(size_t(OC * IC), rng, 0.1), wout = randn(size_t(N * OC), rng);
  Vec out(size_t(N * OC)), xe(x.size()), We(W.size());
  const double alpha = quant_linear_forward(out.data(), xe.data(), We.data(), x.data(), W.data(), N, IC, OC,
                                            QuantFlags{true, true});
  EXPECT_DOUBLE_EQ(alpha, absmean_alpha(W.data(), W.size()));
  // the quantizers did act, and the output is the plain linear of the quantized operands
  double dx_ = 0, dw_ = 0;
  for (size_t i = 0; i < x.size(); ++i) dx_ = std::max(dx_, std::fabs(xe[i] - x[i]));
  for (size_t i = 0; i < W.size(); ++i) dw_ = std::max(dw_, std::fabs(We[i] - W[i]));
  EXPECT_GT(dx_, 1e-4);
  EXPECT_GT(dw_, 1e-3);
  Vec ref(out.size());
  matmul_forward(ref.data(), xe.data(), We.data(), N, IC, OC);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ref[i], 1e-12);

  Vec dx(x.size(), 0.0), dW(W.size(), 0.0);
  quant_linear_backward(dx.data(), dW.data(), wout.data(), xe.data(), We.data(), N, IC, OC);
  // L(x', W') = sum(wout * (x' . W'^T)), a plain linear at (x_eff, W_eff)
  Vec xp = xe, Wp = We, o(out.size());
  auto plain = [&] {
    matmul_forward(o.data(), xp.data(), Wp.data(), N, IC, OC);
    return dot(o, wout);
  };
  GradCheck gc;
  check_all(Wp.data(), dW.data(), Wp.size(), plain, gc, "dW (STE)");
  check_all(xp.data(), dx.data(), xp.size(), plain, gc, "dx (STE)");
}

}  // namespace
}  // namespace tl::train
