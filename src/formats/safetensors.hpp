// safetensors files (reference §2): 8-byte little-endian header length N, N bytes of UTF-8 JSON
// {"__metadata__": {str: str}, "<name>": {"dtype", "shape", "data_offsets": [begin, end]}, ...}, then the
// data buffer, to which data_offsets are relative. Reading maps the file; every header field is checked
// before use.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.hpp"
#include "core/file.hpp"

namespace tl {

inline constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;  // the reference implementation's limit

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;   // [] for a scalar
  uint64_t begin = 0, end = 0;  // byte range in the data buffer; end is one past the last byte
  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// "[640, 2560]"
std::string shape_str(std::span<const int64_t> shape);

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in header order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data buffer (8 + N)
};

// Parses and checks a whole file image held in memory. `what` names the source in error messages.
// Checks: length prefix and header size, JSON validity, field names and types, dtypes, shapes, offsets inside
// the buffer, size = numel * dtype size, no overlapping tensors, no duplicate names. Gaps between tensors and
// bytes after the last one are allowed (they cannot be misread). Throws tl::Error.
SafetensorsHeader parse_safetensors(std::span<const uint8_t> file, std::string_view what);

// The same checks on the JSON header alone, against a data buffer of `data_size` bytes.
SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t data_size, std::string_view what);

// Converts n little-endian F32 / F16 / BF16 values to fp32 (other dtypes: tl::Error naming `what`).
void convert_to_f32(DType dtype, const uint8_t* src, size_t n, float* dst, std::string_view what);
bool is_float_dtype(DType t);

// A memory-mapped safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const fs::path& path);

  const fs::path& path() const { return map_.path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(std::string_view name) const;  // nullptr if absent
  std::span<const uint8_t> bytes(const TensorInfo& t) const;
  // F32 / F16 / BF16 -> fp32.
  std::vector<float> read_f32(const TensorInfo& t) const;
  void read_f32(const TensorInfo& t, std::span<float> out) const;

 private:
  MappedFile map_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
};

// The tensors of a checkpoint directory: `model.safetensors`, or `model.safetensors.index.json`
// ({"weight_map": {tensor: shard file}}) and its shards. Every tensor listed in the index must be in its
// shard, every tensor of a shard must be listed for that shard, and each name appears once.
class SafetensorsDir {
 public:
  explicit SafetensorsDir(const fs::path& dir);

  struct Ref {
    const SafetensorsFile* file = nullptr;
    const TensorInfo* info = nullptr;
  };
  const Ref* find(std::string_view name) const;  // nullptr if absent
  const std::vector<std::string>& names() const { return names_; }
  size_t num_files() const { return files_.size(); }
  bool sharded() const { return sharded_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Ref, std::less<>> index_;
  std::vector<std::string> names_;  // file order, then header order
  bool sharded_ = false;
};

inline constexpr const char* kSafetensorsFile = "model.safetensors";
inline constexpr const char* kSafetensorsIndex = "model.safetensors.index.json";

// Writing. Tensors are laid out back to back in the order given.
struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

// The file prefix: 8-byte length + JSON header padded with spaces so that the data buffer starts 8-aligned.
std::string safetensors_header_bytes(std::span<const TensorSpec> tensors,
                                     const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes a safetensors file into an open AtomicFile (the caller commits): the header, then for each tensor
// `write_tensor(i, file)`, which must write exactly tensors[i].nbytes() bytes (checked).
void write_safetensors(AtomicFile& out, std::span<const TensorSpec> tensors,
                       const std::function<void(size_t, AtomicFile&)>& write_tensor,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// In-memory tensors, written atomically to `path`.
struct TensorBlob {
  TensorSpec spec;
  std::span<const uint8_t> data;
};
void write_safetensors(const fs::path& path, std::span<const TensorBlob> tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace tl
