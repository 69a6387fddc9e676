#include "formats/import.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <span>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/log.hpp"
#include "formats/gguf_names.hpp"
#include "formats/gguf_tokenizer.hpp"
#include "formats/gguf_values.hpp"
#include "formats/ternary_blocks.hpp"

namespace tl {

namespace {

bool is_float_type(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16;
}
bool is_ternary_type(GgmlType t) {
  return t == GgmlType::TQ1_0 || t == GgmlType::TQ2_0 || t == GgmlType::I2_S;
}

std::string dims_str(const std::vector<uint64_t>& dims) {
  return fmt::format("{{{}}}", fmt::join(dims, ", "));
}

// Dims without trailing 1s (a writer may add them), at least one kept.
std::vector<uint64_t> squeezed(std::vector<uint64_t> d) {
  while (d.size() > 1 && d.back() == 1) d.pop_back();
  return d;
}

// A float tensor (F32/F16/BF16) as fp32; NaN or Inf is an error naming the tensor and element.
// The values of an F32, F16 or BF16 tensor into out (numel of them), each checked finite: written straight
// into the caller's buffer, so a table held in a HugeVector is not copied twice.
void read_floats(const GgufFile& f, const GgufTensorInfo& t, std::span<float> out) {
  const auto bytes = f.bytes(t);
  const size_t n = out.size();
  switch (t.type) {
    case GgmlType::F32:
      std::memcpy(out.data(), bytes.data(), n * 4);
      break;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        out[i] = t.type == GgmlType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      break;
    default:
      fail("{}: tensor '{}' is {}, expected F32, F16 or BF16", f.what(), t.name, ggml_type_name(t.type));
  }
  for (size_t i = 0; i < n; ++i)
    TL_CHECK(std::isfinite(out[i]), "{}: tensor '{}' element {} is {}", f.what(), t.name, i, out[i]);
}

std::vector<float> floats_of(const GgufFile& f, const GgufTensorInfo& t) {
  std::vector<float> out(size_t(t.numel()));
  read_floats(f, t, out);
  return out;
}

// An F16 tensor's bits into out, each value checked finite on its bits (exponent not all ones), with the
// same message as read_floats: no fp32 copy of the table is made.
void read_f16_bits(const GgufFile& f, const GgufTensorInfo& t, std::span<uint16_t> out) {
  std::memcpy(out.data(), f.bytes(t).data(), out.size() * 2);
  for (size_t i = 0; i < out.size(); ++i)
    TL_CHECK((out[i] & 0x7C00) != 0x7C00, "{}: tensor '{}' element {} is {}", f.what(), t.name, i,
             f16_to_f32(out[i]));
}

enum class Role { Embedding, LmHead, Norm, Linear, Scale };

struct Expected {
  std::vector<uint64_t> dims;  // ggml order
  Role role;
  std::string why;  // where the dims come from, for messages
  bool required = true;
};

// The hyperparameters under `<arch>.`: counts bounded, heads whole, RoPE plain.
struct GgufShape {
  int64_t C = 0, F = 0, L = 0, H = 0, KV = 0, hd = 0, ctx = 0;
  double eps = 0, theta = 0;
};
// The positive count under `<arch>.<key>` if the file has it (nullopt when absent); required_count refuses
// its absence.
std::optional<int64_t> optional_count(const GgufFile& f, const std::string& arch, const char* key) {
  const std::string k = arch + "." + key;
  const auto v = gguf_int(f, k);
  if (!v) return std::nullopt;
  TL_CHECK(*v > 0 && *v <= (int64_t(1) << 31), "{}: metadata key '{}' = {} must be a positive count",
           f.what(), k, *v);
  return v;
}
int64_t required_count(const GgufFile& f, const std::string& arch, const char* key) {
  const auto v = optional_count(f, arch, key);
  TL_CHECK(v, "{}: missing metadata key '{}.{}'", f.what(), arch, key);
  return *v;
}

GgufShape read_shape(const GgufFile& f, const std::string& arch, GgufFormat& form) {
  const std::string& what = f.what();
  const std::string p = arch + ".";
  const auto required = [&](const char* k) { return required_count(f, arch, k); };
  const auto optional = [&](const char* k) { return optional_count(f, arch, k); };
  const int64_t C = required("embedding_length");
  const int64_t F = required("feed_forward_length");
  const int64_t L = required("block_count");
  const int64_t H = required("attention.head_count");
  const int64_t ctx = required("context_length");
  const int64_t KV = optional("attention.head_count_kv").value_or(H);
  // Each layer has 11 tensors; checked before anything is sized by the layer count.
  TL_CHECK(size_t(L) <= f.tensors().size() / 11,
           "{}: {}block_count = {} but the file has only {} tensors (11 per "
           "layer)",
           what, p, L, f.tensors().size());
  TL_CHECK(C % H == 0, "{}: {}embedding_length {} is not a multiple of {}attention.head_count {}", what, p, C,
           p, H);
  const int64_t hd = C / H;
  TL_CHECK(H % KV == 0, "{}: {}attention.head_count {} is not a multiple of {}attention.head_count_kv {}",
           what, p, H, p, KV);
  for (const char* k : {"rope.dimension_count", "attention.key_length", "attention.value_length"})
    if (const auto v = optional(k))
      TL_CHECK(
          *v == hd,
          "{}: {}{} = {} but head_dim = embedding_length {} / head_count {} = {}; ternlab's BitNet graph "
          "rotates and attends over whole heads of hidden/heads",
          what, p, k, *v, C, H, hd);
  const std::string eps_key = p + "attention.layer_norm_rms_epsilon";
  const auto eps = gguf_float(f, eps_key);
  TL_CHECK(eps, "{}: missing metadata key '{}'", what, eps_key);
  auto theta = gguf_float(f, p + "rope.freq_base");
  if (!theta) {
    theta = 10000.0;
    form.notes.push_back(fmt::format("no {}rope.freq_base: llama.cpp's default 10000 used", p));
  }
  if (const auto type = gguf_string(f, p + "rope.scaling.type"); type && *type != "none") {
    const double factor = gguf_float(f, p + "rope.scaling.factor").value_or(1.0);
    TL_CHECK(
        *type == "linear" && factor == 1.0,
        "{}: {}rope.scaling.type '{}' with factor {} is not supported (only none, or linear with factor 1)",
        what, p, *type, factor);
  }
  return {C, F, L, H, KV, hd, ctx, *eps, *theta};
}

// The FFN activation: the override, the file's key, or what the arch implies; never assumed where the
// file's consumer would not assume it.
std::string resolve_activation(const GgufFile& f, const std::string& arch, const ImportOptions& options,
                               GgufFormat& form) {
  const std::string& what = f.what();
  const std::string p = arch + ".";
  const bool bitnet_cpp = arch != "bitnet";
  std::string act_key = p + "hidden_activation";
  auto file_act = gguf_string(f, act_key);
  if (!file_act && gguf_string(f, "ternlab.hidden_activation")) {  // ternlab's SiLU export for mainline
    act_key = "ternlab.hidden_activation";
    file_act = gguf_string(f, act_key);
  }
  const auto check_act = [&](const std::string& a, const std::string& source) {
    TL_CHECK(a == "relu2" || a == "silu", "{}: {} '{}' is not a known activation (expected relu2 or silu)",
             what, source, a);
  };
  if (file_act) check_act(*file_act, act_key);
  std::string act;
  if (!options.hidden_act.empty()) {
    check_act(options.hidden_act, "the activation override");
    act = options.hidden_act;
    form.activation_source = "override";
    form.notes.push_back(
        file_act ? fmt::format("activation {} overrides the file's {} = {}", act, act_key, *file_act)
                 : fmt::format("activation {} supplied (the file has no {})", act, act_key));
  } else if (file_act) {
    TL_CHECK(
        !(bitnet_cpp && *file_act == "silu"),
        "{}: {} = silu contradicts arch {}, whose graph runs ReLU² (give the activation to use explicitly)",
        what, act_key, arch);
    act = *file_act;
    form.activation_source = "metadata";
  } else {
    TL_CHECK(bitnet_cpp,
             "{}: no {}: llama.cpp's bitnet graph then runs SiLU, while BitNet b1.58 models need relu2 (with "
             "SiLU the 2B-4T model scores PPL 99.8 instead of 17.1); give the activation explicitly "
             "(relu2 or silu)",
             what, act_key);
    act = "relu2";
    form.activation_source = "implied by the arch";
  }
  return act;
}

// Every tensor the arch and the shape call for: dims in ggml order, role, and where the dims come from.
std::map<std::string, Expected, std::less<>> expected_tensors(const GgufShape& sh, int64_t V,
                                                              bool bitnet_cpp) {
  const int64_t C = sh.C, F = sh.F, L = sh.L, KV = sh.KV, hd = sh.hd;
  std::map<std::string, Expected, std::less<>> expected;
  const auto U = [](int64_t x) { return uint64_t(x); };
  const std::string embd_why = fmt::format("embedding_length {}, {} tokens", C, V);
  expected["token_embd.weight"] = {{U(C), U(V)}, Role::Embedding, embd_why};
  expected["output_norm.weight"] = {{U(C)}, Role::Norm, "embedding_length"};
  if (bitnet_cpp) expected["output.weight"] = {{U(C), U(V)}, Role::LmHead, embd_why, false};
  const std::string c_why = fmt::format("embedding_length {}", C);
  const std::string kv_why = fmt::format("embedding_length {}, head_count_kv {} x head_dim {}", C, KV, hd);
  const std::string f_why = fmt::format("embedding_length {}, feed_forward_length {}", C, F);
  for (int64_t l = 0; l < L; ++l) {
    const std::string b = fmt::format("blk.{}.", l);
    expected[b + "attn_norm.weight"] = {{U(C)}, Role::Norm, c_why};
    expected[b + "attn_sub_norm.weight"] = {{U(C)}, Role::Norm, c_why};
    expected[b + "ffn_norm.weight"] = {{U(C)}, Role::Norm, c_why};
    expected[b + "ffn_sub_norm.weight"] = {{U(F)}, Role::Norm, fmt::format("feed_forward_length {}", F)};
    const std::pair<const char*, Expected> linears[] = {
        {"attn_q", {{U(C), U(C)}, Role::Linear, c_why}},
        {"attn_k", {{U(C), U(KV * hd)}, Role::Linear, kv_why}},
        {"attn_v", {{U(C), U(KV * hd)}, Role::Linear, kv_why}},
        {"attn_output", {{U(C), U(C)}, Role::Linear, c_why}},
        {"ffn_gate", {{U(C), U(F)}, Role::Linear, f_why}},
        {"ffn_up", {{U(C), U(F)}, Role::Linear, f_why}},
        {"ffn_down", {{U(F), U(C)}, Role::Linear, f_why}},
    };
    for (const auto& [name, e] : linears) {
      expected[b + name + ".weight"] = e;
      if (!bitnet_cpp) expected[b + name + ".scale"] = {{1}, Role::Scale, "one scale", false};
    }
  }
  return expected;
}

// Each tensor of the file is expected, of a type ternlab reads for its role and of the expected dims; every
// required tensor is there. Records the types found in form.
void check_tensors(const GgufFile& f, const std::map<std::string, Expected, std::less<>>& expected,
                   const std::string& arch, int64_t L, GgufFormat& form) {
  const std::string& what = f.what();
  const bool bitnet_cpp = arch != "bitnet";
  bool first_norm = true;
  for (const GgufTensorInfo& t : f.tensors()) {
    const std::string tn = fmt::format("{}: tensor '{}'", what, t.name);
    TL_CHECK(!(t.type == GgmlType::I2_S && !bitnet_cpp),
             "{} has type id 36, which is I2_S only in bitnet.cpp files (arch bitnet-b1.58 or bitnet-25); in "
             "arch {} (mainline ggml) it is the removed IQ4_NL_4_4",
             tn, arch);
    const auto it = expected.find(t.name);
    if (it == expected.end()) {
      const bool is_scale = t.name.size() > 6 && t.name.compare(t.name.size() - 6, 6, ".scale") == 0;
      if (t.name == "output.weight")
        fail(
            "{}: arch bitnet (llama.cpp) has no output.weight (its graph always uses token_embd, and the "
            "loader refuses extra tensors)",
            tn);
      if (is_scale && bitnet_cpp)
        fail(
            "{}: arch {} (bitnet.cpp) applies no per-tensor .scale to every linear; ternlab does not read it "
            "there",
            tn, arch);
      fail("{}: unexpected tensor for arch {} with {} layers", tn, arch, L);
    }
    const Expected& e = it->second;
    const bool type_ok = e.role == Role::Scale    ? t.type == GgmlType::F32
                         : e.role == Role::Linear ? is_ternary_type(t.type) || is_float_type(t.type)
                                                  : is_float_type(t.type);
    TL_CHECK(type_ok, "{} has type {}; ternlab reads {} as {}", tn, ggml_type_name(t.type),
             e.role == Role::Scale    ? "a .scale"
             : e.role == Role::Linear ? "a linear"
             : e.role == Role::Norm   ? "a norm"
                                      : "an embedding",
             e.role == Role::Scale    ? "F32"
             : e.role == Role::Linear ? "TQ1_0, TQ2_0, I2_S, F32, F16 or BF16"
                                      : "F32, F16 or BF16");
    if (e.role == Role::Scale) {
      TL_CHECK(t.numel() == 1, "{} has dims {}, expected one element", tn, dims_str(t.dims));
    } else {
      TL_CHECK(squeezed(t.dims) == e.dims, "{} has dims {}, expected {} ({})", tn, dims_str(t.dims),
               dims_str(e.dims), e.why);
    }
    switch (e.role) {
      case Role::Linear:
        if (std::find(form.linear_types.begin(), form.linear_types.end(), t.type) == form.linear_types.end())
          form.linear_types.push_back(t.type);
        break;
      case Role::Embedding:
        form.embed_type = t.type;
        break;
      case Role::LmHead:
        form.lm_head = true;
        form.lm_head_type = t.type;
        break;
      case Role::Norm:
        if (first_norm) form.norm_type = t.type;
        first_norm = false;
        break;
      case Role::Scale:
        form.scale_tensors = true;
        break;
    }
  }
  for (const auto& [name, e] : expected)
    TL_CHECK(!e.required || f.find_tensor(name), "{}: missing tensor '{}' (arch {}, {} layers)", what, name,
             arch, L);
}

}  // namespace

struct GgufModelReader::State {
  std::unique_ptr<GgufFile> file;
  BitNetConfig config;
  GgufFormat format;
  std::optional<GgufTokenizer> tok;
};

GgufModelReader::GgufModelReader(const fs::path& path, const ImportOptions& options)
    : s_(std::make_unique<State>()) {
  s_->file = std::make_unique<GgufFile>(path);
  open(options);
}

GgufModelReader::GgufModelReader(std::span<const uint8_t> image, std::string_view what,
                                 const ImportOptions& options)
    : s_(std::make_unique<State>()) {
  s_->file = std::make_unique<GgufFile>(image, what);
  open(options);
}

GgufModelReader::~GgufModelReader() = default;
GgufModelReader::GgufModelReader(GgufModelReader&&) noexcept = default;
GgufModelReader& GgufModelReader::operator=(GgufModelReader&&) noexcept = default;

const GgufFile& GgufModelReader::file() const {
  return *s_->file;
}
const BitNetConfig& GgufModelReader::config() const {
  return s_->config;
}
const GgufFormat& GgufModelReader::format() const {
  return s_->format;
}
const Tokenizer& GgufModelReader::tokenizer() const {
  return s_->tok->tokenizer;
}
const std::string& GgufModelReader::chat_template() const {
  return s_->tok->chat_template;
}

void GgufModelReader::open(const ImportOptions& options) {
  const GgufFile& f = *s_->file;
  const std::string& what = f.what();
  GgufFormat& form = s_->format;

  // ---- architecture and hyperparameters ----
  const std::string arch = f.get<std::string>("general.architecture");
  TL_CHECK(arch == "bitnet" || arch == "bitnet-b1.58" || arch == "bitnet-25",
           "{}: general.architecture '{}' is not a BitNet architecture (expected bitnet for llama.cpp, "
           "bitnet-b1.58 or bitnet-25 for bitnet.cpp)",
           what, arch);
  const bool bitnet_cpp = arch != "bitnet";
  form.arch = arch;
  form.engine = bitnet_cpp ? "bitnet.cpp" : "llama.cpp";
  form.name = gguf_string(f, "general.name").value_or("");
  form.file_type = gguf_int(f, "general.file_type").value_or(-1);

  const GgufShape sh = read_shape(f, arch, form);
  const std::string act = resolve_activation(f, arch, options, form);

  // ---- tokenizer ----
  s_->tok = tokenizer_from_gguf(f, arch, options.tokenizer_pre);
  const GgufTokenizer& tok = *s_->tok;
  form.tokenizer_pre = tok.pre;
  form.tokenizer_pre_used = tok.pre_used;
  form.vocab_entries = tok.vocab_entries;
  form.padding_tokens = tok.padding;
  form.chat_template = !tok.chat_template.empty();
  if (tok.pre.empty())
    form.notes.push_back(fmt::format("no tokenizer.ggml.pre: the {} pre-tokenizer used", tok.pre_used));
  const auto V = int64_t(tok.vocab_entries);
  if (const auto vs = optional_count(f, arch, "vocab_size"))
    TL_CHECK(*vs == V, "{}: {}.vocab_size = {} but tokenizer.ggml.tokens has {} entries", what, arch, *vs, V);

  // ---- tensors ----
  const auto expected = expected_tensors(sh, V, bitnet_cpp);
  check_tensors(f, expected, arch, sh.L, form);

  // ---- config ----
  BitNetConfig& cfg = s_->config;
  cfg.hidden_size = sh.C;
  cfg.intermediate_size = sh.F;
  cfg.num_hidden_layers = sh.L;
  cfg.num_attention_heads = sh.H;
  cfg.num_key_value_heads = sh.KV;
  cfg.head_dim = sh.hd;
  cfg.vocab_size = V;
  cfg.max_position_embeddings = sh.ctx;
  cfg.rope_theta = sh.theta;
  cfg.rms_norm_eps = sh.eps;
  cfg.hidden_act = act == "silu" ? Activation::Silu : Activation::Relu2;
  form.activation = act;
  cfg.tie_word_embeddings = !form.lm_head;
  cfg.bos_token_id = tok.bos_id;
  cfg.eos_token_id = tok.eos_id;
  cfg.pad_token_id = tok.pad_id;
  cfg.quant_mode = QuantMode::Offline;
  cfg.torch_dtype = "float32";
  try {
    cfg.validate();
  } catch (const Error& e) {
    fail("{}: the metadata gives an invalid model: {}", what, e.what());
  }
  for (const auto& n : form.notes) log_info("{}: {}", what, n);
}

const GgufTensorInfo& GgufModelReader::tensor(const std::string& hf_name) const {
  return s_->file->tensor(gguf_tensor_name(hf_name));
}

TernaryWeight GgufModelReader::linear(int64_t layer, int which) const {
  TL_CHECK(layer >= 0 && layer < s_->config.num_hidden_layers && which >= 0 && which < 7,
           "{}: no linear {} in layer {}", s_->file->what(), which, layer);
  const GgufFile& f = *s_->file;
  const GgufTensorInfo& t = tensor(Model::linear_name(layer, which));
  const std::string what = fmt::format("{}: tensor '{}'", f.what(), t.name);
  TernaryWeight w;
  w.in = int64_t(t.dims[0]);
  w.out = int64_t(t.numel() / t.dims[0]);
  w.codes.resize(size_t(t.numel()));
  const auto bytes = f.bytes(t);
  float alpha = 1;
  std::string alpha_from;
  if (t.type == GgmlType::TQ2_0 || t.type == GgmlType::TQ1_0) {
    std::vector<uint16_t> d(w.codes.size() / kTqBlock);
    if (t.type == GgmlType::TQ2_0)
      decode_tq2_0(bytes, w.codes, d, what);
    else
      decode_tq1_0(bytes, w.codes, d, what);
    // One scale per tensor: every block that holds a nonzero code must carry the same d.
    std::optional<size_t> first;
    for (size_t b = 0; b < d.size(); ++b) {
      const int8_t* c = w.codes.data() + b * kTqBlock;
      if (std::all_of(c, c + kTqBlock, [](int8_t x) { return x == 0; })) continue;
      if (!first) first = b;
      TL_CHECK(
          d[b] == d[*first],
          "{}: block {} has d = {} but block {} has d = {}: not a per-tensor ternary weight (ternlab needs "
          "one scale per linear)",
          what, b, f16_to_f32(d[b]), *first, f16_to_f32(d[*first]));
    }
    if (first) alpha = f16_to_f32(d[*first]);
    alpha_from = fmt::format("block d {}", alpha);
  } else if (t.type == GgmlType::I2_S) {
    alpha = decode_i2_s(bytes, w.codes, what);
    alpha_from = fmt::format("I2_S tail {}", alpha);
  } else {
    const std::vector<float> x = floats_of(f, t);
    float amax = 0;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    for (size_t i = 0; i < x.size(); ++i) {
      TL_CHECK(x[i] == 0 || std::fabs(x[i]) == amax,
               "{}: element [{}, {}] = {} is neither 0 nor ±{} (max |w|): not a ternary weight", what,
               i / size_t(w.in), i % size_t(w.in), x[i], amax);
      w.codes[i] = x[i] == 0 ? 0 : x[i] > 0 ? 1 : -1;
    }
    alpha = amax;
    alpha_from = fmt::format("max |w| {}", alpha);
  }
  if (const GgufTensorInfo* st = f.find_tensor(gguf_scale_name(t.name))) {
    float s;
    std::memcpy(&s, f.bytes(*st).data(), 4);
    alpha *= s;
    alpha_from += fmt::format(" x .scale {}", s);
  }
  w.zeros = size_t(std::count(w.codes.begin(), w.codes.end(), int8_t(0)));
  if (w.zeros == w.codes.size()) {
    if (!(std::isnormal(alpha) && alpha > 0)) alpha = 1;  // any scale gives the same zero weight
  } else {
    TL_CHECK(std::isnormal(alpha) && alpha > 0, "{}: scale {} ({}) must be positive, finite and normal", what,
             alpha, alpha_from);
  }
  w.scale = alpha;
  return w;
}

std::vector<float> GgufModelReader::read_float(const std::string& hf_name) const {
  return floats_of(*s_->file, tensor(hf_name));
}

GgufFloatTable GgufModelReader::read_table(const std::string& hf_name) const {
  const GgufTensorInfo& t = tensor(hf_name);
  GgufFloatTable out;
  out.cols = int64_t(t.dims[0]);
  out.rows = int64_t(t.numel() / t.dims[0]);
  if (t.type != GgmlType::F16) {
    out.f32.resize(size_t(t.numel()));
    read_floats(*s_->file, t, out.f32);
    return out;
  }
  out.f16.resize(size_t(t.numel()));
  read_f16_bits(*s_->file, t, out.f16);
  return out;
}

Model GgufModelReader::to_model() const {
  Model m = make_model(s_->config);
  for (int64_t l = 0; l < s_->config.num_hidden_layers; ++l)
    for (int which = 0; which < 7; ++which) {
      const TernaryWeight w = linear(l, which);
      const std::string name = Model::linear_name(l, which);
      const std::span<float> dst = m.tensor(name);
      for (size_t i = 0; i < dst.size(); ++i) dst[i] = float(w.codes[i]) * w.scale;
      m.fixed_scale[name] = w.scale;
    }
  for (const ParamView& v : m.views) {
    if (v.kind == ParamKind::Linear) continue;
    const std::vector<float> x = read_float(v.name);
    std::copy(x.begin(), x.end(), m.tensor(v.name).begin());
  }
  return m;
}

std::string GgufFormat::describe() const {
  std::vector<std::string> lt;
  for (GgmlType t : linear_types) lt.push_back(ggml_type_name(t));
  std::string s = fmt::format("GGUF for {} (arch {}{}{}): linears {}{}, token_embd {}, norms {}, ", engine,
                              arch, name.empty() ? "" : ", name '" + name + "'",
                              file_type < 0 ? "" : fmt::format(", file_type {}", file_type),
                              fmt::join(lt, "+"), scale_tensors ? " with .scale tensors" : "",
                              ggml_type_name(embed_type), ggml_type_name(norm_type));
  s += lm_head ? fmt::format("output.weight {} (untied)", ggml_type_name(lm_head_type)) : "tied lm_head";
  s += fmt::format("; activation {} ({}); tokenizer gpt2/{}{}, {} entries", activation, activation_source,
                   tokenizer_pre_used, tokenizer_pre.empty() ? " (no pre key)" : "", vocab_entries);
  if (padding_tokens) s += fmt::format(" ({} padding)", padding_tokens);
  s += chat_template ? ", chat template" : ", no chat template";
  return s;
}

GgufModel import_gguf(const fs::path& path, const ImportOptions& options) {
  const GgufModelReader r(path, options);
  Model m = r.to_model();
  return {r.config(), std::move(m), r.tokenizer(), r.chat_template(), r.format()};
}

GgufModel import_gguf(std::span<const uint8_t> image, std::string_view what, const ImportOptions& options) {
  const GgufModelReader r(image, what, options);
  Model m = r.to_model();
  return {r.config(), std::move(m), r.tokenizer(), r.chat_template(), r.format()};
}

}  // namespace tl
