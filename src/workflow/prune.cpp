#include "workflow/prune.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/file.hpp"
#include "core/log.hpp"
#include "formats/safetensors.hpp"
#include "workflow/init.hpp"

namespace tl {

namespace fs = std::filesystem;

void write_prune_masks(const fs::path& path, const std::vector<PruneMask>& masks, const PruneReport& report) {
  std::vector<TensorBlob> blobs;
  for (const auto& mk : masks) {
    TL_CHECK(mk.keep.size() == size_t(mk.out * mk.in), "prune: mask '{}' has {} entries, expected {}x{}",
             mk.name, mk.keep.size(), mk.out, mk.in);
    blobs.push_back({{mk.name, DType::U8, {mk.out, mk.in}}, std::span<const uint8_t>(mk.keep)});
  }
  std::map<std::string, std::string> meta{{"format", "ternlab-prune-mask"}};
  const auto opts = prune_options_json(report.options);
  for (const auto& [k, v] : opts.items()) meta[k] = v.is_string() ? v.get<std::string>() : v.dump();
  meta["threshold"] = report.threshold ? fmt::format("{}", *report.threshold) : "none";
  write_safetensors(path, blobs, meta);
}

PruneMaskFile read_prune_masks(const fs::path& path) {
  SafetensorsFile f(path);
  PruneMaskFile out;
  out.metadata = f.metadata();
  for (const auto& t : f.tensors()) {
    TL_CHECK(t.dtype == DType::U8 && t.shape.size() == 2, "{}: mask '{}' must be U8 [out, in], found {} {}",
             path.string(), t.name, dtype_name(t.dtype), shape_str(t.shape));
    const auto bytes = f.bytes(t);
    PruneMask mk{t.name, t.shape[0], t.shape[1], std::vector<uint8_t>(bytes.begin(), bytes.end())};
    const auto bad = std::find_if(mk.keep.begin(), mk.keep.end(), [](uint8_t b) { return b > 1; });
    TL_CHECK(bad == mk.keep.end(), "{}: mask '{}' holds {} at index {}; expected 0 or 1", path.string(),
             t.name, int(*bad), bad - mk.keep.begin());
    out.masks.push_back(std::move(mk));
  }
  return out;
}

PruneRun run_prune(const PruneRunOptions& opt) {
  TL_CHECK(!opt.out_dir.empty(), "prune: an output directory (-o) is required");
  std::error_code ec;
  const fs::path in_dir = fs::weakly_canonical(opt.checkpoint, ec);
  const fs::path out_dir = fs::weakly_canonical(opt.out_dir, ec);
  TL_CHECK(in_dir != out_dir, "prune: output directory {} is the input checkpoint; choose another -o",
           opt.out_dir.string());

  Model m = load_checkpoint(opt.checkpoint);
  // Checks the flags before the (possibly long) prune and before anything is written.
  validate_prune_options(opt.prune, m);
  const PruneMethod ranking = opt.prune.match.value_or(opt.prune.method);
  if (!m.fixed_scale.empty() && ranking != PruneMethod::NM && ranking != PruneMethod::Random)
    log_warn(
        "prune: {} is a packed checkpoint: every non-zero latent of a tensor is +-alpha, so magnitudes tie "
        "within a tensor and a threshold prunes whole tensors' non-zeros (docs/pruning.md)",
        opt.checkpoint.string());
  PruneRun run;
  run.checkpoint = opt.checkpoint;
  run.out_dir = opt.out_dir;
  PruneResult res = prune_model(m, opt.prune);

  const bool input_packed = !m.fixed_scale.empty();
  SaveOptions so;
  so.layout = opt.layout.value_or(input_packed ? CheckpointLayout::Packed : CheckpointLayout::Master);
  so.dtype = m.config.torch_dtype == "float32" ? DType::F32 : DType::BF16;
  run.layout = so.layout == CheckpointLayout::Packed ? "packed" : "master";
  fs::create_directories(opt.out_dir, ec);
  TL_CHECK(!ec, "prune: cannot create {}: {}", opt.out_dir.string(), ec.message());
  save_checkpoint(m, opt.out_dir, so);
  copy_tokenizer_files(opt.checkpoint, opt.out_dir);

  run.mask_file = opt.mask_out.empty() ? opt.out_dir / "masks.safetensors" : opt.mask_out;
  write_prune_masks(run.mask_file, res.masks, res.report);
  // Read back: a mask file that does not reproduce the masks is an error here, not in a later fine-tune.
  const PruneMaskFile back = read_prune_masks(run.mask_file);
  TL_CHECK(back.masks.size() == res.masks.size(), "prune: {} does not read back", run.mask_file.string());
  for (size_t i = 0; i < back.masks.size(); ++i)
    TL_CHECK(back.masks[i].name == res.masks[i].name && back.masks[i].keep == res.masks[i].keep,
             "prune: {} does not read back (tensor '{}')", run.mask_file.string(), res.masks[i].name);

  nlohmann::json j = to_json(res.report);
  j["checkpoint"] = opt.checkpoint.string();
  j["output"] = opt.out_dir.string();
  j["layout"] = run.layout;
  j["mask_file"] = run.mask_file.string();
  run.report_file = opt.out_dir / "prune_report.json";
  write_file_atomic(run.report_file, j.dump(2) + "\n");
  run.summary_file = opt.out_dir / "prune_report.md";
  write_file_atomic(run.summary_file,
                    to_markdown(res.report, fmt::format("Pruning of {}", opt.checkpoint.string())));
  run.report = std::move(res.report);
  return run;
}

}  // namespace tl
