// From run records to results.json: arms over seeds, paired effects, verdicts (docs/study.md).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.hpp"
#include "study/internal.hpp"
#include "study/stats.hpp"

namespace tl::study {

namespace {

using nlohmann::json;

// The study's published numbers (rpt-spec §3.5, §4.3, §5.8, §6.5, §7.4).
constexpr double kStudyC1A = 6.94 / 9.39;     // Protocol A, 10%, no fine-tune
constexpr double kStudyC1B = 24.90 / 25.10;   // WikiText, the progressive run's first prune (5%), before FT
constexpr double kStudyC3 = 16.39 / 25.13;    // deploy: snapped, 42.6% sparsity
constexpr double kStudySnap = 16.39 / 33.07;  // "the snap improves"
constexpr double kStudyC5 = 40.26 / 25.09;    // P50 activation pruning
// NB-PROG after fine-tuning, by target level (baseline 25.10).
double study_c2_ratio(double level) {
  static const std::pair<double, double> t[] = {{5, 15.05},  {10, 14.97}, {15, 15.36}, {20, 15.46},
                                                {25, 16.09}, {30, 16.46}, {40, 17.73}, {50, 20.23}};
  for (const auto& [l, p] : t)
    if (l == level) return p / 25.10;
  return NAN;
}

json num(double x) {
  return std::isfinite(x) ? json(x) : json(nullptr);
}

struct Agg {
  const json& config;
  const std::map<std::string, json>& runs;
  int seeds = 1;
  int resamples = 2000;
  uint64_t base_seed = 0;
  double delta = 0.01;
  std::string primary;
  std::vector<std::string> corpora;  // every corpus set, primary first

  const json& run(const std::string& id) const {
    const auto it = runs.find(id);
    TL_CHECK(it != runs.end(), "study: the record of run {} is missing", id);
    return it->second;
  }

  // An arm from one score object per seed ({"nll": [...], "tokens": [...]}).
  static ArmScores arm(const std::vector<const json*>& per_seed) {
    ArmScores a;
    for (const json* s : per_seed) {
      a.nll.push_back(s->at("nll").get<std::vector<double>>());
      if (a.tokens.empty()) a.tokens = s->at("tokens").get<std::vector<double>>();
    }
    return a;
  }
  // The arm of runs id(k) for k < n, scores at `path` then set `set`.
  template <class IdFn>
  ArmScores arm_of(IdFn id, int n, const std::vector<std::string>& path, const std::string& set) const {
    std::vector<const json*> v;
    for (int k = 0; k < n; ++k) {
      const json* j = &run(id(k));
      for (const auto& p : path) j = &j->at(p);
      v.push_back(&j->at(set));
    }
    return arm(v);
  }

  Effect effect(const ArmScores& t, const ArmScores& r, const std::string& name) const {
    return paired_bootstrap(t, r, resamples, seed_of(name, base_seed));
  }

  // n, mean NLL, PPL with two intervals: over seeds (t) and over windows and seeds (bootstrap).
  json summary(const ArmScores& a, const std::string& name) const {
    std::vector<double> per_seed;
    for (int64_t s = 0; s < a.seeds(); ++s) per_seed.push_back(a.seed_mean_nll(s));
    const MeanCI m = mean_ci(per_seed);
    ArmScores zero;
    zero.tokens = a.tokens;
    zero.nll.assign(1, std::vector<double>(a.tokens.size(), 0.0));
    const Effect e = paired_bootstrap(a, zero, resamples, seed_of("summary/" + name, base_seed), false);
    return {{"n", a.seeds()},
            {"windows", a.windows()},
            {"mean_nll", a.mean_nll()},
            {"ppl", std::exp(a.mean_nll())},
            {"ppl_ci95_seeds", json::array({std::exp(m.ci.lo), std::exp(m.ci.hi)})},
            {"ppl_ci95_windows", json::array({std::exp(e.ci.lo), std::exp(e.ci.hi)})}};
  }

  // Mean over seeds with a t-interval of a number in each record.
  template <class IdFn>
  json stat(IdFn id, int n, const std::vector<std::string>& path) const {
    std::vector<double> v;
    for (int k = 0; k < n; ++k) {
      const json* j = &run(id(k));
      for (const auto& p : path) j = &j->at(p);
      v.push_back(j->is_null() ? NAN : j->get<double>());
    }
    if (std::any_of(v.begin(), v.end(), [](double x) { return !std::isfinite(x); })) return nullptr;
    return to_json(mean_ci(v));
  }
};

json verdict_entry(const std::string& id, const std::string& claim, const std::string& set,
                   const std::string& treatment, const std::string& baseline, const std::string& control,
                   const VerdictInput& in, const VerdictResult& v, const std::string& study_text,
                   double study_ratio) {
  json j = {{"id", id},
            {"claim", claim},
            {"set", set},
            {"treatment", treatment},
            {"baseline", baseline},
            {"control", control.empty() ? json(nullptr) : json(control)},
            {"direction", in.direction < 0 ? "lower PPL" : "higher PPL"},
            {"effect", to_json(in.effect)},
            {"vs_control", in.vs_control ? to_json(*in.vs_control) : json(nullptr)},
            {"control_effect", in.control_effect ? to_json(*in.control_effect) : json(nullptr)},
            {"study", {{"text", study_text}, {"ppl_ratio", num(study_ratio)}}}};
  const json v_json = to_json(v);
  for (const auto& [k, x] : v_json.items()) j[k] = x;
  return j;
}

std::string lvl(double l) {
  return fmt::format("{:g}", l);
}

// The level whose verdict heads a claim: the study's headline level if present, else the first.
size_t headline_level(const std::vector<double>& levels, double wanted) {
  for (size_t i = 0; i < levels.size(); ++i)
    if (levels[i] == wanted) return i;
  return 0;
}

// ---------------------------------------------------------------------------------------------------------

json claim_c1(const Agg& g, const json& budget, const ArmScores& baseA, const ArmScores& baseP) {
  const auto levels = budget.at("c1_levels").get<std::vector<double>>();
  const auto methods = budget.at("c1_methods").get<std::vector<std::string>>();
  auto n_of = [&](const std::string& m) { return m == "global" || m == "per-tensor" ? 1 : g.seeds; };
  json rows = json::array();
  for (double l : levels)
    for (const auto& m : methods) {
      const int n = n_of(m);
      auto id = [&](int k) { return fmt::format("c1/{}/{}/s{}", m, lvl(l), k); };
      json row = {{"method", m}, {"level", l}};
      for (const auto& [set, base] :
           {std::pair{std::string(kProtocolA), &baseA}, std::pair{g.primary, &baseP}}) {
        const ArmScores a = g.arm_of(id, n, {"scores"}, set);
        row["sets"][set] = g.summary(a, id(0) + "/" + set);
        row["sets"][set]["vs_baseline"] = to_json(g.effect(a, *base, id(0) + "/" + set + "/base"));
      }
      for (const char* k :
           {"latent_sparsity_after", "code_zero_before", "code_zero_after", "codes_changed", "pruned",
            "pruned_code_nonzero", "pruned_frac_of_candidates", "scale_rel_change_mean", "threshold"})
        row["prune"][k] = g.stat(id, n, {"prune", k});
      rows.push_back(row);
    }
  json verdicts = json::array();
  const size_t h = headline_level(levels, 10);
  const double L = levels.at(h);
  for (const auto& [set, base, vid, stext, sratio] :
       {std::tuple{std::string(kProtocolA), &baseA, "C1 (Protocol A)",
                   "9.39 -> 6.94 (-26.1%) at 10%, Protocol A (8 sentences), no fine-tune", kStudyC1A},
        std::tuple{g.primary, &baseP, "C1 (held-out text)",
                   "no held-out figure; on WikiText the first prune (5%) gave 25.10 -> 24.90 (-0.8%)",
                   kStudyC1B}}) {
    auto sid = [&](int k) { return fmt::format("c1/seed/{}/s{}", lvl(L), k); };
    auto rid = [&](int k) { return fmt::format("c1/random/{}/s{}", lvl(L), k); };
    const ArmScores t = g.arm_of(sid, g.seeds, {"scores"}, set), c = g.arm_of(rid, g.seeds, {"scores"}, set);
    VerdictInput in;
    in.direction = -1;
    in.min_effect = g.delta;
    in.effect = g.effect(t, *base, "c1/verdict/" + set + "/t-b");
    in.vs_control = g.effect(t, c, "c1/verdict/" + set + "/t-c");
    in.control_effect = g.effect(c, *base, "c1/verdict/" + set + "/c-b");
    verdicts.push_back(verdict_entry(
        vid, fmt::format("magnitude pruning of {}% of the weights lowers PPL without fine-tuning", lvl(L)),
        set, fmt::format("study threshold, {}%", lvl(L)), "unpruned model",
        fmt::format("random pruning, {}%, matched per tensor", lvl(L)), in, decide(in), stext, sratio));
  }
  return {{"id", "c1"},       {"title", "Raw magnitude pruning (rpt-spec §3)"},
          {"levels", levels}, {"methods", methods},
          {"rows", rows},     {"verdicts", verdicts}};
}

json claim_c2(const Agg& g, const json& budget, const std::map<std::string, ArmScores>& base) {
  const auto levels = budget.at("c2_levels").get<std::vector<double>>();
  const std::vector<std::string> arms = {"prune", "random", "control"};
  auto id_of = [](const std::string& arm, size_t i) {
    return [arm, i](int k) { return fmt::format("c2/{}/s{}/L{}", arm, k, i); };
  };
  json rows = json::array(), verdicts = json::array(), level_verdicts = json::array();
  for (size_t i = 0; i < levels.size(); ++i) {
    json row = {{"level_index", i}, {"target", levels[i]}};
    std::map<std::string, std::map<std::string, ArmScores>> after;  // arm -> set -> scores
    for (const auto& arm : arms) {
      const auto id = id_of(arm, i);
      json a;
      a["before"] = g.summary(g.arm_of(id, g.seeds, {"before"}, g.primary), id(0) + "/before");
      for (const auto& set : g.corpora) {
        after[arm][set] = g.arm_of(id, g.seeds, {"after"}, set);
        a["after"][set] = g.summary(after[arm][set], id(0) + "/after/" + set);
        a["after"][set]["vs_baseline"] =
            to_json(g.effect(after[arm][set], base.at(set), id(0) + "/" + set + "/base"));
      }
      a["latent_sparsity"] = g.stat(id, g.seeds, {"latent_sparsity"});
      a["code_zero"] = g.stat(id, g.seeds, {"code_zero"});
      a["final_loss"] = g.stat(id, g.seeds, {"final_loss"});
      // the mean loss curve over seeds
      std::vector<double> curve;
      for (int k = 0; k < g.seeds; ++k) {
        const auto l = g.run(id(k)).at("losses").get<std::vector<double>>();
        if (curve.empty()) curve.assign(l.size(), 0.0);
        for (size_t s = 0; s < l.size() && s < curve.size(); ++s) curve[s] += l[s] / g.seeds;
      }
      a["loss_curve"] = curve;
      row["arms"][arm] = a;
    }
    // per set: pruned vs its controls
    for (const auto& set : g.corpora) {
      row["vs"][set]["prune_vs_control"] =
          to_json(g.effect(after["prune"][set], after["control"][set], fmt::format("c2/L{}/{}/p-c", i, set)));
      row["vs"][set]["prune_vs_random"] =
          to_json(g.effect(after["prune"][set], after["random"][set], fmt::format("c2/L{}/{}/p-r", i, set)));
    }
    VerdictInput in;
    in.direction = -1;
    in.min_effect = g.delta;
    in.effect = g.effect(after["prune"][g.primary], base.at(g.primary), fmt::format("c2/L{}/t-b", i));
    in.vs_control =
        g.effect(after["prune"][g.primary], after["control"][g.primary], fmt::format("c2/L{}/t-c", i));
    in.control_effect =
        g.effect(after["control"][g.primary], base.at(g.primary), fmt::format("c2/L{}/c-b", i));
    const VerdictResult v = decide(in);
    const double sr = study_c2_ratio(levels[i]);
    const std::string stext =
        std::isfinite(sr) ? fmt::format("25.10 -> {:.2f} ({:+.1f}%) at {}%, after 300 steps of fine-tuning",
                                        25.10 * sr, 100 * (sr - 1), lvl(levels[i]))
                          : std::string("no figure at this level");
    json e = verdict_entry(
        fmt::format("C2 ({}%)", lvl(levels[i])),
        fmt::format("progressive pruning to {}% with fine-tuning lowers PPL because of the pruning",
                    lvl(levels[i])),
        g.primary, fmt::format("pruned + fine-tuned, level {}", i + 1), "the model before any fine-tune",
        "the same fine-tune at 0% sparsity (same tokens, seeds, schedule)", in, v, stext, sr);
    level_verdicts.push_back(e);
    row["verdict"] = verdict_name(v.verdict);
    rows.push_back(row);
  }
  const size_t h = headline_level(levels, 10);
  verdicts.push_back(level_verdicts.at(h));
  return {{"id", "c2"},
          {"title", "Progressive pruning with QAT/STE fine-tuning (rpt-spec §4)"},
          {"levels", levels},
          {"rows", rows},
          {"level_verdicts", level_verdicts},
          {"verdicts", verdicts}};
}

// The domain-shift control: C2's last level on every corpus that was not fine-tuned on.
json claim_domain(const Agg& g, const json& budget, const std::map<std::string, ArmScores>& base) {
  const size_t last = budget.at("c2_levels").size() - 1;
  json verdicts = json::array(), rows = json::array();
  for (const auto& set : g.corpora) {
    auto pid = [&](int k) { return fmt::format("c2/prune/s{}/L{}", k, last); };
    auto cid = [&](int k) { return fmt::format("c2/control/s{}/L{}", k, last); };
    const ArmScores t = g.arm_of(pid, g.seeds, {"after"}, set), c = g.arm_of(cid, g.seeds, {"after"}, set);
    VerdictInput in;
    in.direction = -1;
    in.min_effect = g.delta;
    in.effect = g.effect(t, base.at(set), "domain/" + set + "/t-b");
    in.vs_control = g.effect(t, c, "domain/" + set + "/t-c");
    in.control_effect = g.effect(c, base.at(set), "domain/" + set + "/c-b");
    const VerdictResult v = decide(in);
    rows.push_back(
        {{"set", set},
         {"role", set == g.primary ? "held-out split of the fine-tuning corpus" : "never fine-tuned on"},
         {"prune_vs_baseline", to_json(in.effect)},
         {"control_vs_baseline", to_json(*in.control_effect)},
         {"prune_vs_control", to_json(*in.vs_control)},
         {"verdict", verdict_name(v.verdict)}});
    if (set != g.primary)
      verdicts.push_back(
          verdict_entry(fmt::format("D ({})", set),
                        "the fine-tuned pruned model is better on text it was not fine-tuned on", set,
                        "pruned + fine-tuned, last level", "the model before any fine-tune",
                        "the same fine-tune at 0% sparsity", in, v,
                        "not measured: the study fine-tuned and evaluated on WikiText-2 only", NAN));
  }
  return {{"id", "domain"},
          {"title", "The domain-shift control (rpt-spec §10.1 item 3)"},
          {"rows", rows},
          {"verdicts", verdicts}};
}

json claim_c3(const Agg& g, const json& budget, const std::map<std::string, ArmScores>& base) {
  const size_t nl = budget.at("c3_levels").size();
  const std::vector<std::string> arms = {"deploy", "control"};
  json arms_json = json::object(), verdicts = json::array();
  std::map<std::string, ArmScores> snapped;  // arm -> primary
  for (const auto& arm : arms) {
    json a;
    for (size_t i = 0; i < nl; ++i) {
      auto id = [&](int k) { return fmt::format("c3/{}/s{}/L{}", arm, k, i); };
      json l = {{"target", arm == "control" ? 0.0 : budget.at("c3_levels")[i].get<double>()}};
      for (const char* when : {"before", "after"})
        for (const char* view : {"training", "study"})
          l[when][view] =
              g.summary(g.arm_of(id, g.seeds, {when, view}, g.primary), id(0) + "/" + when + "/" + view);
      l["latent_sparsity"] = g.stat(id, g.seeds, {"latent_sparsity"});
      l["final_loss"] = g.stat(id, g.seeds, {"final_loss"});
      a["levels"].push_back(l);
    }
    auto sid = [&](int k) { return fmt::format("c3/{}/s{}/snap", arm, k); };
    snapped[arm] = g.arm_of(sid, g.seeds, {"scores"}, g.primary);
    for (const auto& set : g.corpora) {
      const ArmScores s = g.arm_of(sid, g.seeds, {"scores"}, set);
      a["snapped"][set] = g.summary(s, sid(0) + "/" + set);
      a["snapped"][set]["vs_baseline"] = to_json(g.effect(s, base.at(set), sid(0) + "/" + set + "/base"));
    }
    for (const char* k : {"code_sparsity", "changed", "masked_nonzero", "ternary_fraction"})
      a["snap"][k] = g.stat(sid, g.seeds, {"snap", k});
    // save + reload, GGUF, Fix 8: each against the snapped model in memory
    a["reload"] = to_json(
        g.effect(g.arm_of(sid, g.seeds, {"reload", "scores"}, g.primary), snapped[arm], sid(0) + "/reload"));
    for (const char* kind : {"i2_s", "tq2_0"}) {
      const json& first = g.run(sid(0)).at("gguf").at(kind);
      if (first.contains("refused")) {
        a["gguf"][kind] = {{"refused", first.at("refused")}};
        continue;
      }
      const ArmScores s = g.arm_of(sid, g.seeds, {"gguf", kind, "scores"}, g.primary);
      a["gguf"][kind] = g.summary(s, sid(0) + "/" + kind);
      a["gguf"][kind]["vs_snapped"] = to_json(g.effect(s, snapped[arm], sid(0) + "/" + kind + "/snapped"));
      a["gguf"][kind]["bytes"] = first.at("bytes");
    }
    const ArmScores fix8 = g.arm_of(sid, g.seeds, {"fix8", "scores"}, g.primary);
    a["fix8"] = g.summary(fix8, sid(0) + "/fix8");
    a["fix8"]["vs_snapped"] = to_json(g.effect(fix8, snapped[arm], sid(0) + "/fix8/snapped"));
    a["generations"] = g.run(sid(0)).value("generations", json::array());
    arms_json[arm] = a;
  }
  // C3-a: the recipe against the baseline and against its 0% control
  {
    VerdictInput in;
    in.direction = -1;
    in.min_effect = g.delta;
    in.effect = g.effect(snapped["deploy"], base.at(g.primary), "c3/t-b");
    in.vs_control = g.effect(snapped["deploy"], snapped["control"], "c3/t-c");
    in.control_effect = g.effect(snapped["control"], base.at(g.primary), "c3/c-b");
    verdicts.push_back(verdict_entry(
        "C3 (deploy recipe)", "the QAT/STE deploy recipe (prune 5% -> 10%, rpt-fixed STE, snap) lowers PPL",
        g.primary, "pruned, fine-tuned and snapped", "the model before any fine-tune",
        "the same recipe at 0% sparsity", in, decide(in), "25.13 -> 16.39 (-34.8%) at 42.6% code sparsity",
        kStudyC3));
  }
  // C3-b: "the snap improves PPL" — measured with training's own forward, and as the study measured it
  {
    auto last = [&](int k) { return fmt::format("c3/deploy/s{}/L{}", k, nl - 1); };
    const ArmScores before_train = g.arm_of(last, g.seeds, {"after", "training"}, g.primary);
    const ArmScores before_study = g.arm_of(last, g.seeds, {"after", "study"}, g.primary);
    VerdictInput in;
    in.direction = -1;
    in.min_effect = g.delta;
    in.effect = g.effect(snapped["deploy"], before_train, "c3/snap/correct");
    json e = verdict_entry(
        "C3 (the snap)", "snapping the fine-tuned latents to ternary improves PPL", g.primary,
        "after the snap", "before the snap, scored with training's own forward", "", in, decide(in),
        "33.07 -> 16.39 (-50.4%): before measured with transformers' quantizer on the latents", kStudySnap);
    e["as_the_study_measured"] = to_json(g.effect(snapped["deploy"], before_study, "c3/snap/study"));
    verdicts.push_back(e);
  }
  // C3-c: the deployed GGUF is the evaluated model (ternlab's I2_S, and the study's Fix-8 scales)
  {
    auto sid = [&](int k) { return fmt::format("c3/deploy/s{}/snap", k); };
    if (!arms_json["deploy"]["gguf"]["i2_s"].contains("refused")) {
      const Effect e = g.effect(g.arm_of(sid, g.seeds, {"gguf", "i2_s", "scores"}, g.primary),
                                snapped["deploy"], "c3/gguf");
      VerdictInput in;
      in.effect = e;
      in.min_effect = g.delta;
      verdicts.push_back(
          verdict_entry("C3 (GGUF, ternlab)", "ternlab's I2_S GGUF scores as the model it was exported from",
                        g.primary, "the I2_S GGUF, imported", "the snapped model", "", in,
                        decide_equivalence(e, g.delta), "never measured (no llama-perplexity run)", NAN));
    }
    const Effect e =
        g.effect(g.arm_of(sid, g.seeds, {"fix8", "scores"}, g.primary), snapped["deploy"], "c3/fix8");
    VerdictInput in;
    in.effect = e;
    in.min_effect = g.delta;
    verdicts.push_back(verdict_entry(
        "C3 (GGUF, Fix 8)", "the study's GGUF (Fix 8: I2_S scale max|w| = s_orig) is the model it evaluated",
        g.primary, "s_orig scales (the study's I2_S file)", "the snapped model (s_orig·(1 - z))", "", in,
        decide_equivalence(e, g.delta), "assumed, never measured", NAN));
  }
  return {{"id", "c3"},
          {"title", "The QAT/STE deploy recipe, snap and GGUF (rpt-spec §5)"},
          {"levels", budget.at("c3_levels")},
          {"arms", arms_json},
          {"verdicts", verdicts}};
}

json claim_c4(const Agg& g) {
  const json& r = g.run("c4");
  const int64_t L = r.at("layers").get<int64_t>();
  const int64_t texts = r.at("texts").get<int64_t>();
  const int S = r.at("options").at("seeds").get<int>();
  const double study_eps = r.at("options").at("study_eps").get<double>();
  json models = json::object();
  std::vector<Interval> null_ci;
  std::vector<std::string> null_names;
  Interval model_ci;
  for (const std::string name : {"model", "shuffled", "random-init"}) {
    const json& src = name == "model" ? r : r.at("controls").at(name);
    const json* ep = nullptr;
    for (const auto& e : r.at("endpoints").at(name))
      if (e.at("eps").get<double>() == study_eps) ep = &e;
    TL_CHECK(ep != nullptr, "study: c4 has no endpoints at ε = {}", study_eps);
    const auto first = ep->at("first").get<std::vector<double>>(),
               last = ep->at("last").get<std::vector<double>>();
    // λ of the mean profile over the chosen texts (all their seeds): the study's formula
    auto lambda_of = [&](std::span<const int64_t> idx) {
      double f = 0, l = 0;
      for (int64_t t : idx)
        for (int s = 0; s < S; ++s) {
          f += first[size_t(t * S + s)];
          l += last[size_t(t * S + s)];
        }
      const double n = double(idx.size() * size_t(S));
      return (std::log(l / n + 1e-12) - std::log(f / n + 1e-12)) / double(L - 1);
    };
    std::vector<int64_t> all(static_cast<size_t>(texts), 0);
    for (int64_t t = 0; t < texts; ++t) all[size_t(t)] = t;
    const double lam = lambda_of(all);
    const Interval ci = bootstrap_interval(texts, g.resamples,
                                           seed_of(std::string("c4/").append(name), g.base_seed), lambda_of);
    const json& st = src.at("study");
    json m = json::object();
    for (const char* k : {"lambda", "amplification", "avg_br", "br_label", "lambda_label", "soc_verdict"})
      m["study"][k] = st.at(k);
    m["lambda_all_seeds"]["n_texts"] = texts;
    m["lambda_all_seeds"]["seeds"] = S;
    m["lambda_all_seeds"]["value"] = lam;
    m["lambda_all_seeds"]["ci95"] = to_json(ci);
    const double steps = double(L - 1);
    m["amplification_all_seeds"]["value"] = std::exp(lam * steps);
    m["amplification_all_seeds"]["ci95"] =
        to_json(Interval{std::exp(ci.lo * steps), std::exp(ci.hi * steps)});
    json D = json::array(), br = json::array();
    for (const auto& l : st.at("layers")) {
      D.push_back(l.at("delta"));
      br.push_back(l.at("branching_ratio"));
    }
    m["delta_profile"] = D;
    m["branching_ratio"] = br;
    json per_eps = json::array();
    for (const auto& e : src.at("sweep"))
      per_eps.push_back(
          {{"eps", e.at("eps")}, {"lambda", e.at("lambda")}, {"amplification", e.at("amplification")}});
    m["per_eps"] = per_eps;
    json ftle = json::array();
    for (const auto& f : src.at("ftle"))
      ftle.push_back({{"eps_rel", f.at("eps_rel")},
                      {"median", f.at("ftle").at("median")},
                      {"ci95", f.at("ftle").at("ci95_median")},
                      {"vanished", f.at("vanished")}});
    m["ftle"] = ftle;
    models[name] = m;
    if (name == "model") {
      model_ci = ci;
    } else {
      null_ci.push_back(ci);
      null_names.push_back(name);
    }
  }
  const VerdictResult v = decide_band(model_ci, 0.05, null_ci, null_names);
  json e = {
      {"id", "C4 (criticality)"},
      {"claim",
       "the model sits at the edge of chaos: |λ| < 0.05 (the study's rule), a property of the trained model"},
      {"set", g.primary},
      {"treatment", "the model"},
      {"baseline", nullptr},
      {"control", "null models: shuffled weights, random init"},
      {"band", 0.05},
      {"lambda", models["model"]["lambda_all_seeds"]},
      {"study",
       {{"text", "λ = -0.002, amplification 0.94x (ε = 0.01, one draw per text, 20 texts)"},
        {"lambda", -0.002}}}};
  const json vj = to_json(v);  // items() of a temporary would dangle
  for (const auto& [k, x] : vj.items()) e[k] = x;
  return {{"id", "c4"},       {"title", "Criticality (rpt-spec §7)"},
          {"layers", L},      {"texts", texts},
          {"seeds", S},       {"eps", r.at("options").at("eps")},
          {"models", models}, {"verdicts", json::array({e})}};
}

json claim_c5(const Agg& g, const json& budget) {
  const auto levels = budget.at("act_levels").get<std::vector<double>>();
  const json& r0 = g.run("c5/s0");
  ArmScores base = Agg::arm({&r0.at("baseline")});
  // points by (mode, level) -> per-seed scores
  auto point = [&](const json& rec, const std::string& mode, double level) -> const json* {
    for (const auto& p : rec.at("points"))
      if (p.at("mode") == mode && p.at("level").get<double>() == level) return &p;
    return nullptr;
  };
  json rows = json::array();
  std::map<std::pair<std::string, double>, ArmScores> arms;
  for (const std::string mode : {"study", "per-token", "random"})
    for (double l : levels) {
      std::vector<const json*> per_seed;
      const int n = mode == "random" ? g.seeds : 1;
      double zeroed = 0;
      for (int k = 0; k < n; ++k) {
        const json* p = point(g.run(fmt::format("c5/s{}", k)), mode, l);
        TL_CHECK(p != nullptr, "study: c5/s{} has no point {} at P{}", k, mode, l);
        per_seed.push_back(&p->at("scores"));
        zeroed += p->at("pct_zeroed").get<double>() / n;
      }
      const ArmScores a = Agg::arm(per_seed);
      arms[{mode, l}] = a;
      json row = g.summary(a, fmt::format("c5/{}/{}", mode, l));
      row["mode"] = mode;
      row["level"] = l;
      row["pct_zeroed"] = zeroed;
      row["vs_baseline"] = to_json(g.effect(a, base, fmt::format("c5/{}/{}/base", mode, l)));
      const json* p0 = point(r0, mode, l);
      row["generations"] = p0->at("generations");
      rows.push_back(row);
    }
  const size_t h = headline_level(levels, 50);
  const double L = levels.at(h);
  VerdictInput in;
  in.direction = +1;
  in.min_effect = g.delta;
  in.effect = g.effect(arms[{"study", L}], base, "c5/verdict");
  json e =
      verdict_entry(fmt::format("C5 (P{})", lvl(L)),
                    fmt::format("pruning the smallest {}% of each block's corrections raises PPL", lvl(L)),
                    g.primary, fmt::format("the study's rule at P{}", lvl(L)), "no pruning", "", in,
                    decide(in), "25.09 -> 40.26 (+60.5%) at P50", kStudyC5);
  e["random_mask_vs_baseline"] = to_json(g.effect(arms[{"random", L}], base, "c5/verdict/random"));
  e["study_vs_random_mask"] = to_json(g.effect(arms[{"study", L}], arms[{"random", L}], "c5/verdict/s-r"));
  e["per_token_vs_study"] = to_json(g.effect(arms[{"per-token", L}], arms[{"study", L}], "c5/verdict/t-s"));
  return {{"id", "c5"},
          {"title", "Activation pruning (rpt-spec §6)"},
          {"levels", levels},
          {"baseline", g.summary(base, "c5/baseline")},
          {"baseline_generations", r0.at("baseline_generations")},
          {"natural", r0.value("natural", json::array())},
          {"rows", rows},
          {"verdicts", json::array({e})}};
}

}  // namespace

json aggregate(const json& config, const std::map<std::string, json>& runs) {
  Agg g{config, runs, 1, 2000, 0, 0.01, {}, {}};
  g.seeds = config.at("seeds").get<int>();
  g.resamples = config.at("bootstrap").get<int>();
  g.base_seed = config.at("seed").get<uint64_t>();
  g.delta = config.at("min_effect").get<double>();
  g.corpora = config.at("eval_corpora").get<std::vector<std::string>>();
  g.primary = g.corpora.at(0);
  const json& budget = config.at("budget");
  const auto claims = config.at("claims").get<std::vector<std::string>>();
  auto has = [&](const char* c) { return std::find(claims.begin(), claims.end(), c) != claims.end(); };

  const json& b = g.run("base");
  std::map<std::string, ArmScores> base;
  json baseline = json::object(), sets = json::array();
  for (const auto& [set, sc] : b.at("scores").items()) {
    base[set] = Agg::arm({&sc});
    baseline[set] = g.summary(base[set], "base/" + set);
  }
  sets.push_back(
      {{"name", kProtocolA}, {"role", "the study's 8 sentences"}, {"windows", base[kProtocolA].windows()}});
  for (const auto& c : g.corpora)
    sets.push_back(
        {{"name", c},
         {"role", c == g.primary ? "primary: held-out split of the fine-tuning corpus" : "domain shift"},
         {"windows", base.at(c).windows()}});

  json out = {{"schema", kSchema}, {"config", config}, {"sets", sets}, {"baseline", baseline}};
  out["baseline_model"] = {{"code_zero", b.at("code_zero")},
                           {"latent_sparsity", b.at("latent_sparsity")},
                           {"params", b.at("params")},
                           {"linear_params", b.at("linear_params")}};
  json cl = json::array();
  if (has("c1")) cl.push_back(claim_c1(g, budget, base.at(kProtocolA), base.at(g.primary)));
  if (has("c2")) {
    cl.push_back(claim_c2(g, budget, base));
    cl.push_back(claim_domain(g, budget, base));
  }
  if (has("c3")) cl.push_back(claim_c3(g, budget, base));
  if (has("c4")) cl.push_back(claim_c4(g));
  if (has("c5")) cl.push_back(claim_c5(g, budget));
  json summary = json::array();
  for (const auto& c : cl)
    for (const auto& v : c.at("verdicts"))
      summary.push_back({{"id", v.at("id")}, {"claim", v.at("claim")}, {"verdict", v.at("verdict")}});
  out["claims"] = cl;
  out["verdicts"] = summary;
  return out;
}

}  // namespace tl::study
