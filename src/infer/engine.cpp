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
#include "cpu/team.hpp"
#include "model/quant.hpp"

namespace tl {

namespace {

constexpr int64_t kParallelMin = int64_t(1) << 15;  // elements below which a loop stays on one thread

int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

template <class T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
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

// Adds the wall time of its scope to one field of a DecodeProfile; does nothing without a profile.
class PhaseTimer {
 public:
  PhaseTimer(DecodeProfile* p, double DecodeProfile::*field)
      : slot_(p ? &(p->*field) : nullptr), t0_(p ? omp_get_wtime() : 0) {}
  ~PhaseTimer() {
    if (slot_) *slot_ += omp_get_wtime() - t0_;
  }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

 private:
  double* slot_;
  double t0_;
};

class EngineSession : public DecodeSession {
 public:
  EngineSession(const Engine& e, int64_t capacity)
      : e_(e), cache_(e.cfg_, capacity), logits_(size_t(e.cfg_.vocab_size)) {}

  int64_t length() const override { return cache_.length; }
  int64_t capacity() const override { return cache_.capacity; }
  bool set_profile(DecodeProfile* profile) override {
    prof_ = profile;
    return true;
  }
  void truncate(int64_t n) override {
    TL_CHECK(n >= 0 && n <= cache_.length, "truncate: {} is outside 0..{}", n, cache_.length);
    cache_.length = n;
  }
  std::span<const float> decode(std::span<const int32_t> tokens) override {
    const int64_t n = int64_t(tokens.size());
    TL_CHECK(n > 0, "decode: no tokens");
    TL_CHECK(cache_.length + n <= cache_.capacity, "decode: {} cached + {} new tokens exceed the capacity {}",
             cache_.length, n, cache_.capacity);
    for (int64_t i = 0; i < n; ++i)
      TL_CHECK(tokens[size_t(i)] >= 0 && tokens[size_t(i)] < e_.cfg_.vocab_size,
               "decode: token {} at index {} is outside [0, {})", tokens[size_t(i)], i, e_.cfg_.vocab_size);
    PhaseTimer timer(prof_, &DecodeProfile::total);
    for (int64_t i = 0; i < n; i += e_.opt_.prompt_chunk) {
      const int64_t m = std::min(e_.opt_.prompt_chunk, n - i);
      run(tokens.data() + i, m);
    }
    head();
    if (prof_) prof_->tokens += n;
    return logits_;
  }

  // Runs a whole prompt of T tokens from position 0 (the cache is emptied first), in chunks as decode does;
  // the final-normed hidden states of positions [rb, re) go to hid (re - rb, C). No LM head.
  void prefill(const int32_t* tokens, int64_t T, int64_t rb, int64_t re, float* hid) {
    TL_CHECK(T > 0 && T <= cache_.capacity, "prompt_logits: {} tokens exceed the capacity {}", T,
             cache_.capacity);
    for (int64_t i = 0; i < T; ++i)
      TL_CHECK(tokens[i] >= 0 && tokens[i] < e_.cfg_.vocab_size,
               "prompt_logits: token {} at index {} is outside [0, {})", tokens[i], i, e_.cfg_.vocab_size);
    cache_.length = 0;
    const Rows rows{rb, re, hid};
    for (int64_t i = 0; i < T && i < re; i += e_.opt_.prompt_chunk)  // positions >= re are not needed
      run(tokens + i, std::min({e_.opt_.prompt_chunk, T - i, re - i}), &rows);
  }

 private:
  void norm(float* out, const float* in, const std::vector<float>& weight, int64_t N, int64_t C, float eps) {
    PhaseTimer timer(prof_, &DecodeProfile::norm);
    rmsnorm_forward(out, in, weight.data(), N, C, eps);
  }
  // Quantizes h (N rows of K, stride ld) into codes with row stride kp (zero-padded), scales into s_.
  void quantize(const float* h, int64_t N, int64_t K, int64_t kp) {
    PhaseTimer timer(prof_, &DecodeProfile::quantize);
    grow(xq_, size_t(N * kp));
    grow(s_, size_t(N));
    auto quantize_row = [&](int64_t r) {
      int8_t* q = xq_.data() + r * kp;
      s_[size_t(r)] = quantize_activation_row_isa(h + r * K, K, q, e_.opt_.isa);
      std::memset(q + K, 0, size_t(kp - K));
    };
    if (N * K < kParallelMin) {  // decoding: no OpenMP call at all
      for (int64_t r = 0; r < N; ++r) quantize_row(r);
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < N; ++r) quantize_row(r);
    }
  }
  // out segments (N, rows) = int sums * (alpha_seg / s[n]); out rows have stride ldo... laid out per segment:
  // segment j goes to outs[j] (N, seg_rows) contiguous.
  void linear(const Engine::Packed& w, int64_t N, std::initializer_list<float*> outs) {
    grow(acc_, size_t(N * w.rows));
    {
      PhaseTimer timer(prof_, &DecodeProfile::ternary);
      // The engine's bytes come from pack_i2s: no code 3.
      ternary_gemm_i32(acc_.data(), w.rows, xq_.data(), N, w.bytes.data(), w.rows, w.kp, e_.opt_.isa,
                       PackedCodes::Valid);
    }
    if (prof_) prof_->ternary_bytes += double(w.bytes.size());
    scale_segments(w, N, outs);
  }
  // The integer sums in acc_ (N, w.rows) to fp32, segment j into outs[j] (N, rows of segment j).
  void scale_segments(const Engine::Packed& w, int64_t N, std::initializer_list<float*> outs) {
    int64_t r0 = 0;
    size_t j = 0;
    for (float* out : outs) {
      const int64_t r1 = w.seg_end[j], m = r1 - r0;
      const float alpha = w.seg_scale[j];
      const int32_t* acc = acc_.data();
      const float* s = s_.data();
      const int64_t ld = w.rows;
      auto scale_row = [&](int64_t n) {
        const float rs = alpha / s[n];  // the reference's row scale, the same fp32 operations
        const int32_t* a = acc + n * ld + r0;
        float* o = out + n * m;
        for (int64_t i = 0; i < m; ++i) o[i] = float(a[i]) * rs;
      };
      if (N * m < kParallelMin) {  // decoding: no OpenMP call at all
        for (int64_t n = 0; n < N; ++n) scale_row(n);
      } else {
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; ++n) scale_row(n);
      }
      r0 = r1;
      ++j;
    }
  }

  // Where run() puts the final-normed hidden states of absolute positions [begin, end): hid (end-begin, C).
  struct Rows {
    int64_t begin = 0, end = 0;
    float* hid = nullptr;
  };

  // Runs N tokens at positions cache_.length.. through every layer and appends them to the cache; then the
  // final norm of the last row into last_ (rows null) or of the rows asked for (into rows->hid).
  void run(const int32_t* tokens, int64_t N, const Rows* rows = nullptr) {
    const BitNetConfig& c = e_.cfg_;
    const int64_t C = c.hidden_size, F = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim();
    const float eps = float(c.rms_norm_eps);
    const int64_t pos0 = cache_.length;
    const int64_t W = std::max({C, Q, F});
    grow(x_, size_t(N * C));   // (N,C) residual stream
    grow(h_, size_t(N * W));   // (N,in) normalized input of the next linear
    grow(q_, size_t(N * Q));   // (N,NH,hd)
    grow(k_, size_t(N * KV));  // (N,NKV,hd)
    grow(v_, size_t(N * KV));
    grow(att_, size_t(N * Q));  // (N,NH,hd)
    grow(o_, size_t(N * C));
    grow(gate_, size_t(N * F));
    grow(up_, size_t(N * F));
    for (int64_t n = 0; n < N; ++n) e_.embed_.row(tokens[n], x_.data() + n * C);
    if (N == 1)
      layers_one_token();
    else
      layers(N);
    cache_.length += N;
    if (rows) {  // the rows asked for that fall in this chunk
      const int64_t a = std::max(rows->begin, pos0), z = std::min(rows->end, pos0 + N);
      if (a < z)
        rmsnorm_forward(rows->hid + (a - rows->begin) * C, x_.data() + (a - pos0) * C, e_.norm_final_.data(),
                        z - a, C, eps);
      return;
    }
    last_.resize(size_t(C));
    rmsnorm_forward(last_.data(), x_.data() + (N - 1) * C, e_.norm_final_.data(), 1, C,
                    eps);  // last row only
  }

  // The layers for N tokens at positions cache_.length.. (prompts), x_ (N,C) in and out; each step's
  // OpenMP loops are parallel when large enough.
  void layers(int64_t N) {
    const BitNetConfig& c = e_.cfg_;
    const int64_t C = c.hidden_size, F = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim();
    const int64_t NH = c.num_attention_heads, NKV = c.num_key_value_heads, hd = c.head_dim;
    const float eps = float(c.rms_norm_eps);
    const int64_t pos0 = cache_.length;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const Engine::Layer& y = e_.layers_[size_t(l)];
      // --- attention
      norm(h_.data(), x_.data(), y.norm_in, N, C, eps);
      quantize(h_.data(), N, C, y.qkv.kp);
      linear(y.qkv, N, {q_.data(), k_.data(), v_.data()});
      {
        PhaseTimer timer(prof_, &DecodeProfile::attention);
#pragma omp parallel for schedule(static) if (N * Q >= kParallelMin)
        for (int64_t n = 0; n < N; ++n) {
          const int64_t pos = pos0 + n;
          rope_forward(q_.data() + n * Q, NH, hd, e_.rope_.cos_at(pos), e_.rope_.sin_at(pos));
          rope_forward(k_.data() + n * KV, NKV, hd, e_.rope_.cos_at(pos), e_.rope_.sin_at(pos));
        }
        std::memcpy(cache_.k_layer(l) + pos0 * KV, k_.data(), size_t(N * KV) * sizeof(float));
        std::memcpy(cache_.v_layer(l) + pos0 * KV, v_.data(), size_t(N * KV) * sizeof(float));
        attention_forward(att_.data(), q_.data(), cache_.k_layer(l), cache_.v_layer(l), 1, N, cache_.capacity,
                          pos0, NH, NKV, hd);
      }
      norm(h_.data(), att_.data(), y.norm_attn_sub, N, Q, eps);
      quantize(h_.data(), N, Q, y.o.kp);
      linear(y.o, N, {o_.data()});
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
      for (int64_t i = 0; i < N * C; ++i) x_[size_t(i)] += o_[size_t(i)];
      // --- MLP
      norm(h_.data(), x_.data(), y.norm_post, N, C, eps);
      quantize(h_.data(), N, C, y.gate_up.kp);
      linear(y.gate_up, N, {gate_.data(), up_.data()});
      gated_activation_forward(gate_.data(), up_.data(), N * F, c.hidden_act);
      norm(h_.data(), gate_.data(), y.norm_ffn_sub, N, F, eps);
      quantize(h_.data(), N, F, y.down.kp);
      linear(y.down, N, {o_.data()});
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
      for (int64_t i = 0; i < N * C; ++i) x_[size_t(i)] += o_[size_t(i)];
    }
  }

  // The layers for one token at position cache_.length (decoding), x_ (C) in and out: the same steps and
  // operations as layers(1), so the same bits, in one OpenMP region instead of a few per layer (waking the
  // team costs more than a layer's small steps). Thread 0 runs the serial steps (norms, quantization, RoPE,
  // the cache); the team shares the ternary products (share_rows) and the attention heads (a static share
  // each), and meets at a spinning TeamBarrier between steps, about 240 times per token.
  void layers_one_token() {
    const BitNetConfig& c = e_.cfg_;
    const int64_t C = c.hidden_size, F = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim();
    const int64_t NH = c.num_attention_heads, NKV = c.num_key_value_heads, hd = c.head_dim;
    const float eps = float(c.rms_norm_eps);
    const int64_t pos = cache_.length;
    grow(xprep_, size_t(std::max({C, Q, F}) + 256));
    if (cursor_count_ < omp_get_max_threads()) {  // the team has at most this many members
      cursor_count_ = omp_get_max_threads();
      cursors_ = std::make_unique<RowCursor[]>(size_t(cursor_count_));
    }
#pragma omp parallel
    {
      const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
      DecodeProfile* prof = tid == 0 ? prof_ : nullptr;  // thread 0 times the steps, waits included
      std::vector<float> scores(size_t(pos + 1));        // attention scratch
      auto sync = [&] { barrier_.arrive_and_wait(nt); };
      // Thread 0, before the barrier that opens a product: h (K) quantized and prepared for the kernels.
      auto prepare = [&](const float* h, int64_t K, const Engine::Packed& w) {
        quantize(h, 1, K, w.kp);
        token_ = prepare_ternary_gemv_token(xq_.data(), w.kp, xprep_.data(), e_.opt_.isa);
        grow(acc_, size_t(w.rows));
        for (int t = 0; t < nt; ++t) {  // share_rows: each member's range
          cursors_[size_t(t)].next.store(range_begin(t, nt, w.rows), std::memory_order_relaxed);
          cursors_[size_t(t)].end = range_begin(t + 1, nt, w.rows);
        }
        if (prof) prof->ternary_bytes += double(w.bytes.size());
      };
      // The product of w and the prepared token, its rows shared by the team (share_rows), each piece
      // scaled to fp32 by its thread while hot: segment j into outs[j] (its rows), or added to it
      // (residual = true, one segment). The same operations per value as linear() and the residual add:
      // the same bits. Then the barrier; a member that waits there runs while_waiting.
      auto product = [&](
                         const Engine::Packed& w, std::initializer_list<float*> outs, bool residual,
                         const std::function<bool()>& while_waiting = [] { return false; }) {
        PhaseTimer timer(prof, &DecodeProfile::ternary);
        share_rows(tid, nt, [&](int64_t m0, int64_t m1) {
          ternary_gemv_token_rows(acc_.data(), token_, w.bytes.data(), m0, m1,
                                  PackedCodes::Valid);  // pack_i2s writes no code 3
          int64_t r0 = 0;
          size_t j = 0;
          for (float* out : outs) {
            const int64_t r1 = w.seg_end[j], a = std::max(m0, r0), z = std::min(m1, r1);
            const float rs = w.seg_scale[j] / s_[0];  // the reference's row scale
            for (int64_t i = a; i < z; ++i) {
              const float value = float(acc_[size_t(i)]) * rs;
              if (residual)
                out[i - r0] += value;
              else
                out[i - r0] = value;
            }
            r0 = r1;
            ++j;
          }
        });
        barrier_.arrive_and_wait(nt, while_waiting);
      };
      // A serial step: thread 0 runs it while the others wait, and meanwhile request the start of their
      // range of the next product into L2 (so memory streams during the step too), a kilobyte at a time,
      // stopping when the step ends.
      auto serial_step = [&](const Engine::Packed& next, auto&& step) {
        if (tid == 0) {
          step();
          return sync();
        }
        const int64_t row_bytes = next.kp / 4, m0 = range_begin(tid, nt, next.rows);
        const uint8_t* p = next.bytes.data() + m0 * row_bytes;
        const uint8_t* end =
            p + std::min((range_begin(tid + 1, nt, next.rows) - m0) * row_bytes, kStepPrefetch);
        barrier_.arrive_and_wait(nt, [&] {
          for (int i = 0; i < 16 && p < end; ++i, p += 64) __builtin_prefetch(p, 0, 2);
          return p < end;
        });
      };
      // Attention heads: a static share per member, so that it can fetch their cached keys and values
      // (read cold otherwise, after the layer's weights streamed through the caches) while it waits for
      // the q|k|v product to end.
      const int64_t h0 = NH * tid / nt, h1 = NH * (tid + 1) / nt;
      const int64_t kv_row_bytes = ((h1 - 1) / (NH / NKV) + 1 - h0 / (NH / NKV)) * hd * 4;
      for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        const Engine::Layer& y = e_.layers_[size_t(l)];
        // --- attention
        serial_step(y.qkv, [&] {
          norm(h_.data(), x_.data(), y.norm_in, 1, C, eps);
          prepare(h_.data(), C, y.qkv);
        });
        int64_t kv_pos = 0, kv_which = 0;  // the next cached row to prefetch: position, keys (0) or values
        product(y.qkv, {q_.data(), k_.data(), v_.data()}, false, [&] {
          if (h0 >= h1 || kv_pos >= pos) return false;
          const float* base =
              (kv_which ? cache_.v_layer(l) : cache_.k_layer(l)) + kv_pos * KV + h0 / (NH / NKV) * hd;
          for (int64_t b = 0; b < kv_row_bytes; b += 64)
            __builtin_prefetch(reinterpret_cast<const char*>(base) + b, 0, 2);
          if (++kv_which == 2) kv_which = 0, ++kv_pos;
          return kv_pos < pos;
        });
        {
          PhaseTimer timer(prof, &DecodeProfile::attention);
          if (tid == 0) {
            rope_forward(q_.data(), NH, hd, e_.rope_.cos_at(pos), e_.rope_.sin_at(pos));
            rope_forward(k_.data(), NKV, hd, e_.rope_.cos_at(pos), e_.rope_.sin_at(pos));
            std::memcpy(cache_.k_layer(l) + pos * KV, k_.data(), size_t(KV) * sizeof(float));
            std::memcpy(cache_.v_layer(l) + pos * KV, v_.data(), size_t(KV) * sizeof(float));
          }
          sync();
          attention_heads_forward(att_.data(), q_.data(), cache_.k_layer(l), cache_.v_layer(l), pos, NH, NKV,
                                  hd, h0, h1, scores.data());
          sync();
        }
        serial_step(y.o, [&] {
          norm(h_.data(), att_.data(), y.norm_attn_sub, 1, Q, eps);
          prepare(h_.data(), Q, y.o);
        });
        product(y.o, {x_.data()}, true);
        // --- MLP
        serial_step(y.gate_up, [&] {
          norm(h_.data(), x_.data(), y.norm_post, 1, C, eps);
          prepare(h_.data(), C, y.gate_up);
        });
        product(y.gate_up, {gate_.data(), up_.data()}, false);
        serial_step(y.down, [&] {
          gated_activation_forward(gate_.data(), up_.data(), F, c.hidden_act);
          norm(h_.data(), gate_.data(), y.norm_ffn_sub, 1, F, eps);
          prepare(h_.data(), F, y.down);
        });
        product(y.down, {x_.data()}, true);
      }
    }
  }

  // Rows [0, M) of a product shared by a team of nt threads. Member t owns the range
  // [range_begin(t), range_begin(t + 1)) (whose start it prefetches during thread 0's serial step) and
  // claims pieces of it from the front, each a quarter of what is left (at least kMinClaimRows rows);
  // when its range is done it claims pieces of the others' ranges the same way. Shrinking pieces make
  // the members finish together, and a member descheduled on a busy machine holds up only its current
  // piece. Each row runs exactly once.
  static int64_t range_begin(int t, int nt, int64_t M) {
    return M * t / nt;
  }
  template <class F>
  void share_rows(int tid, int nt, F&& f) {
    for (int k = 0; k < nt; ++k) {
      RowCursor& c = cursors_[size_t((tid + k) % nt)];
      int64_t begin = c.next.load(std::memory_order_relaxed);
      while (begin < c.end) {
        const int64_t size = std::max(kMinClaimRows, (c.end - begin) / 4);
        if (c.next.compare_exchange_weak(begin, begin + size, std::memory_order_relaxed)) {
          f(begin, std::min(c.end, begin + size));
          begin = c.next.load(std::memory_order_relaxed);
        }
      }
    }
  }
  static constexpr int64_t kMinClaimRows = 16;
  static constexpr int64_t kStepPrefetch = int64_t(256) << 10;  // at most, per member and step

  // logits_ (V) from last_ (C), the final-normed hidden state of the last token.
  void head() {
    PhaseTimer timer(prof_, &DecodeProfile::head);
    const BitNetConfig& c = e_.cfg_;
    const int64_t C = c.hidden_size, V = c.vocab_size;
    if (prof_)  // the table's bytes: int8 rows and their scales, f16 or f32
      prof_->head_bytes += e_.head_type_ == "i8" ? double(e_.head_i8_.size() + e_.head_i8_scale_.size() * 4)
                                                 : double((e_.head_.rows ? e_.head_ : e_.embed_).bytes());
    if (e_.head_type_ == "i8") {
      std::vector<int8_t> hq(static_cast<size_t>(C));
      const float s = quantize_activation_row(last_.data(), size_t(C), hq.data());
      i8_gemv(logits_.data(), e_.head_i8_.data(), e_.head_i8_scale_.data(), V, C, hq.data(), s, e_.opt_.isa);
      return;
    }
    const FloatTable& t = e_.head_.rows ? e_.head_ : e_.embed_;
    if (t.is_f16()) {
      f16_gemv(logits_.data(), t.f16.data(), V, C, last_.data(), e_.opt_.isa);
    } else {  // the reference's own call (cpu/forward.cpp CpuModel::logits), so the bits agree
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, int(V), int(C), 1.0f, last_.data(), int(C),
                  t.f32.data(), int(C), 0.0f, logits_.data(), int(V));
    }
  }

  const Engine& e_;
  KVCache cache_;
  std::vector<float> logits_, last_;
  std::vector<float> x_, h_, q_, k_, v_, att_, o_, gate_, up_, s_;
  std::vector<int8_t> xq_;
  std::vector<int32_t> acc_;
  // The one-token team's shared state: the prepared activations of the current product, each member's
  // range cursor, the barrier.
  std::vector<int8_t> xprep_;
  TernaryGemvToken token_;
  struct alignas(64) RowCursor {  // a member's range of rows in share_rows: next row to claim, end
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  std::unique_ptr<RowCursor[]> cursors_;
  int cursor_count_ = 0;
  TeamBarrier barrier_;
  DecodeProfile* prof_ = nullptr;  // phase timers on when set (bench --profile)
};

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
#pragma omp parallel for schedule(static) if (rows * C >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r)
      hs[size_t(r)] = quantize_activation_row(h + r * C, size_t(C), hq.data() + r * C);
  }
  const int64_t row_bytes = C * (i8 ? 1 : 2);
  const int64_t tile = std::max<int64_t>(4, (int64_t(256) << 10) / row_bytes / 4 * 4);
  const int64_t tiles = (V + tile - 1) / tile;
#pragma omp parallel for schedule(dynamic, 1) if (tiles > 1 && rows * V * C >= kParallelMin)
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
