#include "cuda/criticality_runner.hpp"

#include <memory>

#include "core/error.hpp"
#include "cuda/inference.hpp"

namespace tl::cuda {

namespace {

DeviceModelOptions runner_options(const Model& model, int64_t max_tokens, int device) {
  DeviceModelOptions o = inference_options(model, max_tokens, "criticality");
  o.device = device;
  return o;
}

}  // namespace

DeviceBlockRunner::DeviceBlockRunner(const Model& model, int64_t max_tokens, int device)
    : gpu_(model, runner_options(model, max_tokens, device)) {
  const ParamView& v = model.view("model.embed_tokens.weight");
  TL_CHECK(v.numel == size_t(model.config.vocab_size * model.config.hidden_size),
           "criticality: the embedding table has {} elements, the config says {} x {}", v.numel,
           model.config.vocab_size, model.config.hidden_size);
  embed_ = model.params.data() + v.offset;
}

void DeviceBlockRunner::run_blocks(const float* x, int64_t T, const AfterBlock& after_block) {
  TL_CHECK(x != nullptr, "criticality: no input embeddings");
  TL_CHECK(T >= 1 && T <= config().max_position_embeddings,
           "criticality: T = {} is outside [1, max_position_embeddings = {}]", T,
           config().max_position_embeddings);
  const int64_t L = config().num_hidden_layers;
  stream_.assign(x, x + T * config().hidden_size);
  for (int64_t l = 0; l < L; ++l) {
    gpu_.block_forward(l, stream_.data(), T, stream_.data());  // in place: block l's output
    if (!after_block(l, stream_.data())) return;
  }
}

BlockRunnerFactory device_block_runners(int64_t max_tokens, int device) {
  return [max_tokens, device](const Model& model) -> std::unique_ptr<BlockRunner> {
    return std::make_unique<DeviceBlockRunner>(model, max_tokens, device);
  };
}

}  // namespace tl::cuda
