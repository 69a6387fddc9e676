#include "workflow/launch.hpp"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>
#include <string_view>

#include "core/error.hpp"
#include "core/log.hpp"

#include <fmt/ranges.h>

namespace tl {

namespace fs = std::filesystem;

namespace {

// The children, for the signal handler (async-signal-safe: plain array, kill()).
constexpr int kMaxRanks = 256;
pid_t g_children[kMaxRanks];
std::atomic<int> g_num_children{0};

void forward_signal(int sig) {
  const int n = g_num_children.load();
  for (int i = 0; i < n; ++i)
    if (g_children[i] > 0) ::kill(g_children[i], sig);
}

bool is_launch_command(const std::string& s) {
  return std::any_of(std::begin(kLaunchCommands), std::end(kLaunchCommands),
                     [&](const char* c) { return s == c; });
}

}  // namespace

void validate(const LaunchOptions& opt) {
  TL_CHECK(!opt.gpus.empty(), "launch: --gpus must be at least 1");
  TL_CHECK(int(opt.gpus.size()) <= kMaxRanks, "launch: at most {} ranks, asked for {}", kMaxRanks,
           opt.gpus.size());
  std::set<int> seen;
  for (int g : opt.gpus) {
    TL_CHECK(g >= 0, "launch: GPU index {} is negative", g);
    TL_CHECK(seen.insert(g).second, "launch: GPU {} is listed twice (one rank per GPU)", g);
  }
  auto cmd = std::find_if(opt.args.begin(), opt.args.end(),
                          [](const std::string& a) { return !a.starts_with("-"); });
  TL_CHECK(cmd != opt.args.end(), "launch: no command to run (e.g. ternlab launch --gpus 2 -- finetune ...)");
  TL_CHECK(is_launch_command(*cmd),
           "launch: '{}' does not run data parallel; launch runs pretrain, finetune or train-bench", *cmd);
}

int launch(const LaunchOptions& opt) {
  validate(opt);
  fs::path program = opt.program;
  if (program.empty()) program = fs::read_symlink("/proc/self/exe");
  // a fresh private directory for the NCCL id: no stale id from an earlier run can be read
  std::string dir_template = (fs::temp_directory_path() / "ternlab-launch-XXXXXX").string();
  TL_CHECK(::mkdtemp(dir_template.data()) != nullptr, "launch: cannot create a temporary directory: {}",
           std::strerror(errno));
  const fs::path dir = dir_template;
  const std::string id_file = (dir / "nccl-id").string();
  const int world = int(opt.gpus.size());

  std::vector<std::string> argv_s = {program.string()};
  argv_s.insert(argv_s.end(), opt.args.begin(), opt.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  // Each rank's environment, built before fork: the child only calls async-signal-safe functions (the
  // launcher may have other threads, whose locks a forked child must not touch).
  std::vector<std::vector<std::string>> env_s(static_cast<size_t>(world));
  std::vector<std::vector<char*>> envp(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    auto& e = env_s[size_t(r)];
    for (char** v = environ; *v; ++v) {
      const std::string_view kv(*v);
      if (!kv.starts_with("TERNLAB_RANK=") && !kv.starts_with("TERNLAB_WORLD_SIZE=") &&
          !kv.starts_with("TERNLAB_LOCAL_GPU=") && !kv.starts_with("TERNLAB_NCCL_ID="))
        e.emplace_back(kv);
    }
    e.push_back("TERNLAB_RANK=" + std::to_string(r));
    e.push_back("TERNLAB_WORLD_SIZE=" + std::to_string(world));
    e.push_back("TERNLAB_LOCAL_GPU=" + std::to_string(opt.gpus[size_t(r)]));
    e.push_back("TERNLAB_NCCL_ID=" + id_file);
    for (auto& x : e) envp[size_t(r)].push_back(x.data());
    envp[size_t(r)].push_back(nullptr);
  }
  static const char kExecFailed[] = "ternlab launch: cannot run the rank's program\n";

  struct sigaction sa {
  }, old_int{}, old_term{};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);

  g_num_children = 0;
  int first_failure = 0;
  for (int r = 0; r < world; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::signal(SIGINT, SIG_DFL);  // the launcher's forwarding handler is not the rank's
      ::signal(SIGTERM, SIG_DFL);
      ::execve(argv[0], argv.data(), envp[size_t(r)].data());
      [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, kExecFailed, sizeof kExecFailed - 1);
      ::_exit(127);
    }
    if (pid < 0) {
      log_warn("launch: fork failed for rank {}: {}", r, std::strerror(errno));
      first_failure = 1;
      break;
    }
    g_children[r] = pid;
    g_num_children = r + 1;
  }
  if (first_failure) forward_signal(SIGTERM);
  log_info("launch: {} ranks of `{}` on GPUs {}", g_num_children.load(), fmt::join(opt.args, " "),
           fmt::join(opt.gpus, ","));

  int running = g_num_children.load();
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    int rank = -1;
    for (int i = 0; i < g_num_children.load(); ++i)
      if (g_children[i] == pid) rank = i;
    if (rank < 0) continue;
    g_children[rank] = -1;
    --running;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0 && first_failure == 0) {
      first_failure = code;
      log_warn("launch: rank {} {} {}; stopping the other ranks", rank,
               WIFEXITED(status) ? "exited with" : "was killed by signal",
               WIFEXITED(status) ? code : WTERMSIG(status));
      forward_signal(SIGTERM);
    }
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  g_num_children = 0;
  std::error_code ec;
  fs::remove_all(dir, ec);
  return first_failure;
}

}  // namespace tl
