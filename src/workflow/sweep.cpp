#include "workflow/sweep.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/file.hpp"
#include "core/half.hpp"
#include "core/log.hpp"
#include "core/parse.hpp"
#include "formats/checkpoint.hpp"
#include "model/stats.hpp"
#include "report/svg.hpp"

namespace tl {

namespace {

using Clock = std::chrono::steady_clock;

bool is_magnitude(PruneMethod m) {
  return m == PruneMethod::Seed || m == PruneMethod::Global || m == PruneMethod::PerTensor;
}

// The items of a list flag; an empty list or an empty item is an error.
std::vector<std::string> nonempty_items(std::string_view s, std::string_view what) {
  std::vector<std::string> out = split_list(s);
  TL_CHECK(!out.empty(), "sweep: empty entry in the {} list '{}'", what, s);
  for (const auto& item : out) TL_CHECK(!item.empty(), "sweep: empty entry in the {} list '{}'", what, s);
  return out;
}

std::string method_label(const SweepPoint& p) {
  std::string s(prune_method_name(p.method));
  if (p.match) s += fmt::format(" (~{})", prune_method_name(*p.match));
  return s;
}

std::string pct(double v) {
  return fmt::format("{:g}%", v);
}

}  // namespace

std::vector<double> parse_sweep_levels(std::string_view s) {
  std::vector<double> levels;
  for (const auto& item : nonempty_items(s, "level")) {
    const auto parsed = parse_double(item);
    TL_CHECK(parsed.has_value(), "sweep: level '{}' is not a number", item);
    const double v = *parsed;
    TL_CHECK(v >= 0 && v < 100, "sweep: level {} is outside [0, 100)", item);
    TL_CHECK(std::find(levels.begin(), levels.end(), v) == levels.end(), "sweep: level {} is given twice",
             item);
    levels.push_back(v);
  }
  return levels;
}

std::vector<PruneMethod> parse_sweep_methods(std::string_view s) {
  std::vector<PruneMethod> methods;
  for (const auto& item : nonempty_items(s, "method")) {
    const PruneMethod m = parse_prune_method(item);
    TL_CHECK(m != PruneMethod::NM, "sweep: method nm has no sparsity level to sweep (use ternlab prune)");
    TL_CHECK(std::find(methods.begin(), methods.end(), m) == methods.end(), "sweep: method {} is given twice",
             item);
    methods.push_back(m);
  }
  return methods;
}

const SweepPoint& SweepResult::at(PruneMethod m, double level) const {
  for (const auto& p : points)
    if (p.method == m && p.target == level) return p;
  fail("sweep: no point for method {} at {}%", prune_method_name(m), level);
}

namespace {

// The original parameters, restored before every level: as bf16 when every value is one (a bf16 checkpoint:
// exact in half the memory, 4.8 GB instead of 9.7 GB at 2B-4T), else as fp32.
class ParamBackup {
 public:
  explicit ParamBackup(const std::vector<float>& p) {
    bool all_bf16 = true;
    for (float x : p)
      if (bf16_to_f32(f32_to_bf16(x)) != x) {
        all_bf16 = false;
        break;
      }
    if (all_bf16) {
      bf16_.resize(p.size());
      for (size_t i = 0; i < p.size(); ++i) bf16_[i] = f32_to_bf16(p[i]);
    } else {
      f32_ = p;
    }
  }
  void restore(std::vector<float>& p) const {
    if (!f32_.empty() || bf16_.empty()) {
      p = f32_;
      return;
    }
    p.resize(bf16_.size());
    for (size_t i = 0; i < p.size(); ++i) p[i] = bf16_to_f32(bf16_[i]);
  }

 private:
  std::vector<uint16_t> bf16_;
  std::vector<float> f32_;
};

}  // namespace

SweepResult run_sweep(const SweepOptions& opt) {
  TL_CHECK(!opt.methods.empty(), "sweep: no methods given");
  TL_CHECK(!opt.levels.empty(), "sweep: no levels given");
  for (size_t i = 0; i < opt.methods.size(); ++i) {
    TL_CHECK(opt.methods[i] != PruneMethod::NM, "sweep: method nm has no sparsity level to sweep");
    for (size_t j = 0; j < i; ++j)
      TL_CHECK(opt.methods[i] != opt.methods[j], "sweep: method {} is given twice",
               prune_method_name(opt.methods[i]));
  }
  for (size_t i = 0; i < opt.levels.size(); ++i) {
    TL_CHECK(std::isfinite(opt.levels[i]) && opt.levels[i] >= 0 && opt.levels[i] < 100,
             "sweep: level {} is outside [0, 100)", opt.levels[i]);
    for (size_t j = 0; j < i; ++j)
      TL_CHECK(opt.levels[i] != opt.levels[j], "sweep: level {} is given twice", opt.levels[i]);
  }

  SweepResult r;
  r.options = opt;
  if (std::find(opt.methods.begin(), opt.methods.end(), PruneMethod::Random) != opt.methods.end()) {
    if (opt.random_match == "auto") {
      for (const auto m : opt.methods)
        if (is_magnitude(m)) {
          r.random_match = m;
          break;
        }
    } else if (opt.random_match != "none") {
      const PruneMethod m = parse_prune_method(opt.random_match);
      TL_CHECK(is_magnitude(m), "sweep: random can only be matched to seed, global or per-tensor, not {}",
               opt.random_match);
      r.random_match = m;
    }
  }

  const auto t_all = Clock::now();
  // One model in memory, pruned in place and restored from a compact backup before every level (a second
  // fp32 copy would not fit a 2B model in 24 GB beside the CPU forward's codes).
  Model work = load_checkpoint(opt.eval.checkpoint);
  auto options_for = [&](PruneMethod m, double level) {
    PruneOptions o;
    o.method = m;
    o.sparsity = level;
    o.level = opt.level;
    o.seed = opt.seed;
    if (m == PruneMethod::Random) o.match = r.random_match;
    return o;
  };
  // Fail on bad combinations before the (long) evaluations, not at the first pruned point.
  const double top = *std::max_element(opt.levels.begin(), opt.levels.end());
  for (const auto m : opt.methods) validate_prune_options(options_for(m, top), work);

  const PplData data = prepare_perplexity(opt.eval, work);
  r.eval = data.run;

  {  // Level 0 is the unpruned model: scored once, shared by every method.
    const auto t0 = Clock::now();
    const ModelSummary s = summarize(tensor_stats(work));
    r.baseline.baseline = true;
    r.baseline.latent_sparsity = s.latent_zero_frac;
    r.baseline.code_zero = s.code_zero;
    r.baseline.pruned_per_tensor.assign(prune_targets(work).size(), 0);
    r.baseline.ppl = evaluate_perplexity(work, data);
    r.baseline.seconds = seconds_since(t0);
    r.eval.result = r.baseline.ppl;
    log_info("sweep: baseline PPL {:.4f} (latent sparsity {:.4f}%)", r.baseline.ppl.ppl,
             100 * r.baseline.latent_sparsity);
  }

  const ParamBackup backup(work.params);
  const auto original_fixed_scale = work.fixed_scale;
  for (const auto m : opt.methods) {
    for (const double level : opt.levels) {
      if (level == 0) {
        SweepPoint p = r.baseline;
        p.method = m;
        r.points.push_back(std::move(p));
        continue;
      }
      const auto t0 = Clock::now();
      // Every level starts from the original weights.
      backup.restore(work.params);
      work.fixed_scale = original_fixed_scale;
      const PruneOptions o = options_for(m, level);
      const PruneResult pr = prune_model(work, o);
      SweepPoint p;
      p.method = m;
      p.match = o.match;
      p.target = level;
      p.latent_sparsity = pr.report.latent_sparsity_after;
      p.code_zero = pr.report.code_zero_after;
      p.pruned = pr.report.pruned;
      p.codes_changed = pr.report.codes_changed;
      p.scale_rel_change_mean = pr.report.scale_rel_change_mean;
      p.threshold = pr.report.threshold;
      for (const auto& t : pr.report.tensors) p.pruned_per_tensor.push_back(t.pruned);
      p.ppl = evaluate_perplexity(work, data);
      p.seconds = seconds_since(t0);
      log_info("sweep: {} {}%: latent sparsity {:.4f}%, PPL {:.4f} ({:.1f} s)", method_label(p), level,
               100 * p.latent_sparsity, p.ppl.ppl, p.seconds);
      r.points.push_back(std::move(p));
    }
  }
  r.seconds = seconds_since(t_all);
  return r;
}

nlohmann::json to_json(const SweepPoint& p) {
  nlohmann::json j = {{"method", prune_method_name(p.method)},
                      {"target", p.target},
                      {"baseline", p.baseline},
                      {"latent_sparsity", p.latent_sparsity},
                      {"code_zero", p.code_zero},
                      {"pruned", p.pruned},
                      {"codes_changed", p.codes_changed},
                      {"scale_rel_change_mean", p.scale_rel_change_mean},
                      {"pruned_per_tensor", p.pruned_per_tensor},
                      {"ppl", p.ppl.ppl},
                      {"ppl_stderr", p.ppl.ppl_stderr},
                      {"mean_nll", p.ppl.mean_nll},
                      {"nll_stderr", p.ppl.nll_stderr},
                      {"tokens_scored", p.ppl.tokens_scored},
                      {"seconds", p.seconds}};
  j["match"] = p.match ? nlohmann::json(prune_method_name(*p.match)) : nlohmann::json(nullptr);
  j["threshold"] = p.threshold ? nlohmann::json(*p.threshold) : nlohmann::json(nullptr);
  return j;
}

nlohmann::json to_json(const SweepResult& r) {
  const auto& e = r.eval;
  nlohmann::json methods = nlohmann::json::array();
  for (const auto m : r.options.methods) methods.push_back(prune_method_name(m));
  nlohmann::json points = nlohmann::json::array();
  for (const auto& p : r.points) points.push_back(to_json(p));
  nlohmann::json baseline = to_json(r.baseline);
  baseline["method"] = nullptr;  // the unpruned model belongs to no method
  return {{"checkpoint", e.checkpoint},
          {"protocol", e.result.protocol},
          {"ctx", e.result.ctx},
          {"windows", e.result.windows},
          {"tokens_scored", e.result.tokens_scored},
          {"corpus", e.corpus},
          {"split", e.split},
          {"input", e.input},
          {"preparation", e.preparation},
          {"corpus_tokens", e.corpus_tokens},
          {"threads", e.threads},
          {"prune_level", prune_level_name(r.options.level)},
          {"seed", r.options.seed},
          {"levels", r.options.levels},
          {"methods", methods},
          {"random_match",
           r.random_match ? nlohmann::json(prune_method_name(*r.random_match)) : nlohmann::json(nullptr)},
          {"independent_levels", true},
          {"baseline", baseline},
          {"points", points},
          {"seconds", r.seconds}};
}

namespace {

std::string random_note(const SweepResult& r) {
  if (std::find(r.options.methods.begin(), r.options.methods.end(), PruneMethod::Random) ==
      r.options.methods.end())
    return {};
  if (r.random_match)
    return fmt::format(
        "random is the control, matched to {}: at each level it prunes as many weights per tensor as {} "
        "does, chosen uniformly at random",
        prune_method_name(*r.random_match), prune_method_name(*r.random_match));
  return "random is the control, unmatched: each tensor loses the target percent of its candidates at random";
}

// "random (~seed)" when random is matched, else the method's name.
std::string column_name(const SweepResult& r, PruneMethod m) {
  std::string name(prune_method_name(m));
  if (m == PruneMethod::Random && r.random_match)
    name += fmt::format(" (~{})", prune_method_name(*r.random_match));
  return name;
}

std::string header_line(const SweepResult& r) {
  const auto& e = r.eval;
  return fmt::format("{} protocol (ctx {}, {} windows, {} tokens scored), corpus {}{}; {} level, seed {}",
                     e.result.protocol, e.result.ctx, e.result.windows, e.result.tokens_scored, e.corpus,
                     e.split.empty() ? "" : " / " + e.split, prune_level_name(r.options.level),
                     r.options.seed);
}

// Rows of the table: the given levels in ascending order.
std::vector<double> sorted_levels(const SweepResult& r) {
  std::vector<double> l = r.options.levels;
  std::sort(l.begin(), l.end());
  return l;
}

}  // namespace

std::string sweep_table(const SweepResult& r) {
  std::string o = fmt::format("sweep of {}\n  {}\n", r.eval.checkpoint, header_line(r));
  if (auto n = random_note(r); !n.empty()) o += "  " + n + "\n";
  o += fmt::format("  baseline PPL {:.4f} ± {:.4f}, latent sparsity {:.4f}%\n", r.baseline.ppl.ppl,
                   r.baseline.ppl.ppl_stderr, 100 * r.baseline.latent_sparsity);
  o += fmt::format("  {:>7}", "target");
  for (const auto m : r.options.methods) {
    o += fmt::format("  {:>22}", column_name(r, m));
  }
  o += fmt::format("\n  {:>7}", "");
  for (size_t i = 0; i < r.options.methods.size(); ++i) o += fmt::format("  {:>12} {:>9}", "PPL", "sparsity");
  o += "\n";
  for (const double l : sorted_levels(r)) {
    o += fmt::format("  {:>7}", pct(l));
    for (const auto m : r.options.methods) {
      const auto& p = r.at(m, l);
      o += fmt::format("  {:>12.4f} {:>8.3f}%", p.ppl.ppl, 100 * p.latent_sparsity);
    }
    o += "\n";
  }
  return o;
}

std::string sweep_markdown(const SweepResult& r) {
  std::string o = fmt::format("# Pruning sweep of `{}`\n\n{}.\n", r.eval.checkpoint, header_line(r));
  o += "Every level is pruned from the original weights; level 0 is the unpruned model.\n";
  if (auto n = random_note(r); !n.empty()) o += n + ".\n";
  o += "\n| target |";
  std::string rule = "\n|---:|";
  for (const auto m : r.options.methods) {
    o += fmt::format(" {0} PPL | {0} sparsity |", column_name(r, m));
    rule += "---:|---:|";
  }
  o += rule + "\n";
  for (const double l : sorted_levels(r)) {
    o += fmt::format("| {} |", pct(l));
    for (const auto m : r.options.methods) {
      const auto& p = r.at(m, l);
      o += fmt::format(" {:.4f} ± {:.4f} | {:.3f}% |", p.ppl.ppl, p.ppl.ppl_stderr, 100 * p.latent_sparsity);
    }
    o += "\n";
  }
  const double base = r.baseline.ppl.ppl;
  o += fmt::format("\nBest level per method (baseline PPL {:.4f}):\n\n", base);
  for (const auto m : r.options.methods) {
    const SweepPoint* best = nullptr;
    const SweepPoint* usable = nullptr;  // the study's "best usable": highest level with PPL < 1.5x baseline
    for (const double l : sorted_levels(r)) {
      const auto& p = r.at(m, l);
      if (!best || p.ppl.ppl < best->ppl.ppl) best = &p;
      if (p.ppl.ppl < 1.5 * base) usable = &p;
    }
    o += fmt::format("- **{}**: lowest PPL {:.4f} at {} (realised sparsity {:.3f}%, {:+.1f}% vs baseline)",
                     prune_method_name(m), best->ppl.ppl, pct(best->target), 100 * best->latent_sparsity,
                     100 * (best->ppl.ppl / base - 1));
    if (usable)
      o += fmt::format("; highest level with PPL < 1.5× baseline: {}", pct(usable->target));
    else
      o += "; no level has PPL < 1.5× baseline";
    o += ".\n";
  }
  return o;
}

std::string sweep_svg(const SweepResult& r) {
  std::vector<Series> series;
  for (const auto m : r.options.methods) {
    Series s;
    s.name = column_name(r, m);
    std::vector<const SweepPoint*> pts;
    for (const double l : r.options.levels) pts.push_back(&r.at(m, l));
    std::stable_sort(pts.begin(), pts.end(),
                     [](auto* a, auto* b) { return a->latent_sparsity < b->latent_sparsity; });
    for (const auto* p : pts) {
      s.x.push_back(100 * p->latent_sparsity);
      s.y.push_back(p->ppl.ppl);
    }
    series.push_back(std::move(s));
  }
  PlotOptions po;
  po.title = fmt::format("PPL vs sparsity: {} ({} protocol, {}{})", r.eval.checkpoint, r.eval.result.protocol,
                         r.eval.corpus, r.eval.split.empty() ? "" : " / " + r.eval.split);
  po.x_label = "realised latent sparsity of the ternary linears (%)";
  po.y_label = "perplexity";
  po.log_y = true;
  po.hline = r.baseline.ppl.ppl;
  po.hline_label = "baseline";
  return line_plot_svg(series, po);
}

void write_sweep_outputs(const SweepResult& r, const std::filesystem::path& out_dir) {
  std::filesystem::create_directories(out_dir);
  // Render everything first so a plotting error leaves no partial set of files.
  const std::string json = to_json(r).dump(2) + "\n", md = sweep_markdown(r), svg = sweep_svg(r);
  write_file_atomic(out_dir / "sweep.json", json);
  write_file_atomic(out_dir / "sweep.md", md);
  write_file_atomic(out_dir / "sweep.svg", svg);
}

}  // namespace tl
