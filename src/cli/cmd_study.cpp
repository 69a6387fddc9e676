// ternlab study: the RPT study end to end — every claim with its controls, seeds, intervals and verdicts
// (docs/study.md).
#include <fmt/format.h>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "cpu/threads.hpp"
#include "formats/hf_config.hpp"
#include "study/study.hpp"

namespace tl::cli {
namespace {

struct StudyArgs {
  study::StudyOptions opt;
  std::vector<std::string> eval_corpora;
  std::string device = "cpu", only = "all", precision = "fp32";
  int threads = 0;
  bool plan = false;
};

void run_study_cmd(StudyArgs& a, const std::string& command) {
  auto& o = a.opt;
  if (!a.eval_corpora.empty()) o.eval_corpora = a.eval_corpora;
  o.device = parse_device(a.device);
  o.only = study::parse_claims(a.only);
  TL_CHECK(a.precision == "fp32" || a.precision == "bf16", "--precision: expected fp32 or bf16, found '{}'",
           a.precision);
  o.precision = a.precision == "bf16" ? ParamPrecision::Bf16 : ParamPrecision::Fp32;
  o.command = command;
  set_num_threads(a.threads);
  study::validate(o);
  if (a.plan) {
    const study::Plan plan = study::make_plan(o, read_hf_config(o.model / "config.json"));
    fmt::print("{}", study::plan_table(plan));
    return;
  }
  require_device(o.device);
  const study::StudyOutcome r = study::run_study(o);
  if (r.runs_left > 0) {
    fmt::print("  {} runs done, {} reused, {} left ({:.1f} s); run the same command again to continue\n",
               r.runs_done, r.runs_skipped, r.runs_left, r.seconds);
    return;
  }
  fmt::print("{:<24} {}\n", "claim", "verdict");
  for (const auto& v : r.results.at("verdicts"))
    fmt::print("{:<24} {}\n", v.at("id").get<std::string>(), v.at("verdict").get<std::string>());
  fmt::print("  {} runs done, {} reused, {:.1f} s; report: {}/report.md, {}/report.html, {}/results.json\n",
             r.runs_done, r.runs_skipped, r.seconds, o.out_dir.string(), o.out_dir.string(),
             o.out_dir.string());
}

const Registrar reg("study", 58, [](CLI::App& app) {
  auto a = std::make_shared<StudyArgs>();
  auto* cmd =
      app.add_subcommand("study",
                         "the RPT study end to end: every claim with its controls over several seeds, "
                         "intervals and a verdict per claim, in one resumable work folder and report");
  cmd->add_option("model", a->opt.model, "checkpoint directory (HF layout)")->required();
  cmd->add_option("-o,--output", a->opt.out_dir, "the work folder (resumable; rerun to continue)")
      ->required();
  cmd->add_option("--train-corpus", a->opt.train_corpus,
                  "what C2 and C3 fine-tune on: KIND[:SPLIT][=PATH] (brown, wikitext, text, jsonl, sotu, "
                  "moby-dick, kjv)")
      ->capture_default_str();
  cmd->add_option(
      "--eval-corpus", a->eval_corpora,
      "evaluation corpus, repeatable: the first is the held-out split of the training corpus, the "
      "others the domain-shift control (default: sotu:test, brown:test, moby-dick)");
  cmd->add_option("--seeds", a->opt.seeds, "seeds of every stochastic choice")->capture_default_str();
  cmd->add_option("--seed", a->opt.seed, "base seed")->capture_default_str();
  cmd->add_option("--scale", a->opt.scale, "small | full (the study's own budgets)")->capture_default_str();
  cmd->add_option("--only", a->only, "claims to run: c1,c2,c3,c4,c5 or all")->capture_default_str();
  cmd->add_flag("--plan", a->plan, "print every run, its token budget and an estimated time; run nothing");
  cmd->add_option("--device", a->device, "cpu | cuda (C5's hooks and the GGUF engine run on the CPU)")
      ->capture_default_str();
  cmd->add_option("--windows", a->opt.windows, "override: evaluation windows per corpus");
  cmd->add_option("--steps", a->opt.steps, "override: fine-tune steps per level (C2, C3)");
  cmd->add_option("--batch", a->opt.batch, "override: fine-tune batch (C2, C3)");
  cmd->add_option("--max-runs", a->opt.max_runs,
                  "stop after this many new runs (time-boxed work; rerun to continue; no report until done)");
  cmd->add_option("--bootstrap", a->opt.bootstrap, "resamples of every bootstrap")->capture_default_str();
  cmd->add_option("--min-effect", a->opt.min_effect, "δ of the verdict rule, nats per token")
      ->capture_default_str();
  cmd->add_option("--precision", a->precision, "master weights while fine-tuning: fp32 | bf16")
      ->capture_default_str();
  cmd->add_flag("--recompute", a->opt.recompute, "cuda: recompute activations in backward (less GPU memory)");
  cmd->add_option("--tokenizer", a->opt.tokenizer, "tokenizer.json (default: the model's)");
  add_threads_flag(cmd, a->threads);
  cmd->callback([a] { run_study_cmd(*a, command_line()); });
});

}  // namespace
}  // namespace tl::cli
