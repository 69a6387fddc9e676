// GGUF v3 reader / writer: round trips, the type table, and malformed files, each with the message it must
// give.
#include "formats/gguf.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "../common/test_util.hpp"
#include "core/rng.hpp"

namespace tl {
namespace {

using ::testing::HasSubstr;

using test::error_of;

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("ternlab-gguf-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 7);
  return v;
}

std::string parse_error(const std::vector<uint8_t>& img) {
  return error_of([&] { parse_gguf(img, "x.gguf"); });
}

// A hand-built GGUF image, for headers the writer refuses to produce.
struct Raw {
  std::vector<uint8_t> b;
  template <class T>
  Raw& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof v);
    return *this;
  }
  Raw& str(std::string_view s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Raw& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
    return *this;
  }
  Raw& kv_u32(std::string_view key, uint32_t v) { return str(key).put<uint32_t>(4).put<uint32_t>(v); }
  Raw& tensor(std::string_view name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    str(name).put<uint32_t>(uint32_t(dims.size()));
    for (auto d : dims) put<uint64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  Raw& pad(size_t a = 32) {
    b.resize((b.size() + a - 1) / a * a, 0);
    return *this;
  }
  Raw& data(size_t n) {
    b.resize(b.size() + n, 0xab);
    return *this;
  }
};

GgufMetadata all_metadata() {
  return {
      {"general.architecture", GgufValue("bitnet-b1.58")},
      {"t.u8", GgufValue(uint8_t(200))},
      {"t.i8", GgufValue(int8_t(-100))},
      {"t.u16", GgufValue(uint16_t(60000))},
      {"t.i16", GgufValue(int16_t(-30000))},
      {"t.u32", GgufValue(uint32_t(4000000000u))},
      {"t.i32", GgufValue(int32_t(-2000000000))},
      {"t.f32", GgufValue(1.5f)},
      {"t.bool", GgufValue(true)},
      {"t.bool_false", GgufValue(false)},
      {"t.string", GgufValue(std::string("héllo\0world", 12))},
      {"t.empty_string", GgufValue(std::string())},
      {"t.u64", GgufValue(uint64_t(1) << 60)},
      {"t.i64", GgufValue(-(int64_t(1) << 60))},
      {"t.f64", GgufValue(-2.25e300)},
      {"t.arr_u8", gguf_array(std::vector<uint8_t>{1, 2, 255})},
      {"t.arr_i8", gguf_array(std::vector<int8_t>{-1, 0, 127})},
      {"t.arr_u16", gguf_array(std::vector<uint16_t>{1, 65535})},
      {"t.arr_i16", gguf_array(std::vector<int16_t>{-32768, 5})},
      {"t.arr_u32", gguf_array(std::vector<uint32_t>{7})},
      {"t.arr_i32", gguf_array(std::vector<int32_t>{-7, 8, 9})},
      {"t.arr_f32", gguf_array(std::vector<float>{0.5f, -0.0f, 1e-30f})},
      {"t.arr_bool", gguf_array(std::vector<bool>{true, false, true})},
      {"t.arr_string", gguf_array(std::vector<std::string>{"a", "", "Ġtoken"})},
      {"t.arr_u64", gguf_array(std::vector<uint64_t>{UINT64_MAX})},
      {"t.arr_i64", gguf_array(std::vector<int64_t>{INT64_MIN, 3})},
      {"t.arr_f64", gguf_array(std::vector<double>{3.25, -1.0})},
      {"t.arr_empty", gguf_array(std::vector<int32_t>{})},
  };
}

struct Owned {
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<GgufTensorBlob> blobs;
  void add(std::string name, GgmlType type, std::vector<uint64_t> dims) {
    const uint64_t n = ggml_nbytes(type, dims, name);
    bufs.push_back(pattern(size_t(n), uint8_t(bufs.size() * 31 + 1)));
    blobs.push_back({{std::move(name), type, std::move(dims)}, {}});
    for (size_t i = 0; i < blobs.size(); ++i) blobs[i].data = bufs[i];
  }
};

Owned several_tensors() {
  Owned o;
  o.add("token_embd.weight", GgmlType::F16, {8, 3});
  o.add("output_norm.weight", GgmlType::F32, {5});
  o.add("blk.0.attn_q.weight", GgmlType::TQ2_0, {256, 2});
  o.add("blk.0.attn_k.weight", GgmlType::TQ1_0, {512, 1, 1});
  o.add("blk.0.ffn_up.weight", GgmlType::I2_S, {128, 3});
  o.add("bf16", GgmlType::BF16, {3, 1, 1, 2});
  o.add("q8", GgmlType::Q8_0, {64, 2});
  o.add("i8", GgmlType::I8, {7});
  o.add("i16", GgmlType::I16, {3});
  o.add("i32", GgmlType::I32, {2, 2});
  return o;
}

// A small valid file: a few keys of different kinds and two tensors.
std::vector<uint8_t> small_file() {
  Owned o;
  o.add("a", GgmlType::F32, {3, 2});
  o.add("b", GgmlType::Q8_0, {32});
  GgufMetadata md = {{"general.architecture", GgufValue("bitnet")},
                     {"k.u32", GgufValue(uint32_t(7))},
                     {"k.arr", gguf_array(std::vector<std::string>{"x", "yz"})},
                     {"k.f32s", gguf_array(std::vector<float>{1, 2})},
                     {"k.b", GgufValue(true)}};
  return gguf_bytes(md, o.blobs);
}

// ---- round trips ----

TEST(Gguf, RoundTripEveryMetadataTypeAndSeveralTensorTypes) {
  TempDir tmp;
  const auto md = all_metadata();
  const Owned o = several_tensors();
  write_gguf(tmp / "m.gguf", md, o.blobs);

  GgufFile f(tmp / "m.gguf");
  EXPECT_EQ(f.header().version, 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.header().data_start % 32, 0u);
  ASSERT_EQ(f.metadata().size(), md.size());
  for (size_t i = 0; i < md.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].first, md[i].first);
    EXPECT_TRUE(f.metadata()[i].second == md[i].second) << md[i].first;
  }
  ASSERT_EQ(f.tensors().size(), o.blobs.size());
  for (size_t i = 0; i < o.blobs.size(); ++i) {
    const auto& t = f.tensors()[i];
    EXPECT_EQ(t.name, o.blobs[i].spec.name);
    EXPECT_EQ(t.type, o.blobs[i].spec.type);
    EXPECT_EQ(t.dims, o.blobs[i].spec.dims);
    EXPECT_EQ(t.offset % 32, 0u);
    const auto b = f.bytes(t);
    EXPECT_TRUE(std::equal(b.begin(), b.end(), o.bufs[i].begin(), o.bufs[i].end())) << t.name;
  }
  // The file and the in-memory image are the same bytes.
  std::ifstream in(tmp / "m.gguf", std::ios::binary);
  const std::vector<uint8_t> disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(disk, gguf_bytes(md, o.blobs));
  EXPECT_EQ(disk.size() % 32, 0u);
}

TEST(Gguf, TypedGetters) {
  const auto img = gguf_bytes(all_metadata(), {});
  GgufFile f(img, "m.gguf");
  EXPECT_EQ(f.get<std::string>("general.architecture"), "bitnet-b1.58");
  EXPECT_EQ(f.get<uint32_t>("t.u32"), 4000000000u);
  EXPECT_EQ(f.get<int64_t>("t.i64"), -(int64_t(1) << 60));
  EXPECT_EQ(f.get<double>("t.f64"), -2.25e300);
  EXPECT_EQ(f.get<bool>("t.bool"), true);
  EXPECT_EQ(f.get_or<uint32_t>("absent", 9u), 9u);
  EXPECT_EQ(f.get_or<uint8_t>("t.u8", 9), 200);
  const auto& a = f.get_array("t.arr_string", GgufType::String);
  ASSERT_EQ(a.items.size(), 3u);
  EXPECT_EQ(*a.items[2].get_if<std::string>(), "Ġtoken");
  EXPECT_TRUE(f.get_array("t.arr_empty", GgufType::I32).items.empty());

  EXPECT_THAT(error_of([&] { f.get<uint64_t>("t.u32"); }),
              HasSubstr("m.gguf: metadata key 't.u32': expected u64, found u32"));
  EXPECT_THAT(error_of([&] { f.get<std::string>("t.arr_string"); }),
              HasSubstr("expected string, found array"));
  EXPECT_THAT(error_of([&] { f.get<uint32_t>("nope"); }), HasSubstr("m.gguf: missing metadata key 'nope'"));
  EXPECT_THAT(error_of([&] { f.get_array("t.arr_f32", GgufType::F64); }),
              HasSubstr("expected an array of f64, found an array of f32"));
  EXPECT_THAT(error_of([&] { f.tensor("w"); }), HasSubstr("no tensor named 'w'"));
  EXPECT_EQ(f.find_tensor("w"), nullptr);
}

TEST(Gguf, AlignmentOtherThan32) {
  for (uint32_t align : {1u, 8u, 64u, 256u}) {
    Owned o;
    o.add("a", GgmlType::I8, {3});
    o.add("b", GgmlType::F16, {5});
    o.add("c", GgmlType::TQ2_0, {256});
    GgufMetadata md = {{"general.alignment", GgufValue(align)}};
    const auto img = gguf_bytes(md, o.blobs);
    GgufFile f(img, "m.gguf");
    EXPECT_EQ(f.alignment(), align);
    EXPECT_EQ(f.header().data_start % align, 0u);
    for (size_t i = 0; i < 3; ++i) {
      const auto& t = f.tensors()[i];
      EXPECT_EQ(t.offset % align, 0u);
      const auto b = f.bytes(t);
      EXPECT_TRUE(std::equal(b.begin(), b.end(), o.bufs[i].begin(), o.bufs[i].end()));
    }
    if (align == 64) {
      EXPECT_EQ(f.tensors()[1].offset, 64u);
    }
  }
}

TEST(Gguf, TypeTable) {
  const std::vector<uint64_t> d256x2{256, 2}, d64{64}, d128x3{128, 3}, d7{7};
  EXPECT_EQ(ggml_nbytes(GgmlType::TQ2_0, d256x2, "t"), 132u);
  EXPECT_EQ(ggml_nbytes(GgmlType::TQ1_0, d256x2, "t"), 108u);
  EXPECT_EQ(ggml_nbytes(GgmlType::Q8_0, d64, "t"), 68u);
  EXPECT_EQ(ggml_nbytes(GgmlType::I2_S, d128x3, "t"), 96u + 32u);
  EXPECT_EQ(ggml_nbytes(GgmlType::BF16, d7, "t"), 14u);
  EXPECT_EQ(ggml_nbytes(GgmlType::I32, d7, "t"), 28u);
  // 2B-4T's ffn_down as I2_S: 4,423,680 + 32 bytes (reference §3.4).
  const std::vector<uint64_t> down{6912, 2560};
  EXPECT_EQ(ggml_nbytes(GgmlType::I2_S, down, "t"), 4423680u + 32u);
  EXPECT_EQ(ggml_type_info(36)->name, std::string("I2_S"));
  EXPECT_EQ(ggml_type_info(37), nullptr);
  const std::vector<uint64_t> bad{320};
  EXPECT_THAT(error_of([&] { ggml_nbytes(GgmlType::TQ2_0, bad, "w"); }),
              HasSubstr("TQ2_0 rows need ne0 to be a multiple of 256"));
}

// ---- malformed files ----

TEST(Gguf, EveryTruncationIsACleanError) {
  const auto img = small_file();
  const auto h = parse_gguf(img, "x");
  uint64_t end = 0;
  for (const auto& t : h.tensors) end = std::max(end, h.data_start + t.offset + t.nbytes);
  ASSERT_LT(end, img.size());  // the last tensor is padded
  for (size_t n = 0; n < img.size(); ++n) {
    const std::vector<uint8_t> prefix(img.begin(), img.begin() + n);
    bool threw = false;
    try {
      parse_gguf(prefix, "x.gguf");
    } catch (const Error& e) {
      threw = true;
      EXPECT_THAT(e.what(), HasSubstr("x.gguf")) << n;
    } catch (...) {
      ADD_FAILURE() << "prefix " << n << ": exception other than tl::Error";
    }
    EXPECT_EQ(threw, n < end) << "prefix length " << n;
  }
}

TEST(Gguf, RandomCorruptionNeverCrashes) {
  const auto img = small_file();
  Rng rng(42);
  int ok = 0;
  for (int it = 0; it < 3000; ++it) {
    auto m = img;
    const int flips = 1 + int(rng.below(4));
    for (int k = 0; k < flips; ++k) m[rng.below(m.size())] = uint8_t(rng.next_u64());
    try {
      const auto h = parse_gguf(m, "x");
      for (const auto& t : h.tensors) ASSERT_LE(h.data_start + t.offset + t.nbytes, m.size());
      ++ok;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(ok, 0);  // flips in tensor data or values leave a valid file
}

TEST(Gguf, BadMagicAndVersion) {
  auto img = small_file();
  img[0] = 'X';
  EXPECT_THAT(parse_error(img), HasSubstr("bad magic"));
  EXPECT_THAT(parse_error(Raw().header(0, 0, 2).b),
              HasSubstr("x.gguf: GGUF version 2 is not supported, only version 3"));
  EXPECT_THAT(parse_error(Raw().header(0, 0, 1).b), HasSubstr("GGUF version 1 is not supported"));
  EXPECT_THAT(parse_error(Raw().header(0, 0, 0x03000000u).b), HasSubstr("big-endian"));
  EXPECT_THAT(parse_error({'G', 'G'}), HasSubstr("too short for the GGUF magic"));
  EXPECT_THAT(parse_error({}), HasSubstr("too short"));
  // The minimal file: header only.
  EXPECT_NO_THROW(parse_gguf(Raw().header(0, 0).b, "x"));
}

TEST(Gguf, HugeCounts) {
  EXPECT_THAT(parse_error(Raw().header(0, UINT64_MAX).b), HasSubstr("metadata KV count"));
  EXPECT_THAT(parse_error(Raw().header(UINT64_MAX, 0).b), HasSubstr("tensor count"));
  EXPECT_THAT(parse_error(Raw().header(1u << 20, 0).data(100).b), HasSubstr("cannot fit"));
  // An array claiming 2^62 elements.
  Raw r;
  r.header(0, 1).str("a").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(uint64_t(1) << 62);
  EXPECT_THAT(parse_error(r.b), HasSubstr("key 'a': array of 4611686018427387904 u32 elements cannot fit"));
  // An array of strings whose count exceeds bytes / 8.
  Raw s;
  s.header(0, 1).str("a").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(3).data(16);
  EXPECT_THAT(parse_error(s.b), HasSubstr("cannot fit"));
}

TEST(Gguf, StringLengths) {
  Raw r;
  r.header(0, 1).put<uint64_t>(1000).data(20);
  EXPECT_THAT(parse_error(r.b), HasSubstr("metadata KV 0: key needs 1000 bytes"));
  Raw big;
  big.header(0, 1).put<uint64_t>(70000).data(70100);
  EXPECT_THAT(parse_error(big.b), HasSubstr("key has length 70000, more than the limit of 65535"));
  Raw v;
  v.header(0, 1).str("k").put<uint32_t>(8).put<uint64_t>(UINT64_MAX - 3).data(8);
  EXPECT_THAT(parse_error(v.b), HasSubstr("key 'k': string value needs 18446744073709551612 bytes"));
  Raw e;
  e.header(0, 1).str("").put<uint32_t>(4).put<uint32_t>(1);
  EXPECT_THAT(parse_error(e.b), HasSubstr("empty key"));
  Raw n;
  n.header(1, 0).tensor(std::string(64, 'n'), {4}, 0, 0).pad().data(16);
  EXPECT_THAT(parse_error(n.b), HasSubstr("name has length 64, more than the limit of 63"));
}

TEST(Gguf, BadValues) {
  Raw t;
  t.header(0, 1).str("k").put<uint32_t>(13).put<uint32_t>(0);
  EXPECT_THAT(parse_error(t.b), HasSubstr("key 'k': unknown value type 13"));
  Raw nested;
  nested.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(0);
  EXPECT_THAT(parse_error(nested.b), HasSubstr("key 'k': nested arrays are not supported"));
  Raw b;
  b.header(0, 1).str("k").put<uint32_t>(7).put<uint8_t>(2);
  EXPECT_THAT(parse_error(b.b), HasSubstr("key 'k': bool value is 2, expected 0 or 1"));
  Raw bad_elem;
  bad_elem.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(99).put<uint64_t>(0);
  EXPECT_THAT(parse_error(bad_elem.b), HasSubstr("unknown array element type 99"));
}

TEST(Gguf, DuplicateKeyAndTensor) {
  Raw k;
  k.header(0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2);
  EXPECT_THAT(parse_error(k.b), HasSubstr("x.gguf: key 'a.b': duplicate key"));
  Raw t;
  t.header(2, 0).tensor("w", {4}, 0, 0).tensor("w", {4}, 0, 32).pad().data(64);
  EXPECT_THAT(parse_error(t.b), HasSubstr("tensor 'w': duplicate tensor name"));
}

TEST(Gguf, Alignment) {
  Raw np2;
  np2.header(0, 1).kv_u32("general.alignment", 48);
  EXPECT_THAT(parse_error(np2.b), HasSubstr("'general.alignment': 48 is not a power of two"));
  Raw zero;
  zero.header(0, 1).kv_u32("general.alignment", 0);
  EXPECT_THAT(parse_error(zero.b), HasSubstr("0 is not a power of two"));
  Raw ty;
  ty.header(0, 1).str("general.alignment").put<uint32_t>(10).put<uint64_t>(32);
  EXPECT_THAT(parse_error(ty.b), HasSubstr("'general.alignment': expected u32, found u64"));
  // alignment 64 is read before the tensor infos that follow it: offset 32 is then misaligned
  Raw mis;
  mis.header(1, 1).kv_u32("general.alignment", 64).tensor("w", {4}, 0, 32).pad(64).data(128);
  EXPECT_THAT(parse_error(mis.b), HasSubstr("tensor 'w': offset 32 is not a multiple of the alignment 64"));
}

TEST(Gguf, TensorInfos) {
  auto one = [](std::vector<uint64_t> dims, uint32_t type, uint64_t offset, size_t data) {
    return parse_error(Raw().header(1, 0).tensor("w", dims, type, offset).pad().data(data).b);
  };
  EXPECT_THAT(one({1, 1, 1, 1, 1}, 0, 0, 32), HasSubstr("tensor 'w': n_dims is 5, at most 4 are supported"));
  EXPECT_THAT(one({4, 0}, 0, 0, 32), HasSubstr("dimension 1 is 0, must be positive"));
  EXPECT_THAT(one({4}, 37, 0, 32), HasSubstr("tensor 'w': unknown ggml type id 37"));
  EXPECT_THAT(one({4}, 1000, 0, 32), HasSubstr("unknown ggml type id 1000"));
  EXPECT_THAT(one({uint64_t(1) << 32, uint64_t(1) << 32}, 0, 0, 32), HasSubstr("element count overflows"));
  EXPECT_THAT(one({uint64_t(1) << 62}, 0, 0, 32), HasSubstr("byte size overflows"));
  EXPECT_THAT(one({100}, 35, 0, 32), HasSubstr("TQ2_0 rows need ne0 to be a multiple of 256"));
  EXPECT_THAT(one({6}, 36, 0, 64),
              HasSubstr("I2_S tensor with dims {6} has 6 elements, not a multiple of 4"));
  EXPECT_THAT(one({4}, 0, 16, 64), HasSubstr("offset 16 is not a multiple of the alignment 32"));
  EXPECT_THAT(one({4}, 0, 32, 40),
              HasSubstr("tensor 'w' (F32 {4}): data [32, 48) lies outside the data section"));
  EXPECT_THAT(one({4}, 0, 0, 15), HasSubstr("lies outside"));
  EXPECT_THAT(one({4}, 0, UINT64_MAX - 31, 64), HasSubstr("lies outside"));
  EXPECT_NO_THROW(parse_gguf(Raw().header(1, 0).tensor("w", {4}, 0, 0).pad().data(16).b, "x"));
  EXPECT_NO_THROW(parse_gguf(Raw().header(1, 0).tensor("s", {}, 0, 0).pad().data(4).b, "x"));  // scalar
}

TEST(Gguf, OverlappingTensors) {
  Raw r;
  r.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad().data(128);
  EXPECT_THAT(parse_error(r.b), HasSubstr("tensors 'a' [0, 64) and 'b' [32, 48) overlap"));
  Raw same;
  same.header(2, 0).tensor("a", {4}, 0, 0).tensor("b", {4}, 0, 0).pad().data(32);
  EXPECT_THAT(parse_error(same.b), HasSubstr("overlap"));
  Raw gap;  // gaps and any order are fine
  gap.header(2, 0).tensor("a", {4}, 0, 64).tensor("b", {4}, 0, 0).pad().data(96);
  EXPECT_NO_THROW(parse_gguf(gap.b, "x"));
}

// The fuzz seeds (tests/fuzz/seeds/fuzz_gguf/) are valid files: a corpus of rejected inputs would fuzz
// little.
TEST(Gguf, FuzzSeedsAreValid) {
  const fs::path dir = fs::path(TERNLAB_SOURCE_DIR) / "tests/fuzz/seeds/fuzz_gguf";
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    GgufFile f(e.path());
    for (const auto& t : f.tensors()) EXPECT_EQ(f.bytes(t).size(), t.nbytes);
    ++n;
  }
  EXPECT_GE(n, 3u);
  GgufFile f(dir / "align64_tq2_i2s.gguf");
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.tensor("blk.0.ffn_up.weight").type, GgmlType::I2_S);
  EXPECT_EQ(f.tensor("blk.0.ffn_up.weight").nbytes, 96u);
  EXPECT_EQ(GgufFile(dir / "metadata_f32_q8.gguf").get_array("k.strs", GgufType::String).items.size(), 2u);
}

// ---- writer ----

TEST(GgufWriter, RefusesBadInput) {
  const std::vector<uint8_t> four(4);
  const std::vector<GgufTensorBlob> none;
  EXPECT_THAT(error_of([&] {
                gguf_bytes({{"a", GgufValue(1)}, {"a", GgufValue(2)}}, none);
              }),
              HasSubstr("duplicate key 'a'"));
  GgufArray nested{GgufType::Array, {}};
  EXPECT_THAT(error_of([&] { gguf_bytes({{"a", GgufValue(nested)}}, none); }), HasSubstr("nested arrays"));
  GgufArray mixed{GgufType::U8, {GgufValue(uint8_t(1)), GgufValue(2.0)}};
  EXPECT_THAT(error_of([&] {
                gguf_bytes({{"a", GgufValue(mixed)}}, none);
              }),
              HasSubstr("key 'a': array of u8 holds a f64 element"));
  EXPECT_THAT(error_of([&] {
                gguf_bytes({{"general.alignment", GgufValue(uint32_t(24))}}, none);
              }),
              HasSubstr("not a power of two"));
  EXPECT_THAT(error_of([&] {
                gguf_bytes({{"general.alignment", GgufValue(int32_t(32))}}, none);
              }),
              HasSubstr("must be u32"));
  const std::vector<GgufTensorBlob> wrong{{{"w", GgmlType::F32, {2}}, four}};
  EXPECT_THAT(error_of([&] { gguf_bytes({}, wrong); }),
              HasSubstr("tensor 'w' (F32 {2}): 4 bytes given, expected 8"));
  const std::vector<GgufTensorBlob> dup{{{"w", GgmlType::I8, {4}}, four}, {{"w", GgmlType::I8, {4}}, four}};
  EXPECT_THAT(error_of([&] { gguf_bytes({}, dup); }), HasSubstr("duplicate tensor name 'w'"));
  const std::vector<GgufTensorBlob> rows{{{"w", GgmlType::TQ1_0, {4}}, four}};
  EXPECT_THAT(error_of([&] { gguf_bytes({}, rows); }), HasSubstr("multiple of 256"));
}

TEST(GgufWriter, FailureLeavesExistingFileIntact) {
  TempDir tmp;
  const auto path = tmp / "m.gguf";
  const std::vector<uint8_t> eight(8), four(4);
  const std::vector<GgufTensorBlob> good{{{"w", GgmlType::F32, {2}}, eight}};
  write_gguf(path, {{"k", GgufValue(uint32_t(1))}}, good);
  const auto size = fs::file_size(path);
  // The streaming writer checks the byte count of each tensor after the callback.
  const std::vector<GgufTensorSpec> specs{{"w", GgmlType::F32, {2}}};
  EXPECT_THAT(error_of([&] {
                AtomicFile f(path);
                write_gguf(f, {}, specs, [&](size_t, AtomicFile& o) { o.write(four.data(), 4); });
                f.commit();
              }),
              HasSubstr("tensor 'w' (F32 {2}): wrote 4 bytes, expected 8"));
  EXPECT_EQ(fs::file_size(path), size);
  EXPECT_EQ(GgufFile(path).get<uint32_t>("k"), 1u);
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(path.parent_path())) ++entries;
  EXPECT_EQ(entries, 1u);  // no temporary left behind
}

}  // namespace
}  // namespace tl
