#include "infer/engine_session.hpp"

#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "model/quant.hpp"

namespace tl {

std::span<const float> EngineSession::decode(std::span<const int32_t> tokens) {
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

void EngineSession::prefill(const int32_t* tokens, int64_t T, int64_t rb, int64_t re, float* hid) {
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

void EngineSession::quantize(const float* h, int64_t N, int64_t K, int64_t kp) {
  PhaseTimer timer(prof_, &DecodeProfile::quantize);
  grow(xq_, size_t(N * kp));
  grow(s_, size_t(N));
  auto quantize_row = [&](int64_t r) {
    int8_t* q = xq_.data() + r * kp;
    s_[size_t(r)] = quantize_activation_row_isa(h + r * K, K, q, e_.opt_.isa);
    std::memset(q + K, 0, size_t(kp - K));
  };
  if (N * K < kEngineParallelMin) {  // decoding: no OpenMP call at all
    for (int64_t r = 0; r < N; ++r) quantize_row(r);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < N; ++r) quantize_row(r);
  }
}

void EngineSession::linear(const Engine::Packed& w, int64_t N, std::initializer_list<float*> outs) {
  grow(acc_, size_t(N * w.rows));
  {
    PhaseTimer timer(prof_, &DecodeProfile::ternary);
    ternary_gemm_i32(acc_.data(), w.rows, xq_.data(), N, w.bytes.data(), w.rows, w.kp, e_.opt_.isa,
                     PackedCodes::Valid);
  }
  if (prof_) prof_->ternary_bytes += double(w.bytes.size());
  scale_segments(w, N, outs);
}

void EngineSession::scale_segments(const Engine::Packed& w, int64_t N, std::initializer_list<float*> outs) {
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
    if (N * m < kEngineParallelMin) {  // decoding: no OpenMP call at all
      for (int64_t n = 0; n < N; ++n) scale_row(n);
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t n = 0; n < N; ++n) scale_row(n);
    }
    r0 = r1;
    ++j;
  }
}

void EngineSession::run(const int32_t* tokens, int64_t N, const Rows* rows) {
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

void EngineSession::layers(int64_t N) {
  const BitNetConfig& c = e_.cfg_;
  const int64_t C = c.hidden_size, F = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim();
  const int64_t NH = c.num_attention_heads, NKV = c.num_key_value_heads, hd = c.head_dim;
  const float eps = float(c.rms_norm_eps);
  const int64_t pos0 = cache_.length;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const Engine::Layer& y = e_.layers_[size_t(l)];
    norm(h_.data(), x_.data(), y.norm_in, N, C, eps);
    quantize(h_.data(), N, C, y.qkv.kp);
    linear(y.qkv, N, {q_.data(), k_.data(), v_.data()});
    {
      PhaseTimer timer(prof_, &DecodeProfile::attention);
#pragma omp parallel for schedule(static) if (N * Q >= kEngineParallelMin)
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
#pragma omp parallel for schedule(static) if (N * C >= kEngineParallelMin)
    for (int64_t i = 0; i < N * C; ++i) x_[size_t(i)] += o_[size_t(i)];
    norm(h_.data(), x_.data(), y.norm_post, N, C, eps);
    quantize(h_.data(), N, C, y.gate_up.kp);
    linear(y.gate_up, N, {gate_.data(), up_.data()});
    gated_activation_forward(gate_.data(), up_.data(), N * F, c.hidden_act);
    norm(h_.data(), gate_.data(), y.norm_ffn_sub, N, F, eps);
    quantize(h_.data(), N, F, y.down.kp);
    linear(y.down, N, {o_.data()});
#pragma omp parallel for schedule(static) if (N * C >= kEngineParallelMin)
    for (int64_t i = 0; i < N * C; ++i) x_[size_t(i)] += o_[size_t(i)];
  }
}

void EngineSession::head() {
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

}  // namespace tl
