#include "cuda/inference.hpp"

#include "core/error.hpp"

namespace tl::cuda {

DeviceModelOptions inference_options(const Model& model, int64_t max_tokens, std::string_view command) {
  size_t linears = 0, fixed = 0;
  for (const auto& v : model.views)
    if (v.kind == ParamKind::Linear) {
      ++linears;
      fixed += model.fixed_scale.count(v.name);
    }
  TL_CHECK(fixed == 0 || fixed == linears,
           "{} --device cuda: {} of {} linears have fixed scales; the GPU needs all or none", command, fixed,
           linears);
  DeviceModelOptions o;
  o.quant.weight_quant = fixed ? WeightQuant::Fixed : WeightQuant::Absmean;
  o.quant.act_quant = true;
  o.max_tokens = max_tokens;
  o.constant_weights = true;
  return o;
}

}  // namespace tl::cuda
