// Golden parity with transformers (tools/golden/make_golden.py): checkpoints written by `ternlab init`,
// loaded by BitNetForCausalLM with online (master layout) or offline (packed layout) AutoBitLinear, fp32.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "../common/fixture.hpp"
#include "cpu/forward.hpp"
#include "formats/checkpoint.hpp"
#include "model/quant.hpp"

using namespace tl;

namespace {

double rel_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, MatchesTransformers) {
  const std::string dir = std::string(TERNLAB_FIXTURES) + "/golden/" + GetParam();
  const auto fx = test::read_fixture(dir + "/golden.tlfx");
  const Model model = load_checkpoint(dir);
  const auto& ids_e = fx.at("input_ids");
  ASSERT_EQ(ids_e.dims.size(), 2u);
  const int64_t B = ids_e.dims[0], T = ids_e.dims[1], V = model.config.vocab_size;

  // Which layers the fixture tapped: the first and the last.
  const int64_t last = model.config.num_hidden_layers - 1;
  ForwardTaps taps;
  for (int l = 0; l <= int(last); ++l) taps.layers.push_back(l);

  CpuModel cpu(model);
  std::vector<float> hidden;
  cpu.forward(ids_e.i32, B, T, hidden, &taps);
  std::vector<float> logits(size_t(B * T * V));
  cpu.logits(hidden.data(), B * T, logits.data());

  // Walk the taps in forward order, tracking which rows (tokens) a rounding tie has touched.
  //
  // A tie is an element whose x·s lies within a few ulps of k + 1/2. It happens structurally: at position 0
  // attention returns v itself, whose entries are exact integer multiples of one scale, so x_i / max|x| can
  // be exactly (k + 1/2)/127. fp32 rounding noise then decides the code, and either choice is right. A tie
  // flipped at layer l in row (b, p) changes that row from there on, and — through its keys and values —
  // rows (b, p' >= p) from the next layer on (from this layer's o_proj on, for a flip in the q/k/v input).
  // Untouched rows must agree tightly: inputs to 1e-5 relative L2, int8 codes exactly, logits to 1e-4.
  // Touched rows may differ by about one code step: 1e-2.
  std::vector<char> touched(size_t(B * T), 0), touched_next_layer(size_t(B * T), 0);
  auto touch_from = [&](std::vector<char>& set, int64_t row) {
    const int64_t b = row / T;
    for (int64_t p = row % T; p < T; ++p) set[size_t(b * T + p)] = 1;
  };
  int64_t tie_flips = 0;
  for (int64_t layer = 0; layer <= last; ++layer) {
    for (size_t r = 0; r < touched.size(); ++r) touched[r] |= touched_next_layer[r];
    for (int which : {kQ, kO, kGate, kDown}) {
      const std::string key = "layers." + std::to_string(layer) + "." + kLinearNames[which];
      SCOPED_TRACE(key);
      // Ternary codes and scale of the weight: the one quantizer vs transformers' WeightQuant / unpacking.
      const auto& view = model.view(Model::linear_name(layer, which));
      const TernaryWeight tw = quantize_weight(model, view);
      const auto& wc = fx.at(key + ".weight_codes");
      ASSERT_EQ(size_t(wc.numel()), tw.codes.size());
      EXPECT_EQ(std::vector<int8_t>(tw.codes.begin(), tw.codes.end()), wc.i8) << "ternary codes differ";
      EXPECT_NEAR(tw.scale, fx.at(key + ".weight_scale").f32[0], 1e-6 * std::fabs(tw.scale));

      // Activation codes: our quantizer on transformers' BitLinear input gives transformers' codes exactly.
      const auto& x = fx.at(key + ".input");
      const auto& xc = fx.at(key + ".act_codes");
      const int64_t K = x.dims.back(), rows = x.numel() / K;
      ASSERT_EQ(rows, B * T);
      std::vector<int8_t> q(static_cast<size_t>(K));
      std::vector<float> torch_scale(static_cast<size_t>(rows));
      int64_t mismatched_rows = 0;
      for (int64_t r = 0; r < rows; ++r) {
        torch_scale[size_t(r)] = quantize_activation_row(x.f32.data() + r * K, size_t(K), q.data());
        mismatched_rows += !std::equal(q.begin(), q.end(), xc.i8.begin() + r * K);
      }
      EXPECT_EQ(mismatched_rows, 0) << "activation quantizer differs from transformers' ActQuant";

      // Our own forward's BitLinear input and its codes, against transformers', row by row.
      const auto& ours = taps.f32.at(key + ".input");
      const auto& our_codes = taps.i8.at(key + ".input");
      ASSERT_EQ(int64_t(ours.size()), rows * K);
      std::vector<int64_t> newly_flipped;
      double num = 0, den = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const size_t o = size_t(r * K);
        if (touched[size_t(r)]) {
          EXPECT_LT(rel_l2(ours.data() + o, x.f32.data() + o, size_t(K)), 1e-2) << "row " << r;
          continue;
        }
        for (int64_t k = 0; k < K; ++k) {
          const double d = double(ours[o + size_t(k)]) - x.f32[o + size_t(k)];
          num += d * d;
          den += double(x.f32[o + size_t(k)]) * x.f32[o + size_t(k)];
        }
        bool flipped = false;
        for (int64_t k = 0; k < K; ++k) {
          const size_t i = o + size_t(k);
          if (our_codes[i] == xc.i8[i]) continue;
          const double xs = double(x.f32[i]) * torch_scale[size_t(r)];
          const double frac = std::fabs(xs) - std::floor(std::fabs(xs));
          const bool tie = std::fabs(frac - 0.5) <= 1e-5 * std::max(1.0, std::fabs(xs)) &&
                           std::abs(int(our_codes[i]) - int(xc.i8[i])) == 1;
          EXPECT_TRUE(tie) << "row " << r << " col " << k << ": code " << int(our_codes[i])
                           << " vs transformers' " << int(xc.i8[i])
                           << " away from a rounding tie (x·s = " << xs << ")";
          flipped = true;
          ++tie_flips;
        }
        if (flipped) newly_flipped.push_back(r);
      }
      if (den > 0) {
        EXPECT_LT(std::sqrt(num / den), 1e-5) << "BitLinear input differs in untouched rows";
      }
      for (int64_t r : newly_flipped) {
        std::printf("[%s] %s: row %ld has activation code(s) at exact rounding ties resolved the other way\n",
                    GetParam().c_str(), key.c_str(), long(r));
        touched[size_t(r)] = 1;
        touch_from(which == kQ ? touched : touched_next_layer, r);
      }
    }
  }
  for (size_t r = 0; r < touched.size(); ++r) touched[r] |= touched_next_layer[r];

  const auto& ref = fx.at("logits");
  ASSERT_EQ(ref.numel(), B * T * V);
  const double err_all = rel_l2(logits.data(), ref.f32.data(), logits.size());
  double num = 0, den = 0;
  int64_t clean_rows = 0;
  for (int64_t r = 0; r < B * T; ++r) {
    const float* a = logits.data() + r * V;
    const float* b = ref.f32.data() + r * V;
    if (touched[size_t(r)]) {
      EXPECT_LT(rel_l2(a, b, size_t(V)), 1e-2) << "logits of tie-touched row " << r;
      continue;
    }
    ++clean_rows;
    for (int64_t v = 0; v < V; ++v) {
      num += (double(a[v]) - b[v]) * (double(a[v]) - b[v]);
      den += double(b[v]) * b[v];
    }
  }
  const double err = std::sqrt(num / den);
  std::printf(
      "[%s] logits relative L2 error vs transformers: %.3g over %ld of %ld rows untouched by ties "
      "(%.3g over all rows; %ld tie flips)\n",
      GetParam().c_str(), err, long(clean_rows), long(B * T), err_all, long(tie_flips));
  EXPECT_GE(clean_rows, B * T / 2) << "too few rows to compare";
  EXPECT_LT(err, 1e-4) << "logits relative L2 error vs transformers";
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, Golden,
                         ::testing::Values("tiny-master", "tiny-packed", "wide-master", "wide-packed",
                                           "snap-packed", "snap-master"));

}  // namespace
