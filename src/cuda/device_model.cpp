#include "cuda/device_model.hpp"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "core/error.hpp"
#include "cuda/check.hpp"
#include "cuda/gemm.hpp"
#include "cuda/kernels.hpp"
#include "cuda/profile.hpp"
#include "model/rope.hpp"

namespace tl::cuda {

using k::bf16;

bool available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = std::string("CUDA: ") + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky-free error state
    return false;
  }
  if (n <= 0) {
    if (why) *why = "no CUDA device";
    return false;
  }
  return true;
}

std::string device_description(int device) {
  cudaDeviceProp p{};
  TL_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return fmt::format("{} (sm_{}{}, {:.1f} GiB)", p.name, p.major, p.minor,
                     double(p.totalGlobalMem) / double(size_t(1) << 30));
}

namespace {

// Rows of logits formed at a time: at most this many elements (fp32 logits + bf16 gradients of a chunk).
// LM head rows per chunk: chunk x V fp32 logits (1 GiB at most). Every chunk's backward adds its share into
// the whole (V, C) head gradient, so small chunks multiply that traffic: 256-row chunks cost 41 ms of a
// 496 ms step at the 2b4t shape, batch 64 (H200).
constexpr int64_t kChunkElems = int64_t(1) << 28;

}  // namespace

struct DeviceModel::Impl {
  BitNetConfig cfg;
  DeviceModelOptions opt;
  int64_t L = 0, C = 0, F = 0, Q = 0, KV = 0, NH = 0, NKV = 0, hd = 0, V = 0, W = 0, maxN = 0, chunk = 0;
  size_t P = 0;
  WeightQuant mode = WeightQuant::Absmean;
  bool aq = true, relu2 = true;
  float eps = 1e-5f;

  cudaStream_t stream = nullptr;
  std::unique_ptr<Gemm> gemm;
  std::vector<void*> allocs;
  size_t allocated = 0;

  // Parameter offsets (elements into the flat buffers).
  size_t off_embed = 0, off_head = 0, off_normf = 0;
  struct LayerOff {
    size_t lin[7];
    size_t norm_in, norm_attn_sub, norm_post, norm_ffn_sub;
  };
  std::vector<LayerOff> lay;
  // Data parallelism: where each layer's tensors begin in the flat layout ((L+1): layer_begin[L] = the end of
  // the last layer), when the layout is embedding | layer 0 | ... | layer L-1 | the rest; empty otherwise.
  std::vector<size_t> layer_begin;
  DeviceModel::GradsReadyHook grads_ready;
  bool qkv_contig = true, gu_contig = true;
  size_t code_off[7] = {};  // in the layer's code buffer: q|k|v, o, gate|up, down
  size_t layer_codes = 0;
  bool codes_valid = false;  // constant_weights: `codes` holds all L layers' codes of the current weights
  // Every layer's codes are kept from the forward for the backward (and, with constant_weights, across
  // forwards), except with recompute, where one layer's are (re)made at a time to save memory.
  bool keep_codes = false;
  bf16* codes_of(int64_t l) const { return keep_codes ? codes + size_t(l) * layer_codes : codes; }

  // Device buffers.
  float *params = nullptr, *grads = nullptr, *alpha = nullptr, *eff = nullptr, *fixed = nullptr;
  float *rope_cos = nullptr, *rope_sin = nullptr;
  k::LinearDesc* lin_desc = nullptr;
  int64_t stat_blocks = 0;
  double* psum = nullptr;
  unsigned long long* pcnt = nullptr;
  bf16* codes = nullptr;
  int32_t *tokens_d = nullptr, *targets_d = nullptr;
  // The embedding gradient's deterministic scatter: positions grouped by token (embedding_backward).
  int32_t *emb_order = nullptr, *emb_seg = nullptr, *emb_tok = nullptr;
  int64_t emb_unique = 0;
  std::vector<int32_t> emb_host;  // order (N) | seg_start (U+1) | seg_token (U), staged for one copy
  // Saved activations: `slots` copies (L, or 1 with recompute) of the per-layer ones.
  int64_t slots = 0;
  float *residual = nullptr, *mid = nullptr, *qkv = nullptr, *att = nullptr, *lse = nullptr, *gu = nullptr;
  float *ln1_rstd = nullptr, *ln1_s = nullptr, *attsub_rstd = nullptr, *attsub_s = nullptr,
        *ln2_rstd = nullptr, *ln2_s = nullptr, *ffn_rstd = nullptr, *ffn_s = nullptr, *lnf_rstd = nullptr,
        *losses_d = nullptr;
  bf16 *ln1 = nullptr, *attsub = nullptr, *ln2 = nullptr, *ffn = nullptr;
  float* lnf = nullptr;  // final norm output (N, C), the LM head's fp32 (TF32) input
  // Forward scratch.
  float *acc = nullptr, *hact = nullptr, *logits_chunk = nullptr, *logits_all = nullptr;
  // Backward scratch (allocated by the first backward).
  bool have_bwd = false;
  float *dres = nullptr, *dx = nullptr, *datt = nullptr, *dqkv = nullptr, *Dbuf = nullptr;
  bf16 *dyb = nullptr, *dys = nullptr;
  float* dlogits = nullptr;  // (chunk, V): the logits chunk itself unless logits are kept
  double* dw_partial = nullptr;
  // Attention through batched GEMMs (k::attention_forward_gemm): transient scratch, allocated by the first
  // forward that can use it; sequences whose work does not fit take the O(T) kernels.
  float* attn_scratch = nullptr;
  size_t attn_scratch_bytes = 0;
  void attention_fwd(float* out, float* lse_out, const float* qkv_in);
  void attention_bwd(float* dqkv_out, const float* dout, const float* out, const float* qkv_in,
                     const float* lse_in);

  // Last forward.
  int64_t B = 0, T = 0, N = 0, count = 0;
  double loss = std::numeric_limits<double>::quiet_NaN();
  bool has_targets = false, logits_valid = false;
  std::vector<float> losses_h;

  ~Impl() {
    if (stream) cudaStreamSynchronize(stream);
    gemm.reset();
    for (void* p : allocs) cudaFree(p);
    if (stream) cudaStreamDestroy(stream);
  }

  template <class T>
  T* alloc(size_t n, const char* what) {
    if (n == 0) n = 1;
    void* p = nullptr;
    const size_t bytes = n * sizeof(T);
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail(
          "cuda: out of device memory allocating {} ({:.1f} MiB; {:.1f} MiB already held by this model, "
          "{:.1f} MiB free of {:.1f} MiB): {}",
          what, double(bytes) / 1048576.0, double(allocated) / 1048576.0, double(free_b) / 1048576.0,
          double(total_b) / 1048576.0, cudaGetErrorString(e));
    }
    allocs.push_back(p);
    allocated += bytes;
    return static_cast<T*>(p);
  }

  // Per-layer saved buffers of slot `s`.
  size_t sl(int64_t l) const { return size_t(slots == 1 ? 0 : l); }

  void compute_weight_stats();
  void quantize_layer(int64_t l);
  void layer_forward(int64_t l, bool write_next);
  void head_pass(bool want_loss, bool want_grad);
  void layer_backward(int64_t l);
  void body_backward();  // after the head's backward: final norm, the layers, the embedding
  double forward_impl(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B, int64_t T,
                      bool fused_backward);
  void ensure_backward_buffers();
  void gemm_bf16(bool ta, bool tb, int64_t M, int64_t Nn, int64_t K, float a, const bf16* A, int64_t lda,
                 const bf16* Bm, int64_t ldb, float beta, float* Cm, int64_t ldc) {
    gemm->matmul(ta, tb, M, Nn, K, a, A, lda, Bm, ldb, beta, Cm, ldc, OutType::F32);
  }
};

DeviceModel::DeviceModel(const Model& model, DeviceModelOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.cfg = model.config;
  m.cfg.validate();
  m.opt = options;
  TL_CHECK(options.max_tokens >= 1, "cuda model: max_tokens must be at least 1, found {}",
           options.max_tokens);
  std::string why;
  TL_CHECK(available(&why), "cuda model: no usable CUDA device ({})", why);
  TL_CUDA_CHECK(cudaSetDevice(options.device));
  const BitNetConfig& c = m.cfg;
  m.L = c.num_hidden_layers;
  m.C = c.hidden_size;
  m.F = c.intermediate_size;
  m.Q = c.q_dim();
  m.KV = c.kv_dim();
  m.NH = c.num_attention_heads;
  m.NKV = c.num_key_value_heads;
  m.hd = c.head_dim;
  m.V = c.vocab_size;
  m.W = m.Q + 2 * m.KV;
  m.maxN = options.max_tokens;
  m.P = model.params.size();
  m.mode = options.quant.weight_quant;
  m.aq = options.quant.act_quant;
  m.relu2 = c.hidden_act == Activation::Relu2;
  m.eps = float(c.rms_norm_eps);
  TL_CHECK(m.hd <= 256, "cuda model: head_dim {} is above the CUDA attention kernels' limit of 256", m.hd);
  const int64_t L = m.L, C = m.C, F = m.F, Q = m.Q, KV = m.KV, V = m.V, W = m.W, N = m.maxN;

  // Views, checked as TrainModel checks them.
  auto view = [&](const std::string& name, std::vector<int64_t> shape) -> const ParamView& {
    const ParamView& v = model.view(name);
    TL_CHECK(v.shape == shape && v.offset + v.numel <= model.params.size(),
             "cuda model: tensor '{}' has the wrong shape or lies outside the parameters", name);
    return v;
  };
  m.off_embed = view("model.embed_tokens.weight", {V, C}).offset;
  m.off_head = c.tie_word_embeddings ? m.off_embed : view("lm_head.weight", {V, C}).offset;
  m.off_normf = view("model.norm.weight", {C}).offset;
  const int64_t want[7][2] = {{Q, C}, {KV, C}, {KV, C}, {C, Q}, {F, C}, {F, C}, {C, F}};
  std::vector<k::LinearDesc> descs;
  std::vector<float> fixed;
  const bool need_fixed = m.mode == WeightQuant::Fixed || m.mode == WeightQuant::RptFixed;
  m.lay.resize(size_t(L));
  for (int64_t l = 0; l < L; ++l) {
    Impl::LayerOff& lo = m.lay[size_t(l)];
    const std::string pre = Model::layer_prefix(l);
    for (int w = 0; w < 7; ++w) {
      const ParamView& v = view(Model::linear_name(l, w), {want[w][0], want[w][1]});
      lo.lin[w] = v.offset;
      descs.push_back({int64_t(v.offset), int64_t(v.numel), m.stat_blocks});
      m.stat_blocks += (int64_t(v.numel) + k::kStatBlock - 1) / k::kStatBlock;
      if (need_fixed) {
        auto it = model.fixed_scale.find(v.name);
        TL_CHECK(it != model.fixed_scale.end() && it->second > 0 && std::isfinite(it->second),
                 "cuda model: weight quantization '{}' needs a positive fixed scale for '{}'",
                 m.mode == WeightQuant::Fixed ? "fixed" : "rpt-fixed", v.name);
        fixed.push_back(it->second);
      }
    }
    lo.norm_in = view(pre + "input_layernorm.weight", {C}).offset;
    lo.norm_attn_sub = view(pre + "self_attn.attn_sub_norm.weight", {Q}).offset;
    lo.norm_post = view(pre + "post_attention_layernorm.weight", {C}).offset;
    lo.norm_ffn_sub = view(pre + "mlp.ffn_sub_norm.weight", {F}).offset;
    m.qkv_contig =
        m.qkv_contig && lo.lin[kK] == lo.lin[kQ] + size_t(Q * C) && lo.lin[kV] == lo.lin[kK] + size_t(KV * C);
    m.gu_contig = m.gu_contig && lo.lin[kUp] == lo.lin[kGate] + size_t(F * C);
  }
  {  // the ranges of the gradients-ready hook: every layer's tensors contiguous, in order, after the
     // embedding
    std::vector<size_t> lo(size_t(L), SIZE_MAX), hi(size_t(L), 0);
    for (const ParamView& v : model.views)
      for (int64_t l = 0; l < L; ++l)
        if (v.name.starts_with(Model::layer_prefix(l))) {
          lo[size_t(l)] = std::min(lo[size_t(l)], v.offset);
          hi[size_t(l)] = std::max(hi[size_t(l)], v.offset + v.numel);
        }
    bool ordered = L > 0 && lo[0] == m.off_embed + size_t(V * C) && m.off_embed == 0;
    for (int64_t l = 0; l + 1 < L && ordered; ++l) ordered = hi[size_t(l)] == lo[size_t(l + 1)];
    if (ordered) {
      m.layer_begin = lo;
      m.layer_begin.push_back(hi[size_t(L - 1)]);
    }
  }
  m.code_off[kQ] = 0;
  m.code_off[kK] = size_t(Q * C);
  m.code_off[kV] = size_t((Q + KV) * C);
  m.code_off[kO] = size_t(W * C);
  m.code_off[kGate] = m.code_off[kO] + size_t(C * Q);
  m.code_off[kUp] = m.code_off[kGate] + size_t(F * C);
  m.code_off[kDown] = m.code_off[kUp] + size_t(F * C);
  m.layer_codes = m.code_off[kDown] + size_t(C * F);
  m.chunk = std::max<int64_t>(1, std::min<int64_t>(N, kChunkElems / V));
  if (m.chunk >= 128) m.chunk -= m.chunk % 64;

  TL_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  m.gemm = std::make_unique<Gemm>(m.stream);

  // Parameters, gradients, scales, tables.
  m.params = m.alloc<float>(m.P, "parameters");
  m.grads = m.alloc<float>(m.P, "gradients");
  TL_CUDA_CHECK(
      cudaMemcpyAsync(m.params, model.params.data(), m.P * sizeof(float), cudaMemcpyHostToDevice, m.stream));
  TL_CUDA_CHECK(cudaMemsetAsync(m.grads, 0, m.P * sizeof(float), m.stream));
  m.alpha = m.alloc<float>(size_t(L * 7), "weight scales");
  m.eff = m.alloc<float>(size_t(L * 7), "weight scales");
  m.lin_desc = m.alloc<k::LinearDesc>(descs.size(), "linear table");
  TL_CUDA_CHECK(cudaMemcpyAsync(m.lin_desc, descs.data(), descs.size() * sizeof(k::LinearDesc),
                                cudaMemcpyHostToDevice, m.stream));
  if (need_fixed) {
    m.fixed = m.alloc<float>(fixed.size(), "fixed scales");
    TL_CUDA_CHECK(cudaMemcpyAsync(m.fixed, fixed.data(), fixed.size() * sizeof(float), cudaMemcpyHostToDevice,
                                  m.stream));
  }
  m.psum = m.alloc<double>(size_t(m.stat_blocks), "weight statistics");
  m.pcnt = m.alloc<unsigned long long>(size_t(m.stat_blocks), "weight statistics");
  const RopeTable rope = make_rope_table(c.rope_theta, c.head_dim, c.max_position_embeddings);
  m.rope_cos = m.alloc<float>(rope.cos.size(), "rope table");
  m.rope_sin = m.alloc<float>(rope.sin.size(), "rope table");
  TL_CUDA_CHECK(cudaMemcpyAsync(m.rope_cos, rope.cos.data(), rope.cos.size() * sizeof(float),
                                cudaMemcpyHostToDevice, m.stream));
  TL_CUDA_CHECK(cudaMemcpyAsync(m.rope_sin, rope.sin.data(), rope.sin.size() * sizeof(float),
                                cudaMemcpyHostToDevice, m.stream));
  m.keep_codes = options.constant_weights || !options.recompute;
  m.codes = m.alloc<bf16>(m.layer_codes * size_t(m.keep_codes ? m.L : 1), "weight codes");
  m.tokens_d = m.alloc<int32_t>(size_t(N), "tokens");
  m.targets_d = m.alloc<int32_t>(size_t(N), "targets");
  m.emb_order = m.alloc<int32_t>(size_t(3 * N + 1), "embedding scatter");

  // Saved activations.
  m.slots = options.recompute ? 1 : L;
  const size_t S = size_t(m.slots), n = size_t(N);
  m.residual = m.alloc<float>(size_t(L + 1) * n * size_t(C), "residual stream");
  m.mid = m.alloc<float>(S * n * size_t(C), "activations");
  m.qkv = m.alloc<float>(S * n * size_t(W), "activations");
  m.att = m.alloc<float>(S * n * size_t(Q), "activations");
  m.lse = m.alloc<float>(S * n * size_t(m.NH), "activations");
  m.gu = m.alloc<float>(S * n * size_t(2 * F), "activations");
  m.ln1 = m.alloc<bf16>(S * n * size_t(C), "activations");
  m.attsub = m.alloc<bf16>(S * n * size_t(Q), "activations");
  m.ln2 = m.alloc<bf16>(S * n * size_t(C), "activations");
  m.ffn = m.alloc<bf16>(S * n * size_t(F), "activations");
  for (float** p :
       {&m.ln1_rstd, &m.ln1_s, &m.attsub_rstd, &m.attsub_s, &m.ln2_rstd, &m.ln2_s, &m.ffn_rstd, &m.ffn_s})
    *p = m.alloc<float>(S * n, "row scales");
  m.lnf = m.alloc<float>(n * size_t(C), "final norm output");
  m.lnf_rstd = m.alloc<float>(n, "row scales");
  m.losses_d = m.alloc<float>(n, "losses");
  m.acc = m.alloc<float>(n * size_t(C), "scratch");
  m.hact = m.alloc<float>(n * size_t(F), "scratch");
  if (options.keep_logits)
    m.logits_all = m.alloc<float>(n * size_t(V), "logits");
  else
    m.logits_chunk = m.alloc<float>(size_t(m.chunk * V), "logits chunk");
  TL_CUDA_CHECK(cudaStreamSynchronize(m.stream));
}

DeviceModel::~DeviceModel() = default;

const BitNetConfig& DeviceModel::config() const {
  return impl_->cfg;
}
size_t DeviceModel::num_params() const {
  return impl_->P;
}
float* DeviceModel::params_device() {
  impl_->codes_valid = false;  // the caller may write the weights
  return impl_->params;
}
float* DeviceModel::grads_device() {
  return impl_->grads;
}
void* DeviceModel::stream() const {
  return impl_->stream;
}
double DeviceModel::loss() const {
  return impl_->loss;
}
int64_t DeviceModel::num_targets() const {
  return impl_->count;
}

size_t DeviceModel::memory_bytes() const {
  return impl_->allocated + impl_->gemm->workspace_bytes();
}

void DeviceModel::Impl::ensure_backward_buffers() {
  if (have_bwd) return;
  const size_t n = size_t(maxN);
  dres = alloc<float>(n * size_t(C), "backward scratch");
  dx = alloc<float>(n * size_t(std::max({C, Q, F})), "backward scratch");
  datt = alloc<float>(n * size_t(Q), "backward scratch");
  dqkv = alloc<float>(n * size_t(W), "backward scratch");
  Dbuf = alloc<float>(n * size_t(NH), "backward scratch");
  const size_t wmax = n * size_t(std::max({W, 2 * F, C}));
  dyb = alloc<bf16>(wmax, "backward scratch");
  dys = alloc<bf16>(wmax, "backward scratch");
  dlogits = logits_all ? alloc<float>(size_t(chunk * V), "logit gradients") : logits_chunk;
  dw_partial = alloc<double>(size_t(k::kDweightChunks) * size_t(std::max({C, Q, F})), "backward scratch");
  have_bwd = true;
}

void DeviceModel::Impl::compute_weight_stats() {
  if (opt.constant_weights && codes_valid) return;
  const int nlin = int(L * 7);
  if (mode == WeightQuant::Absmean || mode == WeightQuant::RptFixed)
    k::weight_stats_partial(psum, pcnt, params, lin_desc, nlin, stat_blocks,
                            mode == WeightQuant::RptFixed ? fixed : nullptr, stream);
  k::weight_stats_finalize(alpha, eff, psum, pcnt, lin_desc, nlin, mode, fixed, stream);
}

void DeviceModel::Impl::quantize_layer(int64_t l) {
  if (opt.constant_weights && codes_valid) return;
  const int64_t numel[7] = {Q * C, KV * C, KV * C, C * Q, F * C, F * C, C * F};
  bf16* codes = codes_of(l);
  for (int w = 0; w < 7; ++w)
    k::weight_codes(codes + code_off[w], params + lay[size_t(l)].lin[w], numel[w],
                    mode == WeightQuant::Off ? nullptr : alpha + l * 7 + w, stream);
}

namespace {
constexpr size_t kAttentionScratchCap = size_t(768) << 20;  // bytes
}

void DeviceModel::Impl::attention_fwd(float* out, float* lse_out, const float* qkv_in) {
  const size_t per = k::attention_gemm_bytes_per_sequence(T, NH, NKV, hd);
  if (!attn_scratch && per <= kAttentionScratchCap) {
    attn_scratch_bytes = std::min(kAttentionScratchCap, per * size_t(std::max<int64_t>(1, maxN / T)));
    attn_scratch = alloc<float>(attn_scratch_bytes / sizeof(float), "attention scratch");
  }
  if (!k::attention_forward_gemm(*gemm, attn_scratch, attn_scratch ? attn_scratch_bytes : 0, out, lse_out,
                                 qkv_in, B, T, NH, NKV, hd, stream))
    k::attention_forward(out, lse_out, qkv_in, B, T, NH, NKV, hd, stream);
}

void DeviceModel::Impl::attention_bwd(float* dqkv_out, const float* dout, const float* out,
                                      const float* qkv_in, const float* lse_in) {
  if (!k::attention_backward_gemm(*gemm, attn_scratch, attn_scratch ? attn_scratch_bytes : 0, dqkv_out, Dbuf,
                                  dout, out, qkv_in, lse_in, B, T, NH, NKV, hd, stream))
    k::attention_backward(dqkv_out, Dbuf, dout, out, qkv_in, lse_in, B, T, NH, NKV, hd, stream);
}

void DeviceModel::Impl::layer_forward(int64_t l, bool write_next) {
  const LayerOff& lo = lay[size_t(l)];
  const size_t s = sl(l), n = size_t(N);
  const float* x = residual + size_t(l) * n * size_t(C);
  float* midp = mid + s * n * size_t(C);
  float* qkvp = qkv + s * n * size_t(W);
  float* attp = att + s * n * size_t(Q);
  float* gup = gu + s * n * size_t(2 * F);
  bf16* ln1p = ln1 + s * n * size_t(C);
  bf16* attsubp = attsub + s * n * size_t(Q);
  bf16* ln2p = ln2 + s * n * size_t(C);
  bf16* ffnp = ffn + s * n * size_t(F);
  const float* e = eff + l * 7;
  quantize_layer(l);
  TL_PROF(stream, "fwd weight codes");
  bf16* codes = codes_of(l);

  // Attention block.
  k::residual_norm_quant(nullptr, x, nullptr, nullptr, nullptr, params + lo.norm_in, N, C, eps, ln1p,
                         ln1_rstd + s * n, ln1_s + s * n, aq, stream);
  TL_PROF(stream, "fwd norm+actquant");
  gemm_bf16(false, true, N, W, C, 1.f, ln1p, C, codes + code_off[kQ], C, 0.f, qkvp, W);
  TL_PROF(stream, "fwd gemm qkv");
  k::qkv_post(qkvp, N, T, NH, NKV, hd, e + kQ, ln1_s + s * n, rope_cos, rope_sin, stream);
  TL_PROF(stream, "fwd qkv scale+rope");
  attention_fwd(attp, lse + s * n * size_t(NH), qkvp);
  TL_PROF(stream, "fwd attention");
  k::residual_norm_quant(nullptr, attp, nullptr, nullptr, nullptr, params + lo.norm_attn_sub, N, Q, eps,
                         attsubp, attsub_rstd + s * n, attsub_s + s * n, aq, stream);
  TL_PROF(stream, "fwd norm+actquant");
  gemm_bf16(false, true, N, C, Q, 1.f, attsubp, Q, codes + code_off[kO], Q, 0.f, acc, C);
  TL_PROF(stream, "fwd gemm o");
  // mid = x + o_proj output, then post_attention_layernorm (+ ActQuant) of it.
  k::residual_norm_quant(midp, x, acc, e + kO, attsub_s + s * n, params + lo.norm_post, N, C, eps, ln2p,
                         ln2_rstd + s * n, ln2_s + s * n, aq, stream);
  TL_PROF(stream, "fwd norm+actquant");

  // MLP block.
  gemm_bf16(false, true, N, 2 * F, C, 1.f, ln2p, C, codes + code_off[kGate], C, 0.f, gup, 2 * F);
  TL_PROF(stream, "fwd gemm gate|up");
  k::gated_norm_quant(gup, hact, e + kGate, ln2_s + s * n, N, F, relu2, params + lo.norm_ffn_sub, eps, ffnp,
                      ffn_rstd + s * n, ffn_s + s * n, aq, stream);
  TL_PROF(stream, "fwd relu2+norm+actquant");
  gemm_bf16(false, true, N, C, F, 1.f, ffnp, F, codes + code_off[kDown], F, 0.f, acc, C);
  TL_PROF(stream, "fwd gemm down");
  if (write_next)
    k::residual_add_scaled(residual + size_t(l + 1) * n * size_t(C), midp, acc, e + kDown, ffn_s + s * n, N,
                           C, stream);
  TL_PROF(stream, "fwd residual add");
}

void DeviceModel::Impl::head_pass(bool want_loss, bool want_grad) {
  const float dloss = count > 0 ? float(1.0 / double(count)) : 0.f;
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t rows = std::min(chunk, N - r0);
    float* lg = logits_all ? logits_all + size_t(r0) * size_t(V) : logits_chunk;
    const float* x = lnf + size_t(r0) * size_t(C);
    const float* head = params + off_head;
    if (!(logits_all && logits_valid))
      gemm->matmul(false, true, rows, V, C, 1.f, x, C, head, C, 0.f, lg, V, OutType::F32, InType::TF32);
    TL_PROF(stream, "head gemm logits (tf32)");
    if (want_loss || want_grad)
      k::crossentropy(want_loss ? losses_d + r0 : nullptr, want_grad ? dlogits : nullptr, lg, targets_d + r0,
                      rows, V, dloss, stream);
    TL_PROF(stream, "head cross-entropy");
    if (want_grad) {
      // d lnf rows (into dx) = dlogits . head;  d head += dlogits^T . lnf rows.
      gemm->matmul(false, false, rows, C, V, 1.f, dlogits, V, head, C, 0.f, dx + size_t(r0) * size_t(C), C,
                   OutType::F32, InType::TF32);
      TL_PROF(stream, "head gemm dx (tf32)");
      gemm->matmul(true, false, V, C, rows, 1.f, dlogits, V, x, C, 1.f, grads + off_head, C, OutType::F32,
                   InType::TF32);
      TL_PROF(stream, "head gemm dW (tf32)");
    }
  }
  if (logits_all) logits_valid = true;
}

void DeviceModel::Impl::layer_backward(int64_t l) {
  const LayerOff& lo = lay[size_t(l)];
  const size_t s = sl(l), n = size_t(N);
  const float* x = residual + size_t(l) * n * size_t(C);
  const float* midp = mid + s * n * size_t(C);
  const float* qkvp = qkv + s * n * size_t(W);
  const float* attp = att + s * n * size_t(Q);
  const float* gup = gu + s * n * size_t(2 * F);
  const bf16* ln1p = ln1 + s * n * size_t(C);
  const bf16* attsubp = attsub + s * n * size_t(Q);
  const bf16* ln2p = ln2 + s * n * size_t(C);
  const bf16* ffnp = ffn + s * n * size_t(F);
  const float* e = eff + l * 7;
  if (slots == 1 && opt.recompute)
    layer_forward(l, false);  // the saved activations of layer l, from residual[l]
  else if (!keep_codes)
    quantize_layer(l);
  TL_PROF(stream, "bwd weight codes (or recompute)");
  bf16* codes = codes_of(l);

  // down_proj: dres = d residual[l+1] = d(down output).
  k::dy_convert(dyb, dys, dres, N, C, C, C, e + kDown, ffn_s + s * n, stream);
  TL_PROF(stream, "bwd dy convert");
  gemm_bf16(false, false, N, F, C, 1.f, dyb, C, codes + code_off[kDown], F, 0.f, dx, F);
  TL_PROF(stream, "bwd gemm dx down");
  gemm_bf16(true, false, C, F, N, 1.f, dys, C, ffnp, F, 1.f, grads + lo.lin[kDown], F);
  TL_PROF(stream, "bwd gemm dW down");
  // ffn_sub_norm and the gated activation, to d gate|up as GEMM operands.
  k::gated_rmsnorm_dweight(grads + lo.norm_ffn_sub, dw_partial, dx, gup, ffn_rstd + s * n, N, F, relu2,
                           stream);
  TL_PROF(stream, "bwd norm dweight");
  k::gated_norm_backward(dyb, dys, dx, gup, params + lo.norm_ffn_sub, ffn_rstd + s * n, e + kGate,
                         ln2_s + s * n, N, F, relu2, stream);
  TL_PROF(stream, "bwd relu2+norm");
  gemm_bf16(false, false, N, C, 2 * F, 1.f, dyb, 2 * F, codes + code_off[kGate], C, 0.f, dx, C);
  TL_PROF(stream, "bwd gemm dx gate|up");
  if (gu_contig) {
    gemm_bf16(true, false, 2 * F, C, N, 1.f, dys, 2 * F, ln2p, C, 1.f, grads + lo.lin[kGate], C);
  } else {
    gemm_bf16(true, false, F, C, N, 1.f, dys, 2 * F, ln2p, C, 1.f, grads + lo.lin[kGate], C);
    gemm_bf16(true, false, F, C, N, 1.f, dys + F, 2 * F, ln2p, C, 1.f, grads + lo.lin[kUp], C);
  }
  TL_PROF(stream, "bwd gemm dW gate|up");
  // post_attention_layernorm: dres += its input gradient, so dres = d mid.
  k::rmsnorm_dweight(grads + lo.norm_post, dw_partial, dx, midp, ln2_rstd + s * n, N, C, stream);
  TL_PROF(stream, "bwd norm dweight");
  k::rmsnorm_backward(dres, true, dx, midp, params + lo.norm_post, ln2_rstd + s * n, N, C, stream);
  TL_PROF(stream, "bwd norm");

  // o_proj: d(o output) = d mid.
  k::dy_convert(dyb, dys, dres, N, C, C, C, e + kO, attsub_s + s * n, stream);
  TL_PROF(stream, "bwd dy convert");
  gemm_bf16(false, false, N, Q, C, 1.f, dyb, C, codes + code_off[kO], Q, 0.f, dx, Q);
  TL_PROF(stream, "bwd gemm dx o");
  gemm_bf16(true, false, C, Q, N, 1.f, dys, C, attsubp, Q, 1.f, grads + lo.lin[kO], Q);
  TL_PROF(stream, "bwd gemm dW o");
  k::rmsnorm_dweight(grads + lo.norm_attn_sub, dw_partial, dx, attp, attsub_rstd + s * n, N, Q, stream);
  TL_PROF(stream, "bwd norm dweight");
  k::rmsnorm_backward(datt, false, dx, attp, params + lo.norm_attn_sub, attsub_rstd + s * n, N, Q, stream);
  TL_PROF(stream, "bwd norm");
  // Attention, RoPE, then q|k|v projections.
  attention_bwd(dqkv, datt, attp, qkvp, lse + s * n * size_t(NH));
  TL_PROF(stream, "bwd attention");
  k::rope_backward(dqkv, N, T, NH, NKV, hd, rope_cos, rope_sin, stream);
  TL_PROF(stream, "bwd rope");
  k::dy_convert(dyb, dys, dqkv, N, W, Q, Q + KV, e + kQ, ln1_s + s * n, stream);
  TL_PROF(stream, "bwd dy convert");
  gemm_bf16(false, false, N, C, W, 1.f, dyb, W, codes + code_off[kQ], C, 0.f, dx, C);
  TL_PROF(stream, "bwd gemm dx qkv");
  if (qkv_contig) {
    gemm_bf16(true, false, W, C, N, 1.f, dys, W, ln1p, C, 1.f, grads + lo.lin[kQ], C);
  } else {
    gemm_bf16(true, false, Q, C, N, 1.f, dys, W, ln1p, C, 1.f, grads + lo.lin[kQ], C);
    gemm_bf16(true, false, KV, C, N, 1.f, dys + Q, W, ln1p, C, 1.f, grads + lo.lin[kK], C);
    gemm_bf16(true, false, KV, C, N, 1.f, dys + Q + KV, W, ln1p, C, 1.f, grads + lo.lin[kV], C);
  }
  TL_PROF(stream, "bwd gemm dW qkv");
  // input_layernorm: dres = d residual[l].
  k::rmsnorm_dweight(grads + lo.norm_in, dw_partial, dx, x, ln1_rstd + s * n, N, C, stream);
  TL_PROF(stream, "bwd norm dweight");
  k::rmsnorm_backward(dres, true, dx, x, params + lo.norm_in, ln1_rstd + s * n, N, C, stream);
  TL_PROF(stream, "bwd norm");
}

// ---------------------------------------------------------------------------------------------------------

double DeviceModel::forward(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t B,
                            int64_t T) {
  return impl_->forward_impl(tokens, targets, B, T, false);
}

double DeviceModel::forward_backward(std::span<const int32_t> tokens, std::span<const int32_t> targets,
                                     int64_t B, int64_t T) {
  TL_CHECK(!targets.empty(), "cuda forward_backward: needs targets");
  return impl_->forward_impl(tokens, targets, B, T, true);
}

double DeviceModel::Impl::forward_impl(std::span<const int32_t> tokens, std::span<const int32_t> targets,
                                       int64_t B, int64_t T, bool fused_backward) {
  Impl& m = *this;
  TL_CHECK(B > 0 && T > 0, "cuda forward: B and T must be positive, found B={} T={}", B, T);
  TL_CHECK(T <= m.cfg.max_position_embeddings, "cuda forward: T = {} exceeds max_position_embeddings = {}", T,
           m.cfg.max_position_embeddings);
  TL_CHECK(B * T <= m.maxN, "cuda forward: B*T = {}*{} = {} exceeds max_tokens = {}", B, T, B * T, m.maxN);
  TL_CHECK(int64_t(tokens.size()) == B * T, "cuda forward: expected B*T = {}*{} = {} tokens, found {}", B, T,
           B * T, tokens.size());
  TL_CHECK(targets.empty() || int64_t(targets.size()) == B * T,
           "cuda forward: expected B*T = {} targets (or none), found {}", B * T, targets.size());
  const int64_t N = B * T, V = m.V;
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) {
    TL_CHECK(tokens[i] >= 0 && tokens[i] < V, "cuda forward: token {} at index {} is outside [0, {})",
             tokens[i], i, V);
    if (!targets.empty()) {
      TL_CHECK(targets[i] == kIgnoreTarget || (targets[i] >= 0 && targets[i] < V),
               "cuda forward: target {} at index {} is outside [0, {}) and not {} (ignore)", targets[i], i, V,
               kIgnoreTarget);
      count += targets[i] != kIgnoreTarget;
    }
  }
  TL_CHECK(targets.empty() || count > 0,
           "cuda forward: every one of the {} targets is {} (ignored); the mean loss is undefined", N,
           kIgnoreTarget);
  TL_CUDA_CHECK(cudaSetDevice(m.opt.device));
  TL_PROF(m.stream, "idle: host between forwards");
  m.has_targets = false;
  m.logits_valid = false;
  m.B = B;
  m.T = T;
  m.N = N;
  m.count = count;
  m.loss = std::numeric_limits<double>::quiet_NaN();
  m.losses_h.assign(size_t(N), 0.f);
  TL_CUDA_CHECK(cudaMemcpyAsync(m.tokens_d, tokens.data(), size_t(N) * sizeof(int32_t),
                                cudaMemcpyHostToDevice, m.stream));
  if (!targets.empty())
    TL_CUDA_CHECK(cudaMemcpyAsync(m.targets_d, targets.data(), size_t(N) * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, m.stream));

  {  // group positions by token for the embedding gradient (ascending positions within each token)
    std::vector<int32_t> order(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) order[size_t(n)] = int32_t(n);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return tokens[size_t(a)] < tokens[size_t(b)]; });
    std::vector<int32_t> seg, tok;
    for (int64_t r = 0; r < N; ++r)
      if (r == 0 || tokens[size_t(order[size_t(r)])] != tokens[size_t(order[size_t(r - 1)])]) {
        seg.push_back(int32_t(r));
        tok.push_back(tokens[size_t(order[size_t(r)])]);
      }
    seg.push_back(int32_t(N));
    m.emb_unique = int64_t(tok.size());
    m.emb_host = order;
    m.emb_host.insert(m.emb_host.end(), seg.begin(), seg.end());
    m.emb_host.insert(m.emb_host.end(), tok.begin(), tok.end());
    m.emb_seg = m.emb_order + N;
    m.emb_tok = m.emb_seg + m.emb_unique + 1;
    TL_CUDA_CHECK(cudaMemcpyAsync(m.emb_order, m.emb_host.data(), m.emb_host.size() * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, m.stream));
  }
  TL_PROF(m.stream, "inputs upload");
  m.compute_weight_stats();
  TL_PROF(m.stream, "weight stats");
  k::embedding_forward(m.residual, m.tokens_d, m.params + m.off_embed, N, m.C, m.stream);
  TL_PROF(m.stream, "embedding fwd");
  for (int64_t l = 0; l < m.L; ++l) m.layer_forward(l, true);
  if (m.opt.constant_weights) m.codes_valid = true;
  k::rmsnorm_forward(m.lnf, m.lnf_rstd, m.residual + size_t(m.L) * size_t(N) * size_t(m.C),
                     m.params + m.off_normf, N, m.C, m.eps, m.stream);
  TL_PROF(m.stream, "final norm");
  const bool want_loss = !targets.empty();
  if (fused_backward) {  // loss and logit gradients from the same logits: no recomputation
    m.ensure_backward_buffers();
    m.head_pass(true, true);
    m.body_backward();
  } else if (want_loss || m.opt.keep_logits) {
    m.head_pass(want_loss, false);
  }
  if (!want_loss) {
    TL_CUDA_CHECK(cudaStreamSynchronize(m.stream));  // surface asynchronous errors here
    return m.loss;
  }
  TL_CUDA_CHECK(cudaMemcpyAsync(m.losses_h.data(), m.losses_d, size_t(N) * sizeof(float),
                                cudaMemcpyDeviceToHost, m.stream));
  TL_PROF(m.stream, "losses download");
  TL_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  if (prof::enabled()) prof::flush();
  double sum = 0;
  for (float v : m.losses_h) sum += double(v);
  m.loss = sum / double(count);
  m.has_targets = true;
  return m.loss;
}

void DeviceModel::backward() {
  Impl& m = *impl_;
  TL_CHECK(m.has_targets, "cuda backward: needs a completed forward() with targets first");
  TL_CUDA_CHECK(cudaSetDevice(m.opt.device));
  m.ensure_backward_buffers();
  m.head_pass(false, true);  // logits recomputed a chunk at a time unless kept
  m.body_backward();
  TL_CUDA_CHECK(cudaStreamSynchronize(m.stream));  // surface asynchronous errors here
}

void DeviceModel::Impl::body_backward() {
  const float* xL = residual + size_t(L) * size_t(N) * size_t(C);
  k::rmsnorm_dweight(grads + off_normf, dw_partial, dx, xL, lnf_rstd, N, C, stream);
  k::rmsnorm_backward(dres, false, dx, xL, params + off_normf, lnf_rstd, N, C, stream);
  TL_PROF(stream, "bwd final norm");
  const bool ranges = grads_ready && !layer_begin.empty();
  for (int64_t l = L - 1; l >= 0; --l) {
    layer_backward(l);
    // the head, the final norm and layers >= l are final (the embedding may still get the tied head's share)
    if (ranges) grads_ready(layer_begin[size_t(l)], l == L - 1 ? P : layer_begin[size_t(l + 1)]);
  }
  k::embedding_backward(grads + off_embed, dres, emb_order, emb_seg, emb_tok, emb_unique, C, stream);
  TL_PROF(stream, "bwd embedding scatter");
  if (ranges)
    grads_ready(0, layer_begin[0]);
  else if (grads_ready)
    grads_ready(0, P);
}

void DeviceModel::set_grads_ready_hook(GradsReadyHook hook) {
  impl_->grads_ready = std::move(hook);
}

std::vector<float> DeviceModel::losses() const {
  return impl_->losses_h;
}

std::vector<float> DeviceModel::logits() const {
  const Impl& m = *impl_;
  TL_CHECK(m.opt.keep_logits, "cuda model: logits() needs DeviceModelOptions::keep_logits");
  TL_CHECK(m.logits_valid, "cuda model: no logits (no forward yet)");
  std::vector<float> out(size_t(m.N) * size_t(m.V));
  TL_CUDA_CHECK(cudaMemcpyAsync(out.data(), m.logits_all, out.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                m.stream));
  TL_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  return out;
}

std::vector<float> DeviceModel::weight_scales() const {
  const Impl& m = *impl_;
  std::vector<float> out(size_t(m.L * 7));
  TL_CUDA_CHECK(
      cudaMemcpyAsync(out.data(), m.alpha, out.size() * sizeof(float), cudaMemcpyDeviceToHost, m.stream));
  TL_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  return out;
}

void DeviceModel::zero_grad() {
  TL_CUDA_CHECK(cudaMemsetAsync(impl_->grads, 0, impl_->P * sizeof(float), impl_->stream));
  TL_PROF(impl_->stream, "zero grads");
}

void DeviceModel::upload_params(std::span<const float> host) {
  const Impl& m = *impl_;
  TL_CHECK(host.size() == m.P, "cuda model: upload_params expects {} floats, found {}", m.P, host.size());
  TL_CUDA_CHECK(
      cudaMemcpyAsync(m.params, host.data(), m.P * sizeof(float), cudaMemcpyHostToDevice, m.stream));
  TL_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  impl_->has_targets = false;  // the saved activations are of other parameters
  impl_->logits_valid = false;
  impl_->codes_valid = false;
}

void DeviceModel::download_params(std::span<float> host) const {
  const Impl& m = *impl_;
  TL_CHECK(host.size() == m.P, "cuda model: download_params expects {} floats, found {}", m.P, host.size());
  TL_CUDA_CHECK(
      cudaMemcpyAsync(host.data(), m.params, m.P * sizeof(float), cudaMemcpyDeviceToHost, m.stream));
  TL_CUDA_CHECK(cudaStreamSynchronize(m.stream));
}

void DeviceModel::download_grads(std::span<float> host) const {
  const Impl& m = *impl_;
  TL_CHECK(host.size() == m.P, "cuda model: download_grads expects {} floats, found {}", m.P, host.size());
  TL_CUDA_CHECK(cudaMemcpyAsync(host.data(), m.grads, m.P * sizeof(float), cudaMemcpyDeviceToHost, m.stream));
  TL_CUDA_CHECK(cudaStreamSynchronize(m.stream));
}

void DeviceModel::block_forward(int64_t l, const float* x_in, int64_t T, float* x_out) {
  Impl& m = *impl_;
  TL_CHECK(l >= 0 && l < m.L, "cuda block_forward: layer {} is outside [0, {})", l, m.L);
  TL_CHECK(T >= 1 && T <= m.cfg.max_position_embeddings,
           "cuda block_forward: T = {} is outside [1, max_position_embeddings = {}]", T,
           m.cfg.max_position_embeddings);
  TL_CHECK(T <= m.maxN, "cuda block_forward: T = {} exceeds max_tokens = {}", T, m.maxN);
  TL_CHECK(x_in != nullptr && x_out != nullptr, "cuda block_forward: no input or output array");
  TL_CUDA_CHECK(cudaSetDevice(m.opt.device));
  // The last forward's state is gone: its saved activations are overwritten below.
  m.has_targets = false;
  m.logits_valid = false;
  m.loss = std::numeric_limits<double>::quiet_NaN();
  m.count = 0;
  m.losses_h.clear();
  m.B = 1;
  m.T = T;
  m.N = T;
  if (!(m.opt.constant_weights && m.codes_valid)) {
    m.compute_weight_stats();
    if (m.opt.constant_weights) {  // every layer's codes now, so later blocks reuse them
      for (int64_t j = 0; j < m.L; ++j) m.quantize_layer(j);
      m.codes_valid = true;
    }  // otherwise layer_forward quantizes layer l
  }
  // layer_forward reads residual[l] (T,C) and writes residual[l+1] (T,C), rows laid out for N = T.
  const size_t n = size_t(T) * size_t(m.C);
  float* in_d = m.residual + size_t(l) * n;
  const float* out_d = m.residual + size_t(l + 1) * n;
  TL_CUDA_CHECK(cudaMemcpyAsync(in_d, x_in, n * sizeof(float), cudaMemcpyHostToDevice, m.stream));
  m.layer_forward(l, true);
  TL_CUDA_CHECK(cudaMemcpyAsync(x_out, out_d, n * sizeof(float), cudaMemcpyDeviceToHost, m.stream));
  TL_CUDA_CHECK(cudaStreamSynchronize(m.stream));  // x_out is ready; asynchronous errors surface here
}

}  // namespace tl::cuda
