// ternlab pretrain / finetune: the CPU training loop on a checkpoint and a corpus (docs/training.md).
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/parse.hpp"
#include "cpu/threads.hpp"
#include "workflow/train.hpp"

namespace tl::cli {
namespace {

struct TrainArgs {
  TrainRunOptions opt;
  std::string protocol = "seed", quant = "absmean", precision = "fp32", device = "cpu", save_dtype = "f32";
  bool no_act_quant = false;
  int threads = 0;
  bool json = false;
  // finetune
  std::string levels = "5,10", method = "seed";
  uint64_t prune_seed = 0;
  bool control = false;
};

// Flags shared by both commands; defaults are the study's fine-tune (rpt-spec §4.2, §11).
void add_train_flags(CLI::App* cmd, TrainArgs& a) {
  auto& o = a.opt;
  auto& t = o.train;
  cmd->add_option("checkpoint", o.checkpoint, "checkpoint directory to start from")->required();
  cmd->add_option("-o,--output", o.out_dir, "output directory (checkpoint, logs, reports, state)")
      ->required();
  cmd->add_option("--steps", t.steps, "optimizer steps (per level for finetune)")->capture_default_str();
  cmd->add_option("--batch", t.batch, "chunks per optimizer step")->capture_default_str();
  cmd->add_option("--grad-accum", t.grad_accum, "micro-batches per step (must divide --batch)")
      ->capture_default_str();
  cmd->add_option("--seq-len", t.seq_len, "tokens per chunk")->capture_default_str();
  cmd->add_option("--lr", t.adamw.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr", t.min_lr, "learning rate at the end of the cosine")->capture_default_str();
  cmd->add_option("--warmup", t.warmup, "linear warm-up steps (pretrain default: a tenth of --steps)");
  cmd->add_option("--weight-decay", t.adamw.weight_decay, "AdamW decoupled weight decay")
      ->capture_default_str();
  cmd->add_option("--beta1", t.adamw.beta1, "AdamW beta1")->capture_default_str();
  cmd->add_option("--beta2", t.adamw.beta2, "AdamW beta2")->capture_default_str();
  cmd->add_option("--clip", t.clip, "global gradient-norm limit (0: off)")->capture_default_str();
  cmd->add_option("--precision", a.precision, "fp32 (master weights) or bf16 (the study's pure-bf16 AdamW)")
      ->capture_default_str();
  cmd->add_option("--quant", a.quant,
                  "weight quantizer in the STE forward: absmean | fixed | rpt-fixed | off")
      ->capture_default_str();
  cmd->add_flag("--no-act-quant", a.no_act_quant, "train without the int8 activation quantizer");
  cmd->add_option("--seed", t.seed, "seed of the batch sampling")->capture_default_str();
  cmd->add_option("--train-tokens", o.train_tokens,
                  "training token file (ternlab data prepare) instead of --corpus");
  cmd->add_option("--corpus", o.corpus, "brown | wikitext | text | jsonl | sotu | moby-dick | kjv")
      ->capture_default_str();
  cmd->add_option("--input", o.input, "corpus file or directory (default: the Brown corpus)");
  cmd->add_option("--train-split", o.train_split, "split to train on")->capture_default_str();
  cmd->add_option("--val-split", o.val_split, "split of the validation perplexity")->capture_default_str();
  cmd->add_option("--tokenizer", o.tokenizer, "tokenizer.json (default: the checkpoint's)");
  cmd->add_option("--protocol", a.protocol, "validation PPL protocol: seed | llama | window")
      ->capture_default_str();
  cmd->add_option("--windows", o.ppl.max_windows, "validation windows (default: the protocol's)");
  cmd->add_option("--eval-every", o.eval_every, "validation PPL every N steps (0: at the ends only)")
      ->capture_default_str();
  cmd->add_option("--log-every", o.log_every, "a log line every N steps")->capture_default_str();
  cmd->add_option("--save-every", o.save_every, "resumable state every N steps (0: at the end of a run)")
      ->capture_default_str();
  cmd->add_flag("--resume", o.resume, "continue from the state in the output directory");
  add_threads_flag(cmd, a.threads);
  cmd->add_option("--device", a.device, "cpu | cuda: where steps and validation run")->capture_default_str();
  cmd->add_flag("--recompute", o.recompute, "cuda: recompute activations in backward (less memory)");
  cmd->add_flag("--shard-optimizer", o.shard_optimizer,
                "cuda, several GPUs (ternlab launch): each GPU keeps 1/N of the AdamW moments");
  cmd->add_option("--save-dtype", a.save_dtype,
                  "floats of the final checkpoint: f32 (the master weights) or bf16 (Microsoft's layout; the "
                  "resumable state stays f32)")
      ->capture_default_str();
  cmd->add_flag("--json", a.json, "print the report as JSON");
}

void prepare(TrainArgs& a) {
  auto& t = a.opt.train;
  t.quant.weight_quant = train::parse_weight_quant(a.quant);
  t.quant.act_quant = !a.no_act_quant;
  TL_CHECK(a.save_dtype == "f32" || a.save_dtype == "bf16", "--save-dtype must be f32 or bf16, found '{}'",
           a.save_dtype);
  a.opt.save_dtype = a.save_dtype == "bf16" ? DType::BF16 : DType::F32;
  TL_CHECK(a.precision == "fp32" || a.precision == "bf16", "--precision must be fp32 or bf16, found '{}'",
           a.precision);
  t.precision = a.precision == "bf16" ? ParamPrecision::Bf16 : ParamPrecision::Fp32;
  a.opt.ppl.protocol = parse_ppl_protocol(a.protocol);
  a.opt.device = parse_device(a.device);
  TL_CHECK(!a.opt.recompute || a.opt.device == Device::Cuda, "--recompute applies to --device cuda only");
  const ProcessGroup& g = process_group();  // one process of several (ternlab launch): checked here, early
  TL_CHECK(
      !a.opt.shard_optimizer || g.world > 1,
      "--shard-optimizer splits the AdamW moments over several GPUs: run under `ternlab launch --gpus N`");
  TL_CHECK(g.world == 1 || a.opt.device == Device::Cuda, "{} processes (one per GPU) need --device cuda",
           g.world);
  if (!g.writes_outputs() && log_level() < LogLevel::Warn) set_log_level(LogLevel::Warn);  // rank 0 reports
  if (t.warmup == -1) t.warmup = t.steps / 10;
  validate(t);  // impossible hyper-parameters fail before anything is read
  validate(a.opt.ppl);
  set_num_threads(a.threads);
  require_device(a.opt.device);
}

void print(const TrainRunResult& r, bool json) {
  if (!process_group().writes_outputs()) return;
  if (json) {
    fmt::print("{}\n", to_json(r).dump(2));
    return;
  }
  fmt::print("{} of {}: baseline PPL {:.4f}, unigram PPL {:.4f}\n", r.command, r.options.checkpoint.string(),
             r.baseline_ppl, r.unigram_ppl);
  fmt::print("  {:<14} {:>8} {:>10} {:>10} {:>12} {:>12} {:>10} {:>8}\n", "run", "target", "latent0%",
             "code0%", "PPL before", "PPL after", "loss", "tok/s");
  auto row = [](const TrainRunRecord& x) {
    fmt::print("  {:<14} {:>7}% {:>10.2f} {:>10.2f} {:>12.4f} {:>12.4f} {:>10.4f} {:>8.0f}\n", x.name,
               x.target_sparsity, 100 * x.latent_sparsity, 100 * x.code_sparsity, x.ppl_before.value_or(NAN),
               x.ppl_after.value_or(NAN), x.final_loss, x.tokens_per_s);
  };
  for (const auto& x : r.runs) row(x);
  for (const auto& x : r.control) row(x);
  fmt::print("  checkpoint {}{}  ({:.1f} s)\n", r.final_checkpoint,
             r.control_checkpoint.empty() ? "" : ", control " + r.control_checkpoint, r.seconds);
}

std::vector<double> parse_levels(const std::string& s) {
  const std::vector<double> out = parse_number_list(s, "--levels");
  for (double v : out) TL_CHECK(v >= 0 && v < 100, "--levels: every level must be in [0, 100), found {}", v);
  TL_CHECK(!out.empty(), "--levels is empty");
  return out;
}

const Registrar reg_pretrain("pretrain", 60, [](CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  a->opt.train.steps = 300;
  a->opt.train.batch = 16;
  a->opt.train.adamw.lr = 1e-3;
  a->opt.train.warmup = -1;  // auto: a tenth of the steps
  auto* cmd =
      app.add_subcommand("pretrain", "train a BitNet from its (random) initial checkpoint on a corpus");
  add_train_flags(cmd, *a);
  cmd->callback([a] {
    prepare(*a);
    print(run_pretrain(a->opt), a->json);
  });
});

const Registrar reg_finetune("finetune", 61, [](CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  a->opt.train.steps = 300;
  a->opt.train.batch = 64;
  auto* cmd = app.add_subcommand(
      "finetune", "progressive pruning with QAT/STE fine-tuning per level (the study's), with a 0% control");
  add_train_flags(cmd, *a);
  cmd->add_option("--levels", a->levels,
                  "target sparsities in percent, applied in order to the current weights")
      ->capture_default_str();
  cmd->add_option("--method", a->method, "pruning method: seed | global | per-tensor | random")
      ->capture_default_str();
  cmd->add_option("--prune-seed", a->prune_seed, "seed of the pruning's sampling / selection")
      ->capture_default_str();
  cmd->add_flag("--control", a->control, "also run the same schedule at 0% sparsity (same seed and tokens)");
  cmd->callback([a] {
    FinetuneOptions fo;
    fo.levels = parse_levels(a->levels);
    fo.method = parse_prune_method(a->method);
    fo.prune_seed = a->prune_seed;
    fo.control = a->control;
    prepare(*a);
    fo.run = a->opt;
    print(run_finetune(fo), a->json);
  });
});

}  // namespace
}  // namespace tl::cli
