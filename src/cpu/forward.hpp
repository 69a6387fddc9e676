// The exact fp32 CPU reference forward pass of BitNet b1.58 (transformers' BitNetForCausalLM with
// AutoBitLinear online quantization; ../shared/reference/bitnet-arch-and-formats.md §1.3-§1.5).
//
// Every ternary linear runs in integer form: per-token int8 activation codes q (model/quant.hpp),
// ternary codes T and scale alpha (quantize_weight), y = (sum_k q_k T_k) * alpha / s. The integer sums are
// computed exactly by an fp32 GEMM (all partial sums are integers below 2^24), so a row's output never
// depends on which other rows share the batch, nor on the BLAS' summation order.
//
// llm.c style: `xxx_forward` functions over flat row-major buffers, composed by CpuModel.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "model/model.hpp"
#include "model/rope.hpp"

namespace tl {

// ---------------------------------------------------------------------------------------------------------
// Building blocks (exposed for tests and for the other backends' checks).

// out (N,C) = weight * (inp * rsqrt(mean(inp^2) + eps)), per row. out may alias inp.
void rmsnorm_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, float eps);

// RoPE tables: model/rope.hpp.

// sum of x[i]^2 in double, as 8 partial sums in a fixed order: the RMSNorms of the reference, the engine and
// the trainer all use it, so their bits agree. (One chain of dependent adds cost 4 cycles per value: 1.4 ms
// of a decoded 2b4t token.)
template <class Real>
double sum_of_squares(const Real* x, int64_t n) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += double(x[i + j]) * double(x[i + j]);
  double tail = 0;
  for (; i < n; ++i) tail += double(x[i]) * double(x[i]);
  return (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) + tail;
}

// Half-split ("NeoX") rotation in place: x is (n_heads, head_dim) of one token; element i pairs with
// i + head_dim/2: x' = x*cos + rotate_half(x)*sin, rotate_half(x) = concat(-x[d/2:], x[:d/2]).
void rope_forward(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin);

// The gated MLP's activation, in place: gate[i] = act(gate[i]) * up[i] over n values, act = relu(g)^2 or
// silu(g) = g / (1 + exp(-g)).
void gated_activation_forward(float* gate, const float* up, int64_t n, Activation act);

// Causal GQA attention. q is (B,T,NH,hd) after RoPE; k, v are (B,S,NKV,hd) holding positions
// 0 .. pos0+T-1 (S >= pos0+T is the row stride in positions: T for a full forward, the cache capacity for
// incremental decoding). Query t sits at position pos0+t and attends to keys 0..pos0+t; query head h reads
// kv head h / (NH/NKV). out is (B,T,NH,hd), heads concatenated head-major.
void attention_forward(float* out, const float* q, const float* k, const float* v, int64_t B, int64_t T,
                       int64_t S, int64_t pos0, int64_t NH, int64_t NKV, int64_t hd);

// The same attention for one query position `pos` (B = T = 1, pos0 = pos), query heads [h0, h1) only, on
// the calling thread (attention_forward runs it for each query and head): q (NH,hd); k, v (S,NKV,hd) hold
// positions 0..pos; out (NH,hd) gets rows h0..h1-1. att: scratch of pos + 1 floats.
void attention_heads_forward(float* out, const float* q, const float* k, const float* v, int64_t pos,
                             int64_t NH, int64_t NKV, int64_t hd, int64_t h0, int64_t h1, float* att);

// out (N,ldo) columns 0..M-1 = (xa (N,K) . codes (M,K)^T) * row_scale[n], where xa are int8 activation codes
// and codes ternary. Exact: the integer sums are computed exactly (|sum| <= 128*K < 2^24; checked:
// K <= 131072). Up to 8 rows: int8 dot products (AVX2 when the CPU has it). More rows: the codes are
// expanded to fp32 128 weight rows at a time into `scratch` and multiplied by sgemm, exact since every
// partial sum is an integer below 2^24; so no fp32 copy of a whole weight exists. Both give the same bits.
void ternary_matmul_forward(float* out, int64_t ldo, const int8_t* xa, const float* row_scale,
                            const int8_t* codes, int64_t N, int64_t M, int64_t K,
                            std::vector<float>& scratch);

// ---------------------------------------------------------------------------------------------------------
// Debug taps for golden tests. Set `layers`; a forward then fills, for each listed layer l and each
// linear name n in kLinearNames (q/k/v share one input, as do gate/up):
//   f32["layers.l.<n>.input"]        (rows, in)  fp32 input of the BitLinear, before activation quantization
//   i8 ["layers.l.<n>.input"]        (rows, in)  its int8 activation codes
//   f32["layers.l.<n>.input_scale"]  (rows)      its per-row scale s = 127 / max|x|
//   f32["layers.l.output"]           (rows, C)   the hidden state leaving the layer (residual stream)
// rows = B*T for forward, n_new for forward_step. Entries are overwritten by each forward.
struct ForwardTaps {
  std::vector<int> layers;
  bool outputs_only = false;  // record only "layers.l.output" (the analyses need no linear inputs)
  std::map<std::string, std::vector<float>> f32;
  std::map<std::string, std::vector<int8_t>> i8;
  bool wants(int64_t layer) const;
};

// Where a residual hook is called: layer l of a forward over B sequences of T tokens (N = B*T rows; row
// b*T + t sits at position pos0 + t), C channels.
struct HookSite {
  int64_t layer = 0, B = 0, T = 0, C = 0, pos0 = 0;
  int64_t rows() const { return B * T; }
};

// Observation and modification points on the residual stream, for activation analyses (analysis/actprune).
// Installed with CpuModel::set_hooks; forward, forward_embeddings and forward_step then call, per layer:
//   on_attention(site, o)        o (N,C): the attention write (o_proj's output) before x += o
//   on_mlp(site, o)              o (N,C): the MLP write (down_proj's output) before x += o
//   on_block(site, x_in, x_out)  x_in (N,C): the stream entering the block; x_out (N,C): after both adds
// Each may modify its array in place (o, x_out). Only callbacks whose flag is set are called, and x_in is
// copied only when `block` is set: an unset hook costs nothing, and one that changes nothing changes no bit.
struct ResidualHooks {
  bool attention = false, mlp = false, block = false;
  virtual ~ResidualHooks() = default;
  virtual void on_attention(const HookSite& site, float* o) {}
  virtual void on_mlp(const HookSite& site, float* o) {}
  virtual void on_block(const HookSite& site, const float* x_in, float* x_out) {}
};

// A ternary linear prepared for inference: codes [out, in] and the scale alpha (from quantize_weight).
struct PreparedLinear {
  int64_t out = 0, in = 0;
  std::vector<int8_t> codes;
  float scale = 0;
};

// Keys and values of every layer after RoPE, for incremental decoding of one sequence.
struct KVCache {
  int64_t n_layers = 0, capacity = 0, kv_dim = 0;
  int64_t length = 0;       // positions 0..length-1 are filled
  std::vector<float> k, v;  // each (n_layers, capacity, n_kv_heads, head_dim)
  KVCache() = default;
  // capacity <= max_position_embeddings, else tl::Error.
  KVCache(const BitNetConfig& cfg, int64_t capacity);
  float* k_layer(int64_t l) { return k.data() + size_t(l) * size_t(capacity * kv_dim); }
  float* v_layer(int64_t l) { return v.data() + size_t(l) * size_t(capacity * kv_dim); }
  void clear() { length = 0; }
};

// The model prepared for the fp32 reference forward: ternary codes and scales are computed once, here
// (a later change of the Model's weights or fixed_scale needs a new CpuModel). The Model must outlive the
// CpuModel (norms, embedding and lm_head are read from it). Memory: the Model plus 1 byte per linear weight.
// forward / forward_step reuse internal buffers: one call at a time per CpuModel.
class CpuModel {
 public:
  explicit CpuModel(const Model& model);

  const BitNetConfig& config() const { return cfg_; }
  const PreparedLinear& linear(int64_t layer, int which) const { return lin_[size_t(layer * 7 + which)]; }
  const RopeTable& rope() const { return rope_; }

  // tokens is (B,T); hidden becomes (B,T,C), after the final norm. Positions are 0..T-1 in each row.
  // Errors: tokens.size() != B*T, T > max_position_embeddings, a token outside [0, vocab_size).
  void forward(std::span<const int32_t> tokens, int64_t B, int64_t T, std::vector<float>& hidden,
               ForwardTaps* taps = nullptr);

  // The same forward from given input embeddings instead of token ids: x is (B,T,C), the residual stream
  // entering layer 0 (forward(tokens) uses x = embedding_rows()[tokens]; both give the same bits then).
  // Used to perturb the embeddings (analysis/criticality). Errors: B or T not positive, T too long.
  void forward_embeddings(const float* x, int64_t B, int64_t T, std::vector<float>& hidden,
                          ForwardTaps* taps = nullptr);
  // The input embedding table (vocab_size, C), row-major: embed_tokens, unscaled.
  const float* embedding_rows() const { return embed_; }

  // Batch 1, incremental: new_tokens continue at position cache.length; appends their K/V to the cache and
  // advances cache.length. hidden becomes (n_new, C) after the final norm. Errors (cache untouched):
  // exceeding the cache capacity, a token out of range, a cache made for another shape.
  void forward_step(KVCache& cache, std::span<const int32_t> new_tokens, std::vector<float>& hidden,
                    ForwardTaps* taps = nullptr);
  KVCache make_cache(int64_t capacity) const { return KVCache(cfg_, capacity); }

  // Residual hooks for every later forward (nullptr: none). Not owned; must outlive its use.
  void set_hooks(ResidualHooks* hooks) { hooks_ = hooks; }
  ResidualHooks* hooks() const { return hooks_; }

  // LM head (not quantized): out (rows, V) = hidden (rows, C) . W^T, W = embed_tokens if tied else lm_head.
  void logits(const float* hidden, int64_t rows, float* out) const;

  // Bytes held by this object (codes, rope tables, buffers), excluding the Model.
  size_t memory_bytes() const;

 private:
  // The shared body: B sequences of T tokens at positions pos0..pos0+T-1. With a cache (B == 1), K/V go to
  // the cache and attention reads it; without, K/V live in a scratch buffer (pos0 == 0).
  // x0 (B,T,C), when not null, replaces the embedding lookup of tokens (then unused).
  void run(const int32_t* tokens, int64_t B, int64_t T, int64_t pos0, KVCache* cache,
           std::vector<float>& hidden, ForwardTaps* taps, const float* x0 = nullptr);
  void check_tokens(std::span<const int32_t> tokens) const;

  const Model* model_;
  BitNetConfig cfg_;
  std::vector<PreparedLinear> lin_;  // (n_layers, 7) in kLinearNames order
  RopeTable rope_;
  const float* embed_ = nullptr;  // (V, C)
  const float* head_ = nullptr;   // (V, C): embed_tokens when tied, else lm_head
  std::vector<const float*> norm_in_, norm_attn_sub_, norm_post_, norm_ffn_sub_;  // per layer
  const float* norm_final_ = nullptr;

  // Activation buffers, grown on demand and reused between calls.
  struct Acts {
    std::vector<float> x, h, s, q, k, v, att, o, gate, up;
    std::vector<float> xin;  // (N,C) the stream entering a block, kept only for a block hook
    std::vector<int8_t> i8;
  } acts_;
  std::vector<float> wscratch_;
  ResidualHooks* hooks_ = nullptr;
};

}  // namespace tl
