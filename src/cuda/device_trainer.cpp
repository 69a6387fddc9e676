#include "cuda/device_trainer.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "cuda/check.hpp"
#include "cuda/nccl.hpp"
#include "cuda/optim.hpp"
#include "cuda/profile.hpp"
#include "model/backend.hpp"

namespace tl::cuda {

namespace {

// A device buffer that frees itself.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { resize(n); }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void resize(size_t n) {
    reset();
    if (n == 0) return;
    const cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T));
    if (e != cudaSuccess)
      fail("CUDA: cannot allocate {:.2f} GiB on the device: {}", double(n * sizeof(T)) / (1 << 30),
           cudaGetErrorString(e));
    n_ = n;
  }
  void reset() {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

class DeviceStepBackend final : public StepBackend {
 public:
  explicit DeviceStepBackend(DeviceTrainerOptions opt) : opt_(std::move(opt)) {
    world_ = opt_.comm ? opt_.comm->world() : 1;
    rank_ = opt_.comm ? opt_.comm->rank() : 0;
    TL_CHECK(!opt_.shard_optimizer || opt_.comm, "cuda trainer: optimizer sharding needs a communicator");
  }

  void start(const Model& model, std::span<const float> m, std::span<const float> v,
             const std::vector<std::pair<size_t, const TensorMask*>>& masks) override {
    if (!net_) {
      net_ = std::make_unique<DeviceModel>(model, opt_.model);
      n_ = net_->num_params();
      stream_ = static_cast<cudaStream_t>(net_->stream());
      // this rank's slice of the AdamW state: all of it, or (sharded) a range starting on a mask word
      shard_lo_ = 0;
      shard_hi_ = n_;
      if (opt_.shard_optimizer) {
        const size_t per = (n_ + size_t(world_) - 1) / size_t(world_);
        const size_t step = (per + 31) / 32 * 32;
        shard_lo_ = std::min(n_, size_t(rank_) * step);
        shard_hi_ = std::min(n_, shard_lo_ + step);
        shard_step_ = step;
      }
      m_.resize(shard_hi_ - shard_lo_);
      v_.resize(shard_hi_ - shard_lo_);
      TL_CUDA_CHECK(cudaMalloc(&scratch_, 16 + kNormPartials * sizeof(double)));
      if (opt_.comm) {
        TL_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
        TL_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
        TL_CUDA_CHECK(cudaEventCreateWithFlags(&reduced_, cudaEventDisableTiming));
      }
    } else {
      net_->upload_params(model.params);
    }
    TL_CHECK(m.size() == n_ && v.size() == n_ && model.params.size() == n_,
             "cuda trainer: {} parameters, {} / {} moments, expected {}", model.params.size(), m.size(),
             v.size(), n_);
    const size_t k = shard_hi_ - shard_lo_;
    if (k) {
      TL_CUDA_CHECK(cudaMemcpyAsync(m_.get(), m.data() + shard_lo_, k * sizeof(float), cudaMemcpyHostToDevice,
                                    stream_));
      TL_CUDA_CHECK(cudaMemcpyAsync(v_.get(), v.data() + shard_lo_, k * sizeof(float), cudaMemcpyHostToDevice,
                                    stream_));
    }
    keep_.reset();
    if (!masks.empty()) {
      std::vector<uint32_t> bits((n_ + 31) / 32, 0xffffffffu);
      for (const auto& [off, mk] : masks)
        for (size_t i = 0; i < mk->keep.size(); ++i)
          if (!mk->keep[i]) bits[(off + i) >> 5] &= ~(1u << ((off + i) & 31));
      keep_.resize(bits.size());
      TL_CUDA_CHECK(cudaMemcpyAsync(keep_.get(), bits.data(), bits.size() * sizeof(uint32_t),
                                    cudaMemcpyHostToDevice, stream_));
    }
    TL_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host vectors may go away
  }

  void zero_grad() override { net_->zero_grad(); }

  double forward_backward(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B,
                          int64_t T, bool last) override {
    if (!opt_.comm) return net_->forward_backward(tokens, targets, B, T);
    TL_CHECK(B % world_ == 0, "data parallel: a micro-batch of {} sequences does not split over {} GPUs", B,
             world_);
    const int64_t b = B / world_;
    const size_t off = size_t(rank_ * b * T), len = size_t(b * T);
    if (last) {  // average each layer's gradients as soon as its backward is queued
      float* g = net_->grads_device();
      net_->set_grads_ready_hook([this, g](size_t begin, size_t end) {
        TL_CUDA_CHECK(cudaEventRecord(ready_, stream_));
        TL_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, ready_, 0));
        opt_.comm->all_reduce_mean(g + begin, end - begin, comm_stream_);
      });
    }
    double loss;
    try {
      loss = net_->forward_backward(tokens.subspan(off, len), targets.subspan(off, len), b, T);
    } catch (...) {
      net_->set_grads_ready_hook({});
      throw;
    }
    net_->set_grads_ready_hook({});
    if (last) {
      TL_CUDA_CHECK(cudaEventRecord(reduced_, comm_stream_));
      reduce_pending_ = true;
    }
    // every chunk has the same number of targets, so the mean of the ranks' means is the batch mean; on the
    // communication stream, after the gradients (one order of NCCL calls on every rank)
    return opt_.comm->all_reduce_mean(loss, comm_stream_);
  }

  double finish_gradients(float scale, double clip, ParamPrecision precision) override {
    float* g = net_->grads_device();
    if (opt_.comm) {
      if (reduce_pending_)
        TL_CUDA_CHECK(cudaStreamWaitEvent(stream_, reduced_, 0));
      else
        opt_.comm->all_reduce_mean(g, n_, stream_);  // no backward said it was the last
      reduce_pending_ = false;
    }
    TL_PROF(stream_, "wait: gradient all-reduce");
    auto* sumsq = reinterpret_cast<double*>(scratch_);
    auto* bad = reinterpret_cast<int*>(static_cast<char*>(scratch_) + 8);
    TL_CUDA_CHECK(cudaMemsetAsync(scratch_, 0, 16, stream_));
    auto* partials = reinterpret_cast<double*>(static_cast<char*>(scratch_) + 16);
    // the norm only: the AdamW step applies the finishing (and clipping) as it reads each gradient
    launch_finish_grads(g, n_, scale, keep_.get(), precision == ParamPrecision::Bf16, partials, sumsq, bad,
                        stream_, /*write=*/false);
    finish_ = GradFinish{scale, keep_.get() != nullptr, precision == ParamPrecision::Bf16, 1.0f};
    TL_CUDA_CHECK_LAUNCH();
    TL_PROF(stream_, "finish grads + norm");
    char host[16];
    TL_CUDA_CHECK(cudaMemcpyAsync(host, scratch_, 16, cudaMemcpyDeviceToHost, stream_));
    TL_CUDA_CHECK(cudaStreamSynchronize(stream_));
    double ss;
    int nonfinite;
    std::memcpy(&ss, host, 8);
    std::memcpy(&nonfinite, host + 8, 4);
    const double norm = std::sqrt(ss);
    if (nonfinite || !std::isfinite(norm)) return std::isfinite(norm) ? NAN : norm;
    if (clip > 0) {  // clip_grad_norm's coefficient, in double, applied as fp32
      const double coef = clip / (norm + 1e-6);
      if (coef < 1) finish_.clip = float(coef);  // clip_grad_norm's coefficient, applied by the step
    }
    return norm;
  }

  void adamw_step(const AdamWConfig& c, ParamPrecision precision, int64_t t, double lr) override {
    const double bc1 = 1 - std::pow(c.beta1, double(t));
    const double bc2 = 1 - std::pow(c.beta2, double(t));
    AdamWScalars s{};
    s.decay = float(1 - lr * c.weight_decay);
    s.w1 = float(1 - c.beta1);
    s.b2 = float(c.beta2);
    s.w2 = float(1 - c.beta2);
    s.step_size = float(lr / bc1);
    s.bc2_sqrt = float(std::sqrt(bc2));
    s.eps = float(c.eps);
    float* p = net_->params_device();
    const size_t k = shard_hi_ - shard_lo_;
    if (k)
      launch_adamw(p + shard_lo_, net_->grads_device() + shard_lo_, m_.get(), v_.get(), k, s,
                   precision == ParamPrecision::Bf16, keep_.get() ? keep_.get() + shard_lo_ / 32 : nullptr,
                   stream_, finish_);
    TL_CUDA_CHECK_LAUNCH();
    TL_PROF(stream_, "adamw");
    if (opt_.shard_optimizer) {  // every rank gets every slice of the updated parameters
      TL_CUDA_CHECK(cudaEventRecord(ready_, stream_));
      TL_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, ready_, 0));
      opt_.comm->group_start();
      for (int r = 0; r < world_; ++r) {
        const size_t lo = std::min(n_, size_t(r) * shard_step_), hi = std::min(n_, lo + shard_step_);
        if (hi > lo) opt_.comm->broadcast(p + lo, p + lo, hi - lo, r, comm_stream_);
      }
      opt_.comm->group_end();
      TL_CUDA_CHECK(cudaEventRecord(reduced_, comm_stream_));
      TL_CUDA_CHECK(cudaStreamWaitEvent(stream_, reduced_, 0));
      TL_PROF(stream_, "parameter broadcast (sharded)");
    }
  }

  // With a sharded optimizer every rank must call this (the moments are gathered through NCCL).
  void download(std::span<float> params, std::span<float> m, std::span<float> v) const override {
    TL_CHECK(params.size() == n_ && m.size() == n_ && v.size() == n_, "cuda trainer: download of {} values",
             params.size());
    net_->download_params(params);
    if (!opt_.shard_optimizer) {
      TL_CUDA_CHECK(cudaMemcpyAsync(m.data(), m_.get(), n_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
      TL_CUDA_CHECK(cudaMemcpyAsync(v.data(), v_.get(), n_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
      TL_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return;
    }
    // each rank's slices in turn, through a staging buffer of at most one slice
    DeviceBuffer<float> stage(shard_step_);
    TL_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (int r = 0; r < world_; ++r) {
      const size_t lo = std::min(n_, size_t(r) * shard_step_), hi = std::min(n_, lo + shard_step_);
      if (hi == lo) continue;
      for (auto [src, dst] : {std::pair{m_.get(), m.data()}, std::pair{v_.get(), v.data()}}) {
        opt_.comm->broadcast(src, stage.get(), hi - lo, r, comm_stream_);
        TL_CUDA_CHECK(cudaMemcpyAsync(dst + lo, stage.get(), (hi - lo) * sizeof(float),
                                      cudaMemcpyDeviceToHost, comm_stream_));
        TL_CUDA_CHECK(cudaStreamSynchronize(comm_stream_));
      }
    }
  }

  void eval_losses(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B, int64_t T,
                   std::vector<float>& losses) override {
    net_->forward(tokens, targets, B, T);
    losses = net_->losses();
  }

  void synchronize() override {
    TL_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (comm_stream_) TL_CUDA_CHECK(cudaStreamSynchronize(comm_stream_));
  }

  size_t memory_bytes() const override {
    return net_->memory_bytes() + (m_.size() + v_.size()) * sizeof(float) + keep_.size() * sizeof(uint32_t) +
           16 + kNormPartials * sizeof(double);
  }

  ~DeviceStepBackend() override {
    if (scratch_) cudaFree(scratch_);
    if (ready_) cudaEventDestroy(ready_);
    if (reduced_) cudaEventDestroy(reduced_);
    if (comm_stream_) cudaStreamDestroy(comm_stream_);
  }

 private:
  DeviceTrainerOptions opt_;
  int world_ = 1, rank_ = 0;
  std::unique_ptr<DeviceModel> net_;
  size_t n_ = 0;
  size_t shard_lo_ = 0, shard_hi_ = 0, shard_step_ = 0;  // this rank's AdamW slice; the slice length
  cudaStream_t stream_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;  // NCCL: gradient averaging, parameter broadcasts
  cudaEvent_t ready_ = nullptr, reduced_ = nullptr;
  bool reduce_pending_ = false;  // the last backward queued the gradient averaging on comm_stream_
  GradFinish finish_;  // what the last finish_gradients left for the AdamW step to apply to each gradient
  DeviceBuffer<float> m_, v_;  // this rank's slice of the moments (all of them unless sharded)
  DeviceBuffer<uint32_t> keep_;
  void* scratch_ = nullptr;  // the norm's sum of squares (double) and the non-finite flag (int)
};

}  // namespace

std::unique_ptr<StepBackend> make_device_step_backend(DeviceTrainerOptions options) {
  return std::make_unique<DeviceStepBackend>(std::move(options));
}

}  // namespace tl::cuda
