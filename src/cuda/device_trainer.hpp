// The CUDA step backend (train/step_backend.hpp): the Trainer's step on one GPU, or on several through
// NCCL data parallelism (one process per GPU; cuda/nccl.hpp). Parameters, gradients and AdamW moments live
// on the device in the flat Model::params layout; masks are one bit per parameter.
#pragma once
#include <memory>

#include "cuda/device_model.hpp"
#include "train/step_backend.hpp"

namespace tl::cuda {

class Communicator;  // cuda/nccl.hpp

struct DeviceTrainerOptions {
  DeviceModelOptions model;      // quantizers, max_tokens (one micro-batch), recomputation, device
  Communicator* comm = nullptr;  // data parallel: gradients all-reduced (averaged) over the ranks
};

std::unique_ptr<train::StepBackend> make_device_step_backend(DeviceTrainerOptions options);

}  // namespace tl::cuda
