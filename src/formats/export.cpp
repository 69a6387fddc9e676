#include "formats/export.hpp"

#include <cmath>
#include <functional>

#include "core/enum_names.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "core/half.hpp"
#include "core/log.hpp"
#include "formats/gguf_names.hpp"
#include "formats/gguf_tokenizer.hpp"
#include "formats/ternary_blocks.hpp"
#include "model/quant.hpp"

namespace tl {

namespace {

constexpr const char* kMainlineArch = "bitnet";
constexpr const char* kBitnetCppArch = "bitnet-b1.58";

bool is_mainline(ExportKind k) {
  return k == ExportKind::TQ2_0 || k == ExportKind::TQ1_0;
}

GgmlType linear_type_of(ExportKind k) {
  switch (k) {
    case ExportKind::TQ2_0:
      return GgmlType::TQ2_0;
    case ExportKind::TQ1_0:
      return GgmlType::TQ1_0;
    case ExportKind::I2_S:
      return GgmlType::I2_S;
    case ExportKind::F16:
      return GgmlType::F16;
    case ExportKind::F32:
      return GgmlType::F32;
  }
  return GgmlType::F32;
}

// HF [out, in] -> ggml {in, out}; [n] -> {n}.
std::vector<uint64_t> ggml_dims(const ParamView& v) {
  return std::vector<uint64_t>(v.shape.rbegin(), v.shape.rend());
}

// Floats as F32 or F16, converted in chunks; a finite value that overflows f16 is an error naming the tensor.
void write_floats(AtomicFile& f, std::span<const float> x, GgmlType type, const std::string& name) {
  if (type == GgmlType::F32) {
    f.write(x.data(), x.size_bytes());
    return;
  }
  constexpr size_t kChunk = size_t(1) << 16;
  std::vector<uint16_t> buf;
  for (size_t b = 0; b < x.size(); b += kChunk) {
    const size_t n = std::min(kChunk, x.size() - b);
    buf.resize(n);
    for (size_t i = 0; i < n; ++i) {
      buf[i] = f32_to_f16(x[b + i]);
      TL_CHECK(!std::isfinite(x[b + i]) || (buf[i] & 0x7c00u) != 0x7c00u,
               "export: tensor '{}' element {} = {} overflows f16 (use --embed f32)", name, b + i, x[b + i]);
    }
    f.write(buf.data(), n * 2);
  }
}

struct TensorPlan {
  GgufTensorSpec spec;
  std::function<void(AtomicFile&)> write;
};

}  // namespace

namespace {
constexpr std::array<EnumName<ExportKind>, 5> kExportKinds{{{ExportKind::TQ2_0, "tq2_0"},
                                                            {ExportKind::TQ1_0, "tq1_0"},
                                                            {ExportKind::I2_S, "i2_s"},
                                                            {ExportKind::F16, "f16"},
                                                            {ExportKind::F32, "f32"}}};
}  // namespace

ExportKind parse_export_kind(std::string_view name) {
  return parse_enum(kExportKinds, name, "GGUF export type");
}

const char* export_kind_name(ExportKind kind) {
  return name_of(kExportKinds, kind).data();  // the table's literals are NUL-terminated
}

uint32_t export_file_type(ExportKind kind) {
  switch (kind) {
    case ExportKind::TQ2_0:
      return 37;  // LLAMA_FTYPE_MOSTLY_TQ2_0
    case ExportKind::TQ1_0:
      return 36;  // LLAMA_FTYPE_MOSTLY_TQ1_0
    case ExportKind::I2_S:
      return 40;  // bitnet.cpp's LLAMA_FTYPE_MOSTLY_I2_S, as in Microsoft's file
    case ExportKind::F16:
      return 1;  // LLAMA_FTYPE_MOSTLY_F16
    case ExportKind::F32:
      return 0;  // LLAMA_FTYPE_ALL_F32
  }
  return 0;
}

namespace {

// The refusals that need only the model, before any file exists.
void check_exportable(const Model& model, ExportKind kind, GgmlType embed_type) {
  const BitNetConfig& cfg = model.config;
  const bool mainline = is_mainline(kind);
  const char* kname = export_kind_name(kind);
  TL_CHECK(embed_type == GgmlType::F16 || embed_type == GgmlType::F32,
           "export: embedding type must be f16 or f32, found {}", ggml_type_name(embed_type));
  TL_CHECK(cfg.head_dim * cfg.num_attention_heads == cfg.hidden_size,
           "export: head_dim {} x {} heads = {} differs from hidden_size {}; the GGUF bitnet graphs take "
           "head_dim = hidden_size / heads",
           cfg.head_dim, cfg.num_attention_heads, cfg.head_dim * cfg.num_attention_heads, cfg.hidden_size);
  TL_CHECK(!(mainline && !cfg.tie_word_embeddings),
           "export: the model has an untied lm_head; llama.cpp's `bitnet` graph has no output.weight (it "
           "always uses token_embd), so --type {} cannot carry it; use i2_s, f16 or f32 (bitnet-b1.58 "
           "reads output.weight)",
           kname);
  TL_CHECK(mainline || cfg.hidden_act == Activation::Relu2,
           "export: the model's hidden_act is silu, but --type {} writes arch bitnet-b1.58, whose graph "
           "runs ReLU²; use tq2_0 or tq1_0 (arch bitnet with bitnet.hidden_activation = \"silu\")",
           kname);
  for (const ParamView& v : model.views)
    TL_CHECK(v.offset + v.numel <= model.params.size(),
             "export: tensor '{}' lies outside the parameter buffer", v.name);
}

// Each linear's scale alpha (0 for other tensors), checked: rows a multiple of the type's block, alpha
// positive, finite and normal (and representable in f16 for --type f16).
std::vector<float> checked_linear_scales(const Model& model, ExportKind kind, GgmlType linear_type) {
  const size_t row_multiple = is_mainline(kind) ? kTqBlock : kind == ExportKind::I2_S ? kI2sBlock : 1;

  std::vector<float> alpha(model.views.size(), 0.0f);
  for (size_t i = 0; i < model.views.size(); ++i) {
    const ParamView& v = model.views[i];
    if (v.kind != ParamKind::Linear) continue;
    const std::string g = gguf_tensor_name(v.name);
    TL_CHECK(size_t(v.shape[1]) % row_multiple == 0,
             "export: tensor '{}' ({}) has rows of {} weights (in_features); {} needs a multiple of {}", g,
             v.name, v.shape[1], ggml_type_name(linear_type), row_multiple);
    alpha[i] = weight_scale_for(model, v);
    TL_CHECK(std::isnormal(alpha[i]) && alpha[i] > 0,
             "export: tensor '{}' ({}) has scale {}, expected positive, finite and normal", g, v.name,
             alpha[i]);
    if (kind == ExportKind::F16) {
      const float a16 = f16_to_f32(f32_to_f16(alpha[i]));
      TL_CHECK(std::isfinite(a16) && a16 > 0,
               "export: tensor '{}' scale {} is not representable in f16 (use --type f32)", g, alpha[i]);
    }
  }
  return alpha;
}

// The model's GGUF metadata under `arch`, then the tokenizer's.
GgufMetadata model_metadata(const BitNetConfig& cfg, const std::string& arch, ExportKind kind,
                            const std::string& name, const GgufTokenizerMetadata& tokmeta) {
  GgufMetadata kv;
  const auto key = [&](const char* k) { return arch + "." + k; };
  kv.emplace_back("general.architecture", arch);
  kv.emplace_back("general.name", name);
  kv.emplace_back(key("vocab_size"), uint32_t(cfg.vocab_size));
  kv.emplace_back(key("context_length"), uint32_t(cfg.max_position_embeddings));
  kv.emplace_back(key("embedding_length"), uint32_t(cfg.hidden_size));
  kv.emplace_back(key("block_count"), uint32_t(cfg.num_hidden_layers));
  kv.emplace_back(key("feed_forward_length"), uint32_t(cfg.intermediate_size));
  kv.emplace_back(key("rope.dimension_count"), uint32_t(cfg.head_dim));
  kv.emplace_back(key("attention.head_count"), uint32_t(cfg.num_attention_heads));
  kv.emplace_back(key("attention.head_count_kv"), uint32_t(cfg.num_key_value_heads));
  kv.emplace_back(key("attention.layer_norm_rms_epsilon"), float(cfg.rms_norm_eps));
  kv.emplace_back(key("rope.freq_base"), float(cfg.rope_theta));
  // Mainline defaults to SiLU without it (reference §7); bitnet.cpp ignores it, but it keeps the file honest.
  // A SiLU model under mainline's `bitnet`: no key (mainline maps "silu" to a fused gate|up op that aborts on
  // bitnet's separate tensors, and its default is SiLU); ternlab's importer reads its own key instead.
  if (cfg.hidden_act == Activation::Relu2 || arch != "bitnet")
    kv.emplace_back(key("hidden_activation"), cfg.hidden_act == Activation::Relu2 ? "relu2" : "silu");
  else
    kv.emplace_back("ternlab.hidden_activation", std::string("silu"));
  kv.emplace_back("general.file_type", export_file_type(kind));
  kv.emplace_back("general.quantization_version", uint32_t(2));
  for (const auto& p : tokmeta.kv) kv.push_back(p);
  return kv;
}

// One linear's ternary codes in the file's tensor type (the scale goes into the blocks, the codes' values
// or, for the mainline types, a separate .scale tensor).
void write_linear_codes(AtomicFile& f, const TernaryWeight& t, ExportKind kind, const std::string& g) {
  std::vector<uint8_t> bytes;
  switch (kind) {
    case ExportKind::TQ2_0:
      bytes.resize(tq2_0_bytes(t.codes.size()));
      encode_tq2_0(t.codes, f32_to_f16(1.0f), bytes, g);
      break;
    case ExportKind::TQ1_0:
      bytes.resize(tq1_0_bytes(t.codes.size()));
      encode_tq1_0(t.codes, f32_to_f16(1.0f), bytes, g);
      break;
    case ExportKind::I2_S:
      bytes.resize(i2_s_bytes(t.codes.size()));
      encode_i2_s(t.codes, t.scale, bytes, g);
      break;
    case ExportKind::F16: {
      const uint16_t pos = f32_to_f16(t.scale), neg = uint16_t(pos | 0x8000u);
      std::vector<uint16_t> h(t.codes.size());
      for (size_t k = 0; k < h.size(); ++k) h[k] = t.codes[k] == 0 ? uint16_t(0) : t.codes[k] > 0 ? pos : neg;
      f.write(h.data(), h.size() * 2);
      return;
    }
    case ExportKind::F32: {
      std::vector<float> w(t.codes.size());
      for (size_t k = 0; k < w.size(); ++k) w[k] = float(t.codes[k]) * t.scale;
      f.write(w.data(), w.size() * 4);
      return;
    }
  }
  f.write(bytes.data(), bytes.size());
}

}  // namespace

ExportReport export_gguf(const Model& model, const Tokenizer& tok, const std::string& chat_template,
                         const ExportOptions& opt, const fs::path& out) {
  const BitNetConfig& cfg = model.config;
  cfg.validate();
  const ExportKind kind = opt.kind;
  const bool mainline = is_mainline(kind);
  const std::string arch = mainline ? kMainlineArch : kBitnetCppArch;
  const GgmlType linear_type = linear_type_of(kind);
  const GgmlType embed_type =
      opt.embed_type.value_or(kind == ExportKind::F32 ? GgmlType::F32 : GgmlType::F16);

  // ---- refusals, before any file exists ----
  check_exportable(model, kind, embed_type);
  const std::vector<float> alpha = checked_linear_scales(model, kind, linear_type);
  const GgufTokenizerMetadata tokmeta = gguf_tokenizer_metadata(tok, cfg, chat_template);

  // ---- metadata ----
  const GgufMetadata kv = model_metadata(cfg, arch, kind, opt.name, tokmeta);

  // ---- tensors, each written when its turn comes (one linear's codes in memory at a time) ----
  ExportReport rep;
  std::vector<TensorPlan> plan;
  for (size_t i = 0; i < model.views.size(); ++i) {
    const ParamView& v = model.views[i];
    const std::string g = gguf_tensor_name(v.name);
    const std::span<const float> x = model.tensor(v.name);
    if (v.kind == ParamKind::Norm) {
      plan.push_back(
          {{g, GgmlType::F32, ggml_dims(v)}, [x](AtomicFile& f) { f.write(x.data(), x.size_bytes()); }});
    } else if (v.kind == ParamKind::Embedding || v.kind == ParamKind::LmHead) {
      plan.push_back(
          {{g, embed_type, ggml_dims(v)}, [=](AtomicFile& f) { write_floats(f, x, embed_type, g); }});
    } else {
      const float a = alpha[i];
      const ParamView* view = &v;
      plan.push_back({{g, linear_type, ggml_dims(v)}, [&, view, g, a, kind](AtomicFile& f) {
                        const TernaryWeight t = quantize_weight(model, *view);
                        TL_CHECK(t.scale == a, "export: internal: scale of '{}' changed", g);
                        rep.linear_weights += t.codes.size();
                        rep.zero_codes += t.zeros;
                        write_linear_codes(f, t, kind, g);
                      }});
      if (mainline)  // d = 1 in every block; alpha exactly, as mainline multiplies the matmul output by it
        plan.push_back({{gguf_scale_name(g), GgmlType::F32, {1}}, [a](AtomicFile& f) { f.write(&a, 4); }});
    }
  }
  std::vector<GgufTensorSpec> specs;
  for (const auto& p : plan) specs.push_back(p.spec);
  gguf_header_bytes(kv, specs);  // checks names and dims before the file is created

  {
    Progress progress("export", plan.size());
    AtomicFile f(out);
    size_t done = 0;
    write_gguf(f, kv, specs, [&](size_t i, AtomicFile& file) {
      plan[i].write(file);
      progress.update(++done);
    });
    f.commit();
    progress.finish();
  }

  rep.path = out;
  rep.kind = kind;
  rep.arch = arch;
  rep.linear_type = linear_type;
  rep.embed_type = embed_type;
  rep.file_type = export_file_type(kind);
  rep.tensors = plan.size();
  rep.bytes = fs::file_size(out);
  rep.tokenizer_pre = tokmeta.pre;
  rep.vocab_entries = size_t(cfg.vocab_size);
  rep.padding_tokens = tokmeta.padding;
  rep.chat_template = !chat_template.empty();
  return rep;
}

}  // namespace tl
