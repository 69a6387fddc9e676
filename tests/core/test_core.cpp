#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "core/dtype.hpp"
#include "core/enum_names.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "core/half.hpp"
#include "core/huge_pages.hpp"
#include "core/parse.hpp"
#include "core/rng.hpp"

using namespace tl;

TEST(Half, Bf16RoundsHalfToEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly half way between bf16 1.0 and 1.0078125: ties to even (1.0)
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  // 1 + 3*2^-8 is half way between 1.0078125 (odd mantissa) and 1.015625: ties to even (up)
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
  EXPECT_EQ(bf16_to_f32(0xc040), -3.0f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::infinity())),
            std::numeric_limits<float>::infinity());
}

TEST(Half, F16RoundTripAndEdgeCases) {
  for (float x : {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f, 0.333251953125f})
    EXPECT_EQ(f16_to_f32(f32_to_f16(x)), x) << x;
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // overflows to inf
  EXPECT_EQ(f32_to_f16(1e-9f), 0x0000);     // underflows to zero
  // every f16 bit pattern survives f16 -> f32 -> f16 (NaNs stay NaN)
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
    } else {
      EXPECT_EQ(f32_to_f16(f), h) << std::hex << h;
    }
  }
}

TEST(DType, NamesAndSizes) {
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_name(DType::U8), "U8");
  EXPECT_EQ(dtype_from_name("F32"), DType::F32);
  EXPECT_FALSE(dtype_from_name("F128").has_value());
}

TEST(Rng, DeterministicAndUniform) {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next_u64();
    EXPECT_EQ(x, b.next_u64());
    EXPECT_NE(x, c.next_u64());
  }
  Rng r(7);
  double sum = 0, sum2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double z = r.normal();
    sum += z;
    sum2 += z * z;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sum2 / n, 1.0, 0.02);
  int counts[5] = {};
  for (int i = 0; i < 50000; ++i) counts[r.below(5)]++;
  for (int k = 0; k < 5; ++k) EXPECT_NEAR(counts[k], 10000, 400);
  // state save/restore reproduces the stream
  auto st = r.state();
  const double x1 = r.normal(), x2 = r.normal();
  r.set_state(st);
  EXPECT_EQ(r.normal(), x1);
  EXPECT_EQ(r.normal(), x2);
}

TEST(Files, AtomicWriteLeavesNoPartialFile) {
  const auto dir = std::filesystem::temp_directory_path() / "ternlab-test-core";
  std::filesystem::create_directories(dir);
  const auto path = dir / "out.txt";
  write_file_atomic(path, "good");
  {
    AtomicFile f(path);
    f.write("half-written");
    // no commit: destructor must discard the temporary and keep the good file
  }
  EXPECT_EQ(read_file(path), "good");
  for (const auto& e : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(e.path().filename(), "out.txt") << "stray temporary " << e.path();
  MappedFile m(path);
  EXPECT_EQ(m.size(), 4u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.data()), m.size()), "good");
  try {
    MappedFile missing(dir / "nope");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("nope"));
  }
  std::filesystem::remove_all(dir);
}

TEST(Parse, ListFlags) {
  EXPECT_EQ(tl::split_list("10, 20 ,30"), (std::vector<std::string>{"10", "20", "30"}));
  EXPECT_EQ(tl::split_list("a,,b"), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_TRUE(tl::split_list("").empty());
  EXPECT_EQ(tl::parse_number_list("1e-3, 0.5", "--eps"), (std::vector<double>{1e-3, 0.5}));
  EXPECT_TRUE(tl::parse_number_list("", "--eps").empty());
  for (const char* bad : {"1,,2", "1,x", "nan", "1e-3x"}) {
    try {
      tl::parse_number_list(bad, "--eps");
      ADD_FAILURE() << bad;
    } catch (const tl::Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("--eps: '")) << bad;
      EXPECT_THAT(e.what(), ::testing::HasSubstr("is not a number")) << bad;
    }
  }
}

namespace {
enum class Color { Red, Green, Blue };
constexpr std::array<EnumName<Color>, 3> kColors{
    {{Color::Red, "red"}, {Color::Green, "green"}, {Color::Blue, "blue"}}};
constexpr std::array<EnumName<Color>, 1> kOnlyRed{{{Color::Red, "red"}}};
}  // namespace

TEST(EnumNames, NamesAndParsesFromOneTable) {
  for (Color c : {Color::Red, Color::Green, Color::Blue})
    EXPECT_EQ(parse_enum(kColors, name_of(kColors, c), "color"), c);
  static_assert(name_of(kColors, Color::Blue) == "blue");
  EXPECT_EQ(name_of(kOnlyRed, Color::Green), "?");  // not in the table
  EXPECT_EQ(enum_choices(kColors), "red, green or blue");
  EXPECT_EQ(enum_choices(kOnlyRed), "red");
  try {
    parse_enum(kColors, "Red", "color", "paint: ");  // names are exact
    ADD_FAILURE() << "expected tl::Error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "paint: unknown color 'Red': expected red, green or blue");
  }
}

// Large blocks start on a 2 MiB boundary (so they can be backed by huge pages); small ones are ordinary but
// 64-byte aligned; contents, growth and copies behave as std::vector's.
TEST(HugeVector, LargeBlocksAreHugePageAlignedAndBehaveAsVectors) {
  tl::HugeVector<uint16_t> big(size_t(3) << 20, 7);  // 6 MiB
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % tl::kHugePageBytes, 0u);
  EXPECT_EQ(big[123456], 7);
  big.push_back(9);  // reallocates: the copy keeps the contents
  EXPECT_EQ(big.back(), 9);
  EXPECT_EQ(big[size_t(3) << 19], 7);
  tl::HugeVector<uint8_t> small(100, 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % 64, 0u);
  tl::HugeVector<uint8_t> copy = small;
  EXPECT_EQ(copy, small);
  std::vector<float> values = {1, 2, 3};
  tl::HugeVector<float> from(values.begin(), values.end());
  EXPECT_EQ(from.size(), 3u);
  EXPECT_THROW(tl::HugeVector<double>(size_t(-1) / 4), std::length_error);
}
