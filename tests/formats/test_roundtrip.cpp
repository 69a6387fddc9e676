// export_gguf -> import_gguf for every kind: the same codes and scales (the one quantizer's), config,
// tokenizer, norms, embeddings and logits through the fp32 reference forward.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "../common/test_util.hpp"
#include "core/half.hpp"
#include "cpu/forward.hpp"
#include "deploy_test_util.hpp"
#include "formats/chat_template_default.hpp"
#include "formats/export.hpp"
#include "formats/import.hpp"
#include "model/quant.hpp"

namespace tl {
namespace {

using test::error_of;
using test::TempDir;
using ::testing::HasSubstr;

constexpr ExportKind kAllKinds[] = {ExportKind::TQ2_0, ExportKind::TQ1_0, ExportKind::I2_S, ExportKind::F16,
                                    ExportKind::F32};
const std::vector<std::string> kTexts = {"Hello, world!",
                                         "  The 2 quick   brown foxes\n\njumped 12345 times.",
                                         "ünïcödé ✓ and <|end_of_text|> inline", ""};

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& tokens, int64_t B, int64_t T) {
  CpuModel cpu(m);
  std::vector<float> hidden;
  cpu.forward(tokens, B, T, hidden);
  std::vector<float> out(size_t(B * T * m.config.vocab_size));
  cpu.logits(hidden.data(), B * T, out.data());
  return out;
}

float max_abs(const std::vector<float>& x) {
  float m = 0;
  for (float v : x) m = std::max(m, std::fabs(v));
  return m;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

float f16_round(float x) {
  return f16_to_f32(f32_to_f16(x));
}

struct Case {
  ExportKind kind;
  GgmlType embed;
};

// Exports `m`, imports it, and checks everything the file carries. Returns the imported model.
GgufModel round_trip(const Model& m, const Tokenizer& tok, const Case& c, const fs::path& path) {
  ExportOptions opt;
  opt.kind = c.kind;
  opt.embed_type = c.embed;
  opt.name = "round-trip";
  const ExportReport rep = export_gguf(m, tok, std::string(kBitNetChatTemplate), opt, path);
  EXPECT_EQ(rep.bytes, fs::file_size(path));
  GgufModel g = import_gguf(path);
  const std::string label = fmt::format("{} embed {}", export_kind_name(c.kind), ggml_type_name(c.embed));
  SCOPED_TRACE(label);

  // config: every field the file carries (eps and theta travel as f32, as llama.cpp stores them)
  const BitNetConfig &a = m.config, &b = g.config;
  EXPECT_EQ(b.hidden_size, a.hidden_size);
  EXPECT_EQ(b.intermediate_size, a.intermediate_size);
  EXPECT_EQ(b.num_hidden_layers, a.num_hidden_layers);
  EXPECT_EQ(b.num_attention_heads, a.num_attention_heads);
  EXPECT_EQ(b.num_key_value_heads, a.num_key_value_heads);
  EXPECT_EQ(b.head_dim, a.head_dim);
  EXPECT_EQ(b.vocab_size, a.vocab_size);
  EXPECT_EQ(b.max_position_embeddings, a.max_position_embeddings);
  EXPECT_EQ(float(b.rope_theta), float(a.rope_theta));
  EXPECT_EQ(float(b.rms_norm_eps), float(a.rms_norm_eps));
  EXPECT_EQ(b.hidden_act, a.hidden_act);
  EXPECT_EQ(b.tie_word_embeddings, a.tie_word_embeddings);
  EXPECT_EQ(b.bos_token_id, a.bos_token_id);
  EXPECT_EQ(b.eos_token_id, a.eos_token_id);
  EXPECT_EQ(g.model.config.hidden_size, a.hidden_size);

  // codes and scales: exactly the one quantizer's (f16: the scale rounded to f16)
  for (const auto& v : m.views) {
    if (v.kind != ParamKind::Linear) continue;
    const TernaryWeight want = quantize_weight(m, v);
    const TernaryWeight got = quantize_weight(g.model, g.model.view(v.name));
    EXPECT_EQ(got.codes, want.codes) << v.name;
    if (want.zeros == want.codes.size() && (c.kind == ExportKind::F16 || c.kind == ExportKind::F32))
      EXPECT_EQ(got.scale, 1.0f) << v.name << ": an all-zero float linear has no scale; 1 is taken";
    else if (c.kind == ExportKind::F16)
      EXPECT_EQ(got.scale, f16_round(want.scale)) << v.name;
    else
      EXPECT_EQ(got.scale, want.scale) << v.name;
    EXPECT_EQ(g.model.fixed_scale.at(v.name), got.scale) << v.name;
  }
  // norms exactly (always F32); embedding exactly or f16-rounded
  for (const auto& v : m.views) {
    const std::span<const float> x = m.tensor(v.name), y = g.model.tensor(v.name);
    if (v.kind == ParamKind::Norm ||
        ((v.kind == ParamKind::Embedding || v.kind == ParamKind::LmHead) && c.embed == GgmlType::F32)) {
      EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin())) << v.name;
    } else if (v.kind != ParamKind::Linear) {
      EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), [](float a, float b) {
        return b == f16_round(a);
      })) << v.name;
    }
  }
  // tokenizer and chat template
  EXPECT_EQ(g.tokenizer.vocab_size(), tok.vocab_size());
  EXPECT_EQ(g.tokenizer.bos_id(), tok.bos_id());
  EXPECT_EQ(g.tokenizer.eos_id(), tok.eos_id());
  for (const auto& s : kTexts) {
    EXPECT_EQ(g.tokenizer.encode(s, true), tok.encode(s, true)) << s;
    EXPECT_EQ(g.tokenizer.encode(s, false), tok.encode(s, false)) << s;
  }
  EXPECT_EQ(g.chat_template, kBitNetChatTemplate);
  EXPECT_EQ(g.format.padding_tokens, size_t(m.config.vocab_size) - tok.vocab_size());
  EXPECT_EQ(g.format.name, "round-trip");
  EXPECT_EQ(g.format.file_type, int64_t(export_file_type(c.kind)));
  return g;
}

class RoundTrip : public ::testing::Test {
 protected:
  BitNetConfig cfg = test::small_config();
  Tokenizer tok = Tokenizer::byte_level(290);  // 10 fewer than vocab_size: padded in the file
  std::vector<int32_t> tokens = test::random_tokens(2 * 12, 290, 7);
  TempDir dir;
};

// The model a file of this kind carries, in fp32: embeddings (and lm_head) rounded to f16 when stored so,
// and for the f16 kind every alpha rounded to f16 (as fixed scales).
Model as_stored(const Model& m, const Case& c) {
  Model r = m;
  for (const auto& v : r.views) {
    auto x = r.tensor(v.name);
    if ((v.kind == ParamKind::Embedding || v.kind == ParamKind::LmHead) && c.embed == GgmlType::F16)
      for (float& e : x) e = f16_round(e);
    if (v.kind == ParamKind::Linear && c.kind == ExportKind::F16) {
      const TernaryWeight t = quantize_weight(m, m.view(v.name));
      const float a = f16_round(t.scale);
      for (size_t i = 0; i < x.size(); ++i) x[i] = float(t.codes[i]) * a;
      r.fixed_scale[v.name] = a;
    }
  }
  return r;
}

TEST_F(RoundTrip, EveryKindExactCodesScalesAndLogits) {
  const Model m = test::random_model(cfg, 11);
  const auto want = logits_of(m, tokens, 2, 12);
  for (ExportKind kind : kAllKinds) {
    const Case c{kind, GgmlType::F32};
    const GgufModel g = round_trip(m, tok, c, dir / "m.gguf");
    const auto got = logits_of(g.model, tokens, 2, 12);
    // bit for bit what the file stores; for f32 embeddings and all kinds but f16 that is the model itself
    EXPECT_EQ(got, logits_of(as_stored(m, c), tokens, 2, 12)) << export_kind_name(kind);
    if (kind != ExportKind::F16) {
      EXPECT_EQ(got, want) << export_kind_name(kind);
    } else {
      // alpha rounded to f16 (relative error <= 2^-11) moves some int8 activation codes downstream
      EXPECT_LE(max_abs_diff(got, want), 5e-2f * max_abs(want));
    }
  }
}

TEST_F(RoundTrip, F16EmbeddingsExactlyAsStored) {
  const Model m = test::random_model(cfg, 12);
  const auto want = logits_of(m, tokens, 2, 12);
  for (ExportKind kind : kAllKinds) {
    const Case c{kind, GgmlType::F16};
    const GgufModel g = round_trip(m, tok, c, dir / "m.gguf");
    const auto got = logits_of(g.model, tokens, 2, 12);
    EXPECT_EQ(got, logits_of(as_stored(m, c), tokens, 2, 12)) << export_kind_name(kind);
    // Against the fp32 model: f16 embeddings (relative error <= 2^-11 per value) flip a few int8 activation
    // codes; in this random model (max |logit| about 1.2) the largest change is about 3.4%.
    EXPECT_LE(max_abs_diff(got, want), 5e-2f * max_abs(want)) << export_kind_name(kind);
  }
}

TEST_F(RoundTrip, FixedScaleModel) {
  Model m = test::random_model(cfg, 13);
  // A snapped model: every linear exactly code * s with a stated s (rpt-fixed style, not the absmean).
  for (auto& v : m.views) {
    if (v.kind != ParamKind::Linear) continue;
    const float s = absmean_scale(m.params.data() + v.offset, v.numel) * 1.37f;
    m.fixed_scale[v.name] = s;
    TernaryWeight t = quantize_weight(m, v);
    auto w = m.tensor(v.name);
    for (size_t i = 0; i < w.size(); ++i) w[i] = float(t.codes[i]) * s;
  }
  const auto want = logits_of(m, tokens, 2, 12);
  for (ExportKind kind : kAllKinds) {
    const GgufModel g = round_trip(m, tok, {kind, GgmlType::F32}, dir / "m.gguf");
    if (kind != ExportKind::F16) {
      EXPECT_EQ(logits_of(g.model, tokens, 2, 12), want) << export_kind_name(kind);
    }
  }
}

TEST_F(RoundTrip, PrunedModel) {
  Model m = test::random_model(cfg, 14);
  // 80% of the latents zeroed, one linear entirely, and fixed scales so the zeros stay zero codes.
  size_t zero_codes = 0, total = 0;
  for (auto& v : m.views) {
    if (v.kind != ParamKind::Linear) continue;
    const float s = absmean_scale(m.params.data() + v.offset, v.numel);
    auto w = m.tensor(v.name);
    for (size_t i = 0; i < w.size(); ++i)
      if (i % 5 != 0 || v.name == Model::linear_name(1, kV)) w[i] = 0;
    m.fixed_scale[v.name] = s;
    const TernaryWeight t = quantize_weight(m, v);
    zero_codes += t.zeros;
    total += t.codes.size();
  }
  EXPECT_GT(double(zero_codes) / double(total), 0.8);
  const auto want = logits_of(m, tokens, 2, 12);
  for (ExportKind kind : kAllKinds) {
    const GgufModel g = round_trip(m, tok, {kind, GgmlType::F32}, dir / "m.gguf");
    if (kind != ExportKind::F16) {
      EXPECT_EQ(logits_of(g.model, tokens, 2, 12), want) << export_kind_name(kind);
    }
  }
}

TEST_F(RoundTrip, UntiedAndSiluWhereTheArchAllows) {
  BitNetConfig c = cfg;
  c.tie_word_embeddings = false;
  const Model untied = test::random_model(c, 15);
  const auto want = logits_of(untied, tokens, 2, 12);
  for (ExportKind kind : {ExportKind::I2_S, ExportKind::F32}) {
    const GgufModel g = round_trip(untied, tok, {kind, GgmlType::F32}, dir / "m.gguf");
    EXPECT_TRUE(g.format.lm_head);
    EXPECT_EQ(logits_of(g.model, tokens, 2, 12), want);
  }
  c = cfg;
  c.hidden_act = Activation::Silu;
  const Model silu = test::random_model(c, 16);
  for (ExportKind kind : {ExportKind::TQ2_0, ExportKind::TQ1_0}) {
    const GgufModel g = round_trip(silu, tok, {kind, GgmlType::F32}, dir / "m.gguf");
    EXPECT_EQ(g.format.activation, "silu");
    EXPECT_EQ(g.format.activation_source, "metadata");
    // Mainline would abort on bitnet.hidden_activation = silu (a fused gate|up op): the key is left out (its
    // default is SiLU) and ternlab's own key carries the activation.
    const GgufFile f(dir / "m.gguf");
    EXPECT_EQ(f.find("bitnet.hidden_activation"), nullptr);
    EXPECT_EQ(f.get<std::string>("ternlab.hidden_activation"), "silu");
  }
}

TEST_F(RoundTrip, ReaderHandsOutTensorsOneByOne) {
  const Model m = test::random_model(cfg, 17);
  export_gguf(m, tok, "", {ExportKind::I2_S, GgmlType::F16, "r"}, dir / "m.gguf");
  const GgufModelReader r(dir / "m.gguf");
  EXPECT_EQ(r.config().hidden_size, cfg.hidden_size);
  EXPECT_EQ(r.chat_template(), "");
  const TernaryWeight w = r.linear(1, kDown);
  const TernaryWeight want = quantize_weight(m, m.view(Model::linear_name(1, kDown)));
  EXPECT_EQ(w.out, want.out);
  EXPECT_EQ(w.in, want.in);
  EXPECT_EQ(w.codes, want.codes);
  EXPECT_EQ(w.scale, want.scale);
  EXPECT_EQ(w.zeros, want.zeros);
  const GgufFloatTable e = r.read_table("model.embed_tokens.weight");
  ASSERT_TRUE(e.is_f16());
  EXPECT_EQ(e.rows, cfg.vocab_size);
  EXPECT_EQ(e.cols, cfg.hidden_size);
  const auto x = m.tensor("model.embed_tokens.weight");
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(e.f16[i], f32_to_f16(x[i]));
  const auto norm = r.read_float("model.layers.1.mlp.ffn_sub_norm.weight");
  const auto want_norm = m.tensor("model.layers.1.mlp.ffn_sub_norm.weight");
  EXPECT_TRUE(std::equal(norm.begin(), norm.end(), want_norm.begin()));
  EXPECT_THAT(r.format().describe(), HasSubstr("bitnet.cpp (arch bitnet-b1.58"));
}

// An f16 table with an inf or a NaN is refused by read_table, naming the tensor and the element (checked on
// the f16 bits; no fp32 copy of the table).
TEST_F(RoundTrip, ReadTableRefusesNonFiniteF16) {
  const Model m = test::random_model(cfg, 19);
  export_gguf(m, tok, "", {ExportKind::I2_S, GgmlType::F16, "r"}, dir / "m.gguf");
  std::string image;
  {
    std::ifstream in(dir / "m.gguf", std::ios::binary);
    image.assign(std::istreambuf_iterator<char>(in), {});
  }
  // The embedding's first 16 values as stored (f16, little-endian) locate the table in the file.
  const auto x = m.tensor("model.embed_tokens.weight");
  std::string head;
  for (int i = 0; i < 16; ++i) {
    const uint16_t h = f32_to_f16(x[size_t(i)]);
    head += char(h & 0xFF);
    head += char(h >> 8);
  }
  const size_t at = image.find(head);
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(image.find(head, at + 1), std::string::npos);
  for (uint16_t bad : {uint16_t(0x7C00), uint16_t(0xFE00)}) {  // +inf, a NaN
    std::string patched = image;
    patched[at + 2 * 5] = char(bad & 0xFF);
    patched[at + 2 * 5 + 1] = char(bad >> 8);
    {
      std::ofstream out(dir / "bad.gguf", std::ios::binary);
      out << patched;
    }
    const GgufModelReader r(dir / "bad.gguf");
    EXPECT_THAT([&] { (void)r.read_table("model.embed_tokens.weight"); },
                ThrowsMessage<Error>(HasSubstr("tensor 'token_embd.weight' element 5 is")));
  }
}

TEST_F(RoundTrip, MetadataAsMainlineExpects) {
  const Model m = test::random_model(cfg, 18);
  export_gguf(m, tok, "tmpl", {ExportKind::TQ2_0, std::nullopt, "n"}, dir / "m.gguf");
  const GgufFile f(dir / "m.gguf");
  EXPECT_EQ(f.get<std::string>("general.architecture"), "bitnet");
  EXPECT_EQ(f.get<std::string>("bitnet.hidden_activation"), "relu2");
  EXPECT_EQ(f.get<uint32_t>("general.file_type"), 37u);
  EXPECT_EQ(f.get<uint32_t>("general.quantization_version"), 2u);
  EXPECT_EQ(f.get<uint32_t>("bitnet.rope.dimension_count"), 64u);
  EXPECT_EQ(f.get<uint32_t>("bitnet.attention.head_count_kv"), 2u);
  EXPECT_EQ(f.get<float>("bitnet.rope.freq_base"), 500000.0f);
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(f.get<std::string>("tokenizer.chat_template"), "tmpl");
  EXPECT_TRUE(f.get<bool>("tokenizer.ggml.add_bos_token"));
  const auto& tokens = f.get_array("tokenizer.ggml.tokens", GgufType::String).items;
  const auto& types = f.get_array("tokenizer.ggml.token_type", GgufType::I32).items;
  ASSERT_EQ(tokens.size(), 300u);
  EXPECT_EQ(*tokens[32].get_if<std::string>(), "\xC4\xA0");  // byte 0x20 as "Ġ"
  EXPECT_EQ(*types[32].get_if<int32_t>(), 1);
  EXPECT_EQ(*types[256].get_if<int32_t>(), 3);  // <|begin_of_text|>: control
  EXPECT_EQ(*tokens[295].get_if<std::string>(), "[PAD295]");
  EXPECT_EQ(*types[295].get_if<int32_t>(), 5);
  const auto& q = f.tensor("blk.0.attn_q.weight");
  EXPECT_EQ(q.type, GgmlType::TQ2_0);
  EXPECT_EQ(q.dims, (std::vector<uint64_t>{256, 256}));
  EXPECT_EQ(f.tensor("blk.0.attn_k.weight").dims, (std::vector<uint64_t>{256, 128}));
  EXPECT_EQ(f.tensor("blk.1.ffn_down.weight").dims, (std::vector<uint64_t>{512, 256}));
  EXPECT_EQ(f.tensor("token_embd.weight").dims, (std::vector<uint64_t>{256, 300}));
  EXPECT_EQ(f.tensor("token_embd.weight").type, GgmlType::F16);
  const auto& s = f.tensor("blk.0.attn_q.scale");
  EXPECT_EQ(s.type, GgmlType::F32);
  EXPECT_EQ(s.dims, (std::vector<uint64_t>{1}));
  float alpha;
  std::memcpy(&alpha, f.bytes(s).data(), 4);
  EXPECT_EQ(alpha, quantize_weight(m, m.view(Model::linear_name(0, kQ))).scale);
  // every block's d is exactly 1
  const auto qb = f.bytes(q);
  for (size_t b = 0; b < qb.size() / 66; ++b) ASSERT_EQ(qb[66 * b + 64] | (qb[66 * b + 65] << 8), 0x3c00);
  EXPECT_FALSE(f.find_tensor("output.weight"));
}

TEST_F(RoundTrip, TrainedTokenizerWithMergesIsSmaugBpe) {
  // A BPE tokenizer with merges and ignore_merges = false (how `ternlab tokenizer train` writes them).
  nlohmann::json doc = nlohmann::json::parse(Tokenizer::byte_level(258).to_json());
  auto& vocab = doc["model"]["vocab"];
  vocab["\xC4\xA0t"] = 258;  // "Ġt"
  vocab["he"] = 259;
  vocab["\xC4\xA0the"] = 260;
  doc["model"]["merges"] = {"\xC4\xA0 t", "h e", "\xC4\xA0t he"};
  doc["model"]["ignore_merges"] = false;
  const Tokenizer bpe = Tokenizer::from_json(doc.dump());
  const Model m = test::random_model(cfg, 19);
  export_gguf(m, bpe, "", {ExportKind::TQ1_0, GgmlType::F16, "bpe"}, dir / "m.gguf");
  const GgufModel g = import_gguf(dir / "m.gguf");
  EXPECT_EQ(g.format.tokenizer_pre, "smaug-bpe");
  EXPECT_EQ(g.tokenizer.merges(), bpe.merges());
  for (const auto& s : {std::string("the then he the"), std::string(" the\nthe")}) {
    EXPECT_EQ(g.tokenizer.encode(s, true), bpe.encode(s, true)) << s;
  }
  EXPECT_EQ(g.tokenizer.encode(" the"), (std::vector<int32_t>{260}));
}

}  // namespace
}  // namespace tl
