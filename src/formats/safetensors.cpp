#include "formats/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>

#include "core/error.hpp"
#include "core/half.hpp"
#include "formats/json_strict.hpp"

namespace tl {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; so is this reader");

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= uint64_t(d);  // checked for overflow when parsed
  return n;
}

std::string shape_str(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

std::string all_dtype_names() {
  std::string s;
  for (int i = 0; i <= int(DType::Bool); ++i) {
    if (i) s += ' ';
    s += dtype_name(DType(i));
  }
  return s;
}

// A non-negative JSON integer (nlohmann stores those as unsigned); `field` names it in messages.
uint64_t get_uint(const ordered_json& v, std::string_view what, const std::string& tensor,
                  std::string_view field) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer())
    fail("{}: tensor '{}': {} must be non-negative, found {}", what, tensor, field, v.dump());
  fail("{}: tensor '{}': {} must be an integer, found {} {}", what, tensor, field, json_kind(v), v.dump());
}

TensorInfo parse_tensor_entry(const std::string& name, const ordered_json& v, uint64_t data_size,
                              std::string_view what) {
  TL_CHECK(v.is_object(), "{}: tensor '{}': expected an object with dtype, shape, data_offsets, found {}",
           what, name, json_kind(v));
  for (const auto& [k, _] : v.items())
    TL_CHECK(k == "dtype" || k == "shape" || k == "data_offsets",
             "{}: tensor '{}': unexpected field '{}' (expected dtype, shape, data_offsets)", what, name, k);
  for (const char* k : {"dtype", "shape", "data_offsets"})
    TL_CHECK(v.contains(k), "{}: tensor '{}': missing field '{}'", what, name, k);

  TensorInfo t;
  t.name = name;
  const auto& dt = v["dtype"];
  TL_CHECK(dt.is_string(), "{}: tensor '{}': dtype must be a string, found {}", what, name, json_kind(dt));
  auto parsed = dtype_from_name(dt.get<std::string>());
  TL_CHECK(parsed.has_value(), "{}: tensor '{}': unknown dtype '{}' (supported: {})", what, name,
           dt.get<std::string>(), all_dtype_names());
  t.dtype = *parsed;

  const auto& sh = v["shape"];
  TL_CHECK(sh.is_array(), "{}: tensor '{}': shape must be an array, found {}", what, name, json_kind(sh));
  uint64_t numel = 1;
  for (const auto& d : sh) {
    const uint64_t u = get_uint(d, what, name, "shape dimension");
    TL_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()),
             "{}: tensor '{}': shape dimension {} too large", what, name, u);
    TL_CHECK(!__builtin_mul_overflow(numel, u, &numel), "{}: tensor '{}': shape {} has too many elements",
             what, name, sh.dump());
    t.shape.push_back(int64_t(u));
  }
  uint64_t nbytes = 0;
  TL_CHECK(!__builtin_mul_overflow(numel, uint64_t(dtype_size(t.dtype)), &nbytes),
           "{}: tensor '{}': shape {} has too many bytes", what, name, sh.dump());

  const auto& off = v["data_offsets"];
  TL_CHECK(off.is_array() && off.size() == 2, "{}: tensor '{}': data_offsets must be [begin, end], found {}",
           what, name, off.dump());
  t.begin = get_uint(off[0], what, name, "data_offsets begin");
  t.end = get_uint(off[1], what, name, "data_offsets end");
  TL_CHECK(t.begin <= t.end, "{}: tensor '{}': data_offsets end {} is before begin {}", what, name, t.end,
           t.begin);
  TL_CHECK(t.end <= data_size,
           "{}: tensor '{}': data_offsets [{}, {}] outside the data buffer of {} bytes (file truncated?)",
           what, name, t.begin, t.end, data_size);
  TL_CHECK(t.end - t.begin == nbytes,
           "{}: tensor '{}': data_offsets [{}, {}] span {} bytes, expected {} for dtype {} and shape {}",
           what, name, t.begin, t.end, t.end - t.begin, nbytes, dtype_name(t.dtype), shape_str(t.shape));
  return t;
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t data_size, std::string_view what) {
  const std::string hw = std::string(what) + ": header";
  const ordered_json j = parse_json_object(json, hw);
  SafetensorsHeader h;
  for (const auto& [key, v] : j.items()) {
    if (key == "__metadata__") {
      TL_CHECK(v.is_object(), "{}: __metadata__ must be an object of strings, found {}", what, json_kind(v));
      for (const auto& [mk, mv] : v.items()) {
        TL_CHECK(mv.is_string(), "{}: __metadata__ value of '{}' must be a string, found {}", what, mk,
                 json_kind(mv));
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(parse_tensor_entry(key, v, data_size, what));
  }
  // Overlap: sort non-empty ranges by begin; each must start at or after the furthest end so far.
  std::vector<size_t> order;
  for (size_t i = 0; i < h.tensors.size(); ++i)
    if (h.tensors[i].nbytes() > 0) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::pair(h.tensors[a].begin, h.tensors[a].end) < std::pair(h.tensors[b].begin, h.tensors[b].end);
  });
  size_t furthest = SIZE_MAX;
  for (size_t i : order) {
    const auto& t = h.tensors[i];
    if (furthest != SIZE_MAX) {
      const auto& p = h.tensors[furthest];
      TL_CHECK(t.begin >= p.end, "{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap in the data buffer",
               what, p.name, p.begin, p.end, t.name, t.begin, t.end);
    }
    if (furthest == SIZE_MAX || t.end > h.tensors[furthest].end) furthest = i;
  }
  // The reference implementation refuses a buffer the tensors do not end: bytes after the last tensor are a
  // sign of a damaged or foreign file, not padding.
  const uint64_t data_end = furthest == SIZE_MAX ? 0 : h.tensors[furthest].end;
  TL_CHECK(data_end == data_size,
           "{}: {} bytes after the end of the last tensor's data (tensors end at byte {} of a {}-byte data "
           "buffer; damaged or not a safetensors file)",
           what, data_size - data_end, data_end, data_size);
  return h;
}

SafetensorsHeader parse_safetensors(std::span<const uint8_t> file, std::string_view what) {
  TL_CHECK(file.size() >= 8, "{}: file is {} bytes, shorter than the 8-byte header length (truncated?)", what,
           file.size());
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  TL_CHECK(n <= kSafetensorsMaxHeader,
           "{}: header length {} exceeds the limit of {} bytes (not a safetensors file?)", what, n,
           kSafetensorsMaxHeader);
  TL_CHECK(n <= file.size() - 8, "{}: header length {} runs past the end of the file ({} bytes; truncated?)",
           what, n, file.size());
  std::string_view json(reinterpret_cast<const char*>(file.data() + 8), size_t(n));
  SafetensorsHeader h = parse_safetensors_header(json, file.size() - 8 - n, what);
  h.data_start = 8 + n;
  return h;
}

bool is_float_dtype(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

void convert_to_f32(DType dtype, const uint8_t* src, size_t n, float* dst, std::string_view what) {
  const auto N = int64_t(n);
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16:
#pragma omp parallel for schedule(static) if (N > (1 << 20))
      for (int64_t i = 0; i < N; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case DType::F16:
#pragma omp parallel for schedule(static) if (N > (1 << 20))
      for (int64_t i = 0; i < N; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    default:
      fail("{}: dtype {} cannot be read as float (expected F32, F16 or BF16)", what, dtype_name(dtype));
  }
}

// ---- SafetensorsFile ----

SafetensorsFile::SafetensorsFile(const fs::path& path) : map_(path) {
  header_ = parse_safetensors({map_.data(), map_.size()}, path.string());
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

std::span<const uint8_t> SafetensorsFile::bytes(const TensorInfo& t) const {
  TL_CHECK(t.begin <= t.end && header_.data_start + t.end <= map_.size(),
           "{}: tensor '{}' range [{}, {}) is outside the file", path().string(), t.name, t.begin, t.end);
  return {map_.data() + header_.data_start + t.begin, size_t(t.nbytes())};
}

std::vector<float> SafetensorsFile::read_f32(const TensorInfo& t) const {
  std::vector<float> out(t.numel());
  read_f32(t, out);
  return out;
}

void SafetensorsFile::read_f32(const TensorInfo& t, std::span<float> out) const {
  TL_CHECK(out.size() == t.numel(), "{}: tensor '{}': has {} elements, destination holds {}", path().string(),
           t.name, t.numel(), out.size());
  const auto b = bytes(t);
  convert_to_f32(t.dtype, b.data(), out.size(), out.data(), path().string() + ": tensor '" + t.name + "'");
}

// ---- SafetensorsDir ----

SafetensorsDir::SafetensorsDir(const fs::path& dir) {
  TL_CHECK(fs::is_directory(dir), "{}: not a directory (expected a checkpoint directory)", dir.string());
  const fs::path single = dir / kSafetensorsFile, index = dir / kSafetensorsIndex;
  const bool has_single = fs::exists(single), has_index = fs::exists(index);
  TL_CHECK(!(has_single && has_index),
           "{}: both {} and {} exist; one of them is stale, remove it so the checkpoint is unambiguous",
           dir.string(), kSafetensorsFile, kSafetensorsIndex);
  TL_CHECK(has_single || has_index, "{}: no {} and no {}: not a safetensors checkpoint directory",
           dir.string(), kSafetensorsFile, kSafetensorsIndex);

  if (has_single) {
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& t : files_[0]->tensors()) {
      index_.emplace(t.name, Ref{files_[0].get(), &t});
      names_.push_back(t.name);
    }
    return;
  }

  sharded_ = true;
  const std::string iw = index.string();
  const ordered_json j = parse_json_object(read_file(index), iw);
  TL_CHECK(j.contains("weight_map"), "{}: missing key 'weight_map'", iw);
  const auto& wm = j["weight_map"];
  TL_CHECK(wm.is_object(), "{}: weight_map must be an object, found {}", iw, json_kind(wm));
  std::map<std::string, size_t> shard_index;  // shard file name -> files_ position
  std::vector<std::string> shard_names;
  std::map<std::string, std::string, std::less<>> listed;  // tensor -> shard
  for (const auto& [tensor, shard] : wm.items()) {
    TL_CHECK(shard.is_string(), "{}: weight_map['{}'] must be a file name string, found {}", iw, tensor,
             json_kind(shard));
    const std::string s = shard.get<std::string>();
    // A plain file name in the same directory: the index must not reach elsewhere.
    TL_CHECK(!s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos,
             "{}: weight_map['{}'] = '{}' is not a plain file name in the checkpoint directory", iw, tensor,
             s);
    listed.emplace(tensor, s);
    if (!shard_index.count(s)) {
      TL_CHECK(fs::exists(dir / s), "{}: shard '{}' (listed for tensor '{}') does not exist in {}", iw, s,
               tensor, dir.string());
      shard_index[s] = files_.size();
      shard_names.push_back(s);
      files_.push_back(std::make_unique<SafetensorsFile>(dir / s));
    }
  }
  for (const auto& [tensor, s] : listed) {
    const SafetensorsFile& f = *files_[shard_index[s]];
    const TensorInfo* t = f.find(tensor);
    TL_CHECK(t != nullptr, "{}: tensor '{}' is listed for shard '{}' but missing from that shard", iw, tensor,
             s);
    index_.emplace(tensor, Ref{&f, t});
  }
  for (size_t i = 0; i < files_.size(); ++i) {
    for (const auto& t : files_[i]->tensors()) {
      auto it = listed.find(t.name);
      TL_CHECK(
          it != listed.end() && it->second == shard_names[i],
          "{}: tensor '{}' is in shard '{}' but the index {}", iw, t.name, shard_names[i],
          it == listed.end() ? std::string("does not list it") : "lists it for shard '" + it->second + "'");
      names_.push_back(t.name);
    }
  }
}

const SafetensorsDir::Ref* SafetensorsDir::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &it->second;
}

// ---- writing ----

uint64_t TensorSpec::nbytes() const {
  uint64_t n = dtype_size(dtype);
  for (auto d : shape) {
    TL_CHECK(d >= 0, "tensor '{}': negative dimension in shape {}", name, shape_str(shape));
    TL_CHECK(!__builtin_mul_overflow(n, uint64_t(d), &n), "tensor '{}': shape {} too large", name,
             shape_str(shape));
  }
  return n;
}

std::string safetensors_header_bytes(std::span<const TensorSpec> tensors,
                                     const std::map<std::string, std::string>& metadata) {
  ordered_json h = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json m = ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    h["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    TL_CHECK(t.name != "__metadata__" && !h.contains(t.name),
             "safetensors writer: tensor name '{}' is reserved or used twice", t.name);
    const uint64_t n = t.nbytes();
    h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string json;
  try {
    json = h.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("safetensors writer: cannot encode the header (tensor names must be UTF-8): {}", e.what());
  }
  json.append((8 - json.size() % 8) % 8, ' ');  // the data buffer then starts 8-byte aligned
  const uint64_t n = json.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + json;
}

void write_safetensors(AtomicFile& out, std::span<const TensorSpec> tensors,
                       const std::function<void(size_t, AtomicFile&)>& write_tensor,
                       const std::map<std::string, std::string>& metadata) {
  out.write(safetensors_header_bytes(tensors, metadata));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t before = out.bytes_written();
    write_tensor(i, out);
    const uint64_t wrote = out.bytes_written() - before;
    TL_CHECK(wrote == tensors[i].nbytes(), "safetensors writer: tensor '{}': wrote {} bytes, expected {}",
             tensors[i].name, wrote, tensors[i].nbytes());
  }
}

void write_safetensors(const fs::path& path, std::span<const TensorBlob> tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  for (const auto& t : tensors) specs.push_back(t.spec);
  AtomicFile f(path);
  write_safetensors(
      f, specs, [&](size_t i, AtomicFile& o) { o.write(tensors[i].data.data(), tensors[i].data.size()); },
      metadata);
  f.commit();
}

}  // namespace tl
