// ternlab actprune: the RPT study's activation pruning (rpt-spec §6.5) on a checkpoint, with the controls
// it lacked: split writes, a per-token quantile and a random mask at equal count. See docs/actprune.md.
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/actprune.hpp"
#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "cpu/threads.hpp"
#include "formats/checkpoint.hpp"
#include "text/corpus.hpp"
#include "text/tokenizer.hpp"
#include "workflow/perplexity.hpp"

namespace tl::cli {
namespace {

namespace fs = std::filesystem;

struct ActPruneArgs {
  PplRunOptions eval;
  std::string modes = "study,split,per-token,random", levels = "10,20,30,40,50,60,70,80,90";
  std::string protocol = "seed";
  fs::path prompts_file, out_dir;
  ActPruneOptions opt;
  int threads = 0;
  bool json = false, no_stop = false, no_natural = false;
};

// One prompt per non-blank line.
std::vector<std::string> read_prompts(const fs::path& path) {
  std::ifstream in(path);
  TL_CHECK(in.good(), "--prompts-file: cannot read {}", path.string());
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) out.push_back(line);
  }
  TL_CHECK(!out.empty(), "--prompts-file: {} has no prompt (one per non-blank line)", path.string());
  return out;
}

void run_actprune_cmd(ActPruneArgs& a) {
  // Every flag is checked before the checkpoint is read.
  auto& o = a.opt;
  o.modes = parse_prune_modes(a.modes);
  o.levels = parse_prune_levels(a.levels);
  o.stop_rule = !a.no_stop;
  o.natural = !a.no_natural;
  if (!a.prompts_file.empty()) o.prompts = read_prompts(a.prompts_file);
  validate(o);
  a.eval.ppl.protocol = parse_ppl_protocol(a.protocol);
  validate(a.eval.ppl);
  if (a.eval.corpus != "tokens") parse_corpus_kind(a.eval.corpus);
  parse_split(a.eval.split);
  set_num_threads(a.threads);

  const Model model = load_checkpoint(a.eval.checkpoint);
  const fs::path tok_path = resolve_tokenizer_path(a.eval.checkpoint, a.eval.tokenizer);
  const Tokenizer tok = Tokenizer::from_file(tok_path);
  const PplData data = prepare_perplexity(a.eval, model);
  CpuModel cpu(model);
  const ActPruneResult r = run_actprune(cpu, data.windows, data.ppl, tok, o);

  nlohmann::json j = to_json(r);
  const auto& run = data.run;
  j["checkpoint"] = run.checkpoint;
  j["corpus"] = run.corpus;
  j["split"] = run.split;
  j["input"] = run.input;
  j["preparation"] = run.preparation;
  j["corpus_tokens"] = run.corpus_tokens;
  j["tokenizer"] = tok_path.string();
  j["bos_id"] = tok.bos_id();
  j["eos_id"] = tok.eos_id();
  j["threads"] = num_threads();
  const std::string title = fmt::format("Activation pruning of {} ({}{})", run.checkpoint, run.corpus,
                                        run.split.empty() ? "" : " / " + run.split);
  if (!a.out_dir.empty()) {
    fs::create_directories(a.out_dir);
    write_file_atomic(a.out_dir / "actprune.json", j.dump(2) + "\n");
    write_file_atomic(a.out_dir / "actprune.md", to_markdown(r, title));
  }
  if (a.json) {
    fmt::print("{}\n", j.dump(2));
    return;
  }
  const auto& b = r.baseline;
  fmt::print("{}\n", title);
  fmt::print(
      "  {} layers; PPL protocol {} ({} windows x {} tokens, {} scored); {} prompts x {} new tokens\n\n",
      r.layers, b.protocol, b.windows, b.ctx, b.tokens_scored, o.prompts.size(), o.max_new);
  fmt::print("{}", actprune_table(r));
  fmt::print(
      "\n  % zeroed: elements pruned over the PPL pass; % energy: their share of the squared magnitude.\n"
      "  Continuations are greedy ({} prompts, all in the JSON / Markdown). {:.2f} s, {} threads\n",
      o.prompts.size(), r.seconds, num_threads());
  if (!a.out_dir.empty()) fmt::print("  wrote {0}/actprune.json, {0}/actprune.md\n", a.out_dir.string());
}

const Registrar reg("actprune", 55, [](CLI::App& app) {
  auto a = std::make_shared<ActPruneArgs>();
  a->eval.split = "validation";  // the study scores WikiText-2 validation
  auto* cmd = app.add_subcommand("actprune",
                                 "the RPT study's activation pruning (per-layer percentile of the block "
                                 "corrections) with split, per-token and random-mask controls");
  cmd->add_option("checkpoint", a->eval.checkpoint, "checkpoint directory")->required();
  cmd->add_option("--modes", a->modes, "comma-separated: study, split, per-token, random")
      ->capture_default_str();
  cmd->add_option("--levels", a->levels, "percentiles P, each in [0, 100), increasing (0: the baseline)")
      ->capture_default_str();
  cmd->add_option("--seed", a->opt.seed, "seed of the random masks")->capture_default_str();
  cmd->add_option("--protocol", a->protocol, "seed | llama | window")->capture_default_str();
  cmd->add_option("--corpus", a->eval.corpus,
                  "brown | wikitext | text | jsonl | sotu | moby-dick | kjv | tokens")
      ->capture_default_str();
  cmd->add_option("--input", a->eval.input, "corpus file or directory, or the token file");
  cmd->add_option("--split", a->eval.split, "train | validation | test | all")->capture_default_str();
  cmd->add_option("--tokenizer", a->eval.tokenizer, "tokenizer.json (default: the checkpoint's)");
  cmd->add_option("--ctx", a->eval.ppl.ctx, "window length (default: seed 128, llama 512, window 512)")
      ->check(at_least(2));
  cmd->add_option("--windows", a->eval.ppl.max_windows,
                  "windows to score (default: seed 50 as the study, others all; -1 all)");
  cmd->add_option("--batch", a->eval.ppl.batch, "windows per forward pass")->capture_default_str();
  cmd->add_option("--prompts-file", a->prompts_file,
                  "generation prompts, one per line (default: the study's three)");
  cmd->add_option("--max-new", a->opt.max_new, "new tokens per greedy generation")->capture_default_str();
  cmd->add_flag("--no-stop", a->no_stop, "run every level (the study stops a mode once PPL > 10x baseline)");
  cmd->add_flag("--no-natural", a->no_natural, "skip the natural-sparsity statistics of the baseline");
  add_threads_flag(cmd, a->threads);
  cmd->add_flag("--json", a->json, "machine-readable output");
  cmd->add_option("-o,--out", a->out_dir, "write actprune.json and actprune.md here");
  cmd->callback([a] { run_actprune_cmd(*a); });
});

}  // namespace
}  // namespace tl::cli
