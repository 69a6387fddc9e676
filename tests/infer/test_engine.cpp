// The fast engine against the fp32 reference: with an fp32 LM head the logits must be identical bit for bit
// (same quantizer, exact integer sums, the same fp32 operations), for every kernel ISA the CPU has, for
// whole prompts, chunked prompts and token-by-token decoding; f16 and int8 heads within stated bounds.
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "../common/test_util.hpp"
#include "core/half.hpp"
#include "formats/export.hpp"
#include "infer/bench.hpp"
#include "infer/engine.hpp"
#include "infer/loader.hpp"
#include "infer/reference_model.hpp"
#include "model/model.hpp"

namespace tl {
namespace {

using test::random_tokens;

BitNetConfig tiny() {  // in_features 64 / 160: padded to 128 / 256 inside the engine
  return config_preset("tiny");
}

BitNetConfig untied_silu() {  // q_dim != hidden, no GQA, untied head, SiLU, 256-aligned widths
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

// Logits after each call of a schedule of decodes: a prompt of P tokens, then single tokens.
std::vector<std::vector<float>> run_schedule(const LanguageModel& lm, const std::vector<int32_t>& toks,
                                             int64_t P) {
  auto s = lm.new_session();
  std::vector<std::vector<float>> out;
  auto l = s->decode(std::span(toks).first(size_t(P)));
  out.emplace_back(l.begin(), l.end());
  for (size_t i = size_t(P); i < toks.size(); ++i) {
    l = s->decode(std::span(toks).subspan(i, 1));
    out.emplace_back(l.begin(), l.end());
  }
  return out;
}

void expect_engine_equals_reference(const BitNetConfig& c, uint64_t seed) {
  Model m = random_model(c, seed);
  const auto toks = random_tokens(40, c.vocab_size, seed + 1);
  Model copy = m;
  ReferenceModel ref(std::move(copy));
  const auto want = run_schedule(ref, toks, 29);
  for (KernelIsa isa : isas()) {
    for (int64_t chunk : {512, 7}) {
      EngineOptions opt;
      opt.isa = isa;
      opt.head = "f32";
      opt.prompt_chunk = chunk;
      Engine e(engine_source(m), opt);
      const auto got = run_schedule(e, toks, 29);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i], want[i]) << "isa " << kernel_isa_name(isa) << " chunk " << chunk << " step " << i;
    }
  }
}

TEST(Engine, EqualsReferenceBitForBitTiny) {
  expect_engine_equals_reference(tiny(), 11);
}

TEST(Engine, EqualsReferenceBitForBitUntiedSilu) {
  expect_engine_equals_reference(untied_silu(), 12);
}

// A decoded token's layers run in one thread team (infer/engine.cpp, layers_one_token): the logits must not
// depend on the team's size. 3 threads is more than the 2 cores of the CI machine, so members are then
// descheduled mid-step. (5 would do too, but LLVM's libomp leaks a team structure that LeakSanitizer
// reports.)
TEST(Engine, DecodeEqualsReferenceForAnyThreadCount) {
  const BitNetConfig c = tiny();
  Model m = random_model(c, 5);
  const auto toks = random_tokens(20, c.vocab_size, 6);
  Model copy = m;
  ReferenceModel ref(std::move(copy));
  const auto want = run_schedule(ref, toks, 3);
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (KernelIsa isa : isas()) {
      EngineOptions opt;
      opt.isa = isa;
      opt.head = "f32";
      Engine e(engine_source(m), opt);
      const auto got = run_schedule(e, toks, 3);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i], want[i]) << "threads " << threads << " isa " << kernel_isa_name(isa) << " step "
                                   << i;
    }
  }
  omp_set_num_threads(saved);
}

TEST(Engine, FixedScalesAndPrunedWeights) {
  BitNetConfig c = untied_silu();
  c.hidden_act = Activation::Relu2;
  Model m = random_model(c, 5);
  // Prune a third of every linear and give two of them fixed scales (a snapped / GGUF-imported model).
  Rng rng(9);
  for (const ParamView& v : m.views)
    if (v.kind == ParamKind::Linear)
      for (size_t i = 0; i < v.numel; ++i)
        if (rng.below(3) == 0) m.params[v.offset + i] = 0;
  m.fixed_scale[Model::linear_name(0, kQ)] = 0.0123f;
  m.fixed_scale[Model::linear_name(1, kDown)] = 0.5f;
  const auto toks = random_tokens(12, c.vocab_size, 3);
  Model copy = m;
  ReferenceModel ref(std::move(copy));
  EngineOptions opt;
  opt.head = "f32";
  Engine e(engine_source(m), opt);
  EXPECT_EQ(run_schedule(e, toks, 5), run_schedule(ref, toks, 5));
}

// f16 and int8 heads: logits within a bound derived from the head's rounding.
TEST(Engine, ReducedPrecisionHeads) {
  const BitNetConfig c = tiny();
  Model m = random_model(c, 21);
  const auto toks = random_tokens(16, c.vocab_size, 22);
  EngineOptions o32;
  o32.head = "f32";
  Engine e32(engine_source(m), o32);
  const auto want = run_schedule(e32, toks, 10);
  for (const char* head : {"f16", "i8"}) {
    EngineOptions o;
    o.head = head;
    Engine e(engine_source(m), o);
    EXPECT_EQ(e.head_type(), head);
    const auto got = run_schedule(e, toks, 10);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < got.size(); ++i)
      for (size_t j = 0; j < got[i].size(); ++j) {
        worst = std::max(worst, double(std::fabs(got[i][j] - want[i][j])));
        scale = std::max(scale, double(std::fabs(want[i][j])));
      }
    // f16 rounds each weight by <= 2^-11 relative; int8 rows and activations by <= 1/254 each.
    const double bound = std::string(head) == "f16" ? 2e-3 : 3e-2;
    EXPECT_LE(worst, bound * std::max(scale, 1.0)) << head;
    EXPECT_GT(worst, 0.0) << head << " should differ from fp32 somewhere";
  }
}

TEST(Engine, SessionsAreIndependentAndTruncateReusesPrefix) {
  const BitNetConfig c = tiny();
  Model m = random_model(c, 31);
  Engine e(engine_source(m));
  const auto toks = random_tokens(20, c.vocab_size, 32);
  auto a = e.new_session(64), b = e.new_session(64);
  auto la = a->decode(toks);
  const std::vector<float> whole(la.begin(), la.end());
  b->decode(std::span(toks).first(12));
  b->decode(std::span(toks).subspan(12, 3));  // a wrong continuation, then rewound
  b->truncate(12);
  auto lb = b->decode(std::span(toks).subspan(12));
  EXPECT_EQ(std::vector<float>(lb.begin(), lb.end()), whole);
  EXPECT_EQ(a->length(), 20);
  EXPECT_EQ(b->length(), 20);
}

TEST(Engine, Errors) {
  const BitNetConfig c = tiny();
  Model m = random_model(c, 41);
  Engine e(engine_source(m));
  auto s = e.new_session(8);
  EXPECT_NE(test::error_of([&] { s->decode({}); }).find("no tokens"), std::string::npos);
  const std::vector<int32_t> bad = {1, int32_t(c.vocab_size)};
  EXPECT_NE(test::error_of([&] { s->decode(bad); }).find("outside"), std::string::npos);
  EXPECT_EQ(s->length(), 0);
  const auto nine = random_tokens(9, c.vocab_size, 1);
  EXPECT_NE(test::error_of([&] { s->decode(nine); }).find("capacity"), std::string::npos);
  EXPECT_NE(test::error_of([&] { e.new_session(c.max_position_embeddings + 1); }).find("capacity"),
            std::string::npos);
  EngineOptions o;
  o.head = "q4";
  EXPECT_NE(test::error_of([&] { Engine bad_head(engine_source(m), o); }).find("head"), std::string::npos);
}

TEST(Engine, BytesPerTokenCountsPackedWeightsAndHead) {
  const BitNetConfig c = tiny();
  Model m = random_model(c, 51);
  EngineOptions o;
  o.head = "f16";
  Engine e(engine_source(m), o);
  // Packed rows are padded to 128 inputs: per layer q|k|v (64+32+32 rows) and gate|up (320 rows) read 128/4
  // bytes a row; o (64 rows of 64 in) 32 bytes; down (64 rows of 160 in, padded to 256) 64 bytes.
  const size_t per_layer = 128 * 32 + 64 * 32 + 320 * 32 + 64 * 64 + (64 + 64 + 64 + 160) * 4;
  EXPECT_EQ(e.bytes_per_token(), 2 * per_layer + 64 * 4 + size_t(512 * 64 * 2));
}

// Every ternary GGUF kind ternlab writes runs on the engine with the same logits, bit for bit, as the
// reference on the model it was exported from (f32 embedding; the TQ kinds carry alpha in `.scale`).
TEST(Engine, RunsExportedGgufBitForBit) {
  BitNetConfig c = config_preset("tiny");
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.vocab_size = 300;
  c.max_position_embeddings = 64;
  Model m = random_model(c, 61);
  m.fixed_scale[Model::linear_name(1, kUp)] = 0.031f;  // a snapped scale survives export
  const auto toks = random_tokens(14, c.vocab_size, 62);
  Model copy = m;
  ReferenceModel ref(std::move(copy));
  const auto want = run_schedule(ref, toks, 9);
  const auto dir = std::filesystem::temp_directory_path() / ("tl_engine_gguf_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const Tokenizer tok = Tokenizer::byte_level(300);
  for (ExportKind kind : {ExportKind::I2_S, ExportKind::TQ2_0, ExportKind::TQ1_0, ExportKind::F32}) {
    ExportOptions eo;
    eo.kind = kind;
    eo.embed_type = GgmlType::F32;
    const auto path = dir / (std::string(export_kind_name(kind)) + ".gguf");
    export_gguf(m, tok, "", eo, path);
    GgufModelReader reader(path);
    EngineOptions opt;
    opt.head = "auto";  // f32, as stored
    Engine e(engine_source(reader), opt);
    EXPECT_EQ(e.head_type(), "f32");
    EXPECT_EQ(run_schedule(e, toks, 9), want) << export_kind_name(kind);
  }
  // An f16 embedding (the default export): the engine keeps it f16; logits within f16 rounding of the head.
  ExportOptions eo;
  eo.kind = ExportKind::I2_S;
  export_gguf(m, tok, "", eo, dir / "f16embed.gguf");
  LoadedModel lm = load_language_model(dir / "f16embed.gguf");
  ASSERT_NE(dynamic_cast<const Engine*>(lm.lm.get()), nullptr);
  EXPECT_EQ(dynamic_cast<const Engine&>(*lm.lm).head_type(), "f16");
  const auto got = run_schedule(*lm.lm, toks, 9);
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    for (size_t j = 0; j < got[i].size(); ++j)
      worst = std::max(worst, double(std::fabs(got[i][j] - want[i][j])));
  EXPECT_LT(worst, 0.05);
  std::filesystem::remove_all(dir);
}

// bench --profile: the engine's phases add up to no more than the timed calls, every phase runs, the weight
// bytes are those of the timed tokens, profiling leaves the logits unchanged, and the reference refuses.
TEST(EngineBench, ProfileCoversTheTimedDecodes) {
  const BitNetConfig c = tiny();
  Model m = random_model(c, 21);
  Engine e(engine_source(m));
  BenchOptions o;
  o.prompt = 12;
  o.generate = 6;
  o.repetitions = 2;
  o.bandwidth = false;
  o.profile = true;
  const BenchReport r = run_bench(e, o);
  ASSERT_EQ(r.stats.size(), 2u);
  for (const BenchStat& s : r.stats) {
    const DecodeProfile& p = s.profile;
    const int64_t tokens = (s.test == "pp12" ? o.prompt : o.generate) * o.repetitions;  // warm-up not timed
    EXPECT_EQ(p.tokens, tokens) << s.test;
    for (double t : {p.ternary, p.head, p.norm, p.quantize, p.attention}) EXPECT_GT(t, 0) << s.test;
    EXPECT_LE(p.ternary + p.head + p.norm + p.quantize + p.attention, p.total) << s.test;
    // Each decode call reads every linear once and the head once (pp: one call per repetition).
    size_t linear_bytes = 0;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l)
      for (int which = 0; which < 7; ++which) {
        const TernaryWeight w = engine_source(m).linear(l, which);
        linear_bytes += size_t(w.out * ((w.in + 127) / 128 * 128) / 4);
      }
    const double calls = s.test == "pp12" ? o.repetitions : double(tokens);
    EXPECT_DOUBLE_EQ(p.ternary_bytes, calls * double(linear_bytes)) << s.test;
    EXPECT_GT(p.head_bytes, 0);
  }
  // Timers do not change what a session computes.
  const auto toks = random_tokens(9, c.vocab_size, 3);
  auto plain = e.new_session(), timed = e.new_session();
  DecodeProfile p;
  ASSERT_TRUE(timed->set_profile(&p));
  const auto a = plain->decode(toks), b = timed->decode(toks);
  EXPECT_EQ(std::vector<float>(a.begin(), a.end()), std::vector<float>(b.begin(), b.end()));
  EXPECT_EQ(p.tokens, 9);

  ReferenceModel ref(random_model(c, 21));
  EXPECT_THROW(run_bench(ref, o), Error);
  o.profile = false;
  EXPECT_NO_THROW(run_bench(ref, o));
}

}  // namespace
}  // namespace tl
