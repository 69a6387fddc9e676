// `ternlab ppl --backend engine --head ...`: perplexity on the fast engine (what generate and serve run).
// With an fp32 head it prints the reference's perplexity exactly, for a checkpoint and for a GGUF file; f16
// and int8 heads move it a little; flags that make no sense are refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "../common/test_util.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

using Result = tl::test::CommandResult;

Result run(const std::string& args) {
  return tl::test::run_command(std::string(TERNLAB_BINARY) + " " + args);
}

nlohmann::json last_json(const std::string& out) {
  const auto pos = out.rfind("\n{");
  return nlohmann::json::parse(pos == std::string::npos ? out : out.substr(pos + 1));
}

// The line of text output that starts with `key` (after the indentation).
std::string line_of(const std::string& out, const std::string& key) {
  const auto pos = out.find("  " + key);
  if (pos == std::string::npos) return "";
  return out.substr(pos, out.find('\n', pos) - pos);
}

class CliEnginePpl : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("ternlab-cli-eppl-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    // 256-wide so that every GGUF kind can hold it; an odd number of windows to batch unevenly.
    const auto r =
        run("-q init --preset tiny --seed 5 --hidden 256 --ffn 512 --layers 2 --heads 4 --kv-heads 2 "
            "--vocab 512 --ctx 128 -o " +
            ck());
    ASSERT_EQ(r.code, 0) << r.out;
    const auto e = run("-q export " + ck() + " -o " + gguf() + " --type i2_s");
    ASSERT_EQ(e.code, 0) << e.out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string ck() { return (dir_ / "ck").string(); }
  static std::string gguf() { return (dir_ / "ck-i2_s.gguf").string(); }
  static const std::string kArgs;
  static fs::path dir_;
};
fs::path CliEnginePpl::dir_;
const std::string CliEnginePpl::kArgs = " --corpus brown --split test --windows 5 --batch 2 ";

TEST_F(CliEnginePpl, F32HeadPrintsTheReferencePerplexity) {
  for (const std::string& model : {ck(), gguf()}) {
    const auto ref = run("-q ppl" + kArgs + model);
    const auto fast = run("-q ppl --backend engine --head f32" + kArgs + model);
    ASSERT_EQ(ref.code, 0) << ref.out;
    ASSERT_EQ(fast.code, 0) << fast.out;
    EXPECT_EQ(line_of(fast.out, "PPL"), line_of(ref.out, "PPL")) << model;
    EXPECT_EQ(line_of(fast.out, "mean NLL"), line_of(ref.out, "mean NLL")) << model;
    EXPECT_FALSE(line_of(ref.out, "PPL").empty());
    EXPECT_THAT(line_of(ref.out, "backend"), HasSubstr("reference"));
    EXPECT_THAT(line_of(fast.out, "backend"), HasSubstr("engine ("));
    EXPECT_THAT(line_of(fast.out, "backend"), HasSubstr("LM head f32"));
    // JSON: the same doubles, and which engine and head
    const auto jr = last_json(run("-q ppl --json" + kArgs + model).out);
    const auto jf = last_json(run("-q ppl --json --backend engine --head f32" + kArgs + model).out);
    EXPECT_EQ(double(jf["ppl"]), double(jr["ppl"])) << model;
    EXPECT_EQ(double(jf["mean_nll"]), double(jr["mean_nll"])) << model;
    EXPECT_EQ(jf["tokens_scored"], jr["tokens_scored"]);
    EXPECT_EQ(jr["backend"], "reference");
    EXPECT_EQ(jr["head"], "f32");
    EXPECT_EQ(jf["backend"], "engine");
    EXPECT_EQ(jf["head"], "f32");
    EXPECT_TRUE(jf.contains("isa"));
    EXPECT_FALSE(jr.contains("isa"));
  }
}

TEST_F(CliEnginePpl, ReducedHeadsMoveThePerplexityALittle) {
  for (const std::string& model : {ck(), gguf()}) {
    const auto f32 = last_json(run("-q ppl --json --backend engine --head f32" + kArgs + model).out);
    for (const char* head : {"f16", "i8"}) {
      const auto r = run("-q ppl --json --backend engine --head " + std::string(head) + kArgs + model);
      ASSERT_EQ(r.code, 0) << r.out;
      const auto j = last_json(r.out);
      EXPECT_EQ(j["head"], head);
      EXPECT_NE(double(j["ppl"]), double(f32["ppl"])) << head << " " << model;
      EXPECT_NEAR(double(j["ppl"]), double(f32["ppl"]), 0.02 * double(f32["ppl"])) << head << " " << model;
    }
  }
  // auto: as stored (fp32 in a checkpoint, f16 in this GGUF)
  EXPECT_EQ(last_json(run("-q ppl --json --backend engine" + kArgs + ck()).out)["head"], "f32");
  const auto g16 = last_json(run("-q ppl --json --backend engine" + kArgs + gguf()).out);
  EXPECT_EQ(g16["head"], "f16");
  EXPECT_EQ(double(g16["ppl"]),
            double(last_json(run("-q ppl --json --backend engine --head f16" + kArgs + gguf()).out)["ppl"]));
}

TEST_F(CliEnginePpl, RefusesFlagsThatMakeNoSense) {
  auto r = run("ppl --backend gpu " + ck());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("--backend must be engine or reference"));
  r = run("ppl --backend engine --head q4 " + ck());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("--head must be auto, f32, f16 or i8"));
  for (const char* head : {"i8", "f16", "f32"}) {
    r = run("ppl --head " + std::string(head) + " " + ck());  // the default engine is the reference
    EXPECT_NE(r.code, 0) << head;
    EXPECT_THAT(r.out, HasSubstr("needs --backend engine")) << head;
    r = run("ppl --backend reference --head " + std::string(head) + " " + ck());
    EXPECT_NE(r.code, 0) << head;
    EXPECT_THAT(r.out, HasSubstr("needs --backend engine")) << head;
  }
  r = run("ppl --backend engine --hidden-act silu " + ck());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("--hidden-act applies to GGUF files only"));
  r = run("ppl --backend engine --protocol window --ctx 1024 " + ck());  // 128 positions
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("max_position_embeddings"));
}

}  // namespace

namespace {

// `ternlab bench --profile` on the engine: every test gets a per-phase profile (JSON and table); the
// reference backend, which has no phase timers, is refused with a clear message.
TEST_F(CliEnginePpl, BenchProfilesThePhases) {
  const auto r = run("bench " + gguf() + " -p 8 -n 4 -r 2 -t 1 --no-bandwidth --profile --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = last_json(r.out);
  ASSERT_EQ(j["results"].size(), 2u);
  for (const auto& e : j["results"]) {
    const auto& p = e["profile_ms_per_token"];
    for (const char* k : {"total", "ternary", "head", "norm", "quantize", "attention", "other"})
      ASSERT_TRUE(p.contains(k)) << k << "\n" << r.out;
    EXPECT_GT(p["total"].get<double>(), 0);
    EXPECT_GT(p["ternary"].get<double>(), 0);
    EXPECT_LE(p["ternary"].get<double>() + p["head"].get<double>(), p["total"].get<double>());
    if (e["test"] == "tg4")
      EXPECT_GT(e["profile_gbs"]["ternary"].get<double>(), 0);
    else
      EXPECT_FALSE(e.contains("profile_gbs"));
  }
  const auto text = run("bench " + gguf() + " -p 0 -n 4 -r 1 -t 1 --no-bandwidth --profile");
  ASSERT_EQ(text.code, 0) << text.out;
  EXPECT_THAT(text.out, HasSubstr("tg4 on 1 threads, by phase (4 tokens)"));
  EXPECT_THAT(text.out, HasSubstr("| ternary products |"));

  const auto ref = run("bench " + ck() + " --backend reference -p 0 -n 2 -r 1 --no-bandwidth --profile");
  EXPECT_NE(ref.code, 0);
  EXPECT_THAT(ref.out, HasSubstr("--profile needs phase timers"));
}

}  // namespace
