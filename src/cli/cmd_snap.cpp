// ternlab snap: trained latents -> exact ternary, verified, exported as packed and master, reloaded.
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "workflow/snap.hpp"

namespace tl::cli {
namespace {

struct SnapArgs {
  SnapRunOptions opt;
  std::string quant, dtype = "bf16";
  bool json = false;
};

void run_snap_cmd(SnapArgs& a) {
  if (!a.quant.empty()) {
    train::parse_weight_quant(a.quant);  // a bad name fails before the checkpoint is read
    a.opt.quant = a.quant;
  }
  TL_CHECK(a.dtype == "bf16" || a.dtype == "f32", "--dtype must be bf16 or f32, found '{}'", a.dtype);
  a.opt.dtype = a.dtype == "f32" ? DType::F32 : DType::BF16;
  TL_CHECK(a.opt.ppl_windows >= 0, "--windows must be >= 0, found {}", a.opt.ppl_windows);
  const SnapRun r = run_snap(a.opt);
  if (a.json) {
    fmt::print("{}\n", to_json(r).dump(2));
    return;
  }
  fmt::print(
      "snapped {} ({}): {} linear weights, 100% ternary, code sparsity {:.4f}%, {} values changed, {} "
      "pruned latents re-zeroed\n",
      a.opt.checkpoint.string(), r.mode, r.report.numel, 100 * r.report.code_sparsity, r.report.changed,
      r.report.masked_nonzero);
  if (r.ppl) fmt::print("  PPL (snapped, in memory) {:.4f}\n", *r.ppl);
  for (const auto* e : {&r.packed, &r.master})
    fmt::print("  {:<7} {}: reload codes differing {}, max scale error {:.3g}{}\n", e->layout, e->dir,
               e->code_mismatches, e->max_scale_rel_error,
               e->ppl ? fmt::format(", PPL {:.4f}", *e->ppl) : "");
  fmt::print("  wrote {0}/snap_report.json, {0}/snap_report.md\n", a.opt.out_dir.string());
}

const Registrar reg("snap", 62, [](CLI::App& app) {
  auto a = std::make_shared<SnapArgs>();
  auto* cmd =
      app.add_subcommand("snap",
                         "snap trained latents to exact ternary (masks re-applied), verify, export packed "
                         "and master layouts and reload them");
  cmd->add_option("checkpoint", a->opt.checkpoint, "trained checkpoint (pretrain / finetune output)")
      ->required();
  cmd->add_option("-o,--output", a->opt.out_dir, "output directory (packed/, master/, snap_report.*)")
      ->required();
  cmd->add_option("--quant", a->quant,
                  "absmean | fixed | rpt-fixed (default: the checkpoint's ternlab_train.json, else absmean)");
  cmd->add_option("--masks", a->opt.masks, "mask file (default: the one ternlab_train.json names)");
  cmd->add_option("--dtype", a->dtype, "float dtype of the exports: bf16 (Microsoft's) or f32")
      ->capture_default_str();
  cmd->add_option("--windows", a->opt.ppl_windows, "score N validation windows of each model (0: no PPL)")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "print the report as JSON");
  cmd->callback([a] { run_snap_cmd(*a); });
});

}  // namespace
}  // namespace tl::cli
