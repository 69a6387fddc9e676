// `criticality --device cuda` (cuda/criticality_runner, DeviceModel::block_forward) against the CPU
// reference on a tiny random model: every block's output from the same input, then whole measurements
// (clean statistics, the ε sweep, the FTLE, the null-model controls).
//
// Tolerances, and why. The GPU multiplies the same exact integer codes, but its RMSNorm, attention and scale
// products round in another order (~1e-7 relative), so now and then an int8 activation code sits on a
// rounding tie and flips to its neighbour (one step = max|x|/127 in one element of one row).
//   - block outputs: relative L2 1e-3 of the output (the residual stream, dominated by its input) and 1e-2
//     of the block's own contribution (output - input), which a few flipped codes move by ~1e-3.
//   - summary statistics: measured on the CPU by adding relative noise of 1e-7 .. 1e-5 to every block
//     output (fp32 rounding and beyond, flipping codes downstream), over 5 draws: mean BR moved <= 1e-5
//     relative, D_l <= 3.5e-4 relative, λ (study and sweep) <= 1.2e-3 absolute, the FTLE median (of 6
//     samples) <= 6e-3 absolute. Tolerances: BR 1e-4 relative, D_l 2e-3 relative, λ 2e-3 absolute (the
//     CRITICAL band is |λ| < 0.05), FTLE 2e-2 absolute — a GPU path that computed something else (another
//     quantizer, a wrong block, a lost renormalisation) misses these by orders of magnitude.
// Every test skips itself where no CUDA device is usable.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "../common/model_util.hpp"
#include "../common/test_util.hpp"
#include "analysis/criticality.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "cpu/forward.hpp"
#include "cuda/criticality_runner.hpp"
#include "cuda/device_model.hpp"
#include "cuda/inference.hpp"
#include "cuda_test_util.hpp"

namespace tl::cuda {
namespace {

using cuda_test::rel_l2;

constexpr double kBlockOutTol = 1e-3, kBlockCorrTol = 1e-2;
constexpr double kBrTol = 1e-4, kDTol = 2e-3, kLambdaTol = 2e-3, kFtleTol = 2e-2;

// Three layers, the default init (embeddings sd 0.02), norm gains away from 1.
Model criticality_model(uint64_t seed) {
  BitNetConfig c = config_preset("tiny");  // hidden 64, 4 heads of 16, 2 kv heads, vocab 512
  c.num_hidden_layers = 3;
  Model m = make_model(c);
  init_random(m, seed);
  test::spread_norm_gains(m, seed + 1);
  return m;
}

double rel_err(double gpu, double cpu) {
  return std::abs(gpu - cpu) / std::abs(cpu);
}

TEST(CudaCriticality, BlockOutputsMatchCpu) {
  SKIP_WITHOUT_GPU();
  const Model m = criticality_model(7);
  CpuModel cpu(m);
  const int64_t T = 37, C = m.config.hidden_size, L = m.config.num_hidden_layers;
  const auto tok = test::random_tokens(T, m.config.vocab_size, 11);
  const auto x = embed(cpu, tok);
  std::vector<float> h;  // (L+1,T,C) the CPU's stream
  hidden_states_from_embeddings(cpu, x.data(), T, h);
  DeviceBlockRunner runner(m, 64);
  EXPECT_EQ(embed(runner, tok), x);  // the embedding stays on the host
  const size_t n = size_t(T * C);
  std::vector<float> out(n), corr_gpu(n), corr_cpu(n);
  for (int64_t l = 0; l < L; ++l) {  // block l from the CPU's input to it
    const float* in = h.data() + size_t(l) * n;
    const float* want = h.data() + size_t(l + 1) * n;
    runner.device_model().block_forward(l, in, T, out.data());
    for (size_t i = 0; i < n; ++i) {
      corr_gpu[i] = out[i] - in[i];
      corr_cpu[i] = want[i] - in[i];
    }
    const double e_out = rel_l2(out.data(), want, n), e_corr = rel_l2(corr_gpu.data(), corr_cpu.data(), n);
    EXPECT_LT(e_out, kBlockOutTol) << "block " << l;
    EXPECT_LT(e_corr, kBlockCorrTol) << "block " << l;
    std::printf("block %lld: output rel L2 %.3g, block contribution rel L2 %.3g\n", (long long)l, e_out,
                e_corr);
  }
  // the whole stream through the runner (block by block on the device, host in between)
  std::vector<float> hg;
  hidden_states_from_embeddings(runner, x.data(), T, hg);
  ASSERT_EQ(hg.size(), h.size());
  for (int64_t l = 1; l <= L; ++l)
    EXPECT_LT(rel_l2(hg.data() + size_t(l) * n, h.data() + size_t(l) * n, n), kBlockOutTol) << "depth " << l;
  // deterministic: the same input gives the same bits (the FTLE's "vanished" test relies on it)
  std::vector<float> again(n);
  runner.device_model().block_forward(1, h.data() + n, T, again.data());
  runner.device_model().block_forward(1, h.data() + n, T, out.data());
  EXPECT_EQ(again, out);
  // refusals
  EXPECT_THROW(runner.device_model().block_forward(L, x.data(), T, out.data()), Error);
  EXPECT_THROW(runner.device_model().block_forward(0, x.data(), 0, out.data()), Error);
  std::vector<float> long_x(size_t(65 * C));
  EXPECT_THROW(runner.device_model().block_forward(0, long_x.data(), 65, long_x.data()), Error);  // > 64
}

void expect_close(const CriticalityResult& g, const CriticalityResult& c, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(g.layers, c.layers);
  EXPECT_EQ(g.text_tokens, c.text_tokens);
  EXPECT_LT(rel_err(g.study.avg_br, c.study.avg_br), kBrTol);
  for (size_t l = 0; l < c.study.br.size(); ++l) {
    EXPECT_LT(rel_err(g.study.br[l], c.study.br[l]), kBrTol) << "BR layer " << l;
    EXPECT_LT(rel_err(g.study.D[l], c.study.D[l]), kDTol) << "D layer " << l;
  }
  EXPECT_NEAR(g.study.lambda, c.study.lambda, kLambdaTol);
  EXPECT_EQ(g.study.br_label, c.study.br_label);
  ASSERT_EQ(g.sweep.size(), c.sweep.size());
  for (size_t e = 0; e < c.sweep.size(); ++e) {
    EXPECT_NEAR(g.sweep[e].lambda, c.sweep[e].lambda, kLambdaTol) << "eps " << c.sweep[e].eps;
    for (size_t l = 0; l < c.sweep[e].D.size(); ++l)
      EXPECT_LT(rel_err(g.sweep[e].D[l], c.sweep[e].D[l]), kDTol)
          << "eps " << c.sweep[e].eps << " layer " << l;
  }
  ASSERT_EQ(g.ftle.size(), c.ftle.size());
  for (size_t f = 0; f < c.ftle.size(); ++f) {
    EXPECT_EQ(g.ftle[f].vanished, c.ftle[f].vanished);
    EXPECT_NEAR(g.ftle[f].ftle.median, c.ftle[f].ftle.median, kFtleTol) << "eps_rel " << c.ftle[f].eps_rel;
  }
  std::printf("%s: avg BR gpu %.6f cpu %.6f | lambda gpu %+.6f cpu %+.6f | FTLE gpu %+.5f cpu %+.5f\n",
              what.c_str(), g.study.avg_br, c.study.avg_br, g.study.lambda, c.study.lambda,
              g.ftle.empty() ? NAN : g.ftle[0].ftle.median, c.ftle.empty() ? NAN : c.ftle[0].ftle.median);
}

TEST(CudaCriticality, MeasurementsAndControlsMatchCpu) {
  SKIP_WITHOUT_GPU();
  const Model base = criticality_model(9);
  std::vector<std::vector<int32_t>> texts;
  for (int i = 0; i < 3; ++i)
    texts.push_back(test::random_tokens(24 + 8 * i, base.config.vocab_size, 50 + i));
  CriticalityOptions opt;
  opt.eps = {1e-3, 1e-2};  // 5% and 50% of the embeddings' size
  opt.seeds = 2;
  opt.ftle_eps = {1e-2};
  opt.bootstrap = 0;
  Model mc = base, mg = base;  // the controls change the weights in place
  const CriticalityReport c = run_criticality_with_controls(mc, texts, opt, {"shuffled", "random-init"}, 3);
  const CriticalityReport g =
      run_criticality_with_controls(mg, texts, opt, {"shuffled", "random-init"}, 3, device_block_runners(40));
  EXPECT_EQ(mg.params, mc.params);
  expect_close(g.model, c.model, "model");
  ASSERT_EQ(g.controls.size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(g.controls[k].first, c.controls[k].first);
    expect_close(g.controls[k].second, c.controls[k].second, c.controls[k].first);
  }
  // each control got a runner of its own weights: its numbers are not the model's
  EXPECT_GT(rel_err(g.controls[0].second.study.avg_br, g.model.study.avg_br), 1e-3);
}

TEST(CudaCriticality, InferenceOptionsFollowCpuModel) {
  Model m = criticality_model(3);  // no GPU needed: only the options
  DeviceModelOptions o = inference_options(m, 10, "criticality");
  EXPECT_EQ(o.quant.weight_quant, WeightQuant::Absmean);
  EXPECT_TRUE(o.quant.act_quant);
  EXPECT_TRUE(o.constant_weights);
  EXPECT_EQ(o.max_tokens, 10);
  for (const auto& v : m.views)
    if (v.kind == ParamKind::Linear) m.fixed_scale[v.name] = 0.5f;
  EXPECT_EQ(inference_options(m, 10, "criticality").quant.weight_quant, WeightQuant::Fixed);
  m.fixed_scale.erase(m.fixed_scale.begin());
  try {
    inference_options(m, 10, "criticality");
    ADD_FAILURE() << "a partial set of fixed scales was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("criticality --device cuda"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tl::cuda
