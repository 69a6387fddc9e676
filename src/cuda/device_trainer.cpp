#include "cuda/device_trainer.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "cuda/check.hpp"
#include "cuda/nccl.hpp"
#include "cuda/optim.hpp"
#include "train/trainer.hpp"

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

class DeviceStepBackend final : public train::StepBackend {
 public:
  explicit DeviceStepBackend(DeviceTrainerOptions opt) : opt_(std::move(opt)) {}

  void start(const Model& model, std::span<const float> m, std::span<const float> v,
             const std::vector<std::pair<size_t, const train::TensorMask*>>& masks) override {
    if (!net_) {
      net_ = std::make_unique<DeviceModel>(model, opt_.model);
      n_ = net_->num_params();
      m_.resize(n_);
      v_.resize(n_);
      TL_CUDA_CHECK(cudaMalloc(&scratch_, 16 + kNormPartials * sizeof(double)));
    } else {
      net_->upload_params(model.params);
    }
    TL_CHECK(m.size() == n_ && v.size() == n_ && model.params.size() == n_,
             "cuda trainer: {} parameters, {} / {} moments, expected {}", model.params.size(), m.size(),
             v.size(), n_);
    stream_ = static_cast<cudaStream_t>(net_->stream());
    TL_CUDA_CHECK(cudaMemcpyAsync(m_.get(), m.data(), n_ * sizeof(float), cudaMemcpyHostToDevice, stream_));
    TL_CUDA_CHECK(cudaMemcpyAsync(v_.get(), v.data(), n_ * sizeof(float), cudaMemcpyHostToDevice, stream_));
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
                          int64_t T) override {
    return net_->forward_backward(tokens, targets, B, T);  // backward skipped when the loss is not finite
  }

  double finish_gradients(float scale, double clip, ParamPrecision precision) override {
    float* g = net_->grads_device();
    if (opt_.comm) opt_.comm->all_reduce_mean(g, n_, stream_);  // data parallel: the global batch's mean
    auto* sumsq = reinterpret_cast<double*>(scratch_);
    auto* bad = reinterpret_cast<int*>(static_cast<char*>(scratch_) + 8);
    TL_CUDA_CHECK(cudaMemsetAsync(scratch_, 0, 16, stream_));
    auto* partials = reinterpret_cast<double*>(static_cast<char*>(scratch_) + 16);
    launch_finish_grads(g, n_, scale, keep_.get(), precision == ParamPrecision::Bf16, partials, sumsq, bad,
                        stream_);
    TL_CUDA_CHECK_LAUNCH();
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
      if (coef < 1) {
        launch_scale(g, n_, float(coef), stream_);
        TL_CUDA_CHECK_LAUNCH();
      }
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
    launch_adamw(net_->params_device(), net_->grads_device(), m_.get(), v_.get(), n_, s,
                 precision == ParamPrecision::Bf16, keep_.get(), stream_);
    TL_CUDA_CHECK_LAUNCH();
  }

  void download(std::span<float> params, std::span<float> m, std::span<float> v) const override {
    TL_CHECK(params.size() == n_ && m.size() == n_ && v.size() == n_, "cuda trainer: download of {} values",
             params.size());
    net_->download_params(params);
    TL_CUDA_CHECK(cudaMemcpyAsync(m.data(), m_.get(), n_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    TL_CUDA_CHECK(cudaMemcpyAsync(v.data(), v_.get(), n_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    TL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void eval_losses(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B, int64_t T,
                   std::vector<float>& losses) override {
    net_->forward(tokens, targets, B, T);
    losses = net_->losses();
  }

  void synchronize() override { TL_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  size_t memory_bytes() const override {
    return net_->memory_bytes() + (m_.size() + v_.size()) * sizeof(float) + keep_.size() * sizeof(uint32_t) +
           16 + kNormPartials * sizeof(double);
  }

  ~DeviceStepBackend() override {
    if (scratch_) cudaFree(scratch_);
  }

 private:
  DeviceTrainerOptions opt_;
  std::unique_ptr<DeviceModel> net_;
  size_t n_ = 0;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer<float> m_, v_;
  DeviceBuffer<uint32_t> keep_;
  void* scratch_ = nullptr;  // the norm's sum of squares (double) and the non-finite flag (int)
};

}  // namespace

std::unique_ptr<train::StepBackend> make_device_step_backend(DeviceTrainerOptions options) {
  return std::make_unique<DeviceStepBackend>(std::move(options));
}

}  // namespace tl::cuda
