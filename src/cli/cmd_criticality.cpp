// ternlab criticality: the RPT study's criticality measurements (rpt-spec §7) on a checkpoint, plus an
// ε × seed sweep with intervals. See docs/criticality.md.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "analysis/criticality.hpp"
#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "core/parse.hpp"
#include "cpu/threads.hpp"
#include "formats/checkpoint.hpp"
#include "text/tokenizer.hpp"
#include "workflow/criticality.hpp"

namespace tl::cli {
namespace {

namespace fs = std::filesystem;

struct CritArgs {
  fs::path checkpoint, input, tokenizer, out_dir;
  std::string corpus = "brown", split = "validation", eps = "1e-4,1e-3,1e-2,1e-1", ftle_eps = "1e-3,1e-2";
  std::string controls = "shuffled,random-init", device = "cpu";
  int texts = 20, chars = 500, max_tokens = 256, seeds = 3, threads = 0;
  uint64_t seed = 0, control_seed = 1;
  double outlier_factor = 0;
  bool json = false, exclude_bos = false;
};

// A comma-separated list of numbers; "none" (when allowed) is the empty list.
std::vector<double> number_list_flag(const std::string& s, const char* flag, bool allow_none) {
  if (allow_none && s == "none") return {};
  const std::vector<double> out = parse_number_list(s, flag);
  TL_CHECK(!out.empty(), "{}: no value given", flag);
  return out;
}

void run_criticality_cmd(CritArgs& a) {
  TL_CHECK(a.texts >= 1, "--texts must be at least 1, found {}", a.texts);
  TL_CHECK(a.chars >= 1, "--chars must be at least 1, found {}", a.chars);
  TL_CHECK(a.max_tokens >= 1, "--max-tokens must be at least 1, found {}", a.max_tokens);
  CriticalityOptions opt;
  opt.eps = number_list_flag(a.eps, "--eps", false);
  opt.ftle_eps = number_list_flag(a.ftle_eps, "--ftle-eps", true);
  opt.seeds = a.seeds;
  opt.seed = a.seed;
  opt.exclude_bos = a.exclude_bos;
  opt.outlier_factor = a.outlier_factor;
  const std::vector<std::string> controls =
      a.controls == "none" ? std::vector<std::string>{} : split_list(a.controls);
  validate_controls(controls);
  if (a.exclude_bos) opt.bos_id = 0;  // the real id is checked once the tokenizer is read
  validate(opt);                      // bad flags fail before the checkpoint is read
  const Device device = parse_device(a.device);
  require_device(device);
  set_num_threads(a.threads);

  const fs::path tok_path = resolve_tokenizer_path(a.checkpoint, a.tokenizer);
  const Tokenizer tok = Tokenizer::from_file(tok_path);
  opt.bos_id = tok.bos_id();
  TL_CHECK(!a.exclude_bos || opt.bos_id >= 0, "--exclude-bos: the tokenizer {} has no BOS token",
           tok_path.string());
  Model model = load_checkpoint(a.checkpoint);
  const int64_t max_len = std::min<int64_t>(a.max_tokens, model.config.max_position_embeddings);
  const auto ids = analysis_token_texts(tok, a.corpus, a.input, a.split, a.texts, a.chars, max_len);
  const std::string device_text = describe_device(device);
  const CriticalityReport rep = run_criticality_on(model, ids, opt, controls, a.control_seed, device);
  const CriticalityResult& r = rep.model;

  nlohmann::json j = to_json(rep);
  j["control_seed"] = a.control_seed;
  j["checkpoint"] = a.checkpoint.string();
  j["corpus"] = a.corpus;
  j["split"] = a.split;
  j["input"] = a.input.string();
  j["threads"] = num_threads();
  j["device"] = device_text;
  j["bos_id"] = tok.bos_id();  // -1: the tokenizer has none, so the texts start without BOS
  j["max_tokens"] = max_len;
  const std::string title =
      fmt::format("Criticality of {} ({} / {}, {})", a.checkpoint.string(), a.corpus, a.split, device_text);
  if (!a.out_dir.empty()) {
    fs::create_directories(a.out_dir);
    write_file_atomic(a.out_dir / "criticality.json", j.dump(2) + "\n");
    write_file_atomic(a.out_dir / "criticality.md", to_markdown(rep, title));
  }
  if (a.json) {
    fmt::print("{}\n", j.dump(2));
    return;
  }
  const auto& s = r.study;
  int64_t total = 0;
  for (auto t : r.text_tokens) total += t;
  fmt::print("{}\n", title);
  fmt::print(
      "  {} texts, {} tokens, {} layers; study view ε = {} (seed index 0); sweep ε = {} × {} seeds\n\n",
      r.text_tokens.size(), total, r.layers, opt.study_eps, a.eps, opt.seeds);
  // Per layer: the study's columns, then the median log-growth ln(δ_l/δ_(l-1)) and its 2.5-97.5% range
  // over texts × seeds at each ε.
  fmt::print("{:>5} {:>11} {:>11} {:>8} {:>8} {:>10}", "layer", "|input|", "|output|", "BR", "CR", "delta");
  for (const auto& e : r.sweep) fmt::print("  {:>26}", fmt::format("g(eps={:g})", e.eps));
  fmt::print("\n");
  for (int64_t l = 0; l < r.layers; ++l) {
    const size_t i = size_t(l);
    fmt::print("{:>5} {:>11.4g} {:>11.4g} {:>8.4f} {:>8.4f} {:>10.4g}", l, s.in_norm[i], s.out_norm[i],
               s.br[i], s.cr[i], s.D[i]);
    for (const auto& e : r.sweep) {
      const auto& g = e.growth[i];
      fmt::print("  {:>26}", fmt::format("{:+.4f} [{:+.3f},{:+.3f}]", g.median, g.p025, g.p975));
    }
    fmt::print("\n");
  }
  fmt::print(
      "\n  D_in {:.4g}   mean BR {:.4f} (std {:.4f}, min {:.4f} @{}, max {:.4f} @{}, {} in [0.95,1.05]) -> "
      "{}\n",
      s.D_in, s.avg_br, s.std_br, s.min_br, s.min_br_layer, s.max_br, s.max_br_layer, s.layers_in_band,
      s.br_label);
  fmt::print("  lambda {:.5f} -> {}   amplification {:.4f}x   SOC verdict: {}\n", s.lambda, s.lambda_label,
             s.amplification, s.verdict);
  fmt::print(
      "\n  sweep (study formulas on the mean over texts x seeds; per-sample lambda median [2.5%, 97.5%])\n");
  for (const auto& e : r.sweep)
    fmt::print(
        "  eps {:<8g} lambda {:+.5f}  amplification {:.4f}x  per-sample lambda {:+.5f} [{:+.5f}, {:+.5f}]\n",
        e.eps, e.lambda, e.amplification, e.lambda_samples.median, e.lambda_samples.p025,
        e.lambda_samples.p975);
  int64_t excluded = 0;
  for (auto e : r.text_excluded) excluded += e;
  if (opt.exclude_bos || opt.outlier_factor > 0)
    fmt::print("  {} of {} tokens excluded from the norms\n", excluded, total);
  if (!r.ftle.empty()) {
    fmt::print("\n  finite-time Lyapunov estimate (relative ε, renormalised every layer; median [95% CI])\n");
    for (const auto& f : r.ftle)
      fmt::print("  eps_rel {:<8g} FTLE {:+.5f} [{:+.5f}, {:+.5f}]  ({} samples, {} vanished)\n", f.eps_rel,
                 f.ftle.median, f.ftle.ci_lo, f.ftle.ci_hi, f.ftle.n, f.vanished);
  }
  double seconds = r.seconds;
  if (!rep.controls.empty()) {
    fmt::print("\n  null-model controls (same texts, noise and formulas)\n");
    fmt::print("  {:<12} {:>9} {:>10} {:>9}  {:<14}", "model", "mean BR", "lambda", "amplif.", "verdict");
    for (const auto& f : r.ftle) fmt::print(" {:>12}", fmt::format("FTLE {:g}", f.eps_rel));
    fmt::print("\n");
    auto row = [&](const std::string& name, const CriticalityResult& c) {
      fmt::print("  {:<12} {:>9.4f} {:>+10.5f} {:>8.4f}x  {:<14}", name, c.study.avg_br, c.study.lambda,
                 c.study.amplification, c.study.verdict);
      for (const auto& f : c.ftle) fmt::print(" {:>+12.5f}", f.ftle.median);
      fmt::print("\n");
    };
    row("model", r);
    for (const auto& [name, c] : rep.controls) {
      row(name, c);
      seconds += c.seconds;
    }
  }
  fmt::print("  ({:.2f} s, {}, {} threads)\n", seconds, device_text, num_threads());
}

const Registrar reg("criticality", 50, [](CLI::App& app) {
  auto a = std::make_shared<CritArgs>();
  auto* cmd = app.add_subcommand("criticality",
                                 "the RPT study's criticality measurements (branching ratio, perturbation "
                                 "profile, λ) with several ε and seeds");
  cmd->add_option("checkpoint", a->checkpoint, "checkpoint directory")->required();
  cmd->add_option("--corpus", a->corpus, "brown | wikitext | text | jsonl | sotu | moby-dick | kjv")
      ->capture_default_str();
  cmd->add_option("--split", a->split,
                  "train | validation | test (brown, sotu, moby-dick, kjv, WikiText directory)")
      ->capture_default_str();
  cmd->add_option("--input", a->input, "corpus file or directory (default: the Brown corpus)");
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json (default: the checkpoint's)");
  cmd->add_option("--texts", a->texts, "analysis texts (rows of > 100 characters)")->capture_default_str();
  cmd->add_option("--chars", a->chars, "characters kept of each text")->capture_default_str();
  cmd->add_option("--max-tokens", a->max_tokens, "tokens per text, BOS included")->capture_default_str();
  cmd->add_option("--eps", a->eps, "noise σ values of the sweep, comma-separated")->capture_default_str();
  cmd->add_option("--seeds", a->seeds, "noise draws per text and ε")->capture_default_str();
  cmd->add_option("--seed", a->seed, "base seed of the noise")->capture_default_str();
  cmd->add_option("--ftle-eps", a->ftle_eps,
                  "relative perturbation sizes of the finite-time Lyapunov estimate, or none")
      ->capture_default_str();
  cmd->add_flag("--exclude-bos", a->exclude_bos, "leave BOS tokens out of every norm");
  cmd->add_option("--exclude-outliers", a->outlier_factor,
                  "leave out tokens whose norm exceeds this factor × the median at any depth (0: off)")
      ->capture_default_str();
  cmd->add_option("--controls", a->controls, "null models run in the same pass: shuffled,random-init or none")
      ->capture_default_str();
  cmd->add_option("--control-seed", a->control_seed, "seed of the shuffle and of the random init")
      ->capture_default_str();
  cmd->add_option("--device", a->device, "cpu | cuda (the decoder blocks run on the GPU)")
      ->capture_default_str();
  add_threads_flag(cmd, a->threads);
  cmd->add_flag("--json", a->json, "machine-readable output");
  cmd->add_option("-o,--out", a->out_dir, "write criticality.json and criticality.md here");
  cmd->callback([a] { run_criticality_cmd(*a); });
});

}  // namespace
}  // namespace tl::cli
