#include "formats/gguf.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <set>

namespace tl {

static_assert(std::endian::native == std::endian::little, "GGUF data is little-endian; so is this reader");

// ---- value types ----

const char* gguf_type_name(GgufType t) {
  static constexpr const char* names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                          "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = uint32_t(t);
  return i < std::size(names) ? names[i] : "unknown";
}

bool GgufValue::operator==(const GgufValue& o) const {
  return v_ == o.v_;
}

// ---- the ggml type table ----

namespace {

// Sizes from ggml's block structs (ggml-common.h): e.g. Q8_0 = fp16 d + 32 int8; TQ2_0 = 64 code bytes + fp16
// d per 256; TQ1_0 = 48 + 4 + fp16 d per 256. I2_S is special-cased in ggml_nbytes (traits say 1/1).
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {GgmlType::F32, "F32", 1, 4},        {GgmlType::F16, "F16", 1, 2},
    {GgmlType::Q4_0, "Q4_0", 32, 18},    {GgmlType::Q4_1, "Q4_1", 32, 20},
    {GgmlType::Q5_0, "Q5_0", 32, 22},    {GgmlType::Q5_1, "Q5_1", 32, 24},
    {GgmlType::Q8_0, "Q8_0", 32, 34},    {GgmlType::Q8_1, "Q8_1", 32, 36},
    {GgmlType::Q2_K, "Q2_K", 256, 84},   {GgmlType::Q3_K, "Q3_K", 256, 110},
    {GgmlType::Q4_K, "Q4_K", 256, 144},  {GgmlType::Q5_K, "Q5_K", 256, 176},
    {GgmlType::Q6_K, "Q6_K", 256, 210},  {GgmlType::Q8_K, "Q8_K", 256, 292},
    {GgmlType::I8, "I8", 1, 1},          {GgmlType::I16, "I16", 1, 2},
    {GgmlType::I32, "I32", 1, 4},        {GgmlType::I64, "I64", 1, 8},
    {GgmlType::F64, "F64", 1, 8},        {GgmlType::BF16, "BF16", 1, 2},
    {GgmlType::TQ1_0, "TQ1_0", 256, 54}, {GgmlType::TQ2_0, "TQ2_0", 256, 66},
    {GgmlType::I2_S, "I2_S", 1, 1},
};

std::string supported_type_names() {
  std::string s;
  for (const auto& t : kGgmlTypes) {
    if (!s.empty()) s += ' ';
    s += fmt::format("{}({})", t.name, uint32_t(t.type));
  }
  return s;
}

std::string dims_str(std::span<const uint64_t> dims) {
  std::string s = "{";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "}";
}

bool is_pow2(uint64_t x) {
  return x != 0 && (x & (x - 1)) == 0;
}

uint64_t align_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;  // callers keep x far below 2^64
}

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  for (const auto& t : kGgmlTypes)
    if (uint32_t(t.type) == id) return &t;
  return nullptr;
}

const char* ggml_type_name(GgmlType t) {
  const auto* info = ggml_type_info(uint32_t(t));
  return info ? info->name : "unknown";
}

uint64_t ggml_nbytes(GgmlType t, std::span<const uint64_t> dims, std::string_view what) {
  const auto* info = ggml_type_info(uint32_t(t));
  TL_CHECK(info, "{}: unknown ggml type id {} (supported: {})", what, uint32_t(t), supported_type_names());
  TL_CHECK(dims.size() <= kGgufMaxDims, "{}: {} dimensions, at most {} are allowed", what, dims.size(),
           kGgufMaxDims);
  uint64_t numel = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    TL_CHECK(dims[i] > 0, "{}: dims {}: dimension {} is {}, must be positive", what, dims_str(dims), i,
             dims[i]);
    TL_CHECK(!__builtin_mul_overflow(numel, dims[i], &numel) && numel <= uint64_t(INT64_MAX),
             "{}: dims {}: element count overflows", what, dims_str(dims));
  }
  const uint64_t ne0 = dims.empty() ? 1 : dims[0];
  if (t == GgmlType::I2_S) {
    TL_CHECK(numel % 4 == 0, "{}: I2_S tensor with dims {} has {} elements, not a multiple of 4", what,
             dims_str(dims), numel);
    return numel / 4 + 32;
  }
  TL_CHECK(ne0 % info->block_size == 0, "{}: {} rows need ne0 to be a multiple of {}, dims are {}", what,
           info->name, info->block_size, dims_str(dims));
  uint64_t n = 0;
  TL_CHECK(!__builtin_mul_overflow(numel / info->block_size, uint64_t(info->type_size), &n),
           "{}: dims {}: byte size overflows", what, dims_str(dims));
  return n;
}

uint64_t GgufTensorInfo::numel() const {
  uint64_t n = 1;
  for (auto d : dims) n *= d;  // checked for overflow when parsed
  return n;
}

// ---- reading ----

namespace {

// A bounds-checked little-endian reader over the file image.
struct Cursor {
  std::span<const uint8_t> f;
  std::string_view what;
  uint64_t pos = 0;

  uint64_t left() const { return f.size() - pos; }
  void need(uint64_t n, std::string_view ctx, std::string_view field) const {
    TL_CHECK(n <= left(), "{}: {}: {} needs {} bytes at offset {} but only {} remain (file truncated?)", what,
             ctx, field, n, pos, left());
  }
  template <class T>
  T get(std::string_view ctx, std::string_view field) {
    need(sizeof(T), ctx, field);
    T v;
    std::memcpy(&v, f.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str(std::string_view ctx, std::string_view field, uint64_t max_len) {
    const uint64_t n = get<uint64_t>(ctx, field);
    TL_CHECK(n <= max_len, "{}: {}: {} has length {}, more than the limit of {} bytes", what, ctx, field, n,
             max_len);
    need(n, ctx, field);
    std::string s(reinterpret_cast<const char*>(f.data() + pos), size_t(n));
    pos += n;
    return s;
  }
};

// Smallest encoding of one value of type t (used to bound counts by the remaining bytes).
uint64_t min_value_bytes(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::Bool:
      return 1;
    case GgufType::U16:
    case GgufType::I16:
      return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32:
      return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64:
    case GgufType::String:
      return 8;
    case GgufType::Array:
      return 12;
  }
  return 1;
}

GgufValue read_scalar(Cursor& c, GgufType t, std::string_view ctx) {
  switch (t) {
    case GgufType::U8:
      return c.get<uint8_t>(ctx, "u8 value");
    case GgufType::I8:
      return c.get<int8_t>(ctx, "i8 value");
    case GgufType::U16:
      return c.get<uint16_t>(ctx, "u16 value");
    case GgufType::I16:
      return c.get<int16_t>(ctx, "i16 value");
    case GgufType::U32:
      return c.get<uint32_t>(ctx, "u32 value");
    case GgufType::I32:
      return c.get<int32_t>(ctx, "i32 value");
    case GgufType::F32:
      return c.get<float>(ctx, "f32 value");
    case GgufType::U64:
      return c.get<uint64_t>(ctx, "u64 value");
    case GgufType::I64:
      return c.get<int64_t>(ctx, "i64 value");
    case GgufType::F64:
      return c.get<double>(ctx, "f64 value");
    case GgufType::Bool: {
      const uint8_t b = c.get<uint8_t>(ctx, "bool value");
      TL_CHECK(b <= 1, "{}: {}: bool value is {}, expected 0 or 1", c.what, ctx, b);
      return b == 1;
    }
    case GgufType::String:
      return c.str(ctx, "string value", std::numeric_limits<uint64_t>::max());
    case GgufType::Array:
      break;
  }
  fail("{}: {}: internal error: not a scalar type", c.what, ctx);
}

GgufType read_type(Cursor& c, std::string_view ctx, std::string_view field) {
  const uint32_t id = c.get<uint32_t>(ctx, field);
  TL_CHECK(id <= uint32_t(GgufType::F64), "{}: {}: unknown {} {} (expected 0..12)", c.what, ctx, field, id);
  return GgufType(id);
}

GgufValue read_value(Cursor& c, GgufType t, std::string_view ctx) {
  if (t != GgufType::Array) return read_scalar(c, t, ctx);
  GgufArray a;
  a.elem = read_type(c, ctx, "array element type");
  TL_CHECK(a.elem != GgufType::Array, "{}: {}: nested arrays are not supported", c.what, ctx);
  const uint64_t n = c.get<uint64_t>(ctx, "array length");
  TL_CHECK(n <= c.left() / min_value_bytes(a.elem),
           "{}: {}: array of {} {} elements cannot fit in the {} bytes left (file truncated or corrupt)",
           c.what, ctx, n, gguf_type_name(a.elem), c.left());
  a.items.reserve(size_t(n));
  for (uint64_t i = 0; i < n; ++i) a.items.push_back(read_scalar(c, a.elem, ctx));
  return a;
}

}  // namespace

GgufHeader parse_gguf(std::span<const uint8_t> file, std::string_view what) {
  Cursor c{file, what};
  GgufHeader h;
  TL_CHECK(file.size() >= 4, "{}: {} bytes, too short for the GGUF magic (truncated?)", what, file.size());
  TL_CHECK(std::memcmp(file.data(), "GGUF", 4) == 0,
           "{}: bad magic {:02x} {:02x} {:02x} {:02x}, expected \"GGUF\" (47 47 55 46): not a GGUF file",
           what, file[0], file[1], file[2], file[3]);
  c.pos = 4;
  h.version = c.get<uint32_t>("header", "version");
  TL_CHECK(h.version != 0x03000000u, "{}: big-endian GGUF is not supported", what);
  TL_CHECK(h.version == kGgufVersion,
           "{}: GGUF version {} is not supported, only version 3 (re-convert with a current llama.cpp)", what,
           h.version);
  const uint64_t n_tensors = c.get<uint64_t>("header", "tensor count");
  const uint64_t n_kv = c.get<uint64_t>("header", "metadata KV count");
  // A KV pair takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info 8 + 4 + 4 + 8.
  TL_CHECK(n_kv <= c.left() / 13,
           "{}: metadata KV count {} cannot fit in the {} bytes left (corrupt header?)", what, n_kv,
           c.left());

  std::set<std::string, std::less<>> keys;
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string ctx_i = fmt::format("metadata KV {}", i);
    std::string key = c.str(ctx_i, "key", kGgufMaxKeyLength);
    TL_CHECK(!key.empty(), "{}: {}: empty key", what, ctx_i);
    const std::string ctx = fmt::format("key '{}'", key);
    TL_CHECK(!keys.count(key), "{}: {}: duplicate key", what, ctx);
    const GgufType t = read_type(c, ctx, "value type");
    GgufValue v = read_value(c, t, ctx);
    keys.insert(key);
    h.metadata.emplace_back(std::move(key), std::move(v));
  }
  for (const auto& [k, v] : h.metadata) {
    if (k != "general.alignment") continue;
    const auto* a = v.get_if<uint32_t>();
    TL_CHECK(a, "{}: key 'general.alignment': expected u32, found {}", what, gguf_type_name(v.type()));
    TL_CHECK(is_pow2(*a), "{}: key 'general.alignment': {} is not a power of two", what, *a);
    h.alignment = *a;
  }

  TL_CHECK(n_tensors <= c.left() / 24,
           "{}: tensor count {} cannot fit in the {} bytes left (corrupt header?)", what, n_tensors,
           c.left());
  std::set<std::string, std::less<>> names;
  h.tensors.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    const std::string ctx_i = fmt::format("tensor info {}", i);
    t.name = c.str(ctx_i, "name", kGgufMaxNameLength);
    TL_CHECK(!t.name.empty(), "{}: {}: empty tensor name", what, ctx_i);
    const std::string ctx = fmt::format("tensor '{}'", t.name);
    TL_CHECK(!names.count(t.name), "{}: {}: duplicate tensor name", what, ctx);
    const uint32_t n_dims = c.get<uint32_t>(ctx, "n_dims");
    TL_CHECK(n_dims <= kGgufMaxDims, "{}: {}: n_dims is {}, at most {} are supported", what, ctx, n_dims,
             kGgufMaxDims);
    for (uint32_t d = 0; d < n_dims; ++d) t.dims.push_back(c.get<uint64_t>(ctx, "dimension"));
    const uint32_t type_id = c.get<uint32_t>(ctx, "ggml type");
    TL_CHECK(ggml_type_info(type_id), "{}: {}: unknown ggml type id {} (supported: {})", what, ctx, type_id,
             supported_type_names());
    t.type = GgmlType(type_id);
    t.offset = c.get<uint64_t>(ctx, "offset");
    t.nbytes = ggml_nbytes(t.type, t.dims, fmt::format("{}: {}", what, ctx));
    TL_CHECK(t.offset % h.alignment == 0, "{}: {}: offset {} is not a multiple of the alignment {}", what,
             ctx, t.offset, h.alignment);
    names.insert(t.name);
    h.tensors.push_back(std::move(t));
  }

  h.data_start = align_up(c.pos, h.alignment);  // c.pos <= file size, alignment <= 2^31: no overflow
  const uint64_t data_size = h.data_start <= file.size() ? file.size() - h.data_start : 0;
  for (const auto& t : h.tensors) {
    TL_CHECK(
        t.offset <= data_size && t.nbytes <= data_size - t.offset,
        "{}: tensor '{}' ({} {}): data [{}, {}) lies outside the data section of {} bytes at file offset {} "
        "(file truncated?)",
        what, t.name, ggml_type_name(t.type), dims_str(t.dims), t.offset, t.offset + t.nbytes, data_size,
        h.data_start);
  }
  std::vector<const GgufTensorInfo*> order;
  for (const auto& t : h.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    const auto *p = order[i - 1], *t = order[i];
    TL_CHECK(t->offset >= p->offset + p->nbytes, "{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", what,
             p->name, p->offset, p->offset + p->nbytes, t->name, t->offset, t->offset + t->nbytes);
  }
  return h;
}

// ---- GgufFile ----

GgufFile::GgufFile(const fs::path& path)
    : map_(path), image_(map_.data(), map_.size()), what_(path.string()) {
  header_ = parse_gguf(image_, what_);
  index();
}

GgufFile::GgufFile(std::span<const uint8_t> image, std::string_view what) : image_(image), what_(what) {
  header_ = parse_gguf(image_, what_);
  index();
}

void GgufFile::index() {
  for (size_t i = 0; i < header_.metadata.size(); ++i) kv_index_.emplace(header_.metadata[i].first, i);
  for (size_t i = 0; i < header_.tensors.size(); ++i) tensor_index_.emplace(header_.tensors[i].name, i);
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &header_.metadata[it->second].second;
}

const GgufValue& GgufFile::require(std::string_view key) const {
  const GgufValue* v = find(key);
  TL_CHECK(v, "{}: missing metadata key '{}'", what_, key);
  return *v;
}

void GgufFile::type_mismatch(std::string_view key, GgufType want, const GgufValue& v) const {
  fail("{}: metadata key '{}': expected {}, found {}", what_, key, gguf_type_name(want),
       gguf_type_name(v.type()));
}

const GgufArray& GgufFile::get_array(std::string_view key, GgufType elem) const {
  const GgufArray& a = get<GgufArray>(key);
  TL_CHECK(a.elem == elem, "{}: metadata key '{}': expected an array of {}, found an array of {}", what_, key,
           gguf_type_name(elem), gguf_type_name(a.elem));
  return a;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &header_.tensors[it->second];
}

const GgufTensorInfo& GgufFile::tensor(std::string_view name) const {
  const GgufTensorInfo* t = find_tensor(name);
  TL_CHECK(t, "{}: no tensor named '{}'", what_, name);
  return *t;
}

std::span<const uint8_t> GgufFile::bytes(const GgufTensorInfo& t) const {
  TL_CHECK(header_.data_start <= image_.size() && t.offset <= image_.size() - header_.data_start &&
               t.nbytes <= image_.size() - header_.data_start - t.offset,
           "{}: tensor '{}' range [{}, {}) is outside the file", what_, t.name, t.offset,
           t.offset + t.nbytes);
  return image_.subspan(size_t(header_.data_start + t.offset), size_t(t.nbytes));
}

// ---- writing ----

namespace {

struct Out {
  std::string s;
  template <class T>
  void put(T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void str(std::string_view x) {
    put<uint64_t>(x.size());
    s.append(x);
  }
};

void put_scalar(Out& o, const GgufValue& v, std::string_view key) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          o.str(x);
        } else if constexpr (std::is_same_v<T, bool>) {
          o.put<uint8_t>(x ? 1 : 0);
        } else if constexpr (std::is_same_v<T, GgufArray>) {
          fail("GGUF writer: key '{}': nested arrays are not supported", key);
        } else {
          o.put<T>(x);
        }
      },
      v.variant());
}

uint32_t writer_alignment(const GgufMetadata& metadata) {
  for (const auto& [k, v] : metadata) {
    if (k != "general.alignment") continue;
    const auto* a = v.get_if<uint32_t>();
    TL_CHECK(a, "GGUF writer: key 'general.alignment' must be u32, is {}", gguf_type_name(v.type()));
    TL_CHECK(is_pow2(*a), "GGUF writer: key 'general.alignment' = {} is not a power of two", *a);
    return *a;
  }
  return kGgufDefaultAlignment;
}

}  // namespace

std::string gguf_header_bytes(const GgufMetadata& metadata, std::span<const GgufTensorSpec> tensors) {
  const uint32_t alignment = writer_alignment(metadata);
  Out o;
  o.s.append("GGUF");
  o.put<uint32_t>(kGgufVersion);
  o.put<uint64_t>(tensors.size());
  o.put<uint64_t>(metadata.size());
  std::set<std::string_view> keys;
  for (const auto& [k, v] : metadata) {
    TL_CHECK(!k.empty() && k.size() <= kGgufMaxKeyLength,
             "GGUF writer: key '{}' is empty or longer than {} bytes", k, kGgufMaxKeyLength);
    TL_CHECK(keys.insert(k).second, "GGUF writer: duplicate key '{}'", k);
    o.str(k);
    o.put<uint32_t>(uint32_t(v.type()));
    if (const auto* a = v.get_if<GgufArray>()) {
      TL_CHECK(a->elem != GgufType::Array, "GGUF writer: key '{}': nested arrays are not supported", k);
      o.put<uint32_t>(uint32_t(a->elem));
      o.put<uint64_t>(a->items.size());
      for (const auto& x : a->items) {
        TL_CHECK(x.type() == a->elem, "GGUF writer: key '{}': array of {} holds a {} element", k,
                 gguf_type_name(a->elem), gguf_type_name(x.type()));
        put_scalar(o, x, k);
      }
    } else {
      put_scalar(o, v, k);
    }
  }
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    TL_CHECK(!t.name.empty() && t.name.size() <= kGgufMaxNameLength,
             "GGUF writer: tensor name '{}' is empty or longer than {} bytes", t.name, kGgufMaxNameLength);
    TL_CHECK(names.insert(t.name).second, "GGUF writer: duplicate tensor name '{}'", t.name);
    const uint64_t n = ggml_nbytes(t.type, t.dims, "GGUF writer: tensor '" + t.name + "'");
    o.str(t.name);
    o.put<uint32_t>(uint32_t(t.dims.size()));
    for (auto d : t.dims) o.put<uint64_t>(d);
    o.put<uint32_t>(uint32_t(t.type));
    o.put<uint64_t>(offset);
    offset = align_up(offset + n, alignment);
  }
  o.s.append(align_up(o.s.size(), alignment) - o.s.size(), '\0');
  return std::move(o.s);
}

void write_gguf(AtomicFile& out, const GgufMetadata& metadata, std::span<const GgufTensorSpec> tensors,
                const std::function<void(size_t, AtomicFile&)>& write_tensor) {
  const uint32_t alignment = writer_alignment(metadata);
  out.write(gguf_header_bytes(metadata, tensors));
  const std::string zeros(alignment, '\0');
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t want = ggml_nbytes(tensors[i].type, tensors[i].dims, "GGUF writer");
    const uint64_t before = out.bytes_written();
    write_tensor(i, out);
    const uint64_t wrote = out.bytes_written() - before;
    TL_CHECK(wrote == want, "GGUF writer: tensor '{}' ({} {}): wrote {} bytes, expected {}", tensors[i].name,
             ggml_type_name(tensors[i].type), dims_str(tensors[i].dims), wrote, want);
    out.write(zeros.data(), size_t(align_up(wrote, alignment) - wrote));
  }
}

namespace {
void check_blob(const GgufTensorBlob& b) {
  const uint64_t want = ggml_nbytes(b.spec.type, b.spec.dims, "GGUF writer: tensor '" + b.spec.name + "'");
  TL_CHECK(b.data.size() == want, "GGUF writer: tensor '{}' ({} {}): {} bytes given, expected {}",
           b.spec.name, ggml_type_name(b.spec.type), dims_str(b.spec.dims), b.data.size(), want);
}
}  // namespace

std::vector<uint8_t> gguf_bytes(const GgufMetadata& metadata, std::span<const GgufTensorBlob> tensors) {
  const uint32_t alignment = writer_alignment(metadata);
  std::vector<GgufTensorSpec> specs;
  for (const auto& t : tensors) specs.push_back(t.spec);
  const std::string h = gguf_header_bytes(metadata, specs);
  std::vector<uint8_t> out(h.begin(), h.end());
  for (const auto& t : tensors) {
    check_blob(t);
    out.insert(out.end(), t.data.begin(), t.data.end());
    out.resize(size_t(align_up(out.size(), alignment)), 0);
  }
  return out;
}

void write_gguf(const fs::path& path, const GgufMetadata& metadata, std::span<const GgufTensorBlob> tensors) {
  std::vector<GgufTensorSpec> specs;
  for (const auto& t : tensors) {
    check_blob(t);
    specs.push_back(t.spec);
  }
  AtomicFile f(path);
  write_gguf(f, metadata, specs,
             [&](size_t i, AtomicFile& o) { o.write(tensors[i].data.data(), tensors[i].data.size()); });
  f.commit();
}

}  // namespace tl
