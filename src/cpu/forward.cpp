#include "cpu/forward.hpp"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.hpp"
#include "model/quant.hpp"

namespace tl {

namespace {

// Dot product with 16 independent partial sums: vectorizable without -ffast-math, and a fixed summation
// order, so a (query, key) pair gives the same score whichever path (full forward or cache) computes it.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  for (int j = 0; j < 8; ++j) acc[j] += acc[j + 8];
  for (int j = 0; j < 4; ++j) acc[j] += acc[j + 4];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + tail;
}

// Largest exact K: every partial sum of q*T is an integer of magnitude <= 128*K, exact in fp32 up to 2^24.
constexpr int64_t kMaxExactK = (int64_t(1) << 24) / 128;

// Below this many elements (or multiply-adds) a loop runs on one thread: a parallel region costs a few
// microseconds, and far more on a loaded machine, where every barrier waits for a descheduled thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

template <class T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// One query head: oh (hd) = softmax(qh . k_j^T * scale) . v_j over keys j = 0..n_keys-1, rows kstride apart.
// att is (n_keys) scratch. Cloned for AVX-512 and AVX2; this file is compiled without FMA contraction
// (CMakeLists.txt), which GCC and LLVM would apply in the avx512f clone, so every clone rounds alike. The
// caller's OpenMP loop stays in plain code.
__attribute__((target_clones("avx512f", "avx2", "default"))) void attend_one(float* oh, const float* qh,
                                                                             const float* k, const float* v,
                                                                             int64_t n_keys, int64_t kstride,
                                                                             int64_t hd, float scale,
                                                                             float* att) {
  float maxv = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n_keys; ++j) {
    const float s = dot(qh, k + j * kstride, hd) * scale;
    att[j] = s;
    maxv = std::max(maxv, s);
  }
  float sum = 0;
  for (int64_t j = 0; j < n_keys; ++j) {
    att[j] = std::exp(att[j] - maxv);
    sum += att[j];
  }
  for (int64_t j = 0; j < n_keys; ++j) att[j] = att[j] / sum;  // softmax probabilities, fp32
  // oh = sum_j att[j] v_j, 32 outputs at a time kept in registers across the keys (same order of sums)
  int64_t d0 = 0;
  for (; d0 + 32 <= hd; d0 += 32) {
    float acc[32] = {};
    for (int64_t j = 0; j < n_keys; ++j) {
      const float w = att[j];
      const float* vj = v + j * kstride + d0;
      for (int d = 0; d < 32; ++d) acc[d] += w * vj[d];
    }
    for (int d = 0; d < 32; ++d) oh[d0 + d] = acc[d];
  }
  for (; d0 < hd; ++d0) {
    float acc = 0;
    for (int64_t j = 0; j < n_keys; ++j) acc += att[j] * v[j * kstride + d0];
    oh[d0] = acc;
  }
}

// Rows up to which ternary_matmul_forward uses the int8 dot products instead of expanding the weights for
// sgemm (measured crossover on AVX2/AVX-512: ~8-16 rows).
constexpr int64_t kSmallN = 8;

// Exact int8 dot products (int32 sums; |sum| <= 128 K < 2^31).
inline int32_t dot_i8(const int8_t* x, const int8_t* w, int64_t K) {
  int32_t acc = 0;
  for (int64_t k = 0; k < K; ++k) acc += int32_t(x[k]) * int32_t(w[k]);
  return acc;
}

__attribute__((target("avx2"))) int32_t dot_i8_avx2(const int8_t* x, const int8_t* w, int64_t K) {
  __m256i acc = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {  // sign-extend to int16, multiply and add pairs into int32 lanes
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k));
    const __m256i lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(xv)),
                                         _mm256_cvtepi8_epi16(_mm256_castsi256_si128(wv)));
    const __m256i hi = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(xv, 1)),
                                         _mm256_cvtepi8_epi16(_mm256_extracti128_si256(wv, 1)));
    acc = _mm256_add_epi32(acc, _mm256_add_epi32(lo, hi));
  }
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s) + dot_i8(x + k, w + k, K - k);
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------

void rmsnorm_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, float eps) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;  // x is (C)
    float* o = out + n * C;
    const double ss = sum_of_squares(x, C);  // mean(x^2) in double: close to torch's cascaded fp32 sum
    const float var = float(ss / double(C));
    const float r = 1.0f / std::sqrt(var + eps);
    for (int64_t i = 0; i < C; ++i) o[i] = weight[i] * (x[i] * r);  // transformers: weight * (x * rsqrt)
  }
}

void rope_forward(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* xh = x + h * head_dim;  // xh is (head_dim): [x1 (half), x2 (half)]
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = xh[i], x2 = xh[i + half];
      xh[i] = x1 * cos[i] - x2 * sin[i];
      xh[i + half] = x2 * cos[i] + x1 * sin[i];
    }
  }
}

namespace {
// relu(g)^2 * up over [0, n). GCC keeps `g > 0 ? g : 0` as a branch (no vectorization), and random signs
// mispredict every other value: 60 us per 6912-wide row. The SSE2 select (g > 0) & g gives the same values,
// NaN and -0 included (both become +0, as in the scalar tail).
void relu2_gate(float* __restrict gate, const float* __restrict up, int64_t n) {
  const __m128 zero = _mm_setzero_ps();
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128 g = _mm_loadu_ps(gate + i);
    const __m128 r = _mm_and_ps(_mm_cmpgt_ps(g, zero), g);
    _mm_storeu_ps(gate + i, _mm_mul_ps(_mm_mul_ps(r, r), _mm_loadu_ps(up + i)));
  }
  for (; i < n; ++i) {
    const float r = gate[i] > 0.0f ? gate[i] : 0.0f;
    gate[i] = (r * r) * up[i];
  }
}
void silu_gate(float* __restrict gate, const float* __restrict up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = (gate[i] / (1.0f + std::exp(-gate[i]))) * up[i];
}
}  // namespace

void gated_activation_forward(float* gate, const float* up, int64_t n, Activation act) {
  auto run = act == Activation::Relu2 ? relu2_gate : silu_gate;
  if (n < kParallelMin) {
    run(gate, up, n);
    return;
  }
  const int64_t chunks = 4 * int64_t(omp_get_max_threads());
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t a = n * c / chunks, b = n * (c + 1) / chunks;
    run(gate + a, up + a, b - a);
  }
}

void attention_forward(float* out, const float* q, const float* k, const float* v, int64_t B, int64_t T,
                       int64_t S, int64_t pos0, int64_t NH, int64_t NKV, int64_t hd) {
#pragma omp parallel if (B * T * NH * (pos0 + T) * hd >= kParallelMin)
  {
    std::vector<float> att(size_t(pos0 + T));  // scores of one query over its keys
    // dynamic: causal rows grow with t, so equal static shares would be unequal work; one (t, h) at a time,
    // as a decoded token has only NH of them (chunks of 4 split 20 heads 12 / 8 over two threads)
#pragma omp for collapse(3) schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < NH; ++h)  // query t sits at position pos0 + t and sees keys 0..pos0 + t
          attention_heads_forward(out + (b * T + t) * NH * hd, q + (b * T + t) * NH * hd,
                                  k + b * S * NKV * hd, v + b * S * NKV * hd, pos0 + t, NH, NKV, hd, h, h + 1,
                                  att.data());
  }
}

void attention_heads_forward(float* out, const float* q, const float* k, const float* v, int64_t pos,
                             int64_t NH, int64_t NKV, int64_t hd, int64_t h0, int64_t h1, float* att) {
  const int64_t group = NH / NKV;                          // GQA: query head h reads kv head h / group
  const float scale = float(1.0 / std::sqrt(double(hd)));  // head_dim ** -0.5 (python float -> fp32)
  for (int64_t h = h0; h < h1; ++h)
    attend_one(out + h * hd, q + h * hd, k + (h / group) * hd, v + (h / group) * hd, pos + 1, NKV * hd, hd,
               scale, att);
}

void ternary_matmul_forward(float* out, int64_t ldo, const int8_t* xa, const float* row_scale,
                            const int8_t* codes, int64_t N, int64_t M, int64_t K,
                            std::vector<float>& scratch) {
  TL_CHECK(K <= kMaxExactK,
           "ternary matmul: in_features {} exceeds {} (integer sums would not be exact in fp32)", K,
           kMaxExactK);
  if (N <= 0 || M <= 0) return;
  if (N <= kSmallN) {  // decoding: read each weight byte once, no fp32 expansion
    const bool avx2 = has_avx2();
#pragma omp parallel for schedule(static) if (N * M * K >= 16 * kParallelMin)
    for (int64_t o = 0; o < M; ++o) {
      const int8_t* w = codes + o * K;
      for (int64_t n = 0; n < N; ++n) {
        const int32_t acc = avx2 ? dot_i8_avx2(xa + n * K, w, K) : dot_i8(xa + n * K, w, K);
        out[n * ldo + o] = float(acc) * row_scale[n];
      }
    }
    return;
  }
  const int nthreads = omp_get_max_threads();
  // Rows of the weight expanded per block: 128 (sgemm is efficient from there on), fewer when that is needed
  // to give every thread a few blocks.
  int64_t nb = std::min<int64_t>(128, std::max<int64_t>(16, (M + 4 * nthreads - 1) / (4 * nthreads)));
  nb = std::min(nb, M);
  const int64_t nblocks = (M + nb - 1) / nb;
  grow(scratch, size_t(N * K) + size_t(nthreads) * size_t(nb * K));
  float* const xq = scratch.data();  // xq is (N,K): the activation codes as fp32
  float* const scr = xq + N * K;     // per thread (nb,K)
#pragma omp parallel for schedule(static) if (N * K >= kParallelMin)
  for (int64_t i = 0; i < N * K; ++i) xq[i] = float(xa[i]);
    // Inside an active parallel region OpenBLAS (openmp build) runs each sgemm on the calling thread.
#pragma omp parallel for schedule(dynamic, 1) if (nblocks > 1 && N * M * K >= 16 * kParallelMin)
  for (int64_t ib = 0; ib < nblocks; ++ib) {
    float* wb = scr + size_t(omp_get_thread_num()) * size_t(nb * K);  // wb is (m,K)
    const int64_t o0 = ib * nb, m = std::min(nb, M - o0);
    const int8_t* c = codes + o0 * K;
    for (int64_t i = 0; i < m * K; ++i) wb[i] = float(c[i]);
    // out[:, o0:o0+m] = xq (N,K) . wb^T (K,m): exact integers
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(m), int(K), 1.0f, xq, int(K), wb, int(K),
                0.0f, out + o0, int(ldo));
    for (int64_t n = 0; n < N; ++n) {
      float* o = out + n * ldo + o0;
      const float rs = row_scale[n];
      for (int64_t i = 0; i < m; ++i) o[i] *= rs;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------

bool ForwardTaps::wants(int64_t layer) const {
  return std::find(layers.begin(), layers.end(), int(layer)) != layers.end();
}

KVCache::KVCache(const BitNetConfig& cfg, int64_t cap) {
  TL_CHECK(cap > 0 && cap <= cfg.max_position_embeddings,
           "KV cache: capacity must be in [1, max_position_embeddings = {}], found {}",
           cfg.max_position_embeddings, cap);
  n_layers = cfg.num_hidden_layers;
  capacity = cap;
  kv_dim = cfg.kv_dim();
  k.assign(size_t(n_layers) * size_t(capacity * kv_dim), 0.0f);
  v.assign(k.size(), 0.0f);
}

CpuModel::CpuModel(const Model& model) : model_(&model), cfg_(model.config) {
  cfg_.validate();
  const int64_t L = cfg_.num_hidden_layers, C = cfg_.hidden_size, F = cfg_.intermediate_size;
  const int64_t Q = cfg_.q_dim(), KV = cfg_.kv_dim();
  const int64_t want[7][2] = {{Q, C}, {KV, C}, {KV, C}, {C, Q}, {F, C}, {F, C}, {C, F}};  // [out, in]
  std::vector<const ParamView*> views(size_t(L * 7));
  for (int64_t l = 0; l < L; ++l)
    for (int w = 0; w < 7; ++w) {
      const ParamView& v = model.view(Model::linear_name(l, w));
      TL_CHECK(v.kind == ParamKind::Linear && v.shape.size() == 2 && v.shape[0] == want[w][0] &&
                   v.shape[1] == want[w][1],
               "model tensor '{}': expected a linear of shape [{}, {}]", v.name, want[w][0], want[w][1]);
      TL_CHECK(v.shape[1] <= kMaxExactK, "model tensor '{}': in_features {} exceeds {}", v.name, v.shape[1],
               kMaxExactK);
      views[size_t(l * 7 + w)] = &v;
    }
  // Quantize every linear once (the slow part at 2B-4T: 2.08e9 weights), one tensor per thread.
  lin_.resize(views.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < int64_t(views.size()); ++i) {
    TernaryWeight t = quantize_weight(model, *views[size_t(i)]);
    lin_[size_t(i)] = PreparedLinear{t.out, t.in, std::move(t.codes), t.scale};
  }
  rope_ = make_rope_table(cfg_.rope_theta, cfg_.head_dim, cfg_.max_position_embeddings);

  auto ptr = [&](const std::string& name, int64_t n) {
    const ParamView& v = model.view(name);
    TL_CHECK(v.numel == size_t(n), "model tensor '{}': expected {} elements, found {}", name, n, v.numel);
    return model.params.data() + v.offset;
  };
  embed_ = ptr("model.embed_tokens.weight", cfg_.vocab_size * C);
  head_ = cfg_.tie_word_embeddings ? embed_ : ptr("lm_head.weight", cfg_.vocab_size * C);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = Model::layer_prefix(l);
    norm_in_.push_back(ptr(p + "input_layernorm.weight", C));
    norm_attn_sub_.push_back(ptr(p + "self_attn.attn_sub_norm.weight", Q));
    norm_post_.push_back(ptr(p + "post_attention_layernorm.weight", C));
    norm_ffn_sub_.push_back(ptr(p + "mlp.ffn_sub_norm.weight", F));
  }
  norm_final_ = ptr("model.norm.weight", C);
}

void CpuModel::check_tokens(std::span<const int32_t> tokens) const {
  for (size_t i = 0; i < tokens.size(); ++i)
    TL_CHECK(tokens[i] >= 0 && tokens[i] < cfg_.vocab_size,
             "forward: token {} at index {} is outside [0, {})", tokens[i], i, cfg_.vocab_size);
}

void CpuModel::forward(std::span<const int32_t> tokens, int64_t B, int64_t T, std::vector<float>& hidden,
                       ForwardTaps* taps) {
  TL_CHECK(B > 0 && T > 0, "forward: B and T must be positive, found B={} T={}", B, T);
  TL_CHECK(int64_t(tokens.size()) == B * T, "forward: expected B*T = {}*{} = {} tokens, found {}", B, T,
           B * T, tokens.size());
  TL_CHECK(T <= cfg_.max_position_embeddings, "forward: T = {} exceeds max_position_embeddings = {}", T,
           cfg_.max_position_embeddings);
  check_tokens(tokens);
  run(tokens.data(), B, T, 0, nullptr, hidden, taps);
}

void CpuModel::forward_embeddings(const float* x, int64_t B, int64_t T, std::vector<float>& hidden,
                                  ForwardTaps* taps) {
  TL_CHECK(B > 0 && T > 0, "forward_embeddings: B and T must be positive, found B={} T={}", B, T);
  TL_CHECK(x != nullptr, "forward_embeddings: no input embeddings");
  TL_CHECK(T <= cfg_.max_position_embeddings,
           "forward_embeddings: T = {} exceeds max_position_embeddings = {}", T,
           cfg_.max_position_embeddings);
  run(nullptr, B, T, 0, nullptr, hidden, taps, x);
}

void CpuModel::forward_step(KVCache& cache, std::span<const int32_t> new_tokens, std::vector<float>& hidden,
                            ForwardTaps* taps) {
  TL_CHECK(
      cache.n_layers == cfg_.num_hidden_layers && cache.kv_dim == cfg_.kv_dim() &&
          cache.k.size() == size_t(cache.n_layers * cache.capacity * cache.kv_dim) &&
          cache.v.size() == cache.k.size(),
      "forward_step: KV cache shape (layers {}, kv_dim {}) does not match the model (layers {}, kv_dim {})",
      cache.n_layers, cache.kv_dim, cfg_.num_hidden_layers, cfg_.kv_dim());
  const int64_t n = int64_t(new_tokens.size());
  TL_CHECK(cache.length >= 0 && cache.length + n <= cache.capacity,
           "forward_step: {} cached + {} new tokens exceed the KV cache capacity {}", cache.length, n,
           cache.capacity);
  TL_CHECK(cache.length + n <= cfg_.max_position_embeddings,
           "forward_step: position {} exceeds max_position_embeddings = {}", cache.length + n - 1,
           cfg_.max_position_embeddings);
  check_tokens(new_tokens);
  if (n == 0) {
    hidden.clear();
    return;
  }
  run(new_tokens.data(), 1, n, cache.length, &cache, hidden, taps);
  cache.length += n;
}

void CpuModel::run(const int32_t* tokens, int64_t B, int64_t T, int64_t pos0, KVCache* cache,
                   std::vector<float>& hidden, ForwardTaps* taps, const float* x0) {
  const int64_t N = B * T, C = cfg_.hidden_size, F = cfg_.intermediate_size, Q = cfg_.q_dim();
  const int64_t KV = cfg_.kv_dim(), NH = cfg_.num_attention_heads, NKV = cfg_.num_key_value_heads;
  const int64_t hd = cfg_.head_dim, L = cfg_.num_hidden_layers;
  const float eps = float(cfg_.rms_norm_eps);
  const int64_t W = std::max({C, Q, F});  // widest BitLinear input
  Acts& a = acts_;
  grow(a.x, size_t(N * C));     // x is (N,C): the residual stream
  grow(a.h, size_t(N * W));     // h is (N,in): normalized input of the next BitLinear
  grow(a.i8, size_t(N * W));    // i8 is (N,in): the int8 codes
  grow(a.s, size_t(2 * N));     // s is (N): activation scales; then (N) row scales alpha/s
  grow(a.q, size_t(N * Q));     // q is (B,T,NH,hd)
  grow(a.k, size_t(N * KV));    // k is (B,T,NKV,hd)
  grow(a.v, size_t(N * KV));    // v is (B,T,NKV,hd)
  grow(a.att, size_t(N * Q));   // att is (B,T,NH,hd)
  grow(a.o, size_t(N * C));     // o is (N,C): output of o_proj / down_proj
  grow(a.gate, size_t(N * F));  // gate is (N,F)
  grow(a.up, size_t(N * F));    // up is (N,F)
  float* s = a.s.data();
  float* rs = a.s.data() + N;

  // Activation quantization of h (N,K) into codes; taps record it for the given linears.
  auto quantize = [&](int64_t l, int64_t K, std::initializer_list<int> which) {
    int8_t* i8 = a.i8.data();
    const float* h = a.h.data();
#pragma omp parallel for schedule(static) if (N * K >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      s[n] = quantize_activation_row(h + n * K, size_t(K), i8 + n * K);
    }
    if (taps && !taps->outputs_only && taps->wants(l))
      for (int w : which) {
        const std::string key = "layers." + std::to_string(l) + "." + kLinearNames[w] + ".input";
        taps->f32[key].assign(h, h + N * K);
        taps->i8[key].assign(i8, i8 + N * K);
        taps->f32[key + "_scale"].assign(s, s + N);
      }
  };
  // out (N, out) = BitLinear(h) from its codes in i8: (sum q*T) * alpha / s.
  auto bitlinear = [&](float* out, const PreparedLinear& w) {
    for (int64_t n = 0; n < N; ++n) rs[n] = w.scale / s[n];
    ternary_matmul_forward(out, w.out, a.i8.data(), rs, w.codes.data(), N, w.out, w.in, wscratch_);
  };

  // x = embed_tokens[ids] (no scaling), or the given embeddings
  if (x0)
    std::memcpy(a.x.data(), x0, size_t(N * C) * sizeof(float));
  else
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(a.x.data() + n * C, embed_ + int64_t(tokens[n]) * C, size_t(C) * sizeof(float));

  ResidualHooks* const hk = hooks_;
  if (hk && hk->block) grow(a.xin, size_t(N * C));
  for (int64_t l = 0; l < L; ++l) {
    const PreparedLinear* lin = &lin_[size_t(l * 7)];
    const HookSite site{l, B, T, C, pos0};
    if (hk && hk->block) std::memcpy(a.xin.data(), a.x.data(), size_t(N * C) * sizeof(float));
    // --- attention block
    rmsnorm_forward(a.h.data(), a.x.data(), norm_in_[l], N, C, eps);
    quantize(l, C, {kQ, kK, kV});
    bitlinear(a.q.data(), lin[kQ]);
    bitlinear(a.k.data(), lin[kK]);
    bitlinear(a.v.data(), lin[kV]);
#pragma omp parallel for schedule(static) if (N * Q >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t pos = pos0 + n % T;
      rope_forward(a.q.data() + n * Q, NH, hd, rope_.cos_at(pos), rope_.sin_at(pos));
      rope_forward(a.k.data() + n * KV, NKV, hd, rope_.cos_at(pos), rope_.sin_at(pos));
    }
    const float* kk = a.k.data();
    const float* vv = a.v.data();
    int64_t S = T;  // positions per sequence in kk/vv
    if (cache) {    // B == 1: append to the cache, attend over all cached positions
      std::memcpy(cache->k_layer(l) + pos0 * KV, a.k.data(), size_t(T * KV) * sizeof(float));
      std::memcpy(cache->v_layer(l) + pos0 * KV, a.v.data(), size_t(T * KV) * sizeof(float));
      kk = cache->k_layer(l);
      vv = cache->v_layer(l);
      S = cache->capacity;
    }
    attention_forward(a.att.data(), a.q.data(), kk, vv, B, T, S, pos0, NH, NKV, hd);
    rmsnorm_forward(a.h.data(), a.att.data(), norm_attn_sub_[l], N, Q, eps);  // attn_sub_norm before o_proj
    quantize(l, Q, {kO});
    bitlinear(a.o.data(), lin[kO]);
    if (hk && hk->attention) hk->on_attention(site, a.o.data());
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
    for (int64_t i = 0; i < N * C; ++i) a.x[i] += a.o[i];

    // --- MLP block
    rmsnorm_forward(a.h.data(), a.x.data(), norm_post_[l], N, C, eps);
    quantize(l, C, {kGate, kUp});
    bitlinear(a.gate.data(), lin[kGate]);
    bitlinear(a.up.data(), lin[kUp]);
    gated_activation_forward(a.gate.data(), a.up.data(), N * F, cfg_.hidden_act);
    rmsnorm_forward(a.h.data(), a.gate.data(), norm_ffn_sub_[l], N, F, eps);  // ffn_sub_norm before down
    quantize(l, F, {kDown});
    bitlinear(a.o.data(), lin[kDown]);
    if (hk && hk->mlp) hk->on_mlp(site, a.o.data());
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
    for (int64_t i = 0; i < N * C; ++i) a.x[i] += a.o[i];
    if (hk && hk->block) hk->on_block(site, a.xin.data(), a.x.data());
    if (taps && taps->wants(l))
      taps->f32["layers." + std::to_string(l) + ".output"].assign(a.x.data(), a.x.data() + N * C);
  }
  hidden.resize(size_t(N * C));
  rmsnorm_forward(hidden.data(), a.x.data(), norm_final_, N, C, eps);
}

void CpuModel::logits(const float* hidden, int64_t rows, float* out) const {
  const int64_t C = cfg_.hidden_size, V = cfg_.vocab_size;
  if (rows <= 0) return;
  // out (rows,V) = hidden (rows,C) . head (V,C)^T, plain fp32 (the LM head is not quantized)
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(V), int(C), 1.0f, hidden, int(C), head_,
              int(C), 0.0f, out, int(V));
}

size_t CpuModel::memory_bytes() const {
  size_t n = 0;
  for (const auto& l : lin_) n += l.codes.capacity();
  n += (rope_.cos.capacity() + rope_.sin.capacity()) * sizeof(float);
  for (const auto* v : {&acts_.x, &acts_.h, &acts_.s, &acts_.q, &acts_.k, &acts_.v, &acts_.att, &acts_.o,
                        &acts_.gate, &acts_.up, &acts_.xin, &wscratch_})
    n += v->capacity() * sizeof(float);
  n += acts_.i8.capacity();
  return n;
}

}  // namespace tl
