#include "study/study.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>

#include <sys/resource.h>

#include "core/error.hpp"
#include "core/file.hpp"
#include "core/log.hpp"
#include "cpu/threads.hpp"
#include "formats/checkpoint.hpp"
#include "formats/hf_config.hpp"
#include "study/internal.hpp"
#include "study/protocol_a.hpp"
#include "study/stats.hpp"
#include "text/token_file.hpp"

namespace tl::study {

using nlohmann::json;

std::string claim_name(ClaimId c) {
  return fmt::format("c{}", int(c) + 1);
}

std::vector<ClaimId> parse_claims(std::string_view csv) {
  const std::vector<ClaimId> all = {ClaimId::C1, ClaimId::C2, ClaimId::C3, ClaimId::C4, ClaimId::C5};
  if (csv == "all" || csv.empty()) return all;
  std::vector<ClaimId> out;
  size_t a = 0;
  while (a <= csv.size()) {
    const size_t b = std::min(csv.find(',', a), csv.size());
    std::string name(csv.substr(a, b - a));
    for (auto& ch : name) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    bool found = false;
    for (ClaimId c : all)
      if (claim_name(c) == name) {
        TL_CHECK(std::find(out.begin(), out.end(), c) == out.end(), "--only: {} is given twice", name);
        out.push_back(c);
        found = true;
      }
    TL_CHECK(found, "--only: unknown claim '{}' (expected c1, c2, c3, c4, c5 or all)", name);
    a = b + 1;
  }
  std::sort(out.begin(), out.end());
  return out;
}

Budget budget_for(const std::string& scale) {
  Budget b;
  b.scale = scale;
  b.c1_methods = {PruneMethod::Seed, PruneMethod::Global, PruneMethod::PerTensor, PruneMethod::Random};
  b.c3_levels = {5, 10};  // the deploy script's TARGET_SPARSITY 10, progressive (rpt-spec §5.1)
  if (scale == "small") {
    b.windows = 64;
    b.act_windows = 64;
    b.c1_levels = {10, 20, 30, 50};
    b.c2_levels = {10, 30};
    b.c2_steps = 24;
    b.c2_batch = 8;
    b.c3_steps = 24;
    b.c3_batch = 8;
    b.crit_eps = {1e-3, 1e-2, 1e-1};
    b.ftle_eps = {1e-2};
    b.act_levels = {30, 50, 70};
  } else if (scale == "full") {
    b.windows = 256;                                // the first 50 are the study's Protocol B exactly
    b.act_windows = 50;                             // the study's 50 (its hooks run on the CPU)
    b.c1_levels = {10, 20, 30, 50, 70, 80, 90};     // NB-RAW's levels (rpt-spec §3.4)
    b.c2_levels = {5, 10, 15, 20, 25, 30, 40, 50};  // NB-PROG (§4.1)
    b.c2_steps = 300;
    b.c2_batch = 64;
    b.c3_steps = 300;
    b.c3_batch = 8;  // the A100 deploy run (§5.1)
    b.crit_eps = {1e-4, 1e-3, 1e-2, 1e-1};
    b.ftle_eps = {1e-3, 1e-2};
    b.act_levels = {10, 20, 30, 40, 50, 60, 70, 80, 90};
  } else {
    fail("--scale: expected small or full, found '{}'", scale);
  }
  return b;
}

json to_json(const Budget& b) {
  json methods = json::array();
  for (auto m : b.c1_methods) methods.push_back(std::string(prune_method_name(m)));
  return {{"scale", b.scale},
          {"windows", b.windows},
          {"act_windows", b.act_windows},
          {"c1_levels", b.c1_levels},
          {"c1_methods", methods},
          {"c2_levels", b.c2_levels},
          {"c2_steps", b.c2_steps},
          {"c2_batch", b.c2_batch},
          {"c3_levels", b.c3_levels},
          {"c3_steps", b.c3_steps},
          {"c3_batch", b.c3_batch},
          {"seq_len", b.seq_len},
          {"lr", b.lr},
          {"crit_texts", b.crit_texts},
          {"crit_eps", b.crit_eps},
          {"ftle_eps", b.ftle_eps},
          {"act_levels", b.act_levels},
          {"gen_tokens", b.gen_tokens}};
}

void validate(const StudyOptions& o) {
  TL_CHECK(!o.model.empty(), "study: the model directory is required");
  TL_CHECK(!o.out_dir.empty(), "study: -o DIR (the work folder) is required");
  TL_CHECK(o.seeds >= 1, "--seeds must be at least 1, found {}", o.seeds);
  TL_CHECK(!o.eval_corpora.empty(), "--eval-corpus: at least one evaluation corpus is needed");
  parse_corpus_spec(o.train_corpus);
  std::vector<std::string> names;
  for (const auto& e : o.eval_corpora) {
    names.push_back(corpus_spec_name(parse_corpus_spec(e)));
    TL_CHECK(std::count(names.begin(), names.end(), names.back()) == 1, "--eval-corpus: {} is given twice",
             names.back());
  }
  budget_for(o.scale);
  TL_CHECK(!o.recompute || o.device == Device::Cuda, "--recompute applies to --device cuda only");
  TL_CHECK(o.bootstrap >= 100, "--bootstrap must be at least 100, found {}", o.bootstrap);
  TL_CHECK(std::isfinite(o.min_effect) && o.min_effect > 0, "--min-effect must be > 0, found {}",
           o.min_effect);
  TL_CHECK(o.windows >= 0 && o.steps >= 0 && o.batch >= 0 && o.max_runs >= 0,
           "--windows, --steps, --batch and --max-runs must be >= 0");
  std::error_code ec;
  TL_CHECK(fs::weakly_canonical(o.out_dir, ec) != fs::weakly_canonical(o.model, ec),
           "study: the work folder must differ from the model directory");
}

Budget effective_budget(const StudyOptions& o) {
  Budget b = budget_for(o.scale);
  if (o.windows > 0) b.windows = b.act_windows = o.windows;
  if (o.steps > 0) b.c2_steps = b.c3_steps = o.steps;
  if (o.batch > 0) b.c2_batch = b.c3_batch = o.batch;
  return b;
}

// ---------------------------------------------------------------------------------------------------------
// The plan and its time estimate.

namespace {

bool selected(const StudyOptions& o, ClaimId c) {
  return o.only.empty() || std::find(o.only.begin(), o.only.end(), c) != o.only.end();
}

bool deterministic(PruneMethod m) {
  return m == PruneMethod::Global || m == PruneMethod::PerTensor;
}

std::string level_text(double l) {
  return fmt::format("{:g}", l);
}

// Throughput assumed by the estimate, FLOP/s (measured on this project's machines; docs/study.md).
struct Rates {
  double eval, train;
};
Rates rates_for(Device d) {
  if (d == Device::Cuda) return {1.0e14, 1.5e14};                // one H100, 2B shape (docs/benchmarks.md)
  const double per_core_eval = 4.3e10, per_core_train = 3.9e10;  // 2-core AMD EPYC, 5M-parameter model
  const double cores = double(std::max(1, num_threads()));
  return {per_core_eval * cores, per_core_train * cores};
}

}  // namespace

Plan make_plan(const StudyOptions& opt, const BitNetConfig& cfg) {
  validate(opt);
  Plan plan;
  plan.budget = effective_budget(opt);
  const Budget& b = plan.budget;
  const Rates rate = rates_for(opt.device);
  // Forward FLOPs per token: the linears and the LM head (2 per weight), attention over a 128-token window.
  const Model shape = make_model(cfg);
  const double fwd = 2.0 * double(shape.num_linear_params()) +
                     2.0 * double(cfg.vocab_size * cfg.hidden_size) +
                     4.0 * double(cfg.num_hidden_layers * cfg.hidden_size * b.seq_len);
  const int64_t corpus_eval = b.windows * b.seq_len;  // tokens through the forward per corpus evaluation
  const int64_t n_corpora = int64_t(opt.eval_corpora.size());
  const int64_t a_tokens = 8 * 24;                // Protocol A: about 24 tokens a sentence
  const Rates cpu_rate = rates_for(Device::Cpu);  // C5's hooks run on the CPU whatever the device
  auto add = [&](std::string id, ClaimId c, std::string what, int64_t train_tokens, int64_t eval_tokens,
                 double extra_seconds = 0) {
    PlannedRun r{std::move(id), c, std::move(what), train_tokens, eval_tokens, 0};
    const Rates& rt = c == ClaimId::C5 ? cpu_rate : rate;
    r.est_seconds =
        double(eval_tokens) * fwd / rt.eval + 3.0 * double(train_tokens) * fwd / rt.train + extra_seconds;
    plan.est_seconds += r.est_seconds;
    plan.runs.push_back(std::move(r));
  };
  add("base", ClaimId::C1, "the unpruned model on every evaluation set", 0,
      a_tokens + n_corpora * corpus_eval);
  const int S = opt.seeds;
  if (selected(opt, ClaimId::C1))
    for (double l : b.c1_levels)
      for (PruneMethod m : b.c1_methods)
        for (int k = 0; k < (deterministic(m) ? 1 : S); ++k)
          add(fmt::format("c1/{}/{}/s{}", prune_method_name(m), level_text(l), k), ClaimId::C1,
              fmt::format("prune {}% ({}) from the original weights; Protocol A + primary", level_text(l),
                          prune_method_name(m)),
              0, a_tokens + corpus_eval);
  if (selected(opt, ClaimId::C2))
    for (const char* arm : {"prune", "random", "control"})
      for (int k = 0; k < S; ++k)
        for (size_t i = 0; i < b.c2_levels.size(); ++i)
          add(fmt::format("c2/{}/s{}/L{}", arm, k, i), ClaimId::C2,
              fmt::format("{} level {} ({}%), {} steps × {} × {}", arm, i,
                          std::string(arm) == "control" ? "0" : level_text(b.c2_levels[i]), b.c2_steps,
                          b.c2_batch, b.seq_len),
              b.c2_steps * b.c2_batch * b.seq_len, corpus_eval + a_tokens + n_corpora * corpus_eval);
  if (selected(opt, ClaimId::C3))
    for (const char* arm : {"deploy", "control"})
      for (int k = 0; k < S; ++k) {
        for (size_t i = 0; i < b.c3_levels.size(); ++i)
          add(fmt::format("c3/{}/s{}/L{}", arm, k, i), ClaimId::C3,
              fmt::format("{} level {} ({}%), rpt-fixed STE, {} steps × {} × {}", arm, i,
                          std::string(arm) == "control" ? "0" : level_text(b.c3_levels[i]), b.c3_steps,
                          b.c3_batch, b.seq_len),
              b.c3_steps * b.c3_batch * b.seq_len, 4 * corpus_eval);
        add(fmt::format("c3/{}/s{}/snap", arm, k), ClaimId::C3,
            "snap, packed save + reload, GGUF I2_S + TQ2_0, Fix-8 scales, generations", 0,
            a_tokens + (n_corpora + 5) * corpus_eval + 5 * b.gen_tokens * 8);
      }
  if (selected(opt, ClaimId::C4)) {
    // texts × seeds × (ε values + FTLE sizes + clean) passes, for the model and two null models
    const int64_t passes = int64_t(b.crit_texts) * S * int64_t(b.crit_eps.size() + b.ftle_eps.size() + 1) * 3;
    add("c4", ClaimId::C4, "criticality: model, shuffled, random-init", 0, passes * 150);
  }
  if (selected(opt, ClaimId::C5))
    for (int k = 0; k < S; ++k) {
      const int64_t modes = k == 0 ? 3 : 1;
      add(fmt::format("c5/s{}", k), ClaimId::C5,
          k == 0 ? "activation pruning: study, per-token, random" : "activation pruning: random mask", 0,
          (modes * int64_t(b.act_levels.size()) + 1) * b.act_windows * b.seq_len);
    }
  plan.basis = fmt::format(
      "estimated from {:.3g} forward FLOPs a token at {:.3g} FLOP/s (evaluation) and {:.3g} "
      "FLOP/s (training, 3 forwards a token) on {} ({} threads; C5 on the CPU)",
      fwd, rate.eval, rate.train, device_name(opt.device), num_threads());
  return plan;
}

std::string plan_table(const Plan& plan) {
  std::string o =
      fmt::format("{:<24} {:>12} {:>12} {:>9}  {}\n", "run", "train tok", "eval tok", "est s", "what");
  for (const auto& r : plan.runs)
    o += fmt::format("{:<24} {:>12} {:>12} {:>9.1f}  {}\n", r.id, r.train_tokens, r.eval_tokens,
                     r.est_seconds, r.what);
  int64_t tt = 0, et = 0;
  for (const auto& r : plan.runs) {
    tt += r.train_tokens;
    et += r.eval_tokens;
  }
  o += fmt::format("{:<24} {:>12} {:>12} {:>9.1f}  {} runs, about {:.1f} min; {}\n", "total", tt, et,
                   plan.est_seconds, plan.runs.size(), plan.est_seconds / 60, plan.basis);
  return o;
}

// ---------------------------------------------------------------------------------------------------------
// Evaluation sets, scores, seeds, chain states.

int64_t EvalSet::windows() const {
  if (protocol_a) return int64_t(parts.size());
  return int64_t(parts.at(0).windows.size());
}

int64_t EvalSet::tokens() const {
  int64_t n = 0;
  for (const auto& p : parts)
    for (const auto& w : p.windows) n += int64_t(w.tokens.size()) - 1 - w.score_from;
  return n;
}

std::vector<size_t> all_sets(const Context& ctx) {
  std::vector<size_t> v(ctx.sets.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

std::vector<size_t> corpus_sets(const Context& ctx) {
  std::vector<size_t> v;
  for (size_t i = kSetPrimary; i < ctx.sets.size(); ++i) v.push_back(i);
  return v;
}

json score(const Context& ctx, const Model& model, const std::vector<size_t>& sets) {
  std::vector<const PplData*> parts;
  for (size_t s : sets)
    for (const auto& p : ctx.sets.at(s).parts) parts.push_back(&p);
  const std::vector<PplResult> res = evaluate_perplexity(model, parts);
  json out = json::object();
  size_t r = 0;
  for (size_t s : sets) {
    json nll = json::array(), tokens = json::array();
    for (size_t k = 0; k < ctx.sets[s].parts.size(); ++k, ++r) {
      const PplResult& x = res[r];
      const double per_window = double(x.tokens_scored) / double(x.windows);
      for (double v : x.window_nll) {
        nll.push_back(v);
        tokens.push_back(per_window);
      }
    }
    out[ctx.sets[s].name] = {{"nll", nll}, {"tokens", tokens}};
  }
  return out;
}

uint64_t derived_seed(const Context& ctx, const std::string& purpose) {
  return seed_of(purpose, ctx.opt.seed);
}

std::string run_file_stem(const std::string& id) {
  std::string s = id;
  std::replace(s.begin(), s.end(), '/', '_');
  return s;
}

fs::path state_dir(const Context& ctx, const std::string& chain, size_t level) {
  return ctx.dir / "state" / fmt::format("{}-L{}", chain, level);
}

void save_state(const Model& m, const fs::path& dir) {
  // A whole directory, swapped in at the end: a kill leaves the previous state or none, never half of one.
  const fs::path tmp = dir.string() + ".tmp";
  fs::remove_all(tmp);
  save_checkpoint(m, tmp, SaveOptions{CheckpointLayout::Master, DType::F32, 0, true});
  json scales = json::object();
  for (const auto& [name, s] : m.fixed_scale) scales[name] = s;
  write_file_atomic(tmp / "fixed_scale.json", scales.dump() + "\n");
  fs::remove_all(dir);
  fs::rename(tmp, dir);
}

Model load_state(const fs::path& dir) {
  TL_CHECK(fs::exists(dir / "fixed_scale.json"),
           "study: the chain state {} is missing (a damaged work folder?)", dir.string());
  Model m = load_checkpoint(dir);
  const json scales = json::parse(read_file(dir / "fixed_scale.json"));
  for (const auto& [name, s] : scales.items()) m.fixed_scale[name] = s.get<float>();
  return m;
}

json study_config(const StudyOptions& o, const Budget& b, const std::string& model_sha,
                  const std::string& tokenizer_sha) {
  json evals = json::array();
  for (const auto& e : o.eval_corpora) evals.push_back(corpus_spec_name(parse_corpus_spec(e)));
  return {{"schema", kSchema},
          {"ternlab_version", TERNLAB_VERSION},
          {"model", o.model.lexically_normal().string()},  // as given: the same command, the same bytes
          {"model_sha256", model_sha},
          {"tokenizer_sha256", tokenizer_sha},
          {"train_corpus", corpus_spec_name(parse_corpus_spec(o.train_corpus))},
          {"eval_corpora", evals},
          {"seeds", o.seeds},
          {"seed", o.seed},
          {"device", device_name(o.device)},
          {"precision", o.precision == ParamPrecision::Bf16 ? "bf16" : "fp32"},
          {"recompute", o.recompute},
          {"budget", to_json(b)},
          {"bootstrap", o.bootstrap},
          {"min_effect", o.min_effect}};
}

// ---------------------------------------------------------------------------------------------------------
// The runner.

namespace {

using Clock = std::chrono::steady_clock;

// SHA-256 of a checkpoint: the name and SHA-256 of config.json and of every weights file (*.safetensors and
// the shard index), in name order, hashed again. Notes, logs and reports beside them do not count; the
// tokenizer has its own digest.
std::string checkpoint_sha256(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    const bool weights =
        name.size() > 12 && (name.ends_with(".safetensors") || name == "model.safetensors.index.json");
    if (e.is_regular_file() && (name == "config.json" || weights)) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::string all;
  for (const auto& f : files) {
    const MappedFile mf(f);
    all += f.filename().string() + " " +
           sha256_hex(std::string_view(reinterpret_cast<const char*>(mf.data()), mf.size())) + "\n";
  }
  return sha256_hex(all);
}

EvalSet corpus_set(const CorpusSpec& spec, const Tokenizer& tok, const Model& m, const Budget& b,
                   Device device) {
  EvalSet s;
  s.name = corpus_spec_name(spec);
  s.spec = spec;
  PplData d;
  const PreparedTokens prep = prepare_corpora({spec}, PrepProtocol::Seed, tok);
  d.ppl.protocol = PplProtocol::Seed;
  d.ppl.ctx = b.seq_len;
  d.ppl.max_windows = b.windows;
  d.ppl.batch = 8;
  d.device = device;
  d.windows = make_ppl_windows(prep.tokens, d.ppl);
  TL_CHECK(int64_t(d.windows.size()) == b.windows,
           "study: {} gives {} windows of {} tokens, the budget needs {}", s.name, d.windows.size(),
           b.seq_len, b.windows);
  for (const auto& w : d.windows)
    for (int32_t t : w.tokens)
      TL_CHECK(t < m.config.vocab_size, "study: {} has token {} outside the model's vocabulary", s.name, t);
  d.run.corpus = s.name;
  d.run.corpus_tokens = prep.tokens.size();
  d.run.preparation = "seed";
  s.parts.push_back(std::move(d));
  return s;
}

EvalSet protocol_a_set(const Tokenizer& tok, Device device) {
  EvalSet s;
  s.name = kProtocolA;
  s.protocol_a = true;
  for (auto& ids : protocol_a_tokens(tok)) {
    PplData d;
    d.ppl.protocol = PplProtocol::Window;  // the whole sentence, every next-token target scored
    d.ppl.ctx = int64_t(ids.size());
    d.ppl.batch = 1;
    d.device = device;
    d.windows.push_back({std::move(ids), 0});
    d.run.corpus = kProtocolA;
    s.parts.push_back(std::move(d));
  }
  return s;
}

// Chain states no later run needs: those of finished chains and of levels below the last finished one.
void prune_states(const Context& ctx, const Plan& plan, const std::map<std::string, json>& done) {
  const fs::path dir = ctx.dir / "state";
  if (!fs::exists(dir)) return;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();  // c2-prune-s0-L1
    const size_t dash = name.rfind("-L");
    if (dash == std::string::npos) continue;
    const std::string chain = name.substr(0, dash);
    const int64_t level = std::atoll(name.c_str() + dash + 2);
    // the chain's runs ("c2-prune-s0" -> "c2/prune/s0/")
    std::string prefix = chain;
    std::replace(prefix.begin(), prefix.end(), '-', '/');
    bool needed = false;
    for (const auto& r : plan.runs) {
      if (r.id.rfind(prefix + "/", 0) != 0 || done.count(r.id)) continue;
      const std::string tail = r.id.substr(prefix.size() + 1);
      const int64_t want =
          tail == "snap" ? int64_t(ctx.budget.c3_levels.size()) - 1 : std::atoll(tail.c_str() + 1) - 1;
      needed = needed || want == level;
    }
    if (!needed) fs::remove_all(e.path());
  }
}

}  // namespace

StudyOutcome run_study(const StudyOptions& opt) {
  validate(opt);
  const auto t0 = Clock::now();
  const BitNetConfig cfg = read_hf_config(opt.model / "config.json");
  const Plan plan = make_plan(opt, cfg);
  StudyOutcome out;

  Context ctx;
  ctx.opt = opt;
  ctx.budget = plan.budget;
  ctx.dir = opt.out_dir;
  const fs::path tok_path = resolve_tokenizer_path(opt.model, opt.tokenizer);
  const std::string model_sha = checkpoint_sha256(opt.model);
  const std::string tok_sha = sha256_hex(read_file(tok_path));
  const json config = study_config(opt, plan.budget, model_sha, tok_sha);

  fs::create_directories(ctx.dir / "runs");
  const fs::path config_path = ctx.dir / "study.json";
  if (fs::exists(config_path)) {  // a resumed study must be the same study
    const json old = json::parse(read_file(config_path));
    for (const auto& [key, value] : config.items())
      TL_CHECK(key == "model" ||
                   (old.contains(key) && old[key] == value),  // the model is its sha256, not its path
               "study: the work folder {} holds a study with another {} ({} here, {} there); use another -o",
               ctx.dir.string(), key, value.dump(), old.contains(key) ? old[key].dump() : "none");
  } else {
    write_file_atomic(config_path, config.dump(2) + "\n");
  }

  std::map<std::string, json> done;
  for (const auto& r : plan.runs) {
    const fs::path f = ctx.dir / "runs" / (run_file_stem(r.id) + ".json");
    if (fs::exists(f)) done[r.id] = json::parse(read_file(f));
  }
  json timings = json::object();
  const fs::path timings_path = ctx.dir / "timings.json";
  if (fs::exists(timings_path)) timings = json::parse(read_file(timings_path));

  const bool work_left = done.size() < plan.runs.size();
  if (work_left) {
    ctx.tok.emplace(Tokenizer::from_file(tok_path));
    ctx.base = load_checkpoint(opt.model);
    TL_CHECK(ctx.tok->vocab_size() <= size_t(ctx.base.config.vocab_size),
             "study: the tokenizer has {} tokens, the model {}", ctx.tok->vocab_size(),
             ctx.base.config.vocab_size);
    ctx.sets.push_back(protocol_a_set(*ctx.tok, opt.device));
    for (const auto& e : opt.eval_corpora)
      ctx.sets.push_back(corpus_set(parse_corpus_spec(e), *ctx.tok, ctx.base, plan.budget, opt.device));
    const bool trains = std::any_of(plan.runs.begin(), plan.runs.end(), [&](const PlannedRun& r) {
      return !done.count(r.id) && (r.claim == ClaimId::C2 || r.claim == ClaimId::C3) && r.train_tokens > 0;
    });
    if (trains) {
      ctx.train_spec = parse_corpus_spec(opt.train_corpus);
      ctx.train_tokens = prepare_corpora({ctx.train_spec}, PrepProtocol::Seed, *ctx.tok).tokens;
      log_info("study: {} training tokens from {}", ctx.train_tokens.size(),
               corpus_spec_name(ctx.train_spec));
    }
  }

  double est_left = 0;
  for (const auto& r : plan.runs)
    if (!done.count(r.id)) est_left += r.est_seconds;
  double est_done = 0, actual_done = 0;
  const size_t total = plan.runs.size();
  size_t index = 0;
  for (const auto& r : plan.runs) {
    ++index;
    if (done.count(r.id)) {
      ++out.runs_skipped;
      continue;
    }
    if (opt.max_runs > 0 && out.runs_done >= opt.max_runs) {
      ++out.runs_left;
      continue;
    }
    // ETA: the remaining estimate scaled by how this session's runs compared with their estimates.
    const double scale = est_done > 0 ? actual_done / est_done : 1.0;
    log_info("study: [{}/{}] {} — {} (elapsed {:.0f} s, ETA {:.0f} s)", index, total, r.id, r.what,
             seconds_since(t0), est_left * scale);
    const auto r0 = Clock::now();
    json rec = execute_run(ctx, r);
    rec["id"] = r.id;
    write_file_atomic(ctx.dir / "runs" / (run_file_stem(r.id) + ".json"), rec.dump() + "\n");
    const double sec = seconds_since(r0);
    done[r.id] = std::move(rec);
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    timings[r.id] = {{"seconds", sec}, {"max_rss_gib", double(ru.ru_maxrss) / double(1 << 20)}};
    write_file_atomic(timings_path, timings.dump(2) + "\n");
    est_done += r.est_seconds;
    actual_done += sec;
    est_left -= r.est_seconds;
    ++out.runs_done;
    prune_states(ctx, plan, done);
  }
  prune_states(ctx, plan, done);
  if (out.runs_left > 0) {
    log_info("study: {} of {} runs recorded, {} left: run the same command again to continue", done.size(),
             plan.runs.size(), out.runs_left);
    out.seconds = seconds_since(t0);
    return out;
  }

  json agg_config = config;
  json claims = json::array();
  for (ClaimId c : opt.only.empty() ? parse_claims("all") : opt.only) claims.push_back(claim_name(c));
  agg_config["claims"] = claims;
  out.results = aggregate(agg_config, done);
  write_file_atomic(ctx.dir / "results.json", out.results.dump(2) + "\n");
  out.seconds = seconds_since(t0);
  double total_seconds = 0;
  for (const auto& [id, t] : timings.items())
    if (done.count(id)) total_seconds += t.at("seconds").get<double>();
  json meta = {{"command", opt.command},
               {"threads", num_threads()},
               {"device", describe_device(opt.device)},
               {"seconds_this_session", out.seconds},
               {"seconds_all_runs", total_seconds},
               {"runs_done", out.runs_done},
               {"runs_skipped", out.runs_skipped},
               {"timings", timings}};
  for (const auto& [name, svg] : report_plots(out.results)) write_file_atomic(ctx.dir / name, svg);
  write_file_atomic(ctx.dir / "report.md", report_markdown(out.results, meta));
  write_file_atomic(ctx.dir / "report.html", report_html(out.results, meta));
  return out;
}

}  // namespace tl::study
