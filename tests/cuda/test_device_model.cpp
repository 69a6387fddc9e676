// The CUDA model (src/cuda/device_model) against the CPU reference train::TrainModel<float>: logits, the mean
// and per-row losses, every gradient tensor, the weight scales, for each weight-quantizer mode, ActQuant off,
// SiLU, an untied LM head, GQA, B > 1 with T not a power of two, head_dim 128 at T = 128, activation
// recomputation; gradient accumulation, zero_grad, the parameter round trip and the refusals.
//
// Tolerances (relative L2 error ||gpu - cpu|| / ||cpu|| unless stated; per-row losses absolute), and why:
//   - quantizers on: the forward GEMMs multiply exact integer codes (bf16) with fp32 accumulation, so the
//     body matches to fp32 rounding; the LM head is TF32 (2^-11 relative operand rounding); backward GEMM
//     operands (output gradients) are bf16 (2^-9). Without an ActQuant code flip the errors are small
//     (logits ~3e-4, gradients ~5e-3). But the CPU sums its fp32 GEMMs in another order, so a value within
//     ~1e-7 of a rounding boundary can quantize to a neighbouring int8 code (one step = max|x|/127); on
//     these small random models (weights sd 0.3, sharp attention) such a flip moves logits by ~5e-3 and
//     gradients by ~1e-2. Tolerances: logits 1.5e-2, mean loss 1e-3, rows 0.1, gradients 2.5e-2.
//   - ActQuant off: GEMM inputs are bf16-rounded real values (2^-9 noise at every linear): looser.
//   - weight quantizer off with ActQuant on: bf16-rounded weights, and that 2^-9 noise then flips many
//     ActQuant codes (a full code step each): loosest (logits 6e-2, gradients 0.25).
//   - both off: bf16 noise only, amplified by the sharp attention of these random models.
// Every test skips itself where no CUDA device is usable.
#include <gtest/gtest.h>

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../common/model_util.hpp"
#include "../common/test_util.hpp"
#include "core/rng.hpp"
#include "cuda/device_model.hpp"
#include "cuda_test_util.hpp"
#include "model/quant.hpp"
#include "train/train_model.hpp"

namespace tl::cuda {
namespace {

using cuda_test::rel_l2;
using test::error_of;
using WeightQuantMode = WeightQuant;

BitNetConfig tiny_config() {
  BitNetConfig c = config_preset("tiny");  // hidden 64, 2 layers, 4 heads of 16, 2 kv heads, vocab 512
  c.rope_theta = 10000;
  return c;
}

// Random weights with a larger spread than the default init (O(1) activations) and norm gains away from 1.
Model random_model(const BitNetConfig& c, uint64_t seed, double sd = 0.3) {
  BitNetConfig cc = c;
  cc.initializer_range = sd;
  Model m = make_model(cc);
  init_random(m, seed);
  m.config.initializer_range = c.initializer_range;
  test::spread_norm_gains(m, seed + 1);
  return m;
}

// Next-token targets, the last position of each row ignored and one more ignored.
std::vector<int32_t> shifted_targets(const std::vector<int32_t>& tok, int64_t B, int64_t T) {
  std::vector<int32_t> t(tok.size(), kIgnoreTarget);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i + 1 < T; ++i) t[size_t(b * T + i)] = tok[size_t(b * T + i + 1)];
  if (T > 2) t[1] = kIgnoreTarget;
  return t;
}

struct Tol {
  double logits, loss, row_loss, grad;
};
// Measured on an H200 (deterministic run to run): the first number in each comment is the largest error seen
// over the quantized tests without an ActQuant code flip, the second with one.
const Tol kQuantTol{1.5e-2, 1e-3, 0.1, 2.5e-2};  // logits 3e-4 / 7.3e-3, loss 2e-5 / 2.2e-4, rows 3e-3 /
                                                 // 6e-2, grads 4.6e-3 / 1.6e-2
const Tol kActOffTol{2e-2, 1e-3, 0.2, 4e-2};     // measured 9e-3, 2.1e-4, 0.11, 2.1e-2
const Tol kWeightOffTol{6e-2, 5e-3, 0.3, 0.25};  // measured 3.7e-2, 2.6e-3, 0.17, 0.16
const Tol kBothOffTol{3e-2, 1e-3, 0.15, 0.12};   // measured 1.6e-2, 1.2e-5, 7.2e-2, 7.5e-2

struct Result {
  double loss_rel = 0, logits = 0, row_loss_max = 0, grad_max = 0;
  std::string worst;
};

// Forward + backward on the CPU reference and on the GPU; compares everything.
Result compare(Model& model, TrainOptions qo, int64_t B, int64_t T, const Tol& tol, uint64_t seed,
               bool recompute = false, bool keep_logits = true) {
  const int64_t N = B * T, V = model.config.vocab_size;
  const auto tok = test::random_tokens(N, V, seed);
  const auto tgt = shifted_targets(tok, B, T);

  DeviceModelOptions o;
  o.quant = qo;
  o.max_tokens = N + 3;
  o.keep_logits = keep_logits;
  o.recompute = recompute;
  DeviceModel dm(model, o);
  const double gl = dm.forward(tok, tgt, B, T);
  const std::vector<float> glogits = keep_logits ? dm.logits() : std::vector<float>{};
  const std::vector<float> glosses = dm.losses();
  const std::vector<float> gscales = dm.weight_scales();
  dm.backward();
  std::vector<float> gg(dm.num_params());
  dm.download_grads(gg);

  train::TrainModel<float> cpu(model, qo);
  const double cl = cpu.forward(tok, tgt, B, T);
  cpu.backward();

  Result r;
  r.loss_rel = std::fabs(gl - cl) / std::fabs(cl);
  EXPECT_LT(r.loss_rel, tol.loss) << "gpu loss " << gl << " cpu loss " << cl;
  EXPECT_EQ(dm.num_targets(), cpu.num_targets());
  if (keep_logits) {
    r.logits = rel_l2(glogits.data(), cpu.logits().data(), size_t(N * V));
    EXPECT_LT(r.logits, tol.logits);
  }
  for (int64_t n = 0; n < N; ++n) {
    // The CPU's per-row losses: recomputed from its logits (TrainModel does not expose them).
    double cpu_row = 0;
    if (tgt[size_t(n)] != kIgnoreTarget) {
      const float* x = cpu.logits().data() + n * V;
      double mx = -INFINITY, s = 0;
      for (int64_t i = 0; i < V; ++i) mx = std::max(mx, double(x[i]));
      for (int64_t i = 0; i < V; ++i) s += std::exp(double(x[i]) - mx);
      cpu_row = mx + std::log(s) - double(x[tgt[size_t(n)]]);
    } else {
      EXPECT_EQ(glosses[size_t(n)], 0.f);
    }
    r.row_loss_max = std::max(r.row_loss_max, std::fabs(double(glosses[size_t(n)]) - cpu_row));
  }
  EXPECT_LT(r.row_loss_max, tol.row_loss);
  const auto cs = cpu.weight_scales();
  for (size_t i = 0; i < cs.size(); ++i) EXPECT_EQ(gscales[i], cs[i]) << "weight scale " << i;
  for (const auto& v : model.views) {
    const double e = rel_l2(gg.data() + v.offset, cpu.grads().data() + v.offset, v.numel);
    if (e > r.grad_max) {
      r.grad_max = e;
      r.worst = v.name;
    }
    EXPECT_LT(e, tol.grad) << "gradient of " << v.name;
  }
  std::printf(
      "  [errors] %s: loss rel %.2e | logits rel L2 %.2e | row loss max abs %.2e | grad rel L2 max %.2e "
      "(%s)\n",
      ::testing::UnitTest::GetInstance()->current_test_info()->name(), r.loss_rel, r.logits, r.row_loss_max,
      r.grad_max, r.worst.c_str());
  return r;
}

TEST(CudaDeviceModel, DescribeNamesTheDeviceItsArchitectureAndMemory) {
  SKIP_WITHOUT_GPU();
  const std::string d = device_description();
  cudaDeviceProp p{};
  ASSERT_EQ(cudaGetDeviceProperties(&p, 0), cudaSuccess);
  EXPECT_EQ(d.rfind(p.name, 0), 0u) << d;
  EXPECT_NE(d.find(fmt::format("(sm_{}{}, ", p.major, p.minor)), std::string::npos) << d;
  EXPECT_NE(d.find(fmt::format("{:.1f} GiB)", double(p.totalGlobalMem) / double(size_t(1) << 30))),
            std::string::npos)
      << d;
  EXPECT_GT(p.totalGlobalMem, size_t(1) << 30);
}

TEST(CudaDeviceModel, AbsmeanMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 11);
  compare(m, TrainOptions{}, 2, 13, kQuantTol, 5);
}

TEST(CudaDeviceModel, AbsmeanNoKeptLogits) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 12);
  compare(m, TrainOptions{}, 3, 7, kQuantTol, 6, false, false);
}

TEST(CudaDeviceModel, LongerSequenceSingleRow) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 13);
  compare(m, TrainOptions{}, 1, 77, kQuantTol, 7);  // several key and query tiles
}

TEST(CudaDeviceModel, HeadDim128AtT128) {
  SKIP_WITHOUT_GPU();
  BitNetConfig c = tiny_config();
  c.hidden_size = 256;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 128;
  c.intermediate_size = 384;
  c.vocab_size = 1024;
  Model m = random_model(c, 14, 0.1);
  compare(m, TrainOptions{}, 2, 128, kQuantTol, 8);
}

TEST(CudaDeviceModel, FixedScales) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 15);
  for (const auto& v : m.views)
    if (v.kind == ParamKind::Linear)
      m.fixed_scale[v.name] = absmean_scale(m.params.data() + v.offset, v.numel) * 1.3f;
  compare(m, TrainOptions{WeightQuantMode::Fixed, true}, 2, 9, kQuantTol, 9);
}

TEST(CudaDeviceModel, RptFixedScales) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 16);
  Rng rng(3);
  for (const auto& v : m.views)
    if (v.kind == ParamKind::Linear) {
      m.fixed_scale[v.name] = absmean_scale(m.params.data() + v.offset, v.numel);
      for (size_t i = 0; i < v.numel; ++i)  // prune a third (scales captured before pruning)
        if (rng.uniform() < 0.33) m.params[v.offset + i] = 0.f;
    }
  compare(m, TrainOptions{WeightQuantMode::RptFixed, true}, 2, 9, kQuantTol, 10);
}

TEST(CudaDeviceModel, WeightQuantOff) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 17);
  compare(m, TrainOptions{WeightQuantMode::Off, true}, 2, 9, kWeightOffTol, 11);
}

TEST(CudaDeviceModel, ActQuantOff) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 18);
  compare(m, TrainOptions{WeightQuantMode::Absmean, false}, 2, 9, kActOffTol, 12);
}

TEST(CudaDeviceModel, BothQuantizersOff) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 19);
  compare(m, TrainOptions{WeightQuantMode::Off, false}, 2, 9, kBothOffTol, 13);
}

TEST(CudaDeviceModel, SiluUntiedHead) {
  SKIP_WITHOUT_GPU();
  BitNetConfig c = tiny_config();
  c.hidden_act = Activation::Silu;
  c.tie_word_embeddings = false;
  Model m = random_model(c, 20);
  compare(m, TrainOptions{}, 2, 11, kQuantTol, 14);
}

TEST(CudaDeviceModel, MultiHeadAttentionNoGqa) {
  SKIP_WITHOUT_GPU();
  BitNetConfig c = tiny_config();
  c.num_key_value_heads = 4;
  Model m = random_model(c, 21);
  compare(m, TrainOptions{}, 2, 10, kQuantTol, 15);
}

TEST(CudaDeviceModel, RecomputeMatchesCpuAndSaved) {
  SKIP_WITHOUT_GPU();
  BitNetConfig c = tiny_config();
  c.num_hidden_layers = 3;
  Model m = random_model(c, 22);
  compare(m, TrainOptions{}, 2, 12, kQuantTol, 16, true);
  // recompute vs saved activations on the GPU: the same kernels on the same inputs.
  const auto tok = test::random_tokens(24, c.vocab_size, 16);
  const auto tgt = shifted_targets(tok, 2, 12);
  std::vector<float> g[2];
  for (int rc = 0; rc < 2; ++rc) {
    DeviceModelOptions o;
    o.max_tokens = 24;
    o.recompute = rc == 1;
    DeviceModel dm(m, o);
    dm.forward(tok, tgt, 2, 12);
    dm.backward();
    g[rc].resize(dm.num_params());
    dm.download_grads(g[rc]);
  }
  EXPECT_LT(rel_l2(g[1].data(), g[0].data(), g[0].size()), 1e-6);
}

TEST(CudaDeviceModel, AccumulationZeroGradAndRoundTrip) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 23);
  const int64_t B = 2, T = 9, N = B * T;
  const auto tok = test::random_tokens(N, m.config.vocab_size, 17);
  const auto tgt = shifted_targets(tok, B, T);
  DeviceModelOptions o;
  o.max_tokens = 32;
  DeviceModel dm(m, o);
  const size_t P = dm.num_params();

  std::vector<float> p(P);
  dm.download_params(p);
  EXPECT_EQ(p, m.params);  // exact round trip

  const double l1 = dm.forward(tok, tgt, B, T);
  dm.backward();
  std::vector<float> g1(P), g2(P);
  dm.download_grads(g1);
  dm.backward();  // accumulates: 2x (the second pass recomputes the logits)
  dm.download_grads(g2);
  for (auto& v : g1) v *= 2;
  EXPECT_LT(rel_l2(g2.data(), g1.data(), P), 1e-6);

  dm.zero_grad();
  dm.download_grads(g2);
  for (float v : g2) ASSERT_EQ(v, 0.f);

  // forward_backward = forward + backward (one fewer LM-head GEMM per chunk).
  dm.zero_grad();
  EXPECT_EQ(dm.forward_backward(tok, tgt, B, T), l1);
  dm.download_grads(g2);
  for (auto& v : g1) v *= 0.5f;
  EXPECT_LT(rel_l2(g2.data(), g1.data(), P), 1e-6);
  dm.zero_grad();

  // A second forward gives the same loss; uploading other parameters changes it as the CPU says.
  EXPECT_EQ(dm.forward(tok, tgt, B, T), l1);
  for (auto& v : p) v *= 0.9f;
  dm.upload_params(p);
  std::vector<float> p2(P);
  dm.download_params(p2);
  EXPECT_EQ(p2, p);
  const double lg = dm.forward(tok, tgt, B, T);
  m.params = p;
  train::TrainModel<float> cpu(m);
  const double lc = cpu.forward(tok, tgt, B, T);
  EXPECT_LT(std::fabs(lg - lc) / lc, 1e-3);

  // Forward without targets: NaN, and backward refused.
  EXPECT_TRUE(std::isnan(dm.forward(tok, {}, B, T)));
  EXPECT_NE(error_of([&] { dm.backward(); }).find("forward"), std::string::npos);
  EXPECT_GT(dm.memory_bytes(), P * 8);
}

// constant_weights (evaluation): codes built once and reused give the same bits as rebuilding them every
// forward, for other tokens too; upload_params refreshes them; backward still works.
TEST(CudaDeviceModel, ConstantWeightsCacheTheCodes) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 29);
  const int64_t B = 2, T = 11, N = B * T;
  const auto tok1 = test::random_tokens(N, m.config.vocab_size, 3);
  const auto tok2 = test::random_tokens(N, m.config.vocab_size, 4);
  DeviceModelOptions o;
  o.max_tokens = N;
  DeviceModel plain(m, o);
  o.constant_weights = true;
  DeviceModel cached(m, o);
  for (const auto* tok : {&tok1, &tok2, &tok1}) {
    const auto tgt = shifted_targets(*tok, B, T);
    EXPECT_EQ(cached.forward(*tok, tgt, B, T), plain.forward(*tok, tgt, B, T));
    EXPECT_EQ(cached.losses(), plain.losses());
  }
  Model m2 = random_model(tiny_config(), 31);
  plain.upload_params(m2.params);
  cached.upload_params(m2.params);
  const auto tgt = shifted_targets(tok2, B, T);
  EXPECT_EQ(cached.forward(tok2, tgt, B, T), plain.forward(tok2, tgt, B, T));
  cached.backward();
  plain.backward();
  std::vector<float> g1(plain.num_params()), g2(plain.num_params());
  plain.download_grads(g1);
  cached.download_grads(g2);
  EXPECT_EQ(g1, g2);
}

TEST(CudaDeviceModel, LogitsWithoutTargets) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 24);
  const int64_t B = 1, T = 5;
  const auto tok = test::random_tokens(B * T, m.config.vocab_size, 18);
  DeviceModelOptions o;
  o.max_tokens = 8;
  o.keep_logits = true;
  DeviceModel dm(m, o);
  EXPECT_TRUE(std::isnan(dm.forward(tok, {}, B, T)));
  train::TrainModel<float> cpu(m);
  cpu.forward(tok, {}, B, T);
  const auto gl = dm.logits();
  EXPECT_LT(rel_l2(gl.data(), cpu.logits().data(), gl.size()), 1e-2);
}

TEST(CudaDeviceModel, Refusals) {
  SKIP_WITHOUT_GPU();
  Model m = random_model(tiny_config(), 25);
  DeviceModelOptions o;
  o.max_tokens = 16;
  DeviceModel dm(m, o);
  const int64_t V = m.config.vocab_size;
  auto tok = test::random_tokens(20, V, 19);
  EXPECT_NE(error_of([&] { dm.forward(tok, {}, 2, 10); }).find("max_tokens"), std::string::npos);
  tok.resize(8);
  tok[3] = int32_t(V);
  EXPECT_NE(error_of([&] { dm.forward(tok, {}, 2, 4); }).find("outside"), std::string::npos);
  tok[3] = -1;
  EXPECT_NE(error_of([&] { dm.forward(tok, {}, 2, 4); }).find("outside"), std::string::npos);
  tok[3] = 1;
  std::vector<int32_t> tgt(8, kIgnoreTarget);
  EXPECT_NE(error_of([&] { dm.forward(tok, tgt, 2, 4); }).find("ignored"), std::string::npos);
  tgt[0] = int32_t(V) + 5;
  EXPECT_NE(error_of([&] { dm.forward(tok, tgt, 2, 4); }).find("outside"), std::string::npos);
  EXPECT_NE(error_of([&] { dm.forward(tok, {}, 3, 2); }).find("tokens"), std::string::npos)
      << "size mismatch";
  EXPECT_NE(error_of([&] { dm.backward(); }).find("forward"), std::string::npos);
  EXPECT_NE(error_of([&] { dm.logits(); }).find("keep_logits"), std::string::npos);
  std::vector<float> wrong(3);
  EXPECT_NE(error_of([&] { dm.upload_params(wrong); }).find("expects"), std::string::npos);

  BitNetConfig c = tiny_config();
  c.max_position_embeddings = 8;
  Model m2 = random_model(c, 26);
  DeviceModelOptions o2;
  o2.max_tokens = 64;
  DeviceModel dm2(m2, o2);
  const auto tok2 = test::random_tokens(12, V, 20);
  EXPECT_NE(error_of([&] { dm2.forward(tok2, {}, 1, 12); }).find("max_position_embeddings"),
            std::string::npos);

  // Fixed quantization without fixed scales; max_tokens < 1.
  DeviceModelOptions o3;
  o3.max_tokens = 8;
  o3.quant.weight_quant = WeightQuantMode::Fixed;
  EXPECT_NE(error_of([&] { DeviceModel bad(m, o3); }).find("fixed scale"), std::string::npos);
  DeviceModelOptions o4;
  EXPECT_NE(error_of([&] { DeviceModel bad(m, o4); }).find("max_tokens"), std::string::npos);
}

}  // namespace
}  // namespace tl::cuda
