// GGUF v3 files (reference §3; docs/gguf.md): magic "GGUF", u32 version 3, u64 tensor count, u64 KV count,
// the metadata KV pairs, the tensor infos (name, n_dims, dims in ggml order, ggml type, offset), padding to
// `general.alignment` (default 32), then the tensor data. Little-endian only. Reading maps the file; every
// count, length, dimension and offset is checked against the remaining bytes before it is used.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/error.hpp"
#include "core/file.hpp"

namespace tl {

inline constexpr uint32_t kGgufVersion = 3;
inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr uint32_t kGgufMaxDims = 4;           // GGML_MAX_DIMS
inline constexpr uint64_t kGgufMaxKeyLength = 65535;  // spec: keys are at most 65535 bytes
inline constexpr uint64_t kGgufMaxNameLength = 63;    // GGML_MAX_NAME = 64 including the NUL

// ---- metadata ----

// Value type ids, in file order; they are also the std::variant indices of GgufValue.
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
const char* gguf_type_name(GgufType t);

class GgufValue;
// An array of scalars or strings (nested arrays are refused by reader and writer).
struct GgufArray {
  GgufType elem = GgufType::U8;
  std::vector<GgufValue> items;
};

class GgufValue {
 public:
  using Variant = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                               std::string, GgufArray, uint64_t, int64_t, double>;
  GgufValue() = default;
  template <class T>
  requires std::is_constructible_v<Variant, T> GgufValue(T v) : v_(std::move(v)) {}
  GgufValue(const char* s) : v_(std::string(s)) {}

  GgufType type() const { return GgufType(v_.index()); }
  const Variant& variant() const { return v_; }
  template <class T>
  const T* get_if() const {
    return std::get_if<T>(&v_);
  }
  bool operator==(const GgufValue& o) const;

 private:
  Variant v_;
};
inline bool operator==(const GgufArray& a, const GgufArray& b) {
  return a.elem == b.elem && a.items == b.items;
}

// An array of T (a scalar type or std::string) as a GgufValue.
template <class T>
GgufValue gguf_array(const std::vector<T>& xs);

// Key-value pairs in file order.
using GgufMetadata = std::vector<std::pair<std::string, GgufValue>>;

// ---- ggml tensor types: the one table of block sizes lives in gguf.cpp ----

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  I2_S = 36,  // bitnet.cpp fork only (mainline: the removed IQ4_NL_4_4); reference §3.2
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;
  uint32_t block_size;  // elements per block; ne0 must be a multiple of it
  uint32_t type_size;   // bytes per block
};
// nullptr for an id not in the table.
const GgmlTypeInfo* ggml_type_info(uint32_t id);
const char* ggml_type_name(GgmlType t);
// Bytes of a tensor of type t with these dims (ggml order); tl::Error naming `what` if the dims do not fit
// the type's block size, or the size overflows. I2_S is numel/4 + 32 (2-bit codes, then a 32-byte scale
// tail).
uint64_t ggml_nbytes(GgmlType t, std::span<const uint64_t> dims, std::string_view what);

// ---- reading ----

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<uint64_t> dims;  // ggml order: dims[0] is the innermost (contiguous) one
  uint64_t offset = 0;         // relative to the data section
  uint64_t nbytes = 0;
  uint64_t numel() const;
};

struct GgufHeader {
  uint32_t version = kGgufVersion;
  GgufMetadata metadata;                // file order
  std::vector<GgufTensorInfo> tensors;  // file order
  uint32_t alignment = kGgufDefaultAlignment;
  uint64_t data_start = 0;  // file offset of the data section (aligned)
};

// Parses and checks a whole file image. `what` names the source in error messages. Throws tl::Error.
GgufHeader parse_gguf(std::span<const uint8_t> file, std::string_view what);

// A memory-mapped GGUF file.
class GgufFile {
 public:
  explicit GgufFile(const fs::path& path);
  // Parses an image held in memory (which must outlive this object); `what` names it in messages.
  GgufFile(std::span<const uint8_t> image, std::string_view what);

  const std::string& what() const { return what_; }
  const GgufHeader& header() const { return header_; }
  const GgufMetadata& metadata() const { return header_.metadata; }
  const std::vector<GgufTensorInfo>& tensors() const { return header_.tensors; }
  uint32_t alignment() const { return header_.alignment; }

  const GgufValue* find(std::string_view key) const;  // nullptr if absent
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  // The value of `key` as T (uint8_t .. double, bool, std::string, GgufArray); tl::Error naming the file and
  // key if it is missing or of another type. No conversions.
  template <class T>
  const T& get(std::string_view key) const;
  template <class T>
  T get_or(std::string_view key, T fallback) const;
  // An array whose elements must be of type `elem`.
  const GgufArray& get_array(std::string_view key, GgufType elem) const;

  const GgufTensorInfo* find_tensor(std::string_view name) const;  // nullptr if absent
  const GgufTensorInfo& tensor(std::string_view name) const;       // tl::Error if absent
  std::span<const uint8_t> bytes(const GgufTensorInfo& t) const;

 private:
  void index();
  const GgufValue& require(std::string_view key) const;
  [[noreturn]] void type_mismatch(std::string_view key, GgufType want, const GgufValue& v) const;

  MappedFile map_;
  std::span<const uint8_t> image_;
  std::string what_;
  GgufHeader header_;
  std::map<std::string, size_t, std::less<>> kv_index_, tensor_index_;
};

// ---- writing ----

struct GgufTensorSpec {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<uint64_t> dims;  // ggml order
};
struct GgufTensorBlob {
  GgufTensorSpec spec;
  std::span<const uint8_t> data;
};

// Everything before the data section: header, metadata, tensor infos (offsets laid out back to back, each
// aligned), zero padding to the alignment. The alignment is `general.alignment` if present (u32, a power of
// two), else 32. Checks keys and names (non-empty, unique, length limits), arrays (one element type, no
// nesting) and tensor dims/types.
std::string gguf_header_bytes(const GgufMetadata& metadata, std::span<const GgufTensorSpec> tensors);

// Writes a GGUF file into an open AtomicFile (the caller commits): the header, then for each tensor
// `write_tensor(i, file)`, which must write exactly its ggml_nbytes (checked), each followed by zero padding.
void write_gguf(AtomicFile& out, const GgufMetadata& metadata, std::span<const GgufTensorSpec> tensors,
                const std::function<void(size_t, AtomicFile&)>& write_tensor);

// In-memory tensors: as bytes, or written atomically to `path`.
std::vector<uint8_t> gguf_bytes(const GgufMetadata& metadata, std::span<const GgufTensorBlob> tensors);
void write_gguf(const fs::path& path, const GgufMetadata& metadata, std::span<const GgufTensorBlob> tensors);

// ---- templates ----

template <class T>
GgufValue gguf_array(const std::vector<T>& xs) {
  GgufArray a;
  a.elem = GgufValue(T{}).type();
  a.items.reserve(xs.size());
  for (const auto& x : xs) a.items.emplace_back(x);
  return GgufValue(std::move(a));
}

template <class T>
const T& GgufFile::get(std::string_view key) const {
  const GgufValue& v = require(key);
  if (const T* p = v.get_if<T>()) return *p;
  type_mismatch(key, GgufValue(T{}).type(), v);
}

template <class T>
T GgufFile::get_or(std::string_view key, T fallback) const {
  return find(key) ? get<T>(key) : fallback;
}

}  // namespace tl
