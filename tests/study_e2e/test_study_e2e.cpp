// `ternlab study` end to end on a tiny model, every claim: the report's structure, its numbers against the
// run records, and resuming after kill -9. Labelled slow: the Release run has them, the sanitizer runs do
// not.
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
#include "../study/study_test_util.hpp"
#include "core/file.hpp"

using ::testing::HasSubstr;

namespace {

double ppl_of(const json& scores) {
  double nll = 0, tok = 0;
  for (double v : scores.at("nll")) nll += v;
  for (double v : scores.at("tokens")) tok += v;
  return std::exp(nll / tok);
}

}  // namespace

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
  const std::string args = (dir_ / "model").string() + " " + kTiny + " --only c2";  // the chains resume
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
