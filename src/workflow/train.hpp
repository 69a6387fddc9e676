// `ternlab pretrain` and `ternlab finetune`: the training loop (train/trainer.hpp) on a checkpoint and a
// corpus, with validation perplexity under a named protocol, logs, resumable state and reports.
//
//   pretrain  CHECKPOINT (e.g. `ternlab init` output) -> one training run -> OUT_DIR
//   finetune  CHECKPOINT -> for each level: prune the current weights (masks kept and accumulated),
//             PPL before, train (fresh AdamW + cosine per level, rpt-spec §4.2), PPL after; with --control
//             the same schedule, seed and token budget at 0% sparsity, in the same command and report.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.hpp"
#include "eval/ppl.hpp"
#include "prune/prune.hpp"
#include "train/trainer.hpp"
#include "workflow/perplexity.hpp"

namespace tl {

struct TrainRunOptions {
  std::filesystem::path checkpoint, out_dir;
  std::filesystem::path tokenizer;  // default: <checkpoint>/tokenizer.json
  // Training data: a token file (ternlab data prepare), or a corpus prepared the study's way (seed rows,
  // no BOS) from a split.
  std::filesystem::path train_tokens;
  std::string corpus = "brown";
  std::filesystem::path input;
  std::string train_split = "train";
  // Validation perplexity (default: the study's protocol on the validation split, 50 windows).
  std::string val_split = "validation";
  PplOptions ppl;
  train::TrainConfig train;
  int64_t eval_every = 0;         // validation PPL every N steps (0: only at the ends of a run)
  int64_t log_every = 10;         // a log line every N steps
  int64_t save_every = 0;         // a resumable state every N steps (0: only at the end)
  bool resume = false;            // continue from OUT_DIR/state
  Device device = Device::Cpu;    // cuda: steps and validation on the GPU (cuda/device_trainer.hpp)
  bool recompute = false;         // cuda: activation recomputation (less memory, one more forward)
  bool shard_optimizer = false;   // cuda, several GPUs: each rank keeps 1/world of the AdamW moments
  DType save_dtype = DType::F32;  // the final checkpoints' floats: F32 (the master weights) or BF16
};

// One training run's record.
struct TrainRunRecord {
  std::string name;            // "pretrain", "level 5%", "control 5%"...
  double target_sparsity = 0;  // finetune levels
  double latent_sparsity = 0;  // of the linears after pruning (before training)
  double code_sparsity = 0;    // zero ternary codes under the run's quantizer, after training
  std::optional<double> ppl_before, ppl_after;
  std::vector<train::StepLog> steps;
  std::vector<std::pair<int64_t, double>> val_ppl;  // (step, PPL) during the run
  double seconds = 0, tokens_per_s = 0;
  double final_loss = 0;  // mean of the last min(50, steps) losses (the study's return value)
};

struct TrainRunResult {
  std::string command;  // pretrain | finetune
  TrainRunOptions options;
  PplRun eval;  // the validation data's description
  double baseline_ppl = 0;
  double unigram_ppl = 0;  // validation PPL of the training data's add-one unigram model
  std::vector<TrainRunRecord> runs, control;
  std::string final_checkpoint, control_checkpoint;
  double seconds = 0;
};

TrainRunResult run_pretrain(const TrainRunOptions& opt);

struct FinetuneOptions {
  TrainRunOptions run;
  std::vector<double> levels = {5, 10};  // progressive target sparsities (each on the current weights)
  PruneMethod method = PruneMethod::Seed;
  uint64_t prune_seed = 0;
  bool control = false;
};
TrainRunResult run_finetune(const FinetuneOptions& opt);

// Keep-masks of the current zeros of every linear (a level's pruning and the earlier levels').
std::vector<TensorMask> masks_of_zeros(const Model& m);
// Zeros / weights over the ternary linears.
double latent_sparsity(const Model& m);

nlohmann::json to_json(const TrainRunResult& r);
std::string to_markdown(const TrainRunResult& r);

// One training run on a model in memory (a level of the study's fine-tunes): opt.train, opt.device,
// opt.recompute and opt.shard_optimizer apply; nothing is written and nothing is evaluated. The model holds
// the trained weights afterwards (brought back from the GPU). A NaN or inf loss is a tl::Error.
TrainRunRecord train_in_memory(Model& m, const TrainRunOptions& opt, std::span<const int32_t> tokens,
                               std::vector<TensorMask> masks, const std::string& name);

// The perplexity of a model under a training quantizer mode: absmean / fixed run directly;
// rpt-fixed runs on a snapped copy (the effective scales), exactly what training's forward computed.
PplResult evaluate_trained(const Model& model, train::WeightQuantMode mode, const PplData& data);

// Fixed scales for the fixed / rpt-fixed quantizers, captured before any pruning (rpt-spec §5.2 step 3):
// rpt-fixed takes mean|w| over the non-zero latents, fixed the absmean; a checkpoint's own are kept.
void capture_fixed_scales(Model& m, train::WeightQuantMode mode);

// exp(cross-entropy) of the add-one unigram model of `train` on `val` (a floor any trained model must beat).
double unigram_ppl(std::span<const int32_t> train, std::span<const int32_t> val, int64_t vocab);

}  // namespace tl
