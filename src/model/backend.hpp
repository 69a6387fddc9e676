// The backend interfaces: what every backend (the CPU reference in cpu/ and train/, CUDA in cuda/)
// implements and what the layers above call. A backend depends only on model/ and core/; the application
// layer (workflow/backends.cpp) is the one place that picks one.
//   StepBackend  — the arithmetic of one training step (the Trainer's CPU path is the reference).
//   BlockRunner  — decoder blocks run one at a time with the residual stream on the host (criticality).
// Plus the plain types their signatures share: the forward's quantizer choice, keep-masks, AdamW's
// configuration and the parameter precision.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "model/model.hpp"
#include "model/quant.hpp"

namespace tl {

// A next-token target that is not counted (padding, the last position of a chunk).
inline constexpr int32_t kIgnoreTarget = -1;

// The quantizers of a training (or device evaluation) forward.
struct TrainOptions {
  WeightQuant weight_quant = WeightQuant::Absmean;
  bool act_quant = true;  // per-token int8 ActQuant on every BitLinear input
};

// Keep-mask of one tensor (1 keep, 0 pruned), by HF name; shape as the tensor.
struct TensorMask {
  std::string name;
  std::vector<uint8_t> keep;
};

struct AdamWConfig {
  double lr = 5e-4;  // peak learning rate (the schedule scales it)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.01;  // decoupled: p *= 1 - lr·wd before the Adam step
};

// How parameters and optimizer state are stored between steps.
//   Fp32 — fp32 master weights and moments (the usual practice).
//   Bf16 — the study's pure-bf16 AdamW (rpt-spec §4.2, §4.5): parameters, gradients and both moments are
//          bf16 and every elementwise op of torch's update rounds its result to bf16, so updates smaller
//          than half a bf16 spacing are lost exactly as they were on the study's H100.
enum class ParamPrecision { Fp32, Bf16 };

// Where the arithmetic of a training step runs. The Trainer (train/trainer.hpp) samples the batches, runs
// the schedule, logs and checkpoints; with no backend it computes on the CPU reference (TrainModel + host
// AdamW). A backend (the CUDA one: cuda/device_trainer.hpp) holds its own parameters, gradients and AdamW
// moments and must compute the same step: the same order of operations as Trainer::step's CPU path.
class StepBackend {
 public:
  virtual ~StepBackend() = default;
  // Before the first step, and again after a resume: the host parameters (already rounded to bf16 in Bf16
  // precision and masked), the AdamW moments (zeros, or a resumed run's), and the masks as (offset into
  // params, mask).
  virtual void start(const Model& model, std::span<const float> m, std::span<const float> v,
                     const std::vector<std::pair<size_t, const TensorMask*>>& masks) = 0;
  virtual void zero_grad() = 0;
  // Forward and backward of one micro-batch (B*T tokens and targets, -1 = not counted): accumulates
  // d(mean loss)/d(params); returns the mean loss (NaN/inf are returned, not thrown). `last`: the step's last
  // micro-batch (a data-parallel backend averages the gradients over its ranks during that backward; each
  // rank takes its share of the B rows).
  virtual double forward_backward(std::span<const int32_t> tokens, std::span<const int32_t> targets,
                                  int64_t B, int64_t T, bool last) = 0;
  // After the micro-batches: grads *= scale (skipped when 1), masked gradients zeroed, bf16 rounding in
  // Bf16 precision, then clip_grad_norm(clip) (a backend may hold the clipping coefficient back and apply it
  // inside adamw_step, with the same bits). Returns the norm before clipping; NaN/inf when the norm or any
  // gradient is not finite (then the step must not be applied).
  virtual double finish_gradients(float scale, double clip, ParamPrecision precision) = 0;
  // AdamW step number t (1-based, for the bias corrections) at learning rate lr, then masked parameters
  // set to exactly zero.
  virtual void adamw_step(const AdamWConfig& cfg, ParamPrecision precision, int64_t t, double lr) = 0;
  // Copies the backend's parameters and moments to the host (checkpoints, evaluation).
  virtual void download(std::span<float> params, std::span<float> m, std::span<float> v) const = 0;
  // Per-position losses (B*T; 0 where the target is -1) of a forward without backward, with the training
  // quantizers: validation perplexity on the backend's own copy of the model.
  virtual void eval_losses(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B,
                           int64_t T, std::vector<float>& losses) = 0;
  // Waits for the work queued so far (timings).
  virtual void synchronize() = 0;
  // Device memory this backend has allocated at its peak (bytes): parameters, gradients, moments, masks,
  // activations and scratch.
  virtual size_t memory_bytes() const = 0;
};

// Where the decoder blocks of the criticality measurements run: the CPU reference (analysis/criticality.hpp's
// CpuBlockRunner) or the GPU (cuda/criticality_runner.hpp).
class BlockRunner {
 public:
  virtual ~BlockRunner() = default;
  virtual const BitNetConfig& config() const = 0;
  // The input embedding table (vocab_size, C), row-major, on the host.
  virtual const float* embedding_rows() const = 0;
  // After block l: its output x_out (T,C) on the host. It may change x_out in place (the next block reads
  // the changed stream); returning false says no later block is needed.
  using AfterBlock = std::function<bool(int64_t layer, float* x_out)>;
  // Runs blocks 0, 1, ... of one sequence (batch 1) from x (T,C), the residual stream entering block 0,
  // calling after_block after each. Errors: T not in [1, max_position_embeddings], and the backend's.
  virtual void run_blocks(const float* x, int64_t T, const AfterBlock& after_block) = 0;
};
// A runner of the Model as it is now (a control changes the weights: each gets a new runner, made after the
// previous one is gone, so only one copy of a model's codes exists at a time).
using BlockRunnerFactory = std::function<std::unique_ptr<BlockRunner>(const Model& model)>;

}  // namespace tl
