// import_gguf on files ternlab did not write: Microsoft's official bitnet-b1.58-2B-4T layout (rebuilt at tiny
// dims), bitnet-25, mainline conventions (d = alpha per block); and contradictory files, each refused with a
// message naming the key or tensor.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "../common/test_util.hpp"
#include "core/half.hpp"
#include "cpu/forward.hpp"
#include "deploy_test_util.hpp"
#include "formats/export.hpp"
#include "formats/import.hpp"
#include "formats/ternary_blocks.hpp"
#include "model/quant.hpp"

namespace tl {
namespace {

using test::error_of;
using test::GgufParts;
using test::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

// The key order and content of Microsoft's ggml-model-i2_s.gguf (reference §3.4 "Official GGUF contents"):
// 24 KV pairs, no tokenizer.ggml.pre, scores present, file_type 40, I2_S linears with the scale tiled over
// the 32-byte tail, F16 token_embd, F32 norms, its converter's chat template.
std::vector<uint8_t> microsoft_layout(const Model& m, const Tokenizer& tok) {
  const BitNetConfig& c = m.config;
  const std::string a = "bitnet-b1.58.";
  GgufMetadata kv;
  kv.emplace_back("general.architecture", "bitnet-b1.58");
  kv.emplace_back("general.name", "bitnet2b");
  kv.emplace_back(a + "vocab_size", uint32_t(c.vocab_size));
  kv.emplace_back(a + "context_length", uint32_t(c.max_position_embeddings));
  kv.emplace_back(a + "embedding_length", uint32_t(c.hidden_size));
  kv.emplace_back(a + "block_count", uint32_t(c.num_hidden_layers));
  kv.emplace_back(a + "feed_forward_length", uint32_t(c.intermediate_size));
  kv.emplace_back(a + "rope.dimension_count", uint32_t(c.head_dim));
  kv.emplace_back(a + "attention.head_count", uint32_t(c.num_attention_heads));
  kv.emplace_back(a + "attention.head_count_kv", uint32_t(c.num_key_value_heads));
  kv.emplace_back("tokenizer.ggml.add_bos_token", true);
  kv.emplace_back(a + "attention.layer_norm_rms_epsilon", float(c.rms_norm_eps));
  kv.emplace_back(a + "rope.freq_base", float(c.rope_theta));
  kv.emplace_back("general.file_type", uint32_t(40));
  kv.emplace_back("tokenizer.ggml.model", "gpt2");
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int32_t id = 0; id < int32_t(tok.vocab_size()); ++id) {
    tokens.push_back(tok.token(id));
    types.push_back(tok.is_special(id) ? 3 : 1);
  }
  kv.emplace_back("tokenizer.ggml.tokens", gguf_array(tokens));
  kv.emplace_back("tokenizer.ggml.scores", gguf_array(std::vector<float>(tokens.size(), 0.0f)));
  kv.emplace_back("tokenizer.ggml.token_type", gguf_array(types));
  kv.emplace_back("tokenizer.ggml.merges", gguf_array(std::vector<std::string>{}));
  kv.emplace_back("tokenizer.ggml.bos_token_id", uint32_t(c.bos_token_id));
  kv.emplace_back("tokenizer.ggml.eos_token_id", uint32_t(c.eos_token_id));
  kv.emplace_back("tokenizer.ggml.padding_token_id", uint32_t(c.eos_token_id));
  kv.emplace_back(
      "tokenizer.chat_template",
      "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{% if "
      "message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\\n\\nBITNETAssistant: ' + "
      "eos_token }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% "
      "endif %}{% endfor %}");
  kv.emplace_back("general.quantization_version", uint32_t(2));
  EXPECT_EQ(kv.size(), 24u);

  std::vector<std::vector<uint8_t>> data;
  std::vector<GgufTensorBlob> blobs;
  for (const auto& v : m.views) {
    std::string g;
    if (v.name == "model.embed_tokens.weight")
      g = "token_embd.weight";
    else if (v.name == "model.norm.weight")
      g = "output_norm.weight";
    else {
      const std::string l = v.name.substr(13, v.name.find('.', 13) - 13);
      const std::string part = v.name.substr(13 + l.size() + 1);
      static const std::map<std::string, std::string> map = {
          {"input_layernorm.weight", "attn_norm"},
          {"self_attn.q_proj.weight", "attn_q"},
          {"self_attn.k_proj.weight", "attn_k"},
          {"self_attn.v_proj.weight", "attn_v"},
          {"self_attn.o_proj.weight", "attn_output"},
          {"self_attn.attn_sub_norm.weight", "attn_sub_norm"},
          {"post_attention_layernorm.weight", "ffn_norm"},
          {"mlp.gate_proj.weight", "ffn_gate"},
          {"mlp.up_proj.weight", "ffn_up"},
          {"mlp.down_proj.weight", "ffn_down"},
          {"mlp.ffn_sub_norm.weight", "ffn_sub_norm"}};
      g = "blk." + l + "." + map.at(part) + ".weight";
    }
    const std::vector<uint64_t> dims(v.shape.rbegin(), v.shape.rend());
    const auto x = m.tensor(v.name);
    std::vector<uint8_t> bytes;
    GgmlType type = GgmlType::F32;
    if (v.kind == ParamKind::Linear) {
      const TernaryWeight t = quantize_weight(m, v);
      bytes.resize(t.codes.size() / 4 + 32);
      encode_i2_s(t.codes, t.scale, bytes, g);
      type = GgmlType::I2_S;
    } else if (v.kind == ParamKind::Embedding) {
      bytes.resize(x.size() * 2);
      for (size_t i = 0; i < x.size(); ++i) {
        const uint16_t h = f32_to_f16(x[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
      type = GgmlType::F16;
    } else {
      bytes.resize(x.size_bytes());
      std::memcpy(bytes.data(), x.data(), x.size_bytes());
    }
    data.push_back(std::move(bytes));
    blobs.push_back({{g, type, dims}, {}});
  }
  for (size_t i = 0; i < blobs.size(); ++i) blobs[i].data = data[i];
  return gguf_bytes(kv, blobs);
}

class Import : public ::testing::Test {
 protected:
  BitNetConfig cfg = test::small_config();
  Tokenizer tok = Tokenizer::byte_level(300);
  Model model = test::random_model(cfg, 21);
  TempDir dir;

  std::vector<uint8_t> exported(ExportKind kind) {
    const fs::path p = dir / (std::string(export_kind_name(kind)) + ".gguf");
    if (!fs::exists(p)) export_gguf(model, tok, "", {kind, GgmlType::F32, "t"}, p);
    return test::read_bytes(p);
  }
  GgufParts parts(ExportKind kind) {
    image_ = exported(kind);
    return GgufParts(GgufFile(image_, "x.gguf"));
  }
  std::string refusal(const GgufParts& p, const ImportOptions& o = {}) {
    const auto img = p.bytes();
    return error_of([&] { import_gguf(img, "bad.gguf", o); });
  }
  void expect_same_codes(const Model& got) {
    for (const auto& v : model.views)
      if (v.kind == ParamKind::Linear) {
        const auto a = quantize_weight(model, v), b = quantize_weight(got, got.view(v.name));
        EXPECT_EQ(a.codes, b.codes) << v.name;
        EXPECT_EQ(a.scale, b.scale) << v.name;
      }
  }

 private:
  std::vector<uint8_t> image_;
};

TEST_F(Import, MicrosoftOfficialLayout) {
  const auto img = microsoft_layout(model, tok);
  const GgufModel g = import_gguf(img, "ggml-model-i2_s.gguf");
  EXPECT_EQ(g.format.arch, "bitnet-b1.58");
  EXPECT_EQ(g.format.engine, "bitnet.cpp");
  EXPECT_EQ(g.format.tokenizer_pre, "");
  EXPECT_EQ(g.format.tokenizer_pre_used, "llama-bpe");
  EXPECT_EQ(g.format.activation, "relu2");
  EXPECT_EQ(g.format.activation_source, "implied by the arch");
  EXPECT_EQ(g.format.file_type, 40);
  EXPECT_EQ(g.format.embed_type, GgmlType::F16);
  EXPECT_EQ(g.format.linear_types, std::vector<GgmlType>{GgmlType::I2_S});
  EXPECT_THAT(g.chat_template, HasSubstr("BITNETAssistant"));
  EXPECT_EQ(g.config.hidden_act, Activation::Relu2);
  EXPECT_TRUE(g.config.tie_word_embeddings);
  EXPECT_EQ(g.config.pad_token_id, cfg.eos_token_id);
  expect_same_codes(g.model);
  for (const auto& s : {"Hello there", " 12345 tokens\n"})
    EXPECT_EQ(g.tokenizer.encode(s, true), tok.encode(s, true));
  // the bitnet-25 name of the same layout (the January-2025 preview file)
  GgufParts p(GgufFile(img, "x"));
  p.rename_arch("bitnet-b1.58", "bitnet-25");
  const auto img25 = p.bytes();
  const GgufModel g25 = import_gguf(img25, "bitnet-25.gguf");
  EXPECT_EQ(g25.format.arch, "bitnet-25");
  expect_same_codes(g25.model);
}

TEST_F(Import, MainlineConverterConventionDIsAlphaPerBlock) {
  // llama.cpp's own quantizer writes d = max|x| of each block and no .scale tensor; for a ternarized
  // tensor that is f16(alpha) in every block that holds a nonzero code, and 0 in all-zero blocks.
  GgufParts p = parts(ExportKind::TQ2_0);
  for (auto& t : p.tensors) {
    if (t.spec.type != GgmlType::TQ2_0) continue;
    const auto* s = p.tensor(t.spec.name.substr(0, t.spec.name.size() - 7) + ".scale");
    float alpha;
    std::memcpy(&alpha, s->data.data(), 4);
    const uint16_t d = f32_to_f16(alpha);
    for (size_t b = 0; b < t.data.size() / 66; ++b) std::memcpy(t.data.data() + 66 * b + 64, &d, 2);
    // block 0 made all zero with d = 0
    std::fill(t.data.begin(), t.data.begin() + 64, uint8_t(0x55));
    t.data[64] = t.data[65] = 0;
  }
  std::erase_if(p.tensors, [](const auto& t) { return t.spec.name.ends_with(".scale"); });
  const auto img = p.bytes();
  const GgufModel g = import_gguf(img, "mainline.gguf");
  EXPECT_FALSE(g.format.scale_tensors);
  const TernaryWeight w = quantize_weight(g.model, g.model.view(Model::linear_name(0, kQ)));
  const TernaryWeight want = quantize_weight(model, model.view(Model::linear_name(0, kQ)));
  EXPECT_EQ(w.scale, f16_to_f32(f32_to_f16(want.scale)));
  EXPECT_TRUE(std::all_of(w.codes.begin(), w.codes.begin() + 256, [](int8_t c) { return c == 0; }));
  EXPECT_TRUE(std::equal(w.codes.begin() + 256, w.codes.end(), want.codes.begin() + 256));
}

TEST_F(Import, BitnetWithoutActivationRefusedUnlessGiven) {
  GgufParts p = parts(ExportKind::TQ2_0);
  p.erase("bitnet.hidden_activation");
  EXPECT_THAT(refusal(p),
              AllOf(HasSubstr("bad.gguf"), HasSubstr("bitnet.hidden_activation"), HasSubstr("SiLU")));
  const auto img = p.bytes();
  ImportOptions relu2;
  relu2.hidden_act = "relu2";
  const GgufModel g = import_gguf(img, "ok.gguf", relu2);
  EXPECT_EQ(g.format.activation_source, "override");
  EXPECT_EQ(g.config.hidden_act, Activation::Relu2);
  p.set("bitnet.hidden_activation", "gelu");
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("bitnet.hidden_activation"), HasSubstr("'gelu'")));
}

TEST_F(Import, BitnetCppArchWithSiluRefused) {
  GgufParts p = parts(ExportKind::I2_S);
  p.set("bitnet-b1.58.hidden_activation", "silu");
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("bitnet-b1.58.hidden_activation"), HasSubstr("contradicts")));
}

TEST_F(Import, DimsContradictingMetadataRefused) {
  GgufParts p = parts(ExportKind::TQ1_0);
  p.set("bitnet.attention.head_count_kv", uint32_t(1));
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("blk.0.attn_k.weight"), HasSubstr("{256, 128}"),
                                HasSubstr("expected {256, 64}"), HasSubstr("head_count_kv 1")));
  p = parts(ExportKind::TQ1_0);
  p.set("bitnet.rope.dimension_count", uint32_t(32));
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("bitnet.rope.dimension_count = 32"), HasSubstr("head_dim")));
  p = parts(ExportKind::TQ1_0);
  p.set("bitnet.feed_forward_length", uint32_t(768));
  EXPECT_THAT(refusal(p), HasSubstr("'blk.0.ffn_gate.weight' has dims {256, 512}, expected {256, 768} "
                                    "(embedding_length 256, feed_forward_length 768)"));
}

TEST_F(Import, VocabularyCountsMustAgree) {
  GgufParts p = parts(ExportKind::I2_S);
  p.set("bitnet-b1.58.vocab_size", uint32_t(301));
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("bitnet-b1.58.vocab_size = 301"), HasSubstr("300 entries")));
  p = parts(ExportKind::I2_S);
  p.erase("bitnet-b1.58.vocab_size");
  for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type"}) {
    GgufArray a = *p.find(key)->get_if<GgufArray>();
    a.items.pop_back();
    p.set(key, GgufValue(std::move(a)));
  }
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("token_embd.weight"), HasSubstr("expected {256, 299}")));
}

TEST_F(Import, PerBlockScalesRefused) {
  GgufParts p = parts(ExportKind::TQ2_0);
  auto* t = p.tensor("blk.1.ffn_up.weight");
  const uint16_t two = f32_to_f16(2.0f);
  std::memcpy(t->data.data() + 66 * 3 + 64, &two, 2);
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("blk.1.ffn_up.weight"), HasSubstr("block 3 has d = 2"),
                                HasSubstr("not a per-tensor ternary weight")));
  p = parts(ExportKind::TQ1_0);
  t = p.tensor("blk.0.attn_v.weight");
  std::memcpy(t->data.data() + 54 * 1 + 52, &two, 2);
  EXPECT_THAT(refusal(p),
              AllOf(HasSubstr("blk.0.attn_v.weight"), HasSubstr("not a per-tensor ternary weight")));
}

TEST_F(Import, InvalidCodesRefused) {
  GgufParts p = parts(ExportKind::TQ2_0);
  p.tensor("blk.0.ffn_gate.weight")->data[10] = 0xff;
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("blk.0.ffn_gate.weight"), HasSubstr("unused 2-bit code 3")));
  p = parts(ExportKind::I2_S);
  p.tensor("blk.1.attn_output.weight")->data[0] = 0xff;
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("blk.1.attn_output.weight"), HasSubstr("unused 2-bit code 3")));
  p = parts(ExportKind::F32);
  float odd = 0.001f;  // below alpha (about 0.016), so max |w| stays alpha
  std::memcpy(p.tensor("blk.0.attn_q.weight")->data.data() + 4 * 5, &odd, 4);
  EXPECT_THAT(refusal(p),
              AllOf(HasSubstr("blk.0.attn_q.weight"), HasSubstr("[0, 5] = 0.001 is neither 0 nor ±"),
                    HasSubstr("not a ternary weight")));
  p = parts(ExportKind::I2_S);
  auto& d = p.tensor("blk.0.attn_q.weight")->data;
  const float bad = -1.0f;
  std::memcpy(d.data() + d.size() - 32, &bad, 4);
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("blk.0.attn_q.weight"), HasSubstr("scale -1")));
}

TEST_F(Import, TruncatedFileRefused) {
  const auto img = exported(ExportKind::I2_S);
  const auto error_at = [&](size_t cut) {
    const std::vector<uint8_t> part(img.begin(), img.begin() + ptrdiff_t(cut));
    return error_of([&] { import_gguf(part, "cut.gguf"); });
  };
  EXPECT_THAT(error_at(img.size() - 100),
              AllOf(HasSubstr("cut.gguf: tensor 'output_norm.weight'"), HasSubstr("(file truncated?)")));
  EXPECT_THAT(error_at(img.size() / 2), AllOf(HasSubstr("cut.gguf"), HasSubstr("truncated")));
  EXPECT_THAT(error_at(200), AllOf(HasSubstr("cut.gguf"), HasSubstr("cannot fit")));
}

TEST_F(Import, TokenizerPreTokenizer) {
  GgufParts p = parts(ExportKind::TQ2_0);
  p.set("tokenizer.ggml.pre", "qwen2");
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("tokenizer.ggml.pre 'qwen2' is not supported")));
  // mainline without pre: llama.cpp would use its default regex; refused unless a name is given
  p.erase("tokenizer.ggml.pre");
  EXPECT_THAT(refusal(p), HasSubstr("no tokenizer.ggml.pre"));
  const auto img = p.bytes();
  ImportOptions llama3;
  llama3.tokenizer_pre = "llama3";
  EXPECT_EQ(import_gguf(img, "x", llama3).format.tokenizer_pre_used, "llama3");
  p.set("tokenizer.ggml.model", "llama");
  EXPECT_THAT(refusal(p), HasSubstr("tokenizer.ggml.model is 'llama'"));
}

TEST_F(Import, ArchitectureRules) {
  GgufParts p = parts(ExportKind::I2_S);
  p.rename_arch("bitnet-b1.58", "bitnet");
  p.set("bitnet.hidden_activation", "relu2");
  EXPECT_THAT(refusal(p),
              AllOf(HasSubstr("blk.0.attn_q.weight"), HasSubstr("type id 36"), HasSubstr("IQ4_NL_4_4")));
  p = parts(ExportKind::I2_S);
  p.rename_arch("bitnet-b1.58", "llama");
  EXPECT_THAT(refusal(p), AllOf(HasSubstr("general.architecture 'llama'"), HasSubstr("not a BitNet")));
  p = parts(ExportKind::TQ2_0);
  p.erase_tensor("blk.1.ffn_down.weight");
  EXPECT_THAT(refusal(p), HasSubstr("missing tensor 'blk.1.ffn_down.weight'"));
  p = parts(ExportKind::TQ2_0);
  p.erase("bitnet.attention.layer_norm_rms_epsilon");
  EXPECT_THAT(refusal(p), HasSubstr("missing metadata key 'bitnet.attention.layer_norm_rms_epsilon'"));
  p = parts(ExportKind::TQ2_0);
  p.tensors.push_back(*p.tensor("token_embd.weight"));
  p.tensors.back().spec.name = "output.weight";
  EXPECT_THAT(refusal(p),
              AllOf(HasSubstr("'output.weight'"), HasSubstr("arch bitnet (llama.cpp) has no output")));
  p = parts(ExportKind::I2_S);
  p.tensors.push_back(*p.tensor("output_norm.weight"));
  p.tensors.back().spec.name = "rope_freqs.weight";
  EXPECT_THAT(refusal(p), HasSubstr("'rope_freqs.weight': unexpected tensor"));
  p = parts(ExportKind::TQ2_0);
  p.set("bitnet.rope.scaling.type", "yarn");
  EXPECT_THAT(refusal(p), HasSubstr("bitnet.rope.scaling.type 'yarn'"));
}

}  // namespace
}  // namespace tl
