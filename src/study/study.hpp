// `ternlab study`: the RPT study (rpt-spec §3-§7) in one command — every claim with the control it lacked,
// several seeds, intervals, a verdict per claim by a written rule, and one report (docs/study.md).
//
//   C1  raw magnitude pruning (the study's sampled global threshold, exact global, per-tensor, and a random
//       control matched tensor by tensor), each level from the original weights, scored under the study's
//       Protocol A (its 8 sentences) and the seed protocol on held-out text, with code-level accounting
//   C2  progressive pruning + QAT/STE fine-tuning per level, beside the 0%-sparsity fine-tuned control and a
//       random-pruning + fine-tune control (the same tokens, seeds and schedule)
//   C3  the deploy recipe (rpt-fixed scales, 5% -> 10%), snap, save, reload, GGUF (I2_S, TQ2_0), the GGUF's
//   own
//       PPL, the study's "before snap" number beside the correct one, greedy generations from the GGUF, and
//       the same recipe at 0% as the control
//   C4  criticality: the study's measurements exactly, their spread over ε and seeds, FTLE, null models
//   C5  activation pruning: the study's mode, per-token, and a random mask at equal count
//   D   the domain-shift control: C2's fine-tuning gains on the corpora that were never fine-tuned on
//
// The work folder is resumable: every unit of work (a run) writes its record atomically to runs/; a rerun
// skips what is recorded; progressive chains keep the state of their last finished level. The records hold
// no timings, so the same command gives the same results.json bit for bit.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.hpp"
#include "prune/prune.hpp"
#include "train/optim.hpp"
#include "workflow/device.hpp"

namespace tl::study {

namespace fs = std::filesystem;

enum class ClaimId { C1, C2, C3, C4, C5 };
std::string claim_name(ClaimId c);                        // "c1" ...
std::vector<ClaimId> parse_claims(std::string_view csv);  // "c1,c3" or "all"; errors name the bad one

// The work of one scale. small: sized so that a 5M-parameter model runs every claim over 3 seeds in about
// ten minutes on 2 CPU cores; full: the study's own budgets (rpt-spec §11).
struct Budget {
  std::string scale;
  int64_t windows = 64;           // seed-protocol windows per evaluation corpus (the first 50 = the study's)
  int64_t act_windows = 64;       // C5's windows (its hooks run on the CPU reference)
  std::vector<double> c1_levels;  // raw pruning targets, percent (> 0)
  std::vector<PruneMethod> c1_methods;
  std::vector<double> c2_levels;  // progressive targets
  int64_t c2_steps = 0, c2_batch = 0;
  std::vector<double> c3_levels;  // the deploy recipe's progressive targets
  int64_t c3_steps = 0, c3_batch = 0;
  int64_t seq_len = 128;
  double lr = 5e-4;
  int crit_texts = 20;
  std::vector<double> crit_eps, ftle_eps;
  std::vector<double> act_levels;  // activation-pruning percentiles
  int gen_tokens = 30;             // greedy tokens per prompt from the GGUF
};
Budget budget_for(const std::string& scale);  // small | full; tl::Error otherwise
nlohmann::json to_json(const Budget& b);

struct StudyOptions {
  fs::path model;                           // a checkpoint directory (HF layout)
  fs::path out_dir;                         // the work folder
  fs::path tokenizer;                       // default: <model>/tokenizer.json
  std::string train_corpus = "sotu:train";  // a corpus spec (text/corpus.hpp): what C2 and C3 fine-tune on
  // Evaluation corpora; the first is the held-out split of the training corpus (the claims' verdicts), the
  // others the domain-shift control (at least one never trained on).
  std::vector<std::string> eval_corpora = {"sotu:test", "brown:test", "moby-dick"};
  int seeds = 3;
  uint64_t seed = 0;
  Device device = Device::Cpu;
  std::string scale = "small";
  std::vector<ClaimId> only;  // empty: every claim
  // Overrides of the scale's budget (0: the scale's).
  int64_t windows = 0, steps = 0, batch = 0;
  int64_t max_runs = 0;      // > 0: stop after this many new runs (the folder resumes; no report until done)
  int bootstrap = 2000;      // resamples of every bootstrap
  double min_effect = 0.01;  // δ of the verdict rule, nats per token
  ParamPrecision precision = ParamPrecision::Fp32;
  bool recompute = false;  // cuda: recompute activations in backward (less memory)
  std::string command;     // the command line, for the report
};
// Errors name the flag: no model or out_dir, seeds < 1, no eval corpus, a bad corpus spec, an unknown scale,
// bootstrap < 100, min_effect <= 0, negative overrides.
void validate(const StudyOptions& opt);
// The scale's budget with the options' overrides applied.
Budget effective_budget(const StudyOptions& opt);

struct PlannedRun {
  std::string id;  // e.g. "c2/prune/s1/L0": its record is runs/c2_prune_s1_L0.json
  ClaimId claim = ClaimId::C1;
  std::string what;
  int64_t train_tokens = 0, eval_tokens = 0;
  double est_seconds = 0;
};
struct Plan {
  Budget budget;
  std::vector<PlannedRun> runs;  // in execution order (chains in level order)
  double est_seconds = 0;
  std::string basis;  // how the times were estimated
};
// The runs of the selected claims for a model of this shape (the baseline run first).
Plan make_plan(const StudyOptions& opt, const BitNetConfig& cfg);
std::string plan_table(const Plan& plan);

struct StudyOutcome {
  nlohmann::json results;  // what results.json holds (null while runs are left)
  int64_t runs_done = 0, runs_skipped = 0, runs_left = 0;
  double seconds = 0;
};
// Runs (or resumes) the study and writes results.json, report.md, report.html, the plots and timings.json
// (seconds and the process's peak resident memory after each run). With max_runs, stops early and writes
// only the records and timings.
StudyOutcome run_study(const StudyOptions& opt);

// ---------------------------------------------------------------------------------------------------------
// From records to results and report (exposed for tests).

// results.json from the study's config (study.json) and the run records by id. Errors: a record missing
// for a selected claim.
nlohmann::json aggregate(const nlohmann::json& config, const std::map<std::string, nlohmann::json>& runs);
// meta: what results.json leaves out on purpose (command, times, threads, host): the report shows it.
std::string report_markdown(const nlohmann::json& results, const nlohmann::json& meta);
std::string report_html(const nlohmann::json& results, const nlohmann::json& meta);
// The plots of the report, by file name (c1_pruning.svg, ...), from results.json.
std::vector<std::pair<std::string, std::string>> report_plots(const nlohmann::json& results);

}  // namespace tl::study
