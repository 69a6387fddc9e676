// A cuBLASLt wrapper for the row-major GEMMs of the CUDA model: bf16 A and B (or fp32 A and B multiplied on
// TF32 tensor cores), fp32 accumulation, fp32 or bf16 output, alpha/beta (beta = 1 accumulates gradients),
// either operand transposed.
//
//   C (M,N) = alpha * op(A) * op(B) + beta * C        all row-major;
//   op(A) is (M,K): A stored (M,K) with leading dimension lda, or (K,M) when ta;
//   op(B) is (K,N): B stored (K,N) with ldb, or (N,K) when tb.
//
// Matmul descriptors, layouts and the heuristic's algorithm are cached per (shape, transposes, leading
// dimensions, output type, pointer alignments); one workspace is shared by every call (all on one stream).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include <cuda_runtime.h>

namespace tl::cuda {

enum class OutType { F32, BF16 };
// Operand type: bf16, or fp32 data rounded to TF32 by the tensor cores (10-bit mantissa: 4x finer than bf16;
// half bf16's throughput).
// F32: fp32 data in full fp32 arithmetic (no tensor cores), for the attention's small batched products.
enum class InType { BF16, TF32, F32 };

// Strided batches (cuBLASLt's strided batch): `count` products, operand i at base + i * stride elements.
struct Batch {
  int64_t count = 1, stride_a = 0, stride_b = 0, stride_c = 0;
};

class Gemm {
 public:
  // Creates the cuBLASLt handle and a workspace of `workspace_bytes` on the device.
  explicit Gemm(cudaStream_t stream, size_t workspace_bytes = size_t(32) << 20);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // A and B point to bf16 (__nv_bfloat16) data, or float with InType::TF32; C to float (F32) or bf16 (BF16).
  // M, N, K > 0 (a zero size is a no-op). Errors: no algorithm for the shape, any cuBLASLt failure.
  void matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
              const void* B, int64_t ldb, float beta, void* C, int64_t ldc, OutType ctype = OutType::F32,
              InType itype = InType::BF16, Batch batch = {});

  size_t workspace_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tl::cuda
