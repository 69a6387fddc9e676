// ternlab ppl: perplexity of a checkpoint on a corpus under a named protocol (seed | llama | window), on the
// fp32 reference (default) or on the fast engine with a chosen LM head (what generate and serve run).
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "cpu/threads.hpp"
#include "formats/checkpoint.hpp"
#include "formats/import.hpp"
#include "infer/engine.hpp"
#include "workflow/perplexity.hpp"

namespace tl::cli {
namespace {

struct PplArgs {
  PplRunOptions opt;
  std::string protocol = "seed";
  std::string backend = "reference";  // the vocabulary of generate, chat, serve and bench
  std::string head = "auto";
  std::string device = "cpu";
  int threads = 0;
  bool json = false;
};

struct EngineRun {
  PplRun run;
  std::string head;  // the engine's LM head: f32, f16 or i8
  std::string isa;   // its kernels
};

// The windows scored by the fast engine (infer/engine.hpp Engine::prompt_logits): the same preparation as
// run_perplexity (workflow/perplexity.hpp), the logits from the engine instead of CpuModel.
EngineRun run_engine_perplexity(const PplRunOptions& opt, const std::string& head) {
  EngineOptions eo;
  eo.head = head;
  std::unique_ptr<Engine> engine;
  PplData data;
  std::error_code ec;
  if (std::filesystem::is_regular_file(opt.checkpoint, ec)) {  // a GGUF file: its own tokenizer
    ImportOptions io;
    io.hidden_act = opt.hidden_act;
    const GgufModelReader reader(opt.checkpoint, io);
    log_info("ppl: {}", reader.format().describe());
    Model shape;  // prepare_perplexity reads only the config; the weights go straight to the engine
    shape.config = reader.config();
    data = prepare_perplexity(opt, shape, &reader.tokenizer());
    engine = std::make_unique<Engine>(engine_source(reader), eo);
  } else {
    TL_CHECK(opt.hidden_act.empty(), "ppl: --hidden-act applies to GGUF files only");
    const Model model = load_checkpoint(opt.checkpoint);
    data = prepare_perplexity(opt, model);
    engine = std::make_unique<Engine>(engine_source(model), eo);
  }
  log_info("ppl: {}", engine->describe());
  const Engine& e = *engine;
  auto logits = [&e](std::span<const int32_t> toks, int64_t B, int64_t T, int64_t first,
                     std::vector<float>& out) { e.prompt_logits(toks, B, T, first, T - 1, out); };
  data.run.result = evaluate_ppl(data.windows, e.config().vocab_size, logits, data.ppl);
  return EngineRun{std::move(data.run), e.head_type(), kernel_isa_name(e.isa())};
}

void run_ppl(PplArgs& a) {
  TL_CHECK(a.backend == "reference" || a.backend == "engine",
           "ppl: --backend must be engine or reference, found '{}'", a.backend);
  TL_CHECK(a.head == "auto" || a.head == "f32" || a.head == "f16" || a.head == "i8",
           "ppl: --head must be auto, f32, f16 or i8, found '{}'", a.head);
  TL_CHECK(a.backend == "engine" || a.head == "auto",
           "ppl: --head {} needs --backend engine (the reference's LM head is always fp32)", a.head);
  a.opt.ppl.protocol = parse_ppl_protocol(a.protocol);
  a.opt.device = parse_device(a.device);
  TL_CHECK(a.opt.device == Device::Cpu || a.backend == "reference",
           "ppl: --device cuda scores with the GPU model; --backend engine is the CPU engine");
  require_device(a.opt.device);  // before any file is read
  validate(a.opt.ppl);
  set_num_threads(a.threads);
  PplRun r;
  std::string head = "f32", isa;  // the reference: CpuModel's fp32 head
  if (a.backend == "engine") {
    EngineRun er = run_engine_perplexity(a.opt, a.head);
    r = std::move(er.run);
    head = er.head;
    isa = er.isa;
  } else {
    r = run_perplexity(a.opt);
  }
  const auto& p = r.result;
  if (a.json) {
    nlohmann::json j = {{"checkpoint", r.checkpoint},
                        {"backend", a.backend},
                        {"head", head},
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
                        {"threads", r.threads},
                        {"device", r.device}};
    if (!isa.empty()) j["isa"] = isa;
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("perplexity of {}\n", r.checkpoint);
  if (a.backend == "engine")
    fmt::print("  backend      engine ({} kernels), LM head {}\n", isa, head);
  else if (a.opt.device == Device::Cuda)
    fmt::print("  backend      cuda ({})\n", r.device);
  else
    fmt::print("  backend      reference (fp32), LM head f32\n");
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
  cmd->add_option("--device", a->device, "cpu | cuda (the GPU computes each target's NLL)")
      ->capture_default_str();
  cmd->add_option("--protocol", a->protocol, "seed | llama | window")->capture_default_str();
  cmd->add_option("--corpus", a->opt.corpus,
                  "brown | wikitext | text | jsonl | sotu | moby-dick | kjv | tokens")
      ->capture_default_str();
  cmd->add_option("--input", a->opt.input,
                  "corpus file or directory (default: the Brown corpus), or the "
                  "token file for --corpus tokens");
  auto* split =
      cmd->add_option("--split", a->opt.split,
                      "train | validation | test | all (brown, sotu, moby-dick, kjv, WikiText directory)")
          ->capture_default_str();
  cmd->add_option("--tokenizer", a->opt.tokenizer,
                  "tokenizer.json (default: the checkpoint's or the GGUF's own)");
  cmd->add_option("--ctx", a->opt.ppl.ctx, "window length (default: seed 128, llama 512, window 512)")
      ->check(at_least(2));
  cmd->add_option("--windows", a->opt.ppl.max_windows,
                  "windows to score (default: seed 50 as the study, others all; -1 all)");
  cmd->add_option("--batch", a->opt.ppl.batch, "windows per forward pass")->capture_default_str();
  cmd->add_option("--backend", a->backend,
                  "reference (the fp32 CpuModel) | engine (the packed-kernel engine of generate and serve)")
      ->capture_default_str();
  cmd->add_option(
         "--head", a->head,
         "the engine's LM head: auto (as stored: f32 for checkpoints, f16 for GGUF) | f32 | f16 | i8")
      ->capture_default_str();
  add_threads_flag(cmd, a->threads);
  cmd->add_flag("--json", a->json, "machine-readable output");
  cmd->callback([a, split] {
    a->opt.split_given = split->count() > 0;
    run_ppl(*a);
  });
});

}  // namespace
}  // namespace tl::cli
