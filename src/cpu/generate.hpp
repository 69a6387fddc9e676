// Greedy decoding on the fp32 reference forward, with the KV cache (HF generate(do_sample=False)).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "cpu/forward.hpp"

namespace tl {

// The index of the largest of n values; the lowest index on ties (torch.argmax). n > 0.
int32_t argmax(const float* row, int64_t n);

// Greedy decoding: the prompt runs once through forward_step (one forward over all its tokens), then one
// token per step; each new token is the argmax of the last row's logits. Returns the new tokens only (the
// eos token included when it is produced). Stops after max_new tokens, after eos_id (-1: none), or when
// prompt + output reach max_position_embeddings. The model's residual hooks, if set, are active in every
// step. Errors: an empty prompt, a prompt longer than the context, max_new < 0, a token out of range.
std::vector<int32_t> greedy_generate(CpuModel& model, std::span<const int32_t> prompt, int max_new,
                                     int32_t eos_id = -1);

}  // namespace tl
