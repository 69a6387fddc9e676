#include "cuda/gemm.hpp"

#include <cublasLt.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "core/error.hpp"
#include "cuda/check.hpp"

namespace tl::cuda {

void raise_error(const char* lib, const char* call, const char* message, const char* file, int line) {
  fail("{} error in {} at {}:{}: {}", lib, call, file, line, message ? message : "(no message)");
}

namespace {

// The largest power of two (up to 256) dividing the address: cuBLASLt's heuristic must know it.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al /= 2;
  return al;
}

using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, uint32_t,
                       uint32_t, uint32_t, int64_t, int64_t, int64_t, int64_t>;

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

}  // namespace

struct Gemm::Impl {
  cudaStream_t stream = nullptr;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t ws_bytes = 0;
  std::map<Key, Plan> plans;

  ~Impl() {
    for (auto& [k, p] : plans) {
      if (p.desc) cublasLtMatmulDescDestroy(p.desc);
      if (p.a) cublasLtMatrixLayoutDestroy(p.a);
      if (p.b) cublasLtMatrixLayoutDestroy(p.b);
      if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    }
    if (workspace) cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }
};

Gemm::Gemm(cudaStream_t stream, size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  impl_->stream = stream;
  TL_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  if (workspace_bytes > 0) {
    TL_CUDA_CHECK(cudaMalloc(&impl_->workspace, workspace_bytes));
    impl_->ws_bytes = workspace_bytes;
  }
}

Gemm::~Gemm() = default;

size_t Gemm::workspace_bytes() const {
  return impl_->ws_bytes;
}

void Gemm::matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
                  const void* B, int64_t ldb, float beta, void* C, int64_t ldc, OutType ctype, InType itype,
                  Batch batch) {
  if (M <= 0 || N <= 0 || batch.count <= 0) return;
  TL_CHECK(K > 0, "gemm: K must be positive, found {}", K);
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS's first operand is our B (the
  // column-major view of row-major B is B^T), its second our A; the result is C^T (N x M), ld ldc.
  uint32_t al_a = alignment_of(A), al_b = alignment_of(B), al_c = alignment_of(C);
  if (batch.count > 1) {  // every product's operands must be as aligned as the heuristic is told
    const size_t in_size = itype == InType::BF16 ? 2 : 4, out_size = ctype == OutType::F32 ? 4 : 2;
    auto stride_alignment = [](int64_t stride, size_t size) {
      return stride == 0 ? 256u : alignment_of(reinterpret_cast<const void*>(uintptr_t(stride) * size));
    };
    al_a = std::min(al_a, stride_alignment(batch.stride_a, in_size));
    al_b = std::min(al_b, stride_alignment(batch.stride_b, in_size));
    al_c = std::min(al_c, stride_alignment(batch.stride_c, out_size));
  }
  const Key key{ta,
                tb,
                M,
                N,
                K,
                lda,
                ldb,
                ldc,
                int(ctype),
                int(itype),
                al_a,
                al_b,
                al_c,
                batch.count,
                batch.stride_a,
                batch.stride_b,
                batch.stride_c};
  auto it = impl_->plans.find(key);
  if (it == impl_->plans.end()) {
    Plan p;
    const cudaDataType_t ct = ctype == OutType::F32 ? CUDA_R_32F : CUDA_R_16BF;
    const bool tf32 = itype == InType::TF32;
    const cudaDataType_t in_t = itype == InType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    TL_CUBLAS_CHECK(cublasLtMatmulDescCreate(
        &p.desc, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS A = our B
    const cublasOperation_t opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS B = our A
    TL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
    TL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
    // Stored (column-major) shapes: our B is (K,N) row-major = (N,K) column-major when !tb, else (K,N).
    if (!tb)
      TL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, in_t, uint64_t(N), uint64_t(K), ldb));
    else
      TL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, in_t, uint64_t(K), uint64_t(N), ldb));
    if (!ta)
      TL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, in_t, uint64_t(K), uint64_t(M), lda));
    else
      TL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, in_t, uint64_t(M), uint64_t(K), lda));
    TL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, ct, uint64_t(N), uint64_t(M), ldc));
    if (batch.count > 1) {  // cuBLAS's A is our B and its B our A
      const int32_t count = int32_t(batch.count);
      const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[3] = {
          {p.a, batch.stride_b}, {p.b, batch.stride_a}, {p.c, batch.stride_c}};
      for (const auto& [layout, stride] : layouts) {
        TL_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                         sizeof(count)));
        TL_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                         &stride, sizeof(stride)));
      }
    }

    cublasLtMatmulPreference_t pref = nullptr;
    TL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = impl_->ws_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_b,
                                         sizeof(al_b));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_a,
                                         sizeof(al_a));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c,
                                         sizeof(al_c));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c,
                                         sizeof(al_c));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(impl_->handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      cublasLtMatmulDescDestroy(p.desc);
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      fail(
          "gemm: cuBLASLt has no algorithm for C({},{}) = op(A) op(B), K={}, ta={} tb={} lda={} ldb={} "
          "ldc={} ({})",
          M, N, K, ta, tb, lda, ldb, ldc,
          st == CUBLAS_STATUS_SUCCESS ? "none found" : cublasLtGetStatusString(st));
    }
    p.algo = res.algo;
    it = impl_->plans.emplace(key, p).first;
  }
  const Plan& p = it->second;
  TL_CUBLAS_CHECK(cublasLtMatmul(impl_->handle, p.desc, &alpha, B, p.a, A, p.b, &beta, C, p.c, C, p.c,
                                 &p.algo, impl_->workspace, impl_->ws_bytes, impl_->stream));
}

}  // namespace tl::cuda
