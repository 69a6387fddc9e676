#include "formats/ternary_blocks.hpp"

#include <cstddef>
#include <cstring>

#include "core/error.hpp"

namespace tl {

namespace {

constexpr uint8_t kPow3[6] = {1, 3, 9, 27, 81, 243};

void check_sizes(size_t numel, size_t block, size_t have, size_t want, std::string_view what,
                 std::string_view type) {
  TL_CHECK(numel % block == 0, "{}: {} needs a multiple of {} elements, found {}", what, type, block, numel);
  TL_CHECK(have == want, "{}: {} data of {} elements must be {} bytes, found {}", what, type, numel, want,
           have);
}

// code + 1 in {0, 1, 2}; anything else is a caller's bug or bad input.
uint8_t stored(int8_t code, size_t i, std::string_view what) {
  TL_CHECK(code >= -1 && code <= 1, "{}: element {} has code {}, expected -1, 0 or 1", what, i, int(code));
  return uint8_t(code + 1);
}

// q in 0..242 (five trits) as the byte whose top trits decode back to it.
uint8_t trits_to_byte(uint32_t q) {
  return uint8_t((q * 256 + 242) / 243);
}

int8_t byte_trit(uint8_t byte, int n) {
  const uint8_t shifted = uint8_t(byte * kPow3[n]);  // wraps mod 256 on purpose
  return int8_t(((uint16_t(shifted) * 3) >> 8) - 1);
}

void put_f16(uint8_t* p, uint16_t v) {
  std::memcpy(p, &v, 2);
}
uint16_t get_f16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace

void encode_tq2_0(std::span<const int8_t> codes, uint16_t d_f16, std::span<uint8_t> out,
                  std::string_view what) {
  check_sizes(codes.size(), kTqBlock, out.size(), tq2_0_bytes(codes.size()), what, "TQ2_0");
  for (size_t b = 0; b < codes.size() / kTqBlock; ++b) {
    const int8_t* c = codes.data() + b * kTqBlock;
    uint8_t* o = out.data() + b * kTq2BlockBytes;
    for (size_t h = 0; h < 2; ++h)
      for (size_t m = 0; m < 32; ++m) {
        uint8_t byte = 0;
        for (size_t n = 0; n < 4; ++n) {
          const size_t e = 128 * h + m + 32 * n;
          byte |= uint8_t(stored(c[e], b * kTqBlock + e, what) << (2 * n));
        }
        o[32 * h + m] = byte;
      }
    put_f16(o + offsetof(BlockTq2_0, d), d_f16);
  }
}

void encode_tq1_0(std::span<const int8_t> codes, uint16_t d_f16, std::span<uint8_t> out,
                  std::string_view what) {
  check_sizes(codes.size(), kTqBlock, out.size(), tq1_0_bytes(codes.size()), what, "TQ1_0");
  for (size_t b = 0; b < codes.size() / kTqBlock; ++b) {
    const int8_t* c = codes.data() + b * kTqBlock;
    uint8_t* o = out.data() + b * kTq1BlockBytes;
    // trits of elements first, first + stride, ... most significant first
    const auto pack = [&](size_t first, size_t stride, int count) {
      uint32_t q = 0;
      for (int n = 0; n < count; ++n) {
        const size_t e = first + size_t(n) * stride;
        q = q * 3 + stored(c[e], b * kTqBlock + e, what);
      }
      for (int n = count; n < 5; ++n) q *= 3;  // qh: four trits moved to the top
      return trits_to_byte(q);
    };
    for (size_t m = 0; m < 32; ++m) o[m] = pack(m, 32, 5);
    for (size_t m = 0; m < 16; ++m) o[32 + m] = pack(160 + m, 16, 5);
    for (size_t j = 0; j < 4; ++j) o[offsetof(BlockTq1_0, qh) + j] = pack(240 + j, 4, 4);
    put_f16(o + offsetof(BlockTq1_0, d), d_f16);
  }
}

void encode_i2_s(std::span<const int8_t> codes, float scale, std::span<uint8_t> out, std::string_view what) {
  check_sizes(codes.size(), kI2sBlock, out.size(), i2_s_bytes(codes.size()), what, "I2_S");
  for (size_t b = 0; b < codes.size() / kI2sBlock; ++b) {
    const int bad = pack_i2s_block(codes.data() + b * kI2sBlock, out.data() + b * sizeof(I2sBlock));
    if (bad >= 0) stored(codes[b * kI2sBlock + size_t(bad)], b * kI2sBlock + size_t(bad), what);  // throws
  }
  uint8_t* tail = out.data() + codes.size() / 4;
  for (size_t k = 0; k < kI2sTailBytes / 4; ++k) std::memcpy(tail + 4 * k, &scale, 4);
}

void decode_tq2_0(std::span<const uint8_t> data, std::span<int8_t> codes, std::span<uint16_t> d_f16,
                  std::string_view what) {
  check_sizes(codes.size(), kTqBlock, data.size(), tq2_0_bytes(codes.size()), what, "TQ2_0");
  TL_CHECK(d_f16.size() == codes.size() / kTqBlock, "{}: internal: {} block scales for {} blocks", what,
           d_f16.size(), codes.size() / kTqBlock);
  for (size_t b = 0; b < codes.size() / kTqBlock; ++b) {
    const uint8_t* o = data.data() + b * kTq2BlockBytes;
    int8_t* c = codes.data() + b * kTqBlock;
    for (size_t h = 0; h < 2; ++h)
      for (size_t m = 0; m < 32; ++m)
        for (size_t n = 0; n < 4; ++n) {
          const size_t e = 128 * h + m + 32 * n;
          const int v = (o[32 * h + m] >> (2 * n)) & 3;
          TL_CHECK(v != 3,
                   "{}: TQ2_0 block {} element {} has the unused 2-bit code 3 (byte {} = 0x{:02x}); not a "
                   "ternary weight",
                   what, b, e, 32 * h + m, o[32 * h + m]);
          c[e] = int8_t(v - 1);
        }
    d_f16[b] = get_f16(o + offsetof(BlockTq2_0, d));
  }
}

void decode_tq1_0(std::span<const uint8_t> data, std::span<int8_t> codes, std::span<uint16_t> d_f16,
                  std::string_view what) {
  check_sizes(codes.size(), kTqBlock, data.size(), tq1_0_bytes(codes.size()), what, "TQ1_0");
  TL_CHECK(d_f16.size() == codes.size() / kTqBlock, "{}: internal: {} block scales for {} blocks", what,
           d_f16.size(), codes.size() / kTqBlock);
  for (size_t b = 0; b < codes.size() / kTqBlock; ++b) {
    const uint8_t* o = data.data() + b * kTq1BlockBytes;
    int8_t* c = codes.data() + b * kTqBlock;
    for (size_t m = 0; m < 32; ++m)
      for (int n = 0; n < 5; ++n) c[m + 32 * size_t(n)] = byte_trit(o[m], n);
    for (size_t m = 0; m < 16; ++m)
      for (int n = 0; n < 5; ++n) c[160 + m + 16 * size_t(n)] = byte_trit(o[32 + m], n);
    for (size_t j = 0; j < 4; ++j)
      for (int n = 0; n < 4; ++n) c[240 + j + 4 * size_t(n)] = byte_trit(o[offsetof(BlockTq1_0, qh) + j], n);
    d_f16[b] = get_f16(o + offsetof(BlockTq1_0, d));
  }
}

float decode_i2_s(std::span<const uint8_t> data, std::span<int8_t> codes, std::string_view what) {
  check_sizes(codes.size(), kI2sBlock, data.size(), i2_s_bytes(codes.size()), what, "I2_S");
  for (size_t b = 0; b < codes.size() / kI2sBlock; ++b) {
    const uint8_t* block = data.data() + b * sizeof(I2sBlock);
    for (int e = 0; e < int(kI2sBlock); ++e) {
      const int v = i2s_value(block, e);
      TL_CHECK(v != 3,
               "{}: I2_S element {} has the unused 2-bit code 3 (byte {} = 0x{:02x}); not a ternary weight",
               what, b * kI2sBlock + size_t(e), b * sizeof(I2sBlock) + size_t(e % 32), block[e % 32]);
      codes[b * kI2sBlock + size_t(e)] = int8_t(v - 1);
    }
  }
  float scale;
  std::memcpy(&scale, data.data() + codes.size() / 4, 4);
  return scale;
}

}  // namespace tl
