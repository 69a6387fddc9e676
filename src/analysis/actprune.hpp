// The RPT study's activation ("predictive coding") pruning (rpt-spec §6.5), exactly, plus the controls it
// lacked (§6.6, §10.1 item 9): the two block writes pruned separately, a per-token quantile, a random mask
// at equal count, and levels below P50 (docs/actprune.md).
//
// Everything runs in fp32 on the exact CPU forward through CpuModel's residual hooks. Per layer l and
// sequence b (batch-independent: each sequence of a forward is its own "forward" of the study's batch 1):
//   study      r = x_out - x_in (fp32 subtraction), thr = torch.quantile(|r| over the (T,C) of the
//              sequence, P/100) (linear interpolation, fp32 as torch), keep |r| >= thr (ties kept),
//              x_out = x_in + r*mask
//   split      the attention write o and the MLP write m (N,C), each pruned by its own quantile, as above
//   per-token  the study's rule with the quantile over each token's C channels
//   random     the study's count k of this (layer, sequence), zeroed at k uniformly random positions
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.hpp"
#include "cpu/forward.hpp"
#include "eval/ppl.hpp"
#include "text/tokenizer.hpp"

namespace tl {

enum class PruneMode { Study, Split, PerToken, Random };
PruneMode parse_prune_mode(const std::string& s);  // study | split | per-token | random
std::string prune_mode_name(PruneMode m);
// Comma-separated modes, none repeated. Errors: empty list, unknown or repeated mode.
std::vector<PruneMode> parse_prune_modes(const std::string& csv);
// Comma-separated percentiles, each in [0, 100), strictly increasing (the stop rule reads them in order).
std::vector<double> parse_prune_levels(const std::string& csv);

// The study's generation prompts (rpt-spec §1.3: the first 3 of TEST_PROMPTS).
std::vector<std::string> study_prompts();

// ---------------------------------------------------------------------------------------------------------
// Building blocks.

// torch.quantile(v, q) with linear interpolation, in fp32 as torch computes it: rank = float(q) * (n-1),
// lo = trunc(rank), hi = ceil(rank), lerp(v[lo], v[hi], rank - lo) on the sorted values. v is reordered
// (partially sorted). Errors: empty v, q outside [0, 1].
float torch_quantile(std::span<float> v, double q);

// The study's rule on n values: thr = torch_quantile(|x|, percent/100); every x with |x| < thr becomes 0
// (values equal to thr are kept). Returns the count zeroed; `abs` is scratch.
int64_t prune_below_quantile(float* x, int64_t n, double percent, std::vector<float>& abs);
// The count the study's rule would zero, without changing x.
int64_t count_below_quantile(const float* x, int64_t n, double percent, std::vector<float>& abs);
// Zeroes exactly k of the n values, a uniformly random subset (selection sampling) drawn from rng.
void zero_random_subset(float* x, int64_t n, int64_t k, Rng& rng);

// Seed of the random mask of (seed, level, layer, sequence): a fixed stream per sequence, so the mask does
// not depend on the batch size.
uint64_t mask_seed(uint64_t seed, double level, int64_t layer, uint64_t sequence);

// The pruning hook of one mode at one level (percent in [0, 100)). Counts, while `counting`, the pruned
// elements and all elements seen, and the squared magnitude removed and seen.
class ActPruneHook : public ResidualHooks {
 public:
  ActPruneHook(PruneMode mode, double percent, uint64_t seed, int64_t n_layers);
  void on_attention(const HookSite& site, float* o) override;
  void on_mlp(const HookSite& site, float* o) override;
  void on_block(const HookSite& site, const float* x_in, float* x_out) override;

  bool counting = true;
  int64_t zeroed = 0, elements = 0;
  double energy_removed = 0, energy = 0;  // Σ r² of pruned elements, of all elements (double)

 private:
  // Prunes r (n) by this mode's rule: (layer, sequence) choose the random mask; rows of `row` values
  // (per-token: C, else n).
  void prune(float* r, int64_t n, int64_t row, int64_t layer, uint64_t sequence);
  PruneMode mode_;
  double percent_;
  uint64_t seed_;
  int64_t n_layers_;
  uint64_t sequences_done_ = 0;  // sequences finished (counted at the last layer): random mode's stream id
  std::vector<float> r_, abs_;
};

// The study's natural-sparsity statistics of |r| per layer (rpt-spec §6.3), per sequence and then averaged
// over sequences: mean, std (unbiased, torch's default), max, and the % of elements == 0, < 0.001, < 0.01,
// < 0.05, < 0.1. Observes only (x_out is not changed).
struct LayerSparsity {
  double mean = 0, std = 0, max = 0, pct_zero = 0, pct_below[4] = {0, 0, 0, 0};
};
constexpr double kSparsityThresholds[4] = {0.001, 0.01, 0.05, 0.1};
class NaturalSparsityHook : public ResidualHooks {
 public:
  explicit NaturalSparsityHook(int64_t n_layers);
  void on_block(const HookSite& site, const float* x_in, float* x_out) override;
  std::vector<LayerSparsity> average() const;  // (L), over the sequences seen

 private:
  std::vector<LayerSparsity> sum_;
  std::vector<int64_t> seen_;
};

// Perplexity of the windows with the model's current hooks (forward + logits per batch).
PplResult hooked_perplexity(CpuModel& model, const std::vector<PplWindow>& windows, const PplOptions& opt);

// ---------------------------------------------------------------------------------------------------------
// The whole measurement.

struct ActPruneOptions {
  std::vector<PruneMode> modes = {PruneMode::Study, PruneMode::Split, PruneMode::PerToken, PruneMode::Random};
  std::vector<double> levels = {10, 20, 30, 40, 50, 60, 70, 80, 90};  // P; 0 is the baseline (no hook)
  uint64_t seed = 0;                                                  // random mode's masks
  std::vector<std::string> prompts = study_prompts();                 // greedy generations per point
  int max_new = 25;
  bool stop_rule = true;  // the study's: a mode stops after a level whose PPL > stop_factor × baseline
  double stop_factor = 10;
  bool natural = true;  // natural-sparsity statistics on the baseline pass
};
// Errors: no mode, no level, a level outside [0, 100) or not increasing, max_new < 0, stop_factor <= 1.
void validate(const ActPruneOptions& opt);

struct Generation {
  std::string prompt, text;              // text: the new tokens decoded, special tokens skipped
  std::vector<int32_t> prompt_ids, ids;  // prompt with BOS as the tokenizer adds it; the new tokens
};

struct ActPrunePoint {
  PruneMode mode = PruneMode::Study;
  double level = 0;
  bool skipped = false;  // not run: the stop rule ended this mode at an earlier level
  PplResult ppl;
  double ppl_ratio = 0;              // ppl / baseline ppl
  int64_t zeroed = 0, elements = 0;  // over the PPL pass only (as the study)
  double pct_zeroed = 0;             // 100 · zeroed / elements
  double pct_energy_removed = 0;     // 100 · Σ r² pruned / Σ r²
  std::vector<Generation> generations;
};

struct ActPruneResult {
  int64_t layers = 0, hidden = 0;
  ActPruneOptions options;
  PplResult baseline;
  std::vector<Generation> baseline_generations;
  std::vector<LayerSparsity> natural;  // (L), empty unless options.natural
  std::vector<ActPrunePoint> points;   // modes × levels, in that order
  double seconds = 0;
};

// Scores the baseline (no hook) and every mode × level on the same windows, and generates greedily from the
// prompts (encoded with the tokenizer's special tokens, as the study's tokenizer(prompt)) with each hook on.
// The model's hooks are restored to none on return. Errors: invalid options, no window.
ActPruneResult run_actprune(CpuModel& model, const std::vector<PplWindow>& windows, const PplOptions& ppl,
                            const Tokenizer& tok, const ActPruneOptions& opt);

nlohmann::json to_json(const ActPruneResult& r);
std::string to_markdown(const ActPruneResult& r, const std::string& title);
// The compact terminal table (one row per point).
std::string actprune_table(const ActPruneResult& r);

}  // namespace tl
