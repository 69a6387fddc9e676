// EngineSession: the fast engine's decoding session (Engine::new_session) and its prompt runs
// (Engine::prompt_logits). Internal to infer/: engine_session.cpp holds the session's steps, the prompt
// path (several tokens a call, each step's OpenMP loops) and the LM head; engine_decode.cpp the one-token
// path (the layers of a decoded token in one thread team).
#pragma once
#include <omp.h>

#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "core/error.hpp"
#include "cpu/forward.hpp"
#include "cpu/team.hpp"
#include "cpu/ternary_kernels.hpp"
#include "infer/engine.hpp"
#include "infer/row_share.hpp"
#include "infer/session.hpp"

namespace tl {

// Elements below which a loop stays on one thread.
inline constexpr int64_t kEngineParallelMin = int64_t(1) << 15;

template <class T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

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
  std::span<const float> decode(std::span<const int32_t> tokens) override;

  // Runs a whole prompt of T tokens from position 0 (the cache is emptied first), in chunks as decode does;
  // the final-normed hidden states of positions [rb, re) go to hid (re - rb, C). No LM head.
  void prefill(const int32_t* tokens, int64_t T, int64_t rb, int64_t re, float* hid);

 private:
  void norm(float* out, const float* in, const std::vector<float>& weight, int64_t N, int64_t C, float eps) {
    PhaseTimer timer(prof_, &DecodeProfile::norm);
    rmsnorm_forward(out, in, weight.data(), N, C, eps);
  }
  // Quantizes h (N rows of K, stride ld) into codes with row stride kp (zero-padded), scales into s_.
  void quantize(const float* h, int64_t N, int64_t K, int64_t kp);
  // out segments (N, rows) = int sums * (alpha_seg / s[n]); out rows have stride ldo... laid out per segment:
  // segment j goes to outs[j] (N, seg_rows) contiguous.
  void linear(const Engine::Packed& w, int64_t N, std::initializer_list<float*> outs);
  // The integer sums in acc_ (N, w.rows) to fp32, segment j into outs[j] (N, rows of segment j).
  void scale_segments(const Engine::Packed& w, int64_t N, std::initializer_list<float*> outs);

  // Where run() puts the final-normed hidden states of absolute positions [begin, end): hid (end-begin, C).
  struct Rows {
    int64_t begin = 0, end = 0;
    float* hid = nullptr;
  };

  // Runs N tokens at positions cache_.length.. through every layer and appends them to the cache; then the
  // final norm of the last row into last_ (rows null) or of the rows asked for (into rows->hid).
  void run(const int32_t* tokens, int64_t N, const Rows* rows = nullptr);

  // The layers for N tokens at positions cache_.length.. (prompts), x_ (N,C) in and out; each step's
  // OpenMP loops are parallel when large enough.
  void layers(int64_t N);

  // The layers for one token at position cache_.length (decoding), x_ (C) in and out: the same steps and
  // operations as layers(1), so the same bits, in one OpenMP region instead of a few per layer (waking the
  // team costs more than a layer's small steps). Thread 0 runs the serial steps (norms, quantization, RoPE,
  // the cache); the team shares the ternary products (RowShare) and the attention heads (a static share
  // each), and meets at a spinning TeamBarrier between steps, about 240 times per token.
  void layers_one_token();

  static constexpr int64_t kStepPrefetch = int64_t(256) << 10;  // at most, per member and step

  // logits_ (V) from last_ (C), the final-normed hidden state of the last token.
  void head();

  const Engine& e_;
  KVCache cache_;
  std::vector<float> logits_, last_;
  std::vector<float> x_, h_, q_, k_, v_, att_, o_, gate_, up_, s_;
  std::vector<int8_t> xq_;
  std::vector<int32_t> acc_;
  // The one-token team's shared state: the prepared activations of the current product, the rows' shares,
  // the barrier.
  std::vector<int8_t> xprep_;
  TernaryGemvToken token_;
  RowShare rows_;
  TeamBarrier barrier_;
  DecodeProfile* prof_ = nullptr;  // phase timers on when set (bench --profile)
};

}  // namespace tl
