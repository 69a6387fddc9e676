// `ternlab study` on a tiny model: the plan, --max-runs with a C1-only report (the sanitizer runs' end-to-end
// pass), bad input; and Protocol A pinned. The whole study end to end: tests/study_e2e.
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
#include "study_test_util.hpp"
#include "text/tokenizer.hpp"

using ::testing::HasSubstr;

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
  // finished: the C1 verdicts, their report and plots (this is the sanitizer runs' pass through the report)
  const json res = read_json(out / "results.json");
  ASSERT_EQ(res["verdicts"].size(), 2u);
  EXPECT_EQ(res["verdicts"][0]["id"], "C1 (Protocol A)");
  EXPECT_EQ(res["claims"][0]["rows"].size(), 16u);  // 4 levels × 4 methods
  EXPECT_TRUE(fs::exists(out / "c1_pruning.svg"));
  EXPECT_THAT(tl::read_file(out / "report.html"), HasSubstr("C1 (held-out text)"));
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
  err("--eval-corpus sotu:test --eval-corpus sotu:test", "given twice");
  err("--bootstrap 5", "--bootstrap");
  err("--min-effect -1", "--min-effect");
  err("--device tpu", "tpu");
  err("--max-runs -1", "--max-runs");
  err("--recompute", "--recompute applies to --device cuda only");
  // a work folder of another study is refused, naming what differs
  const fs::path other = dir_ / "other";
  ASSERT_EQ(run("-q study " + m + " -o " + other.string() + " " + kTiny + " --only c1").code, 0);
  const auto r = run("study " + m + " -o " + other.string() + " " + kTiny + " --only c1 --seed 7");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("another seed (7 here, 0 there)"));
}
