// Byte layouts of TQ2_0, TQ1_0 and I2_S on hand-made codes, checked against the format description
// (reference §3.3, §3.4) by an independent reading of each bit, not by the decoder under test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "../common/test_util.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "formats/gguf.hpp"
#include "formats/ternary_blocks.hpp"

namespace tl {
namespace {

using test::error_of;
using ::testing::HasSubstr;

// The block structs, the GGUF type table and the byte counts agree (each is written down once, checked here).
TEST(Blocks, StructsAgreeWithTheGgufTypeTable) {
  const GgmlTypeInfo* tq2 = ggml_type_info(uint32_t(GgmlType::TQ2_0));
  const GgmlTypeInfo* tq1 = ggml_type_info(uint32_t(GgmlType::TQ1_0));
  ASSERT_TRUE(tq2 && tq1);
  EXPECT_EQ(tq2->type_size, sizeof(BlockTq2_0));
  EXPECT_EQ(tq1->type_size, sizeof(BlockTq1_0));
  EXPECT_EQ(tq2->block_size, kTqBlock);
  EXPECT_EQ(tq1->block_size, kTqBlock);
  EXPECT_EQ(tq2_0_bytes(2 * kTqBlock), 2 * sizeof(BlockTq2_0));
  EXPECT_EQ(i2_s_bytes(4 * I2sBlock::kCodes), 4 * sizeof(I2sBlock) + kI2sTailBytes);
}

std::vector<int8_t> random_codes(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<int8_t> c(n);
  for (auto& x : c) x = int8_t(int(rng.below(3)) - 1);
  return c;
}

// The TQ1_0 decoding rule of the format description: trit n of a byte.
int trit(uint8_t byte, int n) {
  static constexpr uint8_t pow3[5] = {1, 3, 9, 27, 81};
  const uint8_t q = uint8_t(byte * pow3[n]);
  return (uint16_t(q) * 3) >> 8;
}

TEST(TernaryBlocks, Tq2ElementPlacementOneCode) {
  std::vector<int8_t> codes(256, 0);
  codes[129] = 1;  // 129 = 128*1 + m 1 + 32*0: qs[33], bits 0..1
  std::vector<uint8_t> out(66);
  encode_tq2_0(codes, 0x3c00, out, "t");
  for (size_t i = 0; i < 64; ++i) EXPECT_EQ(out[i], i == 33 ? 0x56 : 0x55) << i;
  EXPECT_EQ(out[64], 0x00);  // fp16 1.0 = 0x3c00, little-endian, after the codes
  EXPECT_EQ(out[65], 0x3c);
}

TEST(TernaryBlocks, Tq2EveryElement) {
  const auto codes = random_codes(512, 1);
  std::vector<uint8_t> out(2 * 66);
  encode_tq2_0(codes, f32_to_f16(0.75f), out, "t");
  for (size_t b = 0; b < 2; ++b)
    for (size_t h = 0; h < 2; ++h)
      for (size_t m = 0; m < 32; ++m)
        for (size_t n = 0; n < 4; ++n)
          ASSERT_EQ((out[66 * b + 32 * h + m] >> (2 * n)) & 3, codes[256 * b + 128 * h + m + 32 * n] + 1);
  std::vector<int8_t> back(512);
  std::vector<uint16_t> d(2);
  decode_tq2_0(out, back, d, "t");
  EXPECT_EQ(back, codes);
  EXPECT_EQ(d[0], f32_to_f16(0.75f));
  EXPECT_EQ(d[1], f32_to_f16(0.75f));
}

TEST(TernaryBlocks, Tq2CodeThreeRefused) {
  std::vector<int8_t> codes(256, 0);
  std::vector<uint8_t> out(66);
  encode_tq2_0(codes, 0x3c00, out, "t");
  out[5] = 0xff;
  std::vector<int8_t> back(256);
  std::vector<uint16_t> d(1);
  EXPECT_THAT(error_of([&] { decode_tq2_0(out, back, d, "blk.0.attn_q.weight"); }),
              HasSubstr("blk.0.attn_q.weight: TQ2_0 block 0 element 5 has the unused 2-bit code 3"));
}

TEST(TernaryBlocks, Tq1KnownBytes) {
  std::vector<int8_t> codes(256, 0);
  codes[0] = 1;  // qs[0]: trits (2,1,1,1,1) -> q = 202 -> ceil(202*256/243) = 213
  std::vector<uint8_t> out(54);
  encode_tq1_0(codes, 0x3c00, out, "t");
  EXPECT_EQ(out[0], 213);
  for (size_t i = 1; i < 48; ++i) EXPECT_EQ(out[i], 128) << i;   // all zero codes: q = 121 -> 128
  for (size_t j = 48; j < 52; ++j) EXPECT_EQ(out[j], 127) << j;  // four 1-trits, x3: q = 120 -> 127
  EXPECT_EQ(out[52], 0x00);
  EXPECT_EQ(out[53], 0x3c);
  for (int n = 0; n < 5; ++n) EXPECT_EQ(trit(213, n), n == 0 ? 2 : 1);
}

TEST(TernaryBlocks, Tq1EveryElement) {
  const auto codes = random_codes(768, 2);
  std::vector<uint8_t> out(3 * 54);
  encode_tq1_0(codes, 0x3c00, out, "t");
  for (size_t b = 0; b < 3; ++b) {
    const uint8_t* o = out.data() + 54 * b;
    const int8_t* c = codes.data() + 256 * b;
    // Encoding: ceil(q * 256 / 243) of the trits, most significant first.
    const auto expect_byte = [](uint32_t q) { return uint8_t((q * 256 + 242) / 243); };
    for (size_t m = 0; m < 32; ++m) {
      uint32_t q = 0;
      for (int n = 0; n < 5; ++n) {
        ASSERT_EQ(trit(o[m], n), c[m + 32 * n] + 1);
        q = q * 3 + uint32_t(c[m + 32 * n] + 1);
      }
      ASSERT_EQ(o[m], expect_byte(q));
    }
    for (size_t m = 0; m < 16; ++m)
      for (int n = 0; n < 5; ++n) ASSERT_EQ(trit(o[32 + m], n), c[160 + m + 16 * n] + 1);
    for (size_t j = 0; j < 4; ++j) {
      uint32_t q = 0;
      for (int n = 0; n < 4; ++n) {
        ASSERT_EQ(trit(o[48 + j], n), c[240 + j + 4 * n] + 1);
        q = q * 3 + uint32_t(c[240 + j + 4 * n] + 1);
      }
      ASSERT_EQ(o[48 + j], expect_byte(q * 3));
    }
  }
  std::vector<int8_t> back(768);
  std::vector<uint16_t> d(3);
  decode_tq1_0(out, back, d, "t");
  EXPECT_EQ(back, codes);
}

TEST(TernaryBlocks, I2sKnownBytes) {
  std::vector<int8_t> codes(256, 0);
  codes[33] = -1;  // block 0, p = 1, group 1: bits 5:4 of byte 1 hold 0
  codes[128] = 1;  // block 1, p = 0, group 0: bits 7:6 of byte 32 hold 2
  std::vector<uint8_t> out(256 / 4 + 32);
  encode_i2_s(codes, 0.0625f, out, "t");
  for (size_t i = 0; i < 64; ++i) EXPECT_EQ(out[i], i == 1 ? 0x45 : i == 32 ? 0x95 : 0x55) << i;
  for (size_t k = 0; k < 8; ++k) {
    float s;
    std::memcpy(&s, out.data() + 64 + 4 * k, 4);
    EXPECT_EQ(s, 0.0625f) << k;  // the scale, written 8 times in the 32-byte tail
  }
}

TEST(TernaryBlocks, I2sEveryElement) {
  const auto codes = random_codes(1024, 3);
  std::vector<uint8_t> out(1024 / 4 + 32);
  encode_i2_s(codes, 0.3f, out, "t");
  for (size_t j = 0; j < 1024; ++j) {
    const size_t b = j / 128, g = (j % 128) / 32, p = j % 32;
    ASSERT_EQ((out[32 * b + p] >> (6 - 2 * g)) & 3, codes[j] + 1) << j;
  }
  std::vector<int8_t> back(1024);
  EXPECT_EQ(decode_i2_s(out, back, "t"), 0.3f);
  EXPECT_EQ(back, codes);
  out[7] = 0xc0;
  EXPECT_THAT(error_of([&] { decode_i2_s(out, back, "w"); }),
              HasSubstr("w: I2_S element 7 has the unused 2-bit code 3"));
}

TEST(TernaryBlocks, SizeMismatchesRefused) {
  std::vector<int8_t> codes(200, 0);
  std::vector<uint8_t> out(66);
  EXPECT_THAT(error_of([&] { encode_tq2_0(codes, 0, out, "w"); }), HasSubstr("multiple of 256"));
  codes.assign(256, 2);
  EXPECT_THAT(error_of([&] { encode_tq2_0(codes, 0, out, "w"); }), HasSubstr("code 2"));
}

}  // namespace
}  // namespace tl
