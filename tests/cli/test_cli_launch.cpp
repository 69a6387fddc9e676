// `ternlab launch` and the process-group environment (workflow/device.hpp, workflow/launch.hpp): what a
// machine without GPUs can check — the rank variables are validated, the launcher refuses what it cannot
// run, starts one process per rank with the right environment, and reports a failed rank with a non-zero
// exit. The two-GPU runs themselves are in scripts/gpu-check.sh.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "../common/test_util.hpp"
#include "core/error.hpp"
#include "workflow/device.hpp"
#include "workflow/launch.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

tl::test::CommandResult run(const std::string& args) {
  return tl::test::run_command(std::string(TERNLAB_BINARY) + " " + args);
}

TEST(ProcessGroup, NoVariablesIsOneProcess) {
  const std::vector<std::string> env;
  const tl::ProcessGroup g = tl::process_group_from(&env);
  EXPECT_EQ(g.world, 1);
  EXPECT_EQ(g.rank, 0);
  EXPECT_EQ(g.gpu, 0);
  EXPECT_TRUE(g.writes_outputs());
}

TEST(ProcessGroup, TernlabVariables) {
  const std::vector<std::string> env = {"TERNLAB_RANK=1", "TERNLAB_WORLD_SIZE=2", "TERNLAB_LOCAL_GPU=3",
                                        "TERNLAB_NCCL_ID=/tmp/x"};
  const tl::ProcessGroup g = tl::process_group_from(&env);
  EXPECT_EQ(g.rank, 1);
  EXPECT_EQ(g.world, 2);
  EXPECT_EQ(g.gpu, 3);
  EXPECT_EQ(g.id_file, "/tmp/x");
  EXPECT_FALSE(g.writes_outputs());
}

TEST(ProcessGroup, OpenMpiVariables) {
  const std::vector<std::string> env = {"OMPI_COMM_WORLD_RANK=2", "OMPI_COMM_WORLD_SIZE=4",
                                        "OMPI_COMM_WORLD_LOCAL_RANK=0", "TERNLAB_NCCL_ID=/tmp/y"};
  const tl::ProcessGroup g = tl::process_group_from(&env);
  EXPECT_EQ(g.rank, 2);
  EXPECT_EQ(g.world, 4);
  EXPECT_EQ(g.gpu, 0);
}

TEST(ProcessGroup, BadVariablesAreErrors) {
  using V = std::vector<std::string>;
  for (const V& env : {V{"TERNLAB_RANK=2", "TERNLAB_WORLD_SIZE=2", "TERNLAB_NCCL_ID=/tmp/x"},
                       V{"TERNLAB_RANK=x", "TERNLAB_WORLD_SIZE=2", "TERNLAB_NCCL_ID=/tmp/x"},
                       V{"TERNLAB_RANK=-1", "TERNLAB_WORLD_SIZE=2", "TERNLAB_NCCL_ID=/tmp/x"},
                       V{"TERNLAB_RANK=0", "TERNLAB_WORLD_SIZE=0"},
                       V{"TERNLAB_WORLD_SIZE=2", "TERNLAB_NCCL_ID=/tmp/x"},  // which rank?
                       V{"TERNLAB_RANK=1", "TERNLAB_WORLD_SIZE=2"}})         // where do the ranks meet?
    EXPECT_THROW(tl::process_group_from(&env), tl::Error) << env[0] << " " << env[1];
}

TEST(Launch, RefusesWhatItCannotRun) {
  tl::LaunchOptions o;
  o.gpus = {0, 1};
  o.args = {"ppl", "ck"};
  EXPECT_THROW(tl::validate(o), tl::Error);  // not data parallel
  o.args = {};
  EXPECT_THROW(tl::validate(o), tl::Error);
  o.args = {"-q", "finetune", "ck"};
  EXPECT_NO_THROW(tl::validate(o));
  o.gpus = {0, 0};
  EXPECT_THROW(tl::validate(o), tl::Error);  // one rank per GPU
  o.gpus = {};
  EXPECT_THROW(tl::validate(o), tl::Error);

  for (const char* args : {"launch --gpus 2 -- ppl ck", "launch --gpus 0 -- finetune ck",
                           "launch --gpus 2 --gpu-ids 0,1 -- finetune ck",
                           "launch --gpu-ids 1,1 -- finetune ck", "launch --gpus 2"}) {
    const auto r = run(args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_THAT(r.out, HasSubstr("launch")) << args << "\n" << r.out;
  }
}

// The ranks run this binary with their own environment: a stand-in program records it, and a failing rank
// makes the launch fail with its status.
TEST(Launch, StartsOneProcessPerRankWithItsEnvironment) {
  const fs::path dir = fs::temp_directory_path() / ("ternlab-launch-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path script = dir / "rank.sh";
  {
    std::ofstream f(script);
    f << "#!/bin/sh\n"
      << "echo \"$TERNLAB_RANK $TERNLAB_WORLD_SIZE $TERNLAB_LOCAL_GPU $1 $2\" > " << dir.string()
      << "/rank$TERNLAB_RANK.txt\n"
      << "test -n \"$TERNLAB_NCCL_ID\" || exit 9\n"
      << "test \"$TERNLAB_RANK\" != \"$FAIL_RANK\" || exit 3\n";
  }
  fs::permissions(script, fs::perms::owner_all);
  tl::LaunchOptions o;
  o.gpus = {2, 5};
  o.args = {"finetune", "ck"};
  o.program = script;
  ::unsetenv("FAIL_RANK");
  EXPECT_EQ(tl::launch(o), 0);
  for (int r = 0; r < 2; ++r) {
    std::ifstream f(dir / ("rank" + std::to_string(r) + ".txt"));
    std::string line;
    std::getline(f, line);
    EXPECT_EQ(line, std::to_string(r) + " 2 " + (r == 0 ? "2" : "5") + " finetune ck");
  }
  ::setenv("FAIL_RANK", "1", 1);
  EXPECT_EQ(tl::launch(o), 3);
  ::unsetenv("FAIL_RANK");
  fs::remove_all(dir);
}

// SIGTERM to the launcher reaches every rank: ranks that would sleep for a minute end at once, and the launch
// reports the signal (128 + SIGTERM).
TEST(Launch, ForwardsSigtermToTheRanks) {
  const fs::path dir = fs::temp_directory_path() / ("ternlab-launch-sig-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path script = dir / "rank.sh";
  {
    std::ofstream f(script);
    f << "#!/bin/sh\ntouch " << dir.string() << "/up$TERNLAB_RANK\nexec sleep 60\n";
  }
  fs::permissions(script, fs::perms::owner_all);
  tl::LaunchOptions o;
  o.gpus = {0, 1};
  o.args = {"finetune"};
  o.program = script;
  int rc = -1;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread runner([&] { rc = tl::launch(o); });
  // both ranks are up (so the launcher's handler is installed) before the signal is sent
  while (!(fs::exists(dir / "up0") && fs::exists(dir / "up1")) &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(dir / "up0") && fs::exists(dir / "up1"));
  ::kill(::getpid(), SIGTERM);
  runner.join();
  EXPECT_EQ(rc, 128 + SIGTERM);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
  fs::remove_all(dir);
}

// A real ternlab under launch: the ranks check their flags (the CPU cannot run several processes) and
// the launch exits non-zero, writing nothing.
TEST(Launch, RanksRefuseTheCpu) {
  const fs::path dir = fs::temp_directory_path() / ("ternlab-launch-cli-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string ck = (dir / "ck").string();
  ASSERT_EQ(run("-q init --preset tiny --seed 3 --vocab 512 --ctx 128 -o " + ck).code, 0);
  const auto r = run("launch --gpus 2 -- finetune " + ck + " -o " + (dir / "ft").string() +
                     " --steps 2 --batch 2 --seq-len 16 --device cpu");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("need --device cuda"));
  EXPECT_THAT(r.out, HasSubstr("launch: rank"));
  EXPECT_FALSE(fs::exists(dir / "ft"));
  const auto s = run("finetune " + ck + " -o " + (dir / "ft").string() + " --shard-optimizer");
  EXPECT_NE(s.code, 0);
  EXPECT_THAT(s.out, HasSubstr("--shard-optimizer"));
  fs::remove_all(dir);
}

}  // namespace
