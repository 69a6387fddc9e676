// Fast CPU kernels for inference: packed ternary weights x int8 activations with exact integer
// accumulation, plus the two LM-head GEMVs (f16 weights x fp32, int8 weights x int8). Each kernel has a
// generic C++ path, an AVX2 path and an AVX-512 VNNI path; best_kernel_isa() picks the best one the CPU
// supports at run time (the build is not -march=native), and every entry point also takes the ISA
// explicitly so that tests can compare all of them.
//
// Weight format: bitnet.cpp's I2_S layout (../shared/reference/bitnet-arch-and-formats.md §3.4), so the
// bytes of an I2_S GGUF tensor can be used in place. A ternary matrix W (M rows = outputs, K columns =
// inputs, K % 128 == 0) is stored row-major, K/4 bytes per row. Each row is cut into blocks of 128
// consecutive elements; block b is bytes 32b..32b+31 of the row, and byte p (0..31) of a block holds
//   element p      in bits 7:6,   element p + 32 in bits 5:4,
//   element p + 64 in bits 3:2,   element p + 96 in bits 1:0.
// The 2-bit code is w + 1: 0 = -1, 1 = 0, 2 = +1. Code 3 is never written; every kernel path reads it
// as weight 0 (like bitnet.cpp's dequantizer, which maps it to 0), so all paths agree on any input.
//
// Exactness: integer kernels return the exact sums (int32), whatever the ISA and the thread count.
#pragma once
#include <cstdint>
#include <string_view>

namespace tl {

enum class KernelIsa { Generic, Avx2, Avx512Vnni };

// The best ISA this CPU supports, lowered by the environment variable TERNLAB_ISA=generic|avx2|avx512vnni
// when set. Throws tl::Error for an unknown name or an ISA that the CPU does not support.
KernelIsa best_kernel_isa();
const char* kernel_isa_name(KernelIsa isa);         // "generic", "avx2", "avx512vnni"
KernelIsa parse_kernel_isa(std::string_view name);  // inverse of kernel_isa_name; throws tl::Error
// Avx2 needs AVX2 + FMA + F16C; Avx512Vnni needs AVX-512 F/BW/VL/DQ/VNNI (and the AVX2 set).
bool kernel_isa_supported(KernelIsa isa);

// codes (M,K) int8 in {-1,0,1} row-major -> packed (M, K/4) bytes in the I2_S layout. K % 128 == 0.
// A code outside {-1,0,1} is an error.
void pack_i2s(const int8_t* codes, int64_t M, int64_t K, uint8_t* packed);
// The inverse: packed (M, K/4) -> codes (M,K) in {-1,0,1} (code 3 reads as 0, like the kernels).
void unpack_i2s(const uint8_t* packed, int64_t M, int64_t K, int8_t* codes);

// out (N, ldo) columns 0..M-1 = x (N,K) . W^T, exactly, with W (M,K) packed as above (K % 128 == 0,
// K <= 2^20, ldo >= M; columns M..ldo-1 are not touched). x (N,K) row-major holds int8 activation codes
// (any value in [-128,127]); the sums are exact int32 (|out| <= 128 K).
//   Decode (N <= 8 with AVX-512, <= 3 with AVX2): a GEMV that unpacks each weight byte in registers once
//   per call, shared by the tokens; memory bound.
//   Prompt (larger N): 32-row panels of W are unpacked to u8 codes once per call and multiplied by a
//   register-blocked int8 micro-kernel (AVX-512: 32 rows x 14 tokens, vpdpbusd), cache-blocked over K.
// Parallel (OpenMP, over output rows) when the work is large enough; the result never depends on the
// thread count. Scratch is kept per thread between calls: about N x K bytes for the activations (calling
// thread) and under 1 MiB per thread for panels and partial sums at N = 512.
//
// codes: Any (the default) accepts every byte (code 3 reads as 0). Valid promises that W holds no code 3, as
// pack_i2s writes it; the one-token AVX-512 GEMV then skips the step that maps code 3 to 0. With code 3
// present and Valid, sums are wrong (code 3 then counts as weight +2) but memory accesses are the same.
enum class PackedCodes { Any, Valid };
void ternary_gemm_i32(int32_t* out, int64_t ldo, const int8_t* x, int64_t N, const uint8_t* w, int64_t M,
                      int64_t K, KernelIsa isa = best_kernel_isa(), PackedCodes codes = PackedCodes::Any);

// Decoding by a thread team that the caller runs itself (the engine's per-token team): one token's
// activations are prepared once, then any thread computes any range of rows. Together they give exactly
// ternary_gemm_i32's sums for N = 1; the argument checks are made once, by prepare.
struct TernaryGemvToken {
  const int8_t* x = nullptr;  // (K) codes as the kernels read them (permuted for AVX-512)
  int64_t K = 0;
  int32_t sum = 0;  // sum of the codes
  KernelIsa isa = KernelIsa::Generic;
};
// x (K) int8 codes; buffer: K bytes that hold the prepared codes (must outlive the returned token).
TernaryGemvToken prepare_ternary_gemv_token(const int8_t* x, int64_t K, int8_t* buffer,
                                            KernelIsa isa = best_kernel_isa());
// out[m] for m in [m0, m1) = row m of W (packed as above, K/4 bytes per row) . x, on the calling thread.
void ternary_gemv_token_rows(int32_t* out, const TernaryGemvToken& token, const uint8_t* w, int64_t m0,
                             int64_t m1, PackedCodes codes = PackedCodes::Any);

// model/quant.hpp's quantize_activation_row (per-token absmax to int8) with this ISA: the same scale and
// the same codes, bit for bit, for finite x. Returns s; q (n) gets the codes.
float quantize_activation_row_isa(const float* x, int64_t n, int8_t* q, KernelIsa isa = best_kernel_isa());

// out (M) = W (M,K) . x (K): W holds f16 bits, row-major; fp32 products and accumulation. Any K. The
// summation order depends on the ISA (results agree to fp32 rounding), not on the thread count.
void f16_gemv(float* out, const uint16_t* w, int64_t M, int64_t K, const float* x,
              KernelIsa isa = best_kernel_isa());

// The int8 LM head: W (M,K) int8 codes with one fp32 scale per row (w ~ wq * wscale), xq (K) the token's
// int8 codes with scale xscale (x ~ xq / xscale, model/quant.hpp's activation quantizer). Computes the
// exact integer dot d[m] = sum_k wq[m,k] xq[k] and out[m] = float(d[m]) * wscale[m] / xscale (in that
// order), so every ISA gives the same bits. Any K up to 131071 (|d| < 2^31).
void i8_gemv(float* out, const int8_t* w, const float* wscale, int64_t M, int64_t K, const int8_t* xq,
             float xscale, KernelIsa isa = best_kernel_isa());

}  // namespace tl
