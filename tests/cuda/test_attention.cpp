// The two CUDA attention paths agree: the batched-GEMM path (short sequences; chunks of sequences through a
// transient scratch) against the O(T) kernels, forward (output, log-sum-exp) and backward (dq, dk, dv), for
// grouped-query and plain multi-head shapes, odd lengths, and a scratch that forces several chunks. Both
// compute in fp32 with other summation orders: relative L2 <= 1e-5 (what fp32 reordering leaves).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "cuda/check.hpp"
#include "cuda/device_model.hpp"
#include "cuda/gemm.hpp"
#include "cuda/kernels.hpp"
#include "cuda_test_util.hpp"

namespace tl::cuda {
namespace {

using cuda_test::randn;
using cuda_test::rel_l2;

struct Buf {
  float* p = nullptr;
  size_t n = 0;
  explicit Buf(size_t count) : n(count) {
    TL_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(float)));
  }
  Buf(const std::vector<float>& h) : Buf(h.size()) {
    TL_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  }
  ~Buf() { cudaFree(p); }
  std::vector<float> host() const {
    std::vector<float> h(n);
    TL_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
  }
};

struct Shape {
  int64_t B, T, NH, NKV, hd;
};

void compare(const Shape& sh, int64_t scratch_sequences) {
  const int64_t N = sh.B * sh.T, Q = sh.NH * sh.hd, W = Q + 2 * sh.NKV * sh.hd;
  cudaStream_t stream;
  TL_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    Gemm gemm(stream);
    const Buf qkv(randn(size_t(N * W), 1, 1.5f)), dout(randn(size_t(N * Q), 2, 1.0f));
    Buf out_k(size_t(N * Q)), lse_k(size_t(N * sh.NH)), out_g(size_t(N * Q)), lse_g(size_t(N * sh.NH));
    Buf dqkv_k(size_t(N * W)), dqkv_g(size_t(N * W)), D(size_t(N * sh.NH));
    const size_t per = k::attention_gemm_bytes_per_sequence(sh.T, sh.NH, sh.NKV, sh.hd);
    Buf scratch(per * size_t(scratch_sequences) / sizeof(float));
    k::attention_forward(out_k.p, lse_k.p, qkv.p, sh.B, sh.T, sh.NH, sh.NKV, sh.hd, stream);
    ASSERT_TRUE(k::attention_forward_gemm(gemm, scratch.p, scratch.n * sizeof(float), out_g.p, lse_g.p, qkv.p,
                                          sh.B, sh.T, sh.NH, sh.NKV, sh.hd, stream));
    k::attention_backward(dqkv_k.p, D.p, dout.p, out_k.p, qkv.p, lse_k.p, sh.B, sh.T, sh.NH, sh.NKV, sh.hd,
                          stream);
    ASSERT_TRUE(k::attention_backward_gemm(gemm, scratch.p, scratch.n * sizeof(float), dqkv_g.p, D.p, dout.p,
                                           out_g.p, qkv.p, lse_g.p, sh.B, sh.T, sh.NH, sh.NKV, sh.hd,
                                           stream));
    TL_CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::string what = fmt::format("B{} T{} heads {}/{} hd{}", sh.B, sh.T, sh.NH, sh.NKV, sh.hd);
    EXPECT_LT(rel_l2(out_g.host(), out_k.host()), 1e-5) << what;
    EXPECT_LT(rel_l2(lse_g.host(), lse_k.host()), 1e-6) << what;
    const auto a = dqkv_g.host(), b = dqkv_k.host();
    for (int part = 0; part < 3; ++part) {  // q, k, v columns separately
      const int64_t c0 = part == 0 ? 0 : Q + (part - 1) * sh.NKV * sh.hd, w = part == 0 ? Q : sh.NKV * sh.hd;
      std::vector<float> x, y;
      for (int64_t r = 0; r < N; ++r)
        for (int64_t c = c0; c < c0 + w; ++c) {
          x.push_back(a[size_t(r * W + c)]);
          y.push_back(b[size_t(r * W + c)]);
        }
      EXPECT_LT(rel_l2(x, y), 1e-5) << what << " d"
                                    << "qkv"[part];
    }
    // one sequence that does not fit: refused, nothing done
    EXPECT_FALSE(k::attention_forward_gemm(gemm, scratch.p, per - 4, out_g.p, lse_g.p, qkv.p, sh.B, sh.T,
                                           sh.NH, sh.NKV, sh.hd, stream));
  }
  TL_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST(CudaAttention, GemmPathMatchesTheKernels) {
  SKIP_WITHOUT_GPU();
  compare({3, 37, 4, 2, 32}, 3);     // grouped query, odd length, one chunk
  compare({5, 37, 4, 2, 32}, 2);     // three chunks
  compare({2, 128, 20, 5, 128}, 1);  // the 2b4t head shape at the study's length, a chunk per sequence
  compare({2, 50, 3, 3, 64}, 2);     // multi-head, no grouping
}

}  // namespace
}  // namespace tl::cuda
