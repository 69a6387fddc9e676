// The one file that knows whether this binary has the CUDA backend (backends.hpp). With it, each factory
// builds the GPU's backend; without it, asking for the GPU is a clear error and the CPU needs no backend.
#include "workflow/backends.hpp"

#include <algorithm>
#include <memory>

#include "core/error.hpp"
#if TERNLAB_HAVE_CUDA
#include "cuda/criticality_runner.hpp"
#include "cuda/device_model.hpp"
#include "cuda/device_trainer.hpp"
#include "cuda/inference.hpp"
#include "cuda/nccl.hpp"
#include "cuda/profile.hpp"
#endif

namespace tl {

#if TERNLAB_HAVE_CUDA

bool cuda_built() {
  return true;
}

void require_device(Device d) {
  if (d == Device::Cpu) return;
  std::string why;
  TL_CHECK(cuda::available(&why), "--device cuda: no usable CUDA device: {}", why);
}

std::string describe_device(Device d) {
  if (d == Device::Cpu) return "cpu";
  return cuda::device_description(process_group().gpu);
}

cuda::Communicator* process_communicator() {
  const ProcessGroup& g = process_group();
  if (g.world == 1) return nullptr;
  static std::unique_ptr<cuda::Communicator> comm = [&] {
    cuda::RankInfo r;
    r.rank = g.rank;
    r.world = g.world;
    r.gpu = g.gpu;
    r.id_file = g.id_file;
    return std::make_unique<cuda::Communicator>(r);
  }();
  return comm.get();
}

std::unique_ptr<StepBackend> make_step_backend(Device device, const StepBackendRequest& request) {
  if (device == Device::Cpu) return nullptr;
  require_device(device);
  const ProcessGroup& g = process_group();
  cuda::DeviceTrainerOptions d;
  d.model.quant = request.quant;
  d.comm = process_communicator();
  d.shard_optimizer = request.shard_optimizer && g.world > 1;
  d.model.device = g.gpu;
  d.model.max_tokens = request.max_tokens;
  d.model.recompute = request.recompute;
  return cuda::make_device_step_backend(d);
}

PositionLossFn make_gpu_position_losses(const Model& model, int64_t max_tokens) {
  require_device(Device::Cuda);
  // CpuModel's quantizers; the codes are computed once for all windows scored through this function
  cuda::DeviceModelOptions o = cuda::inference_options(model, max_tokens, "ppl");
  o.device = process_group().gpu;
  auto gpu = std::make_shared<cuda::DeviceModel>(model, o);
  return [gpu](std::span<const int32_t> toks, std::span<const int32_t> targets, int64_t B, int64_t T,
               std::vector<float>& out) {
    gpu->forward(toks, targets, B, T);
    out = gpu->losses();
  };
}

BlockRunnerFactory make_block_runners(Device device, int64_t longest_text) {
  if (device == Device::Cpu) return {};
  require_device(device);
  return cuda::device_block_runners(longest_text, process_group().gpu);
}

bool gpu_step_profile_enabled() {
  return cuda::prof::enabled();
}
void gpu_step_profile_reset() {
  cuda::prof::reset();
}
std::string gpu_step_profile_report(int steps) {
  return cuda::prof::report(steps);
}

#else  // built without CUDA

bool cuda_built() {
  return false;
}

void require_device(Device d) {
  if (d == Device::Cpu) return;
  fail("--device cuda: this ternlab was built without the CUDA backend (configure with -DTERNLAB_CUDA=ON)");
}

std::string describe_device(Device d) {
  require_device(d);
  return "cpu";
}

cuda::Communicator* process_communicator() {
  return nullptr;
}

std::unique_ptr<StepBackend> make_step_backend(Device device, const StepBackendRequest&) {
  require_device(device);
  return nullptr;
}

PositionLossFn make_gpu_position_losses(const Model&, int64_t) {
  require_device(Device::Cuda);
  return {};
}

BlockRunnerFactory make_block_runners(Device device, int64_t) {
  require_device(device);
  return {};
}

bool gpu_step_profile_enabled() {
  return false;
}
void gpu_step_profile_reset() {}
std::string gpu_step_profile_report(int) {
  return {};
}

#endif

}  // namespace tl
