// Tensor names of the BitNet GGUF layouts (reference §3.3): HF names <-> GGUF names, shared by export and
// import. Both llama.cpp's `bitnet` and bitnet.cpp's `bitnet-b1.58` use the same names.
#pragma once
#include <cstdint>
#include <string>

namespace tl {

// The GGUF name of a HF tensor name ("model.layers.3.mlp.down_proj.weight" -> "blk.3.ffn_down.weight");
// tl::Error for a name that has none.
std::string gguf_tensor_name(const std::string& hf_name);

// The per-tensor scale tensor of a linear in mainline llama.cpp: "blk.3.ffn_down.weight" ->
// "blk.3.ffn_down.scale".
std::string gguf_scale_name(const std::string& gguf_weight_name);

}  // namespace tl
