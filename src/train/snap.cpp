#include "train/snap.hpp"

#include <cmath>

#include "core/error.hpp"
#include "model/quant.hpp"

namespace tl::train {

SnapReport snap_model(Model& m, WeightQuantMode mode, const std::vector<TensorMask>& masks) {
  TL_CHECK(mode != WeightQuantMode::Off, "snap: weight quantization is off; nothing to snap to");
  std::unordered_map<std::string, const TensorMask*> by_name;
  for (const auto& mk : masks) {
    TL_CHECK(m.has(mk.name), "snap: mask for '{}', which the model does not have", mk.name);
    TL_CHECK(mk.keep.size() == m.view(mk.name).numel, "snap: mask for '{}' has {} entries, the tensor {}",
             mk.name, mk.keep.size(), m.view(mk.name).numel);
    by_name[mk.name] = &mk;
  }
  SnapReport r;
  r.mode = weight_quant_name(mode);
  std::vector<int8_t> codes;
  for (const auto& v : m.views) {
    if (v.kind != ParamKind::Linear) continue;
    float* w = m.params.data() + v.offset;
    SnapTensorStats t;
    t.name = v.name;
    t.numel = v.numel;
    // 1. masks first: pruned entries are zero before the scale is computed (the study's order)
    if (auto it = by_name.find(v.name); it != by_name.end()) {
      const uint8_t* keep = it->second->keep.data();
      for (size_t i = 0; i < v.numel; ++i)
        if (!keep[i] && w[i] != 0.0f) {
          ++t.masked_nonzero;
          w[i] = 0.0f;
        }
    }
    // 2. the code scale a and the effective scale s of the mode
    float fixed = 0;
    if (mode != WeightQuantMode::Absmean) {
      auto it = m.fixed_scale.find(v.name);
      TL_CHECK(it != m.fixed_scale.end() && it->second > 0 && std::isfinite(it->second),
               "snap: mode {} needs a fixed scale for '{}'", r.mode, v.name);
      fixed = it->second;
    }
    t.code_scale = mode == WeightQuantMode::Absmean ? absmean_scale(w, v.numel) : fixed;
    t.scale = effective_weight_scale(mode, w, v.numel, fixed);
    // 3. W = code · s
    codes.resize(v.numel);
    ternarize(w, v.numel, t.code_scale, codes.data());
    for (size_t i = 0; i < v.numel; ++i) {
      const float q = float(codes[i]) * t.scale;
      t.changed += q != w[i];
      w[i] = q;
      t.zeros += codes[i] == 0;
      t.plus += codes[i] == 1;
      t.minus += codes[i] == -1;
    }
    m.fixed_scale[v.name] = t.scale;
    r.numel += t.numel;
    r.zeros += t.zeros;
    r.masked_nonzero += t.masked_nonzero;
    r.changed += t.changed;
    r.tensors.push_back(std::move(t));
  }
  r.code_sparsity = r.numel ? double(r.zeros) / double(r.numel) : 0.0;
  return r;
}

double verify_ternary(const Model& m, const std::vector<TensorMask>& masks) {
  size_t n = 0;
  for (const auto& v : m.views) {
    if (v.kind != ParamKind::Linear) continue;
    auto it = m.fixed_scale.find(v.name);
    TL_CHECK(it != m.fixed_scale.end(), "verify: '{}' has no stated scale", v.name);
    const float s = it->second;
    const float* w = m.params.data() + v.offset;
    for (size_t i = 0; i < v.numel; ++i)
      TL_CHECK(w[i] == 0.0f || w[i] == s || w[i] == -s,
               "verify: {}[{}] = {} is not in {{-s, 0, +s}} with s = {}", v.name, i, w[i], s);
    n += v.numel;
  }
  for (const auto& mk : masks) {
    TL_CHECK(m.has(mk.name), "verify: mask for unknown tensor '{}'", mk.name);
    const float* w = m.params.data() + m.view(mk.name).offset;
    for (size_t i = 0; i < mk.keep.size(); ++i)
      TL_CHECK(mk.keep[i] || w[i] == 0.0f, "verify: {}[{}] is pruned but holds {}", mk.name, i, w[i]);
  }
  TL_CHECK(n > 0, "verify: the model has no linear weights");
  return 1.0;
}

nlohmann::json to_json(const SnapReport& r) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : r.tensors)
    tensors.push_back({{"name", t.name},
                       {"numel", t.numel},
                       {"code_scale", t.code_scale},
                       {"scale", t.scale},
                       {"zero_codes", t.zeros},
                       {"plus_codes", t.plus},
                       {"minus_codes", t.minus},
                       {"code_sparsity", t.numel ? double(t.zeros) / double(t.numel) : 0.0},
                       {"masked_nonzero", t.masked_nonzero},
                       {"changed", t.changed}});
  return {{"mode", r.mode},
          {"linear_weights", r.numel},
          {"zero_codes", r.zeros},
          {"code_sparsity", r.code_sparsity},
          {"masked_nonzero", r.masked_nonzero},
          {"changed", r.changed},
          {"tensors", tensors}};
}

}  // namespace tl::train
