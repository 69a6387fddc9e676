// I2_S, bitnet.cpp's x86 layout of ternary codes: the one codec behind the engine's packed weights
// (cpu/ternary_kernels) and the GGUF tensors (formats/ternary_blocks). Codes go in blocks of 128, each
// 32 bytes; byte p of a block holds elements p, p + 32, p + 64, p + 96 in bits 7:6, 5:4, 3:2, 1:0, each as
// code + 1 in {0, 1, 2} (the 2-bit value 3 is unused).
#pragma once
#include <cstddef>
#include <cstdint>

namespace tl {

struct I2sBlock {
  static constexpr size_t kCodes = 128;
  uint8_t qs[32];
};
static_assert(sizeof(I2sBlock) == 32 && I2sBlock::kCodes == 4 * sizeof(I2sBlock));

// Element p + 32g of a block sits in byte p at this shift.
constexpr int i2s_shift(int g) {
  return 6 - 2 * g;
}

// The 2-bit value (0..3) of element e (0..127) of the block at `block`.
inline int i2s_value(const uint8_t* block, int e) {
  return (block[e % 32] >> i2s_shift(e / 32)) & 3;
}

// Packs the 128 codes at `codes` into the 32 bytes at `out`. Returns -1, or the index of a code outside
// {-1, 0, 1} (the block is then incomplete; the caller reports it).
inline int pack_i2s_block(const int8_t* codes, uint8_t* out) {
  for (int p = 0; p < 32; ++p) {
    uint8_t byte = 0;
    for (int g = 0; g < 4; ++g) {
      const int8_t c = codes[p + 32 * g];
      if (c < -1 || c > 1) return p + 32 * g;
      byte = uint8_t(byte | (uint8_t(c + 1) << i2s_shift(g)));
    }
    out[p] = byte;
  }
  return -1;
}

}  // namespace tl
