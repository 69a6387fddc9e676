// safetensors reader / writer: round trips and malformed input, each with the message it must give.
#include "formats/safetensors.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/half.hpp"
#include "io_test_util.hpp"

namespace tl {
namespace {

using testing::error_of;
using ::testing::HasSubstr;
using testing::raw_safetensors;
using testing::TempDir;

std::string parse_error(const std::string& header, size_t data_bytes) {
  const auto img = raw_safetensors(header, data_bytes);
  return error_of([&] { parse_safetensors(img, "x.safetensors"); });
}

TEST(Safetensors, WriteReadRoundTrip) {
  TempDir tmp;
  const std::vector<float> f32{1.5f, -2.25f, 3.0f, 0.0f, -0.0f, 1e-30f};
  std::vector<uint16_t> bf16, f16;
  for (float x : f32) {
    bf16.push_back(f32_to_bf16(x));
    f16.push_back(f32_to_f16(x));
  }
  const std::vector<uint8_t> u8{1, 2, 3, 250};
  const float scalar = 0.125f;
  auto span_of = [](const auto& v) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(v[0]));
  };
  const std::vector<TensorBlob> blobs{
      {{"a.f32", DType::F32, {2, 3}}, span_of(f32)},
      {{"b.bf16", DType::BF16, {6}}, span_of(bf16)},
      {{"c.f16", DType::F16, {3, 2}}, span_of(f16)},
      {{"d.u8", DType::U8, {1, 4}}, span_of(u8)},
      {{"e.scalar", DType::F32, {}}, {reinterpret_cast<const uint8_t*>(&scalar), 4}},
      {{"f.empty", DType::F32, {0, 5}}, {}},
  };
  const auto path = tmp / "t.safetensors";
  write_safetensors(path, blobs, {{"format", "pt"}, {"note", "hello"}});

  // The header block is space-padded so the data buffer starts 8-byte aligned.
  const std::string file = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(file.find("{\"__metadata__\":{\"format\":\"pt\""), 8u);

  SafetensorsFile f(path);
  ASSERT_EQ(f.tensors().size(), blobs.size());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hello");
  for (size_t i = 0; i < blobs.size(); ++i) {
    const TensorInfo* t = f.find(blobs[i].spec.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t, &f.tensors()[i]);  // header order is the order written
    EXPECT_EQ(t->dtype, blobs[i].spec.dtype);
    EXPECT_EQ(t->shape, blobs[i].spec.shape);
    const auto b = f.bytes(*t);
    EXPECT_TRUE(std::equal(b.begin(), b.end(), blobs[i].data.begin(), blobs[i].data.end())) << t->name;
  }
  EXPECT_EQ(f.find("missing"), nullptr);
  for (const char* name : {"a.f32", "b.bf16", "c.f16"}) {
    const auto v = f.read_f32(*f.find(name));
    ASSERT_EQ(v.size(), f32.size());
    for (size_t i = 0; i < v.size(); ++i) {
      if (std::string(name) == "c.f16" && i == 5) {
        EXPECT_EQ(v[i], 0.0f);  // 1e-30 underflows in f16
      } else if (std::string(name) == "b.bf16" && i == 5) {
        EXPECT_NEAR(v[i], 1e-30f, 1e-32f);
      } else {
        EXPECT_EQ(v[i], f32[i]) << name << " " << i;
      }
    }
  }
  EXPECT_EQ(f.read_f32(*f.find("e.scalar")), std::vector<float>{0.125f});
  EXPECT_THAT(error_of([&] { f.read_f32(*f.find("d.u8")); }), HasSubstr("U8 cannot be read as float"));
}

TEST(Safetensors, AcceptsGapsButNotTrailingBytes) {
  // Not contiguous, but nothing can be misread: allowed.
  const char* header = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},
                          "b":{"dtype":"U8","shape":[],"data_offsets":[0,1]}})";
  const auto h = parse_safetensors(raw_safetensors(header, 6), "x");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a");  // header order kept
  EXPECT_EQ(h.tensors[1].numel(), 1u);
  EXPECT_TRUE(h.metadata.empty());
  // Bytes after the last tensor: damaged or foreign (the reference implementation refuses them too).
  EXPECT_THAT(
      error_of([&] { parse_safetensors(raw_safetensors(header, 16), "x"); }),
      HasSubstr("x: 10 bytes after the end of the last tensor's data (tensors end at byte 6 of a 16-byte"));
  EXPECT_THAT(error_of([&] { parse_safetensors(raw_safetensors("{}", 3), "x"); }),
              HasSubstr("x: 3 bytes after the end of the last tensor's data"));
}

// ---- malformed files ----

TEST(SafetensorsMalformed, TruncatedBeforeHeaderLength) {
  const std::vector<uint8_t> img{1, 2, 3};
  EXPECT_THAT(error_of([&] { parse_safetensors(img, "short.safetensors"); }),
              HasSubstr("short.safetensors: file is 3 bytes, shorter than the 8-byte header length"));
}

TEST(SafetensorsMalformed, HeaderLengthBeyondFile) {
  auto img = raw_safetensors("{}", 0);
  const uint64_t n = 1000;
  std::memcpy(img.data(), &n, 8);
  EXPECT_THAT(error_of([&] { parse_safetensors(img, "x"); }),
              HasSubstr("header length 1000 runs past the end of the file (10 bytes"));
}

TEST(SafetensorsMalformed, HeaderLengthOverLimit) {
  auto img = raw_safetensors("{}", 0);
  const uint64_t n = 200'000'000;
  std::memcpy(img.data(), &n, 8);
  EXPECT_THAT(error_of([&] { parse_safetensors(img, "x"); }),
              HasSubstr("exceeds the limit of 100000000 bytes"));
}

TEST(SafetensorsMalformed, InvalidJson) {
  EXPECT_THAT(parse_error(R"({"a": {"dtype": "F32",)", 0), HasSubstr("x.safetensors: header: invalid JSON"));
}

TEST(SafetensorsMalformed, NotAnObject) {
  EXPECT_THAT(parse_error("[1, 2]", 0), HasSubstr("expected a JSON object at the top level, found array"));
}

TEST(SafetensorsMalformed, NotUtf8) {
  EXPECT_THAT(parse_error("{\"\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}", 1),
              HasSubstr("invalid JSON (or not UTF-8)"));
}

TEST(SafetensorsMalformed, OffsetsOutsideFile) {
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
              HasSubstr("tensor 'w': data_offsets [0, 16] outside the data buffer of 8 bytes"));
}

TEST(SafetensorsMalformed, EndBeforeBegin) {
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}})", 8),
              HasSubstr("tensor 'w': data_offsets end 4 is before begin 8"));
}

TEST(SafetensorsMalformed, OverlappingTensors) {
  EXPECT_THAT(parse_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                              "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                          16),
              HasSubstr("tensors 'a' [0, 8) and 'b' [4, 12) overlap"));
  // Containment is an overlap too, whatever the header order.
  EXPECT_THAT(parse_error(R"({"inner":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},
                              "outer":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},
                              "z":{"dtype":"U8","shape":[0],"data_offsets":[3,3]}})",
                          8),
              HasSubstr("tensors 'outer' [0, 8) and 'inner' [2, 4) overlap"));
}

TEST(SafetensorsMalformed, SizeDtypeMismatch) {
  EXPECT_THAT(
      parse_error(R"({"w":{"dtype":"BF16","shape":[2,4],"data_offsets":[0,8]}})", 8),
      HasSubstr("tensor 'w': data_offsets [0, 8] span 8 bytes, expected 16 for dtype BF16 and shape [2, 4]"));
}

TEST(SafetensorsMalformed, UnknownDtype) {
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1),
              HasSubstr("tensor 'w': unknown dtype 'F8_E4M3' (supported: F32 F16 BF16"));
}

TEST(SafetensorsMalformed, DuplicateKey) {
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},
                              "w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                          2),
              HasSubstr("duplicate key 'w'"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})", 2),
              HasSubstr("duplicate key 'dtype'"));
}

TEST(SafetensorsMalformed, BadShapes) {
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1),
              HasSubstr("tensor 'w': shape dimension must be non-negative, found -1"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", 1),
              HasSubstr("tensor 'w': shape dimension must be an integer, found number 1.5"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"U8","shape":"4","data_offsets":[0,4]}})", 4),
              HasSubstr("tensor 'w': shape must be an array, found string"));
  EXPECT_THAT(
      parse_error(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,1]}})",
                  1),
      HasSubstr("has too many elements"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,1]}})", 1),
              HasSubstr("has too many bytes"));
}

TEST(SafetensorsMalformed, MissingExtraAndMistypedFields) {
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"U8","shape":[1]}})", 1),
              HasSubstr("tensor 'w': missing field 'data_offsets'"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"offsets":[0,1]}})", 1),
              HasSubstr("tensor 'w': unexpected field 'offsets' (expected dtype, shape, data_offsets)"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":5,"shape":[1],"data_offsets":[0,1]}})", 1),
              HasSubstr("tensor 'w': dtype must be a string, found integer"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1),
              HasSubstr("data_offsets must be [begin, end], found [0]"));
  EXPECT_THAT(parse_error(R"({"w":[1,2]})", 1), HasSubstr("tensor 'w': expected an object"));
  EXPECT_THAT(parse_error(R"({"__metadata__":{"format":1}})", 0),
              HasSubstr("__metadata__ value of 'format' must be a string, found integer"));
  EXPECT_THAT(parse_error(R"({"__metadata__":"pt"})", 0), HasSubstr("__metadata__ must be an object"));
}

TEST(SafetensorsMalformed, TruncatedFileOnDisk) {
  TempDir tmp;
  const std::vector<float> x(100, 1.0f);
  const auto path = tmp / "t.safetensors";
  write_safetensors(path, std::vector<TensorBlob>{
                              {{"x", DType::F32, {100}}, {reinterpret_cast<const uint8_t*>(x.data()), 400}}});
  fs::resize_file(path, fs::file_size(path) - 10);
  EXPECT_THAT(
      error_of([&] { SafetensorsFile f(path); }),
      HasSubstr("tensor 'x': data_offsets [0, 400] outside the data buffer of 390 bytes (file truncated?)"));
  fs::resize_file(path, 5);
  EXPECT_THAT(error_of([&] { SafetensorsFile f(path); }), HasSubstr("shorter than the 8-byte header length"));
  EXPECT_THAT(error_of([&] { SafetensorsFile f(tmp / "nope.safetensors"); }), HasSubstr("cannot open"));
}

TEST(SafetensorsWriter, RejectsDuplicateNamesAndWrongSizes) {
  TempDir tmp;
  const std::vector<uint8_t> b(4);
  EXPECT_THAT(error_of([&] {
                write_safetensors(tmp / "a", std::vector<TensorBlob>{{{"x", DType::U8, {4}}, b},
                                                                     {{"x", DType::U8, {4}}, b}});
              }),
              HasSubstr("tensor name 'x' is reserved or used twice"));
  EXPECT_THAT(error_of([&] {
                write_safetensors(tmp / "b", std::vector<TensorBlob>{{{"x", DType::F32, {4}}, b}});
              }),
              HasSubstr("tensor 'x': wrote 4 bytes, expected 16"));
  EXPECT_FALSE(fs::exists(tmp / "b"));  // nothing half-written left behind
}

// ---- sharded directories ----

class ShardedDir : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<uint8_t> b(4, 7);
    write_safetensors(tmp / "s1.safetensors", std::vector<TensorBlob>{{{"a", DType::U8, {4}}, b}});
    write_safetensors(tmp / "s2.safetensors",
                      std::vector<TensorBlob>{{{"b", DType::U8, {4}}, b}, {{"c", DType::U8, {2, 2}}, b}});
  }
  void index(const std::string& weight_map) {
    testing::write_text(tmp / kSafetensorsIndex,
                        R"({"metadata": {"total_size": 12}, "weight_map": )" + weight_map + "}");
  }
  TempDir tmp;
};

TEST_F(ShardedDir, Reads) {
  index(R"({"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"})");
  SafetensorsDir d(tmp.path());
  EXPECT_TRUE(d.sharded());
  EXPECT_EQ(d.num_files(), 2u);
  EXPECT_EQ(d.names(), (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_NE(d.find("c"), nullptr);
  EXPECT_EQ(d.find("c")->info->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(d.find("c")->file->path().filename(), "s2.safetensors");
  EXPECT_EQ(d.find("zz"), nullptr);
}

TEST_F(ShardedDir, MissingShard) {
  index(R"({"a": "s1.safetensors", "b": "s2.safetensors", "c": "s3.safetensors"})");
  EXPECT_THAT(error_of([&] { SafetensorsDir d(tmp.path()); }),
              HasSubstr("shard 's3.safetensors' (listed for tensor 'c') does not exist"));
}

TEST_F(ShardedDir, TensorMissingFromItsShard) {
  index(R"({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"})");
  EXPECT_THAT(error_of([&] { SafetensorsDir d(tmp.path()); }),
              HasSubstr("tensor 'b' is listed for shard 's1.safetensors' but missing from that shard"));
}

TEST_F(ShardedDir, TensorNotListed) {
  index(R"({"a": "s1.safetensors", "b": "s2.safetensors"})");
  EXPECT_THAT(error_of([&] { SafetensorsDir d(tmp.path()); }),
              HasSubstr("tensor 'c' is in shard 's2.safetensors' but the index does not list it"));
}

TEST_F(ShardedDir, BadIndex) {
  index(R"({"a": "../s1.safetensors"})");
  EXPECT_THAT(error_of([&] { SafetensorsDir d(tmp.path()); }), HasSubstr("is not a plain file name"));
  index(R"(["a"])");
  EXPECT_THAT(error_of([&] { SafetensorsDir d(tmp.path()); }), HasSubstr("weight_map must be an object"));
  testing::write_text(tmp / kSafetensorsIndex, R"({"metadata": {}})");
  EXPECT_THAT(error_of([&] { SafetensorsDir d(tmp.path()); }), HasSubstr("missing key 'weight_map'"));
}

TEST_F(ShardedDir, AmbiguousOrEmptyDirectory) {
  index(R"({"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"})");
  fs::copy_file(tmp / "s1.safetensors", tmp / kSafetensorsFile);
  EXPECT_THAT(error_of([&] { SafetensorsDir d(tmp.path()); }), HasSubstr("one of them is stale"));
  TempDir empty;
  EXPECT_THAT(error_of([&] { SafetensorsDir d(empty.path()); }), HasSubstr("not a safetensors checkpoint"));
}

}  // namespace
}  // namespace tl
