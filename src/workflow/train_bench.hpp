// `ternlab train-bench`: the speed of a QAT/STE training step (forward, backward, clipping, AdamW) at the
// study's shapes, on random tokens: tokens/s (mean ± sd over the timed steps), the backend's peak memory,
// and model FLOPs utilisation counted as 6 · parameters · tokens/s over the device's peak (times the number
// of GPUs under `ternlab launch`, where every batch is split over the ranks).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/trainer.hpp"
#include "workflow/device.hpp"

namespace tl {

struct TrainBenchOptions {
  std::filesystem::path checkpoint;
  Device device = Device::Cpu;
  std::vector<int64_t> batches = {8, 16, 64};
  int64_t seq_len = 128;
  int64_t steps = 10;        // timed steps per batch size
  int64_t warmup = 3;        // untimed steps first
  train::TrainConfig train;  // quantizer, precision, AdamW (steps, batch, seq_len are set per row)
  bool recompute = false;
  bool shard_optimizer = false;  // several GPUs (ternlab launch): AdamW moments split over the ranks
  double peak_flops = 989e12;    // dense bf16 FLOP/s of the device (H100 / H200 SXM)
  uint64_t seed = 0;
};

struct TrainBenchRow {
  int64_t batch = 0;
  double tokens_per_s = 0, tokens_per_s_sd = 0, seconds_per_step = 0;
  double tflops = 0, mfu = 0;
  size_t memory_bytes = 0;  // 0 on the CPU
  double first_loss = 0, last_loss = 0;
  std::string error;  // e.g. out of device memory: the row records it and the next size runs
};

struct TrainBenchResult {
  std::string checkpoint, device;
  int gpus = 1;  // data-parallel ranks (ternlab launch); tokens/s are the whole group's, memory one rank's
  int64_t params = 0;
  std::vector<TrainBenchRow> rows;
};

TrainBenchResult run_train_bench(const TrainBenchOptions& opt);
nlohmann::json to_json(const TrainBenchResult& r);
std::string to_markdown(const TrainBenchResult& r);

}  // namespace tl
