#include "workflow/snap.hpp"

#include <fmt/format.h>

#include <cmath>

#include "core/error.hpp"
#include "core/file.hpp"
#include "core/log.hpp"
#include "formats/checkpoint.hpp"
#include "model/quant.hpp"
#include "workflow/init.hpp"
#include "workflow/perplexity.hpp"
#include "workflow/prune.hpp"

namespace tl {

namespace fs = std::filesystem;
using train::WeightQuantMode;

namespace {

// Code of every linear entry of a snapped model (w / s in {-1, 0, 1}).
int8_t code_of(float w) {
  return w == 0.0f ? 0 : (w > 0 ? 1 : -1);
}

// Compares a reloaded export with the snapped model: codes must be identical; scales as close as the
// export dtype allows.
void check_reload(const Model& snapped, const Model& back, SnapExport& e) {
  TL_CHECK(back.params.size() == snapped.params.size(), "snap: the {} export reloads with another shape",
           e.layout);
  for (const auto& v : snapped.views) {
    if (v.kind != ParamKind::Linear) continue;
    const float s = snapped.fixed_scale.at(v.name);
    const float sb = weight_scale_for(back, back.view(v.name));
    e.max_scale_rel_error = std::max(e.max_scale_rel_error, std::abs(double(sb) - s) / s);
    const float* a = snapped.params.data() + v.offset;
    const float* b = back.params.data() + back.view(v.name).offset;
    std::vector<int8_t> codes(v.numel);
    ternarize(b, v.numel, sb, codes.data());  // what the loader's quantizer makes of the reload
    for (size_t i = 0; i < v.numel; ++i) e.code_mismatches += codes[i] != code_of(a[i]);
  }
}

std::optional<double> ppl_of(const Model& m, const SnapRunOptions& opt) {
  if (opt.ppl_windows <= 0) return std::nullopt;
  PplRunOptions e;
  e.checkpoint = opt.checkpoint;
  e.split = "validation";
  e.ppl.max_windows = opt.ppl_windows;
  const PplData data = prepare_perplexity(e, m);
  return evaluate_perplexity(m, data).ppl;
}

}  // namespace

SnapRun run_snap(const SnapRunOptions& opt) {
  TL_CHECK(!opt.out_dir.empty(), "snap: -o OUT_DIR is required");
  std::error_code ec;
  TL_CHECK(fs::weakly_canonical(opt.out_dir, ec) != fs::weakly_canonical(opt.checkpoint, ec),
           "snap: the output directory must differ from the input checkpoint");
  Model m = load_checkpoint(opt.checkpoint);
  // How the checkpoint was trained.
  std::string mode_name = "absmean";
  fs::path masks_path = opt.masks;
  const fs::path meta = opt.checkpoint / "ternlab_train.json";
  if (fs::exists(meta, ec)) {
    try {
      const auto j = nlohmann::json::parse(read_file(meta));
      mode_name = j.at("weight_quant").get<std::string>();
      for (const auto& [name, s] : j.at("fixed_scale").items()) {
        TL_CHECK(m.has(name), "snap: {} names a scale for unknown tensor '{}'", meta.string(), name);
        m.fixed_scale[name] = s.get<float>();
      }
      if (masks_path.empty() && j.at("masks").is_string())
        masks_path = opt.checkpoint / j.at("masks").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      fail("snap: {} is malformed: {}", meta.string(), e.what());
    }
  }
  if (opt.quant) mode_name = *opt.quant;
  const WeightQuantMode mode = train::parse_weight_quant(mode_name);
  std::vector<TensorMask> masks;
  if (!masks_path.empty()) {
    const PruneMaskFile mf = read_prune_masks(masks_path);
    for (const auto& pm : mf.masks) masks.push_back({pm.name, pm.keep});
  }

  SnapRun r;
  r.mode = mode_name;
  r.masked_tensors = masks.size();
  r.report = train::snap_model(m, mode, masks);
  train::verify_ternary(m, masks);  // 100% of the linears in {-s, 0, +s} with the stated s
  r.ppl = ppl_of(m, opt);

  fs::create_directories(opt.out_dir);
  // Saves `stored` as a checkpoint in the layout, reloads it and compares it with the snapped model.
  auto export_layout = [&](const Model& stored, CheckpointLayout layout, SnapExport& e) {
    e.layout = layout == CheckpointLayout::Packed ? "packed" : "master";
    e.dir = (opt.out_dir / e.layout).string();
    save_checkpoint(stored, e.dir, SaveOptions{layout, opt.dtype, 0});
    copy_tokenizer_files(opt.checkpoint, e.dir);
    const Model back = load_checkpoint(e.dir);
    check_reload(m, back, e);
    e.ppl = ppl_of(back, opt);
  };
  // Packed: codes + weight_scale = s.
  export_layout(m, CheckpointLayout::Packed, r.packed);
  // Master: online absmean re-quantizes what is stored, so store code · s / (1 - z): its absmean is s and
  // its codes are the snapped codes (exact ternary values, one per tensor, no fixed scale needed).
  Model master = m;
  for (const auto& v : master.views) {
    if (v.kind != ParamKind::Linear) continue;
    const float s = master.fixed_scale.at(v.name);
    float* w = master.params.data() + v.offset;
    size_t nz = 0;
    for (size_t i = 0; i < v.numel; ++i) nz += w[i] != 0.0f;
    const float stored = nz ? float(double(s) * double(v.numel) / double(nz)) : s;
    for (size_t i = 0; i < v.numel; ++i) w[i] = float(code_of(w[i])) * stored;
  }
  master.fixed_scale.clear();
  export_layout(master, CheckpointLayout::Master, r.master);
  TL_CHECK(r.packed.code_mismatches == 0 && r.master.code_mismatches == 0,
           "snap: reloaded codes differ from the snapped model (packed {}, master {})",
           r.packed.code_mismatches, r.master.code_mismatches);
  const nlohmann::json j = to_json(r);
  write_file_atomic(opt.out_dir / "snap_report.json", j.dump(2) + "\n");
  write_file_atomic(opt.out_dir / "snap_report.md", to_markdown(r, opt));
  return r;
}

nlohmann::json to_json(const SnapRun& r) {
  auto ex = [](const SnapExport& e) {
    return nlohmann::json{{"layout", e.layout},
                          {"dir", e.dir},
                          {"max_scale_rel_error", e.max_scale_rel_error},
                          {"code_mismatches", e.code_mismatches},
                          {"ppl", e.ppl ? nlohmann::json(*e.ppl) : nlohmann::json(nullptr)}};
  };
  nlohmann::json j = train::to_json(r.report);
  j["masked_tensors"] = r.masked_tensors;
  j["pct_ternary"] = 100.0;  // verify_ternary passed (it throws otherwise)
  j["ppl"] = r.ppl ? nlohmann::json(*r.ppl) : nlohmann::json(nullptr);
  j["exports"] = {ex(r.packed), ex(r.master)};
  return j;
}

std::string to_markdown(const SnapRun& r, const SnapRunOptions& opt) {
  std::string md = fmt::format("# Snap of {}\n\n", opt.checkpoint.string());
  md += fmt::format(
      "Quantizer `{}`; {} masked tensors re-applied ({} latents forced back to zero). {} linear weights, "
      "100% verified in {{−s, 0, +s}} with each tensor's stated s; code sparsity {:.4f}%; {} values changed "
      "by the snap.\n\n",
      r.mode, r.masked_tensors, r.report.masked_nonzero, r.report.numel, 100 * r.report.code_sparsity,
      r.report.changed);
  if (r.ppl)
    md += fmt::format("PPL of the snapped model (Brown validation, seed protocol): {:.4f}\n\n", *r.ppl);
  md +=
      "| export | directory | codes differing after reload | max scale error | PPL "
      "|\n|---|---|---:|---:|---:|\n";
  for (const auto* e : {&r.packed, &r.master})
    md += fmt::format("| {} | {} | {} | {:.3g} | {} |\n", e->layout, e->dir, e->code_mismatches,
                      e->max_scale_rel_error, e->ppl ? fmt::format("{:.4f}", *e->ppl) : "—");
  return md;
}

}  // namespace tl
