// RoPE tables, computed in fp32 like torch: inv_freq[j] = 1 / theta^(2j/head_dim) (j < head_dim/2),
// angle = pos * inv_freq[j], cos/sin of the fp32 angle. Every backend (the reference, the engine, training,
// CUDA) reads the same table, so their rotations agree bit for bit.
#pragma once
#include <cstdint>
#include <vector>

namespace tl {

struct RopeTable {
  int64_t head_dim = 0, max_pos = 0;
  std::vector<float> cos, sin;  // each (max_pos, head_dim/2)
  const float* cos_at(int64_t pos) const { return cos.data() + pos * (head_dim / 2); }
  const float* sin_at(int64_t pos) const { return sin.data() + pos * (head_dim / 2); }
};

// Errors: head_dim odd or not positive, max_pos not positive.
RopeTable make_rope_table(double theta, int64_t head_dim, int64_t max_pos);

}  // namespace tl
