// Elementwise, normalization, quantization, embedding and cross-entropy kernels of the CUDA model (see
// kernels.hpp). Row kernels run one block per row; reductions are in a fixed order (deterministic).
#include <cuda_bf16.h>

#include <cfloat>
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"

namespace tl::cuda::k {

namespace {

constexpr int kRowThreads = 256;
constexpr unsigned kFull = 0xffffffffu;

template <class T>
__device__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Sum over the block (every thread gets it); blockDim.x a multiple of 32, at most 1024.
template <class T>
__device__ T block_sum(T v) {
  __shared__ T sh[32];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  if (wid == 0) {
    T r = lane < nw ? sh[lane] : T(0);
    r = warp_sum(r);
    if (lane == 0) sh[0] = r;
  }
  __syncthreads();
  return sh[0];
}

__device__ float block_max(float v) {
  __shared__ float sh[32];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  if (wid == 0) {
    float r = lane < nw ? sh[lane] : -FLT_MAX;
    r = warp_max(r);
    if (lane == 0) sh[0] = r;
  }
  __syncthreads();
  return sh[0];
}

__device__ __forceinline__ float act_fn(float g, bool relu2) {
  if (relu2) {
    const float r = g > 0.f ? g : 0.f;
    return r * r;
  }
  return g / (1.f + expf(-g));
}

// act(g) and act'(g), as train/ops.cpp's gated_act_backward.
__device__ __forceinline__ void act_and_grad(float g, bool relu2, float& act, float& dact) {
  if (relu2) {
    const float r = g > 0.f ? g : 0.f;
    act = r * r;
    dact = 2.f * r;
  } else {
    const float sig = 1.f / (1.f + expf(-g));
    act = g * sig;
    dact = sig * (1.f + g * (1.f - sig));
  }
}

inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535 * 8) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return unsigned(b);
}

__device__ __forceinline__ void store(bf16* p, float v) {
  *p = __float2bfloat16(v);
}
__device__ __forceinline__ void store(float* p, float v) {
  *p = v;
}

// RMSNorm (+ ActQuant) of one row x (C), given its sum of squares; one block. See residual_norm_quant.
template <class Out>
__device__ void norm_quant_row(const float* x, double ss, const float* w, int64_t C, float eps, Out* out,
                               float* rstd, float* s_out, bool quant) {
  const float var = float(ss / double(C));
  const float r = 1.0f / sqrtf(var + eps);
  if (!quant) {
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) store(out + i, w[i] * (x[i] * r));
    if (threadIdx.x == 0) {
      *rstd = r;
      if (s_out) *s_out = 1.f;
    }
    return;
  }
  float amax = 0.f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) amax = fmaxf(amax, fabsf(w[i] * (x[i] * r)));
  amax = block_max(amax);
  const float s = quant::act_scale(amax);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    const float q = quant::act_code(w[i] * (x[i] * r), s);
    store(out + i, q);
  }
  if (threadIdx.x == 0) {
    *rstd = r;
    if (s_out) *s_out = s;
  }
}

// ---------------------------------------------------------------------------------------------------------

__global__ void weight_stats_partial_kernel(double* psum, unsigned long long* pcnt, const float* params,
                                            const LinearDesc* lin, int nlin, const float* fixed) {
  const int64_t b = blockIdx.x;
  int lo = 0, hi = nlin - 1;  // the last linear whose block_start <= b
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (lin[mid].block_start <= b)
      lo = mid;
    else
      hi = mid - 1;
  }
  const LinearDesc d = lin[lo];
  const int64_t start = (b - d.block_start) * kStatBlock;
  const int64_t end = min(d.numel, start + kStatBlock);
  const float* w = params + d.offset;
  const float inv = fixed ? 1.0f / fixed[lo] : 0.f;
  double sum = 0;
  unsigned long long cnt = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float v = w[i];
    sum += fabs(double(v));
    if (fixed) cnt += quant::weight_code(v, inv) != 0.f;
  }
  sum = block_sum(sum);
  cnt = block_sum(cnt);
  if (threadIdx.x == 0) {
    psum[b] = sum;
    pcnt[b] = cnt;
  }
}

__global__ void weight_stats_finalize_kernel(float* alpha, float* eff, const double* psum,
                                             const unsigned long long* pcnt, const LinearDesc* lin, int nlin,
                                             WeightQuant mode, const float* fixed) {
  const int li = blockIdx.x * blockDim.x + threadIdx.x;
  if (li >= nlin) return;
  const LinearDesc d = lin[li];
  const int64_t nb = (d.numel + kStatBlock - 1) / kStatBlock;
  if (mode == WeightQuant::Off) {
    alpha[li] = 0.f;
    eff[li] = 1.f;
    return;
  }
  float a;
  if (mode == WeightQuant::Absmean) {
    double sum = 0;
    for (int64_t b = 0; b < nb; ++b) sum += psum[d.block_start + b];
    const float mean = d.numel ? float(sum / double(d.numel)) : 0.f;
    a = quant::absmean_alpha(mean);
  } else {
    a = fixed[li];
  }
  const float inv = 1.0f / a;
  float e = 1.0f / inv;  // one code stands for code / inv (transformers divides by s = 1/alpha)
  if (mode == WeightQuant::RptFixed) {
    unsigned long long nz = 0;
    for (int64_t b = 0; b < nb; ++b) nz += pcnt[d.block_start + b];
    e *= d.numel ? float(double(nz) / double(d.numel)) : 0.f;
  }
  alpha[li] = a;
  eff[li] = e;
}

__global__ void weight_codes_kernel(bf16* codes, const float* w, int64_t n, const float* alpha) {
  const float inv = alpha ? 1.0f / *alpha : 0.f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    codes[i] = alpha ? __float2bfloat16(quant::weight_code(w[i], inv)) : __float2bfloat16(w[i]);
}

// Four codes per thread (16-byte loads, 8-byte stores) where the pointers allow: this kernel streams every
// weight of the model twice per step.
__global__ void weight_codes4_kernel(bf16* codes, const float* w, int64_t n4, const float* alpha) {
  const float inv = alpha ? 1.0f / *alpha : 0.f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float4 x = reinterpret_cast<const float4*>(w)[i];
    float c[4] = {x.x, x.y, x.z, x.w};
    if (alpha)
      for (float& v : c) v = quant::weight_code(v, inv);
    __align__(8) bf16 o[4] = {__float2bfloat16(c[0]), __float2bfloat16(c[1]), __float2bfloat16(c[2]),
                              __float2bfloat16(c[3])};
    reinterpret_cast<uint2*>(codes)[i] = *reinterpret_cast<const uint2*>(o);
  }
}

__global__ void to_bf16_kernel(bf16* out, const float* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* table, int64_t C) {
  const int64_t n = blockIdx.x;
  const float* src = table + int64_t(tokens[n]) * C;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) out[n * C + i] = src[i];
}

__global__ void embedding_backward_kernel(float* dtable, const float* dout, const int32_t* order,
                                          const int32_t* seg_start, const int32_t* seg_token, int64_t C) {
  const int64_t u = blockIdx.x;
  float* dst = dtable + int64_t(seg_token[u]) * C;
  const int32_t begin = seg_start[u], end = seg_start[u + 1];
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    float acc = dst[i];
    for (int32_t r = begin; r < end; ++r) acc += dout[int64_t(order[r]) * C + i];
    dst[i] = acc;
  }
}

__global__ void residual_norm_quant_kernel(float* res_out, const float* res_in, const float* acc,
                                           const float* acc_eff, const float* acc_s, const float* w,
                                           int64_t C, float eps, bf16* out, float* rstd, float* s_out,
                                           bool quant) {
  const int64_t row = blockIdx.x;
  const float* xi = res_in + row * C;
  float scale = 0.f;
  if (acc) scale = *acc_eff / (acc_s ? acc_s[row] : 1.f);
  double ss = 0;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    float x = xi[i];
    if (acc) {
      x = x + acc[row * C + i] * scale;
      res_out[row * C + i] = x;  // read back below by this same thread
    }
    ss += double(x) * double(x);
  }
  ss = block_sum(ss);
  norm_quant_row(acc ? res_out + row * C : xi, ss, w, C, eps, out + row * C, rstd + row,
                 s_out ? s_out + row : nullptr, quant);
}

__global__ void rmsnorm_f32_kernel(float* out, float* rstd, const float* inp, const float* w, int64_t C,
                                   float eps) {
  const int64_t row = blockIdx.x;
  const float* x = inp + row * C;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) ss += double(x[i]) * double(x[i]);
  ss = block_sum(ss);
  norm_quant_row(x, ss, w, C, eps, out + row * C, rstd + row, nullptr, false);
}

__global__ void residual_add_scaled_kernel(float* out, const float* a, const float* acc, const float* eff,
                                           const float* s_row, int64_t C) {
  const int64_t row = blockIdx.x;
  const float scale = *eff / (s_row ? s_row[row] : 1.f);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
    out[row * C + i] = a[row * C + i] + acc[row * C + i] * scale;
}

__global__ void qkv_post_kernel(float* qkv, int64_t T, int64_t NH, int64_t NKV, int64_t hd, const float* eff3,
                                const float* s_row, const float* cos, const float* sin) {
  const int64_t row = blockIdx.x, pos = row % T, half = hd / 2;
  const int64_t Q = NH * hd, KV = NKV * hd, W = Q + 2 * KV;
  const float s = s_row ? s_row[row] : 1.f;
  const float sq = eff3[0] / s, sk = eff3[1] / s, sv = eff3[2] / s;
  float* x = qkv + row * W;
  const float* c = cos + pos * half;
  const float* sn = sin + pos * half;
  for (int64_t p = threadIdx.x; p < (NH + NKV) * half; p += blockDim.x) {
    const int64_t head = p / half, i = p % half, col = head * hd;  // k heads follow the q heads
    const float sc = head < NH ? sq : sk;
    const float x1 = x[col + i] * sc, x2 = x[col + i + half] * sc;
    x[col + i] = __fsub_rn(__fmul_rn(x1, c[i]), __fmul_rn(x2, sn[i]));
    x[col + i + half] = __fadd_rn(__fmul_rn(x2, c[i]), __fmul_rn(x1, sn[i]));
  }
  for (int64_t j = threadIdx.x; j < KV; j += blockDim.x) x[Q + KV + j] *= sv;
}

__global__ void rope_backward_kernel(float* dqkv, int64_t T, int64_t NH, int64_t NKV, int64_t hd,
                                     const float* cos, const float* sin) {
  const int64_t row = blockIdx.x, pos = row % T, half = hd / 2;
  const int64_t W = (NH + 2 * NKV) * hd;
  float* g = dqkv + row * W;
  const float* c = cos + pos * half;
  const float* sn = sin + pos * half;
  for (int64_t p = threadIdx.x; p < (NH + NKV) * half; p += blockDim.x) {
    const int64_t col = (p / half) * hd, i = p % half;
    const float g1 = g[col + i], g2 = g[col + i + half];
    g[col + i] = __fadd_rn(__fmul_rn(g1, c[i]), __fmul_rn(g2, sn[i]));
    g[col + i + half] = __fsub_rn(__fmul_rn(g2, c[i]), __fmul_rn(g1, sn[i]));
  }
}

__global__ void gated_norm_quant_kernel(float* gu, float* hact, const float* eff2, const float* s_row,
                                        int64_t F, bool relu2, const float* w, float eps, bf16* out,
                                        float* rstd, float* s_out, bool quant) {
  const int64_t row = blockIdx.x;
  const float s = s_row ? s_row[row] : 1.f;
  const float sg = eff2[0] / s, su = eff2[1] / s;
  float* g = gu + row * 2 * F;
  float* h = hact + row * F;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < F; i += blockDim.x) {
    const float gv = g[i] * sg, uv = g[F + i] * su;
    g[i] = gv;
    g[F + i] = uv;
    const float hv = act_fn(gv, relu2) * uv;
    h[i] = hv;
    ss += double(hv) * double(hv);
  }
  ss = block_sum(ss);
  norm_quant_row(h, ss, w, F, eps, out + row * F, rstd + row, s_out ? s_out + row : nullptr, quant);
}

__global__ void rmsnorm_backward_kernel(float* dinp, bool accumulate, const float* dout, const float* inp,
                                        const float* w, const float* rstd, int64_t C) {
  const int64_t row = blockIdx.x;
  const float* x = inp + row * C;
  const float* g = dout + row * C;
  float* dx = dinp + row * C;
  const float r = rstd[row];
  double wgx = 0;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) wgx += double(w[i]) * double(g[i]) * double(x[i]);
  wgx = block_sum(wgx);
  const float c = float(double(r) * double(r) * double(r) / double(C) * wgx);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    const float v = __fsub_rn(__fmul_rn(__fmul_rn(r, w[i]), g[i]), __fmul_rn(c, x[i]));
    dx[i] = accumulate ? dx[i] + v : v;
  }
}

// Column partials of sum_n dout * x * rstd over a chunk of rows: block (32, 8), grid (C/32, chunks).
template <bool kGated>
__global__ void dweight_partial_kernel(double* partial, const float* dout, const float* inp,
                                       const float* rstd, int64_t N, int64_t C, int64_t rows_per_chunk,
                                       bool relu2) {
  __shared__ double sh[8][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
  double acc = 0;
  if (col < C) {
    for (int64_t n = r0 + threadIdx.y; n < r1; n += 8) {
      float x;
      if constexpr (kGated)
        x = act_fn(inp[n * 2 * C + col], relu2) * inp[n * 2 * C + C + col];
      else
        x = inp[n * C + col];
      acc += double(dout[n * C + col]) * double(x) * double(rstd[n]);
    }
  }
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < C) {
    double s = 0;
    for (int j = 0; j < 8; ++j) s += sh[j][threadIdx.x];
    partial[blockIdx.y * C + col] = s;
  }
}

__global__ void dweight_finalize_kernel(float* dweight, const double* partial, int64_t C, int chunks) {
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= C) return;
  double s = 0;
  for (int j = 0; j < chunks; ++j) s += partial[j * C + col];
  dweight[col] += float(s);
}

__global__ void gated_norm_backward_kernel(bf16* dyb, bf16* dys, const float* dffn, const float* gu,
                                           const float* w, const float* rstd, const float* eff2,
                                           const float* s_row, int64_t F, bool relu2) {
  const int64_t row = blockIdx.x;
  const float* g = gu + row * 2 * F;
  const float* d = dffn + row * F;
  const float r = rstd[row];
  double wgx = 0;
  for (int64_t i = threadIdx.x; i < F; i += blockDim.x)
    wgx += double(w[i]) * double(d[i]) * double(act_fn(g[i], relu2) * g[F + i]);
  wgx = block_sum(wgx);
  const float c = float(double(r) * double(r) * double(r) / double(F) * wgx);
  const float eg = eff2[0], eu = eff2[1];
  const float inv_s = s_row ? 1.f / s_row[row] : 1.f;
  bf16* ob = dyb + row * 2 * F;
  bf16* os = dys + row * 2 * F;
  for (int64_t i = threadIdx.x; i < F; i += blockDim.x) {
    float act, dact;
    act_and_grad(g[i], relu2, act, dact);
    const float u = g[F + i];
    const float h = act * u;
    const float dh = __fsub_rn(__fmul_rn(__fmul_rn(r, w[i]), d[i]), __fmul_rn(c, h));
    const float dgate = dh * u * dact, dup = dh * act;
    ob[i] = __float2bfloat16(dgate * eg);
    ob[F + i] = __float2bfloat16(dup * eu);
    os[i] = __float2bfloat16(dgate * inv_s);
    os[F + i] = __float2bfloat16(dup * inv_s);
  }
}

__global__ void dy_convert_kernel(bf16* dyb, bf16* dys, const float* dy, int64_t OC, int64_t b1, int64_t b2,
                                  const float* eff, const float* s_row) {
  const int64_t row = blockIdx.x;
  const float inv_s = s_row ? 1.f / s_row[row] : 1.f;
  const float e0 = eff[0], e1 = b1 < OC ? eff[1] : 0.f, e2 = b2 < OC ? eff[2] : 0.f;
  for (int64_t i = threadIdx.x; i < OC; i += blockDim.x) {
    const float v = dy[row * OC + i];
    const float e = i < b1 ? e0 : (i < b2 ? e1 : e2);
    dyb[row * OC + i] = __float2bfloat16(v * e);
    dys[row * OC + i] = __float2bfloat16(v * inv_s);
  }
}

__global__ void crossentropy_kernel(float* losses, float* dlogits, const float* logits,
                                    const int32_t* targets, int64_t V, float dloss) {
  const int64_t row = blockIdx.x;
  const int32_t t = targets[row];
  const float* x = logits + row * V;
  float* d =
      dlogits ? dlogits + row * V : nullptr;  // may alias x: element i is read, then written, by one thread
  if (t < 0) {                                // ignored: no loss, no gradient
    if (losses && threadIdx.x == 0) losses[row] = 0.f;
    if (d)
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) d[i] = 0.f;
    return;
  }
  const float xt = x[t];  // read by every thread before any gradient is written
  float m = -FLT_MAX;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, x[i]);
  m = block_max(m);
  double sum = 0;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) sum += double(expf(x[i] - m));
  sum = block_sum(sum);
  if (losses && threadIdx.x == 0) losses[row] = float(double(m) + log(sum) - double(xt));
  if (d) {
    const float inv = float(1.0 / sum);
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      float g = (expf(x[i] - m) * inv) * dloss;
      if (i == t) g -= dloss;
      d[i] = g;
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------

void weight_stats_partial(double* psum, unsigned long long* pcnt, const float* params, const LinearDesc* lin,
                          int nlin, int64_t nblocks, const float* fixed, cudaStream_t s) {
  if (nblocks <= 0) return;
  weight_stats_partial_kernel<<<unsigned(nblocks), 256, 0, s>>>(psum, pcnt, params, lin, nlin, fixed);
  TL_CUDA_CHECK_LAUNCH();
}

void weight_stats_finalize(float* alpha, float* eff, const double* psum, const unsigned long long* pcnt,
                           const LinearDesc* lin, int nlin, WeightQuant mode, const float* fixed,
                           cudaStream_t s) {
  weight_stats_finalize_kernel<<<unsigned((nlin + 63) / 64), 64, 0, s>>>(alpha, eff, psum, pcnt, lin, nlin,
                                                                         mode, fixed);
  TL_CUDA_CHECK_LAUNCH();
}

void weight_codes(bf16* codes, const float* w, int64_t n, const float* alpha, cudaStream_t s) {
  if (reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(codes) % 8 == 0) {
    const int64_t n4 = n / 4;
    if (n4 > 0) weight_codes4_kernel<<<grid_for(n4, 256), 256, 0, s>>>(codes, w, n4, alpha);
    if (n % 4) weight_codes_kernel<<<1, 32, 0, s>>>(codes + 4 * n4, w + 4 * n4, n % 4, alpha);
  } else {
    weight_codes_kernel<<<grid_for(n, 256), 256, 0, s>>>(codes, w, n, alpha);
  }
  TL_CUDA_CHECK_LAUNCH();
}

void to_bf16(bf16* out, const float* in, int64_t n, cudaStream_t s) {
  to_bf16_kernel<<<grid_for(n, 256), 256, 0, s>>>(out, in, n);
  TL_CUDA_CHECK_LAUNCH();
}

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t C,
                       cudaStream_t s) {
  embedding_forward_kernel<<<unsigned(N), kRowThreads, 0, s>>>(out, tokens, table, C);
  TL_CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* dtable, const float* dout, const int32_t* order, const int32_t* seg_start,
                        const int32_t* seg_token, int64_t U, int64_t C, cudaStream_t s) {
  if (U == 0) return;
  embedding_backward_kernel<<<unsigned(U), kRowThreads, 0, s>>>(dtable, dout, order, seg_start, seg_token, C);
  TL_CUDA_CHECK_LAUNCH();
}

void residual_norm_quant(float* res_out, const float* res_in, const float* acc, const float* acc_eff,
                         const float* acc_s, const float* w, int64_t N, int64_t C, float eps, bf16* out,
                         float* rstd, float* s_out, bool quant, cudaStream_t s) {
  residual_norm_quant_kernel<<<unsigned(N), kRowThreads, 0, s>>>(res_out, res_in, acc, acc_eff, acc_s, w, C,
                                                                 eps, out, rstd, s_out, quant);
  TL_CUDA_CHECK_LAUNCH();
}

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int64_t N, int64_t C,
                     float eps, cudaStream_t s) {
  rmsnorm_f32_kernel<<<unsigned(N), kRowThreads, 0, s>>>(out, rstd, inp, w, C, eps);
  TL_CUDA_CHECK_LAUNCH();
}

void residual_add_scaled(float* out, const float* a, const float* acc, const float* eff, const float* s_row,
                         int64_t N, int64_t C, cudaStream_t s) {
  residual_add_scaled_kernel<<<unsigned(N), kRowThreads, 0, s>>>(out, a, acc, eff, s_row, C);
  TL_CUDA_CHECK_LAUNCH();
}

void qkv_post(float* qkv, int64_t N, int64_t T, int64_t NH, int64_t NKV, int64_t hd, const float* eff3,
              const float* s_row, const float* cos, const float* sin, cudaStream_t s) {
  qkv_post_kernel<<<unsigned(N), kRowThreads, 0, s>>>(qkv, T, NH, NKV, hd, eff3, s_row, cos, sin);
  TL_CUDA_CHECK_LAUNCH();
}

void rope_backward(float* dqkv, int64_t N, int64_t T, int64_t NH, int64_t NKV, int64_t hd, const float* cos,
                   const float* sin, cudaStream_t s) {
  rope_backward_kernel<<<unsigned(N), kRowThreads, 0, s>>>(dqkv, T, NH, NKV, hd, cos, sin);
  TL_CUDA_CHECK_LAUNCH();
}

void gated_norm_quant(float* gu, float* hact, const float* eff2, const float* s_row, int64_t N, int64_t F,
                      bool relu2, const float* w, float eps, bf16* out, float* rstd, float* s_out, bool quant,
                      cudaStream_t s) {
  gated_norm_quant_kernel<<<unsigned(N), kRowThreads, 0, s>>>(gu, hact, eff2, s_row, F, relu2, w, eps, out,
                                                              rstd, s_out, quant);
  TL_CUDA_CHECK_LAUNCH();
}

void rmsnorm_backward(float* dinp, bool accumulate, const float* dout, const float* inp, const float* w,
                      const float* rstd, int64_t N, int64_t C, cudaStream_t s) {
  rmsnorm_backward_kernel<<<unsigned(N), kRowThreads, 0, s>>>(dinp, accumulate, dout, inp, w, rstd, C);
  TL_CUDA_CHECK_LAUNCH();
}

namespace {
template <bool kGated>
void dweight_impl(float* dweight, double* partial, const float* dout, const float* inp, const float* rstd,
                  int64_t N, int64_t C, bool relu2, cudaStream_t s) {
  int64_t chunks64 = (N + 31) / 32;
  if (chunks64 > kDweightChunks) chunks64 = kDweightChunks;
  const int chunks = chunks64 < 1 ? 1 : int(chunks64);
  const int64_t rows = (N + chunks - 1) / chunks;
  const dim3 grid(unsigned((C + 31) / 32), unsigned(chunks));
  dweight_partial_kernel<kGated><<<grid, dim3(32, 8), 0, s>>>(partial, dout, inp, rstd, N, C, rows, relu2);
  TL_CUDA_CHECK_LAUNCH();
  dweight_finalize_kernel<<<grid_for(C, 256), 256, 0, s>>>(dweight, partial, C, chunks);
  TL_CUDA_CHECK_LAUNCH();
}
}  // namespace

void rmsnorm_dweight(float* dweight, double* partial, const float* dout, const float* inp, const float* rstd,
                     int64_t N, int64_t C, cudaStream_t s) {
  dweight_impl<false>(dweight, partial, dout, inp, rstd, N, C, false, s);
}

void gated_rmsnorm_dweight(float* dweight, double* partial, const float* dout, const float* gu,
                           const float* rstd, int64_t N, int64_t F, bool relu2, cudaStream_t s) {
  dweight_impl<true>(dweight, partial, dout, gu, rstd, N, F, relu2, s);
}

void gated_norm_backward(bf16* dyb, bf16* dys, const float* dffn, const float* gu, const float* w,
                         const float* rstd, const float* eff2, const float* s_row, int64_t N, int64_t F,
                         bool relu2, cudaStream_t s) {
  gated_norm_backward_kernel<<<unsigned(N), kRowThreads, 0, s>>>(dyb, dys, dffn, gu, w, rstd, eff2, s_row, F,
                                                                 relu2);
  TL_CUDA_CHECK_LAUNCH();
}

void dy_convert(bf16* dyb, bf16* dys, const float* dy, int64_t N, int64_t OC, int64_t b1, int64_t b2,
                const float* eff, const float* s_row, cudaStream_t s) {
  dy_convert_kernel<<<unsigned(N), kRowThreads, 0, s>>>(dyb, dys, dy, OC, b1, b2, eff, s_row);
  TL_CUDA_CHECK_LAUNCH();
}

void crossentropy(float* losses, float* dlogits, const float* logits, const int32_t* targets, int64_t rows,
                  int64_t V, float dloss, cudaStream_t s) {
  if (rows <= 0) return;
  crossentropy_kernel<<<unsigned(rows), 1024, 0, s>>>(losses, dlogits, logits, targets, V, dloss);
  TL_CUDA_CHECK_LAUNCH();
}

}  // namespace tl::cuda::k
