// BitNet b1.58 model configuration: every field of the HF config.json of microsoft/bitnet-b1.58-2B-4T
// (see ../shared/reference/bitnet-arch-and-formats.md §1.1). Parsing/writing lives in formats/hf_config.
#pragma once
#include <cstdint>
#include <string>

namespace tl {

enum class Activation { Relu2, Silu };  // hidden_act; BitNet b1.58 uses relu2 (ReLU squared)

// How the ternary linears are stored and quantized (HF quantization_config).
enum class QuantMode {
  Online,   // latent (bf16/f32) master weights, absmean-ternarized at every forward (the -bf16 checkpoint)
  Offline,  // packed uint8 codes + weight_scale (the deployment checkpoint)
};
enum class LinearClass { AutoBitLinear, BitLinear };  // output *= weight_scale vs output /= weight_scale

// Limits a config must respect (BitNetConfig::validate): each is far above any published model.
inline constexpr int64_t kMaxHiddenSize = int64_t(1) << 16;
inline constexpr int64_t kMaxIntermediateSize = int64_t(1) << 18;
inline constexpr int64_t kMaxLayers = 1024;
inline constexpr int64_t kMaxHeads = 1024;
inline constexpr int64_t kMaxHeadDim = 1024;
inline constexpr int64_t kMaxVocab = int64_t(1) << 22;
inline constexpr int64_t kMaxPositions = int64_t(1) << 20;
inline constexpr int64_t kMaxParameters = int64_t(1) << 40;

struct BitNetConfig {
  std::string architecture = "BitNetForCausalLM";
  std::string model_type = "bitnet";
  int64_t hidden_size = 2560;
  int64_t intermediate_size = 6912;
  int64_t num_hidden_layers = 30;
  int64_t num_attention_heads = 20;
  int64_t num_key_value_heads = 5;
  int64_t head_dim = 128;  // not stored by HF (hidden/heads); kept explicit
  int64_t vocab_size = 128256;
  int64_t max_position_embeddings = 4096;
  double rope_theta = 500000.0;
  double rms_norm_eps = 1e-5;
  Activation hidden_act = Activation::Relu2;
  bool tie_word_embeddings = true;
  bool attention_bias = false;
  double attention_dropout = 0.0;
  double initializer_range = 0.02;
  int64_t bos_token_id = 128000;
  int64_t eos_token_id = 128001;
  int64_t pad_token_id = -1;  // -1: absent
  std::string torch_dtype = "bfloat16";
  bool has_quantization_config = true;
  QuantMode quant_mode = QuantMode::Online;
  LinearClass linear_class = LinearClass::AutoBitLinear;

  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int64_t q_dim() const { return num_attention_heads * head_dim; }
  // Throws tl::Error naming the bad field if the shapes are inconsistent.
  void validate() const;
};

// Presets: "tiny" (tests), "small" (the Brown-trained demo shape), "2b4t" (BitNet b1.58-2B-4T exactly).
BitNetConfig config_preset(const std::string& name);

}  // namespace tl
