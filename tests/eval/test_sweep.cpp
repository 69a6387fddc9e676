// ternlab sweep's workflow on a tiny random model: baseline, independence of levels, the matched random
// control, determinism, and the flag checks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "../common/test_util.hpp"
#include "core/file.hpp"
#include "formats/checkpoint.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "text/tokenizer.hpp"
#include "workflow/sweep.hpp"

using namespace tl;
using test::error_of;
using ::testing::HasSubstr;

namespace {

class Sweep : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() / ("ternlab-sweep-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    Model m = make_model(config_preset("tiny"));
    init_random(m, 11);
    save_checkpoint(m, dir_ / "tiny");
    write_file_atomic(dir_ / "tiny" / "tokenizer.json", Tokenizer::byte_level(512).to_json());
    result_ = new SweepResult(run_sweep(options()));
  }
  static void TearDownTestSuite() {
    delete result_;
    result_ = nullptr;
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  static SweepOptions options() {
    SweepOptions o;
    o.eval.checkpoint = dir_ / "tiny";
    o.eval.corpus = "brown";
    o.eval.split = "test";
    o.eval.ppl.max_windows = 4;
    o.levels = {0, 10, 20, 40};
    o.methods = {PruneMethod::Seed, PruneMethod::Global, PruneMethod::Random};
    o.seed = 5;
    return o;
  }
  static PruneOptions prune_options(PruneMethod m, double level, std::optional<PruneMethod> match = {}) {
    PruneOptions p;
    p.method = m;
    p.sparsity = level;
    p.seed = 5;
    p.match = match;
    return p;
  }
  static const SweepResult& result() { return *result_; }
  // The JSON without wall-clock times.
  static nlohmann::json timeless(nlohmann::json j) {
    if (j.is_object()) {
      for (auto it = j.begin(); it != j.end();)
        if (it.key().find("seconds") != std::string::npos || it.key() == "tokens_per_s")
          it = j.erase(it);
        else
          ++it;
    }
    if (j.is_object() || j.is_array())
      for (auto& v : j) v = timeless(v);
    return j;
  }
  static inline std::filesystem::path dir_;
  static inline SweepResult* result_ = nullptr;
};

TEST_F(Sweep, BaselineEqualsRunPerplexity) {
  const PplRun run = run_perplexity(options().eval);
  const auto& r = result();
  EXPECT_EQ(r.baseline.ppl.ppl, run.result.ppl);
  EXPECT_EQ(r.baseline.ppl.mean_nll, run.result.mean_nll);
  EXPECT_EQ(r.baseline.ppl.tokens_scored, run.result.tokens_scored);
  EXPECT_EQ(r.baseline.ppl.windows, 4);
  for (const auto m : options().methods) {
    const auto& p = r.at(m, 0);
    EXPECT_TRUE(p.baseline);
    EXPECT_EQ(p.ppl.ppl, run.result.ppl);
    EXPECT_EQ(p.pruned, 0u);
  }
  EXPECT_EQ(r.points.size(), 3u * 4);
  // The baseline's sparsity is the unpruned model's, as prune_model reports it "before".
  Model m = load_checkpoint(dir_ / "tiny");
  const PruneReport rep = prune_model(m, prune_options(PruneMethod::Global, 10)).report;
  EXPECT_DOUBLE_EQ(r.baseline.latent_sparsity, rep.latent_sparsity_before);
  EXPECT_DOUBLE_EQ(r.baseline.code_zero, rep.code_zero_before);
}

TEST_F(Sweep, EachPointEqualsADirectPruneOfTheOriginal) {
  const auto& r = result();
  ASSERT_EQ(r.random_match, PruneMethod::Seed);  // auto: the first magnitude method listed
  for (const auto& p : r.points) {
    if (p.target == 0) continue;
    SCOPED_TRACE(fmt::format("{} {}", prune_method_name(p.method), p.target));
    Model m = load_checkpoint(dir_ / "tiny");
    const PruneReport rep = prune_model(m, prune_options(p.method, p.target, p.match)).report;
    EXPECT_EQ(p.latent_sparsity, rep.latent_sparsity_after);
    EXPECT_EQ(p.code_zero, rep.code_zero_after);
    EXPECT_EQ(p.codes_changed, rep.codes_changed);
    EXPECT_EQ(p.pruned, rep.pruned);
    EXPECT_GT(p.pruned, 0u);
    EXPECT_GT(p.latent_sparsity, r.baseline.latent_sparsity);
  }
}

TEST_F(Sweep, RandomIsMatchedPerTensor) {
  const auto& r = result();
  for (const double l : {10.0, 20.0, 40.0}) {
    const auto& rnd = r.at(PruneMethod::Random, l);
    const auto& seed = r.at(PruneMethod::Seed, l);
    EXPECT_EQ(rnd.match, PruneMethod::Seed);
    EXPECT_EQ(rnd.pruned_per_tensor, seed.pruned_per_tensor) << l;
    EXPECT_EQ(rnd.pruned_per_tensor.size(), 14u);
    // Same counts, different weights: the PPL differs.
    EXPECT_NE(rnd.ppl.ppl, seed.ppl.ppl);
  }
  EXPECT_THAT(sweep_table(r), HasSubstr("matched to seed"));
  EXPECT_THAT(sweep_markdown(r), HasSubstr("matched to seed"));
}

TEST_F(Sweep, LevelsAreIndependent) {
  const auto& r = result();
  const SweepOptions o = options();
  const Model original = load_checkpoint(o.eval.checkpoint);
  const PplData data = prepare_perplexity(o.eval, original);
  Model fresh = original;
  prune_model(fresh, prune_options(PruneMethod::Seed, 20));
  const auto& p = r.at(PruneMethod::Seed, 20);
  EXPECT_EQ(evaluate_perplexity(fresh, data).ppl, p.ppl.ppl);
  // Cumulative pruning (10% of the original, then 20% of what is left) is a different model.
  Model cumulative = original;
  prune_model(cumulative, prune_options(PruneMethod::Seed, 10));
  const PruneReport c = prune_model(cumulative, prune_options(PruneMethod::Seed, 20)).report;
  EXPECT_GT(c.latent_sparsity_after, p.latent_sparsity + 0.05);
  EXPECT_NE(evaluate_perplexity(cumulative, data).ppl, p.ppl.ppl);
}

// An fp32 checkpoint (values that are not bf16) takes the fp32 backup path: levels stay independent.
TEST_F(Sweep, Fp32CheckpointLevelsAreIndependent) {
  Model m = make_model(config_preset("tiny"));
  init_random(m, 12);
  save_checkpoint(m, dir_ / "tiny32", SaveOptions{CheckpointLayout::Master, DType::F32, 0});
  write_file_atomic(dir_ / "tiny32" / "tokenizer.json", Tokenizer::byte_level(512).to_json());
  SweepOptions o = options();
  o.eval.checkpoint = dir_ / "tiny32";
  o.levels = {0, 30, 10};
  o.methods = {PruneMethod::Global, PruneMethod::Seed};
  const SweepResult r = run_sweep(o);
  const Model original = load_checkpoint(o.eval.checkpoint);
  const PplData data = prepare_perplexity(o.eval, original);
  for (const auto& p : r.points) {
    if (p.target == 0) continue;
    Model fresh = original;
    prune_model(fresh, prune_options(p.method, p.target));
    EXPECT_EQ(evaluate_perplexity(fresh, data).ppl, p.ppl.ppl)
        << prune_method_name(p.method) << " " << p.target;
  }
}

TEST_F(Sweep, DeterministicForASeed) {
  const SweepResult again = run_sweep(options());
  EXPECT_EQ(timeless(to_json(again)).dump(), timeless(to_json(result())).dump());
  SweepOptions o = options();
  o.seed = 6;
  o.levels = {20};
  o.methods = {PruneMethod::Random};
  o.random_match = "none";
  const SweepResult other = run_sweep(o);
  EXPECT_FALSE(other.random_match);
  EXPECT_NE(other.at(PruneMethod::Random, 20).ppl.ppl, result().at(PruneMethod::Random, 20).ppl.ppl);
}

TEST_F(Sweep, WritesOutputs) {
  const auto out = dir_ / "out";
  write_sweep_outputs(result(), out);
  const auto j = nlohmann::json::parse(read_file(out / "sweep.json"));
  EXPECT_EQ(j["points"].size(), 12u);
  EXPECT_EQ(j["protocol"], "seed");
  EXPECT_EQ(j["corpus"], "brown");
  EXPECT_EQ(j["split"], "test");
  EXPECT_EQ(j["windows"], 4);
  EXPECT_EQ(j["random_match"], "seed");
  EXPECT_EQ(j["points"][1]["method"], "seed");
  EXPECT_EQ(j["points"][1]["target"], 10.0);
  const std::string svg = read_file(out / "sweep.svg");
  size_t polylines = 0;
  for (size_t i = svg.find("<polyline"); i != std::string::npos; i = svg.find("<polyline", i + 1))
    ++polylines;
  EXPECT_EQ(polylines, 3u);
  const std::string md = read_file(out / "sweep.md");
  EXPECT_THAT(md, HasSubstr("| 40% |"));
  EXPECT_THAT(md, HasSubstr("- **global**: lowest PPL"));
  for (const auto& e : std::filesystem::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos);
}

TEST_F(Sweep, RejectsBadFlags) {
  EXPECT_EQ(parse_sweep_levels("0, 10,12.5"), (std::vector<double>{0, 10, 12.5}));
  EXPECT_THAT(error_of([] { parse_sweep_levels("0,100"); }), HasSubstr("outside [0, 100)"));
  EXPECT_THAT(error_of([] { parse_sweep_levels("-5"); }), HasSubstr("outside [0, 100)"));
  EXPECT_THAT(error_of([] { parse_sweep_levels("10,10"); }), HasSubstr("given twice"));
  EXPECT_THAT(error_of([] { parse_sweep_levels(""); }), HasSubstr("empty entry"));
  EXPECT_THAT(error_of([] { parse_sweep_levels("10,,20"); }), HasSubstr("empty entry"));
  EXPECT_THAT(error_of([] { parse_sweep_levels("10x"); }), HasSubstr("not a number"));
  EXPECT_THAT(error_of([] { parse_sweep_levels("nan"); }), HasSubstr("not a number"));
  EXPECT_EQ(parse_sweep_methods("seed,per-tensor"),
            (std::vector<PruneMethod>{PruneMethod::Seed, PruneMethod::PerTensor}));
  EXPECT_THAT(error_of([] { parse_sweep_methods("seed,magic"); }), HasSubstr("magic"));
  EXPECT_THAT(error_of([] { parse_sweep_methods(""); }), HasSubstr("empty entry"));
  EXPECT_THAT(error_of([] { parse_sweep_methods("nm"); }), HasSubstr("no sparsity level"));
  EXPECT_THAT(error_of([] { parse_sweep_methods("global,global"); }), HasSubstr("given twice"));
  SweepOptions o = options();
  o.methods.clear();
  EXPECT_THAT(error_of([&] { run_sweep(o); }), HasSubstr("no methods"));
  o = options();
  o.levels = {10, 100};
  EXPECT_THAT(error_of([&] { run_sweep(o); }), HasSubstr("outside [0, 100)"));
  o = options();
  o.random_match = "random";
  EXPECT_THAT(error_of([&] { run_sweep(o); }), HasSubstr("can only be matched"));
}

}  // namespace
