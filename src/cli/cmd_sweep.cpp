// ternlab sweep: PPL against sparsity for several pruning methods, each level from the original weights.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "cpu/threads.hpp"
#include "workflow/sweep.hpp"

namespace tl::cli {
namespace {

struct SweepArgs {
  SweepOptions opt;
  std::string levels = "0,10,20,30,50", methods = "seed,global,random", level = "latent", protocol = "seed";
  std::filesystem::path out_dir;
  std::string device = "cpu";
  int threads = 0;
  bool json = false;
};

void run_sweep_cmd(SweepArgs& a) {
  auto& o = a.opt;
  o.levels = parse_sweep_levels(a.levels);
  o.methods = parse_sweep_methods(a.methods);
  o.level = parse_prune_level(a.level);
  o.eval.ppl.protocol = parse_ppl_protocol(a.protocol);
  o.eval.device = parse_device(a.device);
  validate(o.eval.ppl);
  require_device(o.eval.device);
  set_num_threads(a.threads);
  const SweepResult r = run_sweep(o);
  if (!a.out_dir.empty()) write_sweep_outputs(r, a.out_dir);
  if (a.json) {
    fmt::print("{}\n", to_json(r).dump(2));
    return;
  }
  fmt::print("{}", sweep_table(r));
  fmt::print("  {} points in {:.1f} s\n", r.points.size(), r.seconds);
  if (!a.out_dir.empty())
    fmt::print("  wrote {0}/sweep.json, {0}/sweep.md, {0}/sweep.svg\n", a.out_dir.string());
}

const Registrar reg("sweep", 45, [](CLI::App& app) {
  auto a = std::make_shared<SweepArgs>();
  auto* cmd = app.add_subcommand("sweep",
                                 "PPL against sparsity: prune the original weights at each level with each "
                                 "method and score every point on the same windows");
  cmd->add_option("checkpoint", a->opt.eval.checkpoint, "checkpoint directory")->required();
  cmd->add_option("--levels", a->levels, "target sparsities in percent of the candidates, each in [0, 100)")
      ->capture_default_str();
  cmd->add_option("--methods", a->methods, "comma-separated: seed, global, per-tensor, random")
      ->capture_default_str();
  cmd->add_option("--level", a->level, "latent or codes (see ternlab prune)")->capture_default_str();
  cmd->add_option("--match", a->opt.random_match,
                  "random's control: auto (the first magnitude method listed), none, or a method")
      ->capture_default_str();
  cmd->add_option("--seed", a->opt.seed, "seed for sampling (seed) and selection (random)")
      ->capture_default_str();
  cmd->add_option("--protocol", a->protocol, "seed | llama | window")->capture_default_str();
  cmd->add_option("--corpus", a->opt.eval.corpus,
                  "brown | wikitext | text | jsonl | sotu | moby-dick | kjv | tokens")
      ->capture_default_str();
  cmd->add_option("--input", a->opt.eval.input, "corpus file or directory, or the token file");
  cmd->add_option("--split", a->opt.eval.split, "train | validation | test | all")->capture_default_str();
  cmd->add_option("--tokenizer", a->opt.eval.tokenizer, "tokenizer.json (default: the checkpoint's)");
  cmd->add_option("--ctx", a->opt.eval.ppl.ctx, "window length (default: seed 128, llama 512, window 512)")
      ->check(at_least(2));
  cmd->add_option("--windows", a->opt.eval.ppl.max_windows,
                  "windows to score (default: seed 50 as the study, others all; -1 all)");
  cmd->add_option("--batch", a->opt.eval.ppl.batch, "windows per forward pass")->capture_default_str();
  add_threads_flag(cmd, a->threads);
  cmd->add_option("--device", a->device, "cpu | cuda: where each point is scored")->capture_default_str();
  cmd->add_option("-o,--output", a->out_dir, "write sweep.json, sweep.md and sweep.svg here");
  cmd->add_flag("--json", a->json, "print everything as JSON");
  cmd->callback([a] { run_sweep_cmd(*a); });
});

}  // namespace
}  // namespace tl::cli
