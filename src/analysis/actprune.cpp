#include "analysis/actprune.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>

#include "core/enum_names.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/parse.hpp"
#include "cpu/generate.hpp"
#include "text/unicode.hpp"

namespace tl {

// ---------------------------------------------------------------------------------------------------------
// Modes and levels

namespace {
constexpr std::array<EnumName<PruneMode>, 4> kPruneModes{{{PruneMode::Study, "study"},
                                                          {PruneMode::Split, "split"},
                                                          {PruneMode::PerToken, "per-token"},
                                                          {PruneMode::Random, "random"}}};
}  // namespace

PruneMode parse_prune_mode(const std::string& s) {
  return parse_enum(kPruneModes, s, "mode", "actprune: ");
}

std::string prune_mode_name(PruneMode m) {
  return std::string(name_of(kPruneModes, m));
}

std::vector<PruneMode> parse_prune_modes(const std::string& csv) {
  std::vector<PruneMode> out;
  for (const auto& item : split_list(csv)) {
    const PruneMode m = parse_prune_mode(item);
    TL_CHECK(std::find(out.begin(), out.end(), m) == out.end(), "actprune: --modes lists '{}' twice", item);
    out.push_back(m);
  }
  TL_CHECK(!out.empty(), "actprune: --modes is empty");
  return out;
}

std::vector<double> parse_prune_levels(const std::string& csv) {
  const std::vector<double> out = parse_number_list(csv, "actprune: --levels");
  TL_CHECK(!out.empty(), "actprune: --levels is empty");
  for (size_t i = 0; i < out.size(); ++i) {
    TL_CHECK(out[i] >= 0 && out[i] < 100, "actprune: every level must be in [0, 100), found {}", out[i]);
    TL_CHECK(i == 0 || out[i] > out[i - 1], "actprune: --levels must be increasing, found {} after {}",
             out[i], out[i - 1]);
  }
  return out;
}

std::vector<std::string> study_prompts() {
  return {"The capital of France is", "Water boils at", "The largest planet in the solar system is"};
}

// ---------------------------------------------------------------------------------------------------------
// Building blocks

float torch_quantile(std::span<float> v, double q) {
  TL_CHECK(!v.empty(), "quantile of an empty tensor");
  TL_CHECK(q >= 0 && q <= 1, "quantile: q must be in [0, 1], found {}", q);
  const int64_t n = int64_t(v.size());
  // torch: q is a fp32 tensor, ranks = q * (n-1) in fp32, below = ranks.long(), weight = ranks - below
  const float rank = float(q) * float(n - 1);
  const int64_t lo = int64_t(rank), hi = int64_t(std::ceil(rank));
  const float w = rank - float(lo);
  std::nth_element(v.begin(), v.begin() + lo, v.end());
  const float below = v[size_t(lo)];
  const float above = hi > lo ? *std::min_element(v.begin() + lo + 1, v.end()) : below;
  // torch's lerp: the form chosen by |weight| < 0.5, in fp32
  return w < 0.5f ? below + w * (above - below) : above - (above - below) * (1.0f - w);
}

namespace {

// The study's rule on n values; adds Σ x² of the zeroed values to *removed.
int64_t prune_quantile(float* x, int64_t n, double percent, std::vector<float>& abs, double* removed) {
  abs.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) abs[size_t(i)] = std::fabs(x[i]);
  const float thr = torch_quantile(abs, percent / 100.0);
  int64_t z = 0;
  for (int64_t i = 0; i < n; ++i)
    if (std::fabs(x[i]) < thr) {  // mask = |r| >= thr: ties kept
      if (removed) *removed += double(x[i]) * double(x[i]);
      x[i] = 0.0f;
      ++z;
    }
  return z;
}

// Selection sampling (Knuth's algorithm S): element i is taken with probability need / (n - i), which
// gives exactly k elements, every k-subset equally likely.
void zero_random(float* x, int64_t n, int64_t k, Rng& rng, double* removed) {
  TL_CHECK(k >= 0 && k <= n, "random mask: cannot zero {} of {} values", k, n);
  int64_t need = k;
  for (int64_t i = 0; i < n && need > 0; ++i)
    if (int64_t(rng.below(uint64_t(n - i))) < need) {
      if (removed) *removed += double(x[i]) * double(x[i]);
      x[i] = 0.0f;
      --need;
    }
}

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

int64_t prune_below_quantile(float* x, int64_t n, double percent, std::vector<float>& abs) {
  return prune_quantile(x, n, percent, abs, nullptr);
}

int64_t count_below_quantile(const float* x, int64_t n, double percent, std::vector<float>& abs) {
  abs.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) abs[size_t(i)] = std::fabs(x[i]);
  const float thr = torch_quantile(abs, percent / 100.0);
  int64_t z = 0;
  for (int64_t i = 0; i < n; ++i) z += std::fabs(x[i]) < thr;
  return z;
}

void zero_random_subset(float* x, int64_t n, int64_t k, Rng& rng) {
  zero_random(x, n, k, rng, nullptr);
}

uint64_t mask_seed(uint64_t seed, double level, int64_t layer, uint64_t sequence) {
  uint64_t z = mix64(seed + 0x9e3779b97f4a7c15ull);
  z = mix64(z ^ std::bit_cast<uint64_t>(level));
  z = mix64(z ^ (uint64_t(layer) + 1) * 0xbf58476d1ce4e5b9ull);
  return mix64(z ^ (sequence + 1) * 0x94d049bb133111ebull);
}

// ---------------------------------------------------------------------------------------------------------
// Hooks

ActPruneHook::ActPruneHook(PruneMode mode, double percent, uint64_t seed, int64_t n_layers)
    : mode_(mode), percent_(percent), seed_(seed), n_layers_(n_layers) {
  TL_CHECK(percent >= 0 && percent < 100, "actprune: level must be in [0, 100), found {}", percent);
  TL_CHECK(n_layers >= 1, "actprune: the model has no layers");
  attention = mlp = mode == PruneMode::Split;
  block = !attention;
}

void ActPruneHook::prune(float* r, int64_t n, int64_t row, int64_t layer, uint64_t sequence) {
  double e = 0, removed = 0;
  for (int64_t i = 0; i < n; ++i) e += double(r[i]) * double(r[i]);
  int64_t z = 0;
  if (mode_ == PruneMode::Random) {
    z = count_below_quantile(r, n, percent_, abs_);  // the study's count for this (layer, sequence)
    Rng rng(mask_seed(seed_, percent_, layer, sequence));
    zero_random(r, n, z, rng, &removed);
  } else {
    for (int64_t i0 = 0; i0 < n; i0 += row) z += prune_quantile(r + i0, row, percent_, abs_, &removed);
  }
  if (counting) {
    zeroed += z;
    elements += n;
    energy += e;
    energy_removed += removed;
  }
}

void ActPruneHook::on_attention(const HookSite& s, float* o) {
  const int64_t n = s.T * s.C;
  for (int64_t b = 0; b < s.B; ++b) prune(o + b * n, n, n, s.layer, sequences_done_ + uint64_t(b));
}

void ActPruneHook::on_mlp(const HookSite& s, float* o) {
  const int64_t n = s.T * s.C;
  for (int64_t b = 0; b < s.B; ++b) prune(o + b * n, n, n, s.layer, sequences_done_ + uint64_t(b));
  if (s.layer == n_layers_ - 1) sequences_done_ += uint64_t(s.B);
}

void ActPruneHook::on_block(const HookSite& s, const float* x_in, float* x_out) {
  const int64_t n = s.T * s.C;  // one sequence: the study's (1, T, C) tensor
  r_.resize(size_t(n));
  float* r = r_.data();
  for (int64_t b = 0; b < s.B; ++b) {
    const float* xi = x_in + b * n;
    float* xo = x_out + b * n;
    for (int64_t i = 0; i < n; ++i) r[i] = xo[i] - xi[i];  // r = x_out - x_in, recovered by subtraction
    prune(r, n, mode_ == PruneMode::PerToken ? s.C : n, s.layer, sequences_done_ + uint64_t(b));
    for (int64_t i = 0; i < n; ++i) xo[i] = xi[i] + r[i];  // x_in + r * mask
  }
  if (s.layer == n_layers_ - 1) sequences_done_ += uint64_t(s.B);
}

NaturalSparsityHook::NaturalSparsityHook(int64_t n_layers)
    : sum_(size_t(n_layers)), seen_(size_t(n_layers), 0) {
  block = true;
}

void NaturalSparsityHook::on_block(const HookSite& s, const float* x_in, float* x_out) {
  const int64_t n = s.T * s.C;
  LayerSparsity& acc = sum_[size_t(s.layer)];
  for (int64_t b = 0; b < s.B; ++b) {
    double sum = 0, mx = 0;
    int64_t zero = 0, below[4] = {0, 0, 0, 0};
    for (int64_t i = b * n; i < (b + 1) * n; ++i) {
      const double a = std::fabs(double(x_out[i] - x_in[i]));  // |r|, r in fp32 as the hook computes it
      sum += a;
      mx = std::max(mx, a);
      zero += a == 0;
      for (int j = 0; j < 4; ++j) below[j] += a < kSparsityThresholds[j];
    }
    const double mean = sum / double(n);
    double ss = 0;
    for (int64_t i = b * n; i < (b + 1) * n; ++i) {
      const double d = std::fabs(double(x_out[i] - x_in[i])) - mean;
      ss += d * d;
    }
    acc.mean += mean;
    acc.std += n > 1 ? std::sqrt(ss / double(n - 1)) : 0.0;  // torch.std: unbiased
    acc.max += mx;
    acc.pct_zero += 100.0 * double(zero) / double(n);
    for (int j = 0; j < 4; ++j) acc.pct_below[j] += 100.0 * double(below[j]) / double(n);
    ++seen_[size_t(s.layer)];
  }
}

std::vector<LayerSparsity> NaturalSparsityHook::average() const {
  std::vector<LayerSparsity> out = sum_;
  for (size_t l = 0; l < out.size(); ++l) {
    const double k = seen_[l] > 0 ? double(seen_[l]) : 1.0;
    LayerSparsity& s = out[l];
    s.mean /= k;
    s.std /= k;
    s.max /= k;
    s.pct_zero /= k;
    for (double& p : s.pct_below) p /= k;
  }
  return out;
}

PplResult hooked_perplexity(CpuModel& model, const std::vector<PplWindow>& windows, const PplOptions& opt) {
  const int64_t V = model.config().vocab_size, C = model.config().hidden_size;
  std::vector<float> hidden, rows;
  auto logits = [&](std::span<const int32_t> toks, int64_t B, int64_t T, int64_t first,
                    std::vector<float>& out) {
    model.forward(toks, B, T, hidden);  // hidden is (B,T,C)
    const int64_t n = T - 1 - first;
    rows.resize(size_t(B * n * C));  // rows is (B,n,C): the scored positions
    for (int64_t b = 0; b < B; ++b)
      std::copy(hidden.begin() + (b * T + first) * C, hidden.begin() + (b * T + first + n) * C,
                rows.begin() + b * n * C);
    out.resize(size_t(B * n * V));
    model.logits(rows.data(), B * n, out.data());
  };
  return evaluate_ppl(windows, V, logits, opt);
}

// ---------------------------------------------------------------------------------------------------------
// The whole measurement

void validate(const ActPruneOptions& opt) {
  TL_CHECK(!opt.modes.empty(), "actprune: no mode given");
  TL_CHECK(!opt.levels.empty(), "actprune: no level given");
  for (size_t i = 0; i < opt.levels.size(); ++i) {
    const double p = opt.levels[i];
    TL_CHECK(std::isfinite(p) && p >= 0 && p < 100, "actprune: every level must be in [0, 100), found {}", p);
    TL_CHECK(i == 0 || p > opt.levels[i - 1], "actprune: levels must be increasing, found {} after {}", p,
             opt.levels[i - 1]);
  }
  TL_CHECK(opt.max_new >= 0, "actprune: --max-new must be >= 0, found {}", opt.max_new);
  TL_CHECK(std::isfinite(opt.stop_factor) && opt.stop_factor > 1,
           "actprune: the stop factor must be > 1, found {}", opt.stop_factor);
  for (const auto& p : opt.prompts) TL_CHECK(!p.empty(), "actprune: an empty generation prompt");
}

namespace {

// Invalid UTF-8 (a byte-level model can stop inside a character) becomes U+FFFD, so JSON can hold it.
std::string valid_utf8(std::string_view s) {
  std::string out;
  while (!s.empty()) {
    const size_t bad = utf8_invalid_at(s);
    if (bad == std::string_view::npos) {
      out += s;
      break;
    }
    out += s.substr(0, bad);
    out += "\xEF\xBF\xBD";
    s.remove_prefix(bad + 1);
  }
  return out;
}

// One line for a table: control characters escaped.
std::string one_line(std::string_view s) {
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n')
      out += "\\n";
    else if (u < 0x20 || u == 0x7f)
      out += fmt::format("\\x{:02x}", u);
    else
      out += c;
  }
  return out;
}

// At most n code points of valid UTF-8, with an ellipsis when cut, quoted.
std::string quoted_prefix(std::string_view s, size_t n) {
  size_t end = 0, cps = 0;
  while (end < s.size() && cps < n) {
    ++end;
    while (end < s.size() && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) ++end;
    ++cps;
  }
  std::string out = "'";
  out.append(s.substr(0, end));
  out.append(end < s.size() ? "…'" : "'");
  return out;
}

// RAII: the model's hooks are none again when the measurement ends (or throws).
struct HookReset {
  CpuModel& m;
  ~HookReset() { m.set_hooks(nullptr); }
};

}  // namespace

ActPruneResult run_actprune(CpuModel& model, const std::vector<PplWindow>& windows, const PplOptions& ppl,
                            const Tokenizer& tok, const ActPruneOptions& opt) {
  validate(opt);
  TL_CHECK(!windows.empty(), "actprune: no perplexity windows");
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t L = model.config().num_hidden_layers, V = model.config().vocab_size;
  ActPruneResult r;
  r.layers = L;
  r.hidden = model.config().hidden_size;
  r.options = opt;
  HookReset reset{model};

  std::vector<std::vector<int32_t>> prompt_ids;
  for (const auto& p : opt.prompts) {
    auto ids = tok.encode(p, true);  // the study's tokenizer(prompt): default special tokens (BOS)
    for (int32_t t : ids)
      TL_CHECK(t >= 0 && t < V, "actprune: prompt '{}' has token {} outside the model's vocabulary of {}", p,
               t, V);
    prompt_ids.push_back(std::move(ids));
  }
  auto generate_all = [&] {
    std::vector<Generation> out;
    for (size_t i = 0; i < opt.prompts.size(); ++i) {
      Generation g;
      g.prompt = opt.prompts[i];
      g.prompt_ids = prompt_ids[i];
      g.ids = greedy_generate(model, prompt_ids[i], opt.max_new, tok.eos_id());
      g.text = valid_utf8(tok.decode(g.ids, true));  // the ids keep the special tokens
      out.push_back(std::move(g));
    }
    return out;
  };

  // Baseline: no pruning; the natural-sparsity capture only observes (the forward is bit-identical).
  NaturalSparsityHook natural(L);
  model.set_hooks(opt.natural ? &natural : nullptr);
  r.baseline = hooked_perplexity(model, windows, ppl);
  log_info("actprune: baseline PPL {:.4f}", r.baseline.ppl);
  model.set_hooks(nullptr);
  if (opt.natural) r.natural = natural.average();
  r.baseline_generations = generate_all();

  for (PruneMode mode : opt.modes) {
    bool stopped = false;
    for (double level : opt.levels) {
      ActPrunePoint pt;
      pt.mode = mode;
      pt.level = level;
      if (stopped) {
        pt.skipped = true;
      } else if (level == 0) {  // level 0 is the baseline itself
        pt.ppl = r.baseline;
        pt.ppl_ratio = 1;
        pt.generations = r.baseline_generations;
      } else {
        ActPruneHook hook(mode, level, opt.seed, L);
        model.set_hooks(&hook);
        pt.ppl = hooked_perplexity(model, windows, ppl);
        hook.counting = false;  // the study counts over the PPL pass only
        pt.generations = generate_all();
        model.set_hooks(nullptr);
        pt.ppl_ratio = pt.ppl.ppl / r.baseline.ppl;
        pt.zeroed = hook.zeroed;
        pt.elements = hook.elements;
        pt.pct_zeroed = hook.elements ? 100.0 * double(hook.zeroed) / double(hook.elements) : 0.0;
        pt.pct_energy_removed = hook.energy > 0 ? 100.0 * hook.energy_removed / hook.energy : 0.0;
        // the study's loop: stop after a level whose PPL exceeds 10x the baseline (NaN counts as exceeding)
        if (opt.stop_rule && !(pt.ppl.ppl <= opt.stop_factor * r.baseline.ppl)) stopped = true;
        log_info("actprune: {} P{:g}: PPL {:.4f} ({:+.1f}%), {:.2f}% zeroed{}", prune_mode_name(mode), level,
                 pt.ppl.ppl, 100.0 * (pt.ppl_ratio - 1), pt.pct_zeroed, stopped ? " -> stop rule" : "");
      }
      r.points.push_back(std::move(pt));
    }
  }
  r.seconds = seconds_since(t0);
  return r;
}

// ---------------------------------------------------------------------------------------------------------
// Output

namespace {

nlohmann::json num(double x) {
  return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr);
}

nlohmann::json ppl_json(const PplResult& p) {
  return {{"protocol", p.protocol},
          {"ctx", p.ctx},
          {"windows", p.windows},
          {"tokens_scored", p.tokens_scored},
          {"mean_nll", num(p.mean_nll)},
          {"ppl", num(p.ppl)},
          {"ppl_stderr", num(p.ppl_stderr)},
          {"seconds", p.seconds}};
}

nlohmann::json gens_json(const std::vector<Generation>& gs) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& g : gs)
    a.push_back({{"prompt", g.prompt}, {"prompt_ids", g.prompt_ids}, {"ids", g.ids}, {"text", g.text}});
  return a;
}

}  // namespace

nlohmann::json to_json(const ActPruneResult& r) {
  std::vector<std::string> modes;
  for (auto m : r.options.modes) modes.push_back(prune_mode_name(m));
  nlohmann::json natural = nlohmann::json::array();
  for (size_t l = 0; l < r.natural.size(); ++l) {
    const auto& s = r.natural[l];
    natural.push_back({{"layer", l},
                       {"mean", s.mean},
                       {"std", s.std},
                       {"max", s.max},
                       {"pct_zero", s.pct_zero},
                       {"pct_below_001", s.pct_below[0]},
                       {"pct_below_01", s.pct_below[1]},
                       {"pct_below_05", s.pct_below[2]},
                       {"pct_below_1", s.pct_below[3]}});
  }
  nlohmann::json points = nlohmann::json::array();
  for (const auto& p : r.points) {
    nlohmann::json j = {{"mode", prune_mode_name(p.mode)}, {"level", p.level}, {"skipped", p.skipped}};
    if (!p.skipped) {
      j["ppl"] = ppl_json(p.ppl);
      j["ppl_ratio"] = num(p.ppl_ratio);
      j["zeroed"] = p.zeroed;
      j["elements"] = p.elements;
      j["pct_zeroed"] = p.pct_zeroed;
      j["pct_energy_removed"] = p.pct_energy_removed;
      j["generations"] = gens_json(p.generations);
    }
    points.push_back(std::move(j));
  }
  return {{"layers", r.layers},
          {"hidden_size", r.hidden},
          {"options",
           {{"modes", modes},
            {"levels", r.options.levels},
            {"seed", r.options.seed},
            {"prompts", r.options.prompts},
            {"max_new", r.options.max_new},
            {"stop_rule", r.options.stop_rule},
            {"stop_factor", r.options.stop_factor}}},
          {"baseline", {{"ppl", ppl_json(r.baseline)}, {"generations", gens_json(r.baseline_generations)}}},
          {"natural_sparsity", natural},
          {"points", points},
          {"seconds", r.seconds}};
}

std::string actprune_table(const ActPruneResult& r) {
  const std::string head =
      r.options.prompts.empty() ? "" : fmt::format("continuation of '{}'", one_line(r.options.prompts[0]));
  std::string s = fmt::format("{:<10} {:>6} {:>12} {:>9} {:>9} {:>9}  {}\n", "mode", "level", "PPL",
                              "vs base", "% zeroed", "% energy", head);
  auto gen = [](const std::vector<Generation>& g) {
    return g.empty() ? std::string() : quoted_prefix(one_line(g[0].text), 40);
  };
  s += fmt::format("{:<10} {:>6} {:>12.4f} {:>9} {:>9} {:>9}  {}\n", "baseline", "0", r.baseline.ppl, "-",
                   "0", "0", gen(r.baseline_generations));
  for (const auto& p : r.points) {
    const std::string lv = fmt::format("P{:g}", p.level);
    if (p.skipped) {
      s += fmt::format("{:<10} {:>6} {:>12}  (skipped: stop rule)\n", prune_mode_name(p.mode), lv, "-");
      continue;
    }
    s += fmt::format("{:<10} {:>6} {:>12.4f} {:>+8.1f}% {:>9.2f} {:>9.2f}  {}\n", prune_mode_name(p.mode), lv,
                     p.ppl.ppl, 100.0 * (p.ppl_ratio - 1), p.pct_zeroed, p.pct_energy_removed,
                     gen(p.generations));
  }
  return s;
}

std::string to_markdown(const ActPruneResult& r, const std::string& title) {
  const auto& b = r.baseline;
  std::string md = fmt::format("# {}\n\n", title);
  md += fmt::format(
      "{} layers. Perplexity: protocol `{}`, {} windows of {} tokens, {} tokens scored. Baseline PPL {:.4f} "
      "(± {:.4f}). Greedy generations: {} new tokens at most.\n\n",
      r.layers, b.protocol, b.windows, b.ctx, b.tokens_scored, b.ppl, b.ppl_stderr, r.options.max_new);
  md +=
      "| mode | level | PPL | vs baseline | % zeroed | % energy removed |\n|---|---:|---:|---:|---:|---:|\n";
  md += fmt::format("| baseline | 0 | {:.4f} | — | 0 | 0 |\n", b.ppl);
  for (const auto& p : r.points) {
    if (p.skipped) {
      md += fmt::format("| {} | P{:g} | skipped (stop rule) | | | |\n", prune_mode_name(p.mode), p.level);
      continue;
    }
    md += fmt::format("| {} | P{:g} | {:.4f} | {:+.1f}% | {:.2f} | {:.2f} |\n", prune_mode_name(p.mode),
                      p.level, p.ppl.ppl, 100.0 * (p.ppl_ratio - 1), p.pct_zeroed, p.pct_energy_removed);
  }
  auto gens = [&](const std::vector<Generation>& g) {
    std::string s;
    for (const auto& x : g)
      s += fmt::format("- {} → {}\n", quoted_prefix(one_line(x.prompt), 200),
                       quoted_prefix(one_line(x.text), 200));
    return s;
  };
  md += "\n## Generations\n\n### baseline\n\n" + gens(r.baseline_generations);
  for (const auto& p : r.points)
    if (!p.skipped && p.level > 0)
      md += fmt::format("\n### {} P{:g}\n\n", prune_mode_name(p.mode), p.level) + gens(p.generations);
  if (!r.natural.empty()) {
    md +=
        "\n## Natural sparsity of the block corrections (baseline pass; rpt-spec §6.3)\n\n"
        "Magnitudes of r = x_out - x_in per layer: statistics per sequence, averaged over sequences.\n\n"
        "| layer | mean | std | max | % == 0 | % < 0.001 | % < 0.01 | % < 0.05 | % < 0.1 |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (size_t l = 0; l < r.natural.size(); ++l) {
      const auto& s = r.natural[l];
      md += fmt::format("| {} | {:.4g} | {:.4g} | {:.4g} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |\n", l,
                        s.mean, s.std, s.max, s.pct_zero, s.pct_below[0], s.pct_below[1], s.pct_below[2],
                        s.pct_below[3]);
    }
  }
  return md;
}

}  // namespace tl
