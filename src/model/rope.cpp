#include "model/rope.hpp"

#include <cmath>

#include "core/error.hpp"

namespace tl {

RopeTable make_rope_table(double theta, int64_t head_dim, int64_t max_pos) {
  TL_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be even and positive, found {}", head_dim);
  TL_CHECK(max_pos > 0, "rope: max_pos must be positive, found {}", max_pos);
  RopeTable r;
  r.head_dim = head_dim;
  r.max_pos = max_pos;
  const int64_t half = head_dim / 2;
  // torch: inv_freq = 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in fp32
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j)
    inv_freq[j] = 1.0f / std::pow(float(theta), float(2 * j) / float(head_dim));
  r.cos.resize(size_t(max_pos * half));
  r.sin.resize(size_t(max_pos * half));
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t j = 0; j < half; ++j) {
      const float angle = float(p) * inv_freq[j];  // fp32 product, as torch's (inv_freq @ positions)
      r.cos[p * half + j] = std::cos(angle);
      r.sin[p * half + j] = std::sin(angle);
    }
  return r;
}

}  // namespace tl
