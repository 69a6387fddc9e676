// Subcommand registry: each src/cli/cmd_<name>.cpp registers itself with a static Registrar, so adding a
// command touches one file. Commands parse flags, call one library function, and print (DESIGN §7).
#pragma once
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "text/corpus.hpp"

namespace tl::cli {

struct Command {
  std::string name;
  int order;                                 // position in --help
  std::function<void(CLI::App& app)> setup;  // adds a subcommand to app and its callback
};

std::vector<Command>& registry();

struct Registrar {
  Registrar(std::string name, int order, std::function<void(CLI::App&)> setup) {
    registry().push_back({std::move(name), order, std::move(setup)});
  }
};

// For integer flags whose unset value (0) stands for "the default": an explicit value below `min` (--ctx 0)
// is refused rather than silently read as that default.
inline CLI::Validator at_least(int64_t min) {
  return CLI::Validator(
      [min](std::string& s) -> std::string {
        int64_t v = 0;
        const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (ec != std::errc() || end != s.data() + s.size())
          return {};  // the conversion reports non-integers
        if (v >= min) return {};
        return fmt::format("must be at least {}, found {} (leave the flag out for the default)", min, v);
      },
      fmt::format("INT>={}", min));
}

// --threads N, the one threads option: checked as the flags are read (0, the default: all cores). The command
// applies it with set_num_threads where its threads may start.
inline CLI::Option* add_threads_flag(CLI::App* cmd, int& threads,
                                     const char* help = "threads (default: all cores)") {
  return cmd->add_option("--threads", threads, help)->check(at_least(0));
}

// Shared output helper: true when stdout is a terminal.
bool stdout_is_tty();

// The command line as typed (arguments joined by spaces, those with spaces or quotes single-quoted), for
// reports that record how they were made.
std::string& command_line();

// --corpus as a comma-separated list of specs KIND[:SPLIT][=PATH] (it holds ':', ',' or '=') rather than one
// kind.
bool is_corpus_spec_list(const std::string& corpus);
// The specs of such a --corpus; refuses --split / --input beside it, and --field / --per-line when no corpus
// of the list takes them.
std::vector<CorpusSpec> corpus_spec_list(const std::string& corpus, bool split_given, bool input_given,
                                         bool field_given, bool per_line);

}  // namespace tl::cli
