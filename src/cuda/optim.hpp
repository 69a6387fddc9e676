// Device kernels of the optimizer step (train/optim.hpp on the GPU): gradient finishing with the global
// norm, clipping, and AdamW in both precisions. Each op is the CPU's in the same order with the same
// roundings (no fused multiply-adds: __fmul_rn / __fadd_rn), so given equal gradients the parameters and
// moments equal the CPU's bit for bit. Plain C types only, so host code built by the C++ compiler calls them.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace tl::cuda {

// keep: a bitmask over all n parameters (bit i of word i/32 set = trainable), or null for no masks.
// g (n) *= scale (skipped when scale == 1); masked entries set to 0; rounded to bf16 when `bf16`. Writes
// sum(g^2), in double, to *sumsq and sets *nonfinite to 1 when any result is NaN/inf (*nonfinite zeroed by
// the caller). The sum is deterministic (per-block partials in `partials`, then one block adds them in a
// fixed order), so the clipping and the run are the same bits every time.
inline constexpr int kNormPartials = 4096;  // doubles that `partials` must hold
// write = false: g is left as it is and only the norm and the flag are computed (the AdamW step then applies
// the same finishing on the fly: GradFinish), saving a write of every gradient.
void launch_finish_grads(float* g, size_t n, float scale, const uint32_t* keep, bool bf16, double* partials,
                         double* sumsq, int* nonfinite, cudaStream_t stream, bool write = true);
// g (n) *= c.
void launch_scale(float* g, size_t n, float c, cudaStream_t stream);

struct AdamWScalars {  // as train/optim.cpp computes them on the host
  float decay, w1, b2, w2, step_size, bc2_sqrt, eps;
};
// What the step does to each gradient first, in this order, with the same roundings as
// launch_finish_grads and then launch_scale would (g itself is only read): *= scale; 0 where masked (with
// `mask`); rounded to bf16 (with bf16_round); *= clip (clipping's coefficient).
struct GradFinish {
  float scale = 1.0f;
  bool mask = false, bf16_round = false;
  float clip = 1.0f;
};
// One AdamW step over n parameters (fp32 master, or every op rounded to bf16 when `bf16`), then masked
// parameters set to exactly 0.
void launch_adamw(float* p, const float* g, float* m, float* v, size_t n, AdamWScalars s, bool bf16,
                  const uint32_t* keep, cudaStream_t stream, GradFinish finish = {});

}  // namespace tl::cuda
