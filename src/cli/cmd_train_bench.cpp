// `ternlab train-bench CHECKPOINT`: tokens/s, memory and MFU of a QAT/STE training step per batch size.
#include <fmt/format.h>

#include <cmath>
#include <memory>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/parse.hpp"
#include "cpu/threads.hpp"
#include "workflow/train_bench.hpp"

namespace tl::cli {
namespace {

struct TrainBenchArgs {
  TrainBenchOptions opt;
  std::string batches = "8,16,64", device = "cpu", quant = "rpt-fixed", precision = "fp32";
  double peak_tflops = 989;
  int threads = 0;
  bool json = false;
};

const Registrar reg("train-bench", 64, [](CLI::App& app) {
  auto a = std::make_shared<TrainBenchArgs>();
  auto* cmd =
      app.add_subcommand("train-bench",
                         "speed of a QAT/STE training step (tokens/s, memory, MFU) per batch size, on "
                         "random tokens");
  cmd->add_option("checkpoint", a->opt.checkpoint, "checkpoint directory")->required();
  cmd->add_option("--device", a->device, "cpu | cuda")->capture_default_str();
  cmd->add_option("--batches", a->batches, "comma-separated batch sizes")->capture_default_str();
  cmd->add_option("--seq-len", a->opt.seq_len, "tokens per sequence")->capture_default_str();
  cmd->add_option("--steps", a->opt.steps, "timed steps per batch size")->capture_default_str();
  cmd->add_option("--warmup", a->opt.warmup, "untimed steps first")->capture_default_str();
  cmd->add_option("--quant", a->quant,
                  "weight quantizer: absmean | fixed | rpt-fixed (the study's deploy STE)")
      ->capture_default_str();
  cmd->add_option("--precision", a->precision, "fp32 (master weights) or bf16 (the study's)")
      ->capture_default_str();
  cmd->add_flag("--recompute", a->opt.recompute, "cuda: recompute activations in backward");
  cmd->add_flag("--shard-optimizer", a->opt.shard_optimizer,
                "several GPUs (ternlab launch): each GPU keeps 1/N of the AdamW moments");
  cmd->add_option("--peak-tflops", a->peak_tflops, "the device's dense bf16 peak, for MFU")
      ->capture_default_str();
  cmd->add_option("--seed", a->opt.seed, "seed of the random tokens and sampling")->capture_default_str();
  add_threads_flag(cmd, a->threads, "CPU threads (default: all cores)");
  cmd->add_flag("--json", a->json, "print JSON");
  cmd->callback([a] {
    auto& o = a->opt;
    o.device = parse_device(a->device);
    TL_CHECK(!o.recompute || o.device == Device::Cuda, "--recompute applies to --device cuda only");
    o.batches.clear();
    for (double b : parse_number_list(a->batches, "--batches")) {
      TL_CHECK(b >= 1 && b == std::floor(b), "--batches: every size must be a positive integer, found {}", b);
      o.batches.push_back(int64_t(b));
    }
    o.train.quant.weight_quant = train::parse_weight_quant(a->quant);
    TL_CHECK(a->precision == "fp32" || a->precision == "bf16", "--precision must be fp32 or bf16, found '{}'",
             a->precision);
    o.train.precision = a->precision == "bf16" ? ParamPrecision::Bf16 : ParamPrecision::Fp32;
    o.peak_flops = a->peak_tflops * 1e12;
    set_num_threads(a->threads);
    const ProcessGroup& g = process_group();
    TL_CHECK(
        !o.shard_optimizer || g.world > 1,
        "--shard-optimizer splits the AdamW moments over several GPUs: run under `ternlab launch --gpus N`");
    if (!g.writes_outputs() && log_level() < LogLevel::Warn) set_log_level(LogLevel::Warn);
    const TrainBenchResult r = run_train_bench(o);
    if (!g.writes_outputs()) return;  // rank 0 reports
    bool failed = false;
    for (const auto& x : r.rows) failed |= !x.error.empty();
    if (a->json)
      fmt::print("{}\n", to_json(r).dump(2));
    else
      fmt::print("{}", to_markdown(r));
    if (failed && r.rows.size() == 1) fail("train-bench: {}", r.rows[0].error);
  });
});

}  // namespace
}  // namespace tl::cli
