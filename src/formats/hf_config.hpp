// HF config.json <-> BitNetConfig. Reads what Microsoft's BitNet repos write (top-level rope_theta,
// torch_dtype) and what transformers 5.x save_pretrained writes (rope_parameters, dtype, quantization_config
// with all keys).
//
// Keys absent from the file take transformers' BitNetConfig defaults, NOT the 2B-4T values of our struct
// (transformers: max_position_embeddings 2048, tie_word_embeddings false; reference §1.1, pitfall 14), so a
// file means here what it means to transformers. Required: hidden_size, intermediate_size, num_hidden_layers,
// num_attention_heads, vocab_size. Unknown keys are ignored (HF configs carry many); known keys of the wrong
// type are errors naming the key.
//   eos_token_id: an integer or a list of integers; a list keeps its first entry (generation stops on the
//   others
//     too, which this struct does not record).
//   quantization_config absent: online absmean quantization, has_quantization_config = false (note:
//   transformers
//     itself would then run plain unquantized linears). Present: quant_method must be "bitnet"; linear_class
//     and quantization_mode default to transformers' "bitlinear" / "offline"; use_rms_norm true is rejected
//     (unsupported extra input norm), as is modules_to_not_convert naming anything but lm_head.
//   rope: rope_theta at top level or in rope_parameters {"rope_type": "default", "rope_theta": x}; any other
//   rope
//     type, or a non-default rope_scaling, is rejected as unsupported.
#pragma once
#include <string>
#include <string_view>

#include "core/file.hpp"
#include "model/config.hpp"

namespace tl {

// Parses and validates (cfg.validate()). `what` names the source in error messages.
BitNetConfig parse_hf_config(std::string_view json, std::string_view what);
BitNetConfig read_hf_config(const fs::path& path);

// A config.json that transformers 5.x AutoConfig / BitNetForCausalLM loads (and Microsoft-style readers too:
// rope_theta is written at top level and in rope_parameters, the dtype as torch_dtype and dtype).
std::string hf_config_to_json(const BitNetConfig& cfg);

}  // namespace tl
