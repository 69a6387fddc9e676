// --device on ppl, pretrain, finetune, sweep and criticality, and `ternlab train-bench`: where no GPU can be
// used (or the build has no CUDA backend) asking for cuda is a clear error and a non-zero exit before any
// work; an unknown device is refused; train-bench measures a tiny model on the CPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "../common/test_util.hpp"

using ::testing::AnyOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

tl::test::CommandResult run(const std::string& args) {
  return tl::test::run_command(std::string(TERNLAB_BINARY) + " " + args);
}

class CliDevice : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("ternlab-cli-device-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const auto r = run("-q init --preset tiny --seed 3 --vocab 512 --ctx 128 -o " + ck());
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string ck() { return (dir_ / "ck").string(); }
  static fs::path dir_;
};
fs::path CliDevice::dir_;

// Whether this machine can run --device cuda (then the refusal tests do not apply).
bool gpu_usable() {
  const auto r =
      run("ppl " + (fs::temp_directory_path() / "no-such-ternlab-ckpt").string() + " --device cuda");
  return r.out.find("--device cuda") == std::string::npos;
}

TEST_F(CliDevice, CudaWithoutAGpuIsAClearError) {
  if (gpu_usable()) GTEST_SKIP() << "a GPU is usable here";
  for (const std::string& cmd :
       {"ppl " + ck() + " --corpus brown --split test --windows 2",
        "pretrain " + ck() + " -o " + (dir_ / "pre").string() + " --steps 2 --batch 2 --seq-len 16",
        "finetune " + ck() + " -o " + (dir_ / "ft").string() + " --steps 2 --batch 2 --seq-len 16",
        "sweep " + ck() + " --levels 0,10 --methods seed --windows 2", "train-bench " + ck() + " --batches 2",
        "criticality " + ck() + " --texts 2 --seeds 1"}) {
    const auto r = run(cmd + " --device cuda");
    EXPECT_NE(r.code, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr("--device cuda")) << cmd;
    EXPECT_THAT(r.out, AnyOf(HasSubstr("built without the CUDA backend"), HasSubstr("no usable CUDA device")))
        << cmd;
  }
  EXPECT_FALSE(fs::exists(dir_ / "pre" / "model.safetensors"));
}

TEST_F(CliDevice, UnknownDeviceIsRefused) {
  for (const std::string& cmd : {"ppl " + ck(), "pretrain " + ck() + " -o " + (dir_ / "x").string(),
                                 "sweep " + ck(), "train-bench " + ck(), "criticality " + ck()}) {
    const auto r = run(cmd + " --device tpu");
    EXPECT_NE(r.code, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr("--device: unknown device 'tpu': expected cpu or cuda")) << cmd;
  }
  const auto r = run("ppl " + ck() + " --device cuda --backend engine");
  EXPECT_NE(r.code, 0);
}

TEST_F(CliDevice, TrainBenchMeasuresEachBatchSizeOnTheCpu) {
  const auto r =
      run("train-bench " + ck() + " --batches 1,2 --seq-len 16 --steps 2 --warmup 1 --quant absmean --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  EXPECT_EQ(j.at("device"), "cpu");
  ASSERT_EQ(j.at("rows").size(), 2u);
  for (const auto& row : j.at("rows")) {
    EXPECT_GT(row.at("tokens_per_s").get<double>(), 0);
    EXPECT_GT(row.at("tflops").get<double>(), 0);
    EXPECT_TRUE(std::isfinite(row.at("last_loss").get<double>()));
  }
  EXPECT_EQ(j.at("rows")[1].at("batch"), 2);
  for (const std::string bad : {"--batches 0", "--batches 1.5", "--steps 1", "--seq-len 1", "--peak-tflops 0",
                                "--quant bogus", "--precision fp8", "--recompute"}) {
    const auto b = run("train-bench " + ck() + " " + bad);
    EXPECT_NE(b.code, 0) << bad << "\n" << b.out;
  }
}

}  // namespace
