// Causal grouped-query attention in fp32 (see kernels.hpp): forward with an online softmax that saves the
// log-sum-exp per (row, head); backward recomputes the probabilities from it (no O(T^2) memory).
//
// Forward and dq: a block of 4 warps owns 16 query rows of one (batch, head); key/value tiles of 32 keys are
// staged in shared memory, lane j scores key j, each lane accumulates the head dimensions d = lane + 32 i.
// dk/dv: a block owns 16 keys of one (batch, kv head) and walks the query tiles (of every query head of its
// group) at or after them, lane t handling query t; so dq, dk, dv are written without atomics.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/gemm.hpp"
#include "cuda/kernels.hpp"

namespace tl::cuda::k {

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int KT = 32;       // keys (forward, dq) or queries (dk/dv) per shared tile: one per lane
constexpr int NW = 4;        // warps per block
constexpr int RW = 4;        // rows per warp
constexpr int RT = NW * RW;  // rows per block
constexpr int MAXD = 8;      // head dims per lane: hd <= 256
constexpr int kMaxHeadDim = 32 * MAXD;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

__global__ void attn_forward_kernel(float* out, float* lse, const float* qkv, int T, int NH, int NKV, int hd,
                                    float scale) {
  extern __shared__ float sm[];
  const int ldk = hd + 1;
  float* Ks = sm;             // [KT][ldk]
  float* Vs = Ks + KT * ldk;  // [KT][hd]
  float* Qs = Vs + KT * hd;   // [RT][hd]
  const int b = blockIdx.z, h = blockIdx.y, t0 = blockIdx.x * RT;
  const int kvh = h / (NH / NKV);
  const int64_t Q = int64_t(NH) * hd, KVd = int64_t(NKV) * hd, W = Q + 2 * KVd;
  const float* base = qkv + int64_t(b) * T * W;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int idx = tid; idx < RT * hd; idx += blockDim.x) {
    const int r = idx / hd, d = idx % hd, t = t0 + r;
    Qs[idx] = t < T ? base[int64_t(t) * W + int64_t(h) * hd + d] : 0.f;
  }
  float m[RW], l[RW], o[RW][MAXD];
#pragma unroll
  for (int rr = 0; rr < RW; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.f;
#pragma unroll
    for (int i = 0; i < MAXD; ++i) o[rr][i] = 0.f;
  }
  const int tlast = min(T - 1, t0 + RT - 1);
  for (int k0 = 0; k0 <= tlast; k0 += KT) {
    __syncthreads();  // the previous tile is consumed
    for (int idx = tid; idx < KT * hd; idx += blockDim.x) {
      const int j = idx / hd, d = idx % hd, key = k0 + j;
      float kv = 0.f, vv = 0.f;
      if (key < T) {
        kv = base[int64_t(key) * W + Q + int64_t(kvh) * hd + d];
        vv = base[int64_t(key) * W + Q + KVd + int64_t(kvh) * hd + d];
      }
      Ks[j * ldk + d] = kv;
      Vs[j * hd + d] = vv;
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < RW; ++rr) {
      const int r = warp * RW + rr, t = t0 + r;
      if (t >= T || k0 > t) continue;  // warp-uniform
      const int key = k0 + lane;
      float sc = -INFINITY;
      if (key <= t) {
        const float* q = Qs + r * hd;
        const float* kk = Ks + lane * ldk;
        float acc = 0.f;
        for (int d = 0; d < hd; ++d) acc += q[d] * kk[d];
        sc = acc * scale;
      }
      const float mn = fmaxf(m[rr], warp_max(sc));
      const float corr = expf(m[rr] - mn);  // 0 on the first tile (m = -inf)
      const float p = key <= t ? expf(sc - mn) : 0.f;
      l[rr] = l[rr] * corr + warp_sum(p);
      m[rr] = mn;
      const int jn = min(KT, t - k0 + 1);
#pragma unroll
      for (int i = 0; i < MAXD; ++i) o[rr][i] *= corr;
      for (int j = 0; j < jn; ++j) {
        const float pj = __shfl_sync(kFull, p, j);
        const float* vj = Vs + j * hd;
#pragma unroll
        for (int i = 0; i < MAXD; ++i)
          if (lane + 32 * i < hd) o[rr][i] += pj * vj[lane + 32 * i];
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < RW; ++rr) {
    const int t = t0 + warp * RW + rr;
    if (t >= T) continue;
    const int64_t row = int64_t(b) * T + t;
    const float inv = 1.f / l[rr];
#pragma unroll
    for (int i = 0; i < MAXD; ++i)
      if (lane + 32 * i < hd) out[row * Q + int64_t(h) * hd + lane + 32 * i] = o[rr][i] * inv;
    if (lane == 0) lse[row * NH + h] = m[rr] + logf(l[rr]);
  }
}

// D[row, h] = sum_d dout * out over the head (one warp per (row, head)).
__global__ void attn_D_kernel(float* D, const float* dout, const float* out, int64_t rows_heads, int hd) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= rows_heads) return;
  const float* a = dout + w * hd;  // (row, h) at row * Q + h * hd = w * hd
  const float* c = out + w * hd;
  float s = 0.f;
  for (int d = lane; d < hd; d += 32) s += a[d] * c[d];
  s = warp_sum(s);
  if (lane == 0) D[w] = s;
}

__global__ void attn_dq_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                               const float* D, int T, int NH, int NKV, int hd, float scale) {
  extern __shared__ float sm[];
  const int ldk = hd + 1;
  float* Ks = sm;             // [KT][ldk]
  float* Vs = Ks + KT * ldk;  // [KT][ldk]
  float* Qs = Vs + KT * ldk;  // [RT][hd]
  float* dOs = Qs + RT * hd;  // [RT][hd]
  const int b = blockIdx.z, h = blockIdx.y, t0 = blockIdx.x * RT;
  const int kvh = h / (NH / NKV);
  const int64_t Q = int64_t(NH) * hd, KVd = int64_t(NKV) * hd, W = Q + 2 * KVd;
  const float* base = qkv + int64_t(b) * T * W;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int idx = tid; idx < RT * hd; idx += blockDim.x) {
    const int r = idx / hd, d = idx % hd, t = t0 + r;
    const bool ok = t < T;
    Qs[idx] = ok ? base[int64_t(t) * W + int64_t(h) * hd + d] : 0.f;
    dOs[idx] = ok ? dout[(int64_t(b) * T + t) * Q + int64_t(h) * hd + d] : 0.f;
  }
  float lrow[RW], Drow[RW], dq[RW][MAXD];
#pragma unroll
  for (int rr = 0; rr < RW; ++rr) {
    const int t = t0 + warp * RW + rr;
    const int64_t row = int64_t(b) * T + t;
    lrow[rr] = t < T ? lse[row * NH + h] : 0.f;
    Drow[rr] = t < T ? D[row * NH + h] : 0.f;
#pragma unroll
    for (int i = 0; i < MAXD; ++i) dq[rr][i] = 0.f;
  }
  const int tlast = min(T - 1, t0 + RT - 1);
  for (int k0 = 0; k0 <= tlast; k0 += KT) {
    __syncthreads();
    for (int idx = tid; idx < KT * hd; idx += blockDim.x) {
      const int j = idx / hd, d = idx % hd, key = k0 + j;
      float kv = 0.f, vv = 0.f;
      if (key < T) {
        kv = base[int64_t(key) * W + Q + int64_t(kvh) * hd + d];
        vv = base[int64_t(key) * W + Q + KVd + int64_t(kvh) * hd + d];
      }
      Ks[j * ldk + d] = kv;
      Vs[j * ldk + d] = vv;
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < RW; ++rr) {
      const int r = warp * RW + rr, t = t0 + r;
      if (t >= T || k0 > t) continue;
      const int key = k0 + lane;
      float ds = 0.f;
      if (key <= t) {
        const float* q = Qs + r * hd;
        const float* go = dOs + r * hd;
        const float* kk = Ks + lane * ldk;
        const float* vv = Vs + lane * ldk;
        float s = 0.f, dp = 0.f;
        for (int d = 0; d < hd; ++d) {
          s += q[d] * kk[d];
          dp += go[d] * vv[d];
        }
        const float p = expf(s * scale - lrow[rr]);
        ds = p * (dp - Drow[rr]) * scale;
      }
      const int jn = min(KT, t - k0 + 1);
      for (int j = 0; j < jn; ++j) {
        const float dj = __shfl_sync(kFull, ds, j);
        const float* kj = Ks + j * ldk;
#pragma unroll
        for (int i = 0; i < MAXD; ++i)
          if (lane + 32 * i < hd) dq[rr][i] += dj * kj[lane + 32 * i];
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < RW; ++rr) {
    const int t = t0 + warp * RW + rr;
    if (t >= T) continue;
    float* dst = dqkv + (int64_t(b) * T + t) * W + int64_t(h) * hd;
#pragma unroll
    for (int i = 0; i < MAXD; ++i)
      if (lane + 32 * i < hd) dst[lane + 32 * i] = dq[rr][i];
  }
}

__global__ void attn_dkv_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                                const float* D, int T, int NH, int NKV, int hd, float scale) {
  extern __shared__ float sm[];
  const int ldk = hd + 1;
  float* Qs = sm;              // [KT][ldk] query tile
  float* dOs = Qs + KT * ldk;  // [KT][ldk]
  float* Kr = dOs + KT * ldk;  // [RT][hd] this block's keys
  float* Vr = Kr + RT * hd;    // [RT][hd]
  float* Ls = Vr + RT * hd;    // [KT]
  float* Ds = Ls + KT;         // [KT]
  const int b = blockIdx.z, kvh = blockIdx.y, j0 = blockIdx.x * RT;
  const int group = NH / NKV;
  const int64_t Q = int64_t(NH) * hd, KVd = int64_t(NKV) * hd, W = Q + 2 * KVd;
  const float* base = qkv + int64_t(b) * T * W;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int idx = tid; idx < RT * hd; idx += blockDim.x) {
    const int r = idx / hd, d = idx % hd, j = j0 + r;
    const bool ok = j < T;
    Kr[idx] = ok ? base[int64_t(j) * W + Q + int64_t(kvh) * hd + d] : 0.f;
    Vr[idx] = ok ? base[int64_t(j) * W + Q + KVd + int64_t(kvh) * hd + d] : 0.f;
  }
  float dk[RW][MAXD], dv[RW][MAXD];
#pragma unroll
  for (int rr = 0; rr < RW; ++rr)
#pragma unroll
    for (int i = 0; i < MAXD; ++i) dk[rr][i] = dv[rr][i] = 0.f;
  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    for (int q0 = (j0 / KT) * KT; q0 < T; q0 += KT) {
      __syncthreads();
      for (int idx = tid; idx < KT * hd; idx += blockDim.x) {
        const int r = idx / hd, d = idx % hd, t = q0 + r;
        const bool ok = t < T;
        Qs[r * ldk + d] = ok ? base[int64_t(t) * W + int64_t(h) * hd + d] : 0.f;
        dOs[r * ldk + d] = ok ? dout[(int64_t(b) * T + t) * Q + int64_t(h) * hd + d] : 0.f;
      }
      if (tid < KT) {
        const int t = q0 + tid;
        Ls[tid] = t < T ? lse[(int64_t(b) * T + t) * NH + h] : 0.f;
        Ds[tid] = t < T ? D[(int64_t(b) * T + t) * NH + h] : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < RW; ++rr) {
        const int r = warp * RW + rr, j = j0 + r;
        if (j >= T || q0 + KT - 1 < j) continue;  // warp-uniform: no query of the tile sees key j
        const int t = q0 + lane;
        float p = 0.f, ds = 0.f;
        if (t < T && t >= j) {
          const float* q = Qs + lane * ldk;
          const float* go = dOs + lane * ldk;
          const float* kk = Kr + r * hd;
          const float* vv = Vr + r * hd;
          float s = 0.f, dp = 0.f;
          for (int d = 0; d < hd; ++d) {
            s += q[d] * kk[d];
            dp += go[d] * vv[d];
          }
          p = expf(s * scale - Ls[lane]);
          ds = p * (dp - Ds[lane]) * scale;
        }
        for (int u = 0; u < KT; ++u) {
          const float pu = __shfl_sync(kFull, p, u), du = __shfl_sync(kFull, ds, u);
          const float* qu = Qs + u * ldk;
          const float* gu = dOs + u * ldk;
#pragma unroll
          for (int i = 0; i < MAXD; ++i)
            if (lane + 32 * i < hd) {
              dv[rr][i] += pu * gu[lane + 32 * i];
              dk[rr][i] += du * qu[lane + 32 * i];
            }
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < RW; ++rr) {
    const int j = j0 + warp * RW + rr;
    if (j >= T) continue;
    float* dst = dqkv + (int64_t(b) * T + j) * W + Q + int64_t(kvh) * hd;
#pragma unroll
    for (int i = 0; i < MAXD; ++i)
      if (lane + 32 * i < hd) {
        dst[lane + 32 * i] = dk[rr][i];
        dst[KVd + lane + 32 * i] = dv[rr][i];
      }
  }
}

// ---------------------------------------------------------------------------------------------------------
// The batched-GEMM path. Per chunk of bc sequences starting at b0, with G = NH / NKV query heads per kv head:
//   Qh (bc, NKV, G*T, hd): query head h = kvh*G + g of token t at row g*T + t;  Kh, Vh (bc, NKV, T, hd);
//   S (bc, NKV, G*T, T): scores, then probabilities (backward: dP, then dS, in a second such buffer).

// dst (bc, NKV, G*T, hd) <- the query-shaped columns [col0, col0 + NH*hd) of src rows (b0+bb)*T + t (ld).
__global__ void gather_q_kernel(float* dst, const float* src, int64_t ld, int64_t col0, int64_t b0,
                                int64_t bc, int T, int NH, int hd) {
  const int64_t n = bc * NH * int64_t(T) * hd;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int d = int(i % hd);
    const int t = int((i / hd) % T);
    const int64_t bh = i / (int64_t(hd) * T);  // (bb, h) with h = kvh*G + g: the layout's order
    const int h = int(bh % NH);
    const int64_t bb = bh / NH;
    dst[i] = src[((b0 + bb) * T + t) * ld + col0 + int64_t(h) * hd + d];
  }
}

// Kh, Vh (bc, NKV, T, hd) <- the k and v columns of qkv (rows of W).
__global__ void gather_kv_kernel(float* Kh, float* Vh, const float* qkv, int64_t W, int64_t Q, int64_t b0,
                                 int64_t bc, int T, int NKV, int hd) {
  const int64_t n = bc * NKV * int64_t(T) * hd, KVd = int64_t(NKV) * hd;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int d = int(i % hd);
    const int t = int((i / hd) % T);
    const int64_t bk = i / (int64_t(hd) * T);
    const int kvh = int(bk % NKV);
    const int64_t bb = bk / NKV;
    const float* row = qkv + ((b0 + bb) * T + t) * W + Q + int64_t(kvh) * hd + d;
    Kh[i] = row[0];
    Vh[i] = row[KVd];
  }
}

// The inverse of gather_q (and, with kv = true, of gather_kv's layout for NKV heads at column col0).
__global__ void scatter_heads_kernel(float* dst, const float* src, int64_t ld, int64_t col0, int64_t b0,
                                     int64_t bc, int T, int heads, int hd) {
  const int64_t n = bc * heads * int64_t(T) * hd;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int d = int(i % hd);
    const int t = int((i / hd) % T);
    const int64_t bh = i / (int64_t(hd) * T);
    const int h = int(bh % heads);
    const int64_t bb = bh / heads;
    dst[((b0 + bb) * T + t) * ld + col0 + int64_t(h) * hd + d] = src[i];
  }
}

// Row r of S (bc*NH*T rows of T) is query t = r % T of head h = (r / T) % NH of sequence b0 + r / (T*NH).
// forward: S <- softmax over the causal keys of scale*S (0 beyond), lse <- max + log(sum).
// recompute (backward): S <- exp(scale*S - lse) over the causal keys, 0 beyond.
__global__ void softmax_rows_kernel(float* S, float* lse, int64_t rows, int T, int NH, int64_t b0,
                                    float scale, bool recompute) {
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const int t = int(r % T), h = int((r / T) % NH);
  const int64_t b = b0 + r / (int64_t(T) * NH);
  float* row = S + r * T;
  float* L = lse + (b * T + t) * NH + h;
  if (recompute) {
    const float l = *L;
    for (int j = lane; j < T; j += 32) row[j] = j <= t ? expf(row[j] * scale - l) : 0.f;
    return;
  }
  float m = -INFINITY;
  for (int j = lane; j <= t; j += 32) m = fmaxf(m, row[j] * scale);
  m = warp_max(m);
  float sum = 0.f;
  for (int j = lane; j <= t; j += 32) sum += expf(row[j] * scale - m);
  sum = warp_sum(sum);
  const float inv = 1.f / sum;
  for (int j = lane; j < T; j += 32) row[j] = j <= t ? expf(row[j] * scale - m) * inv : 0.f;
  if (lane == 0) *L = m + logf(sum);
}

// dS = P * (dP - D[row]) * scale over the causal keys (0 beyond), in place of dP.
__global__ void dsoftmax_rows_kernel(float* dP, const float* P, const float* D, int64_t rows, int T, int NH,
                                     int64_t b0, float scale) {
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const int t = int(r % T), h = int((r / T) % NH);
  const int64_t b = b0 + r / (int64_t(T) * NH);
  const float Dr = D[(b * T + t) * NH + h];
  float* g = dP + r * T;
  const float* p = P + r * T;
  for (int j = lane; j < T; j += 32) g[j] = j <= t ? p[j] * (g[j] - Dr) * scale : 0.f;
}

unsigned grid_for(int64_t n, int threads) {
  return unsigned(std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 20));
}

void check_head_dim(int64_t hd) {
  if (hd <= 0 || hd > kMaxHeadDim)
    raise_error("ternlab", "attention", "head_dim must be in [1, 256] for the CUDA attention kernels",
                __FILE__, __LINE__);
}

template <class Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    TL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t NH,
                       int64_t NKV, int64_t hd, cudaStream_t s) {
  check_head_dim(hd);
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const size_t smem = sizeof(float) * size_t(KT * (hd + 1) + KT * hd + RT * hd);
  set_smem(attn_forward_kernel, smem);
  const dim3 grid(unsigned((T + RT - 1) / RT), unsigned(NH), unsigned(B));
  attn_forward_kernel<<<grid, NW * 32, smem, s>>>(out, lse, qkv, int(T), int(NH), int(NKV), int(hd), scale);
  TL_CUDA_CHECK_LAUNCH();
}

void attention_backward(float* dqkv, float* Dbuf, const float* dout, const float* out, const float* qkv,
                        const float* lse, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t hd,
                        cudaStream_t s) {
  check_head_dim(hd);
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const int64_t rows_heads = B * T * NH;
  attn_D_kernel<<<unsigned((rows_heads * 32 + 255) / 256), 256, 0, s>>>(Dbuf, dout, out, rows_heads, int(hd));
  TL_CUDA_CHECK_LAUNCH();
  const size_t smem_q = sizeof(float) * size_t(2 * KT * (hd + 1) + 2 * RT * hd);
  set_smem(attn_dq_kernel, smem_q);
  const dim3 gq(unsigned((T + RT - 1) / RT), unsigned(NH), unsigned(B));
  attn_dq_kernel<<<gq, NW * 32, smem_q, s>>>(dqkv, dout, qkv, lse, Dbuf, int(T), int(NH), int(NKV), int(hd),
                                             scale);
  TL_CUDA_CHECK_LAUNCH();
  const size_t smem_kv = sizeof(float) * size_t(2 * KT * (hd + 1) + 2 * RT * hd + 2 * KT);
  set_smem(attn_dkv_kernel, smem_kv);
  const dim3 gk(unsigned((T + RT - 1) / RT), unsigned(NKV), unsigned(B));
  attn_dkv_kernel<<<gk, NW * 32, smem_kv, s>>>(dqkv, dout, qkv, lse, Dbuf, int(T), int(NH), int(NKV), int(hd),
                                               scale);
  TL_CUDA_CHECK_LAUNCH();
}

size_t attention_gemm_bytes_per_sequence(int64_t T, int64_t NH, int64_t NKV, int64_t hd) {
  // Qh, dOh (NH*T*hd each), Kh, Vh, dKh, dVh (NKV*T*hd each), S and dP (NH*T*T each)
  return sizeof(float) * size_t(2 * NH * T * hd + 4 * NKV * T * hd + 2 * NH * T * T);
}

namespace {

struct GemmChunk {  // the scratch carved for bc sequences
  float *Qh, *Kh, *Vh, *dOh, *dKh, *dVh, *S, *dP;
};

GemmChunk carve(float* scratch, int64_t bc, int64_t T, int64_t NH, int64_t NKV, int64_t hd) {
  GemmChunk c{};
  const int64_t q = bc * NH * T * hd, kv = bc * NKV * T * hd, ss = bc * NH * T * T;
  float* p = scratch;
  c.Qh = p, p += q;
  c.dOh = p, p += q;
  c.Kh = p, p += kv;
  c.Vh = p, p += kv;
  c.dKh = p, p += kv;
  c.dVh = p, p += kv;
  c.S = p, p += ss;
  c.dP = p;
  return c;
}

}  // namespace

bool attention_forward_gemm(Gemm& gemm, float* scratch, size_t scratch_bytes, float* out, float* lse,
                            const float* qkv, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t hd,
                            cudaStream_t s) {
  check_head_dim(hd);
  const size_t per = attention_gemm_bytes_per_sequence(T, NH, NKV, hd);
  if (per > scratch_bytes || NH % NKV != 0) return false;
  const int64_t chunk = std::min<int64_t>(B, int64_t(scratch_bytes / per));
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const int64_t G = NH / NKV, Q = NH * hd, W = Q + 2 * NKV * hd;
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t bc = std::min(chunk, B - b0);
    const GemmChunk c = carve(scratch, bc, T, NH, NKV, hd);
    const int64_t nq = bc * NH * T * hd, nkv = bc * NKV * T * hd, rows = bc * NH * T;
    gather_q_kernel<<<grid_for(nq, 256), 256, 0, s>>>(c.Qh, qkv, W, 0, b0, bc, int(T), int(NH), int(hd));
    gather_kv_kernel<<<grid_for(nkv, 256), 256, 0, s>>>(c.Kh, c.Vh, qkv, W, Q, b0, bc, int(T), int(NKV),
                                                        int(hd));
    TL_CUDA_CHECK_LAUNCH();
    const Batch bs{bc * NKV, G * T * hd, T * hd, G * T * T};  // S = Qh Kh^T per (sequence, kv head)
    gemm.matmul(false, true, G * T, T, hd, 1.f, c.Qh, hd, c.Kh, hd, 0.f, c.S, T, OutType::F32, InType::F32,
                bs);
    softmax_rows_kernel<<<grid_for(rows * 32, 256), 256, 0, s>>>(c.S, lse, rows, int(T), int(NH), b0, scale,
                                                                 false);
    TL_CUDA_CHECK_LAUNCH();
    const Batch bo{bc * NKV, G * T * T, T * hd, G * T * hd};  // O = P Vh, into Qh's place
    gemm.matmul(false, false, G * T, hd, T, 1.f, c.S, T, c.Vh, hd, 0.f, c.Qh, hd, OutType::F32, InType::F32,
                bo);
    scatter_heads_kernel<<<grid_for(nq, 256), 256, 0, s>>>(out, c.Qh, Q, 0, b0, bc, int(T), int(NH), int(hd));
    TL_CUDA_CHECK_LAUNCH();
  }
  return true;
}

bool attention_backward_gemm(Gemm& gemm, float* scratch, size_t scratch_bytes, float* dqkv, float* Dbuf,
                             const float* dout, const float* out, const float* qkv, const float* lse,
                             int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t hd, cudaStream_t s) {
  check_head_dim(hd);
  const size_t per = attention_gemm_bytes_per_sequence(T, NH, NKV, hd);
  if (per > scratch_bytes || NH % NKV != 0) return false;
  const int64_t chunk = std::min<int64_t>(B, int64_t(scratch_bytes / per));
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const int64_t G = NH / NKV, Q = NH * hd, KVd = NKV * hd, W = Q + 2 * KVd;
  const int64_t rows_heads = B * T * NH;
  attn_D_kernel<<<unsigned((rows_heads * 32 + 255) / 256), 256, 0, s>>>(Dbuf, dout, out, rows_heads, int(hd));
  TL_CUDA_CHECK_LAUNCH();
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t bc = std::min(chunk, B - b0);
    const GemmChunk c = carve(scratch, bc, T, NH, NKV, hd);
    const int64_t nq = bc * NH * T * hd, nkv = bc * NKV * T * hd, rows = bc * NH * T;
    gather_q_kernel<<<grid_for(nq, 256), 256, 0, s>>>(c.Qh, qkv, W, 0, b0, bc, int(T), int(NH), int(hd));
    gather_q_kernel<<<grid_for(nq, 256), 256, 0, s>>>(c.dOh, dout, Q, 0, b0, bc, int(T), int(NH), int(hd));
    gather_kv_kernel<<<grid_for(nkv, 256), 256, 0, s>>>(c.Kh, c.Vh, qkv, W, Q, b0, bc, int(T), int(NKV),
                                                        int(hd));
    TL_CUDA_CHECK_LAUNCH();
    const int64_t n = bc * NKV;
    // P, recomputed from the saved log-sum-exp
    gemm.matmul(false, true, G * T, T, hd, 1.f, c.Qh, hd, c.Kh, hd, 0.f, c.S, T, OutType::F32, InType::F32,
                Batch{n, G * T * hd, T * hd, G * T * T});
    softmax_rows_kernel<<<grid_for(rows * 32, 256), 256, 0, s>>>(c.S, const_cast<float*>(lse), rows, int(T),
                                                                 int(NH), b0, scale, true);
    TL_CUDA_CHECK_LAUNCH();
    // dP = dO Vh^T, then dS = P (dP - D) scale in its place
    gemm.matmul(false, true, G * T, T, hd, 1.f, c.dOh, hd, c.Vh, hd, 0.f, c.dP, T, OutType::F32, InType::F32,
                Batch{n, G * T * hd, T * hd, G * T * T});
    dsoftmax_rows_kernel<<<grid_for(rows * 32, 256), 256, 0, s>>>(c.dP, c.S, Dbuf, rows, int(T), int(NH), b0,
                                                                  scale);
    TL_CUDA_CHECK_LAUNCH();
    // dV = P^T dO and dK = dS^T Q (each summed over the group's query heads by the product itself)
    gemm.matmul(true, false, T, hd, G * T, 1.f, c.S, T, c.dOh, hd, 0.f, c.dVh, hd, OutType::F32, InType::F32,
                Batch{n, G * T * T, G * T * hd, T * hd});
    gemm.matmul(true, false, T, hd, G * T, 1.f, c.dP, T, c.Qh, hd, 0.f, c.dKh, hd, OutType::F32, InType::F32,
                Batch{n, G * T * T, G * T * hd, T * hd});
    // dQ = dS Kh, into dO's place (dO is used up)
    gemm.matmul(false, false, G * T, hd, T, 1.f, c.dP, T, c.Kh, hd, 0.f, c.dOh, hd, OutType::F32, InType::F32,
                Batch{n, G * T * T, T * hd, G * T * hd});
    scatter_heads_kernel<<<grid_for(nq, 256), 256, 0, s>>>(dqkv, c.dOh, W, 0, b0, bc, int(T), int(NH),
                                                           int(hd));
    scatter_heads_kernel<<<grid_for(nkv, 256), 256, 0, s>>>(dqkv, c.dKh, W, Q, b0, bc, int(T), int(NKV),
                                                            int(hd));
    scatter_heads_kernel<<<grid_for(nkv, 256), 256, 0, s>>>(dqkv, c.dVh, W, Q + KVd, b0, bc, int(T), int(NKV),
                                                            int(hd));
    TL_CUDA_CHECK_LAUNCH();
  }
  return true;
}

}  // namespace tl::cuda::k
