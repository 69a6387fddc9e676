// `ternlab prune`: a checkpoint in, a pruned checkpoint + keep-masks + accounting out (docs/pruning.md).
#pragma once
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "formats/checkpoint.hpp"
#include "prune/prune.hpp"

namespace tl {

// Keep-masks as a safetensors file: one U8 [out, in] tensor (values 0/1) per pruned weight, named like the
// weight, and __metadata__ {format, method, sparsity, level, seed, threshold, nm, match}. Written atomically.
void write_prune_masks(const std::filesystem::path& path, const std::vector<PruneMask>& masks,
                       const PruneReport& report);

struct PruneMaskFile {
  std::map<std::string, std::string> metadata;
  std::vector<PruneMask> masks;  // file order
};
// Reads and checks a mask file (U8, two dimensions, values 0 or 1). tl::Error otherwise.
PruneMaskFile read_prune_masks(const std::filesystem::path& path);

struct PruneRunOptions {
  std::filesystem::path checkpoint, out_dir;
  std::filesystem::path mask_out;          // default: out_dir/masks.safetensors
  std::optional<CheckpointLayout> layout;  // default: the input's layout
  PruneOptions prune;
};

struct PruneRun {
  PruneReport report;
  std::string layout;  // "master" or "packed": the layout written
  std::filesystem::path checkpoint, out_dir, mask_file, report_file, summary_file;
};

// Loads, prunes, saves the checkpoint (save_checkpoint; tokenizer.json and tokenizer_config.json copied),
// the masks, OUT_DIR/prune_report.json and OUT_DIR/prune_report.md. The output directory must differ from the
// input.
PruneRun run_prune(const PruneRunOptions& opt);

}  // namespace tl
