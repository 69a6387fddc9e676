// ternlab generate: continue a prompt, streaming the text to stdout (statistics to stderr).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <cstdio>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "cpu/threads.hpp"
#include "infer/loader.hpp"
#include "infer/text_generation.hpp"

namespace tl::cli {

// Sampling flags shared by generate, chat and serve (declared again in cmd_chat.cpp and cmd_serve.cpp).
void add_sampling_flags(CLI::App* cmd, SamplingParams& p) {
  cmd->add_option("-n,--max-tokens", p.max_tokens,
                  "tokens to generate at most (-1: until the context is full)")
      ->capture_default_str();
  cmd->add_option("--temp,--temperature", p.temperature, "sampling temperature; 0 is greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", p.top_k, "keep the k most likely tokens (0: off)")->capture_default_str();
  cmd->add_option("--top-p", p.top_p, "keep the most likely tokens up to this probability (1: off)")
      ->capture_default_str();
  cmd->add_option("--min-p", p.min_p, "drop tokens below min-p x the best one's probability (0: off)")
      ->capture_default_str();
  cmd->add_option("--repeat-penalty", p.repetition_penalty,
                  "divide positive / multiply negative logits of recent tokens (1: off)")
      ->capture_default_str();
  cmd->add_option("--repeat-last-n", p.repeat_last_n, "window of the repeat penalty (-1: everything, 0: off)")
      ->capture_default_str();
  cmd->add_option("--seed", p.seed, "random seed for sampling")->capture_default_str();
  cmd->add_option("--stop", p.stop, "stop before this text (repeatable)");
}

// Model flags shared by the three commands.
void add_model_flags(CLI::App* cmd, std::string& model, LoadOptions& load, int& threads) {
  cmd->add_option("model", model, "checkpoint directory or GGUF file")->required();
  cmd->add_option("--backend", load.backend, "auto | engine (fast kernels) | reference (fp32)")
      ->capture_default_str();
  cmd->add_option("--tokenizer", load.tokenizer, "tokenizer.json to use instead of the model's");
  add_threads_flag(cmd, threads);
}

namespace {

struct GenerateArgs {
  std::string model, prompt;
  LoadOptions load;
  SamplingParams sampling;
  int threads = 0;
  int64_t ctx = 0;
  bool json = false;
};

void run_generate(GenerateArgs& a) {
  validate(a.sampling);
  set_num_threads(a.threads);
  LoadedModel m = load_language_model(a.model, a.load);
  SamplingParams p = a.sampling;
  p.stop_ids.insert(p.stop_ids.end(), m.stop_ids.begin(), m.stop_ids.end());
  const std::vector<int32_t> prompt = m.tokenizer.encode(a.prompt, /*add_special=*/true);

  PieceCallback print_piece;
  if (!a.json) {
    print_piece = [](std::string_view piece, int32_t) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    };
  }
  const GenerationResult r = generate_text(*m.lm, m.tokenizer, prompt, p, print_piece, a.ctx);
  if (a.json) {
    const nlohmann::json j = {{"model", m.name},
                              {"backend", m.lm->describe()},
                              {"text", r.text},
                              {"tokens", r.tokens},
                              {"finish_reason", r.finish_reason},
                              {"prompt_tokens", r.prompt_tokens},
                              {"completion_tokens", r.completion_tokens},
                              {"prompt_seconds", r.prompt_seconds},
                              {"generation_seconds", r.generation_seconds},
                              {"prompt_tokens_per_s", r.prompt_tokens_per_s},
                              {"generation_tokens_per_s", r.generation_tokens_per_s},
                              {"seed", p.seed},
                              {"temperature", p.temperature},
                              {"threads", num_threads()}};
    fmt::print("{}\n", j.dump(2));
    return;
  }
  if (stdout_is_tty()) fmt::print("\n");
  fmt::print(stderr,
             "\n[{}: prompt {} tokens, {:.1f} tok/s; generated {} tokens, {:.1f} tok/s; finish: {}]\n",
             m.name, r.prompt_tokens, r.prompt_tokens_per_s, r.completion_tokens, r.generation_tokens_per_s,
             r.finish_reason);
}

const Registrar reg("generate", 70, [](CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd =
      app.add_subcommand("generate", "continue a prompt (text streams to stdout, statistics to stderr)");
  add_model_flags(cmd, a->model, a->load, a->threads);
  cmd->add_option("-p,--prompt", a->prompt, "the text to continue (bos is prepended)")->required();
  add_sampling_flags(cmd, a->sampling);
  cmd->add_option("--ctx", a->ctx, "context in tokens, prompt + completion (default: the model's maximum)")
      ->check(at_least(1));
  cmd->add_flag("--json", a->json, "print one JSON object at the end instead of streaming");
  cmd->callback([a] { run_generate(*a); });
});

}  // namespace
}  // namespace tl::cli
