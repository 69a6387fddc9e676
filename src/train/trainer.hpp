// The training loop (CPU fp32 reference): batches sampled with a seed from non-overlapping chunks of a
// token stream, forward/backward through train::TrainModel, pruning masks that keep pruned weights at
// zero, global-norm clipping, AdamW under a cosine schedule, and checkpoints that resume bit-exactly.
//
// One optimizer step (the study's finetune(), rpt-spec §4.2, §5.3):
//   for each of grad_accum micro-batches of batch/grad_accum chunks: loss.backward() (mean over targets,
//     scaled by 1/grad_accum so the step sees the mean over the whole batch)
//   grads *= mask (pruned weights get no gradient); norm = clip_grad_norm(grads, clip)
//   NaN / inf in the loss or the norm: stop before touching the parameters (NonFiniteError)
//   AdamW step at cosine_lr(step); params *= mask (exactly zero, whatever the precision)
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.hpp"
#include "model/backend.hpp"
#include "model/model.hpp"
#include "train/optim.hpp"
#include "train/train_model.hpp"

namespace tl::train {

struct TrainConfig {
  int64_t steps = 100;     // optimizer steps of this run (one level of a progressive fine-tune)
  int64_t batch = 8;       // chunks per optimizer step
  int64_t grad_accum = 1;  // micro-batches per step (batch must be a multiple)
  int64_t seq_len = 128;   // tokens per chunk; each chunk scores its seq_len - 1 next-token targets
  AdamWConfig adamw;
  int64_t warmup = 0;  // linear warm-up steps, then cosine to min_lr
  double min_lr = 0;
  double clip = 1.0;  // global gradient norm limit; 0: off
  ParamPrecision precision = ParamPrecision::Fp32;
  TrainOptions quant;  // weight quantizer (absmean / fixed / off) and activation quantizer
  uint64_t seed = 0;   // batch sampling
};
// "absmean", "fixed", "rpt-fixed", "off" (the --quant flag).
using ::tl::parse_weight_quant;  // model/quant.hpp
using ::tl::weight_quant_name;

// Errors name the flag: steps < 1, batch < 1, grad_accum < 1 or not dividing batch, seq_len < 2,
// invalid AdamW, warm-up >= steps, clip < 0, min_lr < 0 or > lr.
void validate(const TrainConfig& c);
nlohmann::json to_json(const TrainConfig& c);

// A loss or gradient that is NaN or inf: the step is not applied. `step` is the 1-based step that failed.
struct NonFiniteError : std::runtime_error {
  int64_t step;
  NonFiniteError(int64_t s, const std::string& what) : std::runtime_error(what), step(s) {}
};

// The step backend interface and keep-masks (model/backend.hpp), under the names training code uses.
using ::tl::StepBackend;
using ::tl::TensorMask;

struct StepLog {
  int64_t step = 0;  // 1-based
  double loss = 0;   // mean over the batch's targets
  double lr = 0, grad_norm = 0;
  int64_t tokens = 0;  // tokens processed by this step (batch · seq_len)
  double seconds = 0;  // wall time of this step
};

class Trainer {
 public:
  // `model` is trained in place and must outlive the trainer. `tokens` is the training stream, cut into
  // floor(n / seq_len) non-overlapping chunks. Errors: an invalid config, fewer chunks than one micro-batch
  // ("batch larger than the data"), a token outside the vocabulary, a mask for an unknown tensor or of the
  // wrong size. In Bf16 precision the parameters are rounded to bf16 first. Masked parameters are zeroed.
  // With a backend, the steps run there (the GPU); the Model is brought up to date by sync_model() and at
  // every save_state.
  Trainer(Model& model, const TrainConfig& cfg, std::span<const int32_t> tokens,
          std::vector<TensorMask> masks = {}, std::unique_ptr<StepBackend> backend = nullptr);

  // One optimizer step; throws NonFiniteError (nothing changed) on a NaN/inf loss or gradient.
  StepLog step();
  int64_t steps_done() const { return step_; }
  bool done() const { return step_ >= cfg_.steps; }
  const TrainConfig& config() const { return cfg_; }
  int64_t num_chunks() const { return n_chunks_; }
  Model& model() { return *model_; }
  // Copies the backend's parameters (and moments) into the Model (nothing to do on the CPU path).
  void sync_model();
  StepBackend* backend() { return backend_.get(); }

  // Checkpoints: `dir`/model.safetensors + config.json (fp32 master, loadable by load_checkpoint),
  // optimizer.safetensors (AdamW moments), masks.safetensors (when masked) and trainer_state.json (step,
  // sampler RNG, config, data fingerprint). Written to "<dir>.tmp" and swapped in whole, so an interrupted
  // save leaves the previous checkpoint intact.
  void save_state(const std::filesystem::path& dir);
  // Restores a checkpoint written by save_state for the same data and config; continuing then gives the
  // same bits as never stopping. Errors: a different config, data, model shape or a damaged file.
  void load_state(const std::filesystem::path& dir);

 private:
  void apply_masks_to(std::span<float> x) const;

  Model* model_;
  TrainConfig cfg_;
  std::span<const int32_t> tokens_;
  int64_t n_chunks_ = 0;
  std::string data_fingerprint_;
  std::vector<TensorMask> masks_;
  std::vector<std::pair<size_t, const TensorMask*>> mask_offsets_;  // (offset into params, mask)
  std::unique_ptr<StepBackend> backend_;
  std::optional<TrainModel<float>> net_;  // the CPU path only
  AdamW opt_;  // the CPU path's optimizer; with a backend, the host copy of its moments and the step count
  Rng rng_;
  int64_t step_ = 0;
  std::vector<int32_t> batch_tokens_, batch_targets_;
};

// Non-overlapping chunk c of length T: tokens[c*T, (c+1)*T); targets are the next tokens inside the chunk
// and -1 for the last position (the study's labels = input_ids, shifted inside the model).
void chunk_inputs(std::span<const int32_t> tokens, int64_t chunk, int64_t T, int32_t* inp, int32_t* tgt);

// Validation loss: the mean next-token loss over the first max_chunks chunks (-1: all), through TrainModel
// with the config's quantizers, for validation curves during training.
double eval_loss(Model& model, const TrainOptions& quant, std::span<const int32_t> tokens, int64_t seq_len,
                 int64_t max_chunks, int64_t batch);

// Where the checkpoint that Trainer::save_state(dir) wrote last is: `dir`, or, after a kill inside
// save_state, "<dir>.tmp" when complete (the newer) or "<dir>.old" (the previous). Nothing is moved (the
// ranks of a data-parallel run read it at once); the next save_state tidies up. nullopt: none.
std::optional<std::filesystem::path> find_saved_state(const std::filesystem::path& dir);

}  // namespace tl::train
