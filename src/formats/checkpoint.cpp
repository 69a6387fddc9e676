#include "formats/checkpoint.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/log.hpp"
#include "formats/hf_config.hpp"
#include "formats/json_strict.hpp"
#include "formats/safetensors.hpp"
#include "model/quant.hpp"

namespace tl {

namespace {

constexpr const char* kConfigFile = "config.json";

std::string scale_name(const std::string& weight_name) {
  // "model.layers.0.self_attn.q_proj.weight" -> "model.layers.0.self_attn.q_proj.weight_scale"
  return weight_name + "_scale";
}

// Older (1bitLLM) spellings of the sub-norms.
std::optional<std::string> legacy_name(const std::string& name) {
  auto swap = [&](std::string_view from, std::string_view to) -> std::optional<std::string> {
    const auto pos = name.find(from);
    if (pos == std::string::npos) return std::nullopt;
    return name.substr(0, pos) + std::string(to) + name.substr(pos + from.size());
  };
  if (auto s = swap("self_attn.attn_sub_norm.", "self_attn.inner_attn_ln.")) return s;
  return swap("mlp.ffn_sub_norm.", "mlp.ffn_layernorm.");
}

std::string index_str(size_t flat, const std::vector<int64_t>& shape) {
  if (shape.size() != 2) return std::to_string(flat);
  return fmt::format("{} = [{}, {}]", flat, flat / size_t(shape[1]), flat % size_t(shape[1]));
}

// Converts one float tensor into dst, checking every value; chunked so each chunk is scanned while in cache.
void load_float(const SafetensorsDir::Ref& r, float* dst, size_t n, const std::string& what,
                const std::vector<int64_t>& shape) {
  const auto src = r.file->bytes(*r.info);
  const size_t es = dtype_size(r.info->dtype);
  constexpr int64_t kChunk = 1 << 16;
  const int64_t nchunks = int64_t((n + kChunk - 1) / kChunk);
  int64_t first_bad = std::numeric_limits<int64_t>::max();
  int nonzero = 0;
#pragma omp parallel for schedule(dynamic, 4) reduction(min : first_bad) reduction(|| : nonzero)
  for (int64_t c = 0; c < nchunks; ++c) {
    const size_t b = size_t(c) * kChunk, e = std::min(n, b + size_t(kChunk));
    convert_to_f32(r.info->dtype, src.data() + b * es, e - b, dst + b, what);
    // Branch-free scan of the chunk (vectorizes); the exact index is searched only on failure.
    uint32_t any_nonfinite = 0, any_nonzero = 0;
    for (size_t i = b; i < e; ++i) {
      uint32_t u;
      std::memcpy(&u, dst + i, 4);
      any_nonfinite |= uint32_t((u & 0x7f800000u) == 0x7f800000u);
      any_nonzero |= u & 0x7fffffffu;
    }
    nonzero = nonzero || any_nonzero != 0;
    if (any_nonfinite)
      for (size_t i = b; i < e; ++i)
        if (!std::isfinite(dst[i])) {
          first_bad = std::min(first_bad, int64_t(i));
          break;
        }
  }
  if (first_bad != std::numeric_limits<int64_t>::max())
    fail("{}: element {} is {} (weights must be finite)", what, index_str(size_t(first_bad), shape),
         dst[first_bad]);
  if (!nonzero && n > 0) log_warn("{}: all {} values are zero; is this checkpoint damaged?", what, n);
}

// Packed [out/4, in] -> latent [out, in] = code * alpha, straight into the model; code 3 goes to
// unpack_ternary for its error message. Returns whether any code is non-zero.
bool unpack_scaled(std::span<const uint8_t> packed, int64_t out, int64_t in, float alpha, float* dst,
                   std::string_view what) {
  const int64_t R = out / 4;
  const float value[4] = {-alpha, 0.0f, alpha, 0.0f};
  uint32_t any_code3 = 0, any_nonzero = 0;
#pragma omp parallel for schedule(static) reduction(| : any_code3, any_nonzero) if (R * in > (1 << 16))
  for (int64_t r = 0; r < R; ++r) {
    const uint8_t* row = packed.data() + r * in;
    for (int i = 0; i < 4; ++i) {
      float* o = dst + (i * R + r) * in;
      for (int64_t c = 0; c < in; ++c) {
        const unsigned code = (row[c] >> (2 * i)) & 3u;
        any_code3 |= uint32_t(code == 3);
        any_nonzero |= uint32_t(code != 1);
        o[c] = value[code];
      }
    }
  }
  if (any_code3) {
    std::vector<int8_t> codes(size_t(out * in));
    unpack_ternary(packed, out, in, codes, what);  // throws, naming the first bad byte
  }
  return any_nonzero != 0;
}

struct Planned {
  const ParamView* view = nullptr;
  const SafetensorsDir::Ref* weight = nullptr;
  const SafetensorsDir::Ref* scale = nullptr;  // Packed linears
  std::string file_name;                       // the name found in the file (legacy spellings)
};

std::string where(const SafetensorsDir::Ref& r) {
  return fmt::format("{}: tensor '{}'", r.file->path().string(), r.info->name);
}

}  // namespace

std::vector<uint8_t> pack_ternary(std::span<const int8_t> codes, int64_t out, int64_t in) {
  TL_CHECK(out > 0 && in > 0 && out % 4 == 0, "pack_ternary: out ({}) must be a positive multiple of 4", out);
  TL_CHECK(codes.size() == size_t(out * in), "pack_ternary: {} codes for shape [{}, {}]", codes.size(), out,
           in);
  const int64_t R = out / 4;
  std::vector<uint8_t> packed(size_t(R * in));
  uint32_t invalid = 0;
#pragma omp parallel for schedule(static) reduction(| : invalid) if (R * in > (1 << 16))
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < in; ++c) {
      unsigned byte = 0;
      for (int i = 0; i < 4; ++i) {
        const unsigned u = unsigned(codes[size_t((i * R + r) * in + c)] + 1);  // -1, 0, 1 -> 0, 1, 2
        invalid |= uint32_t(u > 2);
        byte |= (u & 3u) << (2 * i);
      }
      packed[size_t(r * in + c)] = uint8_t(byte);
    }
  if (invalid)
    for (size_t k = 0; k < codes.size(); ++k)
      TL_CHECK(codes[k] >= -1 && codes[k] <= 1, "pack_ternary: code {} at [{}, {}] is not -1, 0 or 1",
               codes[k], int64_t(k) / in, int64_t(k) % in);
  return packed;
}

void unpack_ternary(std::span<const uint8_t> packed, int64_t out, int64_t in, std::span<int8_t> codes,
                    std::string_view what) {
  TL_CHECK(out > 0 && in > 0 && out % 4 == 0, "{}: out ({}) must be a positive multiple of 4", what, out);
  const int64_t R = out / 4;
  TL_CHECK(packed.size() == size_t(R * in) && codes.size() == size_t(out * in),
           "{}: unpack sizes: {} bytes, {} codes for shape [{}, {}]", what, packed.size(), codes.size(), out,
           in);
  int64_t first_bad = std::numeric_limits<int64_t>::max();
#pragma omp parallel for schedule(static) reduction(min : first_bad) if (R * in > (1 << 18))
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t c = 0; c < in; ++c) {
      const uint8_t byte = packed[size_t(r * in + c)];
      for (int i = 0; i < 4; ++i) {
        const int code = (byte >> (2 * i)) & 3;
        if (code == 3) first_bad = std::min(first_bad, r * in + c);
        codes[size_t((i * R + r) * in + c)] = int8_t(code - 1);
      }
    }
  }
  if (first_bad != std::numeric_limits<int64_t>::max()) {
    const uint8_t byte = packed[size_t(first_bad)];
    int i = 0;
    while (((byte >> (2 * i)) & 3) != 3) ++i;
    fail("{}: invalid ternary code 3 in packed byte [{}, {}] = 0x{:02x}, bits {}..{} (codes are 0, 1, 2)",
         what, first_bad / in, first_bad % in, byte, 2 * i, 2 * i + 1);
  }
}

Model load_checkpoint(const fs::path& dir) {
  const fs::path cfg_path = dir / kConfigFile;
  TL_CHECK(fs::exists(cfg_path), "{}: no {} (expected an HF checkpoint directory)", dir.string(),
           kConfigFile);
  const BitNetConfig cfg = read_hf_config(cfg_path);
  const SafetensorsDir st(dir);
  const std::string dname = dir.string();

  // Layout from the linear weights' dtype; it must agree with quantization_mode.
  size_t n_u8 = 0, n_float = 0;
  std::string a_u8, a_float;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l)
    for (int w = 0; w < 7; ++w) {
      const std::string n = Model::linear_name(l, w);
      if (const auto* r = st.find(n)) {
        const bool u8 = r->info->dtype == DType::U8;
        (u8 ? n_u8 : n_float)++;
        (u8 ? a_u8 : a_float) = n;
      }
    }
  TL_CHECK(n_u8 == 0 || n_float == 0,
           "{}: mixed layouts: {} linear weights are packed U8 (e.g. '{}') and {} are float (e.g. '{}')",
           dname, n_u8, a_u8, n_float, a_float);
  const bool offline = cfg.has_quantization_config && cfg.quant_mode == QuantMode::Offline;
  // With no linear weight found at all, the config decides and the plan below reports what is missing.
  const bool packed = n_u8 > 0 || (n_float == 0 && offline);
  TL_CHECK(packed == offline,
           "{}: config.json says {} but the linear weights are {}: layout and quantization_mode must agree",
           dname,
           offline ? "quantization_mode offline (packed U8 weights + weight_scale)"
                   : (cfg.has_quantization_config ? "quantization_mode online (float master weights)"
                                                  : "no quantization_config (online, float master weights)"),
           packed ? "packed U8" : "float");

  Model m = make_model(cfg);

  // Plan: resolve every tensor and check names, dtypes and shapes before reading any data.
  std::vector<Planned> plan;
  std::set<std::string> used;
  for (const auto& v : m.views) {
    Planned p;
    p.view = &v;
    p.file_name = v.name;
    p.weight = st.find(v.name);
    if (auto legacy = legacy_name(v.name)) {
      const auto* alt = st.find(*legacy);
      TL_CHECK(!(p.weight && alt), "{}: both '{}' and its older spelling '{}' are present", dname, v.name,
               *legacy);
      if (alt) {
        p.weight = alt;
        p.file_name = *legacy;
      }
    }
    TL_CHECK(p.weight != nullptr, "{}: missing tensor '{}' (shape {})", dname, v.name, shape_str(v.shape));
    used.insert(p.file_name);
    const TensorInfo& t = *p.weight->info;
    if (packed && v.kind == ParamKind::Linear) {
      const int64_t out = v.shape[0], in = v.shape[1];
      TL_CHECK(out % 4 == 0, "{}: packed layout needs out_features divisible by 4; '{}' has out {}", dname,
               v.name, out);
      TL_CHECK(t.dtype == DType::U8, "{}: dtype {} not allowed (packed linear, expected U8)",
               where(*p.weight), dtype_name(t.dtype));
      const std::vector<int64_t> want{out / 4, in};
      TL_CHECK(t.shape == want, "{}: shape mismatch: expected {} (packed [out/4, in] of {}), found {}",
               where(*p.weight), shape_str(want), shape_str(v.shape), shape_str(t.shape));
      const std::string sn = scale_name(v.name);
      p.scale = st.find(sn);
      TL_CHECK(p.scale != nullptr, "{}: missing tensor '{}' (the packed weight '{}' needs its scale)", dname,
               sn, v.name);
      const TensorInfo& s = *p.scale->info;
      TL_CHECK(is_float_dtype(s.dtype), "{}: dtype {} not allowed (expected BF16, F16 or F32)",
               where(*p.scale), dtype_name(s.dtype));
      TL_CHECK(s.shape.empty() || s.shape == std::vector<int64_t>{1},
               "{}: shape mismatch: expected [] or [1] (one scale per tensor), found {}", where(*p.scale),
               shape_str(s.shape));
      used.insert(sn);
    } else {
      TL_CHECK(is_float_dtype(t.dtype), "{}: dtype {} not allowed (expected BF16, F16 or F32)",
               where(*p.weight), dtype_name(t.dtype));
      TL_CHECK(t.shape == v.shape, "{}: shape mismatch: expected {}, found {}", where(*p.weight),
               shape_str(v.shape), shape_str(t.shape));
    }
    plan.push_back(p);
  }
  const SafetensorsDir::Ref* tied_head = nullptr;
  if (cfg.tie_word_embeddings) {
    if ((tied_head = st.find("lm_head.weight"))) {
      const TensorInfo& t = *tied_head->info;
      const std::vector<int64_t> want{cfg.vocab_size, cfg.hidden_size};
      TL_CHECK(
          is_float_dtype(t.dtype) && t.shape == want,
          "{}: tied embeddings, but lm_head.weight is present with dtype {} shape {} (expected float {})",
          where(*tied_head), dtype_name(t.dtype), shape_str(t.shape), shape_str(want));
      used.insert("lm_head.weight");
    }
  }
  std::vector<std::string> unexpected;
  for (const auto& n : st.names())
    if (!used.count(n)) unexpected.push_back(n);
  if (!unexpected.empty()) {
    std::string list;
    for (size_t i = 0; i < std::min<size_t>(unexpected.size(), 5); ++i)
      list += (i ? ", '" : "'") + unexpected[i] + "'";
    if (unexpected.size() > 5) list += fmt::format(" and {} more", unexpected.size() - 5);
    fail("{}: unexpected tensor {} (not part of a BitNet model with this config.json{})", dname, list,
         packed ? "" : "; a weight_scale needs quantization_mode offline and U8 weights");
  }

  // Load.
  for (const auto& p : plan) {
    const ParamView& v = *p.view;
    float* dst = m.params.data() + v.offset;
    if (p.scale) {
      float s = 0;
      convert_to_f32(p.scale->info->dtype, p.scale->file->bytes(*p.scale->info).data(), 1, &s,
                     where(*p.scale));
      TL_CHECK(std::isfinite(s) && s > 0, "{}: weight_scale must be finite and positive, found {}",
               where(*p.scale), s);
      const float alpha = cfg.linear_class == LinearClass::AutoBitLinear ? s : 1.0f / s;
      const int64_t out = v.shape[0], in = v.shape[1];
      if (!unpack_scaled(p.weight->file->bytes(*p.weight->info), out, in, alpha, dst, where(*p.weight)))
        log_warn("{}: all ternary codes are zero; is this checkpoint damaged?", where(*p.weight));
      m.fixed_scale[v.name] = alpha;
    } else {
      load_float(*p.weight, dst, v.numel, where(*p.weight), v.shape);
    }
  }
  if (tied_head) {
    // Accepted only as a redundant copy of the embedding; compared chunk by chunk (no second full copy).
    const auto emb = m.tensor("model.embed_tokens.weight");
    const auto src = tied_head->file->bytes(*tied_head->info);
    const size_t es = dtype_size(tied_head->info->dtype);
    std::vector<float> buf(std::min<size_t>(emb.size(), 1 << 16));
    for (size_t b = 0; b < emb.size(); b += buf.size()) {
      const size_t n = std::min(buf.size(), emb.size() - b);
      convert_to_f32(tied_head->info->dtype, src.data() + b * es, n, buf.data(), where(*tied_head));
      TL_CHECK(
          std::memcmp(buf.data(), emb.data() + b, n * sizeof(float)) == 0,
          "{}: tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight; set "
          "tie_word_embeddings false to use a separate head",
          where(*tied_head));
    }
  }
  log_info("loaded {} ({} layout, {} tensors in {} file{}, {} parameters)", dname,
           packed ? "packed" : "master", st.names().size(), st.num_files(), st.num_files() == 1 ? "" : "s",
           m.num_params());
  return m;
}

namespace {

// Writes n fp32 values as dtype (BF16 or F32), through a bounded buffer.
void write_floats(AtomicFile& f, const float* x, size_t n, DType dtype) {
  if (dtype == DType::F32) {
    f.write(x, n * sizeof(float));
    return;
  }
  constexpr size_t kChunk = 1 << 22;
  std::vector<uint16_t> buf(std::min(n, kChunk));
  for (size_t b = 0; b < n; b += kChunk) {
    const int64_t len = int64_t(std::min(n, b + kChunk) - b);
#pragma omp parallel for schedule(static) if (len > (1 << 16))
    for (int64_t i = 0; i < len; ++i) buf[size_t(i)] = f32_to_bf16(x[b + size_t(i)]);
    f.write(buf.data(), size_t(len) * sizeof(uint16_t));
  }
}

// Shard file names a previous checkpoint in `dir` used (to remove the ones the new checkpoint does not).
std::set<std::string> previous_files(const fs::path& dir) {
  std::set<std::string> files;
  if (fs::exists(dir / kSafetensorsFile)) files.insert(kSafetensorsFile);
  if (fs::exists(dir / kSafetensorsIndex)) {
    files.insert(kSafetensorsIndex);
    try {
      const ordered_json j = parse_json_object(read_file(dir / kSafetensorsIndex), kSafetensorsIndex);
      if (j.contains("weight_map") && j["weight_map"].is_object())
        for (const auto& [_, s] : j["weight_map"].items())
          if (s.is_string() && s.get<std::string>().find('/') == std::string::npos)
            files.insert(s.get<std::string>());
    } catch (const Error& e) {
      log_warn("{}: old index unreadable ({}); its shards are left in place",
               (dir / kSafetensorsIndex).string(), e.what());
    }
  }
  return files;
}

}  // namespace

void save_checkpoint(const Model& m, const fs::path& dir, const SaveOptions& opt) {
  TL_CHECK(opt.dtype == DType::BF16 || opt.dtype == DType::F32,
           "save_checkpoint: dtype {} not supported (expected BF16 or F32)", dtype_name(opt.dtype));
  const bool packed = opt.layout == CheckpointLayout::Packed;
  BitNetConfig cfg = m.config;
  cfg.has_quantization_config = true;
  cfg.quant_mode = packed ? QuantMode::Offline : QuantMode::Online;
  cfg.linear_class = LinearClass::AutoBitLinear;
  cfg.torch_dtype = opt.dtype == DType::BF16 ? "bfloat16" : "float32";
  const std::string config_json = hf_config_to_json(cfg);

  if (!packed && !m.fixed_scale.empty() && !opt.scales_stored_elsewhere)
    log_warn(
        "save_checkpoint: {} linears have fixed scales, which the master layout cannot store; loading it "
        "recomputes absmean scales (save the packed layout to keep them)",
        m.fixed_scale.size());

  // Tensor list in views order; a packed linear is followed by its scale.
  struct Item {
    TensorSpec spec;
    const ParamView* view;
    bool is_scale;
  };
  std::vector<Item> items;
  for (const auto& v : m.views) {
    if (packed && v.kind == ParamKind::Linear) {
      TL_CHECK(v.shape[0] % 4 == 0,
               "save_checkpoint: packed layout needs out_features divisible by 4; '{}' has {}", v.name,
               v.shape[0]);
      items.push_back({{v.name, DType::U8, {v.shape[0] / 4, v.shape[1]}}, &v, false});
      items.push_back({{scale_name(v.name), opt.dtype, {1}}, &v, true});
    } else {
      items.push_back({{v.name, opt.dtype, v.shape}, &v, false});
    }
  }

  // Shards: greedy in order; a tensor larger than the limit gets a shard of its own.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t cur = 0, total = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const uint64_t nb = items[i].spec.nbytes();
    if (opt.max_shard_bytes > 0 && !shards.back().empty() && cur + nb > opt.max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(i);
    cur += nb;
    total += nb;
  }
  const size_t ns = shards.size();
  std::vector<std::string> shard_files;
  for (size_t s = 0; s < ns; ++s)
    shard_files.push_back(ns == 1 ? std::string(kSafetensorsFile)
                                  : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, ns));

  std::error_code ec;
  fs::create_directories(dir, ec);
  TL_CHECK(!ec && fs::is_directory(dir), "{}: cannot create directory: {}", dir.string(), ec.message());
  const std::set<std::string> previous = previous_files(dir);

  // Everything goes to temporaries first; renamed together at the end.
  std::vector<std::unique_ptr<AtomicFile>> files;
  std::map<const ParamView*, float> alphas;  // quantize_weight's scale, written after the codes
  for (size_t s = 0; s < ns; ++s) {
    std::vector<TensorSpec> specs;
    for (size_t i : shards[s]) specs.push_back(items[i].spec);
    files.push_back(std::make_unique<AtomicFile>(dir / shard_files[s]));
    write_safetensors(*files.back(), specs, [&](size_t k, AtomicFile& f) {
      const Item& it = items[shards[s][k]];
      const ParamView& v = *it.view;
      if (!packed || v.kind != ParamKind::Linear) {
        write_floats(f, m.params.data() + v.offset, v.numel, opt.dtype);
      } else if (!it.is_scale) {
        const TernaryWeight tw = quantize_weight(m, v);  // the one quantizer: codes [out, in] and alpha
        const auto bytes = pack_ternary(tw.codes, tw.out, tw.in);
        f.write(bytes.data(), bytes.size());
        alphas[&v] = tw.scale;
      } else {
        write_floats(f, &alphas.at(&v), 1, opt.dtype);
      }
    });
  }
  if (ns > 1) {
    ordered_json idx;
    idx["metadata"] = {{"total_size", total}};
    ordered_json wm = ordered_json::object();
    for (size_t s = 0; s < ns; ++s)
      for (size_t i : shards[s]) wm[items[i].spec.name] = shard_files[s];
    idx["weight_map"] = std::move(wm);
    files.push_back(std::make_unique<AtomicFile>(dir / kSafetensorsIndex));
    files.back()->write(idx.dump(2) + "\n");
  }
  files.push_back(std::make_unique<AtomicFile>(dir / kConfigFile));
  files.back()->write(config_json);
  for (auto& f : files) f->commit();

  std::set<std::string> now(shard_files.begin(), shard_files.end());
  if (ns > 1) now.insert(kSafetensorsIndex);
  for (const auto& old : previous)
    if (!now.count(old)) {
      fs::remove(dir / old, ec);
      if (ec) log_warn("{}: could not remove stale file: {}", (dir / old).string(), ec.message());
    }
  log_info("saved {} ({} layout, {}, {} file{})", dir.string(), packed ? "packed" : "master",
           dtype_name(opt.dtype), ns, ns == 1 ? "" : "s");
}

}  // namespace tl
