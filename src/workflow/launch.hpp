// `ternlab launch`: data-parallel training as one process per GPU on this host. Each child is this same
// binary with the given command line and the rank variables of workflow/device.hpp (ProcessGroup) set; they
// meet through an NCCL id file in a fresh private directory. A failing rank stops the others (SIGTERM: the
// survivors would wait for it in a collective forever); SIGINT / SIGTERM to the launcher reach every rank.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace tl {

// The commands a launch may run: those whose work is split over ranks and whose outputs rank 0 writes.
constexpr const char* kLaunchCommands[] = {"pretrain", "finetune", "train-bench"};

struct LaunchOptions {
  std::vector<int> gpus;          // rank r uses GPU gpus[r]; one rank per entry
  std::vector<std::string> args;  // the ternlab command line after the program name, e.g. {"finetune", ...}
  std::filesystem::path program;  // empty: this binary (/proc/self/exe)
};
// Errors (before anything starts): no GPU or a repeated one, an empty command line, a command other than
// kLaunchCommands (global flags such as -q may come first).
void validate(const LaunchOptions& opt);
// Runs the ranks and waits for all of them. Returns 0 when every rank exits 0, otherwise the exit status of
// the first rank that failed (128 + signal when one was killed); the failure is logged with its rank.
int launch(const LaunchOptions& opt);

}  // namespace tl
