// The CUDA model's kernels, behind thin launch functions with plain C types (pointers, sizes, a stream), so
// host code compiled by the C++ compiler calls them without CUDA syntax. Every launcher checks the launch.
//
// Layouts (row-major, N = B*T rows): activations (N, width); the fused q|k|v buffer (N, Q + 2*KV) with q
// heads, then k heads, then v heads, each head hd wide; the fused gate|up buffer (N, 2F). bf16 buffers hold
// either quantization codes (integers, exact) or bf16-rounded real values (quantizer off).
//
// Scales live on the device: `eff` points at a linear's effective weight scale (the value one weight code
// stands for: 1/(1/alpha), times (1 - zero fraction) for rpt-fixed, 1 when weight quantization is off; q,k,v
// and gate,up are consecutive so eff3/eff2 point at the first); `s_row` (N) are ActQuant scales of a GEMM's
// input rows (the input is code / s), or null for 1.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "model/quant_math.hpp"  // WeightQuant

struct __nv_bfloat16;

namespace tl::cuda {
class Gemm;  // cuda/gemm.hpp
}

namespace tl::cuda::k {

using bf16 = __nv_bfloat16;

// One linear for the weight statistics: its offset and size in the flat parameters, and its first block of
// `block_elems` elements in the partial-sum arrays.
struct LinearDesc {
  int64_t offset, numel, block_start;
};
inline constexpr int64_t kStatBlock = int64_t(1) << 16;

// psum[b] = sum |w| of block b (double), pcnt[b] = non-zero codes clamp(rint(w * (1/fixed)), -1, 1) in it
// (only when fixed != null, rpt-fixed). lin: device array of nlin descriptors; nblocks in all.
void weight_stats_partial(double* psum, unsigned long long* pcnt, const float* params, const LinearDesc* lin,
                          int nlin, int64_t nblocks, const float* fixed, cudaStream_t s);
// Per linear: alpha (the code scale: absmean = max(mean|w|, 1e-5) in fp32, or the fixed scale; 0 when off)
// and eff (see above). fixed: device (nlin) or null.
void weight_stats_finalize(float* alpha, float* eff, const double* psum, const unsigned long long* pcnt,
                           const LinearDesc* lin, int nlin, WeightQuant mode, const float* fixed,
                           cudaStream_t s);
// codes (n) = clamp(rint(w * (1 / *alpha)), -1, 1) as bf16; with alpha == null, bf16(w) (quantizer off).
void weight_codes(bf16* codes, const float* w, int64_t n, const float* alpha, cudaStream_t s);
void to_bf16(bf16* out, const float* in, int64_t n, cudaStream_t s);

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t C,
                       cudaStream_t s);
// Deterministic scatter-add, one writer per token: for each of the U distinct tokens seg_token[u], the rows
// order[seg_start[u] .. seg_start[u+1]) (ascending positions) are added to dtable[seg_token[u]] in order.
// (Atomics would make the sum's order, and so the bits, differ run to run; resuming must be bit-exact.)
void embedding_backward(float* dtable, const float* dout, const int32_t* order, const int32_t* seg_start,
                        const int32_t* seg_token, int64_t U, int64_t C, cudaStream_t s);

// x = res_in (+ acc * (*acc_eff) / acc_s[row] when acc != null; then x is written to res_out);
// h = w * (x * rstd), rstd = 1/sqrt(mean(x^2) + eps) (sum of squares in double), saved in rstd (N).
// quant: out = ActQuant codes of h, s_out (N) = (1/max|h|)*127; else out = bf16(h) and s_out (if given) = 1.
void residual_norm_quant(float* res_out, const float* res_in, const float* acc, const float* acc_eff,
                         const float* acc_s, const float* w, int64_t N, int64_t C, float eps, bf16* out,
                         float* rstd, float* s_out, bool quant, cudaStream_t s);
// Plain RMSNorm (the final norm): out (N, C) fp32, rstd (N).
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int64_t N, int64_t C,
                     float eps, cudaStream_t s);
// out = a + acc * (*eff) / s_row[row]  (N, C).
void residual_add_scaled(float* out, const float* a, const float* acc, const float* eff, const float* s_row,
                         int64_t N, int64_t C, cudaStream_t s);
// qkv (N, Q+2KV) in place: the GEMM's integer sums times eff/s_row per segment, then NeoX RoPE on q and k
// (row n at position n % T; cos/sin (max_pos, hd/2)).
void qkv_post(float* qkv, int64_t N, int64_t T, int64_t NH, int64_t NKV, int64_t hd, const float* eff3,
              const float* s_row, const float* cos, const float* sin, cudaStream_t s);
// dqkv (N, Q+2KV) in place: R^T on the q and k parts (RoPE backward).
void rope_backward(float* dqkv, int64_t N, int64_t T, int64_t NH, int64_t NKV, int64_t hd, const float* cos,
                   const float* sin, cudaStream_t s);
// gu (N, 2F) in place: gate|up sums times eff/s_row; h = act(gate) * up into hact (N, F) (act = relu² or
// silu); then ffn_sub_norm(h) (w, eps) quantized as residual_norm_quant does.
void gated_norm_quant(float* gu, float* hact, const float* eff2, const float* s_row, int64_t N, int64_t F,
                      bool relu2, const float* w, float eps, bf16* out, float* rstd, float* s_out, bool quant,
                      cudaStream_t s);

// Causal GQA attention over qkv (N, Q+2KV): out (N, Q), lse (N, NH) = log-sum-exp of each query row's
// scaled scores. Backward: dqkv (N, Q+2KV) is written (not accumulated) with dq, dk, dv; Dbuf (N, NH)
// scratch. dout, out (N, Q).
void attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t NH,
                       int64_t NKV, int64_t hd, cudaStream_t s);
void attention_backward(float* dqkv, float* Dbuf, const float* dout, const float* out, const float* qkv,
                        const float* lse, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t hd,
                        cudaStream_t s);

// The same attention through batched fp32 GEMMs (cuBLASLt) for short sequences such as the study's 128: per
// (sequence, kv head) the group's query heads are stacked, S = Q K^T and P = softmax(S) are (group*T, T)
// matrices in `scratch` (transient: nothing T x T outlives the call), and sequences go in chunks that fit.
// Same maths as attention_forward/backward (full fp32, another summation order). Returns false, doing
// nothing, when one sequence's work does not fit in scratch_bytes (then use the kernels above).
size_t attention_gemm_bytes_per_sequence(int64_t T, int64_t NH, int64_t NKV, int64_t hd);
bool attention_forward_gemm(Gemm& gemm, float* scratch, size_t scratch_bytes, float* out, float* lse,
                            const float* qkv, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t hd,
                            cudaStream_t s);
bool attention_backward_gemm(Gemm& gemm, float* scratch, size_t scratch_bytes, float* dqkv, float* Dbuf,
                             const float* dout, const float* out, const float* qkv, const float* lse,
                             int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t hd, cudaStream_t s);

// RMSNorm backward, dinp part: dinp (=, or += when accumulate) rstd w dout - rstd^3/C x sum(w dout x).
void rmsnorm_backward(float* dinp, bool accumulate, const float* dout, const float* inp, const float* w,
                      const float* rstd, int64_t N, int64_t C, cudaStream_t s);
// dweight (C) += sum_n dout_n * x_n * rstd_n, deterministically (column partials over row chunks in
// `partial`, at least kDweightChunks * C doubles, then summed in order). gated: x = act(gate) * up from
// gu (N, 2C) instead of inp.
inline constexpr int kDweightChunks = 32;
void rmsnorm_dweight(float* dweight, double* partial, const float* dout, const float* inp, const float* rstd,
                     int64_t N, int64_t C, cudaStream_t s);
void gated_rmsnorm_dweight(float* dweight, double* partial, const float* dout, const float* gu,
                           const float* rstd, int64_t N, int64_t F, bool relu2, cudaStream_t s);
// The MLP's backward from d(ffn_sub_norm output) dffn (N, F) to d gate|up, as the bf16 GEMM operands:
// dyb (N, 2F) = d * eff (gate / up segment), dys (N, 2F) = d / s_row[row] (s_row: the gate/up input's
// ActQuant scales, or null).
void gated_norm_backward(bf16* dyb, bf16* dys, const float* dffn, const float* gu, const float* w,
                         const float* rstd, const float* eff2, const float* s_row, int64_t N, int64_t F,
                         bool relu2, cudaStream_t s);
// A linear's output gradient dy (N, OC) as bf16 GEMM operands: dyb = dy * eff[segment] (segments [0,b1),
// [b1,b2), [b2,OC) use eff[0], eff[1], eff[2]) for dX = dyb . codes; dys = dy / s_row[row] for dW = dys^T .
// codes_x.
void dy_convert(bf16* dyb, bf16* dys, const float* dy, int64_t N, int64_t OC, int64_t b1, int64_t b2,
                const float* eff, const float* s_row, cudaStream_t s);

// Cross-entropy of a chunk of logits (rows, V) fp32: losses (rows) = logsumexp - logit[target] (0 where the
// target is -1; max-subtracted, the sum of exponentials in double), when losses != null; dlogits (rows, V)
// fp32 = dloss * (softmax - onehot) (0 rows for ignored targets), when dlogits != null; dlogits may be
// logits itself (overwritten in place).
void crossentropy(float* losses, float* dlogits, const float* logits, const int32_t* targets, int64_t rows,
                  int64_t V, float dloss, cudaStream_t s);

}  // namespace tl::cuda::k
