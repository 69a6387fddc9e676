// Where the arithmetic of a training step runs. The Trainer (train/trainer.hpp) samples the batches, runs
// the schedule, logs and checkpoints; with no backend it computes on the CPU reference (TrainModel + host
// AdamW). A backend (the CUDA one: cuda/device_trainer.hpp) holds its own parameters, gradients and AdamW
// moments and must compute the same step: the same order of operations as Trainer::step's CPU path.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "model/model.hpp"
#include "train/optim.hpp"

namespace tl::train {

struct TensorMask;

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

}  // namespace tl::train
