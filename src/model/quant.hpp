// The one quantizer (DESIGN principle 1). Every consumer — reference forward, training forward, snap,
// checkpoint and GGUF export — gets ternary codes and scales from these functions.
//
// Weights, per tensor:  codes = clamp(round(w * (1/alpha)), -1, 1),  effective w = codes * alpha
//   absmean:    alpha = max(mean|W| over all entries, 1e-5)   (BitNet / transformers WeightQuant)
//   fixed:      alpha given (packed checkpoints' weight_scale; the study's rpt-fixed s_orig)
// Activations, per token (row): s = 127 / max(max|x|, 1e-5) (as (1/m)*127, like torch), q = clamp(round(x *
// s), -128, 127),
//   effective x = q / s  (transformers ActQuant).
// Rounding is half-to-even (nearbyint in the default mode), as torch.round; arithmetic in fp32 as torch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.hpp"
#include "model/quant_math.hpp"

namespace tl {

// WeightQuant (the one weight-quantizer spec) and the arithmetic: model/quant_math.hpp.
// "absmean", "fixed", "rpt-fixed", "off"; parse_weight_quant refuses anything else, naming the choices.
std::string weight_quant_name(WeightQuant m);
WeightQuant parse_weight_quant(const std::string& s);

// mean|w| over all n entries (accumulated in double, returned as float), clamped below at 1e-5.
float absmean_scale(const float* w, size_t n);

// codes[i] in {-1,0,1} for scale alpha. Returns the number of zero codes.
size_t ternarize(const float* w, size_t n, float alpha, int8_t* codes);

// s = 127 / max(amax, 1e-5), evaluated as torch does: reciprocal, then times 127.
float act_scale(float amax);

// Per-token activation quantization of one row of n values: writes q (int8), returns s = 127/max|x|.
float quantize_activation_row(const float* x, size_t n, int8_t* q);

// Fake-quantized row (q / s), what the float reference multiplies; returns s.
float fake_quantize_activation_row(const float* x, size_t n, float* out);

// The int8 LM head (an engine option, docs/lm-head-precision.md): one row of n weights, symmetric absmax,
// w ≈ q · scale with q = clamp(round(w / scale), -127, 127) and scale = max|w| / 127 (1 for an all-zero
// row). Writes q, returns the scale.
float quantize_row_i8(const float* w, size_t n, int8_t* q);

// A ternarized linear: codes [out, in] row-major and the scale alpha.
struct TernaryWeight {
  int64_t out = 0, in = 0;
  std::vector<int8_t> codes;
  float scale = 0;
  size_t zeros = 0;
};

// The scale the model's quantizer uses for a linear: fixed_scale if set, else absmean.
float weight_scale_for(const Model& m, const ParamView& v);
TernaryWeight quantize_weight(const Model& m, const ParamView& v);

}  // namespace tl
