// Text generation on a DecodeSession: the prompt decoded once (reusing what the session already holds),
// then one token at a time through a Sampler, with stop tokens, stop strings, a token budget and the end
// of the context; streamed as complete UTF-8 pieces. What generate, chat and serve all run.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "infer/sampling.hpp"
#include "infer/session.hpp"
#include "text/tokenizer.hpp"

namespace tl {

// A decode session and the tokens its cache holds, so that a later prompt beginning with them decodes
// only the rest (a chat's earlier turns). generate_text keeps `tokens` in step with the cache.
struct CachedSession {
  std::unique_ptr<DecodeSession> session;
  std::vector<int32_t> tokens;  // tokens[i] is at cache position i; size() == session->length()

  explicit CachedSession(std::unique_ptr<DecodeSession> s) : session(std::move(s)) {}
};

struct GenerationResult {
  std::string text;                  // what was emitted: valid UTF-8, without the stop string or stop token
  std::vector<int32_t> tokens;       // the tokens sampled, without a final stop token
  std::string finish_reason;         // "stop" (stop token or string), "length" (max_tokens or context), or
                                     // "cancelled" (the callback returned false)
  int64_t prompt_tokens = 0;         // the prompt's length
  int64_t reused_prompt_tokens = 0;  // of which were already in the session's cache
  int64_t completion_tokens = 0;     // tokens sampled, a final stop token included
  double prompt_seconds = 0, generation_seconds = 0;
  double prompt_tokens_per_s = 0;      // prompt tokens decoded (not reused) per second
  double generation_tokens_per_s = 0;  // completion tokens per second after the prompt
};

// Called as text becomes final: once per sampled token that is not a stop token, with the text it
// releases (possibly empty: part of a multi-byte character, or text that may start a stop string, is
// held back until it is settled), and once more with token -1 if held-back text is released at the end.
// `piece` is always valid UTF-8 (invalid bytes from the model become U+FFFD). Return false to stop.
using PieceCallback = std::function<bool(std::string_view piece, int32_t token)>;

// Generates a continuation of `prompt` in `cached`. The session keeps the common prefix of its tokens and
// the prompt (at least the prompt's last token is decoded again, for its logits), decodes the rest, then
// samples. Prompt + completion never exceed the session's capacity. Errors (tl::Error): an empty prompt,
// a prompt longer than the capacity, invalid params, a token outside the vocabulary, NaN logits.
GenerationResult generate_text(CachedSession& cached, const Tokenizer& tokenizer,
                               std::span<const int32_t> prompt, const SamplingParams& params,
                               const PieceCallback& on_piece = {});

// The same on a fresh session of the model sized for prompt + max_tokens (capped at `context`, 0: the
// model's maximum).
GenerationResult generate_text(const LanguageModel& model, const Tokenizer& tokenizer,
                               std::span<const int32_t> prompt, const SamplingParams& params,
                               const PieceCallback& on_piece = {}, int64_t context = 0);

// UTF-8 helpers for streaming (exposed for tests).
// The number of bytes at the end of `s` that begin a multi-byte character without finishing it (0..3).
size_t utf8_incomplete_tail(std::string_view s);
// `s` with every invalid UTF-8 sequence replaced by U+FFFD.
std::string sanitize_utf8(std::string_view s);

}  // namespace tl
