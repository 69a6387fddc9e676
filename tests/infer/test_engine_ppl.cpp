// Engine::prompt_logits, the engine's logits at every position (perplexity on the engine): with an fp32
// head equal bit for bit to the reference's (CpuModel::forward + CpuModel::logits over the same rows, the
// call `ternlab ppl --backend reference` makes), for every kernel ISA the CPU has and chunked prompts; with
// f16 and int8 heads equal bit for bit to what decoding returns at each position (generate / serve).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "../common/test_util.hpp"
#include "cpu/forward.hpp"
#include "infer/engine.hpp"
#include "model/model.hpp"

namespace tl {
namespace {

using test::random_tokens;

BitNetConfig tiny() {  // in_features 64 / 160: padded to 128 / 256 inside the engine
  return config_preset("tiny");
}

BitNetConfig untied_silu() {  // q_dim != hidden, no GQA, untied head, SiLU
  BitNetConfig c = config_preset("tiny");
  c.hidden_size = 128;
  c.intermediate_size = 384;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.head_dim = 48;
  c.vocab_size = 300;
  c.max_position_embeddings = 96;
  c.hidden_act = Activation::Silu;
  c.tie_word_embeddings = false;
  return c;
}

// A head of several cache tiles (f16: 1024 rows of 128, i8: 2048), the last one partial and not a multiple
// of the GEMVs' 4-row groups.
BitNetConfig wide_vocab() {
  BitNetConfig c = config_preset("tiny");
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 64;
  c.vocab_size = 2101;
  c.max_position_embeddings = 64;
  return c;
}

Model random_model(const BitNetConfig& c, uint64_t seed) {
  Model m = make_model(c);
  init_random(m, seed);
  return m;
}

std::vector<KernelIsa> isas() {
  std::vector<KernelIsa> v;
  for (KernelIsa i : {KernelIsa::Generic, KernelIsa::Avx2, KernelIsa::Avx512Vnni})
    if (kernel_isa_supported(i)) v.push_back(i);
  return v;
}

// The reference's perplexity logits (workflow/perplexity.cpp evaluate_perplexity): forward over the B
// windows, rows [first, last) of each gathered, one CpuModel::logits call.
std::vector<float> reference_rows(const Model& m, std::span<const int32_t> toks, int64_t B, int64_t T,
                                  int64_t first, int64_t last) {
  CpuModel cpu(m);
  std::vector<float> hidden;
  cpu.forward(toks, B, T, hidden);
  const int64_t C = m.config.hidden_size, V = m.config.vocab_size, n = last - first;
  std::vector<float> rows(size_t(B * n * C)), out(size_t(B * n * V));
  for (int64_t b = 0; b < B; ++b)
    std::copy(hidden.begin() + (b * T + first) * C, hidden.begin() + (b * T + last) * C,
              rows.begin() + b * n * C);
  cpu.logits(rows.data(), B * n, out.data());
  return out;
}

void expect_rows_equal_reference(const BitNetConfig& c, uint64_t seed) {
  const Model m = random_model(c, seed);
  const int64_t B = 3, T = 33;
  const auto toks = random_tokens(size_t(B * T), c.vocab_size, seed + 1);
  struct Range {
    int64_t first, last;
  };
  for (const Range r : {Range{0, T}, Range{0, T - 1}, Range{T / 2, T - 1}, Range{5, 9}, Range{7, 7}}) {
    const auto want = reference_rows(m, toks, B, T, r.first, r.last);
    for (KernelIsa isa : isas()) {
      for (int64_t chunk : {512, 8, 5}) {
        EngineOptions opt;
        opt.isa = isa;
        opt.head = "f32";
        opt.prompt_chunk = chunk;
        const Engine e(engine_source(m), opt);
        std::vector<float> got{1.0f, 2.0f};  // resized by the call
        e.prompt_logits(toks, B, T, r.first, r.last, got);
        ASSERT_EQ(got.size(), size_t(B * (r.last - r.first) * c.vocab_size));
        ASSERT_EQ(got, want) << "isa " << kernel_isa_name(isa) << " chunk " << chunk << " rows [" << r.first
                             << ", " << r.last << ")";
      }
    }
  }
}

TEST(EnginePromptLogits, F32HeadEqualsReferenceBitForBitTiny) {
  expect_rows_equal_reference(tiny(), 61);
}

TEST(EnginePromptLogits, F32HeadEqualsReferenceBitForBitUntiedSilu) {
  expect_rows_equal_reference(untied_silu(), 62);
}

TEST(EnginePromptLogits, F32HeadEqualsReferenceBitForBitWideVocab) {
  expect_rows_equal_reference(wide_vocab(), 63);
}

// Row t of prompt_logits is what a session's decode returns after tokens 0..t, bit for bit, for the f16 and
// int8 heads (prompt rows vs one token at a time: the same hidden states, the same GEMVs).
void expect_rows_equal_decode(const BitNetConfig& c, uint64_t seed) {
  const Model m = random_model(c, seed);
  const int64_t T = 21;
  const auto toks = random_tokens(size_t(T), c.vocab_size, seed + 1);
  for (const char* head : {"f16", "i8"}) {
    for (KernelIsa isa : isas()) {
      EngineOptions opt;
      opt.isa = isa;
      opt.head = head;
      opt.prompt_chunk = 6;
      const Engine e(engine_source(m), opt);
      const std::vector<float> all = e.prompt_logits(toks);
      const int64_t V = c.vocab_size;
      ASSERT_EQ(all.size(), size_t(T * V));
      auto s = e.new_session();
      for (int64_t t = 0; t < T; ++t) {
        const auto l = s->decode(std::span(toks).subspan(size_t(t), 1));
        ASSERT_TRUE(std::equal(l.begin(), l.end(), all.begin() + t * V))
            << head << " isa " << kernel_isa_name(isa) << " row " << t;
      }
      // A range of rows of two windows is the same rows of each window's full run.
      std::vector<int32_t> two(toks.begin(), toks.end());
      two.insert(two.end(), toks.rbegin(), toks.rend());
      const std::vector<float> second = e.prompt_logits(std::span(two).subspan(size_t(T)));
      std::vector<float> got;
      e.prompt_logits(two, 2, T, 4, T - 1, got);
      const int64_t n = T - 1 - 4;
      ASSERT_EQ(got.size(), size_t(2 * n * V));
      EXPECT_TRUE(std::equal(got.begin(), got.begin() + n * V, all.begin() + 4 * V)) << head;
      EXPECT_TRUE(std::equal(got.begin() + n * V, got.end(), second.begin() + 4 * V)) << head;
    }
  }
}

TEST(EnginePromptLogits, ReducedHeadsEqualDecodeTiny) {
  expect_rows_equal_decode(tiny(), 71);
}

TEST(EnginePromptLogits, ReducedHeadsEqualDecodeUntiedSilu) {
  expect_rows_equal_decode(untied_silu(), 72);
}

TEST(EnginePromptLogits, ReducedHeadsEqualDecodeWideVocab) {
  expect_rows_equal_decode(wide_vocab(), 73);
}

// f16 and int8 heads change the logits a little (the bounds of test_engine.cpp ReducedPrecisionHeads).
TEST(EnginePromptLogits, ReducedHeadsStayCloseToF32) {
  const BitNetConfig c = tiny();
  const Model m = random_model(c, 81);
  const auto toks = random_tokens(40, c.vocab_size, 82);
  EngineOptions o32;
  o32.head = "f32";
  const auto want = Engine(engine_source(m), o32).prompt_logits(toks);
  for (const char* head : {"f16", "i8"}) {
    EngineOptions o;
    o.head = head;
    const auto got = Engine(engine_source(m), o).prompt_logits(toks);
    ASSERT_EQ(got.size(), want.size());
    double worst = 0, scale = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      worst = std::max(worst, double(std::fabs(got[i] - want[i])));
      scale = std::max(scale, double(std::fabs(want[i])));
    }
    const double bound = std::string(head) == "f16" ? 2e-3 : 3e-2;
    EXPECT_LE(worst, bound * std::max(scale, 1.0)) << head;
    EXPECT_GT(worst, 0.0) << head;
  }
}

TEST(EnginePromptLogits, Errors) {
  const BitNetConfig c = tiny();
  const Model m = random_model(c, 91);
  const Engine e(engine_source(m));
  const auto toks = random_tokens(8, c.vocab_size, 92);
  std::vector<float> out;
  auto err = [&](int64_t B, int64_t T, int64_t first, int64_t last, std::span<const int32_t> t) {
    return test::error_of([&] { e.prompt_logits(t, B, T, first, last, out); });
  };
  EXPECT_NE(err(2, 8, 0, 8, toks).find("B*T"), std::string::npos);
  EXPECT_NE(err(1, 0, 0, 0, {}).find("positive"), std::string::npos);
  EXPECT_NE(err(1, 8, 3, 2, toks).find("rows"), std::string::npos);
  EXPECT_NE(err(1, 8, 0, 9, toks).find("rows"), std::string::npos);
  EXPECT_NE(err(1, 8, -1, 4, toks).find("rows"), std::string::npos);
  std::vector<int32_t> bad = toks;
  bad[5] = int32_t(c.vocab_size);
  EXPECT_NE(err(1, 8, 0, 8, bad).find("outside"), std::string::npos);
  const auto long_toks = random_tokens(size_t(c.max_position_embeddings + 1), c.vocab_size, 93);
  EXPECT_NE(test::error_of([&] { e.prompt_logits(long_toks); }).find("max_position_embeddings"),
            std::string::npos);
  e.prompt_logits(toks, 1, 8, 3, 3, out);  // no rows: nothing to compute
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace tl
