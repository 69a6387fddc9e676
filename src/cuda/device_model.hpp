// The CUDA backend's model: the CPU reference's train::TrainModel (train/train_model.hpp) on one GPU. Same
// architecture, same quantizers, same flat parameter and gradient layout (Model::params offsets), so a host
// AdamW, a device AdamW or an NCCL all-reduce all see one contiguous buffer.
//
// Numerics (stated tolerances are in tests/cuda):
//   - parameters: an fp32 master copy on the device (uploaded from / downloaded to Model::params);
//   - quantized linears: ActQuant codes (integers in [-128, 127]) and ternary weight codes are exact in
//     bf16, so the forward is a bf16 tensor-core GEMM with fp32 accumulation whose integer sums are exact
//     (|sum| <= 127 * in_features < 2^24); the scales alpha / s are applied after, in fp32;
//   - backward (straight-through estimator): bf16 GEMM operands, fp32 accumulation, fp32 gradients;
//   - RMSNorm, RoPE, softmax, ReLU², cross-entropy: fp32 (RMSNorm's sum of squares as the CPU's);
//   - attention: causal, grouped-query, the log-sum-exp saved instead of probabilities (memory linear in T);
//   - weight quantizer off / ActQuant off: the forward GEMMs take bf16-rounded real values instead (looser);
//   - LM head (not quantized): fp32 operands on TF32 tensor cores (10-bit mantissa), fp32 logits and logit
//     gradients; applied a chunk of rows at a time, so logits for the whole batch never exist (logits() keeps
//     them only when asked, for tests); backward recomputes each chunk's logits;
//   - losses: logsumexp with max subtraction, the sum of exponentials in double.
//
// This header has no CUDA types so host code built by the C++ compiler can include it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/backend.hpp"
#include "model/model.hpp"

namespace tl::cuda {

// Whether a CUDA device can be used here; when not, `why` (if given) gets the reason (no driver, no device).
bool available(std::string* why = nullptr);
// e.g. "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)". Errors: no usable device.
std::string device_description(int device = 0);

struct DeviceModelOptions {
  TrainOptions quant;        // weight quantizer (absmean / fixed / rpt-fixed / off), ActQuant on or off
  int64_t max_tokens = 0;    // largest B*T of any forward; scratch is sized for it (must be >= 1)
  bool keep_logits = false;  // keep the (B*T, V) fp32 logits of the last forward (tests, small models)
  // Evaluation: every layer's weight statistics and ternary codes are computed by the first forward and kept
  // (L x one layer's codes in bf16) until upload_params() or params_device() says the weights changed.
  bool constant_weights = false;
  bool recompute = false;  // activation recomputation: save only layer inputs (the residual stream) and
                           // one layer's activations, redo each layer's forward in backward
  int device = 0;
};

class DeviceModel {
 public:
  // Uploads model.params (fp32) to the device. The Model is read only here (and by fixed scales); later
  // changes of it are not seen: call upload_params. Errors: no device, out of device memory (the message
  // says how much was asked for), an invalid config, Fixed/RptFixed without fixed scales.
  DeviceModel(const Model& model, DeviceModelOptions options);
  ~DeviceModel();
  DeviceModel(const DeviceModel&) = delete;
  DeviceModel& operator=(const DeviceModel&) = delete;

  const BitNetConfig& config() const;
  size_t num_params() const;

  // As TrainModel::forward: tokens and targets (B*T, host), targets -1 where not counted; returns the mean
  // loss over counted targets. Targets may be empty (then NaN is returned and backward() is refused).
  // Errors as TrainModel (B*T > max_tokens too).
  double forward(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B, int64_t T);
  // Per-position losses of the last forward (B*T), 0 where the target is -1 (each is logsumexp(row) -
  // row[target], from fp32 logits, the sum of exponentials in double).
  std::vector<float> losses() const;
  // The mean loss and the number of counted targets of the last forward (NaN / 0 without targets).
  double loss() const;
  int64_t num_targets() const;
  // Logits of the last forward (B*T, V); only with keep_logits.
  std::vector<float> logits() const;
  // Accumulates d(mean loss)/d(params) into the device gradients (as TrainModel::backward). The parameters
  // must not change between forward() and backward(). Without keep_logits the LM head's logits are
  // recomputed a chunk of rows at a time (one extra (rows x C x V) GEMM per chunk); the backward scratch is
  // allocated by the first call. Errors: no forward with targets.
  void backward();
  // forward() then backward() in one pass (targets required): the loss and the logit gradients come from the
  // same logits chunk, saving backward's recomputation of the LM head. Returns the mean loss.
  double forward_backward(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B,
                          int64_t T);
  void zero_grad();
  // Weight scale alpha of each linear in the last forward ((L, 7), kLinearNames order).
  std::vector<float> weight_scales() const;

  // The flat fp32 device buffers (num_params() floats each): for the optimizer and NCCL.
  float* params_device();
  float* grads_device();
  void upload_params(std::span<const float> host);
  void download_params(std::span<float> host) const;
  void download_grads(std::span<float> host) const;
  // Data parallelism: while backward is being queued, hook(begin, end) is called each time the gradients
  // [begin, end) of the flat layout are final for this backward (the work producing them is queued on
  // stream()): after each layer, last to first, then the embedding. The ranges cover [0, num_params()) once
  // each (one call with all of it when the layout is not embedding | layers | the rest). Empty: no calls.
  using GradsReadyHook = std::function<void(size_t begin, size_t end)>;
  void set_grads_ready_hook(GradsReadyHook hook);
  // The CUDA stream every kernel of this model runs on (a cudaStream_t).
  void* stream() const;

  // Peak device memory allocated by this object (bytes): parameters, gradients, saved activations, scratch
  // (the backward's from its first call), the cuBLASLt workspace.
  size_t memory_bytes() const;

  // Inference of one decoder block l on one sequence (batch 1): x_in (T,C) is the residual stream entering
  // block l (host), x_out (T,C) the stream leaving it (host); both may be the same array. The forward's
  // numerics (see above); with constant_weights the codes of all layers are computed by the first call. It
  // overwrites the saved activations: backward() needs a new forward() afterwards. Errors: l outside
  // [0, L), T < 1, T > max_tokens or max_position_embeddings.
  void block_forward(int64_t l, const float* x_in, int64_t T, float* x_out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tl::cuda
