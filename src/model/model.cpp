#include "model/model.hpp"

#include <new>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace tl {

const ParamView& Model::view(const std::string& name) const {
  auto it = index.find(name);
  if (it == index.end()) fail("model has no tensor '{}'", name);
  return views[it->second];
}

std::span<float> Model::tensor(const std::string& name) {
  const auto& v = view(name);
  return {params.data() + v.offset, v.numel};
}

std::span<const float> Model::tensor(const std::string& name) const {
  const auto& v = view(name);
  return {params.data() + v.offset, v.numel};
}

size_t Model::num_linear_params() const {
  size_t n = 0;
  for (const auto& v : views)
    if (v.kind == ParamKind::Linear) n += v.numel;
  return n;
}

Model make_model(const BitNetConfig& cfg) {
  cfg.validate();
  Model m;
  m.config = cfg;
  size_t offset = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape, ParamKind kind) {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    m.index[name] = m.views.size();
    m.views.push_back({std::move(name), std::move(shape), offset, n, kind});
    offset += n;
  };
  const int64_t C = cfg.hidden_size, F = cfg.intermediate_size, Q = cfg.q_dim(), KV = cfg.kv_dim();
  add("model.embed_tokens.weight", {cfg.vocab_size, C}, ParamKind::Embedding);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = Model::layer_prefix(l);
    add(p + "input_layernorm.weight", {C}, ParamKind::Norm);
    add(p + "self_attn.q_proj.weight", {Q, C}, ParamKind::Linear);
    add(p + "self_attn.k_proj.weight", {KV, C}, ParamKind::Linear);
    add(p + "self_attn.v_proj.weight", {KV, C}, ParamKind::Linear);
    add(p + "self_attn.o_proj.weight", {C, Q}, ParamKind::Linear);
    add(p + "self_attn.attn_sub_norm.weight", {Q}, ParamKind::Norm);
    add(p + "post_attention_layernorm.weight", {C}, ParamKind::Norm);
    add(p + "mlp.gate_proj.weight", {F, C}, ParamKind::Linear);
    add(p + "mlp.up_proj.weight", {F, C}, ParamKind::Linear);
    add(p + "mlp.down_proj.weight", {C, F}, ParamKind::Linear);
    add(p + "mlp.ffn_sub_norm.weight", {F}, ParamKind::Norm);
  }
  add("model.norm.weight", {C}, ParamKind::Norm);
  if (!cfg.tie_word_embeddings) add("lm_head.weight", {cfg.vocab_size, C}, ParamKind::LmHead);
  try {
    m.params.assign(offset, 0.0f);
  } catch (const std::bad_alloc&) {
    fail("model: {} parameters ({:.1f} GiB as f32; {} layers, hidden_size {}) do not fit in memory", offset,
         double(offset) * 4 / double(1ull << 30), cfg.num_hidden_layers, cfg.hidden_size);
  }
  return m;
}

void init_random(Model& m, uint64_t seed) {
  Rng rng(seed);
  const double sd = m.config.initializer_range;
  for (const auto& v : m.views) {
    float* p = m.params.data() + v.offset;
    if (v.kind == ParamKind::Norm) {
      for (size_t i = 0; i < v.numel; ++i) p[i] = 1.0f;
    } else {
      for (size_t i = 0; i < v.numel; ++i) p[i] = float(rng.normal() * sd);
    }
  }
  m.fixed_scale.clear();
}

}  // namespace tl
