// Helpers shared by the GPU tests (tests/cuda): the skip where no GPU is usable, seeded Gaussian data, and
// the relative L2 error every GPU-vs-CPU comparison is stated in.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "cuda/device_model.hpp"

#define SKIP_WITHOUT_GPU()                                                        \
  do {                                                                            \
    std::string why_;                                                             \
    if (!::tl::cuda::available(&why_)) GTEST_SKIP() << "no usable GPU: " << why_; \
  } while (0)

namespace tl::cuda_test {

// n samples of N(0, 1) * scale from Rng(seed).
inline std::vector<float> randn(size_t n, uint64_t seed, float scale) {
  Rng r(seed);
  std::vector<float> x(n);
  for (auto& v : x) v = float(r.normal()) * scale;
  return x;
}

// ||a - b|| / ||b|| over n elements (b the reference); 0 when both are zero, inf when only b is.
inline double rel_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return std::sqrt(num / den);
}
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;  // a shape mismatch fails every tolerance
  return rel_l2(a.data(), b.data(), a.size());
}

}  // namespace tl::cuda_test
