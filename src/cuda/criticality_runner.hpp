// The criticality measurements' decoder blocks on the GPU (model/backend.hpp's BlockRunner): the
// inference DeviceModel (CpuModel's quantizers, cuda/inference.hpp), one block at a time, the residual
// stream crossing to the host after each block (the measurements and the FTLE's renormalisation are host
// code). Results equal the CPU's up to floating-point summation order (tests/cuda/test_criticality.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "cuda/device_model.hpp"
#include "model/backend.hpp"

namespace tl::cuda {

class DeviceBlockRunner final : public BlockRunner {
 public:
  // Uploads `model` (which must outlive the runner: the embedding table is read from it on the host).
  // max_tokens: the longest sequence to be run. Errors: as DeviceModel and inference_options.
  DeviceBlockRunner(const Model& model, int64_t max_tokens, int device = 0);
  const BitNetConfig& config() const override { return gpu_.config(); }
  const float* embedding_rows() const override { return embed_; }
  void run_blocks(const float* x, int64_t T, const AfterBlock& after_block) override;
  DeviceModel& device_model() { return gpu_; }

 private:
  DeviceModel gpu_;
  const float* embed_;
  std::vector<float> stream_;  // (T,C) the residual stream between blocks
};

// A factory for run_criticality_with_controls: a DeviceBlockRunner of each (changed) model.
BlockRunnerFactory device_block_runners(int64_t max_tokens, int device = 0);

}  // namespace tl::cuda
