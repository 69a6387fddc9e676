// train/trainer: the loop learns, masked weights stay exactly zero, NaN stops a step without touching
// anything, resume is bit-exact, and impossible options are errors.
#include <gtest/gtest.h>

#include <unistd.h>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "model/model.hpp"
#include "train/trainer.hpp"

namespace tl::train {
namespace {

namespace fs = std::filesystem;

Model tiny(uint64_t seed = 1) {
  BitNetConfig c = config_preset("tiny");
  c.vocab_size = 64;
  c.bos_token_id = 62;
  c.eos_token_id = 63;
  Model m = make_model(c);
  init_random(m, seed);
  return m;
}

// A learnable stream: a few fixed 8-token phrases in a seeded random order.
std::vector<int32_t> phrase_stream(size_t n, uint64_t seed) {
  const int32_t phrases[4][8] = {{1, 2, 3, 4, 5, 6, 7, 8},
                                 {9, 10, 11, 12, 13, 14, 15, 16},
                                 {20, 21, 22, 23, 20, 21, 22, 23},
                                 {30, 31, 32, 33, 34, 35, 36, 37}};
  Rng rng(seed);
  std::vector<int32_t> s;
  while (s.size() < n) {
    const auto& p = phrases[rng.below(4)];
    s.insert(s.end(), p, p + 8);
  }
  s.resize(n);
  return s;
}

TrainConfig small_config() {
  TrainConfig c;
  c.steps = 40;
  c.batch = 4;
  c.seq_len = 32;
  c.adamw.lr = 3e-3;
  c.adamw.weight_decay = 0.0;
  c.seed = 5;
  return c;
}

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("ternlab-trainer-" + name + "-" + std::to_string(getpid()));
  fs::remove_all(d);
  return d;
}

TEST(Trainer, LearnsAPhraseStream) {
  Model m = tiny();
  const auto data = phrase_stream(4096, 1);
  const TrainConfig c = small_config();
  const double before = eval_loss(m, c.quant, data, c.seq_len, 16, 8);
  Trainer tr(m, c, data);
  double first = 0, last = 0;
  while (!tr.done()) {
    const StepLog s = tr.step();
    ASSERT_TRUE(std::isfinite(s.loss));
    if (s.step == 1) first = s.loss;
    last = s.loss;
    EXPECT_EQ(s.tokens, c.batch * c.seq_len);
  }
  const double after = eval_loss(m, c.quant, data, c.seq_len, 16, 8);
  EXPECT_NEAR(first, std::log(64.0), 0.5);  // a random model starts near ln V
  EXPECT_LT(last, first - 1.0);
  EXPECT_LT(after, before - 1.0);
  EXPECT_EQ(tr.steps_done(), c.steps);
  EXPECT_THROW(tr.step(), Error);
}

TEST(Trainer, MaskedWeightsStayExactlyZero) {
  for (ParamPrecision prec : {ParamPrecision::Fp32, ParamPrecision::Bf16}) {
    Model m = tiny();
    const std::string name = Model::linear_name(0, kUp);
    const ParamView& v = m.view(name);
    TensorMask mask{name, std::vector<uint8_t>(v.numel, 1)};
    for (size_t i = 0; i < v.numel; i += 3) mask.keep[i] = 0;
    const std::vector<float> before(m.params.begin() + long(v.offset),
                                    m.params.begin() + long(v.offset + v.numel));
    TrainConfig c = small_config();
    c.steps = 10;
    c.precision = prec;
    c.adamw.weight_decay = 0.1;
    const auto data = phrase_stream(2048, 2);
    Trainer tr(m, c, data, {mask});
    while (!tr.done()) tr.step();
    size_t moved = 0;
    for (size_t i = 0; i < v.numel; ++i) {
      const float w = m.params[v.offset + i];
      if (!mask.keep[i]) {
        EXPECT_EQ(std::bit_cast<uint32_t>(w), 0u) << i;  // +0.0 exactly
      } else if (w != before[i]) {
        ++moved;
      }
    }
    EXPECT_GT(moved, v.numel / 2);
    if (prec == ParamPrecision::Bf16) {
      for (float w : m.params) ASSERT_EQ(w, bf16_to_f32(f32_to_bf16(w)));
    }
  }
}

TEST(Trainer, NonFiniteLossStopsBeforeTheUpdate) {
  Model m = tiny();
  const auto data = phrase_stream(2048, 3);
  TrainConfig c = small_config();
  Trainer tr(m, c, data);
  tr.step();
  m.tensor("model.norm.weight")[3] = NAN;
  const std::vector<float> snapshot = m.params;
  try {
    tr.step();
    FAIL() << "no error";
  } catch (const NonFiniteError& e) {
    EXPECT_EQ(e.step, 2);
    EXPECT_NE(std::string(e.what()).find("step 2"), std::string::npos);
  }
  EXPECT_EQ(std::memcmp(snapshot.data(), m.params.data(), snapshot.size() * sizeof(float)), 0);
  EXPECT_EQ(tr.steps_done(), 1);
}

TEST(Trainer, ResumeIsBitExact) {
  const auto data = phrase_stream(4096, 4);
  TrainConfig c = small_config();
  c.steps = 8;
  c.warmup = 2;
  c.grad_accum = 2;
  const std::string name = Model::linear_name(1, kQ);
  auto make_mask = [&](const Model& m) {
    TensorMask mk{name, std::vector<uint8_t>(m.view(name).numel, 1)};
    for (size_t i = 0; i < mk.keep.size(); i += 5) mk.keep[i] = 0;
    return mk;
  };
  Model straight = tiny(9);
  std::vector<double> losses;
  {
    Trainer tr(straight, c, data, {make_mask(straight)});
    while (!tr.done()) losses.push_back(tr.step().loss);
  }
  const fs::path dir = temp_dir("resume");
  {
    Model m = tiny(9);
    Trainer tr(m, c, data, {make_mask(m)});
    for (int i = 0; i < 3; ++i) EXPECT_EQ(tr.step().loss, losses[size_t(i)]);
    tr.save_state(dir / "state");
    tr.save_state(dir / "state");  // overwriting a checkpoint works too
  }
  Model resumed = tiny(123);  // other weights: the checkpoint must replace them
  Trainer tr(resumed, c, data, {make_mask(resumed)});
  tr.load_state(dir / "state");
  EXPECT_EQ(tr.steps_done(), 3);
  for (int i = 3; i < 8; ++i) EXPECT_EQ(tr.step().loss, losses[size_t(i)]) << "step " << i + 1;
  ASSERT_EQ(resumed.params.size(), straight.params.size());
  EXPECT_EQ(
      std::memcmp(resumed.params.data(), straight.params.data(), straight.params.size() * sizeof(float)), 0);
  EXPECT_FALSE(fs::exists(dir / "state.tmp"));
  EXPECT_FALSE(fs::exists(dir / "state.old"));

  // Another config, other data or a damaged state: clear errors.
  TrainConfig other = c;
  other.adamw.lr = 1e-3;
  Model m2 = tiny(9);
  Trainer t2(m2, other, data, {make_mask(m2)});
  EXPECT_THROW(t2.load_state(dir / "state"), Error);
  const auto data2 = phrase_stream(4096, 99);
  Model m3 = tiny(9);
  Trainer t3(m3, c, data2, {make_mask(m3)});
  EXPECT_THROW(t3.load_state(dir / "state"), Error);
  {
    std::ofstream f(dir / "state" / "trainer_state.json");
    f << "{ not json";
  }
  Model m4 = tiny(9);
  Trainer t4(m4, c, data, {make_mask(m4)});
  EXPECT_THROW(t4.load_state(dir / "state"), Error);
  EXPECT_THROW(t4.load_state(dir / "nowhere"), Error);
  fs::remove_all(dir);
}

// A kill inside save_state, between moving the previous state to .old and the new one from .tmp: the new one
// (complete: its state file is written last) is found; with no complete .tmp, the previous one in .old. The
// next save_state leaves one directory.
TEST(Trainer, FindsTheStateAKillLeftBesideTheDirectory) {
  const auto data = phrase_stream(4096, 4);
  TrainConfig c = small_config();
  c.steps = 6;
  const fs::path dir = temp_dir("recover");
  Model m = tiny(9);
  Trainer tr(m, c, data, {});
  tr.step();
  tr.save_state(dir / "at1");
  tr.step();
  tr.save_state(dir / "at2");
  auto steps_in = [&](const fs::path& d) {
    Model r = tiny(9);
    Trainer t(r, c, data, {});
    t.load_state(d);
    return t.steps_done();
  };
  EXPECT_FALSE(find_saved_state(dir / "state"));  // nothing anywhere
  fs::rename(dir / "at1", dir / "state.old");
  fs::rename(dir / "at2", dir / "state.tmp");
  ASSERT_EQ(find_saved_state(dir / "state"), dir / "state.tmp");
  EXPECT_EQ(steps_in(dir / "state.tmp"), 2);
  // An incomplete .tmp (killed while writing it) beside the previous state in .old: the previous one.
  fs::remove(dir / "state.tmp" / "trainer_state.json");
  ASSERT_EQ(find_saved_state(dir / "state"), dir / "state.old");
  EXPECT_EQ(steps_in(dir / "state.old"), 1);
  // Resumed from there, the next save leaves the one directory.
  Model r = tiny(9);
  Trainer t(r, c, data, {});
  t.load_state(dir / "state.old");
  t.step();
  t.save_state(dir / "state");
  EXPECT_EQ(find_saved_state(dir / "state"), dir / "state");
  EXPECT_FALSE(fs::exists(dir / "state.tmp"));
  EXPECT_FALSE(fs::exists(dir / "state.old"));
  fs::remove_all(dir);
}

// A finished run's state has no AdamW moments (never read again; most of a 2B state); it still resumes as
// finished with the same weights, and a state without moments that is not finished is refused.
TEST(Trainer, FinishedStateKeepsNoMoments) {
  const auto data = phrase_stream(4096, 4);
  TrainConfig c = small_config();
  c.steps = 3;
  c.warmup = 1;
  const fs::path dir = temp_dir("finished");
  Model m = tiny(9);
  Trainer tr(m, c, data);
  tr.step();
  tr.save_state(dir / "mid");
  EXPECT_TRUE(fs::exists(dir / "mid" / "optimizer.safetensors"));
  while (!tr.done()) tr.step();
  tr.save_state(dir / "end");
  EXPECT_FALSE(fs::exists(dir / "end" / "optimizer.safetensors"));
  Model r = tiny(123);
  Trainer back(r, c, data);
  back.load_state(dir / "end");
  EXPECT_TRUE(back.done());
  EXPECT_EQ(std::memcmp(r.params.data(), m.params.data(), m.params.size() * sizeof(float)), 0);
  fs::remove(dir / "mid" / "optimizer.safetensors");  // an unfinished state needs its moments
  Model r2 = tiny(9);
  Trainer t2(r2, c, data);
  EXPECT_THROW(t2.load_state(dir / "mid"), Error);
  fs::remove_all(dir);
}

TEST(Trainer, ImpossibleOptionsAreErrors) {
  Model m = tiny();
  const auto data = phrase_stream(256, 5);  // 8 chunks of 32
  auto bad = [&](auto edit) {
    TrainConfig c = small_config();
    edit(c);
    EXPECT_THROW(Trainer(m, c, data), Error);
  };
  bad([](TrainConfig& c) { c.adamw.lr = -1e-3; });
  bad([](TrainConfig& c) { c.steps = 0; });
  bad([](TrainConfig& c) { c.batch = 16; });  // batch larger than the data (8 chunks)
  bad([](TrainConfig& c) { c.grad_accum = 3; });
  bad([](TrainConfig& c) { c.seq_len = 1; });
  bad([](TrainConfig& c) { c.warmup = c.steps; });
  bad([](TrainConfig& c) { c.clip = -1; });
  std::vector<int32_t> oov = data;
  oov[7] = 64;
  EXPECT_THROW(Trainer(m, small_config(), oov), Error);
  EXPECT_THROW(Trainer(m, small_config(), data, {TensorMask{"nope", {1}}}), Error);
  EXPECT_THROW(Trainer(m, small_config(), data, {TensorMask{Model::linear_name(0, kQ), {1, 0}}}), Error);
}

}  // namespace
}  // namespace tl::train
