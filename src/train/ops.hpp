// The training engine's ops: forward and backward of every layer of BitNet b1.58, the CPU fp32 reference
// (llm.c's train_gpt2.c style: `xxx_forward` / `xxx_backward` over flat row-major buffers).
//
// Every op is a template on the scalar Real, instantiated for float (training) and double (finite-difference
// tests). The float forward reproduces src/cpu/forward.cpp's arithmetic where it matters (RMSNorm's double
// sum, the quantizers of model/quant.hpp, the fp32 RoPE tables, ReLU² / SiLU), so the trained model is the
// model that inference runs.
//
// Conventions:
//   - N = B*T rows (tokens); C hidden, IC / OC a linear's in / out features, hd head_dim.
//   - Every backward ACCUMULATES (+=) into its gradient outputs (dinp, dweight, ...), as llm.c does: the
//     residual stream, tied weights, shared inputs (q/k/v, gate/up) and gradient accumulation all need it.
//     Callers zero scratch gradient buffers themselves.
//   - Backward functions read only what their forward saved; nothing is recomputed from parameters except
//     where stated.
#pragma once
#include <cstddef>
#include <cstdint>

#include "model/backend.hpp"  // kIgnoreTarget

namespace tl::train {

// ---------------------------------------------------------------------------------------------------------
// Embedding. out (N,C) = table[tokens[n]] (no scaling). Backward scatter-adds dout rows into dtable (V,C);
// a token appearing several times accumulates. Tokens are not range-checked here (the model checks them).
template <class Real>
void embedding_forward(Real* out, const int32_t* tokens, const Real* table, int64_t N, int64_t C);
template <class Real>
void embedding_backward(Real* dtable, const Real* dout, const int32_t* tokens, int64_t N, int64_t C);

// ---------------------------------------------------------------------------------------------------------
// RMSNorm with gain (HF BitNetRMSNorm): out = weight * (inp * rstd), rstd = 1/sqrt(mean(inp^2) + eps) per
// row. inp, out (N,C); weight (C); rstd (N) saved for backward. mean(x^2) is summed in double (as the
// inference forward). Backward:
//   dweight_i += sum_n dout_ni * x_ni * rstd_n
//   dinp_ni   += rstd_n * w_i * dout_ni - rstd_n^3 / C * x_ni * sum_j (w_j * dout_nj * x_nj)
template <class Real>
void rmsnorm_forward(Real* out, Real* rstd, const Real* inp, const Real* weight, int64_t N, int64_t C,
                     Real eps);
template <class Real>
void rmsnorm_backward(Real* dinp, Real* dweight, const Real* dout, const Real* inp, const Real* weight,
                      const Real* rstd, int64_t N, int64_t C);

// ---------------------------------------------------------------------------------------------------------
// Plain linear (no bias), also the LM head: out (N,OC) = inp (N,IC) . weight (OC,IC)^T, by BLAS.
// Backward: dinp (N,IC) += dout (N,OC) . weight;  dweight (OC,IC) += dout^T . inp. Either output may be null.
template <class Real>
void matmul_forward(Real* out, const Real* inp, const Real* weight, int64_t N, int64_t IC, int64_t OC);
template <class Real>
void matmul_backward(Real* dinp, Real* dweight, const Real* dout, const Real* inp, const Real* weight,
                     int64_t N, int64_t IC, int64_t OC);

// ---------------------------------------------------------------------------------------------------------
// The two fake quantizers of a BitLinear (transformers' WeightQuant / ActQuant; model/quant.hpp).
//
// WeightQuant, per tensor: alpha = max(mean|W|, 1e-5) (absmean) or a given fixed alpha; inv = 1/alpha;
//   W_eff = clamp(round(W * inv), -1, 1) / inv   (torch divides by s = 1/alpha; round half to even).
// ActQuant, per row: s = 127 / max(max|x|, 1e-5); x_eff = clamp(round(x * s), -128, 127) / s.
// For float both use model/quant.hpp's definitions (same codes as the inference forward bit for bit); the
// double versions follow the same formulas in double.
//
// Straight-through estimator: both are the identity in backward (transformers' WeightQuant.backward and
// ActQuant.backward return grad_output unchanged; no clipping mask), so they have no backward function:
// the gradient w.r.t. W_eff is the gradient w.r.t. W, and likewise for x.

// The absmean scale alpha of n weights (float: tl::absmean_scale; double: the same in double).
template <class Real>
Real absmean_alpha(const Real* w, size_t n);
// w_eff (n) = WeightQuant(w) with scale alpha. w_eff may alias w.
template <class Real>
void weight_quant_forward(Real* w_eff, const Real* w, size_t n, Real alpha);
// out (N,C) = ActQuant(inp) row by row; out may alias inp.
template <class Real>
void act_quant_forward(Real* out, const Real* inp, int64_t N, int64_t C);

// A BitLinear (AutoBitLinear, online): out (N,OC) = ActQuant(inp) . WeightQuant(weight)^T.
// Each quantizer can be switched off (then a plain linear; finite-difference checks need a smooth function).
// w_scale is alpha for the weight quantizer, or <= 0 for absmean over `weight`.
// inp_eff (N,IC) receives ActQuant(inp), or a copy of inp when act quantization is off (no copy when
// inp_eff == inp); backward needs it. w_eff (OC,IC) receives WeightQuant(weight) when the weight quantizer is
// on (then it is what backward must be given as the weight; the caller may keep it or recompute it from the
// returned alpha); when off it is untouched (may be null) and backward is given `weight` itself.
// Returns the alpha used (0 when the weight quantizer is off).
//
// Backward, by the STE (what autograd gives for x + (q(x) - x).detach()):
//   dinp    (N,IC)  += dout . W_eff        -- the quantized weight, since the forward multiplied by it
//   dweight (OC,IC) += dout^T . inp_eff    -- the quantized input, for the same reason
// i.e. matmul_backward with inp = inp_eff and weight = w_eff; the identity quantizer Jacobians add nothing.
struct QuantFlags {
  bool weight = true;  // WeightQuant on W
  bool act = true;     // ActQuant on the input rows
};
template <class Real>
Real quant_linear_forward(Real* out, Real* inp_eff, Real* w_eff, const Real* inp, const Real* weight,
                          int64_t N, int64_t IC, int64_t OC, QuantFlags flags, Real w_scale = Real(0));
template <class Real>
void quant_linear_backward(Real* dinp, Real* dweight, const Real* dout, const Real* inp_eff,
                           const Real* w_eff, int64_t N, int64_t IC, int64_t OC);

// ---------------------------------------------------------------------------------------------------------
// NeoX (half-split) RoPE, in place. x (N, nh, hd) with N = B*T: row n is at position n % T (each of the B
// sequences starts at position 0). cos/sin (max_pos, hd/2) tables (make_rope_table, fp32
// values as torch). Element i pairs with i + hd/2:
//   x1' = x1 cos - x2 sin;  x2' = x2 cos + x1 sin        (a rotation R)
// Backward applies R^T in place to the gradient: dx1 = dy1 cos + dy2 sin; dx2 = dy2 cos - dy1 sin.
template <class Real>
void rope_forward(Real* x, int64_t N, int64_t T, int64_t nh, int64_t hd, const Real* cos, const Real* sin);
template <class Real>
void rope_backward(Real* dx, int64_t N, int64_t T, int64_t nh, int64_t hd, const Real* cos, const Real* sin);

// ---------------------------------------------------------------------------------------------------------
// Causal grouped-query attention. q (B,T,NH,hd), k and v (B,T,NKV,hd), out (B,T,NH,hd); query head h reads
// kv head h / (NH/NKV); query t attends to keys 0..t with softmax(q.k * hd^-0.5).
// lse (B,T,NH) saves each row's log-sum-exp instead of the (B,NH,T,T) probabilities: backward recomputes
// p_tj = exp(q_t.k_j * scale - lse_t) (flash-attention style), so saved memory is linear in T.
// Backward (per query row, D = sum_j p_j dp_j):
//   dv_j += p_j do;  dp_j = do . v_j;  ds_j = p_j (dp_j - D);  dq += scale sum_j ds_j k_j;  dk_j += scale
//   ds_j q
template <class Real>
void attention_forward(Real* out, Real* lse, const Real* q, const Real* k, const Real* v, int64_t B,
                       int64_t T, int64_t NH, int64_t NKV, int64_t hd);
template <class Real>
void attention_backward(Real* dq, Real* dk, Real* dv, const Real* dout, const Real* q, const Real* k,
                        const Real* v, const Real* lse, int64_t B, int64_t T, int64_t NH, int64_t NKV,
                        int64_t hd);

// ---------------------------------------------------------------------------------------------------------
// Gated activation of the MLP: out (N*F) = act(gate) * up, act = relu(g)^2 (BitNet's relu2) or silu(g).
// Backward: dgate += dout * up * act'(g);  dup += dout * act(g)   (relu2' = 2 relu(g); silu' = σ(1 +
// g(1-σ))).
template <class Real>
void gated_act_forward(Real* out, const Real* gate, const Real* up, int64_t n, bool relu2);
template <class Real>
void gated_act_backward(Real* dgate, Real* dup, const Real* dout, const Real* gate, const Real* up, int64_t n,
                        bool relu2);

// ---------------------------------------------------------------------------------------------------------
// Residual: out (n) = a + b (out may alias a). Backward: da += dout; db += dout.
template <class Real>
void residual_forward(Real* out, const Real* a, const Real* b, int64_t n);
template <class Real>
void residual_backward(Real* da, Real* db, const Real* dout, int64_t n);

// ---------------------------------------------------------------------------------------------------------
// Cross-entropy of logits (N,V) against targets (N); a target of kIgnoreTarget (-1) is not counted.
// Forward: losses (N) = logsumexp(row) - row[target] (0 for ignored rows; sums in double); returns the number
// of counted rows. The mean loss is sum(losses) / count. Targets are not range-checked here.
// Backward, fused with the softmax: dlogits (N,V) = dloss * (softmax(row) - onehot(target)) for counted rows,
// 0 for ignored rows (written, not accumulated: dlogits is a scratch buffer). dloss = 1/count for the mean.
using ::tl::kIgnoreTarget;  // model/backend.hpp
template <class Real>
int64_t crossentropy_forward(Real* losses, const Real* logits, const int32_t* targets, int64_t N, int64_t V);
template <class Real>
void crossentropy_softmax_backward(Real* dlogits, const Real* logits, const int32_t* targets, Real dloss,
                                   int64_t N, int64_t V);

}  // namespace tl::train
