// Choosing the next token from a row of logits: greedy, or seeded sampling through the usual filters
// (repetition penalty, top-k, top-p, min-p, temperature), in llama.cpp's order:
//
//   penalties -> top-k -> top-p -> min-p -> temperature -> draw
//
// top-p and min-p look at the probabilities before temperature (as llama.cpp, unlike transformers, which
// divides by the temperature first). The same params and seed give the same tokens on every run and every
// platform: the random stream is tl::Rng and ties are broken by the lower token id.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.hpp"

namespace tl {

struct SamplingParams {
  double temperature = 0.8;         // 0: greedy (argmax, lowest id on ties)
  int top_k = 40;                   // keep the k most likely tokens; 0: off
  double top_p = 0.95;              // keep the smallest set with this much probability; 1: off
  double min_p = 0.05;              // drop tokens below min_p x the top probability; 0: off
  double repetition_penalty = 1.0;  // HF / llama.cpp: positive logits / p, negative x p; 1: off
  int repeat_last_n = 64;           // the penalty's window of recent tokens; 0: off, -1: all of them
  uint64_t seed = 0;
  int max_tokens = 128;           // new tokens at most; -1: until the context is full
  std::vector<std::string> stop;  // stop strings: generation ends before the first one, unprinted
  std::vector<int32_t> stop_ids;  // stop tokens (eos, <|eot_id|>): generation ends, token unprinted
};

// Throws tl::Error naming the field for values that make no sense: a negative or non-finite temperature,
// top_k < 0, top_p outside (0, 1], min_p outside [0, 1], a penalty <= 0 or non-finite, repeat_last_n < -1,
// max_tokens < -1, an empty stop string, a negative stop id.
void validate(const SamplingParams& params);

// Index of the largest logit; the lowest index among equal maxima (torch.argmax).
int32_t greedy_token(std::span<const float> logits);

class Sampler {
 public:
  // Validates params; the random stream starts from params.seed.
  explicit Sampler(const SamplingParams& params);

  // The next token. `history` is every token so far (prompt and generated), for the repetition penalty.
  // Errors: empty logits, a NaN or +inf logit, all logits -inf.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  Rng rng_;
  std::vector<float> penalized_;
  std::vector<std::pair<float, int32_t>> candidates_;  // (logit, id), best first
  std::vector<int32_t> seen_;
};

}  // namespace tl
