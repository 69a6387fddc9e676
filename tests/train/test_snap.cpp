// train/snap: the snapped model is the model training's forward ran (for every quantizer mode), it is
// exactly ternary with its stated scale, masks are re-applied, and the packed export reloads with the
// same codes.
#include <gtest/gtest.h>

#include <unistd.h>
#include <cmath>
#include <filesystem>

#include "../common/test_util.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "cpu/forward.hpp"
#include "formats/checkpoint.hpp"
#include "model/model.hpp"
#include "model/quant.hpp"
#include "train/snap.hpp"
#include "train/train_model.hpp"

namespace tl::train {
namespace {

double rel_l2(std::span<const float> a, std::span<const float> b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += double(b[i]) * b[i];
  }
  return std::sqrt(d / n);
}

// Logits of the CPU inference forward.
std::vector<float> cpu_logits(const Model& m, const std::vector<int32_t>& tok, int64_t B, int64_t T) {
  CpuModel cm(m);
  std::vector<float> hidden, out(size_t(B * T * m.config.vocab_size));
  cm.forward(tok, B, T, hidden);
  cm.logits(hidden.data(), B * T, out.data());
  return out;
}

Model tiny_with_zeros(uint64_t seed) {
  Model m = make_model(config_preset("tiny"));
  init_random(m, seed);
  Rng rng(seed + 7);
  for (const auto& v : m.views)  // 20% exact zeros, as after pruning
    if (v.kind == ParamKind::Linear)
      for (size_t i = 0; i < v.numel; ++i)
        if (rng.uniform() < 0.2) m.params[v.offset + i] = 0.0f;
  return m;
}

TEST(Snap, SnappedModelIsTheModelTrainingRan) {
  const int64_t B = 2, T = 16;
  const auto tok = test::random_tokens(B * T, 512, 3);
  for (WeightQuantMode mode : {WeightQuantMode::Absmean, WeightQuantMode::Fixed, WeightQuantMode::RptFixed}) {
    SCOPED_TRACE(weight_quant_name(mode));
    Model m = tiny_with_zeros(1);
    if (mode != WeightQuantMode::Absmean)  // scales captured "before pruning": larger than today's absmean
      for (const auto& v : m.views)
        if (v.kind == ParamKind::Linear)
          m.fixed_scale[v.name] = 1.25f * absmean_scale(m.params.data() + v.offset, v.numel);
    TrainModel<float> tm(m, TrainOptions{mode, true});
    tm.forward(tok, {}, B, T);
    const std::vector<float> trained(tm.logits().begin(), tm.logits().end());
    Model snapped = m;
    const SnapReport r = snap_model(snapped, mode);
    EXPECT_EQ(verify_ternary(snapped), 1.0);
    EXPECT_GT(r.code_sparsity, 0.2);
    EXPECT_GT(r.changed, r.numel / 2);
    const double rel = rel_l2(cpu_logits(snapped, tok, B, T), trained);
    EXPECT_LT(rel, 1e-4) << rel;
    if (mode == WeightQuantMode::RptFixed) {  // s = a·(1 - z): the study's double quantization
      for (const auto& t : r.tensors)
        EXPECT_FLOAT_EQ(t.scale, t.code_scale * float(1.0 - double(t.zeros) / double(t.numel))) << t.name;
    }
    // Snapping twice changes nothing (for the single-quantizer modes).
    if (mode != WeightQuantMode::RptFixed) {
      Model again = snapped;
      const SnapReport r2 = snap_model(again, WeightQuantMode::Fixed);
      EXPECT_EQ(r2.changed, 0u);
    }
  }
  Model m = tiny_with_zeros(2);
  EXPECT_THROW(verify_ternary(m), Error);  // latent weights are not ternary
  EXPECT_THROW(snap_model(m, WeightQuantMode::Off), Error);
  EXPECT_THROW(snap_model(m, WeightQuantMode::Fixed), Error);  // no fixed scales
}

TEST(Snap, MasksAreReappliedAndCounted) {
  Model m = tiny_with_zeros(4);
  const std::string name = Model::linear_name(1, kDown);
  const ParamView& v = m.view(name);
  TensorMask mk{name, std::vector<uint8_t>(v.numel, 1)};
  size_t drifted = 0;
  for (size_t i = 0; i < v.numel; i += 4) {
    mk.keep[i] = 0;
    drifted += m.params[v.offset + i] != 0.0f;  // "regrown" during fine-tuning
  }
  const SnapReport r = snap_model(m, WeightQuantMode::Absmean, {mk});
  EXPECT_EQ(r.masked_nonzero, drifted);
  EXPECT_GT(drifted, 0u);
  EXPECT_NO_THROW(verify_ternary(m, {mk}));
  m.params[v.offset] = m.fixed_scale.at(name);  // a pruned entry that is not zero
  EXPECT_THROW(verify_ternary(m, {mk}), Error);
  EXPECT_THROW(snap_model(m, WeightQuantMode::Absmean, {TensorMask{name, {1, 0}}}), Error);
}

TEST(Snap, PackedExportReloadsWithTheSameCodes) {
  Model m = tiny_with_zeros(5);
  snap_model(m, WeightQuantMode::Absmean);
  const auto dir = std::filesystem::temp_directory_path() / ("ternlab-snap-" + std::to_string(getpid()));
  save_checkpoint(m, dir, SaveOptions{CheckpointLayout::Packed, DType::F32, 0});
  const Model back = load_checkpoint(dir);
  for (const auto& v : m.views) {
    if (v.kind != ParamKind::Linear) continue;
    EXPECT_EQ(back.fixed_scale.at(v.name), m.fixed_scale.at(v.name)) << v.name;
    for (size_t i = 0; i < v.numel; ++i)
      ASSERT_EQ(back.params[v.offset + i], m.params[v.offset + i]) << v.name;
  }
  EXPECT_NO_THROW(verify_ternary(back));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tl::train
