#include "cpu/generate.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace tl {

int32_t argmax(const float* row, int64_t n) {
  TL_CHECK(n > 0, "argmax of an empty row");
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best]) best = i;  // strict: the first maximum wins
  return int32_t(best);
}

std::vector<int32_t> greedy_generate(CpuModel& model, std::span<const int32_t> prompt, int max_new,
                                     int32_t eos_id) {
  const int64_t P = int64_t(prompt.size()), ctx = model.config().max_position_embeddings;
  const int64_t V = model.config().vocab_size;
  TL_CHECK(P > 0, "generate: the prompt has no tokens");
  TL_CHECK(P <= ctx, "generate: the prompt has {} tokens, more than max_position_embeddings = {}", P, ctx);
  TL_CHECK(max_new >= 0, "generate: max_new must be >= 0, found {}", max_new);
  std::vector<int32_t> out;
  const int64_t n_new = std::min<int64_t>(max_new, ctx - P);  // prompt + output never exceed the context
  if (n_new <= 0) return out;
  // The last new token is never fed back, so the cache holds at most P + n_new - 1 positions.
  KVCache cache = model.make_cache(std::max<int64_t>(1, P + n_new - 1));
  std::vector<float> hidden, logits(static_cast<size_t>(V));
  model.forward_step(cache, prompt, hidden);  // hidden is (P,C)
  const int64_t C = model.config().hidden_size;
  for (int64_t i = 0;; ++i) {
    const int64_t rows = int64_t(hidden.size()) / C;
    model.logits(hidden.data() + (rows - 1) * C, 1, logits.data());
    const int32_t next = argmax(logits.data(), V);
    out.push_back(next);
    if (next == eos_id || i + 1 >= n_new) break;
    const int32_t one[1] = {next};
    model.forward_step(cache, one, hidden);  // hidden is (1,C)
  }
  return out;
}

}  // namespace tl
