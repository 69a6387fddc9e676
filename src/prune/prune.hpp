// Magnitude pruning of the ternary linears (issue 3; reference rpt-spec §3) and its sparsity accounting.
// Only ParamKind::Linear tensors are ever touched: embeddings, the LM head and norms never (rpt-spec §3.1).
// Pruning zeroes latent weights in Model::params; the codes follow from the one quantizer (model/quant).
// See docs/pruning.md for the exact rules.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "model/model.hpp"

namespace tl {

enum class PruneMethod { Seed, Global, PerTensor, NM, Random };
enum class PruneLevel { Latent, Codes };

inline constexpr size_t kSeedSampleCap = 50'000;  // the study's per-tensor sample size

struct PruneOptions {
  PruneMethod method = PruneMethod::Seed;
  double sparsity = 0;  // percent of the candidate (non-zero) weights, in [0, 100)
  PruneLevel level = PruneLevel::Latent;
  int nm_n = 2, nm_m = 4;            // N:M (method NM)
  uint64_t seed = 0;                 // Seed sampling and Random selection
  std::optional<PruneMethod> match;  // Random only: take each tensor's count from this method's selection
  size_t sample_cap = kSeedSampleCap;
};

std::string_view prune_method_name(PruneMethod m);
std::string_view prune_level_name(PruneLevel l);
PruneMethod parse_prune_method(std::string_view s);  // tl::Error naming the choices
PruneLevel parse_prune_level(std::string_view s);
std::pair<int, int> parse_nm(std::string_view s);  // "2:4" -> {2, 4}; 1 <= N <= M
// Checks the options against the model (sparsity range, N:M, in % M, level/method combinations).
void validate_prune_options(const PruneOptions& opt, const Model& m);

// The tensors pruning may touch: every ParamKind::Linear view, in view order.
std::vector<const ParamView*> prune_targets(const Model& m);

// One tensor as the selection sees it. A candidate is an entry that may be pruned: at the latent level a
// non-zero latent; at the code level an entry whose code (under `code_scale`, the scale before pruning) is
// non-zero, i.e. nearbyint(w / scale) != 0 exactly as ternarize computes it.
struct PruneInput {
  std::span<const float> w;
  float code_scale = 0;  // > 0: code level; 0: latent level
  bool candidate(size_t i) const;
};

// The study's threshold (rpt-spec §3.2): per tensor the candidates' |w|, at most `cap` of them chosen by a
// partial Fisher-Yates shuffle with one Rng(seed) over the tensors in order; pooled, sorted;
// idx = min(int(len * p / 100), len - 1); thr = s[idx]. `samples_out` gets the pooled length.
// No candidates: 0.
float seed_threshold(std::span<const PruneInput> tensors, double p, uint64_t seed,
                     size_t cap = kSeedSampleCap, size_t* samples_out = nullptr);

// The same quantile, exactly, over all candidates of all the tensors: the k-th smallest candidate magnitude
// with k = min(int(N * p / 100), N - 1). Two counting passes over the float bit patterns (high, then low 16
// bits), O(65536) memory whatever N. No candidates: 0.
float exact_threshold(std::span<const PruneInput> tensors, double p, size_t* candidates_out = nullptr);

// N:M along the input dimension: in each group of m consecutive inputs of a row, entries outside the n
// largest |w| (ties: the lower index wins) are pruned. Writes prune[i] = 1 for a pruned candidate.
void nm_select(const PruneInput& t, int64_t out, int64_t in, int n, int m, uint8_t* prune);

// A keep-mask per pruned tensor: keep[i] = 1 iff the weight is non-zero after pruning (the support, as the
// study's `|W| > thr`: pre-existing zeros are 0 too). [out, in] row-major.
struct PruneMask {
  std::string name;
  int64_t out = 0, in = 0;
  std::vector<uint8_t> keep;
};

struct TensorPruneStats {
  std::string name;
  std::vector<int64_t> shape;
  size_t numel = 0;
  size_t candidates = 0;           // entries that could be pruned (see PruneInput)
  size_t pruned = 0;               // entries this prune set to zero
  size_t pruned_code_nonzero = 0;  // of those, how many had a non-zero code before (outside the dead zone)
  double target = 0;               // target percent of this tensor's candidates
  double latent_sparsity_before = 0, latent_sparsity_after = 0;  // zeros / numel
  double code_zero_before = 0, code_zero_after = 0;              // zero codes / numel
  size_t codes_changed = 0;                                      // entries whose code (-1/0/+1) changed
  float scale_before = 0, scale_after = 0;
  double scale_rel_change = 0;     // (after - before) / before
  bool fixed_scale = false;        // the scale is Model::fixed_scale (left untouched)
  std::optional<float> threshold;  // per-tensor method
};

struct PruneReport {
  PruneOptions options;
  std::optional<float> threshold;  // seed / global (and the matched method's, for random --match)
  size_t samples = 0;              // seed: pooled sample length; global: number of candidates
  std::vector<TensorPruneStats> tensors;
  // Totals over the pruned tensors.
  size_t numel = 0, candidates = 0, pruned = 0, pruned_code_nonzero = 0, codes_changed = 0;
  size_t latent_zeros_before = 0, latent_zeros_after = 0, code_zeros_before = 0, code_zeros_after = 0;
  double latent_sparsity_before = 0, latent_sparsity_after = 0, code_zero_before = 0, code_zero_after = 0;
  double pruned_frac_of_candidates = 0;  // pruned / candidates: the realised counterpart of the target
  double scale_rel_change_mean = 0, scale_rel_change_min = 0, scale_rel_change_max = 0;
};

struct PruneResult {
  PruneReport report;
  std::vector<PruneMask> masks;  // one per target tensor, in view order
};

// Prunes `m` in place (validating the options first) and accounts for it.
PruneResult prune_model(Model& m, const PruneOptions& opt);

nlohmann::json prune_options_json(const PruneOptions& o);
nlohmann::json to_json(const TensorPruneStats& t);
nlohmann::json to_json(const PruneReport& r);
// A short Markdown summary: the totals, then every tensor. `title` heads it.
std::string to_markdown(const PruneReport& r, const std::string& title);

}  // namespace tl
