// Error checks for the CUDA backend: every cudaError_t, cublasStatus_t and ncclResult_t is checked and a
// failure throws tl::Error naming the call, file:line and the library's own error string.
//
// This header has no fmt / ternlab dependencies so kernel files (.cu, compiled by nvcc) can include it; the
// throwing function is defined in gemm.cpp (host code compiled by the C++ compiler).
//
//   TL_CUDA_CHECK(cudaMemcpyAsync(...));      // any cudaError_t
//   TL_CUDA_CHECK_LAUNCH();                   // after a kernel launch: cudaGetLastError()
//   TL_CUBLAS_CHECK(cublasLtMatmul(...));     // any cublasStatus_t (include cublasLt.h first)
//   TL_NCCL_CHECK(ncclAllReduce(...));        // any ncclResult_t (include nccl.h first)
#pragma once
#include <cuda_runtime.h>

namespace tl::cuda {

// Throws tl::Error("<lib> error in <call> at <file>:<line>: <message>").
[[noreturn]] void raise_error(const char* lib, const char* call, const char* message, const char* file,
                              int line);

inline void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) raise_error("CUDA", call, cudaGetErrorString(e), file, line);
}

}  // namespace tl::cuda

#define TL_CUDA_CHECK(expr) ::tl::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)
#define TL_CUDA_CHECK_LAUNCH() ::tl::cuda::check_cuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

// cublasLt.h must be included before use (cublasGetStatusString is in cublas_api.h / cublasLt.h).
#define TL_CUBLAS_CHECK(expr)                                                                            \
  do {                                                                                                   \
    const cublasStatus_t tl_status_ = (expr);                                                            \
    if (tl_status_ != CUBLAS_STATUS_SUCCESS)                                                             \
      ::tl::cuda::raise_error("cuBLAS", #expr, cublasLtGetStatusString(tl_status_), __FILE__, __LINE__); \
  } while (0)

// nccl.h must be included before use.
#define TL_NCCL_CHECK(expr)                                                                     \
  do {                                                                                          \
    const ncclResult_t tl_nccl_ = (expr);                                                       \
    if (tl_nccl_ != ncclSuccess)                                                                \
      ::tl::cuda::raise_error("NCCL", #expr, ncclGetErrorString(tl_nccl_), __FILE__, __LINE__); \
  } while (0)
