// Per-tensor statistics for `ternlab info` (and later the sparsity accounting of pruning).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.hpp"

namespace tl {

struct TensorStats {
  std::string name;
  ParamKind kind = ParamKind::Linear;
  std::vector<int64_t> shape;
  size_t numel = 0;
  double mean = 0, std = 0, min = 0, max = 0;
  double latent_zero_frac = 0;  // exact zeros among the stored (latent) values
  double absmean = 0;           // mean |w| over all entries
  // Linears only, under the model's quantizer (absmean or fixed scale):
  float scale = 0;
  bool fixed_scale = false;
  double code_neg = 0, code_zero = 0, code_pos = 0;  // fractions of -1 / 0 / +1 codes
};

std::vector<TensorStats> tensor_stats(const Model& m);

struct ModelSummary {
  size_t params = 0, linear_params = 0, embedding_params = 0, norm_params = 0, lm_head_params = 0;
  double code_zero = 0, code_neg = 0, code_pos = 0;  // over all linear weights
  double latent_zero_frac = 0;                       // over all linear weights
};
ModelSummary summarize(const std::vector<TensorStats>& stats);

}  // namespace tl
