// ternlab: a toolkit for ternary (BitNet b1.58) language models.
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

namespace tl::cli {

std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}

bool stdout_is_tty() {
  return ::isatty(STDOUT_FILENO);
}

std::string& command_line() {
  static std::string s;
  return s;
}

}  // namespace tl::cli

int main(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string a = i == 0 ? std::string("ternlab") : std::string(argv[i]);
    if (a.find_first_of(" '\"\t") != std::string::npos) {
      std::string q = "'";
      for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
      a = q + "'";
    }
    tl::cli::command_line() += (i ? " " : "") + a;
  }
  CLI::App app{"ternlab " TERNLAB_VERSION
               " — ternary (BitNet b1.58) language models: load, evaluate, prune, "
               "fine-tune, export, run, analyze"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("ternlab ") + TERNLAB_VERSION);
  bool quiet = false, verbose = false;
  app.add_flag("-q,--quiet", quiet, "only errors on stderr");
  app.add_flag("-v,--verbose", verbose, "debug messages on stderr");
  app.parse_complete_callback([&] {
    if (quiet) tl::set_log_level(tl::LogLevel::Error);
    if (verbose) tl::set_log_level(tl::LogLevel::Debug);
  });
  auto& cmds = tl::cli::registry();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  for (auto& c : cmds) c.setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const tl::Error& e) {
    std::fprintf(stderr, "ternlab: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "ternlab: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ternlab: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
