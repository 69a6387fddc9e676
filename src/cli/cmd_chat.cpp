// ternlab chat: a multi-turn conversation, one user message per stdin line (or per --message), rendered
// with the model's chat template; earlier turns stay in the KV cache between turns.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "cpu/threads.hpp"
#include "infer/chat_template.hpp"
#include "infer/loader.hpp"
#include "infer/text_generation.hpp"

namespace tl::cli {

// Defined in cmd_generate.cpp.
void add_sampling_flags(CLI::App* cmd, SamplingParams& p);
void add_model_flags(CLI::App* cmd, std::string& model, LoadOptions& load, int& threads);

namespace {

struct ChatArgs {
  std::string model, system, chat_format;
  std::vector<std::string> messages;
  LoadOptions load;
  SamplingParams sampling;
  int threads = 0;
  int64_t ctx = 0;
};

class Conversation {
 public:
  Conversation(const LoadedModel& m, const ChatArgs& a) : m_(m), params_(a.sampling), cached_(nullptr) {
    format_ = a.chat_format.empty() ? detect_chat_format(m.chat_template) : parse_chat_format(a.chat_format);
    if (const int32_t bos = m.tokenizer.bos_id(); bos >= 0) bos_ = m.tokenizer.token(bos);
    for (auto& s : chat_stop_strings(format_)) params_.stop.push_back(s);
    params_.stop_ids.insert(params_.stop_ids.end(), m.stop_ids.begin(), m.stop_ids.end());
    const int64_t max_ctx = m.lm->config().max_position_embeddings;
    TL_CHECK(a.ctx >= 0 && a.ctx <= max_ctx, "--ctx {} is outside 0..{} (the model's maximum)", a.ctx,
             max_ctx);
    cached_ = CachedSession(m.lm->new_session(a.ctx));
    if (!a.system.empty()) history_.push_back({"system", a.system});
    log_debug("chat format {}, context {} tokens", chat_format_name(format_), cached_.session->capacity());
  }

  // One turn: the reply streams to stdout. Errors leave the conversation as it was.
  void turn(const std::string& user) {
    history_.push_back({"user", user});
    try {
      const std::vector<int32_t> prompt = fitting_prompt();
      SamplingParams p = params_;
      p.seed = params_.seed + turns_;  // another draw each turn, the same conversation each run
      const GenerationResult r =
          generate_text(cached_, m_.tokenizer, prompt, p, [](std::string_view piece, int32_t) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
            return true;
          });
      fmt::print("\n");
      std::fflush(stdout);
      history_.push_back({"assistant", r.text});
      ++turns_;
      log_debug("prompt {} tokens ({} reused), reply {} tokens at {:.1f} tok/s, finish: {}", r.prompt_tokens,
                r.reused_prompt_tokens, r.completion_tokens, r.generation_tokens_per_s, r.finish_reason);
    } catch (...) {
      history_.pop_back();
      throw;
    }
  }

 private:
  // The rendered conversation, dropping the oldest exchanges (never the system message or the new
  // message) until it leaves room to answer.
  std::vector<int32_t> fitting_prompt() {
    const int64_t capacity = cached_.session->capacity();
    while (true) {
      std::vector<int32_t> ids =
          m_.tokenizer.encode(render_chat(format_, history_, bos_), /*add_special=*/false);
      if (int64_t(ids.size()) < capacity) return ids;
      const size_t first = !history_.empty() && history_.front().role == "system" ? 1 : 0;
      TL_CHECK(history_.size() - first > 1,
               "chat: the message needs {} tokens with the template, more than the context of {} (--ctx)",
               ids.size(), capacity);
      log_warn("chat: the conversation no longer fits the context of {} tokens; forgetting the oldest turn",
               capacity);
      history_.erase(history_.begin() + std::ptrdiff_t(first));  // a user message ...
      if (history_.size() - first > 1 && history_[first].role == "assistant")
        history_.erase(history_.begin() + std::ptrdiff_t(first));  // ... and its reply
    }
  }

  const LoadedModel& m_;
  SamplingParams params_;
  ChatFormat format_ = ChatFormat::BitNet;
  std::string bos_;
  CachedSession cached_;
  std::vector<ChatMessage> history_;
  uint64_t turns_ = 0;
};

void run_chat(ChatArgs& a) {
  validate(a.sampling);
  if (!a.chat_format.empty()) parse_chat_format(a.chat_format);  // refuse a bad name before loading
  set_num_threads(a.threads);
  const LoadedModel m = load_language_model(a.model, a.load);
  Conversation chat(m, a);
  if (!a.messages.empty()) {  // non-interactive: each --message is a turn
    for (const auto& message : a.messages) chat.turn(message);
    return;
  }
  const bool interactive = ::isatty(STDIN_FILENO);
  if (interactive) fmt::print(stderr, "chat with {} (an empty line is skipped; Ctrl-D ends)\n", m.name);
  std::string line;
  while (true) {
    if (interactive) fmt::print(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    try {
      chat.turn(line);
    } catch (const Error& e) {
      if (!interactive) throw;
      fmt::print(stderr, "error: {}\n", e.what());
    }
  }
  if (interactive) fmt::print(stderr, "\n");
}

const Registrar reg("chat", 71, [](CLI::App& app) {
  auto a = std::make_shared<ChatArgs>();
  auto* cmd =
      app.add_subcommand("chat", "chat with a model: one user message per stdin line, replies on stdout");
  add_model_flags(cmd, a->model, a->load, a->threads);
  cmd->add_option("--system", a->system, "system message");
  cmd->add_option("--chat-format", a->chat_format,
                  "bitnet | llama3 | bitnet-cpp | chatml (default: detected from the model's template)");
  cmd->add_option("-m,--message", a->messages, "a user message instead of stdin (repeatable, in order)");
  add_sampling_flags(cmd, a->sampling);
  cmd->add_option("--ctx", a->ctx,
                  "context in tokens for the whole conversation (default: the model's maximum)")
      ->check(at_least(1));
  cmd->callback([a] { run_chat(*a); });
});

}  // namespace
}  // namespace tl::cli
