// config.json parsing (Microsoft's and transformers 5's spellings), writing, and bad configs.
#include "formats/hf_config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io_test_util.hpp"

namespace tl {
namespace {

using testing::error_of;
using ::testing::HasSubstr;

// microsoft/bitnet-b1.58-2B-4T config.json, as tabulated in the reference §1.1.
const char* kMicrosoft2B4T = R"({
  "architectures": ["BitNetForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "hidden_act": "relu2",
  "hidden_size": 2560,
  "initializer_range": 0.02,
  "intermediate_size": 6912,
  "max_position_embeddings": 4096,
  "model_type": "bitnet",
  "rms_norm_eps": 1e-05,
  "num_attention_heads": 20,
  "num_hidden_layers": 30,
  "num_key_value_heads": 5,
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "vocab_size": 128256,
  "quantization_config": {
    "quant_method": "bitnet",
    "linear_class": "autobitlinear",
    "quantization_mode": "offline"
  }
})";

// What transformers 5.17 save_pretrained wrote for a tiny BitNet with online quantization (seen on the GPU
// machine): rope_parameters, dtype, every quantization_config key, no head_dim.
const char* kTransformersV5 = R"({
  "architectures": ["BitNetForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 256,
  "dtype": "bfloat16",
  "eos_token_id": 257,
  "hidden_act": "relu2",
  "hidden_size": 64,
  "initializer_range": 0.02,
  "intermediate_size": 160,
  "max_position_embeddings": 256,
  "model_type": "bitnet",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "num_key_value_heads": 2,
  "pad_token_id": null,
  "quantization_config": {
    "linear_class": "autobitlinear",
    "modules_to_not_convert": null,
    "quant_method": "bitnet",
    "quantization_mode": "online",
    "rms_norm_eps": 1e-06,
    "use_rms_norm": false
  },
  "rms_norm_eps": 1e-05,
  "rope_parameters": {
    "rope_theta": 500000.0,
    "rope_type": "default"
  },
  "tie_word_embeddings": true,
  "transformers_version": "5.17.0",
  "use_cache": true,
  "vocab_size": 512
})";

void expect_same(const BitNetConfig& a, const BitNetConfig& b) {
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.hidden_act, b.hidden_act);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.attention_dropout, b.attention_dropout);
  EXPECT_EQ(a.initializer_range, b.initializer_range);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  EXPECT_EQ(a.torch_dtype, b.torch_dtype);
  EXPECT_EQ(a.has_quantization_config, b.has_quantization_config);
  EXPECT_EQ(a.quant_mode, b.quant_mode);
  EXPECT_EQ(a.linear_class, b.linear_class);
}

TEST(HfConfig, Microsoft2B4T) {
  const BitNetConfig c = parse_hf_config(kMicrosoft2B4T, "config.json");
  BitNetConfig want = config_preset("2b4t");
  want.quant_mode = QuantMode::Offline;
  expect_same(c, want);
  EXPECT_EQ(c.head_dim, 128);  // not in the file: hidden / heads
  EXPECT_EQ(c.kv_dim(), 640);
  EXPECT_EQ(c.architecture, "BitNetForCausalLM");
}

TEST(HfConfig, TransformersV5) {
  const BitNetConfig c = parse_hf_config(kTransformersV5, "config.json");
  BitNetConfig want = config_preset("tiny");
  want.torch_dtype = "bfloat16";
  want.quant_mode = QuantMode::Online;
  expect_same(c, want);
}

TEST(HfConfig, OlderSpellingsAndOptionalForms) {
  auto j = nlohmann::json::parse(kMicrosoft2B4T);
  j["architectures"] = {"BitnetForCausalLM"};
  j["eos_token_id"] = {128001, 128009};  // a list: the first is kept
  j["rope_scaling"] = nullptr;
  j["head_dim"] = 64;
  j["hidden_act"] = "silu";
  j["pad_token_id"] = 128004;
  j.erase("quantization_config");
  const BitNetConfig c = parse_hf_config(j.dump(), "c");
  EXPECT_EQ(c.architecture, "BitnetForCausalLM");
  EXPECT_EQ(c.eos_token_id, 128001);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.hidden_act, Activation::Silu);
  EXPECT_EQ(c.pad_token_id, 128004);
  EXPECT_FALSE(c.has_quantization_config);
  EXPECT_EQ(c.quant_mode, QuantMode::Online);
}

TEST(HfConfig, AbsentKeysTakeTransformersDefaults) {
  // Not our struct's 2B-4T values: transformers reads a missing key as 2048 / untied / float32.
  const BitNetConfig c = parse_hf_config(
      R"({"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
          "vocab_size": 130000})",
      "c");
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.hidden_act, Activation::Relu2);
}

TEST(HfConfig, QuantizationConfigDefaultsAreTransformers) {
  auto j = nlohmann::json::parse(kMicrosoft2B4T);
  j["quantization_config"] = {{"quant_method", "bitnet"}};
  const BitNetConfig c = parse_hf_config(j.dump(), "c");
  EXPECT_TRUE(c.has_quantization_config);
  EXPECT_EQ(c.linear_class, LinearClass::BitLinear);
  EXPECT_EQ(c.quant_mode, QuantMode::Offline);
}

TEST(HfConfig, WriterRoundTripsAndHasTheKeysTransformersNeeds) {
  for (const char* preset : {"tiny", "2b4t"}) {
    BitNetConfig c = config_preset(preset);
    c.quant_mode = QuantMode::Offline;
    c.pad_token_id = 5;
    const std::string text = hf_config_to_json(c);
    expect_same(parse_hf_config(text, "written"), c);
    const auto j = nlohmann::json::parse(text);
    EXPECT_EQ(j["model_type"], "bitnet");
    EXPECT_EQ(j["architectures"], nlohmann::json::array({"BitNetForCausalLM"}));
    for (const char* k :
         {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
          "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rope_theta",
          "rms_norm_eps", "hidden_act", "tie_word_embeddings", "bos_token_id", "eos_token_id",
          "attention_bias", "attention_dropout", "initializer_range", "torch_dtype"})
      EXPECT_TRUE(j.contains(k)) << k;
    EXPECT_EQ(j["attention_bias"], false);
    EXPECT_EQ(j["quantization_config"]["quantization_mode"], "offline");
    EXPECT_EQ(j["quantization_config"]["linear_class"], "autobitlinear");
    EXPECT_EQ(j["rope_parameters"]["rope_theta"], j["rope_theta"]);
  }
  BitNetConfig c = config_preset("tiny");
  c.has_quantization_config = false;
  c.pad_token_id = -1;
  const auto j = nlohmann::json::parse(hf_config_to_json(c));
  EXPECT_FALSE(j.contains("quantization_config"));
  EXPECT_TRUE(j["pad_token_id"].is_null());
  expect_same(parse_hf_config(j.dump(), "w"), c);
}

// ---- bad configs ----

std::string bad(const std::function<void(nlohmann::json&)>& edit) {
  auto j = nlohmann::json::parse(kMicrosoft2B4T);
  edit(j);
  return error_of([&] { parse_hf_config(j.dump(), "cfg.json"); });
}

TEST(HfConfigMalformed, UnknownActivation) {
  EXPECT_THAT(bad([](auto& j) { j["hidden_act"] = "gelu"; }),
              HasSubstr("cfg.json: hidden_act 'gelu' is not supported (expected relu2"));
}

TEST(HfConfigMalformed, NullActivationIsNotTheDefault) {
  EXPECT_THAT(bad([](auto& j) { j["hidden_act"] = nullptr; }),
              HasSubstr("cfg.json: hidden_act is null (expected \"relu2\""));
}

// Sizes no machine holds are refused at once, naming the file, the key, the value and the limit (they used to
// end in an anonymous out-of-memory after a minute).
TEST(HfConfigMalformed, HugeSizesAreRefusedByKey) {
  const int64_t two40 = int64_t(1) << 40;
  EXPECT_THAT(bad([&](auto& j) { j["hidden_size"] = two40; }),
              HasSubstr("cfg.json: config: hidden_size = 1099511627776 exceeds ternlab's limit of 65536"));
  EXPECT_THAT(bad([&](auto& j) { j["intermediate_size"] = two40; }),
              HasSubstr("intermediate_size = 1099511627776 exceeds ternlab's limit of 262144"));
  EXPECT_THAT(bad([&](auto& j) { j["vocab_size"] = two40; }),
              HasSubstr("vocab_size = 1099511627776 exceeds ternlab's limit of 4194304"));
  EXPECT_THAT(bad([&](auto& j) { j["max_position_embeddings"] = two40; }),
              HasSubstr("max_position_embeddings = 1099511627776 exceeds ternlab's limit of 1048576"));
  EXPECT_THAT(bad([](auto& j) { j["max_position_embeddings"] = int64_t(1) << 62; }),
              HasSubstr("max_position_embeddings = 4611686018427387904 exceeds"));
  EXPECT_THAT(bad([](auto& j) { j["num_hidden_layers"] = 1000000; }),
              HasSubstr("num_hidden_layers = 1000000 exceeds ternlab's limit of 1024"));
  EXPECT_THAT(bad([](auto& j) { j["num_key_value_heads"] = 40; }),
              HasSubstr("num_key_value_heads (40) exceeds num_attention_heads (20)"));
  // Each key within its bound, the product not.
  EXPECT_THAT(bad([](auto& j) {
                j["hidden_size"] = 65536;
                j["num_attention_heads"] = 512;
                j["num_key_value_heads"] = 512;
                j["intermediate_size"] = 262144;
                j["num_hidden_layers"] = 1024;
              }),
              HasSubstr("parameters (hidden_size 65536, intermediate_size 262144, 1024 layers, vocab 128256) "
                        "exceed ternlab's limit"));
}

TEST(HfConfigMalformed, BadQuantizationMode) {
  EXPECT_THAT(bad([](auto& j) { j["quantization_config"]["quantization_mode"] = "dynamic"; }),
              HasSubstr("quantization_config.quantization_mode 'dynamic' is not supported"));
  EXPECT_THAT(bad([](auto& j) { j["quantization_config"]["linear_class"] = "fastlinear"; }),
              HasSubstr("quantization_config.linear_class 'fastlinear' is not supported"));
  EXPECT_THAT(bad([](auto& j) { j["quantization_config"]["quant_method"] = "gptq"; }),
              HasSubstr("quant_method must be 'bitnet', found 'gptq'"));
  EXPECT_THAT(bad([](auto& j) { j["quantization_config"]["use_rms_norm"] = true; }),
              HasSubstr("use_rms_norm = true"));
  EXPECT_THAT(bad([](auto& j) {
                j["quantization_config"]["modules_to_not_convert"] = {"lm_head", "mlp"};
              }),
              HasSubstr("modules_to_not_convert entry \"mlp\" is not supported"));
  EXPECT_THAT(bad([](auto& j) { j["quantization_config"] = "bitnet"; }),
              HasSubstr("key 'quantization_config' must be an object, found string"));
}

TEST(HfConfigMalformed, WrongTypesNameTheKey) {
  EXPECT_THAT(bad([](auto& j) { j["hidden_size"] = "2560"; }),
              HasSubstr("key 'hidden_size' must be an integer, found string \"2560\""));
  EXPECT_THAT(bad([](auto& j) { j["num_hidden_layers"] = 30.5; }),
              HasSubstr("key 'num_hidden_layers' must be an integer, found number 30.5"));
  EXPECT_THAT(bad([](auto& j) { j["tie_word_embeddings"] = 1; }),
              HasSubstr("key 'tie_word_embeddings' must be true or false, found integer 1"));
  EXPECT_THAT(bad([](auto& j) { j["rms_norm_eps"] = "1e-5"; }),
              HasSubstr("key 'rms_norm_eps' must be a number"));
  EXPECT_THAT(bad([](auto& j) {
                j["eos_token_id"] = {128001, "x"};
              }),
              HasSubstr("key 'eos_token_id[]' must be an integer"));
  EXPECT_THAT(bad([](auto& j) { j["torch_dtype"] = "int8"; }),
              HasSubstr("key 'torch_dtype' = 'int8' is not supported"));
  EXPECT_THAT(bad([](auto& j) { j["dtype"] = "float32"; }),
              HasSubstr("dtype 'float32' and torch_dtype 'bfloat16' disagree"));
}

TEST(HfConfigMalformed, MissingOrInconsistentShapes) {
  EXPECT_THAT(bad([](auto& j) { j.erase("hidden_size"); }), HasSubstr("missing required key 'hidden_size'"));
  EXPECT_THAT(
      bad([](auto& j) { j["num_key_value_heads"] = 3; }),
      HasSubstr("cfg.json: config: num_attention_heads (20) must be a multiple of num_key_value_heads (3)"));
  EXPECT_THAT(bad([](auto& j) { j["hidden_size"] = 2561; }),
              HasSubstr("not a multiple of num_attention_heads"));
  EXPECT_THAT(bad([](auto& j) { j["attention_bias"] = true; }),
              HasSubstr("attention_bias=true is not supported"));
  EXPECT_THAT(bad([](auto& j) { j["bos_token_id"] = -3; }), HasSubstr("token ids must be non-negative"));
}

TEST(HfConfigMalformed, UnsupportedRopeAndArchitecture) {
  EXPECT_THAT(bad([](auto& j) {
                j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
              }),
              HasSubstr("rope_scaling {\"factor\":2.0,\"rope_type\":\"linear\"} is not supported"));
  EXPECT_THAT(bad([](auto& j) {
                j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 500000.0}};
              }),
              HasSubstr("rope_parameters.rope_type 'yarn' is not supported"));
  EXPECT_THAT(bad([](auto& j) {
                j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
              }),
              HasSubstr("rope_theta 500000 and rope_parameters.rope_theta 10000 disagree"));
  EXPECT_THAT(bad([](auto& j) { j["architectures"] = {"LlamaForCausalLM"}; }),
              HasSubstr("architectures ['LlamaForCausalLM'] is not supported"));
  EXPECT_THAT(bad([](auto& j) { j["model_type"] = "llama"; }), HasSubstr("model_type must be 'bitnet'"));
}

TEST(HfConfigMalformed, NotJson) {
  EXPECT_THAT(error_of([] { parse_hf_config("{\"hidden_size\": 1,", "cfg.json"); }),
              HasSubstr("cfg.json: invalid JSON"));
  EXPECT_THAT(error_of([] { parse_hf_config(R"({"hidden_size": 1, "hidden_size": 2})", "cfg.json"); }),
              HasSubstr("duplicate key 'hidden_size'"));
  EXPECT_THAT(error_of([] { parse_hf_config("[]", "cfg.json"); }), HasSubstr("expected a JSON object"));
}

}  // namespace
}  // namespace tl
