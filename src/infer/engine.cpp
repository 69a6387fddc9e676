#include "infer/engine.hpp"

#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>

#include "core/error.hpp"
#include "core/half.hpp"
#include "infer/engine_session.hpp"
#include "model/quant.hpp"

namespace tl {

namespace {

int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

}  // namespace

void FloatTable::row(int64_t r, float* out) const {
  if (is_f16()) {
    const uint16_t* src = f16.data() + r * cols;
    for (int64_t i = 0; i < cols; ++i) out[i] = f16_to_f32(src[i]);
  } else {
    std::memcpy(out, f32.data() + r * cols, size_t(cols) * sizeof(float));
  }
}

EngineSource engine_source(const Model& model) {
  EngineSource s;
  s.config = model.config;
  const Model* m = &model;
  s.linear = [m](int64_t layer, int which) {
    return quantize_weight(*m, m->view(Model::linear_name(layer, which)));
  };
  s.norm = [m](const std::string& name) {
    auto t = m->tensor(name);
    return std::vector<float>(t.begin(), t.end());
  };
  auto table = [m](const std::string& name) {
    const ParamView& v = m->view(name);
    FloatTable t;
    t.rows = v.shape[0];
    t.cols = v.shape[1];
    auto src = m->tensor(name);
    t.f32.assign(src.begin(), src.end());
    return t;
  };
  s.embedding = [table] { return table("model.embed_tokens.weight"); };
  if (!model.config.tie_word_embeddings) s.lm_head = [table] { return table("lm_head.weight"); };
  return s;
}

EngineSource engine_source(const GgufModelReader& reader) {
  EngineSource s;
  s.config = reader.config();
  const GgufModelReader* r = &reader;
  s.linear = [r](int64_t layer, int which) { return r->linear(layer, which); };
  s.norm = [r](const std::string& name) { return r->read_float(name); };
  auto table = [r](const std::string& name) {
    GgufFloatTable g = r->read_table(name);
    FloatTable t;
    t.rows = g.rows;
    t.cols = g.cols;
    t.f32 = std::move(g.f32);
    t.f16 = std::move(g.f16);
    return t;
  };
  s.embedding = [table] { return table("model.embed_tokens.weight"); };
  if (!s.config.tie_word_embeddings) s.lm_head = [table] { return table("lm_head.weight"); };
  return s;
}

Engine::Packed Engine::pack(std::initializer_list<TernaryWeight> parts) {
  Packed p;
  p.in = parts.begin()->in;
  p.kp = round_up(p.in, 128);
  for (const TernaryWeight& w : parts) {
    TL_CHECK(w.in == p.in, "engine: fused linears have different in_features ({} and {})", p.in, w.in);
    p.rows += w.out;
    p.seg_end.push_back(p.rows);
    p.seg_scale.push_back(w.scale);
  }
  p.bytes.assign(size_t(p.rows * p.kp / 4), 0);
  std::vector<int8_t> row(size_t(p.kp), 0);  // one row padded with zero weights
  int64_t r0 = 0;
  for (const TernaryWeight& w : parts) {
    TL_CHECK(int64_t(w.codes.size()) == w.out * w.in, "engine: linear codes have {} entries, expected {}",
             w.codes.size(), w.out * w.in);
    for (int64_t r = 0; r < w.out; ++r) {
      std::memcpy(row.data(), w.codes.data() + r * w.in, size_t(w.in));
      pack_i2s(row.data(), 1, p.kp, p.bytes.data() + (r0 + r) * (p.kp / 4));
    }
    r0 += w.out;
  }
  return p;
}

Engine::Engine(const EngineSource& src, const EngineOptions& options) : cfg_(src.config), opt_(options) {
  cfg_.validate();
  TL_CHECK(kernel_isa_supported(opt_.isa), "engine: this CPU does not support the {} kernels",
           kernel_isa_name(opt_.isa));
  TL_CHECK(opt_.prompt_chunk > 0, "engine: prompt_chunk must be positive");
  const int64_t L = cfg_.num_hidden_layers, C = cfg_.hidden_size, F = cfg_.intermediate_size;
  const int64_t Q = cfg_.q_dim(), KV = cfg_.kv_dim();
  const int64_t want[7][2] = {{Q, C}, {KV, C}, {KV, C}, {C, Q}, {F, C}, {F, C}, {C, F}};  // [out, in]
  layers_.resize(size_t(L));
  for (int64_t l = 0; l < L; ++l) {
    TernaryWeight w[7];
    for (int i = 0; i < 7; ++i) {
      w[i] = src.linear(l, i);
      TL_CHECK(w[i].out == want[i][0] && w[i].in == want[i][1], "engine: '{}' is [{}, {}], expected [{}, {}]",
               Model::linear_name(l, i), w[i].out, w[i].in, want[i][0], want[i][1]);
    }
    Layer& y = layers_[size_t(l)];
    y.qkv = pack({w[kQ], w[kK], w[kV]});
    y.o = pack({w[kO]});
    y.gate_up = pack({w[kGate], w[kUp]});
    y.down = pack({w[kDown]});
    const std::string p = Model::layer_prefix(l);
    auto norm = [&](const std::string& name, int64_t n) {
      std::vector<float> v = src.norm(p + name);
      TL_CHECK(int64_t(v.size()) == n, "engine: '{}{}' has {} values, expected {}", p, name, v.size(), n);
      return v;
    };
    y.norm_in = norm("input_layernorm.weight", C);
    y.norm_attn_sub = norm("self_attn.attn_sub_norm.weight", Q);
    y.norm_post = norm("post_attention_layernorm.weight", C);
    y.norm_ffn_sub = norm("mlp.ffn_sub_norm.weight", F);
  }
  norm_final_ = src.norm("model.norm.weight");
  TL_CHECK(int64_t(norm_final_.size()) == C, "engine: model.norm.weight has {} values, expected {}",
           norm_final_.size(), C);
  embed_ = src.embedding();
  TL_CHECK(embed_.rows == cfg_.vocab_size && embed_.cols == C,
           "engine: the embedding is ({}, {}), expected ({}, {})", embed_.rows, embed_.cols, cfg_.vocab_size,
           C);
  if (!cfg_.tie_word_embeddings) {
    TL_CHECK(bool(src.lm_head), "engine: an untied model needs lm_head.weight");
    head_ = src.lm_head();
    TL_CHECK(head_.rows == cfg_.vocab_size && head_.cols == C,
             "engine: lm_head is ({}, {}), expected ({}, {})", head_.rows, head_.cols, cfg_.vocab_size, C);
  }
  const FloatTable& h = cfg_.tie_word_embeddings ? embed_ : head_;
  const std::string& want_head = opt_.head;
  TL_CHECK(want_head == "auto" || want_head == "f32" || want_head == "f16" || want_head == "i8",
           "engine: unknown LM head type '{}': expected auto, f32, f16 or i8", want_head);
  head_type_ = want_head == "auto" ? (h.is_f16() ? "f16" : "f32") : want_head;
  const int64_t V = cfg_.vocab_size;
  // Convert the head to the chosen storage; a tied head shares the embedding's storage when they agree.
  auto converted = [&](bool to_f16) {
    FloatTable t;
    t.rows = V;
    t.cols = C;
    std::vector<float> row(static_cast<size_t>(C));
    if (to_f16)
      t.f16.resize(size_t(V * C));
    else
      t.f32.resize(size_t(V * C));
    for (int64_t r = 0; r < V; ++r) {
      h.row(r, row.data());
      for (int64_t i = 0; i < C; ++i) {
        if (to_f16)
          t.f16[size_t(r * C + i)] = f32_to_f16(row[size_t(i)]);
        else
          t.f32[size_t(r * C + i)] = row[size_t(i)];
      }
    }
    return t;
  };
  if (head_type_ == "i8") {
    head_i8_.resize(size_t(V * C));
    head_i8_scale_.resize(size_t(V));
    std::vector<float> row(static_cast<size_t>(C));
    for (int64_t r = 0; r < V; ++r) {
      h.row(r, row.data());
      head_i8_scale_[size_t(r)] = quantize_row_i8(row.data(), size_t(C), head_i8_.data() + r * C);
    }
    if (!cfg_.tie_word_embeddings) head_ = FloatTable{};
  } else if ((head_type_ == "f16") != h.is_f16()) {
    FloatTable t = converted(head_type_ == "f16");
    head_ = std::move(t);
  }
  rope_ = make_rope_table(cfg_.rope_theta, cfg_.head_dim, cfg_.max_position_embeddings);
}

size_t Engine::weight_bytes() const {
  size_t n = 0;
  for (const Layer& y : layers_) {
    for (const Packed* p : {&y.qkv, &y.o, &y.gate_up, &y.down}) n += p->bytes.size();
    n += (y.norm_in.size() + y.norm_attn_sub.size() + y.norm_post.size() + y.norm_ffn_sub.size()) * 4;
  }
  n += norm_final_.size() * 4 + embed_.bytes() + head_.bytes() + head_i8_.size() + head_i8_scale_.size() * 4;
  return n;
}

size_t Engine::bytes_per_token() const {
  size_t n = 0;
  for (const Layer& y : layers_) {
    for (const Packed* p : {&y.qkv, &y.o, &y.gate_up, &y.down}) n += p->bytes.size();
    n += (y.norm_in.size() + y.norm_attn_sub.size() + y.norm_post.size() + y.norm_ffn_sub.size()) * 4;
  }
  const size_t VC = size_t(cfg_.vocab_size * cfg_.hidden_size);
  if (head_type_ == "i8")
    n += VC + head_i8_scale_.size() * 4;
  else
    n += VC * (head_type_ == "f16" ? 2 : 4);
  return n + norm_final_.size() * 4;
}

std::string Engine::describe() const {
  return fmt::format(
      "ternlab engine ({} kernels), {} layers, hidden {}, vocab {}, ternary linears I2_S-packed, "
      "LM head {}, {:.1f} MB",
      kernel_isa_name(opt_.isa), cfg_.num_hidden_layers, cfg_.hidden_size, cfg_.vocab_size, head_type_,
      double(weight_bytes()) / 1e6);
}

// ---------------------------------------------------------------------------------------------------------

void Engine::head_rows(const float* h, int64_t rows, float* out) const {
  const int64_t C = cfg_.hidden_size, V = cfg_.vocab_size;
  if (rows <= 0) return;
  const FloatTable& t = head_.rows ? head_ : embed_;
  if (head_type_ != "i8" && !t.is_f16()) {  // CpuModel::logits' call, so the bits agree with the reference
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(V), int(C), 1.0f, h, int(C),
                t.f32.data(), int(C), 0.0f, out, int(V));
    return;
  }
  // The decode GEMVs, row by row, over tiles of head rows (about 256 KiB, a multiple of 4 rows). Each output
  // is one row's dot product on its own, so a tile computes it exactly as one GEMV over the whole head.
  const bool i8 = head_type_ == "i8";
  std::vector<int8_t> hq;
  std::vector<float> hs;
  if (i8) {  // the hidden states quantized per token, as decode does
    hq.resize(size_t(rows * C));
    hs.resize(size_t(rows));
#pragma omp parallel for schedule(static) if (rows * C >= kEngineParallelMin)
    for (int64_t r = 0; r < rows; ++r)
      hs[size_t(r)] = quantize_activation_row(h + r * C, size_t(C), hq.data() + r * C);
  }
  const int64_t row_bytes = C * (i8 ? 1 : 2);
  const int64_t tile = std::max<int64_t>(4, (int64_t(256) << 10) / row_bytes / 4 * 4);
  const int64_t tiles = (V + tile - 1) / tile;
#pragma omp parallel for schedule(dynamic, 1) if (tiles > 1 && rows * V * C >= kEngineParallelMin)
  for (int64_t j = 0; j < tiles; ++j) {
    const int64_t m0 = j * tile, m = std::min(tile, V - m0);
    for (int64_t r = 0; r < rows; ++r) {
      float* o = out + r * V + m0;
      if (i8)
        i8_gemv(o, head_i8_.data() + m0 * C, head_i8_scale_.data() + m0, m, C, hq.data() + r * C,
                hs[size_t(r)], opt_.isa);
      else
        f16_gemv(o, t.f16.data() + m0 * C, m, C, h + r * C, opt_.isa);
    }
  }
}

void Engine::prompt_logits(std::span<const int32_t> tokens, int64_t B, int64_t T, int64_t row_begin,
                           int64_t row_end, std::vector<float>& out) const {
  TL_CHECK(B > 0 && T > 0, "prompt_logits: B and T must be positive, found B={} T={}", B, T);
  TL_CHECK(int64_t(tokens.size()) == B * T, "prompt_logits: expected B*T = {}*{} = {} tokens, found {}", B, T,
           B * T, tokens.size());
  TL_CHECK(T <= cfg_.max_position_embeddings, "prompt_logits: T = {} exceeds max_position_embeddings = {}", T,
           cfg_.max_position_embeddings);
  TL_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= T,
           "prompt_logits: rows [{}, {}) are not within [0, {}]", row_begin, row_end, T);
  const int64_t n = row_end - row_begin, C = cfg_.hidden_size, V = cfg_.vocab_size;
  out.resize(size_t(B * n * V));
  if (n == 0) return;
  std::vector<float> hid(size_t(B * n * C));
  EngineSession s(*this, T);
  for (int64_t b = 0; b < B; ++b)
    s.prefill(tokens.data() + b * T, T, row_begin, row_end, hid.data() + b * n * C);
  head_rows(hid.data(), B * n, out.data());
}

std::vector<float> Engine::prompt_logits(std::span<const int32_t> prompt) const {
  std::vector<float> out;
  const int64_t T = int64_t(prompt.size());
  prompt_logits(prompt, 1, T, 0, T, out);
  return out;
}

std::unique_ptr<DecodeSession> Engine::new_session(int64_t capacity) const {
  const int64_t max_pos = cfg_.max_position_embeddings;
  TL_CHECK(capacity >= 0 && capacity <= max_pos, "session capacity {} is outside 1..{}", capacity, max_pos);
  return std::make_unique<EngineSession>(*this, capacity == 0 ? max_pos : capacity);
}

}  // namespace tl
