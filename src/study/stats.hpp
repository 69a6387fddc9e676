// Statistics of `ternlab study` (docs/study.md): intervals over seeds, the paired bootstrap over windows,
// and the verdict rule that turns an effect, its control and their intervals into one of four words.
//
// Effects are differences of mean NLL in nats per token, treatment minus reference (a PPL ratio is
// exp(Δ)). Every interval is a 95% interval. Every resampling draws from tl::Rng with a given seed, so the
// same inputs give the same bits.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace tl::study {

struct Interval {
  double lo = 0, hi = 0;
};

// Student's t quantile t(0.975, df) for df >= 1 (exact to 4 decimals; the normal 1.96 in the limit).
double t975(int64_t df);

// Mean over seeds with a 95% t-interval; n == 1 gives the degenerate interval [mean, mean] and sd 0.
struct MeanCI {
  int64_t n = 0;
  double mean = 0, sd = 0;  // sd: sample standard deviation (n - 1)
  Interval ci;
};
MeanCI mean_ci(std::span<const double> x);  // x non-empty

// One arm's scores on a set of windows: Σ NLL of each window for each seed, and each window's target count
// (the same for every seed). A deterministic arm has one seed.
struct ArmScores {
  std::vector<std::vector<double>> nll;  // [seed][window]
  std::vector<double> tokens;            // [window]
  int64_t seeds() const { return int64_t(nll.size()); }
  int64_t windows() const { return int64_t(tokens.size()); }
  double mean_nll() const;  // Σ over seeds and windows of nll / (seeds · Σ tokens)
  double seed_mean_nll(int64_t s) const;
};

// Treatment minus reference on the same windows.
struct Effect {
  double delta = 0;  // mean NLL difference (nats per token), seeds averaged within each arm
  Interval ci;       // 95% percentile interval of the paired bootstrap
  double ratio = 1;  // exp(delta): the PPL ratio
  int64_t windows = 0, seeds_treatment = 0, seeds_reference = 0, resamples = 0;
  bool paired_seeds = false;  // seed i of one arm shares its data order / draws with seed i of the other
  double half_width() const { return 0.5 * (ci.hi - ci.lo); }
};

// The paired bootstrap: each resample draws the windows with replacement (whole windows, never tokens),
// and each arm's seeds with replacement (one draw for both arms when their seeds are paired: equal counts
// > 1 and pair_seeds), then Δ* = Σ_w (mean_s nll_t[s][w] - mean_s nll_r[s][w]) / Σ_w tokens[w] over the drawn
// windows. The interval is the 2.5th-97.5th percentile of Δ*. Errors: arms of different windows or token
// counts, an arm without seeds, resamples < 100.
Effect paired_bootstrap(const ArmScores& treatment, const ArmScores& reference, int resamples, uint64_t seed,
                        bool pair_seeds = true);

// The verdict of one claim (docs/study.md "The verdict rule"):
//   holds         the effect lies on the claimed side (its interval excludes zero, |Δ| >= δ) and it beats its
//                 control (treatment - control also lies on the claimed side, |Δ| >= δ); a claim without a
//                 control needs only the first
//   confounded    the effect lies on the claimed side, but the control gives as much: treatment - control
//                 lies on the other side, or within ±δ, or is smaller than δ, or includes zero while
//                 control - baseline lies on the claimed side
//   does not hold the effect lies on the opposite side, or its whole interval lies within ±δ (no effect), or
//                 it excludes zero but |Δ| < δ (a negligible effect)
//   inconclusive  anything else: the interval is too wide; `windows_needed` says about how many windows
//                 would make it decisive (the half-width shrinking as 1/√windows)
// δ (min_effect) is the smallest effect of interest in nats per token.
enum class Verdict { Holds, Confounded, DoesNotHold, Inconclusive };
std::string verdict_name(Verdict v);  // "holds", "confounded", "does not hold", "inconclusive"

struct VerdictInput {
  int direction = -1;                    // -1: the claim says the NLL falls (PPL improves); +1: rises
  Effect effect;                         // treatment - baseline
  std::optional<Effect> vs_control;      // treatment - control
  std::optional<Effect> control_effect;  // control - baseline
  double min_effect = 0.01;              // δ
};
struct VerdictResult {
  Verdict verdict = Verdict::Inconclusive;
  std::string reason;  // one sentence with the numbers that decided it
  std::optional<int64_t> windows_needed;
};
VerdictResult decide(const VerdictInput& in);

// A band claim ("|λ| < band, critical"): holds when the model's interval lies inside (-band, band) and every
// null model's lies outside it; confounded when the model's lies inside and a null model's does too; does not
// hold when the model's lies outside; inconclusive otherwise (an interval across an edge of the band).
VerdictResult decide_band(Interval model, double band, std::span<const Interval> nulls,
                          std::span<const std::string> null_names);

// An equivalence claim ("the deployed file is the evaluated model"): holds when the interval of the
// difference lies within ±δ; does not hold when it lies wholly beyond +δ or below -δ; inconclusive otherwise.
VerdictResult decide_equivalence(const Effect& difference, double min_effect);

// Percentile bootstrap of a statistic over `n` units: stat(indices) on resamples of {0..n-1} with
// replacement. Returns the 2.5-97.5 percentile interval.
Interval bootstrap_interval(int64_t n, int resamples, uint64_t seed,
                            const std::function<double(std::span<const int64_t>)>& stat);

// A stable 64-bit seed from a text (FNV-1a then splitmix64), for per-comparison bootstrap streams.
uint64_t seed_of(std::string_view text, uint64_t base);

nlohmann::json to_json(const Interval& i);
nlohmann::json to_json(const MeanCI& m);
nlohmann::json to_json(const Effect& e);
nlohmann::json to_json(const VerdictResult& v);

}  // namespace tl::study
