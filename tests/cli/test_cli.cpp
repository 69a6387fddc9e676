// End-to-end tests of the ternlab binary: the commands a user types, their JSON, their exit codes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
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

// Parses the JSON object printed last (logs may precede it on stderr).
nlohmann::json last_json(const std::string& out) {
  const auto pos = out.rfind("\n{");
  return nlohmann::json::parse(pos == std::string::npos ? out : out.substr(pos + 1));
}

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("ternlab-cli-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const auto r = run("-q init --preset tiny --seed 3 -o " + (dir_ / "tiny").string());
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path dir_;
};
fs::path Cli::dir_;

TEST_F(Cli, InfoJsonDescribesTheModel) {
  const auto r = run("-q info --json " + (dir_ / "tiny").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = last_json(r.out);
  EXPECT_EQ(j["config"]["hidden_size"], 64);
  EXPECT_EQ(j["params"]["total"], 119552);
  const double neg = j["ternary"]["code_neg"], zero = j["ternary"]["code_zero"],
               pos = j["ternary"]["code_pos"];
  EXPECT_NEAR(neg + zero + pos, 1.0, 1e-9);
  // Gaussian latents under absmean: P(|w| < 0.5·E|w|) = P(|z| < 0.399) ≈ 0.31
  EXPECT_NEAR(zero, 0.31, 0.02);
  EXPECT_EQ(j["tensors"].size(), 24u);
}

TEST_F(Cli, PplSeedAndLlamaOnBrown) {
  const auto seed = run("-q ppl --json --corpus brown --split test " + (dir_ / "tiny").string());
  ASSERT_EQ(seed.code, 0) << seed.out;
  const auto j = last_json(seed.out);
  EXPECT_EQ(j["protocol"], "seed");
  EXPECT_EQ(j["windows"], 50);
  EXPECT_EQ(j["tokens_scored"], 50 * 127);
  // a random model is close to uniform over its 512-token vocabulary
  EXPECT_GT(double(j["ppl"]), 300.0);
  EXPECT_LT(double(j["ppl"]), 900.0);
  const auto llama = run("-q ppl --json --protocol llama --ctx 64 --windows 10 --corpus brown --split test " +
                         (dir_ / "tiny").string());
  ASSERT_EQ(llama.code, 0) << llama.out;
  const auto k = last_json(llama.out);
  EXPECT_EQ(k["protocol"], "llama");
  EXPECT_EQ(k["tokens_scored"], 10 * 31);  // 64 - 32 - 1 targets per window
  // deterministic: the same command gives the same number
  const auto again =
      last_json(run("-q ppl --json --corpus brown --split test " + (dir_ / "tiny").string()).out);
  EXPECT_EQ(double(again["ppl"]), double(j["ppl"]));
}

TEST_F(Cli, ImpossibleFlagsFailClearly) {
  const std::string ck = (dir_ / "tiny").string();
  auto r = run("ppl --protocol wiki " + ck);
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("unknown perplexity protocol 'wiki'"));
  r = run("ppl --ctx 1 " + ck);
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("--ctx: must be at least 2, found 1"));
  r = run("ppl --protocol window --ctx 1024 " + ck);  // the tiny model has 256 positions
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("max_position_embeddings"));
  r = run("ppl --split nonsense " + ck);
  EXPECT_NE(r.code, 0);
  r = run("ppl " + (dir_ / "missing").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("missing"));
  r = run("init --preset huge -o " + (dir_ / "x").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("unknown model preset 'huge'"));
  r = run("init --layers -2 -o " + (dir_ / "x").string());
  EXPECT_NE(r.code, 0);
  // 0 is not "the default" when typed: each is refused, naming the flag.
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"ppl --ctx 0 " + ck, "--ctx: must be at least 2, found 0"},
           {"generate --ctx 0 -p hi " + ck, "--ctx: must be at least 1, found 0"},
           {"chat --ctx 0 -m hi " + ck, "--ctx: must be at least 1, found 0"},
           {"serve --ctx 0 " + ck, "--ctx: must be at least 1, found 0"},
           {"init --preset tiny --hidden 0 -o " + (dir_ / "x").string(),
            "--hidden: must be at least 1, found 0"},
           {"init --preset tiny --ctx 0 -o " + (dir_ / "x").string(),
            "--ctx: must be at least 1, found 0"}}) {
    r = run(args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_THAT(r.out, HasSubstr(message)) << args;
  }
  EXPECT_FALSE(fs::exists(dir_ / "x"));
}

// A corpus without splits (a directory of text files) is read whole when --split is not given, and refused
// when it is; an empty input gives no token file.
TEST_F(Cli, CorporaWithoutSplits) {
  const std::string ck = (dir_ / "tiny").string();
  const fs::path texts = dir_ / "texts";
  fs::create_directories(texts);
  std::string body;
  for (int i = 0; i < 400; ++i)
    body += "The quick brown fox jumps over the lazy dog number " + std::to_string(i) + ".\n";
  std::ofstream(texts / "a.txt") << body;
  auto r = run("-q ppl --json --corpus text --input " + texts.string() + " --windows 2 " + ck);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(last_json(r.out)["split"], "");
  r = run("-q ppl --json --corpus text --input " + texts.string() + " --split test --windows 2 " + ck);
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("has no splits"));
  std::ofstream(dir_ / "empty.txt") << "";
  r = run("data prepare --tokenizer " + ck + " --corpus text --input " + (dir_ / "empty.txt").string() +
          " -o " + (dir_ / "empty.tok").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("gave no tokens"));
  EXPECT_FALSE(fs::exists(dir_ / "empty.tok"));
}

TEST_F(Cli, InitNeverOverwritesWithoutForce) {
  const std::string ck = (dir_ / "tiny").string();
  const auto before = fs::last_write_time(dir_ / "tiny" / "model.safetensors");
  auto r = run("init --preset tiny -o " + ck);
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("--force"));
  EXPECT_EQ(fs::last_write_time(dir_ / "tiny" / "model.safetensors"), before);
}

TEST_F(Cli, CorruptCheckpointIsRefused) {
  const fs::path bad = dir_ / "bad";
  fs::create_directories(bad);
  fs::copy_file(dir_ / "tiny" / "config.json", bad / "config.json");
  fs::copy_file(dir_ / "tiny" / "tokenizer.json", bad / "tokenizer.json");
  {  // a truncated model file
    std::ifstream in(dir_ / "tiny" / "model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream out(bad / "model.safetensors", std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size() / 2));
  }
  const auto r = run("ppl " + bad.string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("model.safetensors"));
}

TEST_F(Cli, PackedLayoutGivesTheSamePerplexityAsItsMaster) {
  // The packed checkpoint stores the master's codes and its absmean scale rounded to bf16.
  const std::string m = (dir_ / "m").string(), p = (dir_ / "p").string();
  ASSERT_EQ(run("-q init --preset tiny --seed 9 --dtype f32 -o " + m).code, 0);
  ASSERT_EQ(run("-q init --preset tiny --seed 9 --layout packed --dtype f32 -o " + p).code, 0);
  const auto a = last_json(run("-q ppl --json --corpus brown --split test --windows 5 " + m).out);
  const auto b = last_json(run("-q ppl --json --corpus brown --split test --windows 5 " + p).out);
  EXPECT_NEAR(double(a["ppl"]), double(b["ppl"]), 1e-3 * double(a["ppl"]));
}

}  // namespace

// ternlab actprune: bad flags fail before the checkpoint is read; a small run's JSON.
namespace {

TEST_F(Cli, ActpruneBadFlagsFailBeforeTheCheckpoint) {
  const std::string missing = (dir_ / "no-such-checkpoint").string();
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--levels 100", "[0, 100)"},
           {"--levels=-10", "[0, 100)"},
           {"--levels 50,20", "increasing"},
           {"--levels ''", "--levels is empty"},
           {"--levels 10,abc", "'abc' is not a number"},
           {"--modes study,foo", "unknown mode 'foo'"},
           {"--modes ''", "--modes is empty"},
           {"--modes random,random", "twice"},
           {"--max-new=-1", "--max-new"},
           {"--protocol wiki", "unknown perplexity protocol 'wiki'"},
           {"--prompts-file " + (dir_ / "none.txt").string(), "--prompts-file"}}) {
    const auto r = run("actprune " + flags + " " + missing);
    EXPECT_NE(r.code, 0) << flags;
    EXPECT_THAT(r.out, HasSubstr(message)) << flags;
    EXPECT_THAT(r.out, ::testing::Not(HasSubstr("no-such-checkpoint"))) << flags << ": read the checkpoint";
  }
}

TEST_F(Cli, ActpruneSmallRun) {
  const fs::path out = dir_ / "ap";
  const auto r = run("-q actprune --json --windows 2 --levels 0,50 --modes study,random --max-new 3 -o " +
                     out.string() + " " + (dir_ / "tiny").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = last_json(r.out);
  EXPECT_EQ(j["baseline"]["ppl"]["windows"], 2);
  EXPECT_EQ(j["baseline"]["generations"].size(), 3u);
  EXPECT_EQ(j["baseline"]["generations"][0]["prompt"], "The capital of France is");
  ASSERT_EQ(j["points"].size(), 4u);
  EXPECT_EQ(j["points"][0]["ppl"]["ppl"], j["baseline"]["ppl"]["ppl"]);  // level 0 is the baseline
  EXPECT_NEAR(double(j["points"][1]["pct_zeroed"]), 50.0, 1.0);
  EXPECT_EQ(j["points"][3]["mode"], "random");
  EXPECT_NEAR(double(j["points"][3]["pct_zeroed"]), 50.0, 1.0);
  EXPECT_TRUE(fs::exists(out / "actprune.json"));
  EXPECT_TRUE(fs::exists(out / "actprune.md"));
}

}  // namespace

// ternlab criticality: bad flags fail before the checkpoint is read; a small run with both controls.
namespace {

TEST_F(Cli, CriticalityBadFlagsFailBeforeTheCheckpoint) {
  const std::string missing = (dir_ / "no-such-checkpoint").string();
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--eps 0", "every ε must be finite and > 0"},
           {"--eps 1e-3,x", "'x' is not a number"},
           {"--ftle-eps 2", "relative size in (0, 1)"},
           {"--seeds 0", "--seeds"},
           {"--texts 0", "--texts"},
           {"--controls shuffle", "unknown control 'shuffle'"},
           {"--exclude-outliers 0.5", "outlier factor"},
           {"--device tpu", "--device: unknown device 'tpu': expected cpu or cuda"}}) {
    const auto r = run("criticality " + flags + " " + missing);
    EXPECT_NE(r.code, 0) << flags;
    EXPECT_THAT(r.out, HasSubstr(message)) << flags;
    EXPECT_THAT(r.out, ::testing::Not(HasSubstr("no-such-checkpoint"))) << flags << ": read the checkpoint";
  }
}

TEST_F(Cli, CriticalitySmallRunWithControls) {
  const fs::path out = dir_ / "crit";
  const auto r =
      run("-q criticality --json --texts 2 --seeds 1 --eps 1e-2 --ftle-eps 1e-2 --exclude-bos -o " +
          out.string() + " " + (dir_ / "tiny").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = last_json(r.out);
  EXPECT_EQ(j["texts"], 2);
  EXPECT_EQ(j["tokens_excluded"], 2);  // one BOS per text
  EXPECT_EQ(j["device"], "cpu");
  ASSERT_EQ(j["comparison"].size(), 3u);
  EXPECT_EQ(j["comparison"][1]["model"], "shuffled");
  EXPECT_EQ(j["comparison"][2]["model"], "random-init");
  EXPECT_TRUE(j["controls"]["random-init"]["ftle"][0]["ftle"]["median"].is_number());
  EXPECT_TRUE(fs::exists(out / "criticality.json"));
  EXPECT_TRUE(fs::exists(out / "criticality.md"));
}

}  // namespace

// ternlab pretrain -> finetune (with the 0% control) -> snap, end to end on the tiny model, and the
// training commands' bad flags.
namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

TEST_F(Cli, PretrainFinetuneSnapEndToEnd) {
  const fs::path pt = dir_ / "pretrained", ft = dir_ / "finetuned", sn = dir_ / "snapped";
  const std::string common = " --batch 2 --seq-len 32 --windows 2 --log-every 0 ";
  auto r = run("-q pretrain " + (dir_ / "tiny").string() + " -o " + pt.string() + common +
               "--steps 6 --warmup 2 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = last_json(r.out);
  ASSERT_EQ(j["runs"].size(), 1u);
  EXPECT_EQ(j["runs"][0]["steps"].size(), 6u);
  EXPECT_LT(double(j["runs"][0]["ppl_after"]), double(j["baseline_ppl"]));
  EXPECT_GT(double(j["unigram_ppl"]), 1.0);
  for (const char* f :
       {"config.json", "model.safetensors", "tokenizer.json", "ternlab_train.json", "train_log.csv",
        "train_report.json", "train_report.md", "state-pretrain/trainer_state.json"})
    EXPECT_TRUE(fs::exists(pt / f)) << f;
  const std::string log = slurp(pt / "train_log.csv");
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 7);  // header + 6 steps

  r = run("-q finetune " + pt.string() + " -o " + ft.string() + common +
          "--steps 2 --levels 5,10 --control --quant rpt-fixed --json");
  ASSERT_EQ(r.code, 0) << r.out;
  j = last_json(r.out);
  ASSERT_EQ(j["runs"].size(), 2u);
  ASSERT_EQ(j["control"].size(), 2u);
  EXPECT_NEAR(double(j["runs"][0]["latent_sparsity"]), 0.05, 0.01);
  EXPECT_GT(double(j["runs"][1]["latent_sparsity"]), 0.13);  // 10% of what 5% left, on top
  EXPECT_EQ(double(j["control"][1]["latent_sparsity"]), 0.0);
  EXPECT_TRUE(fs::exists(ft / "pruned" / "masks.safetensors"));
  EXPECT_TRUE(fs::exists(ft / "control" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(ft / "finetune_report.md"));
  EXPECT_THAT(slurp(ft / "pruned" / "ternlab_train.json"), HasSubstr("rpt-fixed"));

  r = run("-q snap " + (ft / "pruned").string() + " -o " + sn.string() + " --windows 2 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  j = last_json(r.out);
  EXPECT_EQ(j["mode"], "rpt-fixed");
  EXPECT_EQ(j["pct_ternary"], 100.0);
  EXPECT_GT(double(j["code_sparsity"]), 0.1);
  for (const auto& e : j["exports"]) {
    EXPECT_EQ(e["code_mismatches"], 0) << e["layout"];
    EXPECT_LT(double(e["max_scale_rel_error"]), 0.004) << e["layout"];  // bf16 scale rounding
    EXPECT_NEAR(double(e["ppl"]), double(j["ppl"]), 0.01 * double(j["ppl"])) << e["layout"];
  }
  // The snapped model is the model the fine-tune's last run evaluated (its PPL after).
  EXPECT_NEAR(double(j["ppl"]), double(last_json(slurp(ft / "finetune_report.json"))["runs"][1]["ppl_after"]),
              1e-9);
  r = run("-q ppl " + (sn / "packed").string() + " --split validation --windows 2 --json");
  ASSERT_EQ(r.code, 0) << r.out;
}

// --resume: refused when nothing was saved; finds a state a kill left in state-*.tmp; drops the log rows an
// interrupted run wrote after its last saved state (no step twice).
TEST_F(Cli, ResumeFindsTheStateOrRefuses) {
  const fs::path pt = dir_ / "resumed";
  const std::string base = "-q pretrain " + (dir_ / "tiny").string() + " -o " + pt.string() +
                           " --batch 2 --seq-len 32 --windows 2 --log-every 0 --steps 6 --warmup 2";
  auto r = run(base + " --resume");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("--resume, but " + pt.string() + " holds no saved training state"));
  ASSERT_EQ(run(base).code, 0);
  // A kill between save_state's renames: the complete new state is still named .tmp.
  fs::rename(pt / "state-pretrain", pt / "state-pretrain.tmp");
  {
    std::ofstream log(pt / "train_log.csv", std::ios::app);
    log << "pretrain,7,1.0,0.001,1,64,0.1\npretrain,8,1.0,0.001,1,64,0.1\n";  // logged after the last save
  }
  r = run(base + " --resume --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(pt / "state-pretrain" / "trainer_state.json"));
  EXPECT_FALSE(fs::exists(pt / "state-pretrain.tmp"));
  const std::string log = slurp(pt / "train_log.csv");
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 7) << log;  // header + steps 1..6, once each
  EXPECT_THAT(log, ::testing::Not(HasSubstr("pretrain,7,")));
}

TEST_F(Cli, TrainingBadFlagsFailBeforeTheCheckpoint) {
  const std::string missing = (dir_ / "no-such-checkpoint").string();
  for (const auto& [cmd, message] : std::vector<std::pair<std::string, std::string>>{
           {"pretrain --lr=-1", "--lr"},
           {"pretrain --steps 0", "--steps"},
           {"pretrain --batch 0", "--batch"},
           {"pretrain --batch 4 --grad-accum 3", "--grad-accum"},
           {"pretrain --seq-len 1", "--seq-len"},
           {"pretrain --quant foo", "unknown weight quantizer 'foo'"},
           {"pretrain --precision fp16", "--precision"},
           {"pretrain --warmup 400", "--warmup"},
           {"finetune --levels 100", "[0, 100)"},
           {"finetune --levels 5,x", "'x' is not a number"},
           {"finetune --method nope", "nope"},
           {"snap --quant bogus", "unknown weight quantizer 'bogus'"}}) {
    const auto r = run(cmd + " " + missing + " -o " + (dir_ / "never").string());
    EXPECT_NE(r.code, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr(message)) << cmd;
    EXPECT_THAT(r.out, ::testing::Not(HasSubstr("no-such-checkpoint"))) << cmd << ": read the checkpoint";
  }
  EXPECT_FALSE(fs::exists(dir_ / "never"));
}

}  // namespace
