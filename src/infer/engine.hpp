// The fast CPU inference engine: packed 2-bit ternary weights (the I2_S layout, cpu/ternary_kernels.hpp)
// multiplied by int8 activations with integer accumulation, AVX-512 VNNI / AVX2 / generic chosen at run
// time. Prompts run as GEMMs over all their tokens at once; decoding as GEMVs.
//
// Same numerics as the fp32 reference (cpu/forward.hpp): the same activation quantizer, exact integer sums,
// the same fp32 scale arithmetic (sum * (alpha / s)), and the reference's own RMSNorm, RoPE and attention
// functions. With an fp32 LM head its logits equal the reference's bit for bit; an f16 head (the GGUF
// files' embedding) or an int8 head (an option: half the bytes read per token) changes only the last step.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/huge_pages.hpp"
#include "cpu/forward.hpp"
#include "cpu/ternary_kernels.hpp"
#include "formats/import.hpp"
#include "infer/session.hpp"
#include "model/model.hpp"
#include "model/quant.hpp"

namespace tl {

// A (rows, cols) float table stored as fp32 or as f16 bits: the embedding and the LM head.
struct FloatTable {
  int64_t rows = 0, cols = 0;
  HugeVector<float> f32;     // (rows, cols) when stored as fp32
  HugeVector<uint16_t> f16;  // (rows, cols) f16 bits when stored as f16
  bool is_f16() const { return !f16.empty(); }
  void row(int64_t r, float* out) const;  // row r as fp32 (exact)
  size_t bytes() const { return f32.size() * 4 + f16.size() * 2; }
};

// What an engine is built from: the config and one call per piece, each made once (so a 2B-parameter
// source never needs an fp32 copy of every weight at once).
struct EngineSource {
  BitNetConfig config;
  std::function<TernaryWeight(int64_t layer, int which)> linear;  // codes [out, in] and alpha
  std::function<std::vector<float>(const std::string& hf_name)> norm;
  std::function<FloatTable()> embedding;  // (vocab, hidden)
  std::function<FloatTable()> lm_head;    // untied models only
};

// From a Model in memory (a checkpoint): codes and scales from the one quantizer (model/quant.hpp).
// The Model must outlive the EngineSource's use (the engine's constructor).
EngineSource engine_source(const Model& model);
// From a GGUF file (formats/import.hpp): codes and scales as the file stores them, the embedding as stored
// (f16 stays f16). The reader must outlive the EngineSource's use.
EngineSource engine_source(const GgufModelReader& reader);

struct EngineOptions {
  // LM head storage: "auto" (as the source stores it), "f32", "f16", or "i8" (rows quantized to int8
  // with an fp32 scale each; the hidden state quantized per token to int8; integer dot products).
  std::string head = "auto";
  KernelIsa isa = best_kernel_isa();
  int64_t prompt_chunk = 512;  // prompt tokens per forward (GEMM rows)
};

class Engine : public LanguageModel {
 public:
  Engine(const EngineSource& source, const EngineOptions& options = {});
  const BitNetConfig& config() const override { return cfg_; }
  std::unique_ptr<DecodeSession> new_session(int64_t capacity = 0) const override;
  std::string describe() const override;

  // Next-token logits at every position of B independent prompts of T tokens each (tokens (B, T),
  // row-major), rows [row_begin, row_end) of each: out is (B, row_end - row_begin, V), row-major. Each prompt
  // runs from an empty cache through the prompt path (GEMMs over prompt_chunk tokens at a time); only the
  // requested rows go through the final norm and the LM head, which is the engine's (see head_type()):
  //   f32       one fp32 GEMM over all B·(row_end - row_begin) rows, the reference's own call: the logits
  //             equal CpuModel::forward + CpuModel::logits over the same rows bit for bit;
  //   f16 / i8  the decode GEMVs (f16_gemv / i8_gemv), per row and tiled over the head's rows so that a tile
  //             stays in cache across rows: row t equals, bit for bit, what a session's decode returns
  //             after tokens 0..t (what generate and serve compute).
  // Perplexity on the engine (ternlab ppl --backend engine) calls this with rows [first_row, T - 1).
  void prompt_logits(std::span<const int32_t> tokens, int64_t B, int64_t T, int64_t row_begin,
                     int64_t row_end, std::vector<float>& out) const;
  // All T rows of one prompt: (T, V).
  std::vector<float> prompt_logits(std::span<const int32_t> prompt) const;

  // Bytes of weights read to decode one token (packed linears + norms + LM head), for bandwidth floors.
  size_t bytes_per_token() const;
  size_t weight_bytes() const;
  KernelIsa isa() const { return opt_.isa; }
  const std::string& head_type() const { return head_type_; }

 private:
  friend class EngineSession;
  // A ternary matrix packed for the kernels: rows of kp/4 bytes (in padded with zero weights to kp, a
  // multiple of 128). Fused matrices (q|k|v, gate|up) keep one scale per row segment.
  struct Packed {
    int64_t rows = 0, in = 0, kp = 0;
    HugeVector<uint8_t> bytes;     // (rows, kp/4), on huge pages (core/huge_pages.hpp)
    std::vector<int64_t> seg_end;  // row where each segment ends
    std::vector<float> seg_scale;  // alpha of each segment
  };
  struct Layer {
    Packed qkv, o, gate_up, down;
    std::vector<float> norm_in, norm_attn_sub, norm_post, norm_ffn_sub;
  };
  static Packed pack(std::initializer_list<TernaryWeight> parts);
  // out (rows, V) = the LM head applied to final-normed hidden states h (rows, C).
  void head_rows(const float* h, int64_t rows, float* out) const;

  BitNetConfig cfg_;
  EngineOptions opt_;
  std::vector<Layer> layers_;
  std::vector<float> norm_final_;
  FloatTable embed_;
  FloatTable head_;             // empty (rows 0) when tied and stored like the embedding
  HugeVector<int8_t> head_i8_;  // (V, C) for the int8 head
  std::vector<float> head_i8_scale_;
  std::string head_type_;
  RopeTable rope_;
};

}  // namespace tl
