#include "study/stats.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace tl::study {

double t975(int64_t df) {
  TL_CHECK(df >= 1, "t975: degrees of freedom must be >= 1, found {}", df);
  static constexpr double table[30] = {12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060,
                                       2.2622,  2.2281, 2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199,
                                       2.1098,  2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
                                       2.0595,  2.0555, 2.0518, 2.0484, 2.0452, 2.0423};
  if (df <= 30) return table[df - 1];
  // Cornish-Fisher expansion of the t quantile around the normal one (error < 1e-5 for df > 30).
  const double z = 1.959963984540054, n = double(df);
  const double z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
  return z + (z3 + z) / (4 * n) + (5 * z5 + 16 * z3 + 3 * z) / (96 * n * n) +
         (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * n * n * n);
}

MeanCI mean_ci(std::span<const double> x) {
  TL_CHECK(!x.empty(), "mean_ci: no values");
  MeanCI m;
  m.n = int64_t(x.size());
  for (double v : x) m.mean += v;
  m.mean /= double(m.n);
  if (m.n == 1) {
    m.ci = {m.mean, m.mean};
    return m;
  }
  double ss = 0;
  for (double v : x) ss += (v - m.mean) * (v - m.mean);
  m.sd = std::sqrt(ss / double(m.n - 1));
  const double h = t975(m.n - 1) * m.sd / std::sqrt(double(m.n));
  m.ci = {m.mean - h, m.mean + h};
  return m;
}

double ArmScores::mean_nll() const {
  double s = 0, t = 0;
  for (const auto& row : nll)
    for (double v : row) s += v;
  for (double v : tokens) t += v;
  return s / (double(seeds()) * t);
}

double ArmScores::seed_mean_nll(int64_t seed) const {
  double s = 0, t = 0;
  for (double v : nll.at(size_t(seed))) s += v;
  for (double v : tokens) t += v;
  return s / t;
}

namespace {

void check_arm(const ArmScores& a, const char* what) {
  TL_CHECK(a.seeds() >= 1, "bootstrap: the {} arm has no seeds", what);
  for (const auto& row : a.nll)
    TL_CHECK(row.size() == a.tokens.size(),
             "bootstrap: the {} arm has {} windows in one seed and {} in another", what, row.size(),
             a.tokens.size());
}

double percentile_sorted(const std::vector<double>& v, double q) {  // linear interpolation, v sorted
  const double pos = q * double(v.size() - 1);
  const size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - double(lo)) * (v[hi] - v[lo]);
}

}  // namespace

Effect paired_bootstrap(const ArmScores& t, const ArmScores& r, int resamples, uint64_t seed,
                        bool pair_seeds) {
  check_arm(t, "treatment");
  check_arm(r, "reference");
  TL_CHECK(t.windows() == r.windows() && t.windows() > 0,
           "bootstrap: the arms were scored on different windows ({} and {})", t.windows(), r.windows());
  for (int64_t w = 0; w < t.windows(); ++w)
    TL_CHECK(t.tokens[size_t(w)] == r.tokens[size_t(w)],
             "bootstrap: window {} counts {} targets in one arm and {}", w, t.tokens[size_t(w)],
             r.tokens[size_t(w)]);
  TL_CHECK(resamples >= 100, "bootstrap: at least 100 resamples, found {}", resamples);
  Effect e;
  e.windows = t.windows();
  e.seeds_treatment = t.seeds();
  e.seeds_reference = r.seeds();
  e.resamples = resamples;
  e.paired_seeds = pair_seeds && t.seeds() == r.seeds() && t.seeds() > 1;
  e.delta = t.mean_nll() - r.mean_nll();
  e.ratio = std::exp(e.delta);

  const size_t W = size_t(e.windows), St = size_t(t.seeds()), Sr = size_t(r.seeds());
  Rng rng(seed);
  std::vector<size_t> st(St), sr(Sr);
  std::vector<double> deltas;
  deltas.reserve(size_t(resamples));
  for (int b = 0; b < resamples; ++b) {
    for (auto& s : st) s = St > 1 ? size_t(rng.below(St)) : 0;
    if (e.paired_seeds)
      sr = st;
    else
      for (auto& s : sr) s = Sr > 1 ? size_t(rng.below(Sr)) : 0;
    double num = 0, den = 0;
    for (size_t k = 0; k < W; ++k) {
      const size_t w = size_t(rng.below(W));
      double mt = 0, mr = 0;
      for (size_t s : st) mt += t.nll[s][w];
      for (size_t s : sr) mr += r.nll[s][w];
      num += mt / double(St) - mr / double(Sr);
      den += t.tokens[w];
    }
    deltas.push_back(num / den);
  }
  std::sort(deltas.begin(), deltas.end());
  e.ci = {percentile_sorted(deltas, 0.025), percentile_sorted(deltas, 0.975)};
  return e;
}

Interval bootstrap_interval(int64_t n, int resamples, uint64_t seed,
                            const std::function<double(std::span<const int64_t>)>& stat) {
  TL_CHECK(n >= 1, "bootstrap: no units");
  TL_CHECK(resamples >= 100, "bootstrap: at least 100 resamples, found {}", resamples);
  Rng rng(seed);
  std::vector<int64_t> idx(static_cast<size_t>(n), 0);
  std::vector<double> v;
  v.reserve(size_t(resamples));
  for (int b = 0; b < resamples; ++b) {
    for (auto& i : idx) i = int64_t(rng.below(uint64_t(n)));
    v.push_back(stat(idx));
  }
  std::sort(v.begin(), v.end());
  return {percentile_sorted(v, 0.025), percentile_sorted(v, 0.975)};
}

std::string verdict_name(Verdict v) {
  switch (v) {
    case Verdict::Holds:
      return "holds";
    case Verdict::Confounded:
      return "confounded";
    case Verdict::DoesNotHold:
      return "does not hold";
    case Verdict::Inconclusive:
      return "inconclusive";
  }
  return "?";
}

namespace {

// +1: the interval lies wholly on the claimed side of zero; -1: wholly on the other; 0: it includes zero.
int side(const Interval& ci, int direction) {
  if (direction < 0) return ci.hi < 0 ? 1 : (ci.lo > 0 ? -1 : 0);
  return ci.lo > 0 ? 1 : (ci.hi < 0 ? -1 : 0);
}

bool within(const Interval& ci, double d) {
  return ci.lo >= -d && ci.hi <= d;
}

std::string fmt_effect(const Effect& e) {
  return fmt::format("Δ {:+.4f} nats [{:+.4f}, {:+.4f}]", e.delta, e.ci.lo, e.ci.hi);
}

// Windows that would bring the half-width to where the interval decides: below |Δ| (excluding zero) or below
// δ - |Δ| (inside ±δ), whichever is larger.
int64_t windows_for(const Effect& e, double target) {
  const double h = e.half_width();
  if (target <= 0 || h <= 0) return e.windows + 1;
  // never fewer than one more window: a percentile interval is not symmetric, the rule of thumb is
  return std::max(e.windows + 1, int64_t(std::ceil(double(e.windows) * (h / target) * (h / target))));
}
int64_t windows_needed(const Effect& e, double min_effect) {
  const double d = std::fabs(e.delta);
  return windows_for(e, std::max(d, min_effect - d));
}

}  // namespace

VerdictResult decide(const VerdictInput& in) {
  TL_CHECK(in.direction == -1 || in.direction == 1, "verdict: direction must be -1 or +1");
  TL_CHECK(in.min_effect > 0, "verdict: the smallest effect of interest must be > 0");
  VerdictResult r;
  const double d = in.min_effect;
  const int s = side(in.effect.ci, in.direction);
  const char* claimed = in.direction < 0 ? "lower" : "higher";
  if (s < 0) {
    r.verdict = Verdict::DoesNotHold;
    r.reason =
        fmt::format("the opposite of the claim: {} (the claim: {} NLL)", fmt_effect(in.effect), claimed);
    return r;
  }
  if (s == 0) {
    if (within(in.effect.ci, d)) {
      r.verdict = Verdict::DoesNotHold;
      r.reason = fmt::format("no effect: {} lies within ±{} nats", fmt_effect(in.effect), d);
    } else {
      r.verdict = Verdict::Inconclusive;
      r.windows_needed = windows_needed(in.effect, d);
      r.reason = fmt::format("{} includes zero and reaches beyond ±{} nats; about {} windows would decide it",
                             fmt_effect(in.effect), d, *r.windows_needed);
    }
    return r;
  }
  if (std::fabs(in.effect.delta) < d) {  // real, but smaller than the smallest effect of interest
    r.verdict = Verdict::DoesNotHold;
    r.reason = fmt::format("a negligible effect: {} excludes zero, but |Δ| is below {} nats",
                           fmt_effect(in.effect), d);
    return r;
  }
  if (!in.vs_control) {
    r.verdict = Verdict::Holds;
    r.reason = fmt::format("{} {} NLL, the interval excludes zero (no control applies)",
                           fmt_effect(in.effect), claimed);
    return r;
  }
  const Effect& c = *in.vs_control;
  const int sc = side(c.ci, in.direction);
  if (sc > 0 && std::fabs(c.delta) < d) {
    r.verdict = Verdict::Confounded;
    r.reason = fmt::format(
        "{} against the baseline; against the control {}, which excludes zero but is below {} "
        "nats: the control gives almost as much",
        fmt_effect(in.effect), fmt_effect(c), d);
    return r;
  }
  if (sc > 0) {
    r.verdict = Verdict::Holds;
    r.reason = fmt::format("{} against the baseline and {} against the control", fmt_effect(in.effect),
                           fmt_effect(c));
    return r;
  }
  const bool control_reproduces = in.control_effect && side(in.control_effect->ci, in.direction) > 0;
  if (sc < 0 || within(c.ci, d) || control_reproduces) {
    r.verdict = Verdict::Confounded;
    r.reason = fmt::format(
        "{} against the baseline, but against the control {}{}", fmt_effect(in.effect), fmt_effect(c),
        in.control_effect ? fmt::format("; the control alone gives {}", fmt_effect(*in.control_effect))
                          : std::string());
    return r;
  }
  r.verdict = Verdict::Inconclusive;
  r.windows_needed = windows_needed(c, d);
  r.reason = fmt::format(
      "{} against the baseline, but against the control {} is too wide to tell; about {} "
      "windows would decide it",
      fmt_effect(in.effect), fmt_effect(c), *r.windows_needed);
  return r;
}

VerdictResult decide_band(Interval model, double band, std::span<const Interval> nulls,
                          std::span<const std::string> null_names) {
  TL_CHECK(band > 0, "verdict: the band must be > 0");
  TL_CHECK(nulls.size() == null_names.size(), "verdict: {} null intervals, {} names", nulls.size(),
           null_names.size());
  auto inside = [&](const Interval& i) { return i.lo > -band && i.hi < band; };
  auto outside = [&](const Interval& i) { return i.lo >= band || i.hi <= -band; };
  auto text = [](const Interval& i) { return fmt::format("[{:+.4f}, {:+.4f}]", i.lo, i.hi); };
  VerdictResult r;
  if (outside(model)) {
    r.verdict = Verdict::DoesNotHold;
    r.reason = fmt::format("the model's interval {} lies outside ±{}", text(model), band);
    return r;
  }
  if (!inside(model)) {
    r.verdict = Verdict::Inconclusive;
    r.reason = fmt::format("the model's interval {} crosses the edge of ±{}", text(model), band);
    return r;
  }
  std::string in_band, unclear;
  for (size_t i = 0; i < nulls.size(); ++i) {
    if (inside(nulls[i]))
      in_band += fmt::format("{}{} {}", in_band.empty() ? "" : ", ", null_names[i], text(nulls[i]));
    else if (!outside(nulls[i]))
      unclear += fmt::format("{}{} {}", unclear.empty() ? "" : ", ", null_names[i], text(nulls[i]));
  }
  if (!in_band.empty()) {
    r.verdict = Verdict::Confounded;
    r.reason = fmt::format("the model's interval {} lies inside ±{}, and so does the null model's: {}",
                           text(model), band, in_band);
  } else if (!unclear.empty()) {
    r.verdict = Verdict::Inconclusive;
    r.reason = fmt::format("the model's interval {} lies inside ±{}, a null model's crosses its edge: {}",
                           text(model), band, unclear);
  } else {
    r.verdict = Verdict::Holds;
    r.reason =
        fmt::format("the model's interval {} lies inside ±{} and no null model's does", text(model), band);
  }
  return r;
}

VerdictResult decide_equivalence(const Effect& e, double d) {
  TL_CHECK(d > 0, "verdict: the smallest effect of interest must be > 0");
  VerdictResult r;
  if (within(e.ci, d)) {
    r.verdict = Verdict::Holds;
    r.reason = fmt::format("{} lies within ±{} nats", fmt_effect(e), d);
  } else if (e.ci.lo > d || e.ci.hi < -d) {
    r.verdict = Verdict::DoesNotHold;
    r.reason = fmt::format("{} lies beyond ±{} nats", fmt_effect(e), d);
  } else {
    r.verdict = Verdict::Inconclusive;
    r.windows_needed = windows_for(e, std::fabs(d - std::fabs(e.delta)));  // the distance to the edge
    r.reason = fmt::format("{} reaches across ±{} nats; about {} windows would decide it", fmt_effect(e), d,
                           *r.windows_needed);
  }
  return r;
}

uint64_t seed_of(std::string_view text, uint64_t base) {
  uint64_t h = 0xcbf29ce484222325ull ^ base;
  for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
  return Rng(h).next_u64();  // through splitmix64 and one xoshiro step: nearby texts, unrelated seeds
}

nlohmann::json to_json(const Interval& i) {
  return nlohmann::json::array({i.lo, i.hi});
}

nlohmann::json to_json(const MeanCI& m) {
  return {{"n", m.n}, {"mean", m.mean}, {"sd", m.sd}, {"ci95", to_json(m.ci)}};
}

nlohmann::json to_json(const Effect& e) {
  return {{"delta_nll", e.delta},
          {"ci95", to_json(e.ci)},
          {"ppl_ratio", e.ratio},
          {"ppl_ratio_ci95", nlohmann::json::array({std::exp(e.ci.lo), std::exp(e.ci.hi)})},
          {"windows", e.windows},
          {"seeds", nlohmann::json::array({e.seeds_treatment, e.seeds_reference})},
          {"paired_seeds", e.paired_seeds},
          {"resamples", e.resamples}};
}

nlohmann::json to_json(const VerdictResult& v) {
  nlohmann::json j = {{"verdict", verdict_name(v.verdict)}, {"reason", v.reason}};
  if (v.windows_needed) j["windows_needed"] = *v.windows_needed;
  return j;
}

}  // namespace tl::study
