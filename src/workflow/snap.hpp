// `ternlab snap`: a trained latent checkpoint -> the exact ternary model training ran, verified, exported in
// both Microsoft layouts and reloaded to prove it (rpt-spec §5.5-§5.7 with one quantizer, §10.1.1).
#pragma once
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/dtype.hpp"
#include "train/snap.hpp"

namespace tl {

struct SnapRunOptions {
  std::filesystem::path checkpoint, out_dir;
  // Unset: from <checkpoint>/ternlab_train.json (written by pretrain / finetune), else absmean.
  std::optional<std::string> quant;
  std::filesystem::path masks;  // unset: the one ternlab_train.json names, if any
  DType dtype = DType::BF16;    // of the exports' float tensors (Microsoft's: bf16)
  int64_t ppl_windows = 0;      // > 0: PPL (seed protocol, Brown validation) of the snapped model and reloads
};

struct SnapExport {
  std::string layout, dir;
  double max_scale_rel_error = 0;  // of the reloaded effective scales against the snapped ones
  size_t code_mismatches = 0;      // reloaded codes that differ from the snapped model's (must be 0)
  std::optional<double> ppl;
};

struct SnapRun {
  train::SnapReport report;
  std::string mode;
  size_t masked_tensors = 0;
  std::optional<double> ppl;  // of the snapped model in memory
  SnapExport packed, master;
};

// Errors: no checkpoint, an unknown mode, a mask file that does not fit, a failed verification or a reload
// whose codes differ (then nothing is left half-written: each export is a complete checkpoint or absent).
SnapRun run_snap(const SnapRunOptions& opt);
nlohmann::json to_json(const SnapRun& r);
std::string to_markdown(const SnapRun& r, const SnapRunOptions& opt);

}  // namespace tl
