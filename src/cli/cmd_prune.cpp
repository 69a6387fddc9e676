// ternlab prune: magnitude / structured / random pruning of the ternary linears, with sparsity accounting.
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "workflow/prune.hpp"

namespace tl::cli {
namespace {

struct PruneArgs {
  PruneRunOptions opt;
  std::string method = "seed", level = "latent", nm = "2:4", layout, match, mask_out;
  double sparsity = -1;
  bool json = false;
};

void run_prune_cmd(PruneArgs& a) {
  auto& p = a.opt.prune;
  p.method = parse_prune_method(a.method);
  p.level = parse_prune_level(a.level);
  std::tie(p.nm_n, p.nm_m) = parse_nm(a.nm);
  if (!a.match.empty()) p.match = parse_prune_method(a.match);
  const bool needs_sparsity = p.method != PruneMethod::NM && !(p.match && *p.match == PruneMethod::NM);
  if (needs_sparsity) TL_CHECK(a.sparsity != -1, "prune: --sparsity P is required for method {}", a.method);
  p.sparsity = a.sparsity == -1 ? 0 : a.sparsity;
  if (!a.layout.empty()) {
    if (a.layout == "master" || a.layout == "bf16") {
      a.opt.layout = CheckpointLayout::Master;
    } else if (a.layout == "packed") {
      a.opt.layout = CheckpointLayout::Packed;
    } else {
      fail("--layout must be master or packed, found '{}'", a.layout);
    }
  }
  a.opt.mask_out = a.mask_out;
  const PruneRun r = run_prune(a.opt);
  const PruneReport& rep = r.report;
  if (a.json) {
    nlohmann::json j = to_json(rep);
    j["checkpoint"] = r.checkpoint.string();
    j["output"] = r.out_dir.string();
    j["layout"] = r.layout;
    j["mask_file"] = r.mask_file.string();
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("pruned {} -> {} ({} layout): method {}, level {}, target {}%\n", r.checkpoint.string(),
             r.out_dir.string(), r.layout, a.method, a.level,
             p.method == PruneMethod::NM ? 100.0 * (p.nm_m - p.nm_n) / p.nm_m : p.sparsity);
  if (rep.threshold) fmt::print("  threshold {:.6g} ({} samples)\n", *rep.threshold, rep.samples);
  fmt::print(
      "  {} linear tensors, {} weights, {} candidates; pruned {} ({:.4f}% of candidates), {} with a "
      "non-zero code\n",
      rep.tensors.size(), rep.numel, rep.candidates, rep.pruned, 100 * rep.pruned_frac_of_candidates,
      rep.pruned_code_nonzero);
  fmt::print(
      "  latent sparsity {:.4f}% -> {:.4f}%   zero codes {:.4f}% -> {:.4f}%   codes changed {} ({:.4f}%)\n",
      100 * rep.latent_sparsity_before, 100 * rep.latent_sparsity_after, 100 * rep.code_zero_before,
      100 * rep.code_zero_after, rep.codes_changed,
      rep.numel ? 100.0 * double(rep.codes_changed) / double(rep.numel) : 0.0);
  fmt::print("  scale change (after/before - 1): mean {:+.4f}%  min {:+.4f}%  max {:+.4f}%\n",
             100 * rep.scale_rel_change_mean, 100 * rep.scale_rel_change_min, 100 * rep.scale_rel_change_max);
  std::vector<const TensorPruneStats*> top;
  for (const auto& t : rep.tensors) top.push_back(&t);
  std::stable_sort(top.begin(), top.end(),
                   [](auto* x, auto* y) { return x->codes_changed > y->codes_changed; });
  top.resize(std::min<size_t>(top.size(), 10));
  fmt::print("  {:<44} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "tensor (most codes changed)", "pruned%", "latent0%",
             "code0%", "changed", "scale%");
  for (const auto* t : top)
    fmt::print("  {:<44} {:>9.3f} {:>9.3f} {:>9.3f} {:>9} {:>+9.3f}\n", t->name,
               t->candidates ? 100.0 * double(t->pruned) / double(t->candidates) : 0.0,
               100 * t->latent_sparsity_after, 100 * t->code_zero_after, t->codes_changed,
               100 * t->scale_rel_change);
  fmt::print("  wrote {}, {}, {}\n", r.mask_file.string(), r.report_file.string(), r.summary_file.string());
}

const Registrar reg("prune", 40, [](CLI::App& app) {
  auto a = std::make_shared<PruneArgs>();
  auto* cmd = app.add_subcommand("prune",
                                 "prune the ternary linears of a checkpoint (magnitude, N:M or random) and "
                                 "account for the change of codes and scales");
  cmd->add_option("checkpoint", a->opt.checkpoint, "checkpoint directory")->required();
  cmd->add_option("-o,--output", a->opt.out_dir, "output checkpoint directory (not the input)")->required();
  cmd->add_option("--method", a->method,
                  "seed (the study's sampled global threshold), global (exact), per-tensor, nm, random")
      ->capture_default_str();
  cmd->add_option("--sparsity", a->sparsity,
                  "percent of the candidate (non-zero) weights to prune, [0, 100)");
  cmd->add_option("--nm", a->nm, "N:M for method nm (keep N of every M consecutive inputs)")
      ->capture_default_str();
  cmd->add_option("--level", a->level, "latent (zero the smallest latents) or codes (only non-zero codes)")
      ->capture_default_str();
  cmd->add_option("--match", a->match, "random only: prune as many per tensor as this method would");
  cmd->add_option("--seed", a->opt.prune.seed, "seed for sampling (seed) and selection (random)")
      ->capture_default_str();
  cmd->add_option("--layout", a->layout, "master or packed (default: the input's)");
  cmd->add_option("--mask-out", a->mask_out, "mask file (default OUT_DIR/masks.safetensors)");
  cmd->add_flag("--json", a->json, "print the report as JSON");
  cmd->callback([a] { run_prune_cmd(*a); });
});

}  // namespace
}  // namespace tl::cli
