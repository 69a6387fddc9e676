// The quantizer's arithmetic, written once for every backend: model/quant.cpp (the CPU reference and the
// fast engine's scalar paths), train/ops.cpp (its Real = double finite-difference twin) and the CUDA kernels
// (cuda/kernels.cu) call these inline functions, so the constants (the 1e-5 floors, the code ranges) and the
// order of the roundings exist in one place. No standard-library types: nvcc compiles it for the device.
//
//   weight code  = clamp(round(w · inv), -1, 1),     inv = 1/alpha, as transformers' WeightQuant
//   act scale    = (1 / max(amax, 1e-5)) · 127       torch's 127 / t is t.reciprocal() * 127: two roundings
//   act code     = clamp(round(x · s), -128, 127)
// round = half to even (torch.round); clamp lets NaN through, so a NaN activation or weight reaches the loss
// and is caught there instead of becoming a valid code.
#pragma once
#if defined(__CUDACC__)
#define TL_HOST_DEVICE __host__ __device__
#else
#define TL_HOST_DEVICE
#include <cmath>
#endif

namespace tl {

// How a forward quantizes the ternary linears' weights: the one spec that evaluation, training, snap,
// export and the CUDA kernels share.
enum class WeightQuant : int {
  Absmean = 0,  // alpha = max(mean|W|, 1e-5) recomputed from the latent weights at every forward (BitNet)
  Fixed = 1,    // alpha = Model::fixed_scale[linear name] (packed checkpoints; one quantizer); must be set
  // The RPT deploy script's STE exactly (rpt-spec §5.3): codes from the fixed scale s (captured before
  // pruning), then transformers' WeightQuant quantizes s·code again with mean|s·code| = s·(1 − z), z the
  // zero-code fraction: the forward sees code · s · (1 − z). Needs fixed_scale like Fixed.
  RptFixed = 2,
  Off = 3,  // plain linear (finite-difference checks)
};

inline constexpr float kWeightScaleEps = 1e-5f;
inline constexpr float kActScaleEps = 1e-5f;

namespace quant {

// Half to even in the default rounding mode. (The host's nearbyint and the device's rint agree; rint may
// also raise FE_INEXACT, which nothing here reads.)
template <class R>
TL_HOST_DEVICE inline R round_even(R v) {
#if defined(__CUDA_ARCH__)
  return rint(v);
#else
  return std::nearbyint(v);
#endif
}

// v clamped to [lo, hi]; NaN stays NaN (as std::clamp; unlike fminf/fmaxf, which would make it a bound).
template <class R>
TL_HOST_DEVICE inline R clamp(R v, R lo, R hi) {
  return v < lo ? lo : (hi < v ? hi : v);
}

// max(v, floor) as std::max(v, floor): NaN stays NaN.
template <class R>
TL_HOST_DEVICE inline R floor_at(R v, R floor) {
  return v < floor ? floor : v;
}

// The absmean scale from the mean |w| of a tensor.
template <class R>
TL_HOST_DEVICE inline R absmean_alpha(R mean_abs) {
  return floor_at(mean_abs, R(kWeightScaleEps));
}

// A ternary code in {-1, 0, 1} (as R) of weight w, with inv = 1/alpha computed once per tensor.
template <class R>
TL_HOST_DEVICE inline R weight_code(R w, R inv) {
  return clamp(round_even(w * inv), R(-1), R(1));
}

// The per-token activation scale from the row's max |x|.
template <class R>
TL_HOST_DEVICE inline R act_scale(R amax) {
  return (R(1) / floor_at(amax, R(kActScaleEps))) * R(127);
}

// The int8 code (as R) of an activation under scale s, from x·s already rounded to an integer (the CPU's
// vectorized rows round with their own instruction sequence, then clamp here).
template <class R>
TL_HOST_DEVICE inline R act_code_of_rounded(R rounded) {
  return clamp(rounded, R(-128), R(127));
}
template <class R>
TL_HOST_DEVICE inline R act_code(R x, R s) {
  return act_code_of_rounded(round_even(x * s));
}

// The int8 LM head's per-row scale from the row's max |w| (1 for an all-zero row), and a weight's code.
template <class R>
TL_HOST_DEVICE inline R head_i8_scale(R amax) {
  return amax > R(0) ? amax / R(127) : R(1);
}
template <class R>
TL_HOST_DEVICE inline R head_i8_code(R w, R scale) {
  return clamp(round_even(w / scale), R(-127), R(127));
}

}  // namespace quant
}  // namespace tl
