// ternlab bench: llama-bench-style prompt processing (ppP) and generation (tgN) tokens/s over repetitions and
// a threads sweep, with the bandwidth bound for decoding beside each tg figure.
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "core/parse.hpp"
#include "cpu/threads.hpp"
#include "infer/bench.hpp"
#include "infer/engine.hpp"
#include "infer/loader.hpp"

namespace tl::cli {
namespace {

struct BenchArgs {
  std::string model, threads, json_out;
  LoadOptions load;
  BenchOptions bench;
  bool json = false;
};

// Decode time outside the timed phases (embedding rows, residual adds, activations, scaling, threading).
double other_seconds(const DecodeProfile& p) {
  return p.total - (p.ternary + p.head + p.norm + p.quantize + p.attention);
}
double gbs(double bytes, double seconds) {
  return seconds > 0 ? bytes / seconds / 1e9 : 0;
}

// Per-phase table of each profiled test: ms per token, share of the total, and weight read rate.
void print_profiles(const BenchReport& r) {
  for (const BenchStat& s : r.stats) {
    const DecodeProfile& p = s.profile;
    if (p.tokens == 0 || p.total <= 0) continue;
    const double per = 1e3 / double(p.tokens);
    fmt::print(
        "\n{} on {} threads, by phase ({} tokens):\n\n| phase | ms per token | share | weights read |\n"
        "|---|---|---|---|\n",
        s.test, s.threads, p.tokens);
    // Read rates only for tg: a prompt's GEMMs read each weight once for many tokens.
    const bool rates = s.test.starts_with("tg");
    auto row = [&](const char* name, double sec, double bytes) {
      fmt::print("| {} | {:.2f} | {:.1f}% | {} |\n", name, sec * per, 100 * sec / p.total,
                 rates && bytes > 0 ? fmt::format("{:.1f} GB/s", gbs(bytes, sec)) : "");
    };
    row("ternary products", p.ternary, p.ternary_bytes);
    row("LM head", p.head, p.head_bytes);
    row("RMSNorm", p.norm, 0);
    row("activation quantization", p.quantize, 0);
    row("attention (RoPE, cache, scores)", p.attention, 0);
    row("other", other_seconds(p), 0);
    row("total", p.total, 0);
  }
}

void run_bench_cmd(BenchArgs& a) {
  TL_CHECK(a.bench.repetitions >= 1, "--repetitions must be >= 1, found {}", a.bench.repetitions);
  if (!a.threads.empty())
    for (double t : parse_number_list(a.threads, "--threads")) {
      TL_CHECK(t >= 1 && t == std::floor(t), "--threads: {} is not a positive integer", t);
      a.bench.threads.push_back(int(t));
    }
  LoadedModel m = load_language_model(a.model, a.load);
  if (const auto* e = dynamic_cast<const Engine*>(m.lm.get())) a.bench.bytes_per_token = e->bytes_per_token();
  BenchReport r = run_bench(*m.lm, a.bench);
  r.model = a.model;
  nlohmann::json j = {{"model", r.model},
                      {"backend", r.backend},
                      {"bytes_per_token", a.bench.bytes_per_token},
                      {"repetitions", a.bench.repetitions},
                      {"results", nlohmann::json::array()},
                      {"bandwidth_gbs", nlohmann::json::object()}};
  for (const auto& [t, bw] : r.bandwidth_gbs) j["bandwidth_gbs"][std::to_string(t)] = bw;
  for (const BenchStat& s : r.stats) {
    nlohmann::json e = {{"test", s.test},
                        {"threads", s.threads},
                        {"tokens_per_s", s.tokens_per_s},
                        {"mean", s.mean},
                        {"stddev", s.stddev}};
    if (s.bandwidth_bound > 0) e["bandwidth_bound_tokens_per_s"] = s.bandwidth_bound;
    if (s.profile.tokens > 0) {
      const DecodeProfile& p = s.profile;
      const double per = 1e3 / double(p.tokens);  // seconds in total -> ms per token
      e["profile_ms_per_token"] = {{"total", p.total * per},         {"ternary", p.ternary * per},
                                   {"head", p.head * per},           {"norm", p.norm * per},
                                   {"quantize", p.quantize * per},   {"attention", p.attention * per},
                                   {"other", other_seconds(p) * per}};
      if (s.test.starts_with("tg"))  // one token per call: the weights stream once per token
        e["profile_gbs"] = {{"ternary", gbs(p.ternary_bytes, p.ternary)},
                            {"head", gbs(p.head_bytes, p.head)}};
    }
    j["results"].push_back(e);
  }
  if (!a.json_out.empty()) write_file_atomic(a.json_out, j.dump(2) + "\n");
  if (a.json) {
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("model    {}\nbackend  {}\n", r.model, r.backend);
  if (a.bench.bytes_per_token)
    fmt::print("reads    {:.1f} MB of weights per decoded token\n", double(a.bench.bytes_per_token) / 1e6);
  fmt::print("\n| test | threads | tokens/s (mean ± sd, {} runs) | bandwidth | bound (tokens/s) |\n",
             a.bench.repetitions);
  fmt::print("|---|---|---|---|---|\n");
  for (const BenchStat& s : r.stats) {
    double bw = 0;
    for (const auto& [t, b] : r.bandwidth_gbs)
      if (t == s.threads) bw = b;
    fmt::print("| {} | {} | {:.2f} ± {:.2f} | {} | {} |\n", s.test, s.threads, s.mean, s.stddev,
               bw > 0 ? fmt::format("{:.1f} GB/s", bw) : "-",
               s.bandwidth_bound > 0 ? fmt::format("{:.2f}", s.bandwidth_bound) : "-");
  }
  print_profiles(r);
}

const Registrar reg("bench", 75, [](CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Prompt and generation throughput (llama-bench style)");
  cmd->add_option("model", a->model, "checkpoint directory or GGUF file")->required();
  cmd->add_option("-p,--prompt", a->bench.prompt, "prompt tokens per pp test (0: skip)")
      ->capture_default_str();
  cmd->add_option("-n,--generate", a->bench.generate, "tokens per tg test (0: skip)")->capture_default_str();
  cmd->add_option("-r,--repetitions", a->bench.repetitions, "timed runs per test (after one warm-up)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "thread counts to sweep, e.g. 1,2 (default: all cores)");
  cmd->add_option("--seed", a->bench.seed, "seed of the random token ids")->capture_default_str();
  cmd->add_option("--backend", a->load.backend, "engine | reference | auto")->capture_default_str();
  cmd->add_option("--head", a->load.head, "engine LM head: auto | f32 | f16 | i8")->capture_default_str();
  cmd->add_flag("!--no-bandwidth", a->bench.bandwidth, "skip the read-bandwidth measurement");
  cmd->add_flag("--profile", a->bench.profile,
                "time the phases of each test (ternary products, LM head, norms, quantization, attention); "
                "engine backend only");
  cmd->add_option("--json-out", a->json_out, "also write the results as JSON to this file");
  cmd->add_flag("--json", a->json, "print JSON instead of the table");
  cmd->callback([a] { run_bench_cmd(*a); });
});

}  // namespace
}  // namespace tl::cli
