// ternlab ppl: perplexity of a checkpoint on a corpus under a named protocol (seed | llama | window).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "cpu/threads.hpp"
#include "workflow/perplexity.hpp"

namespace tl::cli {
namespace {

struct PplArgs {
  PplRunOptions opt;
  std::string protocol = "seed";
  int threads = 0;
  bool json = false;
};

void run_ppl(PplArgs& a) {
  a.opt.ppl.protocol = parse_ppl_protocol(a.protocol);
  validate(a.opt.ppl);
  TL_CHECK(a.threads >= 0, "--threads must be >= 0, found {}", a.threads);
  set_num_threads(a.threads);
  const PplRun r = run_perplexity(a.opt);
  const auto& p = r.result;
  if (a.json) {
    nlohmann::json j = {{"checkpoint", r.checkpoint},
                        {"protocol", p.protocol},
                        {"corpus", r.corpus},
                        {"split", r.split},
                        {"input", r.input},
                        {"preparation", r.preparation},
                        {"corpus_tokens", r.corpus_tokens},
                        {"ctx", p.ctx},
                        {"windows", p.windows},
                        {"tokens_scored", p.tokens_scored},
                        {"mean_nll", p.mean_nll},
                        {"nll_stderr", p.nll_stderr},
                        {"ppl", p.ppl},
                        {"ppl_stderr", p.ppl_stderr},
                        {"seconds", p.seconds},
                        {"tokens_per_s", p.tokens_per_s},
                        {"threads", r.threads}};
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("perplexity of {}\n", r.checkpoint);
  fmt::print("  protocol     {} (ctx {}, {} windows, {} tokens scored)\n", p.protocol, p.ctx, p.windows,
             p.tokens_scored);
  fmt::print("  corpus       {}{}{} — {} tokens after {} preparation\n", r.corpus,
             r.split.empty() ? "" : " / " + r.split, r.input.empty() ? "" : " (" + r.input + ")",
             r.corpus_tokens, r.preparation);
  fmt::print("  mean NLL     {:.4f} ± {:.4f} nats/token\n", p.mean_nll, p.nll_stderr);
  fmt::print("  PPL          {:.4f} ± {:.4f}\n", p.ppl, p.ppl_stderr);
  fmt::print("  speed        {:.1f} tokens/s ({} threads, {:.2f} s)\n", p.tokens_per_s, r.threads, p.seconds);
}

const Registrar reg("ppl", 30, [](CLI::App& app) {
  auto a = std::make_shared<PplArgs>();
  auto* cmd = app.add_subcommand("ppl",
                                 "perplexity under a named protocol: seed (the RPT study's), llama "
                                 "(llama-perplexity's) or window");
  cmd->add_option("checkpoint", a->opt.checkpoint, "checkpoint directory or GGUF file")->required();
  cmd->add_option("--hidden-act", a->opt.hidden_act, "GGUF: relu2 | silu, for files that do not say");
  cmd->add_option("--protocol", a->protocol, "seed | llama | window")->capture_default_str();
  cmd->add_option("--corpus", a->opt.corpus, "brown | wikitext | text | jsonl | tokens")
      ->capture_default_str();
  cmd->add_option("--input", a->opt.input,
                  "corpus file or directory (default: the Brown corpus), or the "
                  "token file for --corpus tokens");
  cmd->add_option("--split", a->opt.split, "train | validation | test | all (Brown / WikiText directory)")
      ->capture_default_str();
  cmd->add_option("--tokenizer", a->opt.tokenizer,
                  "tokenizer.json (default: the checkpoint's or the GGUF's own)");
  cmd->add_option("--ctx", a->opt.ppl.ctx, "window length (default: seed 128, llama 512, window 512)");
  cmd->add_option("--windows", a->opt.ppl.max_windows,
                  "windows to score (default: seed 50 as the study, others all; -1 all)");
  cmd->add_option("--batch", a->opt.ppl.batch, "windows per forward pass")->capture_default_str();
  cmd->add_option("--threads", a->threads, "threads (default: all cores)");
  cmd->add_flag("--json", a->json, "machine-readable output");
  cmd->callback([a] { run_ppl(*a); });
});

}  // namespace
}  // namespace tl::cli
