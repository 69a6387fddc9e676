#include "workflow/train_bench.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/rng.hpp"
#include "formats/checkpoint.hpp"
#include "workflow/backends.hpp"
#include "workflow/train.hpp"

namespace tl {

TrainBenchResult run_train_bench(const TrainBenchOptions& opt) {
  TL_CHECK(!opt.batches.empty(), "train-bench: no batch sizes");
  for (int64_t b : opt.batches) TL_CHECK(b >= 1, "--batches: every size must be >= 1, found {}", b);
  TL_CHECK(opt.steps >= 2 && opt.warmup >= 0, "train-bench: --steps must be >= 2 and --warmup >= 0");
  TL_CHECK(opt.seq_len >= 2, "--seq-len must be at least 2");
  TL_CHECK(opt.peak_flops > 0, "--peak-tflops must be > 0");
  require_device(opt.device);
  TrainBenchResult r;
  r.checkpoint = opt.checkpoint.string();
  r.device = describe_device(opt.device);
  r.gpus = process_group().world;
  TL_CHECK(r.gpus == 1 || opt.device == Device::Cuda,
           "train-bench: {} processes (one per GPU) need --device cuda", r.gpus);
  Model original = load_checkpoint(opt.checkpoint);
  capture_fixed_scales(original, opt.train.quant.weight_quant);
  r.params = int64_t(original.params.size());
  TL_CHECK(opt.seq_len <= original.config.max_position_embeddings,
           "--seq-len {} exceeds the model's context {}", opt.seq_len,
           original.config.max_position_embeddings);

  // Random tokens: enough chunks that sampling rarely repeats; speed does not depend on them.
  const int64_t max_batch = *std::max_element(opt.batches.begin(), opt.batches.end());
  std::vector<int32_t> tokens(size_t(std::max<int64_t>(max_batch, 64) * 4 * opt.seq_len));
  Rng rng(opt.seed);
  for (auto& t : tokens) t = int32_t(rng.below(uint64_t(original.config.vocab_size)));

  for (int64_t batch : opt.batches) {
    TrainBenchRow row;
    row.batch = batch;
    try {
      Model m = original;
      train::TrainConfig c = opt.train;
      c.batch = batch;
      c.grad_accum = 1;
      c.seq_len = opt.seq_len;
      c.steps = opt.warmup + opt.steps;
      c.warmup = 0;
      c.seed = opt.seed;
      std::unique_ptr<StepBackend> backend;
      if (opt.device == Device::Cuda) {
        const ProcessGroup& g = process_group();
        TL_CHECK(batch % g.world == 0, "train-bench: batch {} does not split over {} GPUs", batch, g.world);
        StepBackendRequest req;
        req.quant = c.quant;
        req.max_tokens = batch / g.world * opt.seq_len;
        req.recompute = opt.recompute;
        req.shard_optimizer = opt.shard_optimizer;
        backend = make_step_backend(opt.device, req);
      }
      train::Trainer tr(m, c, tokens, {}, std::move(backend));
      std::vector<double> secs;
      for (int64_t s = 0; s < c.steps; ++s) {
        if (s == opt.warmup && gpu_step_profile_enabled()) gpu_step_profile_reset();  // timed steps only
        const auto t0 = std::chrono::steady_clock::now();
        const train::StepLog log = tr.step();
        if (tr.backend()) tr.backend()->synchronize();  // the step's AdamW is inside its time
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (s == 0) row.first_loss = log.loss;
        row.last_loss = log.loss;
        if (s >= opt.warmup) secs.push_back(dt);
      }
      double mean = 0;
      for (double x : secs) mean += x / double(secs.size());
      std::vector<double> tps;
      for (double x : secs) tps.push_back(double(batch * opt.seq_len) / x);
      double tmean = 0, tss = 0;
      for (double x : tps) tmean += x / double(tps.size());
      for (double x : tps) tss += (x - tmean) * (x - tmean);
      row.seconds_per_step = mean;
      row.tokens_per_s = double(batch * opt.seq_len) / mean;  // total tokens over total time
      row.tokens_per_s_sd = std::sqrt(tss / double(tps.size() - 1));
      row.tflops = 6.0 * double(r.params) * row.tokens_per_s / 1e12;
      row.mfu = row.tflops * 1e12 / (opt.peak_flops * process_group().world);
      if (tr.backend()) row.memory_bytes = tr.backend()->memory_bytes();
      if (gpu_step_profile_enabled())  // TERNLAB_CUDA_PROFILE=1: where a step's GPU time went
        log_info("train-bench: batch {}: GPU time by phase (per step)\n{}", batch,
                 gpu_step_profile_report(int(opt.steps)));
      log_info("train-bench: batch {}: {:.0f} ± {:.0f} tokens/s, {:.3f} s/step, {:.1f} TFLOP/s", batch,
               row.tokens_per_s, row.tokens_per_s_sd, row.seconds_per_step, row.tflops);
    } catch (const std::exception& e) {
      row.error = e.what();
      log_warn("train-bench: batch {}: {}", batch, row.error);
    }
    r.rows.push_back(row);
  }
  return r;
}

nlohmann::json to_json(const TrainBenchResult& r) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& x : r.rows) {
    nlohmann::json j = {{"batch", x.batch}};
    if (!x.error.empty()) {
      j["error"] = x.error;
    } else {
      j.update({{"tokens_per_s", x.tokens_per_s},
                {"tokens_per_s_sd", x.tokens_per_s_sd},
                {"seconds_per_step", x.seconds_per_step},
                {"tflops", x.tflops},
                {"mfu", x.mfu},
                {"memory_gib", double(x.memory_bytes) / double(1ull << 30)},
                {"first_loss", x.first_loss},
                {"last_loss", x.last_loss}});
    }
    rows.push_back(j);
  }
  return {{"checkpoint", r.checkpoint},
          {"device", r.device},
          {"gpus", r.gpus},
          {"params", r.params},
          {"rows", rows}};
}

std::string to_markdown(const TrainBenchResult& r) {
  std::string s =
      fmt::format("train-bench of {} on {}{} ({} parameters)\n\n", r.checkpoint, r.device,
                  r.gpus > 1 ? fmt::format(" x {} (data parallel; memory per GPU)", r.gpus) : "", r.params);
  s +=
      "| batch | tokens/s | s/step | TFLOP/s (6·N·tok/s) | MFU | memory (GiB) |\n|---|---|---|---|---|---|\n";
  for (const auto& x : r.rows) {
    if (!x.error.empty()) {
      s += fmt::format("| {} | {} | | | | |\n", x.batch, x.error);
      continue;
    }
    s += fmt::format("| {} | {:.0f} ± {:.0f} | {:.4f} | {:.1f} | {:.1f}% | {:.2f} |\n", x.batch,
                     x.tokens_per_s, x.tokens_per_s_sd, x.seconds_per_step, x.tflops, 100 * x.mfu,
                     double(x.memory_bytes) / double(1ull << 30));
  }
  return s;
}

}  // namespace tl
