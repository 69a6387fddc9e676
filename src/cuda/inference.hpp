// The DeviceModel that computes what the CPU reference (CpuModel, cpu/forward.hpp) computes: one rule for
// the GPU paths that must agree with it (ppl, criticality).
#pragma once
#include <cstdint>
#include <string_view>

#include "cuda/device_model.hpp"
#include "model/model.hpp"

namespace tl::cuda {

// CpuModel's quantizers: every linear with its fixed scale where the checkpoint has them (packed
// checkpoints), absmean otherwise; ActQuant on; the codes computed once (constant_weights) since inference
// does not change the weights. max_tokens as DeviceModelOptions. Errors (`command` names the subcommand):
// fixed scales on some linears only (CpuModel mixes the two rules per linear; the GPU has one for all).
DeviceModelOptions inference_options(const Model& model, int64_t max_tokens, std::string_view command);

}  // namespace tl::cuda
