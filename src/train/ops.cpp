#include "train/ops.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/forward.hpp"
#include "model/quant.hpp"

namespace tl::train {

namespace {

// Below this many elements (or multiply-adds) a loop runs on one thread: a parallel region costs more than
// the work (the same threshold as src/cpu/forward.cpp).
constexpr int64_t kParallelMin = int64_t(1) << 15;

// C (M,N) = alpha op(A) op(B) + beta C, row-major, through cblas_sgemm / cblas_dgemm.
template <class Real>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, Real alpha, const Real* A, int64_t lda,
          const Real* B, int64_t ldb, Real beta, Real* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const CBLAS_TRANSPOSE a = ta ? CblasTrans : CblasNoTrans, b = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<Real, float>)
    cblas_sgemm(CblasRowMajor, a, b, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C,
                int(ldc));
  else
    cblas_dgemm(CblasRowMajor, a, b, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C,
                int(ldc));
}

// Dot product with 8 independent partial sums, so the compiler vectorizes it without -ffast-math (the
// attention scores are most of the CPU time of a small model).
template <class Real>
Real dot(const Real* a, const Real* b, int64_t n) {
  Real acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  Real tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

// y (n) += a * x (n); restrict: the caller's buffers never overlap, which lets the loop vectorize.
template <class Real>
inline void axpy(Real* __restrict y, Real a, const Real* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// head_dim ** -0.5 as the inference forward computes it (python float, then the scalar type).
template <class Real>
Real attention_scale(int64_t hd) {
  return Real(1.0 / std::sqrt(double(hd)));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------

template <class Real>
void embedding_forward(Real* out, const int32_t* tokens, const Real* table, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n)  // out row n (C) = table row tokens[n]
    std::memcpy(out + n * C, table + int64_t(tokens[n]) * C, size_t(C) * sizeof(Real));
}

template <class Real>
void embedding_backward(Real* dtable, const Real* dout, const int32_t* tokens, int64_t N, int64_t C) {
  // Serial over rows: a repeated token adds into the same table row.
  for (int64_t n = 0; n < N; ++n) {
    Real* d = dtable + int64_t(tokens[n]) * C;
    const Real* g = dout + n * C;
    for (int64_t i = 0; i < C; ++i) d[i] += g[i];
  }
}

// ---------------------------------------------------------------------------------------------------------

template <class Real>
void rmsnorm_forward(Real* out, Real* rstd, const Real* inp, const Real* weight, int64_t N, int64_t C,
                     Real eps) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const Real* x = inp + n * C;  // x is (C)
    Real* o = out + n * C;
    const double ss =
        sum_of_squares(x, C);  // as src/cpu's rmsnorm_forward: the float path gives the same bits
    const Real var = Real(ss / double(C));
    const Real r = Real(1) / std::sqrt(var + eps);
    for (int64_t i = 0; i < C; ++i) o[i] = weight[i] * (x[i] * r);
    rstd[n] = r;
  }
}

template <class Real>
void rmsnorm_backward(Real* dinp, Real* dweight, const Real* dout, const Real* inp, const Real* weight,
                      const Real* rstd, int64_t N, int64_t C) {
  // dinp: rows are independent.
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const Real* x = inp + n * C;
    const Real* g = dout + n * C;
    Real* dx = dinp + n * C;
    const Real r = rstd[n];
    double wgx = 0;  // sum_j w_j dout_j x_j
    for (int64_t i = 0; i < C; ++i) wgx += double(weight[i]) * double(g[i]) * double(x[i]);
    const Real c = Real(double(r) * double(r) * double(r) / double(C) * wgx);
    for (int64_t i = 0; i < C; ++i) dx[i] += r * weight[i] * g[i] - c * x[i];
  }
  // dweight: sums over rows, so split the columns between threads (blocks of 64, rows read contiguously).
  constexpr int64_t kCols = 64;
  const int64_t nblocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t i0 = blk * kCols, i1 = std::min(C, i0 + kCols);
    double acc[kCols] = {};
    for (int64_t n = 0; n < N; ++n) {
      const Real* x = inp + n * C;
      const Real* g = dout + n * C;
      const double r = rstd[n];
      for (int64_t i = i0; i < i1; ++i) acc[i - i0] += double(g[i]) * double(x[i]) * r;
    }
    for (int64_t i = i0; i < i1; ++i) dweight[i] += Real(acc[i - i0]);
  }
}

// ---------------------------------------------------------------------------------------------------------

template <class Real>
void matmul_forward(Real* out, const Real* inp, const Real* weight, int64_t N, int64_t IC, int64_t OC) {
  // out (N,OC) = inp (N,IC) . weight (OC,IC)^T
  gemm<Real>(false, true, N, OC, IC, Real(1), inp, IC, weight, IC, Real(0), out, OC);
}

template <class Real>
void matmul_backward(Real* dinp, Real* dweight, const Real* dout, const Real* inp, const Real* weight,
                     int64_t N, int64_t IC, int64_t OC) {
  // dinp (N,IC) += dout (N,OC) . weight (OC,IC)
  if (dinp) gemm<Real>(false, false, N, IC, OC, Real(1), dout, OC, weight, IC, Real(1), dinp, IC);
  // dweight (OC,IC) += dout^T (OC,N) . inp (N,IC)
  if (dweight) gemm<Real>(true, false, OC, IC, N, Real(1), dout, OC, inp, IC, Real(1), dweight, IC);
}

// ---------------------------------------------------------------------------------------------------------

template <class Real>
Real absmean_alpha(const Real* w, size_t n) {
  if constexpr (std::is_same_v<Real, float>) {
    return tl::absmean_scale(w, n);  // the one definition (model/quant.hpp)
  } else {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += std::fabs(w[i]);
    return quant::absmean_alpha(n ? sum / double(n) : 0.0);
  }
}

template <class Real>
void weight_quant_forward(Real* w_eff, const Real* w, size_t n, Real alpha) {
  // As transformers (and tl::ternarize): codes from w * (1/alpha), then divided by that same 1/alpha.
  const Real inv = Real(1) / alpha;
#pragma omp parallel for schedule(static) if (n >= size_t(16 * kParallelMin))
  for (size_t i = 0; i < n; ++i) w_eff[i] = quant::weight_code(w[i], inv) / inv;
}

template <class Real>
void act_quant_forward(Real* out, const Real* inp, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const Real* x = inp + n * C;
    Real* o = out + n * C;
    if constexpr (std::is_same_v<Real, float>) {
      tl::fake_quantize_activation_row(x, size_t(C), o);  // the one definition (model/quant.hpp)
    } else {
      double amax = 0;
      for (int64_t i = 0; i < C; ++i) amax = std::max(amax, std::fabs(x[i]));
      const double s = quant::act_scale(amax);
      for (int64_t i = 0; i < C; ++i) o[i] = quant::act_code(x[i], s) / s;
    }
  }
}

template <class Real>
Real quant_linear_forward(Real* out, Real* inp_eff, Real* w_eff, const Real* inp, const Real* weight,
                          int64_t N, int64_t IC, int64_t OC, QuantFlags flags, Real w_scale) {
  // inp_eff (N,IC) = ActQuant(inp) or inp
  if (flags.act)
    act_quant_forward(inp_eff, inp, N, IC);
  else if (inp_eff != inp)
    std::memcpy(inp_eff, inp, size_t(N * IC) * sizeof(Real));
  // w (OC,IC) = WeightQuant(weight) or weight
  Real alpha = 0;
  const Real* w = weight;
  if (flags.weight) {
    alpha = w_scale > 0 ? w_scale : absmean_alpha(weight, size_t(OC * IC));
    weight_quant_forward(w_eff, weight, size_t(OC * IC), alpha);
    w = w_eff;
  }
  matmul_forward(out, inp_eff, w, N, IC, OC);
  return alpha;
}

template <class Real>
void quant_linear_backward(Real* dinp, Real* dweight, const Real* dout, const Real* inp_eff,
                           const Real* w_eff, int64_t N, int64_t IC, int64_t OC) {
  // STE: the quantizers' Jacobians are the identity, so this is the plain linear's backward at the
  // quantized operands: dinp += dout . W_eff, dweight += dout^T . inp_eff.
  matmul_backward(dinp, dweight, dout, inp_eff, w_eff, N, IC, OC);
}

// ---------------------------------------------------------------------------------------------------------

template <class Real>
void rope_forward(Real* x, int64_t N, int64_t T, int64_t nh, int64_t hd, const Real* cos, const Real* sin) {
  const int64_t half = hd / 2;
#pragma omp parallel for schedule(static) if (N * nh * hd >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const Real* c = cos + (n % T) * half;  // c, s are (half) at this row's position
    const Real* s = sin + (n % T) * half;
    for (int64_t h = 0; h < nh; ++h) {
      Real* xh = x + (n * nh + h) * hd;  // xh is (hd): [x1 (half), x2 (half)]
      for (int64_t i = 0; i < half; ++i) {
        const Real x1 = xh[i], x2 = xh[i + half];
        xh[i] = x1 * c[i] - x2 * s[i];
        xh[i + half] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

template <class Real>
void rope_backward(Real* dx, int64_t N, int64_t T, int64_t nh, int64_t hd, const Real* cos, const Real* sin) {
  const int64_t half = hd / 2;
#pragma omp parallel for schedule(static) if (N * nh * hd >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const Real* c = cos + (n % T) * half;
    const Real* s = sin + (n % T) * half;
    for (int64_t h = 0; h < nh; ++h) {
      Real* g = dx + (n * nh + h) * hd;  // gradient w.r.t. the rotated values, replaced by R^T g
      for (int64_t i = 0; i < half; ++i) {
        const Real g1 = g[i], g2 = g[i + half];
        g[i] = g1 * c[i] + g2 * s[i];
        g[i + half] = g2 * c[i] - g1 * s[i];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------

template <class Real>
void attention_forward(Real* out, Real* lse, const Real* q, const Real* k, const Real* v, int64_t B,
                       int64_t T, int64_t NH, int64_t NKV, int64_t hd) {
  const int64_t group = NH / NKV;
  const Real scale = attention_scale<Real>(hd);
#pragma omp parallel if (B * T * T * NH * hd >= kParallelMin)
  {
    std::vector<Real> p(static_cast<size_t>(T));  // p is (t+1): the probabilities of one query row
#pragma omp for collapse(3) schedule(dynamic, 4)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < NH; ++h) {
          const int64_t kvh = h / group;                     // GQA: the kv head this query head reads
          const Real* qt = q + ((b * T + t) * NH + h) * hd;  // qt is (hd)
          const Real* kb = k + (b * T * NKV + kvh) * hd;     // key j at kb + j*NKV*hd
          const Real* vb = v + (b * T * NKV + kvh) * hd;
          Real maxv = -std::numeric_limits<Real>::infinity();
          for (int64_t j = 0; j <= t; ++j) {  // causal: keys 0..t
            p[j] = dot(qt, kb + j * NKV * hd, hd) * scale;
            maxv = std::max(maxv, p[j]);
          }
          Real sum = 0;
          for (int64_t j = 0; j <= t; ++j) {
            p[j] = std::exp(p[j] - maxv);
            sum += p[j];
          }
          Real* o = out + ((b * T + t) * NH + h) * hd;  // o is (hd)
          for (int64_t d = 0; d < hd; ++d) o[d] = 0;
          for (int64_t j = 0; j <= t; ++j) axpy(o, p[j] / sum, vb + j * NKV * hd, hd);
          lse[(b * T + t) * NH + h] = maxv + std::log(sum);
        }
  }
}

template <class Real>
void attention_backward(Real* dq, Real* dk, Real* dv, const Real* dout, const Real* q, const Real* k,
                        const Real* v, const Real* lse, int64_t B, int64_t T, int64_t NH, int64_t NKV,
                        int64_t hd) {
  const int64_t group = NH / NKV;
  const Real scale = attention_scale<Real>(hd);
  // One thread owns one (b, kv head): it alone writes that head's dk/dv rows and the dq rows of its group's
  // query heads, so no atomics are needed.
#pragma omp parallel if (B * T * T * NH * hd >= kParallelMin)
  {
    std::vector<Real> p(static_cast<size_t>(T)), dp(static_cast<size_t>(T));  // each (t+1) for one query row
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t kvh = 0; kvh < NKV; ++kvh) {
        const Real* kb = k + (b * T * NKV + kvh) * hd;  // key j at kb + j*NKV*hd
        const Real* vb = v + (b * T * NKV + kvh) * hd;
        Real* dkb = dk + (b * T * NKV + kvh) * hd;
        Real* dvb = dv + (b * T * NKV + kvh) * hd;
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
          for (int64_t t = 0; t < T; ++t) {
            const int64_t row = (b * T + t) * NH + h;
            const Real* qt = q + row * hd;  // qt, dot, dqt are (hd)
            const Real* dot_ = dout + row * hd;
            Real* dqt = dq + row * hd;
            const Real l = lse[row];
            Real D = 0;  // sum_j p_j dp_j (= dout . out)
            for (int64_t j = 0; j <= t; ++j) {
              p[j] = std::exp(dot(qt, kb + j * NKV * hd, hd) * scale - l);  // recomputed probabilities
              dp[j] = dot(dot_, vb + j * NKV * hd, hd);
              D += p[j] * dp[j];
            }
            for (int64_t j = 0; j <= t; ++j) {
              const Real ds = p[j] * (dp[j] - D) * scale;  // d score, times the scale of q.k
              axpy(dqt, ds, kb + j * NKV * hd, hd);
              axpy(dkb + j * NKV * hd, ds, qt, hd);
              axpy(dvb + j * NKV * hd, p[j], dot_, hd);
            }
          }
      }
  }
}

// ---------------------------------------------------------------------------------------------------------

template <class Real>
void gated_act_forward(Real* out, const Real* gate, const Real* up, int64_t n, bool relu2) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const Real g = gate[i];
    Real act;
    if (relu2) {
      const Real r = g > 0 ? g : Real(0);
      act = r * r;  // relu(g)^2
    } else {
      act = g / (Real(1) + std::exp(-g));  // silu(g), written as the inference forward writes it
    }
    out[i] = act * up[i];
  }
}

template <class Real>
void gated_act_backward(Real* dgate, Real* dup, const Real* dout, const Real* gate, const Real* up, int64_t n,
                        bool relu2) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const Real g = gate[i];
    Real act, dact;
    if (relu2) {
      const Real r = g > 0 ? g : Real(0);
      act = r * r;
      dact = 2 * r;
    } else {
      const Real sig = Real(1) / (Real(1) + std::exp(-g));
      act = g * sig;
      dact = sig * (Real(1) + g * (Real(1) - sig));
    }
    dgate[i] += dout[i] * up[i] * dact;
    dup[i] += dout[i] * act;
  }
}

// ---------------------------------------------------------------------------------------------------------

template <class Real>
void residual_forward(Real* out, const Real* a, const Real* b, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <class Real>
void residual_backward(Real* da, Real* db, const Real* dout, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

// ---------------------------------------------------------------------------------------------------------

namespace {
// max and sum(exp(x - max)) of one row, the sum in double.
template <class Real>
void row_softmax_stats(const Real* x, int64_t V, double& maxv, double& sum) {
  maxv = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < V; ++i) maxv = std::max(maxv, double(x[i]));
  sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(double(x[i]) - maxv);
}
}  // namespace

template <class Real>
int64_t crossentropy_forward(Real* losses, const Real* logits, const int32_t* targets, int64_t N, int64_t V) {
  int64_t count = 0;
#pragma omp parallel for schedule(static) reduction(+ : count) if (N * V >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] == kIgnoreTarget) {
      losses[n] = 0;
      continue;
    }
    const Real* x = logits + n * V;  // x is (V)
    double maxv, sum;
    row_softmax_stats(x, V, maxv, sum);
    losses[n] = Real(maxv + std::log(sum) - double(x[targets[n]]));  // -log softmax(x)[target]
    ++count;
  }
  return count;
}

template <class Real>
void crossentropy_softmax_backward(Real* dlogits, const Real* logits, const int32_t* targets, Real dloss,
                                   int64_t N, int64_t V) {
#pragma omp parallel for schedule(static) if (N * V >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    Real* d = dlogits + n * V;  // d, x are (V)
    if (targets[n] == kIgnoreTarget) {
      std::fill(d, d + V, Real(0));
      continue;
    }
    const Real* x = logits + n * V;
    double maxv, sum;
    row_softmax_stats(x, V, maxv, sum);
    for (int64_t i = 0; i < V; ++i) d[i] = Real(std::exp(double(x[i]) - maxv) / sum) * dloss;
    d[targets[n]] -= dloss;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Explicit instantiations: float (training) and double (finite-difference tests).

#define TL_TRAIN_OPS_INSTANTIATE(Real)                                                                       \
  template void embedding_forward<Real>(Real*, const int32_t*, const Real*, int64_t, int64_t);               \
  template void embedding_backward<Real>(Real*, const Real*, const int32_t*, int64_t, int64_t);              \
  template void rmsnorm_forward<Real>(Real*, Real*, const Real*, const Real*, int64_t, int64_t, Real);       \
  template void rmsnorm_backward<Real>(Real*, Real*, const Real*, const Real*, const Real*, const Real*,     \
                                       int64_t, int64_t);                                                    \
  template void matmul_forward<Real>(Real*, const Real*, const Real*, int64_t, int64_t, int64_t);            \
  template void matmul_backward<Real>(Real*, Real*, const Real*, const Real*, const Real*, int64_t, int64_t, \
                                      int64_t);                                                              \
  template Real absmean_alpha<Real>(const Real*, size_t);                                                    \
  template void weight_quant_forward<Real>(Real*, const Real*, size_t, Real);                                \
  template void act_quant_forward<Real>(Real*, const Real*, int64_t, int64_t);                               \
  template Real quant_linear_forward<Real>(Real*, Real*, Real*, const Real*, const Real*, int64_t, int64_t,  \
                                           int64_t, QuantFlags, Real);                                       \
  template void quant_linear_backward<Real>(Real*, Real*, const Real*, const Real*, const Real*, int64_t,    \
                                            int64_t, int64_t);                                               \
  template void rope_forward<Real>(Real*, int64_t, int64_t, int64_t, int64_t, const Real*, const Real*);     \
  template void rope_backward<Real>(Real*, int64_t, int64_t, int64_t, int64_t, const Real*, const Real*);    \
  template void attention_forward<Real>(Real*, Real*, const Real*, const Real*, const Real*, int64_t,        \
                                        int64_t, int64_t, int64_t, int64_t);                                 \
  template void attention_backward<Real>(Real*, Real*, Real*, const Real*, const Real*, const Real*,         \
                                         const Real*, const Real*, int64_t, int64_t, int64_t, int64_t,       \
                                         int64_t);                                                           \
  template void gated_act_forward<Real>(Real*, const Real*, const Real*, int64_t, bool);                     \
  template void gated_act_backward<Real>(Real*, Real*, const Real*, const Real*, const Real*, int64_t,       \
                                         bool);                                                              \
  template void residual_forward<Real>(Real*, const Real*, const Real*, int64_t);                            \
  template void residual_backward<Real>(Real*, Real*, const Real*, int64_t);                                 \
  template int64_t crossentropy_forward<Real>(Real*, const Real*, const int32_t*, int64_t, int64_t);         \
  template void crossentropy_softmax_backward<Real>(Real*, const Real*, const int32_t*, Real, int64_t,       \
                                                    int64_t);

TL_TRAIN_OPS_INSTANTIATE(float)
TL_TRAIN_OPS_INSTANTIATE(double)
#undef TL_TRAIN_OPS_INSTANTIATE

}  // namespace tl::train
