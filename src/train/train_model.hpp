// A trainable BitNet b1.58: forward with saved activations, mean cross-entropy loss, and backward into a
// flat gradient buffer with the same layout (offsets) as Model::params, so AdamW is one loop over two
// arrays and a gradient all-reduce is one call (llm.c style).
//
// The forward is the architecture of src/cpu/forward.cpp (transformers' BitNetForCausalLM with online
// AutoBitLinear quantization), per layer:
//   h = input_layernorm(x); q,k,v = BitLinear(h); RoPE(q,k); a = attention(q,k,v)
//   x = x + o_proj(attn_sub_norm(a))
//   h = post_attention_layernorm(x); m = act(gate_proj(h)) * up_proj(h)   (act = relu² or silu)
//   x = x + down_proj(ffn_sub_norm(m))
// then the final norm and the (unquantized) LM head: embed_tokens when tie_word_embeddings, so its gradient
// adds into the embedding's. BitLinear = ActQuant on the input rows, WeightQuant on the weight, each
// switchable; backward is the straight-through estimator (identity through both quantizers; see
// train/ops.hpp: dX = dY . W_eff, dW = dY^T . X_eff).
//
// Memory. Saved activations of a forward over N = B*T tokens, in elements of Real (L layers, C hidden,
// Q = q_dim, KV = kv_dim, F intermediate, NH heads, V vocab):
//   N * ( L * (4C + 3Q + 2KV + 3F + NH + 4)  +  2C + V + 2 )
//   per layer: residual in, residual mid, the two quantized norm outputs (C each); q, k, v after RoPE;
//   attention output and its quantized sub-norm output (Q); gate, up and the quantized ffn sub-norm output
//   (F); one log-sum-exp per query head (attention probabilities are recomputed in backward, so nothing is
//   O(T^2)); four rstd. Then the last residual, the final norm output, the logits, the per-token losses.
//   For 2B-4T in fp32 that is about 5.3 MB per token (21.8 GB at B*T = 4096; logits are 0.5 MB of it).
// Scratch, reused across layers (forward and backward): N * (5F + 2Q + 2KV + 3C) + one chunk of logit
// gradients of at most max(kLogitChunk, V) elements (about 0.9 GB for 2B-4T at B*T = 4096). Weights:
// one quantized copy of ONE linear at a time (the largest linear's size), recomputed in backward from the
// scale saved by forward; no other copy of any weight. Gradients: one fp32 buffer the size of params.
//
// The Real = double instantiation holds its own double copy of the parameters (for finite-difference
// checks); Real = float works on Model::params in place (an optimizer updating them is seen by the next
// forward). One forward/backward at a time per object.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/backend.hpp"
#include "model/model.hpp"
#include "model/quant.hpp"
#include "train/ops.hpp"

namespace tl::train {

// The one weight-quantizer spec (model/quant.hpp), under the name training code has always used.
using WeightQuantMode = ::tl::WeightQuant;

// The effective scale of a linear under a mode: the alpha a CpuModel needs (as fixed_scale) to run the
// same weights as this training forward. `w` (n) are the latent weights.
float effective_weight_scale(WeightQuantMode mode, const float* w, size_t n, float fixed_scale);

// The forward's quantizers (model/backend.hpp).
using ::tl::TrainOptions;

// Logit gradients are formed this many elements (rows x V) at a time in backward.
inline constexpr int64_t kLogitChunk = int64_t(1) << 24;

template <class Real>
class TrainModel {
 public:
  // The Model must outlive this object and keep its layout. Real = float aliases model.params; Real = double
  // copies them (later changes of the Model are not seen; change params() instead). Errors: invalid config,
  // a missing or misshapen tensor, WeightQuantMode::Fixed with a linear that has no fixed_scale.
  explicit TrainModel(Model& model, TrainOptions options = {});

  const BitNetConfig& config() const { return cfg_; }
  const TrainOptions& options() const { return opt_; }
  const Model& model() const { return *model_; }
  const std::vector<ParamView>& views() const { return model_->views; }

  // Flat parameters and gradients: the same layout and offsets as Model::params.
  std::span<Real> params() { return {params_, nparams_}; }
  std::span<Real> grads() { return grads_; }
  std::span<Real> param(const std::string& name);
  std::span<Real> grad(const std::string& name);
  void zero_grad();

  // Forward over tokens (B,T) at positions 0..T-1 of each row. targets (B,T): the next-token ids, or
  // kIgnoreTarget (-1) for positions that do not count. Returns the mean loss over the counted targets.
  // targets may be empty: then only the logits are computed, NaN is returned and backward() is refused.
  // Errors: B or T not positive, T > max_position_embeddings, a size other than B*T, a token or target
  // outside [0, vocab_size) (targets may also be -1), every target ignored.
  double forward(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B, int64_t T);

  // Accumulates d(mean loss of the last forward)/d(params) into grads(): calling it twice adds twice.
  // The parameters must not change between forward() and backward(). Errors: no forward with targets.
  void backward();

  // Of the last forward: logits (B*T, V) row-major, the mean loss, the number of counted targets, and the
  // weight scale alpha used by each linear ((L, 7) in kLinearNames order; 0 with WeightQuantMode::Off).
  std::span<const Real> logits() const { return {acts_.logits.data(), size_t(N_ * cfg_.vocab_size)}; }
  double loss() const { return loss_; }
  int64_t num_targets() const { return count_; }
  std::span<const Real> weight_scales() const { return alpha_; }
  int64_t batch() const { return B_; }
  int64_t seq_len() const { return T_; }

  // Bytes of saved activations for a forward over (B,T) of a model of this config (the formula above), and
  // the bytes this object holds now (activations, backward scratch, weight scratch, gradients, rope tables).
  static size_t activation_bytes(const BitNetConfig& cfg, int64_t B, int64_t T);
  size_t memory_bytes() const;

 private:
  // W_eff of linear (l, which) into wq_ (or the latent weight itself when weight quantization is off),
  // with the alpha saved by forward.
  const Real* effective_weight(int64_t layer, int which);
  Real* p(const ParamView* v) { return params_ + v->offset; }
  Real* g(const ParamView* v) { return grads_.data() + v->offset; }

  Model* model_;
  BitNetConfig cfg_;
  TrainOptions opt_;
  std::vector<Real> own_params_;  // Real = double: the copy of Model::params
  Real* params_ = nullptr;
  size_t nparams_ = 0;
  std::vector<Real> grads_;

  // Views of the parameters.
  const ParamView* embed_ = nullptr;  // (V, C)
  const ParamView* head_ = nullptr;   // (V, C): embed_ when tied
  const ParamView* norm_final_ = nullptr;
  struct LayerViews {
    const ParamView* lin[7];  // kLinearNames order, each [out, in]
    const ParamView *norm_in, *norm_attn_sub, *norm_post, *norm_ffn_sub;
  };
  std::vector<LayerViews> layers_;

  std::vector<Real> rope_cos_, rope_sin_;  // (max_pos, head_dim/2), the fp32 tables of make_rope_table

  // Saved by forward, for backward (shapes for N = B*T rows; see the memory note above).
  struct Activations {
    std::vector<Real> residual;     // (L+1, N, C): residual[l] enters layer l; residual[L] the final norm
    std::vector<Real> res_mid;      // (L, N, C): after the attention block's residual add
    std::vector<Real> ln1;          // (L, N, C): ActQuant(input_layernorm(x)), the q/k/v input
    std::vector<Real> ln1_rstd;     // (L, N)
    std::vector<Real> q;            // (L, N, Q): after RoPE
    std::vector<Real> k;            // (L, N, KV): after RoPE
    std::vector<Real> v;            // (L, N, KV)
    std::vector<Real> att;          // (L, N, Q): attention output, heads concatenated
    std::vector<Real> att_lse;      // (L, N, NH): log-sum-exp of each query row's scores
    std::vector<Real> attsub;       // (L, N, Q): ActQuant(attn_sub_norm(att)), the o_proj input
    std::vector<Real> attsub_rstd;  // (L, N)
    std::vector<Real> ln2;          // (L, N, C): ActQuant(post_attention_layernorm(res_mid)), gate/up input
    std::vector<Real> ln2_rstd;     // (L, N)
    std::vector<Real> gate;         // (L, N, F): gate_proj output, before the activation
    std::vector<Real> up;           // (L, N, F)
    std::vector<Real> ffnsub;       // (L, N, F): ActQuant(ffn_sub_norm(act(gate) * up)), the down input
    std::vector<Real> ffnsub_rstd;  // (L, N)
    std::vector<Real> lnf;          // (N, C): final norm output
    std::vector<Real> lnf_rstd;     // (N)
    std::vector<Real> logits;       // (N, V)
    std::vector<Real> losses;       // (N)
  } acts_;
  // Scratch: forward (o, hact) and backward (the rest), reused across layers.
  struct Scratch {
    std::vector<Real> o;           // (N, C): o_proj / down_proj output before the residual add
    std::vector<Real> hact;        // (N, F): act(gate) * up (recomputed in backward)
    std::vector<Real> dres;        // (N, C): gradient of the residual stream
    std::vector<Real> dln;         // (N, C): gradient of a quantized norm output of width C
    std::vector<Real> dq, datt;    // (N, Q)
    std::vector<Real> dk, dv;      // (N, KV)
    std::vector<Real> dffn, dh;    // (N, F): of the down_proj input; of act(gate) * up
    std::vector<Real> dgate, dup;  // (N, F)
    std::vector<Real> dlogits;     // (rows, V), rows * V <= max(kLogitChunk, V)
  } scr_;
  std::vector<Real> wq_;          // W_eff of one linear, sized for the largest
  std::vector<Real> alpha_;       // (L, 7) weight scales of the last forward (code scales)
  std::vector<Real> rpt_factor_;  // (L, 7) RptFixed: 1 - zero-code fraction, applied after the codes

  std::vector<int32_t> tokens_, targets_;  // (N) of the last forward
  int64_t B_ = 0, T_ = 0, N_ = 0, count_ = 0;
  double loss_ = 0;
  bool has_targets_ = false;
};

extern template class TrainModel<float>;
extern template class TrainModel<double>;

}  // namespace tl::train
