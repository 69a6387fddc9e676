// A deliberately naive double-precision BitNet forward, written independently of src/cpu: straight loops,
// fake-quantized operands exactly as transformers computes them (x_q / s and T * alpha), no BLAS, no tables.
// It shares nothing with tl::CpuModel except the Model's weights.
//
// Rounding ties. The reference's activations are doubles; tl::CpuModel's are fp32. Where x*s lies within
// kTieBand of a rounding boundary (k + 1/2), the two can legitimately round to neighbouring codes. There the
// reference adopts the code that CpuModel recorded in its taps (checking that it is one of the two
// neighbours) and counts an "ambiguous" element; everywhere else its own code must equal CpuModel's, or it
// counts a "mismatch". Without taps it rounds on its own.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "cpu/forward.hpp"
#include "model/model.hpp"

namespace tl::naive {

inline constexpr double kTieBand = 1e-3;

struct Result {
  std::vector<double> logits;                               // (B*T, V)
  std::map<std::string, std::vector<double>> layer_output;  // "layers.l.output" -> (B*T, C)
  int64_t quantized = 0, ambiguous = 0, mismatched = 0;     // activation code bookkeeping
  int64_t flipped = 0;  // near ties where CpuModel rounded the other way (resolved by its taps)
};

// x (rows, K) -> fake-quantized x_q / s, per row; `tap` (rows, K) are CpuModel's codes or null.
inline std::vector<double> act_quant(const std::vector<double>& x, int64_t rows, int64_t K, const int8_t* tap,
                                     Result& res) {
  std::vector<double> out(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double amax = 0;
    for (int64_t i = 0; i < K; ++i) amax = std::max(amax, std::fabs(x[r * K + i]));
    const double s = 127.0 / std::max(amax, 1e-5);
    for (int64_t i = 0; i < K; ++i) {
      const double v = x[r * K + i] * s;
      double code = std::clamp(std::nearbyint(v), -128.0, 127.0);
      const double frac = v - std::floor(v);
      ++res.quantized;
      if (tap) {
        const double t = tap[r * K + i];
        if (std::fabs(frac - 0.5) < kTieBand) {
          ++res.ambiguous;
          if (t == std::floor(v) || t == std::ceil(v)) {
            res.flipped += (t != code);
            code = t;
          } else {
            ++res.mismatched;
          }
        } else if (t != code) {
          ++res.mismatched;
        }
      }
      out[r * K + i] = code / s;
    }
  }
  return out;
}

// W (out, in) fp32 latent weights -> T * alpha, alpha = mean|W| (or the model's fixed scale).
inline std::vector<double> weight_quant(const Model& m, const std::string& name) {
  const auto w = m.tensor(name);
  double alpha;
  if (auto it = m.fixed_scale.find(name); it != m.fixed_scale.end()) {
    alpha = it->second;
  } else {
    double sum = 0;
    for (float x : w) sum += std::fabs(double(x));
    alpha = std::max(sum / double(w.size()), 1e-5);
  }
  std::vector<double> out(w.size());
  for (size_t i = 0; i < w.size(); ++i)
    out[i] = std::clamp(std::nearbyint(double(w[i]) / alpha), -1.0, 1.0) * alpha;
  return out;
}

// y (rows, out) = x (rows, in) . W^T
inline std::vector<double> linear(const std::vector<double>& x, int64_t rows, const std::vector<double>& W,
                                  int64_t out, int64_t in) {
  std::vector<double> y(size_t(rows * out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < in; ++i) acc += x[r * in + i] * W[o * in + i];
      y[r * out + o] = acc;
    }
  return y;
}

inline std::vector<double> rmsnorm(const std::vector<double>& x, int64_t rows, int64_t C,
                                   std::span<const float> w, double eps) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < C; ++i) ss += x[r * C + i] * x[r * C + i];
    const double inv = 1.0 / std::sqrt(ss / double(C) + eps);
    for (int64_t i = 0; i < C; ++i) y[r * C + i] = double(w[i]) * x[r * C + i] * inv;
  }
  return y;
}

// BitLinear of layer l, linear `which`, on x (rows, in).
inline std::vector<double> bitlinear(const Model& m, int64_t l, int which, const std::vector<double>& x,
                                     int64_t rows, const ForwardTaps* taps, Result& res) {
  const std::string name = Model::linear_name(l, which);
  const auto& v = m.view(name);
  const int64_t out = v.shape[0], in = v.shape[1];
  const int8_t* tap = nullptr;
  if (taps) {
    auto it = taps->i8.find("layers." + std::to_string(l) + "." + kLinearNames[which] + ".input");
    if (it != taps->i8.end() && int64_t(it->second.size()) == rows * in) tap = it->second.data();
  }
  return linear(act_quant(x, rows, in, tap, res), rows, weight_quant(m, name), out, in);
}

// Full forward of tokens (B, T); logits for every position.
inline Result forward(const Model& m, const std::vector<int32_t>& tokens, int64_t B, int64_t T,
                      const ForwardTaps* taps = nullptr) {
  const auto& c = m.config;
  const int64_t N = B * T, C = c.hidden_size, F = c.intermediate_size, NH = c.num_attention_heads;
  const int64_t NKV = c.num_key_value_heads, hd = c.head_dim, V = c.vocab_size;
  Result res;
  auto emb = m.tensor("model.embed_tokens.weight");
  std::vector<double> x(size_t(N * C));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < C; ++i) x[n * C + i] = emb[size_t(tokens[n] * C + i)];

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = Model::layer_prefix(l);
    auto h = rmsnorm(x, N, C, m.tensor(p + "input_layernorm.weight"), c.rms_norm_eps);
    auto q = bitlinear(m, l, kQ, h, N, taps, res);  // q is (B,T,NH,hd)
    auto k = bitlinear(m, l, kK, h, N, taps, res);  // k is (B,T,NKV,hd)
    auto v = bitlinear(m, l, kV, h, N, taps, res);
    // RoPE, half-split: element i pairs with i + hd/2, angle pos * theta^(-2i/hd)
    auto rope = [&](std::vector<double>& t, int64_t nheads) {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t hh = 0; hh < nheads; ++hh)
          for (int64_t i = 0; i < hd / 2; ++i) {
            const double ang = double(n % T) * std::pow(c.rope_theta, -2.0 * double(i) / double(hd));
            double& a = t[(n * nheads + hh) * hd + i];
            double& b = t[(n * nheads + hh) * hd + i + hd / 2];
            const double a0 = a, b0 = b;
            a = a0 * std::cos(ang) - b0 * std::sin(ang);
            b = b0 * std::cos(ang) + a0 * std::sin(ang);
          }
    };
    rope(q, NH);
    rope(k, NKV);
    std::vector<double> att(size_t(N * NH * hd), 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t hh = 0; hh < NH; ++hh) {
          const int64_t kh = hh / (NH / NKV);
          std::vector<double> sc(size_t(t + 1));
          double mx = -1e300;
          for (int64_t j = 0; j <= t; ++j) {
            double d = 0;
            for (int64_t i = 0; i < hd; ++i)
              d += q[((b * T + t) * NH + hh) * hd + i] * k[((b * T + j) * NKV + kh) * hd + i];
            sc[j] = d / std::sqrt(double(hd));
            mx = std::max(mx, sc[j]);
          }
          double sum = 0;
          for (auto& e : sc) sum += (e = std::exp(e - mx));
          for (int64_t j = 0; j <= t; ++j)
            for (int64_t i = 0; i < hd; ++i)
              att[((b * T + t) * NH + hh) * hd + i] += sc[j] / sum * v[((b * T + j) * NKV + kh) * hd + i];
        }
    auto a = rmsnorm(att, N, NH * hd, m.tensor(p + "self_attn.attn_sub_norm.weight"), c.rms_norm_eps);
    auto o = bitlinear(m, l, kO, a, N, taps, res);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];

    h = rmsnorm(x, N, C, m.tensor(p + "post_attention_layernorm.weight"), c.rms_norm_eps);
    auto g = bitlinear(m, l, kGate, h, N, taps, res);
    auto u = bitlinear(m, l, kUp, h, N, taps, res);
    for (size_t i = 0; i < g.size(); ++i) {
      const double gi = g[i];
      g[i] = (c.hidden_act == Activation::Relu2 ? std::pow(std::max(gi, 0.0), 2) : gi / (1 + std::exp(-gi))) *
             u[i];
    }
    g = rmsnorm(g, N, F, m.tensor(p + "mlp.ffn_sub_norm.weight"), c.rms_norm_eps);
    auto d = bitlinear(m, l, kDown, g, N, taps, res);
    for (size_t i = 0; i < x.size(); ++i) x[i] += d[i];
    res.layer_output["layers." + std::to_string(l) + ".output"] = x;
  }
  x = rmsnorm(x, N, C, m.tensor("model.norm.weight"), c.rms_norm_eps);
  auto head = m.tensor(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  res.logits.assign(size_t(N * V), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t vv = 0; vv < V; ++vv) {
      double acc = 0;
      for (int64_t i = 0; i < C; ++i) acc += x[n * C + i] * double(head[size_t(vv * C + i)]);
      res.logits[n * V + vv] = acc;
    }
  return res;
}

}  // namespace tl::naive
