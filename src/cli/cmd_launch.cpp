// `ternlab launch --gpus N -- finetune ...`: one process per GPU, data parallel over NCCL
// (workflow/launch.hpp).
#include <memory>
#include <numeric>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/parse.hpp"
#include "workflow/launch.hpp"

namespace tl::cli {
namespace {

struct LaunchArgs {
  int gpus = 0;
  std::string gpu_ids;
  std::vector<std::string> command;  // after `--`
};

const Registrar reg("launch", 65, [](CLI::App& app) {
  auto a = std::make_shared<LaunchArgs>();
  auto* cmd = app.add_subcommand("launch",
                                 "data-parallel training on several GPUs: runs `pretrain`, `finetune` or "
                                 "`train-bench` as one process per GPU "
                                 "(e.g. ternlab launch --gpus 2 -- finetune CKPT --device cuda ...)");
  cmd->add_option("--gpus", a->gpus, "number of ranks, one per GPU (GPUs 0..N-1 unless --gpu-ids)");
  cmd->add_option("--gpu-ids", a->gpu_ids, "comma-separated GPU indices, one rank each (instead of --gpus)");
  cmd->add_option("command", a->command, "-- then the ternlab command line of every rank");
  cmd->callback([a] {
    LaunchOptions o;
    TL_CHECK(a->gpus == 0 || a->gpu_ids.empty(), "launch: give --gpus or --gpu-ids, not both");
    if (!a->gpu_ids.empty()) {
      for (double g : parse_number_list(a->gpu_ids, "--gpu-ids")) {
        TL_CHECK(g >= 0 && g == double(int(g)), "--gpu-ids: '{}' is not a GPU index", g);
        o.gpus.push_back(int(g));
      }
    } else {
      TL_CHECK(a->gpus >= 1, "launch: --gpus must be at least 1, found {}", a->gpus);
      o.gpus.resize(size_t(a->gpus));
      std::iota(o.gpus.begin(), o.gpus.end(), 0);
    }
    o.args = a->command;
    const int rc = launch(o);
    if (rc != 0) throw CLI::RuntimeError(rc);  // the failed rank's status, already reported
  });
});

}  // namespace
}  // namespace tl::cli
