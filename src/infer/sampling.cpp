#include "infer/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.hpp"

namespace tl {

void validate(const SamplingParams& p) {
  TL_CHECK(std::isfinite(p.temperature) && p.temperature >= 0,
           "temperature must be a finite number >= 0 (0 is greedy), found {}", p.temperature);
  TL_CHECK(p.top_k >= 0, "top_k must be >= 0 (0 turns it off), found {}", p.top_k);
  TL_CHECK(std::isfinite(p.top_p) && p.top_p > 0 && p.top_p <= 1,
           "top_p must be in (0, 1] (1 turns it off), found {}", p.top_p);
  TL_CHECK(std::isfinite(p.min_p) && p.min_p >= 0 && p.min_p <= 1,
           "min_p must be in [0, 1] (0 turns it off), found {}", p.min_p);
  TL_CHECK(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0,
           "repetition_penalty must be a finite number > 0 (1 turns it off), found {}", p.repetition_penalty);
  TL_CHECK(p.repeat_last_n >= -1, "repeat_last_n must be >= -1 (-1: all tokens, 0: off), found {}",
           p.repeat_last_n);
  TL_CHECK(p.max_tokens >= -1, "max_tokens must be >= 0 (or -1: until the context is full), found {}",
           p.max_tokens);
  for (const auto& s : p.stop) TL_CHECK(!s.empty(), "stop strings must not be empty");
  for (int32_t id : p.stop_ids) TL_CHECK(id >= 0, "stop token ids must be >= 0, found {}", id);
}

namespace {

// NaN would make every comparison false and the choice arbitrary; +inf makes softmax NaN.
void check_logits(std::span<const float> logits) {
  TL_CHECK(!logits.empty(), "sampling: the logits row is empty");
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) fail("sampling: the logit of token {} is NaN", i);
    if (logits[i] == std::numeric_limits<float>::infinity())
      fail("sampling: the logit of token {} is +inf", i);
  }
}

}  // namespace

int32_t greedy_token(std::span<const float> logits) {
  check_logits(logits);
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;  // strict: the first maximum wins
  TL_CHECK(logits[best] > -std::numeric_limits<float>::infinity(), "sampling: every logit is -inf");
  return int32_t(best);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  validate(params_);
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  check_logits(logits);
  const size_t V = logits.size();
  std::span<const float> scores = logits;
  if (params_.repetition_penalty != 1.0 && params_.repeat_last_n != 0 && !history.empty()) {
    const size_t window =
        params_.repeat_last_n < 0 ? history.size() : std::min(history.size(), size_t(params_.repeat_last_n));
    seen_.assign(history.end() - std::ptrdiff_t(window), history.end());
    std::sort(seen_.begin(), seen_.end());
    seen_.erase(std::unique(seen_.begin(), seen_.end()), seen_.end());  // each token penalised once
    penalized_.assign(logits.begin(), logits.end());
    const float penalty = float(params_.repetition_penalty);
    for (int32_t id : seen_) {
      if (id < 0 || size_t(id) >= V) continue;
      float& l = penalized_[size_t(id)];
      l = l > 0 ? l / penalty : l * penalty;
    }
    scores = penalized_;
  }
  if (params_.temperature == 0) return greedy_token(scores);

  candidates_.clear();
  for (size_t i = 0; i < V; ++i)
    if (scores[i] > -std::numeric_limits<float>::infinity()) candidates_.emplace_back(scores[i], int32_t(i));
  TL_CHECK(!candidates_.empty(), "sampling: every logit is -inf");
  // Best first, the lower id first among equals, so that the order (and the draw) is reproducible.
  const auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (params_.top_k > 0 && size_t(params_.top_k) < candidates_.size()) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + params_.top_k, candidates_.end(), better);
    candidates_.resize(size_t(params_.top_k));
  } else {
    std::sort(candidates_.begin(), candidates_.end(), better);
  }

  // Probabilities at temperature 1, relative to the best (which has weight 1).
  const double best = candidates_.front().first;
  if (params_.top_p < 1.0) {
    double total = 0;
    for (const auto& c : candidates_) total += std::exp(double(c.first) - best);
    double cumulative = 0;
    size_t keep = 0;
    while (keep < candidates_.size()) {
      cumulative += std::exp(double(candidates_[keep].first) - best);
      ++keep;
      if (cumulative >= params_.top_p * total) break;
    }
    candidates_.resize(keep);
  }
  if (params_.min_p > 0) {
    size_t keep = 1;
    while (keep < candidates_.size() && std::exp(double(candidates_[keep].first) - best) >= params_.min_p)
      ++keep;
    candidates_.resize(keep);
  }

  double total = 0;
  for (const auto& c : candidates_) total += std::exp((double(c.first) - best) / params_.temperature);
  double target = rng_.uniform() * total;
  for (const auto& c : candidates_) {
    target -= std::exp((double(c.first) - best) / params_.temperature);
    if (target < 0) return c.second;
  }
  return candidates_.back().second;  // rounding left a sliver past the end
}

}  // namespace tl
