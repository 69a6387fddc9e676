// The backend factory: backends.cpp is the one file that knows whether this binary has the CUDA backend.
// Every `--device` choice becomes a backend here (a training step, a scorer of token windows, the analyses'
// per-block runners); workflow/ and cli/ name no cuda/ header and hold no #if TERNLAB_HAVE_CUDA.
// cuda_built, require_device, describe_device and process_communicator (workflow/device.hpp) are defined
// in backends.cpp too.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "analysis/criticality.hpp"
#include "eval/ppl.hpp"
#include "model/backend.hpp"
#include "model/model.hpp"
#include "train/train_model.hpp"
#include "workflow/device.hpp"

namespace tl {

// What a training step on a device needs; the GPU and the data-parallel group come from process_group().
struct StepBackendRequest {
  TrainOptions quant;            // weight quantizer and ActQuant switch
  int64_t max_tokens = 0;        // the rows of one forward on this rank (micro-batch share, or evaluation)
  bool recompute = false;        // recompute activations in backward (less memory)
  bool shard_optimizer = false;  // ZeRO-1 over the ranks (only when there are several)
};
// The training step for `device`: nullptr for the CPU (the trainer's own reference step), the GPU's step
// otherwise. Errors as require_device.
std::unique_ptr<StepBackend> make_step_backend(Device device, const StepBackendRequest& request);

// Per-position losses of token windows on the GPU, for ppl: one device model (the CPU reference's
// quantizers, codes computed once) that scores up to max_tokens rows per call. Errors as require_device.
PositionLossFn make_gpu_position_losses(const Model& model, int64_t max_tokens);

// The analyses' per-block runners for `device`: empty (the CPU reference's) for the CPU; for the GPU,
// runners sized for texts of up to `longest_text` tokens.
BlockRunnerFactory make_block_runners(Device device, int64_t longest_text);

// TERNLAB_CUDA_PROFILE=1: where a training step's GPU time went. Without CUDA: off, and no-ops.
bool gpu_step_profile_enabled();
void gpu_step_profile_reset();
std::string gpu_step_profile_report(int steps);

}  // namespace tl
