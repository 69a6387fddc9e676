// HF checkpoint directory (config.json + model.safetensors or a sharded index) <-> Model, in both of
// Microsoft's layouts (reference §1.6):
//   Master: latent float weights [out, in]; online absmean quantization (the -bf16 repo).
//   Packed: linears as uint8 [out/4, in], 4 ternary codes per byte, plus a one-element
//           `<linear>.weight_scale`; offline quantization (the deployment repo).
#pragma once
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "core/dtype.hpp"
#include "core/file.hpp"
#include "model/model.hpp"

namespace tl {

enum class CheckpointLayout { Master, Packed };

// Reads config.json and the tensors. Float tensors may be BF16, F16 or F32 and are converted straight from
// the file map into Model::params. Packed linears become latent = codes * alpha with
// model.fixed_scale[name] = alpha, where alpha = weight_scale for autobitlinear and 1/weight_scale for
// bitlinear. The layout is detected from the linear weights' dtype (U8 = Packed) and must agree with
// quantization_mode (offline = Packed). Older sub-norm names (self_attn.inner_attn_ln, mlp.ffn_layernorm) are
// accepted. With tied embeddings an lm_head.weight is accepted only if bit-identical to the embedding.
// Errors (tl::Error): missing / unexpected tensor, shape or dtype mismatch, NaN/Inf, invalid code 3.
// An all-zero tensor is loaded with a warning.
Model load_checkpoint(const fs::path& dir);

struct SaveOptions {
  CheckpointLayout layout = CheckpointLayout::Master;
  DType dtype = DType::BF16;     // BF16 or F32: float tensors and Packed weight_scale
  uint64_t max_shard_bytes = 0;  // 0: one model.safetensors; else shards of at most this size (a larger
                                 // tensor gets a shard of its own) and model.safetensors.index.json
  bool scales_stored_elsewhere = false;  // Master: the caller keeps Model::fixed_scale itself (no warning)
};

// Writes config.json (quantization_config: autobitlinear, online for Master / offline for Packed; torch_dtype
// from options.dtype) and the tensors in Model::views order, with the HF names BitNetForCausalLM expects (no
// lm_head when tied). Packed codes and scales come from quantize_weight (model/quant.hpp). Every file goes to
// a temporary name first and all are renamed at the end; the directory is created if missing, and files of a
// previous checkpoint there that the new one does not use (model.safetensors vs shards) are removed.
void save_checkpoint(const Model& model, const fs::path& dir, const SaveOptions& options = {});

// The packing of the Packed layout: byte [r, c] bits 2i..2i+1 hold T[i*R + r, c] + 1 with R = out/4.
// codes: [out, in] in {-1, 0, 1}; packed: [out/4, in]. out must be a multiple of 4.
std::vector<uint8_t> pack_ternary(std::span<const int8_t> codes, int64_t out, int64_t in);
// Inverse; code 3 (unused by the format) is an error naming `what` and the byte.
void unpack_ternary(std::span<const uint8_t> packed, int64_t out, int64_t in, std::span<int8_t> codes,
                    std::string_view what);

}  // namespace tl
