// The CUDA step backend (model/backend.hpp): the Trainer's step on one GPU, or on several through
// NCCL data parallelism (one process per GPU; cuda/nccl.hpp). Parameters, gradients and AdamW moments live
// on the device in the flat Model::params layout; masks are one bit per parameter.
#pragma once
#include <memory>

#include "cuda/device_model.hpp"
#include "model/backend.hpp"

namespace tl::cuda {

class Communicator;  // cuda/nccl.hpp

struct DeviceTrainerOptions {
  DeviceModelOptions
      model;  // quantizers, max_tokens (this rank's share of a micro-batch), recomputation, GPU
  // Data parallel: each rank computes its 1/world of every micro-batch's rows; the gradients are averaged
  // over the ranks during the step's last backward, a layer at a time on a second stream (overlapped with
  // the backward of the layers below), so every rank applies the same AdamW step to the same parameters.
  Communicator* comm = nullptr;
  // ZeRO stage 1: each rank keeps the AdamW moments of its 1/world of the parameters only, updates that
  // slice, and the slices are broadcast to every rank after the step (moments memory / world).
  bool shard_optimizer = false;
};

std::unique_ptr<StepBackend> make_device_step_backend(DeviceTrainerOptions options);

}  // namespace tl::cuda
