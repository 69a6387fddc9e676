// The one-token path of EngineSession (engine_session.hpp): a decoded token's layers in one thread team.
#include <algorithm>
#include <cstring>
#include <functional>

#include "infer/engine_session.hpp"
#include "model/quant.hpp"

namespace tl {

void EngineSession::layers_one_token() {
  const BitNetConfig& c = e_.cfg_;
  const int64_t C = c.hidden_size, F = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim();
  const int64_t NH = c.num_attention_heads, NKV = c.num_key_value_heads, hd = c.head_dim;
  const float eps = float(c.rms_norm_eps);
  const int64_t pos = cache_.length;
  grow(xprep_, size_t(std::max({C, Q, F}) + 256));
  rows_.reserve(omp_get_max_threads());  // the team has at most this many members
#pragma omp parallel
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    DecodeProfile* prof = tid == 0 ? prof_ : nullptr;  // thread 0 times the steps, waits included
    std::vector<float> scores(size_t(pos + 1));        // attention scratch
    auto sync = [&] { barrier_.arrive_and_wait(nt); };
    auto prepare = [&](const float* h, int64_t K, const Engine::Packed& w) {
      quantize(h, 1, K, w.kp);
      token_ = prepare_ternary_gemv_token(xq_.data(), w.kp, xprep_.data(), e_.opt_.isa);
      grow(acc_, size_t(w.rows));
      rows_.reset(nt, w.rows);
      if (prof) prof->ternary_bytes += double(w.bytes.size());
    };
    auto product = [&](
                       const Engine::Packed& w, std::initializer_list<float*> outs, bool residual,
                       const std::function<bool()>& while_waiting = [] { return false; }) {
      PhaseTimer timer(prof, &DecodeProfile::ternary);
      rows_.run(tid, nt, [&](int64_t m0, int64_t m1) {
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
    auto serial_step = [&](const Engine::Packed& next, auto&& step) {
      if (tid == 0) {
        step();
        return sync();
      }
      const int64_t row_bytes = next.kp / 4, m0 = RowShare::range_begin(tid, nt, next.rows);
      const uint8_t* p = next.bytes.data() + m0 * row_bytes;
      const uint8_t* end =
          p + std::min((RowShare::range_begin(tid + 1, nt, next.rows) - m0) * row_bytes, kStepPrefetch);
      barrier_.arrive_and_wait(nt, [&] {
        for (int i = 0; i < 16 && p < end; ++i, p += 64) __builtin_prefetch(p, 0, 2);
        return p < end;
      });
    };
    const int64_t h0 = NH * tid / nt, h1 = NH * (tid + 1) / nt;
    const int64_t kv_row_bytes = ((h1 - 1) / (NH / NKV) + 1 - h0 / (NH / NKV)) * hd * 4;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const Engine::Layer& y = e_.layers_[size_t(l)];
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

}  // namespace tl
