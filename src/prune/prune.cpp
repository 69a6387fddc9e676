#include "prune/prune.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/enum_names.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "model/quant.hpp"

namespace tl {

namespace {

inline uint32_t abs_bits(float w) {
  return std::bit_cast<uint32_t>(w) & 0x7fffffffu;
}

// Python's int(n * p / 100) then min(., n - 1): the study's quantile index.
size_t quantile_index(size_t n, double p) {
  const auto idx = size_t(double(n) * p / 100.0);
  return std::min(idx, n - 1);
}

// Distinct stream for random selection, so `random --match seed` does not reuse the sampler's stream.
constexpr uint64_t kRandomStream = 0x9E3779B97F4A7C15ull;

}  // namespace

namespace {
constexpr std::array<EnumName<PruneMethod>, 5> kPruneMethods{{{PruneMethod::Seed, "seed"},
                                                              {PruneMethod::Global, "global"},
                                                              {PruneMethod::PerTensor, "per-tensor"},
                                                              {PruneMethod::NM, "nm"},
                                                              {PruneMethod::Random, "random"}}};
constexpr std::array<EnumName<PruneLevel>, 2> kPruneLevels{
    {{PruneLevel::Latent, "latent"}, {PruneLevel::Codes, "codes"}}};
}  // namespace

std::string_view prune_method_name(PruneMethod m) {
  return name_of(kPruneMethods, m);
}

std::string_view prune_level_name(PruneLevel l) {
  return name_of(kPruneLevels, l);
}

PruneMethod parse_prune_method(std::string_view s) {
  return parse_enum(kPruneMethods, s, "method", "prune: ");
}

PruneLevel parse_prune_level(std::string_view s) {
  return parse_enum(kPruneLevels, s, "level", "prune: ");
}

std::pair<int, int> parse_nm(std::string_view s) {
  const auto colon = s.find(':');
  auto parse_int = [&](std::string_view part) -> int {
    TL_CHECK(!part.empty() && part.size() <= 6 &&
                 std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }),
             "prune: malformed N:M '{}': expected two positive integers like 2:4", s);
    return std::stoi(std::string(part));
  };
  TL_CHECK(colon != std::string_view::npos,
           "prune: malformed N:M '{}': expected two positive integers like 2:4", s);
  const int n = parse_int(s.substr(0, colon)), m = parse_int(s.substr(colon + 1));
  TL_CHECK(n >= 1, "prune: N:M '{}': N must be at least 1", s);
  TL_CHECK(n <= m, "prune: N:M '{}': N must not exceed M", s);
  return {n, m};
}

void validate_prune_options(const PruneOptions& o, const Model& m) {
  TL_CHECK(std::isfinite(o.sparsity) && o.sparsity >= 0 && o.sparsity < 100,
           "prune: sparsity must be in [0, 100), found {}", o.sparsity);
  TL_CHECK(o.sample_cap >= 1, "prune: the sample cap must be positive");
  if (o.method == PruneMethod::NM) {
    TL_CHECK(o.nm_n >= 1 && o.nm_n <= o.nm_m, "prune: N:M {}:{}: need 1 <= N <= M", o.nm_n, o.nm_m);
    // Codes-level N:M is not defined: the structure is on latent entries, and dead-zone entries would stay.
    TL_CHECK(o.level == PruneLevel::Latent, "prune: method nm works on latent weights only (--level latent)");
    for (const auto* v : prune_targets(m))
      TL_CHECK(v->shape[1] % o.nm_m == 0, "prune: N:M {}:{} needs in % M == 0, but '{}' has in = {}", o.nm_n,
               o.nm_m, v->name, v->shape[1]);
  }
  if (o.match) {
    TL_CHECK(o.method == PruneMethod::Random, "prune: --match is only for method random");
    TL_CHECK(*o.match != PruneMethod::Random, "prune: random cannot match itself");
    if (*o.match == PruneMethod::NM) {
      PruneOptions inner = o;
      inner.method = PruneMethod::NM;
      inner.match.reset();
      validate_prune_options(inner, m);
    }
  }
}

std::vector<const ParamView*> prune_targets(const Model& m) {
  std::vector<const ParamView*> out;
  for (const auto& v : m.views)
    if (v.kind == ParamKind::Linear) out.push_back(&v);
  return out;
}

bool PruneInput::candidate(size_t i) const {
  if (code_scale > 0) return std::nearbyint(w[i] * (1.0f / code_scale)) != 0.0f;
  return w[i] != 0.0f;
}

float seed_threshold(std::span<const PruneInput> tensors, double p, uint64_t seed, size_t cap,
                     size_t* samples_out) {
  Rng rng(seed);
  std::vector<float> pooled, a;
  for (const auto& t : tensors) {
    a.clear();
    for (size_t i = 0; i < t.w.size(); ++i)
      if (t.candidate(i)) a.push_back(std::fabs(t.w[i]));
    if (a.size() > cap) {  // the study's randperm(n)[:cap], as a partial Fisher-Yates shuffle
      for (size_t i = 0; i < cap; ++i) std::swap(a[i], a[i + rng.below(a.size() - i)]);
      a.resize(cap);
    }
    pooled.insert(pooled.end(), a.begin(), a.end());
  }
  if (samples_out) *samples_out = pooled.size();
  if (pooled.empty()) return 0;
  std::sort(pooled.begin(), pooled.end());
  return pooled[quantile_index(pooled.size(), p)];
}

float exact_threshold(std::span<const PruneInput> tensors, double p, size_t* candidates_out) {
  // Non-negative floats order like their bit patterns, so a radix select on the 31 magnitude bits is exact.
  std::vector<uint64_t> hist(65536, 0);
  size_t n = 0;
  for (const auto& t : tensors)
    for (size_t i = 0; i < t.w.size(); ++i)
      if (t.candidate(i)) {
        ++hist[abs_bits(t.w[i]) >> 16];
        ++n;
      }
  if (candidates_out) *candidates_out = n;
  if (n == 0) return 0;
  uint64_t k = quantile_index(n, p);
  uint32_t hi = 0;
  for (; hi < 65536; ++hi) {
    if (k < hist[hi]) break;
    k -= hist[hi];
  }
  std::fill(hist.begin(), hist.end(), 0);
  for (const auto& t : tensors)
    for (size_t i = 0; i < t.w.size(); ++i) {
      const uint32_t b = abs_bits(t.w[i]);
      if ((b >> 16) == hi && t.candidate(i)) ++hist[b & 0xffffu];
    }
  uint32_t lo = 0;
  for (; lo < 65536; ++lo) {
    if (k < hist[lo]) break;
    k -= hist[lo];
  }
  TL_CHECK(lo < 65536, "prune: internal error in the exact quantile");
  return std::bit_cast<float>((hi << 16) | lo);
}

void nm_select(const PruneInput& t, int64_t out, int64_t in, int n, int m, uint8_t* prune) {
  TL_CHECK(n >= 1 && n <= m && in % m == 0 && size_t(out * in) == t.w.size(),
           "prune: N:M {}:{} does not fit a [{}, {}] tensor", n, m, out, in);
  std::vector<int> order(static_cast<size_t>(m));
  for (int64_t r = 0; r < out; ++r)
    for (int64_t g = 0; g < in; g += m) {
      const float* w = t.w.data() + r * in + g;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int a, int b) {
        const float fa = std::fabs(w[a]), fb = std::fabs(w[b]);
        return fa != fb ? fa > fb : a < b;
      });
      for (int j = 0; j < m; ++j) prune[r * in + g + j] = 0;
      for (int j = n; j < m; ++j) {
        const size_t i = size_t(r * in + g + order[size_t(j)]);
        prune[i] = t.candidate(i) ? 1 : 0;
      }
    }
}

namespace {

// Which candidates one method prunes, tensor by tensor. Thresholds are fixed before any tensor changes.
class Selector {
 public:
  Selector(const PruneOptions& o, PruneMethod method, const std::vector<const ParamView*>& targets,
           const std::vector<PruneInput>& inputs, PruneReport& rep, bool record)
      : o_(o), method_(method), targets_(targets), inputs_(inputs), rng_(o.seed ^ kRandomStream) {
    if (method == PruneMethod::Seed || method == PruneMethod::Global) {
      size_t samples = 0;
      thr_ = method == PruneMethod::Seed ? seed_threshold(inputs, o.sparsity, o.seed, o.sample_cap, &samples)
                                         : exact_threshold(inputs, o.sparsity, &samples);
      if (record) {
        rep.threshold = thr_;
        rep.samples = samples;
      }
    }
    if (method == PruneMethod::Random) {
      counts_.resize(inputs.size());
      if (o.match) {  // the control: each tensor loses as many candidates as the matched method takes
        Selector inner(o, *o.match, targets, inputs, rep, true);
        std::vector<uint8_t> flags;
        for (size_t t = 0; t < inputs.size(); ++t) {
          flags.assign(inputs[t].w.size(), 0);
          inner.select(t, flags.data());
          counts_[t] = size_t(std::count(flags.begin(), flags.end(), uint8_t(1)));
        }
      } else {
        for (size_t t = 0; t < inputs.size(); ++t)
          counts_[t] = size_t(double(count_candidates(inputs[t])) * o.sparsity / 100.0);
      }
    }
  }

  static size_t count_candidates(const PruneInput& in) {
    size_t c = 0;
    for (size_t i = 0; i < in.w.size(); ++i) c += in.candidate(i);
    return c;
  }

  // Writes prune flags (1 = prune) for tensor t; returns the per-tensor threshold if there is one.
  std::optional<float> select(size_t t, uint8_t* prune) {
    const PruneInput& in = inputs_[t];
    const size_t n = in.w.size();
    std::fill(prune, prune + n, 0);
    switch (method_) {
      case PruneMethod::NM:
        nm_select(in, targets_[t]->shape[0], targets_[t]->shape[1], o_.nm_n, o_.nm_m, prune);
        return std::nullopt;
      case PruneMethod::Random: {
        if (counts_[t] == 0) return std::nullopt;
        std::vector<size_t> cand;
        for (size_t i = 0; i < n; ++i)
          if (in.candidate(i)) cand.push_back(i);
        const size_t k = std::min(counts_[t], cand.size());
        for (size_t i = 0; i < k; ++i) {  // partial Fisher-Yates: k uniform picks without replacement
          std::swap(cand[i], cand[i + rng_.below(cand.size() - i)]);
          prune[cand[i]] = 1;
        }
        return std::nullopt;
      }
      case PruneMethod::PerTensor: {
        if (o_.sparsity == 0) return std::nullopt;
        const float thr = exact_threshold(std::span(&in, 1), o_.sparsity);
        apply_threshold(in, thr, prune);
        return thr;
      }
      case PruneMethod::Seed:
      case PruneMethod::Global:
        if (o_.sparsity == 0) return std::nullopt;
        apply_threshold(in, thr_, prune);
        return std::nullopt;
    }
    return std::nullopt;
  }

 private:
  // Keep |w| > thr: an entry equal to the threshold is pruned, as in the study.
  static void apply_threshold(const PruneInput& in, float thr, uint8_t* prune) {
    for (size_t i = 0; i < in.w.size(); ++i) prune[i] = in.candidate(i) && std::fabs(in.w[i]) <= thr;
  }

  const PruneOptions& o_;
  PruneMethod method_;
  const std::vector<const ParamView*>& targets_;
  const std::vector<PruneInput>& inputs_;
  Rng rng_;
  float thr_ = 0;
  std::vector<size_t> counts_;
};

double target_percent(const PruneOptions& o) {
  if (o.method == PruneMethod::NM) return 100.0 * double(o.nm_m - o.nm_n) / double(o.nm_m);
  return o.sparsity;
}

}  // namespace

PruneResult prune_model(Model& m, const PruneOptions& o) {
  validate_prune_options(o, m);
  const auto targets = prune_targets(m);
  PruneResult res;
  PruneReport& rep = res.report;
  rep.options = o;

  // All selection inputs (and the code level's pre-prune scales) are taken before anything changes.
  std::vector<PruneInput> inputs;
  for (const auto* v : targets) {
    PruneInput in{std::span<const float>(m.params.data() + v->offset, v->numel)};
    if (o.level == PruneLevel::Codes) in.code_scale = weight_scale_for(m, *v);
    inputs.push_back(in);
  }
  Selector sel(o, o.method, targets, inputs, rep, true);

  std::vector<uint8_t> prune;
  double rel_sum = 0;
  rep.scale_rel_change_min = std::numeric_limits<double>::infinity();
  rep.scale_rel_change_max = -std::numeric_limits<double>::infinity();
  for (size_t t = 0; t < targets.size(); ++t) {
    const ParamView& v = *targets[t];
    float* w = m.params.data() + v.offset;
    TensorPruneStats s;
    s.name = v.name;
    s.shape = v.shape;
    s.numel = v.numel;
    s.fixed_scale = m.fixed_scale.count(v.name) != 0;
    s.candidates = Selector::count_candidates(inputs[t]);
    const TernaryWeight before = quantize_weight(m, v);
    const size_t zeros_before = size_t(std::count(w, w + v.numel, 0.0f));

    prune.assign(v.numel, 0);
    s.threshold = sel.select(t, prune.data());
    PruneMask mask{v.name, v.shape[0], v.shape[1], std::vector<uint8_t>(v.numel)};
    for (size_t i = 0; i < v.numel; ++i) {
      if (prune[i]) {
        s.pruned += w[i] != 0.0f;
        s.pruned_code_nonzero += before.codes[i] != 0;
        w[i] = 0.0f;
      }
      mask.keep[i] = w[i] != 0.0f;
    }
    const TernaryWeight after = quantize_weight(m, v);
    for (size_t i = 0; i < v.numel; ++i) s.codes_changed += before.codes[i] != after.codes[i];
    const size_t zeros_after = zeros_before + s.pruned;

    s.target = target_percent(o);
    if (o.method == PruneMethod::Random && o.match)
      s.target = s.candidates ? 100.0 * double(s.pruned) / double(s.candidates) : 0.0;
    const double numel = double(v.numel);
    s.latent_sparsity_before = double(zeros_before) / numel;
    s.latent_sparsity_after = double(zeros_after) / numel;
    s.code_zero_before = double(before.zeros) / numel;
    s.code_zero_after = double(after.zeros) / numel;
    s.scale_before = before.scale;
    s.scale_after = after.scale;
    s.scale_rel_change = (double(after.scale) - double(before.scale)) / double(before.scale);

    rep.numel += v.numel;
    rep.candidates += s.candidates;
    rep.pruned += s.pruned;
    rep.pruned_code_nonzero += s.pruned_code_nonzero;
    rep.codes_changed += s.codes_changed;
    rep.latent_zeros_before += zeros_before;
    rep.latent_zeros_after += zeros_after;
    rep.code_zeros_before += before.zeros;
    rep.code_zeros_after += after.zeros;
    rel_sum += s.scale_rel_change;
    rep.scale_rel_change_min = std::min(rep.scale_rel_change_min, s.scale_rel_change);
    rep.scale_rel_change_max = std::max(rep.scale_rel_change_max, s.scale_rel_change);
    rep.tensors.push_back(std::move(s));
    res.masks.push_back(std::move(mask));
  }
  if (rep.numel) {
    const double n = double(rep.numel);
    rep.latent_sparsity_before = double(rep.latent_zeros_before) / n;
    rep.latent_sparsity_after = double(rep.latent_zeros_after) / n;
    rep.code_zero_before = double(rep.code_zeros_before) / n;
    rep.code_zero_after = double(rep.code_zeros_after) / n;
    rep.scale_rel_change_mean = rel_sum / double(rep.tensors.size());
  } else {
    rep.scale_rel_change_min = rep.scale_rel_change_max = 0;
  }
  rep.pruned_frac_of_candidates = rep.candidates ? double(rep.pruned) / double(rep.candidates) : 0.0;
  return res;
}

nlohmann::json prune_options_json(const PruneOptions& o) {
  nlohmann::json j = {{"method", prune_method_name(o.method)},
                      {"sparsity", o.sparsity},
                      {"level", prune_level_name(o.level)},
                      {"seed", o.seed}};
  if (o.method == PruneMethod::NM || (o.match && *o.match == PruneMethod::NM))
    j["nm"] = std::to_string(o.nm_n) + ":" + std::to_string(o.nm_m);
  if (o.match) j["match"] = prune_method_name(*o.match);
  if (o.method == PruneMethod::Seed || (o.match && *o.match == PruneMethod::Seed))
    j["sample_cap"] = o.sample_cap;
  return j;
}

nlohmann::json to_json(const TensorPruneStats& t) {
  nlohmann::json j = {{"name", t.name},
                      {"shape", t.shape},
                      {"numel", t.numel},
                      {"candidates", t.candidates},
                      {"pruned", t.pruned},
                      {"pruned_code_nonzero", t.pruned_code_nonzero},
                      {"target_percent", t.target},
                      {"latent_sparsity_before", t.latent_sparsity_before},
                      {"latent_sparsity_after", t.latent_sparsity_after},
                      {"code_zero_before", t.code_zero_before},
                      {"code_zero_after", t.code_zero_after},
                      {"codes_changed", t.codes_changed},
                      {"scale_before", t.scale_before},
                      {"scale_after", t.scale_after},
                      {"scale_rel_change", t.scale_rel_change},
                      {"fixed_scale", t.fixed_scale}};
  j["threshold"] = t.threshold ? nlohmann::json(*t.threshold) : nlohmann::json(nullptr);
  return j;
}

nlohmann::json to_json(const PruneReport& r) {
  nlohmann::json j;
  j["options"] = prune_options_json(r.options);
  j["threshold"] = r.threshold ? nlohmann::json(*r.threshold) : nlohmann::json(nullptr);
  j["samples"] = r.samples;
  j["totals"] = {{"tensors", r.tensors.size()},
                 {"numel", r.numel},
                 {"candidates", r.candidates},
                 {"pruned", r.pruned},
                 {"pruned_code_nonzero", r.pruned_code_nonzero},
                 {"pruned_frac_of_candidates", r.pruned_frac_of_candidates},
                 {"target_percent", target_percent(r.options)},
                 {"latent_zeros_before", r.latent_zeros_before},
                 {"latent_zeros_after", r.latent_zeros_after},
                 {"latent_sparsity_before", r.latent_sparsity_before},
                 {"latent_sparsity_after", r.latent_sparsity_after},
                 {"code_zeros_before", r.code_zeros_before},
                 {"code_zeros_after", r.code_zeros_after},
                 {"code_zero_before", r.code_zero_before},
                 {"code_zero_after", r.code_zero_after},
                 {"codes_changed", r.codes_changed},
                 {"scale_rel_change_mean", r.scale_rel_change_mean},
                 {"scale_rel_change_min", r.scale_rel_change_min},
                 {"scale_rel_change_max", r.scale_rel_change_max}};
  j["tensors"] = nlohmann::json::array();
  for (const auto& t : r.tensors) j["tensors"].push_back(to_json(t));
  return j;
}

std::string to_markdown(const PruneReport& r, const std::string& title) {
  const PruneOptions& o = r.options;
  std::string md = fmt::format("# {}\n\n", title);
  md += fmt::format("Method `{}` on the {} ", prune_method_name(o.method), prune_level_name(o.level));
  if (o.method == PruneMethod::NM)
    md += fmt::format("({}:{} along the input dimension)", o.nm_n, o.nm_m);
  else
    md += fmt::format("at a target of {}% of the candidates", o.sparsity);
  md += fmt::format(", seed {}.", o.seed);
  if (r.threshold) md += fmt::format(" Threshold {:.6g} ({} samples).", *r.threshold, r.samples);
  md += "\n\n| | before | after |\n|---|---:|---:|\n";
  md += fmt::format("| latent sparsity | {:.4f}% | {:.4f}% |\n", 100 * r.latent_sparsity_before,
                    100 * r.latent_sparsity_after);
  md += fmt::format("| ternary-code zeros | {:.4f}% | {:.4f}% |\n", 100 * r.code_zero_before,
                    100 * r.code_zero_after);
  md += fmt::format(
      "\n{} linear tensors, {} weights, {} candidates; pruned {} ({:.4f}% of the candidates), {} of them "
      "with a "
      "non-zero code before; {} codes changed ({:.4f}%). Absmean scale change (after/before − 1): mean "
      "{:+.4f}%, min {:+.4f}%, max {:+.4f}%.\n\n",
      r.tensors.size(), r.numel, r.candidates, r.pruned, 100 * r.pruned_frac_of_candidates,
      r.pruned_code_nonzero, r.codes_changed,
      r.numel ? 100.0 * double(r.codes_changed) / double(r.numel) : 0.0, 100 * r.scale_rel_change_mean,
      100 * r.scale_rel_change_min, 100 * r.scale_rel_change_max);
  md +=
      "| tensor | pruned % of candidates | latent zeros % | code zeros % before → after | codes changed | "
      "scale change |\n|---|---:|---:|---:|---:|---:|\n";
  for (const auto& t : r.tensors)
    md += fmt::format("| {} | {:.3f} | {:.3f} | {:.3f} → {:.3f} | {} | {:+.4f}%{} |\n", t.name,
                      t.candidates ? 100.0 * double(t.pruned) / double(t.candidates) : 0.0,
                      100 * t.latent_sparsity_after, 100 * t.code_zero_before, 100 * t.code_zero_after,
                      t.codes_changed, 100 * t.scale_rel_change, t.fixed_scale ? " (fixed)" : "");
  return md;
}

}  // namespace tl
