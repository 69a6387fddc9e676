// Snap: turn trained latent weights into the exact ternary model that training's forward used
// (rpt-spec §5.5, done with one quantizer definition, §10.1.1): re-apply the pruning masks, then for every
// linear W = code · s with code = clamp(round(W / a), -1, 1) and s the effective scale of the quantizer
// mode (absmean: a = s = mean|W|; fixed: a = s = the fixed scale; rpt-fixed: a = fixed scale, s = a·(1 - z)).
// The snapped model carries s as Model::fixed_scale, so the CPU forward runs exactly those weights.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.hpp"
#include "train/train_model.hpp"
#include "train/trainer.hpp"

namespace tl::train {

struct SnapTensorStats {
  std::string name;
  size_t numel = 0;
  float code_scale = 0;                   // a: the scale the codes are rounded with
  float scale = 0;                        // s: the value of a +1 code after the snap
  size_t zeros = 0, plus = 0, minus = 0;  // codes
  size_t masked_nonzero = 0;              // latents a mask forced back to zero (drift during fine-tuning)
  size_t changed = 0;                     // entries whose value the snap changed
};

struct SnapReport {
  std::string mode;
  std::vector<SnapTensorStats> tensors;
  size_t numel = 0, zeros = 0, masked_nonzero = 0, changed = 0;
  double code_sparsity = 0;  // zero codes / linear weights
};

// Snaps `m` in place. fixed scales come from m.fixed_scale for fixed / rpt-fixed. Errors: mode off, a
// mask of another size or for an unknown tensor, a missing fixed scale.
SnapReport snap_model(Model& m, WeightQuantMode mode, const std::vector<TensorMask>& masks = {});

// Checks that every linear holds only {-s, 0, +s} with s = m.fixed_scale[name] exactly, and that every
// masked entry is 0. Returns the fraction of ternary entries (1.0) or throws tl::Error naming the first
// tensor and entry that is not.
double verify_ternary(const Model& m, const std::vector<TensorMask>& masks = {});

nlohmann::json to_json(const SnapReport& r);

}  // namespace tl::train
