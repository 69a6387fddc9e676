// The study's units of work. Each returns a record of plain numbers (scores per window, counts, texts):
// everything the aggregation needs, nothing that depends on the clock.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>

#include "analysis/actprune.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "core/log.hpp"
#include "cpu/forward.hpp"
#include "formats/checkpoint.hpp"
#include "formats/export.hpp"
#include "formats/import.hpp"
#include "infer/loader.hpp"
#include "infer/text_generation.hpp"
#include "model/stats.hpp"
#include "study/internal.hpp"
#include "study/protocol_a.hpp"
#include "train/snap.hpp"
#include "workflow/criticality.hpp"
#include "workflow/train.hpp"

namespace tl::study {

namespace {

using nlohmann::json;
using train::WeightQuantMode;

// "c2/prune/s1/L0" -> {"c2", "prune", "s1", "L0"}
std::vector<std::string> parts_of(const std::string& id) {
  std::vector<std::string> out;
  size_t a = 0;
  while (true) {
    const size_t b = id.find('/', a);
    out.push_back(id.substr(a, b == std::string::npos ? std::string::npos : b - a));
    if (b == std::string::npos) break;
    a = b + 1;
  }
  return out;
}

int64_t index_after(const std::string& s, char prefix) {  // "s2" -> 2, "L1" -> 1
  TL_CHECK(!s.empty() && s[0] == prefix, "study: bad run id part '{}'", s);
  return std::stoll(s.substr(1));
}

json prune_summary(const PruneReport& r) {
  return {{"threshold", r.threshold ? json(*r.threshold) : json(nullptr)},
          {"pruned", r.pruned},
          {"pruned_code_nonzero", r.pruned_code_nonzero},
          {"codes_changed", r.codes_changed},
          {"numel", r.numel},
          {"pruned_frac_of_candidates", r.pruned_frac_of_candidates},
          {"latent_sparsity_before", r.latent_sparsity_before},
          {"latent_sparsity_after", r.latent_sparsity_after},
          {"code_zero_before", r.code_zero_before},
          {"code_zero_after", r.code_zero_after},
          {"scale_rel_change_mean", r.scale_rel_change_mean}};
}

// Zero ternary codes / linear weights under the model's own quantizer (absmean, or its fixed scales).
double code_zero_fraction(const Model& m) {
  return summarize(tensor_stats(m)).code_zero;
}

json losses_json(const TrainRunRecord& rec) {
  json l = json::array();
  for (const auto& s : rec.steps) l.push_back(s.loss);
  return l;
}

TrainRunOptions train_options(const Context& ctx, int64_t steps, int64_t batch, WeightQuantMode mode,
                              uint64_t seed) {
  TrainRunOptions t;
  t.device = ctx.opt.device;
  t.recompute = ctx.opt.recompute;
  auto& c = t.train;
  c.steps = steps;
  c.batch = batch;
  c.seq_len = ctx.budget.seq_len;
  c.adamw.lr = ctx.budget.lr;  // AdamW(lr, weight_decay 0.01), betas (0.9, 0.999), eps 1e-8 (rpt-spec §4.2)
  c.adamw.weight_decay = 0.01;
  c.warmup = 0;  // CosineAnnealingLR(T_max = steps), eta_min 0
  c.min_lr = 0;
  c.clip = 1.0;
  c.precision = ctx.opt.precision;
  c.quant.weight_quant = mode;
  c.seed = seed;
  return t;
}

// ---------------------------------------------------------------------------------------------------------

json run_baseline(Context& ctx) {
  return {{"scores", score(ctx, ctx.base, all_sets(ctx))},
          {"code_zero", code_zero_fraction(ctx.base)},
          {"latent_sparsity", latent_sparsity(ctx.base)},
          {"params", ctx.base.num_params()},
          {"linear_params", ctx.base.num_linear_params()}};
}

// c1/<method>/<level>/s<k>: one raw-pruning point, pruned from the original weights (rpt-spec §3.4).
json run_c1(Context& ctx, const std::vector<std::string>& p) {
  const PruneMethod method = parse_prune_method(p[1]);
  const double level = std::stod(p[2]);
  const int64_t k = index_after(p[3], 's');
  Model m = ctx.base;
  PruneOptions po;
  po.method = method;
  po.sparsity = level;
  // One sample per seed for every level (the study sampled afresh each level, unseeded); the random
  // control takes the study method's per-tensor counts under the same seed.
  po.seed = derived_seed(ctx, fmt::format("c1/prune/s{}", k));
  if (method == PruneMethod::Random) po.match = PruneMethod::Seed;
  const PruneResult pr = prune_model(m, po);
  return {{"method", p[1]},
          {"level", level},
          {"seed_index", k},
          {"prune", prune_summary(pr.report)},
          {"scores", score(ctx, m, {kSetA, kSetPrimary})}};
}

// The trained model as training's forward saw it (rpt-fixed: code · s · (1 - z)), and as the study evaluated
// it after each level: transformers' online quantizer on the continuous latents (absmean over all entries).
Model training_view(const Model& m) {
  Model s = m;
  train::snap_model(s, WeightQuantMode::RptFixed);
  return s;
}
Model study_view(const Model& m) {
  Model s = m;
  s.fixed_scale.clear();
  return s;
}

// One level of a progressive chain (C2, C3): the chain's last state (the model at level 0), its pruning of
// the current weights (none for a control) with masks that keep every zero at zero, a fine-tune (rpt-spec
// §4.2: fresh AdamW and cosine per level, clipping 1.0), the state saved for the next level. `scores` records
// the model before (after = false) and after the fine-tune.
struct Level {
  std::string claim, arm;  // "c2" / "c3"; the arm
  int64_t seed_index = 0, index = 0;
  double target = 0;                  // percent of the current non-zero latents
  std::optional<PruneMethod> method;  // none: the 0% control
  WeightQuantMode mode = WeightQuantMode::Absmean;
  int64_t steps = 0, batch = 0;
  std::function<json(const Model&, bool after)> scores;
};

// The level a run id names: <claim>/<arm>/s<k>/L<i>.
Level level_of(const std::vector<std::string>& p) {
  Level l;
  l.claim = p[0];
  l.arm = p[1];
  l.seed_index = index_after(p[2], 's');
  l.index = index_after(p[3], 'L');
  return l;
}

json run_level(Context& ctx, const Level& l) {
  const std::string chain = fmt::format("{}-{}-s{}", l.claim, l.arm, l.seed_index);
  Model m = l.index == 0 ? ctx.base : load_state(state_dir(ctx, chain, size_t(l.index - 1)));
  if (l.index == 0) capture_fixed_scales(m, l.mode);  // rpt-fixed: s_orig, before any pruning (§5.2 step 3)
  json rec = {{"arm", l.arm},
              {"level_index", l.index},
              {"target", l.method ? l.target : 0.0},
              {"seed_index", l.seed_index}};
  std::vector<TensorMask> masks;
  if (l.method) {
    PruneOptions po;
    po.method = *l.method;
    po.sparsity = l.target;
    po.seed = derived_seed(ctx, fmt::format("{}/prune/s{}/L{}", l.claim, l.seed_index, l.index));
    if (po.method == PruneMethod::Random) po.match = PruneMethod::Seed;  // the study method's counts
    rec["prune"] = prune_summary(prune_model(m, po).report);
    masks = masks_of_zeros(m);  // this level's zeros and the earlier levels' stay zero
  }
  rec["before"] = l.scores(m, false);
  // The arms of one seed share their batches: the data seed names the claim, seed and level, not the arm.
  const TrainRunOptions t =
      train_options(ctx, l.steps, l.batch, l.mode,
                    derived_seed(ctx, fmt::format("{}/data/s{}/L{}", l.claim, l.seed_index, l.index)));
  const TrainRunRecord tr =
      train_in_memory(m, t, ctx.train_tokens, std::move(masks), fmt::format("{} L{}", chain, l.index));
  log_info("study: {} L{}: {} steps × {} × {} tokens at {:.0f} tokens/s", chain, l.index, l.steps, l.batch,
           ctx.budget.seq_len, tr.tokens_per_s);  // the log, not the record: the clock is not a result
  rec["losses"] = losses_json(tr);
  rec["final_loss"] = tr.final_loss;
  rec["latent_sparsity"] = latent_sparsity(m);
  rec["after"] = l.scores(m, true);
  if (l.mode == WeightQuantMode::Absmean) rec["code_zero"] = code_zero_fraction(m);
  save_state(m, state_dir(ctx, chain, size_t(l.index)));
  return rec;
}

// c2/<arm>/s<k>/L<i>: prune = the study's sampled threshold; random = as many weights per tensor at random;
// control = no pruning. The fine-tune is the absmean STE of transformers' online quantizer.
json run_c2(Context& ctx, const std::vector<std::string>& p) {
  Level l = level_of(p);
  l.target = ctx.budget.c2_levels.at(size_t(l.index));
  if (l.arm != "control") l.method = l.arm == "prune" ? PruneMethod::Seed : PruneMethod::Random;
  l.steps = ctx.budget.c2_steps;
  l.batch = ctx.budget.c2_batch;
  l.scores = [&ctx](const Model& m, bool after) {
    return after ? score(ctx, m, all_sets(ctx)) : score(ctx, m, {kSetPrimary});
  };
  return run_level(ctx, l);
}

// c3/<arm>/s<k>/L<i>: a level of the deploy recipe (rpt-spec §5.2-§5.3): the study's sampled threshold on the
// current weights and the rpt-fixed STE (deploy), or the same at 0% (control); scored in both views.
json run_c3_level(Context& ctx, const std::vector<std::string>& p) {
  Level l = level_of(p);
  l.target = ctx.budget.c3_levels.at(size_t(l.index));
  if (l.arm == "deploy") l.method = PruneMethod::Seed;
  l.mode = WeightQuantMode::RptFixed;
  l.steps = ctx.budget.c3_steps;
  l.batch = ctx.budget.c3_batch;
  l.scores = [&ctx](const Model& m, bool) {
    return json{{"training", score(ctx, training_view(m), {kSetPrimary})},
                {"study", score(ctx, study_view(m), {kSetPrimary})}};
  };
  return run_level(ctx, l);
}

// Greedy generations of the study's prompts from a GGUF file on the fast engine.
json gguf_generations(const Context& ctx, const fs::path& gguf) {
  LoadOptions lo;
  lo.backend = "engine";
  const LoadedModel lm = load_language_model(gguf, lo);
  SamplingParams sp;
  sp.temperature = 0;  // greedy, as the study's generate(do_sample=False)
  sp.max_tokens = ctx.budget.gen_tokens;
  sp.stop_ids = lm.stop_ids;
  json out = json::array();
  for (const auto& prompt : study_test_prompts()) {
    const auto ids = lm.tokenizer.encode(prompt, true);  // tokenizer(prompt): default special tokens
    const GenerationResult g = generate_text(*lm.lm, lm.tokenizer, ids, sp);
    out.push_back({{"prompt", prompt}, {"text", g.text}, {"tokens", g.tokens}});
  }
  return out;
}

// c3/<arm>/s<k>/snap: the snap (rpt-spec §5.5) with one quantizer, verified; the packed export reloaded;
// GGUF I2_S and TQ2_0 exported, imported and scored; the study's Fix-8 scales (s_orig, not s_orig·(1 - z))
// scored; greedy generations from the I2_S file.
json run_c3_snap(Context& ctx, const std::vector<std::string>& p) {
  const std::string& arm = p[1];
  const int64_t k = index_after(p[2], 's');
  const std::string chain = fmt::format("c3-{}-s{}", arm, k);
  const size_t last = ctx.budget.c3_levels.size() - 1;
  Model m = load_state(state_dir(ctx, chain, last));
  const std::vector<TensorMask> masks = arm == "deploy" ? masks_of_zeros(m) : std::vector<TensorMask>{};
  const std::unordered_map<std::string, float> s_orig = m.fixed_scale;  // the codes' scale, before (1 - z)
  const train::SnapReport snap = train::snap_model(m, WeightQuantMode::RptFixed, masks);
  const double ternary = train::verify_ternary(m, masks);
  json rec = {{"arm", arm},
              {"seed_index", k},
              {"snap",
               {{"changed", snap.changed},
                {"masked_nonzero", snap.masked_nonzero},
                {"numel", snap.numel},
                {"zeros", snap.zeros},
                {"code_sparsity", snap.code_sparsity},
                {"ternary_fraction", ternary}}}};
  rec["scores"] = score(ctx, m, all_sets(ctx));

  const fs::path art = ctx.dir / "artifacts" / chain;
  fs::create_directories(art);
  // Packed layout with f32 scales (bf16 would round α): the reload must hold the same codes and scales.
  const fs::path packed = art / "packed";
  save_checkpoint(m, packed, SaveOptions{CheckpointLayout::Packed, DType::F32, 0, false});
  write_file_atomic(packed / "tokenizer.json",
                    read_file(resolve_tokenizer_path(ctx.opt.model, ctx.opt.tokenizer)));
  const Model reloaded = load_checkpoint(packed);
  rec["reload"] = {{"scores", score(ctx, reloaded, {kSetPrimary})}};

  json gguf = json::object();
  for (const ExportKind kind : {ExportKind::I2_S, ExportKind::TQ2_0}) {
    const std::string name = export_kind_name(kind);
    const fs::path path = art / fmt::format("model-{}.gguf", name);
    ExportOptions eo;
    eo.kind = kind;
    eo.name = "ternlab-study";
    try {
      const ExportReport er = export_gguf(m, *ctx.tok, "", eo, path);
      const GgufModel g = import_gguf(path);
      gguf[name] = {
          {"bytes", er.bytes}, {"zero_codes", er.zero_codes}, {"scores", score(ctx, g.model, {kSetPrimary})}};
      if (kind == ExportKind::I2_S) rec["generations"] = gguf_generations(ctx, path);
    } catch (const Error& e) {  // e.g. TQ2_0 needs rows of 256: recorded, not hidden
      gguf[name] = {{"refused", e.what()}};
    }
  }
  rec["gguf"] = gguf;
  // Fix 8 of the study's converter: I2_S holds scale = max|w| = s_orig, not the s_orig·(1 - z) it evaluated.
  Model fix8 = m;
  for (auto& [name, s] : fix8.fixed_scale) s = s_orig.at(name);
  rec["fix8"] = {{"scores", score(ctx, fix8, {kSetPrimary})}};
  if (k != 0) fs::remove_all(art);  // seed 0's files are kept for inspection; the others only scored
  return rec;
}

// c4: the criticality measurements on the model and its null models, the study's analysis texts.
json run_c4(Context& ctx) {
  const EvalSet& primary = ctx.sets.at(kSetPrimary);
  const CorpusSpec& sp = primary.spec;
  const int64_t max_tokens = std::min<int64_t>(256, ctx.base.config.max_position_embeddings);
  const auto texts =
      analysis_token_texts(*ctx.tok, std::string(corpus_kind_name(sp.kind)), sp.input,
                           std::string(split_name(sp.split)), ctx.budget.crit_texts, 500, max_tokens);
  CriticalityOptions opt;
  opt.eps = ctx.budget.crit_eps;
  opt.ftle_eps = ctx.budget.ftle_eps;
  opt.seeds = ctx.opt.seeds;
  opt.seed = derived_seed(ctx, "c4/noise");
  opt.study_eps = 0.01;
  opt.bootstrap = 1000;
  Model m = ctx.base;  // the controls are made in place
  const std::vector<std::string> controls = {"shuffled", "random-init"};
  const CriticalityReport rep =
      run_criticality_on(m, texts, opt, controls, derived_seed(ctx, "c4/controls"), ctx.opt.device);
  auto endpoints = [](const CriticalityResult& r) {
    json e = json::array();
    for (const auto& s : r.sweep)
      e.push_back({{"eps", s.eps}, {"first", s.delta_first}, {"last", s.delta_last}});
    return e;
  };
  json rec = to_json(rep);
  // wall times are not results: the same study must give the same record
  rec.erase("seconds");
  for (auto& [name, c] : rec["controls"].items()) c.erase("seconds");
  rec["texts"] = texts.size();
  rec["endpoints"] = {{"model", endpoints(rep.model)}};
  for (const auto& [name, r] : rep.controls) rec["endpoints"][name] = endpoints(r);
  return rec;
}

// c5/s<k>: activation pruning (seed 0: every mode; other seeds: the random mask only, the one stochastic
// mode).
json run_c5(Context& ctx, const std::vector<std::string>& p) {
  const int64_t k = index_after(p[1], 's');
  ActPruneOptions o;
  o.modes = k == 0 ? std::vector<PruneMode>{PruneMode::Study, PruneMode::PerToken, PruneMode::Random}
                   : std::vector<PruneMode>{PruneMode::Random};
  o.levels = ctx.budget.act_levels;
  o.seed = derived_seed(ctx, fmt::format("c5/s{}", k));
  o.stop_rule = false;  // every level of every mode, so each verdict has its points
  o.natural = k == 0;
  o.max_new = 25;
  const PplData& data = ctx.sets.at(kSetPrimary).parts.at(0);
  std::vector<PplWindow> windows(
      data.windows.begin(),
      data.windows.begin() + std::min<int64_t>(ctx.budget.act_windows, int64_t(data.windows.size())));
  CpuModel cpu(ctx.base);
  const ActPruneResult r = run_actprune(cpu, windows, data.ppl, *ctx.tok, o);
  auto scores = [](const PplResult& x) {
    json t = json::array();
    for (size_t w = 0; w < x.window_nll.size(); ++w) t.push_back(double(x.tokens_scored / x.windows));
    return json{{"nll", x.window_nll}, {"tokens", t}};
  };
  auto gens = [](const std::vector<Generation>& g) {
    json a = json::array();
    for (const auto& x : g) a.push_back({{"prompt", x.prompt}, {"text", x.text}});
    return a;
  };
  json rec = {{"seed_index", k},
              {"baseline", scores(r.baseline)},
              {"baseline_generations", gens(r.baseline_generations)}};
  json pts = json::array();
  for (const auto& pt : r.points)
    pts.push_back({{"mode", prune_mode_name(pt.mode)},
                   {"level", pt.level},
                   {"scores", scores(pt.ppl)},
                   {"pct_zeroed", pt.pct_zeroed},
                   {"pct_energy_removed", pt.pct_energy_removed},
                   {"generations", gens(pt.generations)}});
  rec["points"] = pts;
  if (k == 0) {
    json nat = json::array();
    for (const auto& l : r.natural)
      nat.push_back({{"mean", l.mean}, {"max", l.max}, {"pct_zero", l.pct_zero}});
    rec["natural"] = nat;
  }
  return rec;
}

}  // namespace

json execute_run(Context& ctx, const PlannedRun& run) {
  const auto p = parts_of(run.id);
  if (run.id == "base") return run_baseline(ctx);
  if (p[0] == "c1") return run_c1(ctx, p);
  if (p[0] == "c2") return run_c2(ctx, p);
  if (p[0] == "c3") return p.back() == "snap" ? run_c3_snap(ctx, p) : run_c3_level(ctx, p);
  if (p[0] == "c4") return run_c4(ctx);
  if (p[0] == "c5") return run_c5(ctx, p);
  fail("study: unknown run '{}'", run.id);
}

}  // namespace tl::study
