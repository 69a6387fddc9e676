#include "cuda/optim.hpp"

#include <cuda_bf16.h>

namespace tl::cuda {

namespace {

constexpr int kThreads = 256;

int blocks_for(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return int(b < size_t(kNormPartials) ? (b ? b : 1) : kNormPartials);  // grid-stride beyond this
}

__device__ __forceinline__ float bf(float x) {
  return __bfloat162float(__float2bfloat16_rn(x));
}

__device__ __forceinline__ bool kept(const uint32_t* keep, size_t i) {
  return !keep || ((keep[i >> 5] >> (i & 31)) & 1u);
}

__global__ void finish_grads_kernel(float* g, size_t n, float scale, const uint32_t* keep, bool bf16,
                                    bool write, double* partials, int* nonfinite) {
  __shared__ double partial[kThreads / 32];
  double ss = 0;
  bool bad = false;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float x = g[i];
    if (scale != 1.0f) x = __fmul_rn(x, scale);
    if (!kept(keep, i)) x = 0.0f;
    if (bf16) x = bf(x);
    if (write) g[i] = x;
    bad |= !isfinite(x);
    ss += double(x) * double(x);
  }
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_down_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  if (bad) *nonfinite = 1;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int w = 0; w < kThreads / 32; ++w) t += partial[w];
    partials[blockIdx.x] = t;
  }
}

// One block: the partials added in a fixed order (strided per thread, then a fixed tree).
__global__ void sum_partials_kernel(const double* partials, int count, double* out) {
  __shared__ double s[kThreads];
  double t = 0;
  for (int i = threadIdx.x; i < count; i += kThreads) t += partials[i];
  s[threadIdx.x] = t;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = s[0];
}

__global__ void scale_kernel(float* g, size_t n, float c) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    g[i] = __fmul_rn(g[i], c);
}

// train/optim.cpp's loops, op for op. The gradient is first multiplied by grad_scale (clipping's
// coefficient, as clip_grad_norm's in-place g *= coef would: the same fp32 product) unless it is 1.
__device__ __forceinline__ float adamw_one(float pi, float gi, float& mi, float& vi, const AdamWScalars& s,
                                           const GradFinish& f, bool is_kept, bool bf16) {
  if (f.scale != 1.0f) gi = __fmul_rn(gi, f.scale);  // launch_finish_grads' steps, in its order
  if (f.mask && !is_kept) gi = 0.0f;
  if (f.bf16_round) gi = bf(gi);
  if (f.clip != 1.0f) gi = __fmul_rn(gi, f.clip);
  if (!bf16) {
    pi = __fmul_rn(pi, s.decay);
    mi = __fadd_rn(mi, __fmul_rn(s.w1, __fsub_rn(gi, mi)));
    vi = __fadd_rn(__fmul_rn(vi, s.b2), __fmul_rn(__fmul_rn(s.w2, gi), gi));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
    return __fadd_rn(pi, __fmul_rn(-s.step_size, __fdiv_rn(mi, denom)));
  }
  pi = bf(__fmul_rn(pi, s.decay));
  mi = bf(__fadd_rn(mi, __fmul_rn(s.w1, __fsub_rn(gi, mi))));
  vi = bf(__fmul_rn(vi, s.b2));
  vi = bf(__fadd_rn(vi, __fmul_rn(s.w2, __fmul_rn(gi, gi))));
  const float denom = bf(__fadd_rn(bf(__fdiv_rn(bf(__fsqrt_rn(vi)), s.bc2_sqrt)), s.eps));
  return bf(__fadd_rn(pi, __fmul_rn(-s.step_size, __fdiv_rn(mi, denom))));
}

// Four parameters per thread with 16-byte accesses (the step streams 28 bytes per parameter), then the
// tail [4 * n4, n) element by element. n4 = 0 when the pointers are not 16-byte aligned.
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, size_t n, size_t n4,
                             AdamWScalars s, GradFinish f, bool bf16, const uint32_t* keep) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n4; i += stride) {
    float4 P = reinterpret_cast<float4*>(p)[i], M = reinterpret_cast<float4*>(m)[i],
           V = reinterpret_cast<float4*>(v)[i];
    const float4 G = reinterpret_cast<const float4*>(g)[i];
    float* pp = &P.x;
    float* mm = &M.x;
    float* vv = &V.x;
    const float* gg = &G.x;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const bool kp = kept(keep, 4 * i + k);
      pp[k] = adamw_one(pp[k], gg[k], mm[k], vv[k], s, f, kp, bf16);
      if (!kp) pp[k] = 0.0f;
    }
    reinterpret_cast<float4*>(p)[i] = P;
    reinterpret_cast<float4*>(m)[i] = M;
    reinterpret_cast<float4*>(v)[i] = V;
  }
  for (size_t i = 4 * n4 + blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    float mi = m[i], vi = v[i];
    const bool kp = kept(keep, i);
    float pi = adamw_one(p[i], g[i], mi, vi, s, f, kp, bf16);
    if (!kp) pi = 0.0f;
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

void launch_finish_grads(float* g, size_t n, float scale, const uint32_t* keep, bool bf16, double* partials,
                         double* sumsq, int* nonfinite, cudaStream_t stream, bool write) {
  const int blocks = blocks_for(n);
  finish_grads_kernel<<<blocks, kThreads, 0, stream>>>(g, n, scale, keep, bf16, write, partials, nonfinite);
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(partials, blocks, sumsq);
}

void launch_scale(float* g, size_t n, float c, cudaStream_t stream) {
  scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(g, n, c);
}

void launch_adamw(float* p, const float* g, float* m, float* v, size_t n, AdamWScalars s, bool bf16,
                  const uint32_t* keep, cudaStream_t stream, GradFinish finish) {
  const bool aligned = ((reinterpret_cast<uintptr_t>(p) | reinterpret_cast<uintptr_t>(g) |
                         reinterpret_cast<uintptr_t>(m) | reinterpret_cast<uintptr_t>(v)) &
                        15) == 0;
  const size_t n4 = aligned ? n / 4 : 0;
  adamw_kernel<<<blocks_for(n4 ? n4 : n), kThreads, 0, stream>>>(p, g, m, v, n, n4, s, finish, bf16, keep);
}

}  // namespace tl::cuda
