#include "train/train_model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include <fmt/ranges.h>

#include "core/error.hpp"
#include "cpu/forward.hpp"

namespace tl::train {

namespace {

// The share of non-zero codes clamp(round(w / alpha), -1, 1), rounded as weight_quant_forward rounds.
template <class Real>
Real nonzero_code_fraction(const Real* w, size_t n, Real alpha) {
  if (n == 0) return Real(0);
  const Real inv = Real(1) / alpha;
  size_t nz = 0;
  for (size_t i = 0; i < n; ++i) nz += std::nearbyint(w[i] * inv) != 0;
  return Real(double(nz) / double(n));
}

}  // namespace

float effective_weight_scale(WeightQuantMode mode, const float* w, size_t n, float fixed_scale) {
  switch (mode) {
    case WeightQuantMode::Absmean:
      return absmean_alpha(w, n);
    case WeightQuantMode::Fixed:
      return fixed_scale;
    case WeightQuantMode::RptFixed:
      return fixed_scale * nonzero_code_fraction(w, n, fixed_scale);
    case WeightQuantMode::Off:
      break;
  }
  fail("effective_weight_scale: weight quantization is off");
}

namespace {

template <class V>
void zero(V& v) {
  std::fill(v.begin(), v.end(), typename V::value_type(0));
}

}  // namespace

template <class Real>
TrainModel<Real>::TrainModel(Model& model, TrainOptions options)
    : model_(&model), cfg_(model.config), opt_(options) {
  cfg_.validate();
  const int64_t L = cfg_.num_hidden_layers, C = cfg_.hidden_size, F = cfg_.intermediate_size;
  const int64_t Q = cfg_.q_dim(), KV = cfg_.kv_dim(), V = cfg_.vocab_size;

  auto view = [&](const std::string& name, std::vector<int64_t> shape) {
    const ParamView& v = model.view(name);
    TL_CHECK(v.shape == shape && v.offset + v.numel <= model.params.size(),
             "train: model tensor '{}' has shape [{}], expected [{}]", name, fmt::join(v.shape, ", "),
             fmt::join(shape, ", "));
    return &v;
  };
  embed_ = view("model.embed_tokens.weight", {V, C});
  head_ = cfg_.tie_word_embeddings ? embed_ : view("lm_head.weight", {V, C});
  norm_final_ = view("model.norm.weight", {C});
  const int64_t want[7][2] = {{Q, C}, {KV, C}, {KV, C}, {C, Q}, {F, C}, {F, C}, {C, F}};  // [out, in]
  size_t max_linear = 0;
  layers_.resize(size_t(L));
  for (int64_t l = 0; l < L; ++l) {
    LayerViews& lv = layers_[size_t(l)];
    const std::string pre = Model::layer_prefix(l);
    for (int w = 0; w < 7; ++w) {
      lv.lin[w] = view(Model::linear_name(l, w), {want[w][0], want[w][1]});
      max_linear = std::max(max_linear, lv.lin[w]->numel);
      if (opt_.weight_quant == WeightQuantMode::Fixed || opt_.weight_quant == WeightQuantMode::RptFixed) {
        auto it = model.fixed_scale.find(lv.lin[w]->name);
        TL_CHECK(it != model.fixed_scale.end() && it->second > 0 && std::isfinite(it->second),
                 "train: weight quantization '{}' needs a positive fixed scale for '{}'",
                 opt_.weight_quant == WeightQuantMode::Fixed ? "fixed" : "rpt-fixed", lv.lin[w]->name);
      }
    }
    lv.norm_in = view(pre + "input_layernorm.weight", {C});
    lv.norm_attn_sub = view(pre + "self_attn.attn_sub_norm.weight", {Q});
    lv.norm_post = view(pre + "post_attention_layernorm.weight", {C});
    lv.norm_ffn_sub = view(pre + "mlp.ffn_sub_norm.weight", {F});
  }

  nparams_ = model.params.size();
  if constexpr (std::is_same_v<Real, float>) {
    params_ = model.params.data();
  } else {
    own_params_.assign(model.params.begin(), model.params.end());
    params_ = own_params_.data();
  }
  grads_.assign(nparams_, Real(0));
  if (opt_.weight_quant != WeightQuantMode::Off) wq_.resize(max_linear);
  alpha_.assign(size_t(L * 7), Real(0));
  rpt_factor_.assign(size_t(L * 7), Real(1));

  // The inference forward's fp32 tables (torch computes them in fp32), as Real.
  const RopeTable rope = make_rope_table(cfg_.rope_theta, cfg_.head_dim, cfg_.max_position_embeddings);
  rope_cos_.assign(rope.cos.begin(), rope.cos.end());
  rope_sin_.assign(rope.sin.begin(), rope.sin.end());
}

template <class Real>
std::span<Real> TrainModel<Real>::param(const std::string& name) {
  const ParamView& v = model_->view(name);
  return {params_ + v.offset, v.numel};
}

template <class Real>
std::span<Real> TrainModel<Real>::grad(const std::string& name) {
  const ParamView& v = model_->view(name);
  return {grads_.data() + v.offset, v.numel};
}

template <class Real>
void TrainModel<Real>::zero_grad() {
  zero(grads_);
}

template <class Real>
size_t TrainModel<Real>::activation_bytes(const BitNetConfig& cfg, int64_t B, int64_t T) {
  const int64_t L = cfg.num_hidden_layers, C = cfg.hidden_size, F = cfg.intermediate_size;
  const int64_t Q = cfg.q_dim(), KV = cfg.kv_dim(), NH = cfg.num_attention_heads, V = cfg.vocab_size;
  const int64_t per_token = L * (4 * C + 3 * Q + 2 * KV + 3 * F + NH + 4) + 2 * C + V + 2;
  return size_t(B * T) * size_t(per_token) * sizeof(Real);
}

template <class Real>
size_t TrainModel<Real>::memory_bytes() const {
  size_t n = 0;
  for (const auto* v : {&acts_.residual,
                        &acts_.res_mid,
                        &acts_.ln1,
                        &acts_.ln1_rstd,
                        &acts_.q,
                        &acts_.k,
                        &acts_.v,
                        &acts_.att,
                        &acts_.att_lse,
                        &acts_.attsub,
                        &acts_.attsub_rstd,
                        &acts_.ln2,
                        &acts_.ln2_rstd,
                        &acts_.gate,
                        &acts_.up,
                        &acts_.ffnsub,
                        &acts_.ffnsub_rstd,
                        &acts_.lnf,
                        &acts_.lnf_rstd,
                        &acts_.logits,
                        &acts_.losses,
                        &scr_.o,
                        &scr_.hact,
                        &scr_.dres,
                        &scr_.dln,
                        &scr_.dq,
                        &scr_.datt,
                        &scr_.dk,
                        &scr_.dv,
                        &scr_.dffn,
                        &scr_.dh,
                        &scr_.dgate,
                        &scr_.dup,
                        &scr_.dlogits,
                        &wq_,
                        &alpha_,
                        &grads_,
                        &own_params_,
                        &rope_cos_,
                        &rope_sin_})
    n += v->capacity() * sizeof(Real);
  return n;
}

template <class Real>
const Real* TrainModel<Real>::effective_weight(int64_t layer, int which) {
  const ParamView* v = layers_[size_t(layer)].lin[which];
  if (opt_.weight_quant == WeightQuantMode::Off) return p(v);
  weight_quant_forward(wq_.data(), p(v), v->numel, alpha_[size_t(layer * 7 + which)]);
  if (opt_.weight_quant == WeightQuantMode::RptFixed) {  // transformers' second quantization: × (1 - z)
    const Real f = rpt_factor_[size_t(layer * 7 + which)];
    for (size_t i = 0; i < v->numel; ++i) wq_[i] *= f;
  }
  return wq_.data();
}

// ---------------------------------------------------------------------------------------------------------

template <class Real>
double TrainModel<Real>::forward(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B,
                                 int64_t T) {
  TL_CHECK(B > 0 && T > 0, "train forward: B and T must be positive, found B={} T={}", B, T);
  TL_CHECK(T <= cfg_.max_position_embeddings, "train forward: T = {} exceeds max_position_embeddings = {}", T,
           cfg_.max_position_embeddings);
  TL_CHECK(int64_t(tokens.size()) == B * T, "train forward: expected B*T = {}*{} = {} tokens, found {}", B, T,
           B * T, tokens.size());
  TL_CHECK(targets.empty() || int64_t(targets.size()) == B * T,
           "train forward: expected B*T = {} targets (or none), found {}", B * T, targets.size());
  const int64_t L = cfg_.num_hidden_layers, C = cfg_.hidden_size, F = cfg_.intermediate_size;
  const int64_t Q = cfg_.q_dim(), KV = cfg_.kv_dim(), NH = cfg_.num_attention_heads;
  const int64_t NKV = cfg_.num_key_value_heads, hd = cfg_.head_dim, V = cfg_.vocab_size, N = B * T;
  for (int64_t i = 0; i < N; ++i) {
    TL_CHECK(tokens[i] >= 0 && tokens[i] < V, "train forward: token {} at index {} is outside [0, {})",
             tokens[i], i, V);
    if (!targets.empty())
      TL_CHECK(targets[i] == kIgnoreTarget || (targets[i] >= 0 && targets[i] < V),
               "train forward: target {} at index {} is outside [0, {}) and not {} (ignore)", targets[i], i,
               V, kIgnoreTarget);
  }
  has_targets_ = false;  // until this forward completes
  B_ = B;
  T_ = T;
  N_ = N;
  tokens_.assign(tokens.begin(), tokens.end());
  targets_.assign(targets.begin(), targets.end());

  Activations& a = acts_;
  auto sz = [](int64_t n) { return size_t(n); };
  a.residual.resize(sz((L + 1) * N * C));
  a.res_mid.resize(sz(L * N * C));
  a.ln1.resize(sz(L * N * C));
  a.ln1_rstd.resize(sz(L * N));
  a.q.resize(sz(L * N * Q));
  a.k.resize(sz(L * N * KV));
  a.v.resize(sz(L * N * KV));
  a.att.resize(sz(L * N * Q));
  a.att_lse.resize(sz(L * N * NH));
  a.attsub.resize(sz(L * N * Q));
  a.attsub_rstd.resize(sz(L * N));
  a.ln2.resize(sz(L * N * C));
  a.ln2_rstd.resize(sz(L * N));
  a.gate.resize(sz(L * N * F));
  a.up.resize(sz(L * N * F));
  a.ffnsub.resize(sz(L * N * F));
  a.ffnsub_rstd.resize(sz(L * N));
  a.lnf.resize(sz(N * C));
  a.lnf_rstd.resize(sz(N));
  a.logits.resize(sz(N * V));
  a.losses.resize(sz(N));
  scr_.o.resize(sz(N * C));
  scr_.hact.resize(sz(N * F));

  const Real eps = Real(cfg_.rms_norm_eps);
  const bool relu2 = cfg_.hidden_act == Activation::Relu2;
  const bool aq = opt_.act_quant;

  // The weight scale of every linear for this forward (backward reuses them).
  for (int64_t l = 0; l < L; ++l)
    for (int w = 0; w < 7; ++w) {
      const ParamView* v = layers_[size_t(l)].lin[w];
      Real alpha = 0;
      if (opt_.weight_quant == WeightQuantMode::Absmean) {
        alpha = absmean_alpha(p(v), v->numel);
      } else if (opt_.weight_quant == WeightQuantMode::Fixed ||
                 opt_.weight_quant == WeightQuantMode::RptFixed) {
        auto it = model_->fixed_scale.find(v->name);
        TL_CHECK(it != model_->fixed_scale.end() && it->second > 0 && std::isfinite(it->second),
                 "train forward: weight quantization needs a positive fixed scale for '{}'", v->name);
        alpha = Real(it->second);
        if (opt_.weight_quant == WeightQuantMode::RptFixed)
          rpt_factor_[size_t(l * 7 + w)] = nonzero_code_fraction(p(v), v->numel, alpha);
      }
      alpha_[size_t(l * 7 + w)] = alpha;
    }

  embedding_forward(a.residual.data(), tokens.data(), p(embed_), N, C);  // x = embed_tokens[ids]
  for (int64_t l = 0; l < L; ++l) {
    const LayerViews& lv = layers_[size_t(l)];
    Real* x = a.residual.data() + l * N * C;  // x is (N,C): enters layer l
    Real* mid = a.res_mid.data() + l * N * C;
    Real* ln1 = a.ln1.data() + l * N * C;
    Real* q = a.q.data() + l * N * Q;
    Real* k = a.k.data() + l * N * KV;
    Real* v = a.v.data() + l * N * KV;
    Real* att = a.att.data() + l * N * Q;
    Real* attsub = a.attsub.data() + l * N * Q;
    Real* ln2 = a.ln2.data() + l * N * C;
    Real* gate = a.gate.data() + l * N * F;
    Real* up = a.up.data() + l * N * F;
    Real* ffnsub = a.ffnsub.data() + l * N * F;

    // --- attention block. A BitLinear is act_quant_forward on its input (once for q/k/v, which share it)
    // and matmul_forward with effective_weight: quant_linear_forward split so shared inputs quantize once.
    rmsnorm_forward(ln1, a.ln1_rstd.data() + l * N, x, p(lv.norm_in), N, C, eps);
    if (aq) act_quant_forward(ln1, ln1, N, C);
    matmul_forward(q, ln1, effective_weight(l, kQ), N, C, Q);
    matmul_forward(k, ln1, effective_weight(l, kK), N, C, KV);
    matmul_forward(v, ln1, effective_weight(l, kV), N, C, KV);
    rope_forward(q, N, T, NH, hd, rope_cos_.data(), rope_sin_.data());
    rope_forward(k, N, T, NKV, hd, rope_cos_.data(), rope_sin_.data());
    attention_forward(att, a.att_lse.data() + l * N * NH, q, k, v, B, T, NH, NKV, hd);
    rmsnorm_forward(attsub, a.attsub_rstd.data() + l * N, att, p(lv.norm_attn_sub), N, Q, eps);
    if (aq) act_quant_forward(attsub, attsub, N, Q);
    matmul_forward(scr_.o.data(), attsub, effective_weight(l, kO), N, Q, C);
    residual_forward(mid, x, scr_.o.data(), N * C);

    // --- MLP block
    rmsnorm_forward(ln2, a.ln2_rstd.data() + l * N, mid, p(lv.norm_post), N, C, eps);
    if (aq) act_quant_forward(ln2, ln2, N, C);
    matmul_forward(gate, ln2, effective_weight(l, kGate), N, C, F);
    matmul_forward(up, ln2, effective_weight(l, kUp), N, C, F);
    gated_act_forward(scr_.hact.data(), gate, up, N * F, relu2);
    rmsnorm_forward(ffnsub, a.ffnsub_rstd.data() + l * N, scr_.hact.data(), p(lv.norm_ffn_sub), N, F, eps);
    if (aq) act_quant_forward(ffnsub, ffnsub, N, F);
    matmul_forward(scr_.o.data(), ffnsub, effective_weight(l, kDown), N, F, C);
    residual_forward(x + N * C, mid, scr_.o.data(), N * C);  // residual[l+1]
  }
  rmsnorm_forward(a.lnf.data(), a.lnf_rstd.data(), a.residual.data() + L * N * C, p(norm_final_), N, C, eps);
  matmul_forward(a.logits.data(), a.lnf.data(), p(head_), N, C, V);  // LM head, not quantized

  if (targets.empty()) {
    loss_ = std::numeric_limits<double>::quiet_NaN();
    count_ = 0;
    return loss_;
  }
  count_ = crossentropy_forward(a.losses.data(), a.logits.data(), targets.data(), N, V);
  TL_CHECK(count_ > 0,
           "train forward: every one of the {} targets is {} (ignored); the mean loss is undefined", N,
           kIgnoreTarget);
  double sum = 0;
  for (int64_t n = 0; n < N; ++n) sum += double(a.losses[size_t(n)]);
  loss_ = sum / double(count_);
  has_targets_ = true;
  return loss_;
}

// ---------------------------------------------------------------------------------------------------------

template <class Real>
void TrainModel<Real>::backward() {
  TL_CHECK(has_targets_, "train backward: needs a completed forward() with targets first");
  const int64_t L = cfg_.num_hidden_layers, C = cfg_.hidden_size, F = cfg_.intermediate_size;
  const int64_t Q = cfg_.q_dim(), KV = cfg_.kv_dim(), NH = cfg_.num_attention_heads;
  const int64_t NKV = cfg_.num_key_value_heads, hd = cfg_.head_dim, V = cfg_.vocab_size;
  const int64_t B = B_, T = T_, N = N_;
  const bool relu2 = cfg_.hidden_act == Activation::Relu2;
  Activations& a = acts_;
  Scratch& s = scr_;
  auto sz = [](int64_t n) { return size_t(n); };
  s.dres.assign(sz(N * C), Real(0));
  s.dln.resize(sz(N * C));
  s.dq.resize(sz(N * Q));
  s.datt.resize(sz(N * Q));
  s.dk.resize(sz(N * KV));
  s.dv.resize(sz(N * KV));
  s.dffn.resize(sz(N * F));
  s.dh.resize(sz(N * F));
  s.dgate.resize(sz(N * F));
  s.dup.resize(sz(N * F));
  s.hact.resize(sz(N * F));

  // --- LM head and loss, a chunk of rows at a time: dlogits = (softmax - onehot) / count (d mean loss);
  // dlnf (into dln) = dlogits . head; dhead += dlogits^T . lnf (into the embedding's gradient when tied).
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(N, kLogitChunk / V));
  s.dlogits.resize(sz(chunk * V));
  zero(s.dln);
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t rows = std::min(chunk, N - r0);
    crossentropy_softmax_backward(s.dlogits.data(), a.logits.data() + r0 * V, targets_.data() + r0,
                                  Real(1.0 / double(count_)), rows, V);
    matmul_backward(s.dln.data() + r0 * C, g(head_), s.dlogits.data(), a.lnf.data() + r0 * C, p(head_), rows,
                    C, V);
  }
  rmsnorm_backward(s.dres.data(), g(norm_final_), s.dln.data(), a.residual.data() + L * N * C, p(norm_final_),
                   a.lnf_rstd.data(), N, C);

  for (int64_t l = L - 1; l >= 0; --l) {
    const LayerViews& lv = layers_[size_t(l)];
    const Real* x = a.residual.data() + l * N * C;
    const Real* mid = a.res_mid.data() + l * N * C;
    const Real* ln1 = a.ln1.data() + l * N * C;
    Real* q = a.q.data() + l * N * Q;
    Real* k = a.k.data() + l * N * KV;
    Real* v = a.v.data() + l * N * KV;
    const Real* att = a.att.data() + l * N * Q;
    const Real* attsub = a.attsub.data() + l * N * Q;
    const Real* ln2 = a.ln2.data() + l * N * C;
    const Real* gate = a.gate.data() + l * N * F;
    const Real* up = a.up.data() + l * N * F;
    const Real* ffnsub = a.ffnsub.data() + l * N * F;

    // --- MLP block. dres holds d residual[l+1] = d(mid + down): it is both d(down output) and, after the
    // post_attention_layernorm backward adds its share, d mid.
    zero(s.dffn);
    quant_linear_backward(s.dffn.data(), g(lv.lin[kDown]), s.dres.data(), ffnsub, effective_weight(l, kDown),
                          N, F, C);
    gated_act_forward(s.hact.data(), gate, up, N * F, relu2);  // recomputed instead of saved
    zero(s.dh);
    rmsnorm_backward(s.dh.data(), g(lv.norm_ffn_sub), s.dffn.data(), s.hact.data(), p(lv.norm_ffn_sub),
                     a.ffnsub_rstd.data() + l * N, N, F);
    zero(s.dgate);
    zero(s.dup);
    gated_act_backward(s.dgate.data(), s.dup.data(), s.dh.data(), gate, up, N * F, relu2);
    zero(s.dln);
    quant_linear_backward(s.dln.data(), g(lv.lin[kGate]), s.dgate.data(), ln2, effective_weight(l, kGate), N,
                          C, F);
    quant_linear_backward(s.dln.data(), g(lv.lin[kUp]), s.dup.data(), ln2, effective_weight(l, kUp), N, C, F);
    rmsnorm_backward(s.dres.data(), g(lv.norm_post), s.dln.data(), mid, p(lv.norm_post),
                     a.ln2_rstd.data() + l * N, N, C);

    // --- attention block. dres = d mid = d(x + o_proj output).
    zero(s.dq);  // first used as d attsub (N,Q)
    quant_linear_backward(s.dq.data(), g(lv.lin[kO]), s.dres.data(), attsub, effective_weight(l, kO), N, Q,
                          C);
    zero(s.datt);
    rmsnorm_backward(s.datt.data(), g(lv.norm_attn_sub), s.dq.data(), att, p(lv.norm_attn_sub),
                     a.attsub_rstd.data() + l * N, N, Q);
    zero(s.dq);
    zero(s.dk);
    zero(s.dv);
    attention_backward(s.dq.data(), s.dk.data(), s.dv.data(), s.datt.data(), q, k, v,
                       a.att_lse.data() + l * N * NH, B, T, NH, NKV, hd);
    rope_backward(s.dq.data(), N, T, NH, hd, rope_cos_.data(), rope_sin_.data());
    rope_backward(s.dk.data(), N, T, NKV, hd, rope_cos_.data(), rope_sin_.data());
    zero(s.dln);
    quant_linear_backward(s.dln.data(), g(lv.lin[kQ]), s.dq.data(), ln1, effective_weight(l, kQ), N, C, Q);
    quant_linear_backward(s.dln.data(), g(lv.lin[kK]), s.dk.data(), ln1, effective_weight(l, kK), N, C, KV);
    quant_linear_backward(s.dln.data(), g(lv.lin[kV]), s.dv.data(), ln1, effective_weight(l, kV), N, C, KV);
    rmsnorm_backward(s.dres.data(), g(lv.norm_in), s.dln.data(), x, p(lv.norm_in), a.ln1_rstd.data() + l * N,
                     N,
                     C);  // dres = d residual[l]
  }
  embedding_backward(g(embed_), s.dres.data(), tokens_.data(), N, C);
}

template class TrainModel<float>;
template class TrainModel<double>;

}  // namespace tl::train
