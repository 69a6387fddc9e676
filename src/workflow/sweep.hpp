// `ternlab sweep`: PPL against sparsity for several pruning methods on one checkpoint (docs/sweep.md).
// As the study's raw-pruning run (rpt-spec §3.4), every level is pruned from the ORIGINAL weights, never
// from the previous level; the corpus is tokenized once and every point is scored on the same windows.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "prune/prune.hpp"
#include "workflow/perplexity.hpp"

namespace tl {

struct SweepOptions {
  PplRunOptions eval;                // checkpoint, corpus, protocol, windows...
  std::vector<double> levels;        // target percent of the candidates, each in [0, 100), distinct
  std::vector<PruneMethod> methods;  // seed, global, per-tensor, random; distinct
  PruneLevel level = PruneLevel::Latent;
  uint64_t seed = 0;
  // random's control: "auto" (the first magnitude method in `methods`, else unmatched), "none", or a
  // magnitude method's name.
  std::string random_match = "auto";
};

struct SweepPoint {
  PruneMethod method = PruneMethod::Seed;
  std::optional<PruneMethod> match;  // random only: the method whose per-tensor counts it took
  double target = 0;                 // percent
  bool baseline = false;             // level 0: the unpruned model (evaluated once, shared)
  double latent_sparsity = 0;        // zeros / numel over the ternary linears, after
  double code_zero = 0;              // zero codes / numel, after
  size_t pruned = 0, codes_changed = 0;
  double scale_rel_change_mean = 0;
  std::optional<float> threshold;
  std::vector<size_t> pruned_per_tensor;  // prune_targets order
  PplResult ppl;
  double seconds = 0;  // prune + evaluation
};

struct SweepResult {
  PplRun eval;  // protocol, corpus, split, windows (eval.result = the baseline's)
  SweepOptions options;
  std::optional<PruneMethod> random_match;  // resolved
  SweepPoint baseline;
  std::vector<SweepPoint> points;  // method-major, levels in the given order; level 0 = the baseline copied
  double seconds = 0;
  const SweepPoint& at(PruneMethod m, double level) const;  // tl::Error if absent
};

// "0,10,20" -> {0, 10, 20}; every level in [0, 100), no duplicates, at least one. tl::Error otherwise.
std::vector<double> parse_sweep_levels(std::string_view s);
// "seed,global,random" -> methods; known, distinct, not nm (it has no level), at least one.
std::vector<PruneMethod> parse_sweep_methods(std::string_view s);

SweepResult run_sweep(const SweepOptions& opt);

nlohmann::json to_json(const SweepPoint& p);
nlohmann::json to_json(const SweepResult& r);
std::string sweep_table(const SweepResult& r);     // terminal table: rows levels, columns methods
std::string sweep_markdown(const SweepResult& r);  // table + best level per method
std::string sweep_svg(const SweepResult& r);       // PPL (log) against realised sparsity
// Writes OUT_DIR/sweep.json, sweep.md and sweep.svg atomically (the directory is created).
void write_sweep_outputs(const SweepResult& r, const std::filesystem::path& out_dir);

}  // namespace tl
