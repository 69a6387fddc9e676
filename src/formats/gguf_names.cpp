#include "formats/gguf_names.hpp"

#include <string_view>

#include "core/error.hpp"

namespace tl {

std::string gguf_tensor_name(const std::string& hf_name) {
  if (hf_name == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf_name == "model.norm.weight") return "output_norm.weight";
  if (hf_name == "lm_head.weight") return "output.weight";
  constexpr std::string_view kLayers = "model.layers.";
  if (hf_name.rfind(kLayers, 0) == 0) {
    const size_t dot = hf_name.find('.', kLayers.size());
    const std::string layer = hf_name.substr(kLayers.size(), dot - kLayers.size());
    const std::string part = dot == std::string::npos ? "" : hf_name.substr(dot + 1);
    static constexpr std::pair<std::string_view, std::string_view> kParts[] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.attn_sub_norm.weight", "attn_sub_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
        {"mlp.ffn_sub_norm.weight", "ffn_sub_norm.weight"},
    };
    const bool numeric = !layer.empty() && layer.find_first_not_of("0123456789") == std::string::npos;
    for (const auto& [hf, gguf] : kParts)
      if (numeric && part == hf) return "blk." + layer + "." + std::string(gguf);
  }
  fail("tensor '{}' has no GGUF name in the BitNet layout", hf_name);
}

std::string gguf_scale_name(const std::string& gguf_weight_name) {
  constexpr std::string_view kSuffix = ".weight";
  TL_CHECK(
      gguf_weight_name.size() > kSuffix.size() &&
          gguf_weight_name.compare(gguf_weight_name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0,
      "GGUF tensor name '{}' does not end in .weight", gguf_weight_name);
  return gguf_weight_name.substr(0, gguf_weight_name.size() - kSuffix.size()) + ".scale";
}

}  // namespace tl
