// Checkpoint directories <-> Model: round trips in both layouts, the packing rule, a transformers-written
// checkpoint, and damaged checkpoints.
#include "formats/checkpoint.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "core/half.hpp"
#include "formats/hf_config.hpp"
#include "io_test_util.hpp"
#include "model/quant.hpp"

namespace tl {
namespace {

using testing::error_of;
using ::testing::HasSubstr;
using testing::TempDir;

// The tiny preset with random weights and norms that are not all one (so a swapped norm shows).
Model tiny_model(bool tied = true, uint64_t seed = 7) {
  BitNetConfig cfg = config_preset("tiny");
  cfg.tie_word_embeddings = tied;
  Model m = make_model(cfg);
  init_random(m, seed);
  for (const auto& v : m.views)
    if (v.kind == ParamKind::Norm)
      for (size_t i = 0; i < v.numel; ++i) m.params[v.offset + i] = 1.0f + 0.01f * float(i % 17);
  return m;
}

float bf16_round(float x) {
  return bf16_to_f32(f32_to_bf16(x));
}

std::string layer0(const char* part) {
  return std::string("model.layers.0.") + part;
}

// ---- round trips: Master / Packed x BF16 / F32 x one file / shards ----

struct RoundTripCase {
  CheckpointLayout layout;
  DType dtype;
  bool sharded;
};

class RoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(RoundTrip, SavesAndLoads) {
  const auto [layout, dtype, sharded] = GetParam();
  const bool packed = layout == CheckpointLayout::Packed;
  TempDir tmp;
  Model m = tiny_model();
  // One linear with a fixed (rpt-fixed style) scale: Packed must store that scale, not absmean.
  const std::string fixed = layer0("mlp.up_proj.weight");
  if (packed) m.fixed_scale[fixed] = 0.03f;

  SaveOptions opt;
  opt.layout = layout;
  opt.dtype = dtype;
  opt.max_shard_bytes = sharded ? 16 * 1024 : 0;
  save_checkpoint(m, tmp.path(), opt);

  // Exactly the tensors BitNetForCausalLM expects, in views order; no lm_head when tied.
  SafetensorsDir files(tmp.path());
  std::vector<std::string> want;
  for (const auto& v : m.views) {
    want.push_back(v.name);
    if (packed && v.kind == ParamKind::Linear) want.push_back(v.name + "_scale");
  }
  EXPECT_EQ(files.names(), want);
  EXPECT_EQ(files.find("lm_head.weight"), nullptr);
  EXPECT_EQ(files.sharded(), sharded);
  if (sharded) {
    EXPECT_GT(files.num_files(), 2u);
    EXPECT_TRUE(fs::exists(tmp / fmt::format("model-00001-of-{:05d}.safetensors", files.num_files())));
    EXPECT_FALSE(fs::exists(tmp / kSafetensorsFile));
  }
  for (const auto& n : files.names()) {
    const auto& t = *files.find(n)->info;
    const bool is_code = packed && t.name.find("_proj.weight") != std::string::npos &&
                         t.name.find("weight_scale") == std::string::npos;
    EXPECT_EQ(t.dtype, is_code ? DType::U8 : dtype) << n;
    if (n.find("weight_scale") != std::string::npos) {
      EXPECT_EQ(t.shape, std::vector<int64_t>{1});
    }
  }

  const Model l = load_checkpoint(tmp.path());
  EXPECT_EQ(l.config.quant_mode, packed ? QuantMode::Offline : QuantMode::Online);
  EXPECT_TRUE(l.config.has_quantization_config);
  EXPECT_EQ(l.config.linear_class, LinearClass::AutoBitLinear);
  EXPECT_EQ(l.config.torch_dtype, dtype == DType::BF16 ? "bfloat16" : "float32");
  EXPECT_EQ(l.config.hidden_size, m.config.hidden_size);
  EXPECT_EQ(l.config.tie_word_embeddings, true);
  ASSERT_EQ(l.params.size(), m.params.size());
  const DType stored_dtype = dtype;  // a copy: clang 14 cannot capture a structured binding
  auto stored = [&](float x) { return stored_dtype == DType::BF16 ? bf16_round(x) : x; };
  for (const auto& v : m.views) {
    if (packed && v.kind == ParamKind::Linear) {
      const TernaryWeight a = quantize_weight(m, v), b = quantize_weight(l, l.view(v.name));
      EXPECT_EQ(a.codes, b.codes) << v.name;
      ASSERT_TRUE(l.fixed_scale.count(v.name)) << v.name;
      EXPECT_EQ(l.fixed_scale.at(v.name), stored(a.scale)) << v.name;
      if (v.name == fixed) {
        EXPECT_EQ(l.fixed_scale.at(v.name), stored(0.03f));
      }
      for (size_t i = 0; i < v.numel; ++i)
        ASSERT_EQ(l.params[v.offset + i], float(a.codes[i]) * stored(a.scale)) << v.name << " " << i;
    } else {
      for (size_t i = 0; i < v.numel; ++i)
        ASSERT_EQ(l.params[v.offset + i], stored(m.params[v.offset + i])) << v.name << " " << i;
    }
  }
  if (!packed) {
    EXPECT_TRUE(l.fixed_scale.empty());
  }
}

INSTANTIATE_TEST_SUITE_P(AllLayouts, RoundTrip,
                         ::testing::Values(RoundTripCase{CheckpointLayout::Master, DType::BF16, false},
                                           RoundTripCase{CheckpointLayout::Master, DType::BF16, true},
                                           RoundTripCase{CheckpointLayout::Master, DType::F32, false},
                                           RoundTripCase{CheckpointLayout::Master, DType::F32, true},
                                           RoundTripCase{CheckpointLayout::Packed, DType::BF16, false},
                                           RoundTripCase{CheckpointLayout::Packed, DType::BF16, true},
                                           RoundTripCase{CheckpointLayout::Packed, DType::F32, false},
                                           RoundTripCase{CheckpointLayout::Packed, DType::F32, true}),
                         [](const auto& info) {
                           return std::string(info.param.layout == CheckpointLayout::Master ? "Master"
                                                                                            : "Packed") +
                                  std::string(dtype_name(info.param.dtype)) +
                                  (info.param.sharded ? "Sharded" : "OneFile");
                         });

TEST(Checkpoint, PackedRoundTripIsAFixedPoint) {
  // Saving what was loaded from a packed checkpoint reproduces the same files byte for byte.
  TempDir a, b;
  save_checkpoint(tiny_model(), a.path(), {CheckpointLayout::Packed, DType::BF16, 0});
  save_checkpoint(load_checkpoint(a.path()), b.path(), {CheckpointLayout::Packed, DType::BF16, 0});
  EXPECT_EQ(read_file(a / kSafetensorsFile), read_file(b / kSafetensorsFile));
  EXPECT_EQ(read_file(a / "config.json"), read_file(b / "config.json"));
}

TEST(Checkpoint, UntiedHeadRoundTrip) {
  TempDir tmp;
  const Model m = tiny_model(/*tied=*/false);
  save_checkpoint(m, tmp.path(), {CheckpointLayout::Master, DType::F32, 0});
  SafetensorsDir files(tmp.path());
  ASSERT_NE(files.find("lm_head.weight"), nullptr);
  const Model l = load_checkpoint(tmp.path());
  EXPECT_FALSE(l.config.tie_word_embeddings);
  EXPECT_EQ(l.params, m.params);
}

TEST(Checkpoint, ResavingReplacesStaleFiles) {
  TempDir tmp;
  const Model m = tiny_model();
  auto files_in_dir = [&] {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(tmp.path())) names.insert(e.path().filename().string());
    return names;
  };
  auto expect_only_current = [&] {
    SafetensorsDir d(tmp.path());
    std::set<std::string> want{"config.json"};
    if (d.sharded()) want.insert(kSafetensorsIndex);
    for (const auto& n : d.names()) want.insert(d.find(n)->file->path().filename().string());
    EXPECT_EQ(files_in_dir(), want);  // no stale shards, no temporaries
    EXPECT_NO_THROW(load_checkpoint(tmp.path()));
  };
  save_checkpoint(m, tmp.path(), {CheckpointLayout::Master, DType::BF16, 8 * 1024});
  const size_t many = SafetensorsDir(tmp.path()).num_files();
  save_checkpoint(m, tmp.path(), {CheckpointLayout::Master, DType::BF16, 64 * 1024});
  EXPECT_LT(SafetensorsDir(tmp.path()).num_files(), many);
  expect_only_current();
  save_checkpoint(m, tmp.path(), {CheckpointLayout::Master, DType::BF16, 0});
  EXPECT_FALSE(fs::exists(tmp / kSafetensorsIndex));
  expect_only_current();
  save_checkpoint(m, tmp.path(), {CheckpointLayout::Packed, DType::BF16, 16 * 1024});
  EXPECT_FALSE(fs::exists(tmp / kSafetensorsFile));
  expect_only_current();
}

TEST(Checkpoint, CreatesMissingDirectoryAndRejectsBadOptions) {
  TempDir tmp;
  const Model m = tiny_model();
  save_checkpoint(m, tmp / "a/b/c", {});
  EXPECT_TRUE(fs::exists(tmp / "a/b/c/config.json"));
  EXPECT_THAT(error_of([&] {
                save_checkpoint(m, tmp / "d", {CheckpointLayout::Master, DType::F16, 0});
              }),
              HasSubstr("dtype F16 not supported (expected BF16 or F32)"));
}

// ---- the packing rule (reference §1.6 and transformers' unpack_weights docstring) ----

TEST(Packing, WorkedExample) {
  // R = 2: byte [r, c] bits 2i..2i+1 hold code T[i*2 + r, c] + 1.
  const std::vector<uint8_t> packed{0b10100001, 0b00011000, 0b10010000, 0b00001010};  // [2, 2]
  std::vector<int8_t> codes(16);
  unpack_ternary(packed, /*out=*/8, /*in=*/2, codes, "example");
  std::vector<int> col0, col1;
  for (int r = 0; r < 8; ++r) {
    col0.push_back(codes[size_t(r * 2)]);
    col1.push_back(codes[size_t(r * 2 + 1)]);
  }
  EXPECT_EQ(col0, (std::vector<int>{0, -1, -1, -1, 1, 0, 1, 1}));
  EXPECT_EQ(col1, (std::vector<int>{-1, 1, 1, 1, 0, -1, -1, -1}));
  EXPECT_EQ(pack_ternary(codes, 8, 2), packed);
}

TEST(Packing, RoundTripAndCode3) {
  std::vector<int8_t> codes(12 * 5);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = int8_t(int(i * 7 % 3) - 1);
  const auto packed = pack_ternary(codes, 12, 5);
  ASSERT_EQ(packed.size(), 15u);
  std::vector<int8_t> back(codes.size());
  unpack_ternary(packed, 12, 5, back, "t");
  EXPECT_EQ(back, codes);
  auto bad = packed;
  bad[7] = 0b00110101;  // [1, 2]: code 3 in bits 4..5
  EXPECT_THAT(error_of([&] { unpack_ternary(bad, 12, 5, back, "w"); }),
              HasSubstr("w: invalid ternary code 3 in packed byte [1, 2] = 0x35, bits 4..5"));
  EXPECT_THAT(error_of([&] { pack_ternary(codes, 10, 6); }), HasSubstr("must be a positive multiple of 4"));
  codes[3] = 2;
  EXPECT_THAT(error_of([&] { pack_ternary(codes, 12, 5); }), HasSubstr("code 2 at [0, 3] is not -1, 0 or 1"));
}

class HandPacked : public ::testing::TestWithParam<const char*> {};

TEST_P(HandPacked, RowStrideAndScaleSemantics) {
  // A packed checkpoint whose layer-0 q_proj ([64, 64] -> packed [16, 64], R = 16) gets the worked example's
  // bytes in column 0 and a weight_scale of 0.5.
  const std::string linear_class = GetParam();
  TempDir tmp;
  save_checkpoint(tiny_model(), tmp.path(), {CheckpointLayout::Packed, DType::BF16, 0});
  const fs::path file = tmp / kSafetensorsFile;
  const std::string q = layer0("self_attn.q_proj.weight");
  const uint64_t at = testing::tensor_file_offset(file, q);
  const uint8_t b0 = 0b10100001, b1 = 0b10010000;
  testing::patch_file(file, at, &b0, 1);       // byte [0, 0]
  testing::patch_file(file, at + 64, &b1, 1);  // byte [1, 0]
  const uint16_t half = f32_to_bf16(0.5f);
  testing::patch_file(file, testing::tensor_file_offset(file, q + "_scale"), &half, 2);
  auto cfg = nlohmann::json::parse(read_file(tmp / "config.json"));
  cfg["quantization_config"]["linear_class"] = linear_class;
  testing::write_text(tmp / "config.json", cfg.dump());

  const Model l = load_checkpoint(tmp.path());
  const float alpha = linear_class == "autobitlinear" ? 0.5f : 2.0f;  // bitlinear divides by weight_scale
  EXPECT_EQ(l.fixed_scale.at(q), alpha);
  const auto w = l.tensor(q);  // [64, 64]
  auto at_rc = [&](int r, int c) { return w[size_t(r * 64 + c)]; };
  const int rows0[4] = {0, 16, 32, 48}, rows1[4] = {1, 17, 33, 49};
  const float want0[4] = {0, -1, 1, 1}, want1[4] = {-1, -1, 0, 1};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(at_rc(rows0[i], 0), want0[i] * alpha) << "row " << rows0[i];
    EXPECT_EQ(at_rc(rows1[i], 0), want1[i] * alpha) << "row " << rows1[i];
  }
  EXPECT_EQ(l.config.linear_class,
            linear_class == "autobitlinear" ? LinearClass::AutoBitLinear : LinearClass::BitLinear);
}

INSTANTIATE_TEST_SUITE_P(BothClasses, HandPacked, ::testing::Values("autobitlinear", "bitlinear"));

// ---- other accepted forms ----

TEST(Checkpoint, LoadsTransformersV5Checkpoint) {
  // Written by transformers 5.17 save_pretrained (tiny BitNet, bf16, tied, no quantization_config).
  const Model l = load_checkpoint(fs::path(TERNLAB_SOURCE_DIR) / "tests/formats/data/hf_v5_tiny");
  EXPECT_EQ(l.config.hidden_size, 64);
  EXPECT_EQ(l.config.num_hidden_layers, 2);
  EXPECT_TRUE(l.config.tie_word_embeddings);
  EXPECT_FALSE(l.config.has_quantization_config);
  EXPECT_EQ(l.config.torch_dtype, "bfloat16");
  auto abs_sum = [&](const std::string& n) {
    double s = 0;
    for (float x : l.tensor(n)) s += std::fabs(double(x));
    return s;
  };
  // Sums and end values decoded independently (Python struct) from the same file.
  EXPECT_NEAR(abs_sum("model.embed_tokens.weight"), 521.5029770191759, 1e-9);
  EXPECT_NEAR(abs_sum("model.layers.0.self_attn.q_proj.weight"), 65.64863507449627, 1e-9);
  EXPECT_NEAR(abs_sum("model.layers.1.mlp.down_proj.weight"), 162.5878080073744, 1e-9);
  EXPECT_EQ(l.tensor("model.embed_tokens.weight").front(), -0.015869140625f);
  EXPECT_EQ(l.tensor("model.layers.1.mlp.down_proj.weight").back(), -0.00616455078125f);
  for (float x : l.tensor("model.norm.weight")) EXPECT_EQ(x, 1.0f);  // transformers initialises norms to 1
}

TEST(Checkpoint, AcceptsLegacySubNormNamesF16AndScalarScales) {
  TempDir tmp;
  const Model m = tiny_model();
  save_checkpoint(m, tmp.path(), {CheckpointLayout::Packed, DType::F32, 0});
  testing::rewrite(tmp / kSafetensorsFile, [](std::vector<testing::OwnedTensor>& ts) {
    for (auto& t : ts) {
      auto& n = t.spec.name;
      if (auto p = n.find("attn_sub_norm"); p != std::string::npos) n.replace(p, 13, "inner_attn_ln");
      if (auto p = n.find("ffn_sub_norm"); p != std::string::npos) n.replace(p, 12, "ffn_layernorm");
      if (n.find("weight_scale") != std::string::npos) t.spec.shape = {};  // 0-d scalar, as some files store
      if (n == "model.norm.weight") {                                      // F32 -> F16
        std::vector<uint8_t> h;
        for (size_t i = 0; i < t.data.size(); i += 4) {
          float x;
          std::memcpy(&x, &t.data[i], 4);
          const uint16_t v = f32_to_f16(x);
          h.push_back(uint8_t(v));
          h.push_back(uint8_t(v >> 8));
        }
        t.data = h;
        t.spec.dtype = DType::F16;
      }
    }
  });
  const Model l = load_checkpoint(tmp.path());
  for (const char* n :
       {"model.layers.1.self_attn.attn_sub_norm.weight", "model.layers.0.mlp.ffn_sub_norm.weight"})
    for (size_t i = 0; i < l.view(n).numel; ++i) EXPECT_EQ(l.tensor(n)[i], m.tensor(n)[i]) << n;
  for (size_t i = 0; i < 64; ++i)
    EXPECT_EQ(l.tensor("model.norm.weight")[i], f16_to_f32(f32_to_f16(m.tensor("model.norm.weight")[i])));
}

TEST(Checkpoint, TiedHeadAcceptedOnlyIfIdentical) {
  TempDir tmp;
  save_checkpoint(tiny_model(), tmp.path(), {CheckpointLayout::Master, DType::BF16, 0});
  testing::rewrite(tmp / kSafetensorsFile, [](std::vector<testing::OwnedTensor>& ts) {
    auto head = ts[0];  // model.embed_tokens.weight
    head.spec.name = "lm_head.weight";
    ts.push_back(head);
  });
  EXPECT_NO_THROW(load_checkpoint(tmp.path()));
  testing::rewrite(tmp / kSafetensorsFile,
                   [](std::vector<testing::OwnedTensor>& ts) { ts.back().data[10] ^= 1; });
  EXPECT_THAT(
      error_of([&] { load_checkpoint(tmp.path()); }),
      HasSubstr("tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight"));
}

TEST(Checkpoint, WarnsOnAllZeroTensor) {
  TempDir tmp;
  Model m = tiny_model();
  for (auto& x : m.tensor(layer0("post_attention_layernorm.weight"))) x = 0.0f;
  save_checkpoint(m, tmp.path(), {CheckpointLayout::Master, DType::BF16, 0});
  ::testing::internal::CaptureStderr();
  load_checkpoint(tmp.path());
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err,
              HasSubstr("tensor 'model.layers.0.post_attention_layernorm.weight': all 64 values are zero"));
}

// ---- damaged checkpoints ----

class Damaged : public ::testing::Test {
 protected:
  void save(CheckpointLayout layout, uint64_t shard = 0) {
    save_checkpoint(tiny_model(), tmp.path(), {layout, DType::BF16, shard});
  }
  void rewrite(const std::function<void(std::vector<testing::OwnedTensor>&)>& edit) {
    testing::rewrite(tmp / kSafetensorsFile, edit);
  }
  std::string load_error() {
    return error_of([&] { load_checkpoint(tmp.path()); });
  }
  void set_config(const std::function<void(nlohmann::json&)>& edit) {
    auto j = nlohmann::json::parse(read_file(tmp / "config.json"));
    edit(j);
    testing::write_text(tmp / "config.json", j.dump());
  }
  static auto named(const std::string& n) {
    return [n](const testing::OwnedTensor& t) { return t.spec.name == n; };
  }
  TempDir tmp;
};

TEST_F(Damaged, MissingTensor) {
  save(CheckpointLayout::Master);
  rewrite([](auto& ts) { std::erase_if(ts, named("model.layers.1.mlp.up_proj.weight")); });
  EXPECT_THAT(load_error(),
              HasSubstr("missing tensor 'model.layers.1.mlp.up_proj.weight' (shape [160, 64])"));
}

TEST_F(Damaged, UnexpectedTensor) {
  save(CheckpointLayout::Master);
  rewrite([](auto& ts) {
    ts.push_back(
        {{"model.layers.0.self_attn.rotary_emb.inv_freq", DType::F32, {8}}, std::vector<uint8_t>(32)});
  });
  EXPECT_THAT(load_error(), HasSubstr("unexpected tensor 'model.layers.0.self_attn.rotary_emb.inv_freq'"));
}

TEST_F(Damaged, WrongShape) {
  save(CheckpointLayout::Master);
  rewrite([](auto& ts) {
    for (auto& t : ts)
      if (t.spec.name == layer0("self_attn.k_proj.weight")) t.spec.shape = {64, 32};
  });
  EXPECT_THAT(load_error(),
              HasSubstr("tensor 'model.layers.0.self_attn.k_proj.weight': shape mismatch: expected "
                        "[32, 64], found [64, 32]"));
}

TEST_F(Damaged, DtypeNotAllowed) {
  save(CheckpointLayout::Master);
  rewrite([](auto& ts) {
    for (auto& t : ts)
      if (t.spec.name == "model.norm.weight") t.spec.dtype = DType::I16;
  });
  EXPECT_THAT(load_error(),
              HasSubstr("tensor 'model.norm.weight': dtype I16 not allowed (expected BF16, F16 or F32)"));
}

TEST_F(Damaged, NaNAndInfWeights) {
  save(CheckpointLayout::Master);
  const fs::path file = tmp / kSafetensorsFile;
  const uint16_t nan = 0x7fc0, inf = 0x7f80, one = f32_to_bf16(1.0f);
  const uint64_t o = testing::tensor_file_offset(file, layer0("self_attn.o_proj.weight"));
  testing::patch_file(file, o + 2 * 69, &nan, 2);  // [1, 5] of [64, 64]
  EXPECT_THAT(load_error(),
              HasSubstr("tensor 'model.layers.0.self_attn.o_proj.weight': element 69 = [1, 5] is nan"));
  testing::patch_file(file, o + 2 * 69, &one, 2);
  testing::patch_file(file, testing::tensor_file_offset(file, "model.norm.weight") + 2 * 3, &inf, 2);
  EXPECT_THAT(load_error(), HasSubstr("tensor 'model.norm.weight': element 3 is inf"));
}

TEST_F(Damaged, Code3InPackedWeights) {
  save(CheckpointLayout::Packed);
  const fs::path file = tmp / kSafetensorsFile;
  const uint8_t bad = 0xff;
  testing::patch_file(file, testing::tensor_file_offset(file, layer0("mlp.down_proj.weight")) + 160 * 2 + 7,
                      &bad, 1);
  EXPECT_THAT(load_error(),
              HasSubstr("tensor 'model.layers.0.mlp.down_proj.weight': invalid ternary code 3 in "
                        "packed byte [2, 7] = 0xff, bits 0..1"));
}

TEST_F(Damaged, MissingOrBadScale) {
  save(CheckpointLayout::Packed);
  const std::string s = layer0("mlp.gate_proj.weight_scale");
  rewrite([&](auto& ts) {
    for (auto& t : ts)
      if (t.spec.name == s) t.data = {0, 0};  // bf16 zero
  });
  EXPECT_THAT(load_error(),
              HasSubstr("gate_proj.weight_scale': weight_scale must be finite and positive, found 0"));
  rewrite([&](auto& ts) {
    for (auto& t : ts)
      if (t.spec.name == s) t.spec.shape = {1, 1};
  });
  EXPECT_THAT(load_error(),
              HasSubstr("shape mismatch: expected [] or [1] (one scale per tensor), found [1, 1]"));
  rewrite([&](auto& ts) { std::erase_if(ts, named(s)); });
  EXPECT_THAT(load_error(), HasSubstr("missing tensor 'model.layers.0.mlp.gate_proj.weight_scale'"));
}

TEST_F(Damaged, LayoutAndConfigDisagree) {
  save(CheckpointLayout::Packed);
  set_config([](auto& j) { j["quantization_config"]["quantization_mode"] = "online"; });
  EXPECT_THAT(load_error(),
              HasSubstr("config.json says quantization_mode online (float master weights) but the "
                        "linear weights are packed U8"));
  set_config([](auto& j) { j.erase("quantization_config"); });
  EXPECT_THAT(load_error(), HasSubstr("no quantization_config"));
  TempDir other;
  save_checkpoint(tiny_model(), other.path(), {CheckpointLayout::Master, DType::BF16, 0});
  auto j = nlohmann::json::parse(read_file(other / "config.json"));
  j["quantization_config"]["quantization_mode"] = "offline";
  testing::write_text(other / "config.json", j.dump());
  EXPECT_THAT(
      error_of([&] { load_checkpoint(other.path()); }),
      HasSubstr("says quantization_mode offline (packed U8 weights + weight_scale) but the linear weights "
                "are float"));
}

TEST_F(Damaged, MixedLayouts) {
  save(CheckpointLayout::Packed);
  rewrite([](auto& ts) {
    for (auto& t : ts)
      if (t.spec.name == "model.layers.1.mlp.up_proj.weight") {
        t.spec = {t.spec.name, DType::BF16, {160, 64}};
        t.data.assign(160 * 64 * 2, 0x3f);
      }
  });
  EXPECT_THAT(load_error(), HasSubstr("mixed layouts: 13 linear weights are packed U8"));
}

TEST_F(Damaged, BothSubNormSpellings) {
  save(CheckpointLayout::Master);
  rewrite([](auto& ts) {
    auto t = *std::find_if(ts.begin(), ts.end(), named(layer0("mlp.ffn_sub_norm.weight")));
    t.spec.name = layer0("mlp.ffn_layernorm.weight");
    ts.push_back(t);
  });
  EXPECT_THAT(load_error(), HasSubstr("both 'model.layers.0.mlp.ffn_sub_norm.weight' and its older spelling "
                                      "'model.layers.0.mlp.ffn_layernorm.weight' are present"));
}

TEST_F(Damaged, MissingShard) {
  save(CheckpointLayout::Master, 16 * 1024);
  const std::string shard =
      fmt::format("model-00002-of-{:05d}.safetensors", SafetensorsDir(tmp.path()).num_files());
  ASSERT_TRUE(fs::remove(tmp / shard));
  EXPECT_THAT(load_error(), HasSubstr("shard '" + shard + "' (listed for tensor"));
  EXPECT_THAT(load_error(), HasSubstr("does not exist"));
}

TEST_F(Damaged, MissingConfigOrWeights) {
  save(CheckpointLayout::Master);
  fs::remove(tmp / kSafetensorsFile);
  EXPECT_THAT(load_error(), HasSubstr("no model.safetensors and no model.safetensors.index.json"));
  fs::remove(tmp / "config.json");
  EXPECT_THAT(load_error(), HasSubstr("no config.json"));
}

}  // namespace
}  // namespace tl
