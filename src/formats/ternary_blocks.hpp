// Byte layouts of the ternary GGUF tensor types (reference §3.3 and §3.4), written from the format
// description. Codes are int8 in {-1, 0, +1}; every layout stores code + 1 in {0, 1, 2}.
//
//   TQ2_0 (ggml, 66 bytes per 256 weights): qs[64] then fp16 d. Byte qs[32h + m] holds elements
//         128h + m + 32n (n = 0..3) in bits 2n..2n+1, least significant pair first. Weight = (code - 1) * d.
//   TQ1_0 (ggml, 54 bytes per 256 weights): qs[48], qh[4], then fp16 d. qs[m] (m < 32) holds elements
//         m + 32n (n = 0..4); qs[32 + m] (m < 16) holds 160 + m + 16n (n = 0..4); qh[j] holds 240 + j + 4n
//         (n = 0..3). The trits t_n form q = sum t_n 3^(4-n) (most significant first; qh's four trits are
//         scaled by 3 to fill the top), stored as ceil(q * 256 / 243). Trit n decodes as
//         ((uint8)(byte * 3^n) * 3) >> 8, the 8-bit product wrapping on purpose.
//   I2_S  (bitnet.cpp x86 layout): the [out, in] tensor flattened row-major, cut into blocks of 128; block b
//         is bytes 32b..32b+31, and byte 32b + p holds elements p, p+32, p+64, p+96 in bits 7:6, 5:4, 3:2,
//         1:0. Then a 32-byte tail: the float32 scale, written 8 times (readers use the first).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "model/i2s_layout.hpp"

namespace tl {

inline constexpr size_t kTqBlock = 256;  // QK_K

// ggml's block_tq2_0 and block_tq1_0 (the blocks as stored; read and written through memcpy, as file bytes
// have no alignment).
struct BlockTq2_0 {
  uint8_t qs[64];  // 2 bits per element
  uint16_t d;      // fp16 scale
};
struct BlockTq1_0 {
  uint8_t qs[48];  // 5 trits per byte
  uint8_t qh[4];   // 4 trits per byte
  uint16_t d;      // fp16 scale
};
static_assert(sizeof(BlockTq2_0) == 66 && offsetof(BlockTq2_0, d) == 64);
static_assert(sizeof(BlockTq1_0) == 54 && offsetof(BlockTq1_0, qh) == 48 && offsetof(BlockTq1_0, d) == 52);
inline constexpr size_t kTq2BlockBytes = sizeof(BlockTq2_0);
inline constexpr size_t kTq1BlockBytes = sizeof(BlockTq1_0);
inline constexpr size_t kI2sBlock = I2sBlock::kCodes;  // I2_S blocks: model/i2s_layout.hpp
inline constexpr size_t kI2sTailBytes = 32;

inline size_t tq2_0_bytes(size_t numel) {
  return numel / kTqBlock * kTq2BlockBytes;
}
inline size_t tq1_0_bytes(size_t numel) {
  return numel / kTqBlock * kTq1BlockBytes;
}
inline size_t i2_s_bytes(size_t numel) {
  return numel / 4 + kI2sTailBytes;
}

// Encoders. codes.size() must be a multiple of the block (256; 128 for I2_S) and out exactly the encoded
// size; every TQ block gets the same fp16 d (bits). tl::Error naming `what` on a size mismatch or a code
// outside {-1, 0, 1}.
void encode_tq2_0(std::span<const int8_t> codes, uint16_t d_f16, std::span<uint8_t> out,
                  std::string_view what);
void encode_tq1_0(std::span<const int8_t> codes, uint16_t d_f16, std::span<uint8_t> out,
                  std::string_view what);
void encode_i2_s(std::span<const int8_t> codes, float scale, std::span<uint8_t> out, std::string_view what);

// Decoders: codes (the tensor's element count) and, for TQ, each block's d (fp16 bits). A TQ2_0 or I2_S
// 2-bit value of 3 (unused by the formats) is a tl::Error naming `what`, the element and the byte.
// decode_i2_s returns the scale (the tail's first float).
void decode_tq2_0(std::span<const uint8_t> data, std::span<int8_t> codes, std::span<uint16_t> d_f16,
                  std::string_view what);
void decode_tq1_0(std::span<const uint8_t> data, std::span<int8_t> codes, std::span<uint16_t> d_f16,
                  std::string_view what);
float decode_i2_s(std::span<const uint8_t> data, std::span<int8_t> codes, std::string_view what);

}  // namespace tl
