// ternlab info: configuration, parameter counts and per-tensor statistics of a checkpoint.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "formats/open_model.hpp"
#include "model/stats.hpp"

namespace tl::cli {
namespace {

struct InfoArgs {
  std::string path, hidden_act;
  bool json = false, summary = false;
};

const char* kind_name(ParamKind k) {
  switch (k) {
    case ParamKind::Embedding:
      return "embedding";
    case ParamKind::LmHead:
      return "lm_head";
    case ParamKind::Norm:
      return "norm";
    case ParamKind::Linear:
      return "linear";
  }
  return "?";
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

void run_info(const InfoArgs& a) {
  OpenOptions oo;
  oo.read_tokenizer = false;
  oo.hidden_act = a.hidden_act;
  const OpenedModel opened = open_model(a.path, oo);
  const Model& m = opened.model;
  const auto& c = m.config;
  const auto stats = tensor_stats(m);
  const auto sum = summarize(stats);
  const char* act = c.hidden_act == Activation::Relu2 ? "relu2" : "silu";
  const char* mode = c.quant_mode == QuantMode::Online ? "online (latent weights, absmean every forward)"
                                                       : "offline (packed codes + weight_scale)";
  if (a.json) {
    nlohmann::json j;
    j["path"] = a.path;
    j["format"] = opened.gguf ? "gguf" : "checkpoint";
    if (opened.gguf)
      j["gguf"] = {{"arch", opened.gguf->arch},
                   {"engine", opened.gguf->engine},
                   {"activation_source", opened.gguf->activation_source},
                   {"description", opened.gguf->describe()}};
    j["config"] = {{"hidden_size", c.hidden_size},
                   {"intermediate_size", c.intermediate_size},
                   {"num_hidden_layers", c.num_hidden_layers},
                   {"num_attention_heads", c.num_attention_heads},
                   {"num_key_value_heads", c.num_key_value_heads},
                   {"head_dim", c.head_dim},
                   {"vocab_size", c.vocab_size},
                   {"max_position_embeddings", c.max_position_embeddings},
                   {"rope_theta", c.rope_theta},
                   {"rms_norm_eps", c.rms_norm_eps},
                   {"hidden_act", act},
                   {"tie_word_embeddings", c.tie_word_embeddings},
                   {"bos_token_id", c.bos_token_id},
                   {"eos_token_id", c.eos_token_id},
                   {"quantization_mode", c.quant_mode == QuantMode::Online ? "online" : "offline"}};
    j["params"] = {{"total", sum.params},
                   {"linear", sum.linear_params},
                   {"embedding", sum.embedding_params},
                   {"norm", sum.norm_params},
                   {"lm_head", sum.lm_head_params}};
    j["ternary"] = {{"code_neg", sum.code_neg},
                    {"code_zero", sum.code_zero},
                    {"code_pos", sum.code_pos},
                    {"latent_zero_frac", sum.latent_zero_frac}};
    auto& arr = j["tensors"] = nlohmann::json::array();
    for (const auto& t : stats) {
      nlohmann::json e = {{"name", t.name},
                          {"kind", kind_name(t.kind)},
                          {"shape", t.shape},
                          {"mean", t.mean},
                          {"std", t.std},
                          {"min", t.min},
                          {"max", t.max},
                          {"absmean", t.absmean},
                          {"latent_zero_frac", t.latent_zero_frac}};
      if (t.kind == ParamKind::Linear) {
        e["scale"] = t.scale;
        e["scale_source"] = t.fixed_scale ? "fixed" : "absmean";
        e["codes"] = {{"neg", t.code_neg}, {"zero", t.code_zero}, {"pos", t.code_pos}};
      }
      arr.push_back(std::move(e));
    }
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("{}\n", a.path);
  if (opened.gguf) fmt::print("  GGUF: {}\n", opened.gguf->describe());
  fmt::print("  BitNet b1.58: hidden {}  ffn {}  layers {}  heads {} (kv {})  head_dim {}  vocab {}\n",
             c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads,
             c.num_key_value_heads, c.head_dim, c.vocab_size);
  fmt::print("  rope_theta {}  rms_norm_eps {}  act {}  {}  ctx {}  bos {}  eos {}\n", c.rope_theta,
             c.rms_norm_eps, act, c.tie_word_embeddings ? "tied embeddings" : "separate lm_head",
             c.max_position_embeddings, c.bos_token_id, c.eos_token_id);
  fmt::print("  quantization: {}\n", mode);
  fmt::print("  parameters: {} total = {} ternary linear + {} embedding + {} norm + {} lm_head\n", sum.params,
             sum.linear_params, sum.embedding_params, sum.norm_params, sum.lm_head_params);
  fmt::print("  ternary codes over all linears: -1 {:.2f}%  0 {:.2f}%  +1 {:.2f}%   latent zeros {:.2f}%\n",
             100 * sum.code_neg, 100 * sum.code_zero, 100 * sum.code_pos, 100 * sum.latent_zero_frac);
  if (a.summary) return;
  fmt::print("\n  {:<48} {:>16} {:>10} {:>10} {:>8} {:>10} {:>7} {:>7} {:>7}\n", "tensor", "shape", "absmean",
             "std", "zero%", "scale", "-1%", "0%", "+1%");
  for (const auto& t : stats) {
    if (t.kind == ParamKind::Linear) {
      fmt::print("  {:<48} {:>16} {:>10.4g} {:>10.4g} {:>8.3f} {:>10.4g} {:>7.2f} {:>7.2f} {:>7.2f}{}\n",
                 t.name, shape_str(t.shape), t.absmean, t.std, 100 * t.latent_zero_frac, t.scale,
                 100 * t.code_neg, 100 * t.code_zero, 100 * t.code_pos,
                 t.fixed_scale ? "  (fixed scale)" : "");
    } else {
      fmt::print("  {:<48} {:>16} {:>10.4g} {:>10.4g} {:>8.3f}\n", t.name, shape_str(t.shape), t.absmean,
                 t.std, 100 * t.latent_zero_frac);
    }
  }
}

const Registrar reg("info", 20, [](CLI::App& app) {
  auto a = std::make_shared<InfoArgs>();
  auto* cmd = app.add_subcommand("info",
                                 "config, parameter counts and per-tensor statistics (latent zeros, "
                                 "absmean scale, ternary code distribution)");
  cmd->add_option("checkpoint", a->path, "checkpoint directory or GGUF file")->required();
  cmd->add_option("--hidden-act", a->hidden_act, "GGUF: relu2 | silu, for files that do not say");
  cmd->add_flag("--json", a->json, "machine-readable output");
  cmd->add_flag("--summary", a->summary, "no per-tensor table");
  cmd->callback([a] { run_info(*a); });
});

}  // namespace
}  // namespace tl::cli
