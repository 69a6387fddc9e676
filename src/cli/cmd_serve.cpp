// ternlab serve: an OpenAI-compatible HTTP server for one model, until SIGINT or SIGTERM.
#include <fmt/format.h>
#include <pthread.h>

#include <csignal>
#include <cstdio>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "cpu/threads.hpp"
#include "infer/loader.hpp"
#include "serve/server.hpp"

namespace tl::cli {

// Defined in cmd_generate.cpp.
void add_sampling_flags(CLI::App* cmd, SamplingParams& p);
void add_model_flags(CLI::App* cmd, std::string& model, LoadOptions& load, int& threads);

namespace {

struct ServeArgs {
  std::string model;
  LoadOptions load;
  ServerOptions server;
  int threads = 0;
  double max_body_mib = 1.0;
};

void run_serve(ServeArgs& a) {
  // SIGINT / SIGTERM are taken by sigwait below, on this thread: block them before any thread starts
  // (threads inherit the mask), so that a signal stops the server cleanly instead of killing it.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  validate(a.server.defaults);
  TL_CHECK(a.max_body_mib > 0, "--max-body must be > 0 MiB, found {}", a.max_body_mib);
  a.server.max_body_bytes = size_t(a.max_body_mib * 1024 * 1024);
  set_num_threads(a.threads);
  const LoadedModel m = load_language_model(a.model, a.load);
  Server server(m, a.server);
  const int port = server.start();
  fmt::print("ternlab serve: {} ({}) on http://{}:{}\n", m.name, m.lm->describe(), a.server.host, port);
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  log_info("signal {}: stopping", signal_number);
  server.stop();
}

const Registrar reg("serve", 72, [](CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve",
                                 "OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions, "
                                 "/v1/models, /health");
  add_model_flags(cmd, a->model, a->load, a->threads);
  cmd->add_option("--host", a->server.host,
                  "address to listen on (not loopback: reachable by others, no auth)")
      ->capture_default_str();
  cmd->add_option("--port", a->server.port, "port (0: any free port, printed)")->capture_default_str();
  cmd->add_option("--max-body", a->max_body_mib, "largest request body in MiB (larger: 413)")
      ->capture_default_str();
  cmd->add_option("--max-queue", a->server.max_queue,
                  "requests that may wait while one generates (more: 503)")
      ->capture_default_str();
  cmd->add_option("--http-threads", a->server.http_threads, "request threads (at least max-queue + 4)")
      ->capture_default_str();
  cmd->add_option("--ctx", a->server.context,
                  "tokens per request, prompt + completion (default: the model's)")
      ->check(at_least(1));
  cmd->add_option("--chat-format", a->server.chat_format,
                  "bitnet | llama3 | bitnet-cpp | chatml (default: detected from the model's template)");
  cmd->add_option("--name", a->server.model_name,
                  "model id in responses (default: the file or directory name)");
  auto* defaults = cmd->add_option_group("request defaults", "sampling for fields a request leaves out");
  add_sampling_flags(defaults, a->server.defaults);
  cmd->callback([a] { run_serve(*a); });
});

}  // namespace
}  // namespace tl::cli
