// Test helpers that build on model/: shared by the CPU, training and CUDA suites.
#pragma once
#include <cstdint>

#include "core/rng.hpp"
#include "model/model.hpp"

namespace tl::test {

// Every RMSNorm gain drawn uniformly from [0.5, 1.5) (Rng(seed), in parameter order), so that a missing or
// misplaced norm weight changes the results.
inline void spread_norm_gains(Model& m, uint64_t seed) {
  Rng rng(seed);
  for (const auto& v : m.views)
    if (v.kind == ParamKind::Norm)
      for (size_t i = 0; i < v.numel; ++i) m.params[v.offset + i] = float(0.5 + rng.uniform());
}

}  // namespace tl::test
