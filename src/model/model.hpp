// A BitNet model in memory: the config, one flat fp32 parameter buffer and named views into it
// (llm.c style: AdamW is one loop, a checkpoint one blob, an all-reduce one call).
// Tensor names and shapes follow HF: linear weights are [out, in], row-major.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/config.hpp"

namespace tl {

enum class ParamKind { Embedding, LmHead, Norm, Linear };

struct ParamView {
  std::string name;            // HF name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // [out, in] for linears, [n] for norms
  size_t offset = 0;           // into Model::params
  size_t numel = 0;
  ParamKind kind = ParamKind::Linear;
};

// The seven ternary linears of a decoder layer, in HF order.
inline constexpr const char* kLinearNames[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                "mlp.down_proj"};
enum LinearIndex { kQ = 0, kK, kV, kO, kGate, kUp, kDown };

struct Model {
  BitNetConfig config;
  std::vector<float> params;     // every parameter, fp32
  std::vector<ParamView> views;  // canonical order (see make_model)
  std::unordered_map<std::string, size_t> index;
  // Fixed per-tensor weight scales (offline / packed checkpoints, rpt-fixed): for a linear named here the
  // quantizer uses this scale instead of absmean. Absent: absmean recomputed from the latent weights.
  std::unordered_map<std::string, float> fixed_scale;

  bool has(const std::string& name) const { return index.count(name) != 0; }
  const ParamView& view(const std::string& name) const;
  std::span<float> tensor(const std::string& name);
  std::span<const float> tensor(const std::string& name) const;

  // Names of a layer's parts.
  static std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }
  static std::string linear_name(int64_t layer, int which) {
    return layer_prefix(layer) + kLinearNames[which] + ".weight";
  }
  // Number of parameters in total and in ternary linears.
  size_t num_params() const { return params.size(); }
  size_t num_linear_params() const;
};

// Allocates all views for `cfg` (zero-filled). Order: embed_tokens; per layer input_layernorm,
// q,k,v,o, attn_sub_norm, post_attention_layernorm, gate, up, down, ffn_sub_norm; norm; lm_head if untied.
Model make_model(const BitNetConfig& cfg);

// Random initialisation (seeded): linears and embedding ~ N(0, initializer_range), norms = 1.
void init_random(Model& m, uint64_t seed);

}  // namespace tl
