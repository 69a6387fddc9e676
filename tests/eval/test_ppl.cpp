#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "../common/test_util.hpp"
#include "core/error.hpp"
#include "eval/ppl.hpp"

using namespace tl;
using ::testing::HasSubstr;

namespace {
std::vector<int32_t> iota_tokens(int n, int vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[size_t(i)] = i % vocab;
  return t;
}
using test::error_of;
}  // namespace

TEST(PplWindows, SeedMatchesPythonRangeSemantics) {
  PplOptions o;
  o.protocol = PplProtocol::Seed;
  o.max_windows = -1;
  // range(0, 1000 - 128, 128) = 0..768 -> 7 chunks
  EXPECT_EQ(make_ppl_windows(iota_tokens(1000, 50), o).size(), 7u);
  // exactly 8*128 tokens: the stop len-128 = 896 excludes the last full chunk -> 7, not 8
  EXPECT_EQ(make_ppl_windows(iota_tokens(1024, 50), o).size(), 7u);
  EXPECT_EQ(make_ppl_windows(iota_tokens(1025, 50), o).size(), 8u);
  auto w = make_ppl_windows(iota_tokens(1000, 50), o);
  EXPECT_EQ(w[1].tokens.size(), 128u);
  EXPECT_EQ(w[1].tokens[0], 128 % 50);
  EXPECT_EQ(w[1].score_from, 0);
  o.max_windows = 0;  // default: first 50 chunks
  EXPECT_EQ(make_ppl_windows(iota_tokens(128 * 60, 50), o).size(), 50u);
  EXPECT_THAT(error_of([&] { make_ppl_windows(iota_tokens(128, 50), o); }), HasSubstr("need more than 128"));
}

TEST(PplWindows, LlamaReplacesFirstTokenAndScoresSecondHalf) {
  PplOptions o;
  o.protocol = PplProtocol::Llama;
  o.bos_id = 99;
  auto w = make_ppl_windows(iota_tokens(1100, 90), o);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[1].tokens[0], 99);
  EXPECT_EQ(w[1].tokens[1], 513 % 90);
  EXPECT_EQ(w[1].score_from, 256);
  EXPECT_THAT(error_of([&] { make_ppl_windows(iota_tokens(1000, 90), o); }), HasSubstr("2*ctx = 1024"));
  o.bos_id = -1;
  EXPECT_THAT(error_of([&] { make_ppl_windows(iota_tokens(1100, 90), o); }), HasSubstr("no BOS"));
}

TEST(PplWindows, WindowScoresEverything) {
  PplOptions o;
  o.protocol = PplProtocol::Window;
  o.ctx = 100;
  auto w = make_ppl_windows(iota_tokens(350, 90), o);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[2].tokens[0], 200 % 90);
  EXPECT_EQ(w[2].score_from, 0);
}

TEST(Ppl, UniformLogitsGiveVocabSize) {
  const int64_t V = 37;
  PplOptions o;
  o.protocol = PplProtocol::Window;
  o.ctx = 16;
  o.batch = 3;
  auto windows = make_ppl_windows(iota_tokens(16 * 7, int(V)), o);
  int64_t calls = 0;
  auto fn = [&](std::span<const int32_t> toks, int64_t B, int64_t T, int64_t first, std::vector<float>& out) {
    ++calls;
    EXPECT_EQ(int64_t(toks.size()), B * T);
    out.assign(size_t(B * (T - 1 - first) * V), 0.5f);
  };
  auto r = evaluate_ppl(windows, V, fn, o);
  EXPECT_EQ(calls, 3);  // 7 windows in batches of 3
  EXPECT_EQ(r.windows, 7);
  EXPECT_EQ(r.tokens_scored, 7 * 15);
  EXPECT_NEAR(r.ppl, double(V), 1e-9);
  EXPECT_NEAR(r.ppl_stderr, 0.0, 1e-9);
}

TEST(Ppl, OracleAndStderrFormula) {
  // Logits put weight a on the true next token: nll = log(1 + (V-1)e^{-a}) on half the rows, log V on the
  // rest.
  const int64_t V = 11;
  PplOptions o;
  o.protocol = PplProtocol::Llama;
  o.ctx = 8;
  o.bos_id = 0;
  auto tokens = iota_tokens(40, int(V));
  auto windows = make_ppl_windows(tokens, o);
  ASSERT_EQ(windows.size(), 5u);
  std::vector<double> expected;
  auto fn = [&](std::span<const int32_t> toks, int64_t B, int64_t T, int64_t first, std::vector<float>& out) {
    const int64_t rows = T - 1 - first;
    out.assign(size_t(B * rows * V), 0.0f);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < rows; ++i) {
        const int32_t next = toks[size_t(b * T + first + i + 1)];
        if (i % 2 == 0) out[size_t((b * rows + i) * V + next)] = 3.0f;
        expected.push_back(i % 2 == 0 ? std::log(1.0 + double(V - 1) * std::exp(-3.0)) : std::log(double(V)));
      }
  };
  auto r = evaluate_ppl(windows, V, fn, o);
  EXPECT_EQ(r.tokens_scored, 5 * 3);  // 8 - 4 - 1 targets per window
  const double mean = std::accumulate(expected.begin(), expected.end(), 0.0) / double(expected.size());
  double var = 0;
  for (double e : expected) var += (e - mean) * (e - mean);
  var /= double(expected.size());
  EXPECT_NEAR(r.mean_nll, mean, 1e-12);
  EXPECT_NEAR(r.ppl, std::exp(mean), 1e-9);
  EXPECT_NEAR(r.ppl_stderr, std::exp(mean) * std::sqrt(var / double(expected.size() - 1)), 1e-9);
  // Per window: the sum of its 3 targets' NLL, in window order (batch 1 and batch 2 alike).
  ASSERT_EQ(r.window_nll.size(), 5u);
  for (size_t w = 0; w < 5; ++w)
    EXPECT_NEAR(r.window_nll[w], expected[3 * w] + expected[3 * w + 1] + expected[3 * w + 2], 1e-12);
  expected.clear();
  o.batch = 2;
  const auto r2 = evaluate_ppl(windows, V, fn, o);
  EXPECT_EQ(r2.window_nll, r.window_nll);
}

TEST(Ppl, RejectsTokensOutsideVocab) {
  PplOptions o;
  o.protocol = PplProtocol::Window;
  o.ctx = 4;
  auto windows = make_ppl_windows(iota_tokens(8, 20), o);
  auto fn = [](std::span<const int32_t>, int64_t, int64_t, int64_t, std::vector<float>&) {};
  EXPECT_THAT(error_of([&] { evaluate_ppl(windows, 5, fn, o); }),
              HasSubstr("outside the model's vocabulary"));
}

TEST(Ppl, ProtocolNames) {
  EXPECT_EQ(parse_ppl_protocol("llama"), PplProtocol::Llama);
  EXPECT_THAT(error_of([] { parse_ppl_protocol("wiki"); }), HasSubstr("unknown perplexity protocol"));
}

// The path of backends that score on their own (the GPU): per-position losses for given targets, turned into
// the same NLLs, hence the same result as logits scored on the host, for every protocol and an uneven batch.
TEST(Ppl, PositionLossesGiveTheSameResultAsLogits) {
  const int64_t V = 7;
  auto logit = [](int32_t prev, int64_t pos, int64_t v) {
    return float((prev * 3 + pos * 5 + v * 7) % 11) * 0.3f;
  };
  auto logits_fn = [&](std::span<const int32_t> toks, int64_t B, int64_t T, int64_t first,
                       std::vector<float>& out) {
    const int64_t rows = T - 1 - first;
    out.resize(size_t(B * rows * V));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t v = 0; v < V; ++v)
          out[size_t((b * rows + i) * V + v)] = logit(toks[size_t(b * T + first + i)], first + i, v);
  };
  int64_t calls = 0;
  auto losses_fn = [&](std::span<const int32_t> toks, std::span<const int32_t> targets, int64_t B, int64_t T,
                       std::vector<float>& out) {
    ++calls;
    out.assign(size_t(B * T), 0.0f);
    std::vector<float> row(static_cast<size_t>(V));
    for (int64_t n = 0; n < B * T; ++n) {
      if (targets[size_t(n)] < 0) continue;
      EXPECT_EQ(targets[size_t(n)], toks[size_t(n + 1)]);  // the next token of the same window
      for (int64_t v = 0; v < V; ++v) row[size_t(v)] = logit(toks[size_t(n)], n % T, v);
      out[size_t(n)] = float(token_nll(row.data(), V, targets[size_t(n)]));
    }
  };
  for (PplProtocol p : {PplProtocol::Seed, PplProtocol::Llama, PplProtocol::Window}) {
    PplOptions o;
    o.protocol = p;
    o.ctx = 8;
    o.bos_id = 0;
    o.batch = 3;
    o.max_windows = -1;
    const auto windows = make_ppl_windows(iota_tokens(70, int(V)), o);
    const PplResult a = evaluate_ppl(windows, V, logits_fn, o);
    const PplResult b = evaluate_ppl_nll(windows, V, nll_from_position_losses(losses_fn), o);
    EXPECT_EQ(a.tokens_scored, b.tokens_scored);
    EXPECT_NEAR(b.mean_nll, a.mean_nll, 1e-6) << ppl_protocol_name(p);  // losses pass through fp32
    EXPECT_NEAR(b.nll_stderr, a.nll_stderr, 1e-6);
  }
  EXPECT_GT(calls, 0);
  // A backend returning the wrong number of losses is an error, not a silent wrong answer.
  auto short_fn = [](std::span<const int32_t>, std::span<const int32_t>, int64_t, int64_t,
                     std::vector<float>& out) { out.assign(3, 0.0f); };
  PplOptions o;
  o.protocol = PplProtocol::Window;
  o.ctx = 8;
  const auto windows = make_ppl_windows(iota_tokens(16, int(V)), o);
  EXPECT_THAT(error_of([&] { evaluate_ppl_nll(windows, V, nll_from_position_losses(short_fn), o); }),
              HasSubstr("losses"));
}
