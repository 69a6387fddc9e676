#include "infer/text_generation.hpp"

#include <algorithm>
#include <chrono>

#include "core/error.hpp"
#include "text/unicode.hpp"

namespace tl {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Length a UTF-8 sequence announces in its first byte; 0 for a continuation or an invalid lead byte.
size_t utf8_sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

bool is_continuation(unsigned char b) {
  return (b & 0xC0) == 0x80;
}

// The longest suffix of `text` that is a proper prefix of one of the stop strings: text that may yet
// become a stop string and so must not be shown.
size_t stop_prefix_at_end(std::string_view text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& stop : stops) {
    for (size_t len = std::min(stop.size() - 1, text.size()); len > hold; --len) {
      if (text.substr(text.size() - len) == std::string_view(stop).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

// The first occurrence of any stop string, or npos.
size_t first_stop(std::string_view text, const std::vector<std::string>& stops) {
  size_t first = std::string_view::npos;
  for (const auto& stop : stops) first = std::min(first, text.find(stop));
  return first;
}

}  // namespace

size_t utf8_incomplete_tail(std::string_view s) {
  // A character is at most 4 bytes, so its lead byte is among the last 3 when it is unfinished.
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    const auto b = static_cast<unsigned char>(s[s.size() - back]);
    if (is_continuation(b)) continue;
    const size_t need = utf8_sequence_length(b);
    return need > back ? back : 0;
  }
  return 0;
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const size_t bad = utf8_invalid_at(s);
    if (bad == std::string_view::npos) {
      out.append(s);
      break;
    }
    out.append(s.substr(0, bad));
    out.append("\xEF\xBF\xBD");  // U+FFFD for the lead byte and the continuation bytes that follow it
    size_t skip = 1;
    const size_t need = utf8_sequence_length(static_cast<unsigned char>(s[bad]));
    while (skip < need && bad + skip < s.size() && is_continuation(static_cast<unsigned char>(s[bad + skip])))
      ++skip;
    s.remove_prefix(bad + skip);
  }
  return out;
}

GenerationResult generate_text(CachedSession& cached, const Tokenizer& tokenizer,
                               std::span<const int32_t> prompt, const SamplingParams& params,
                               const PieceCallback& on_piece) {
  TL_CHECK(cached.session, "generate: no session");
  DecodeSession& session = *cached.session;
  Sampler sampler(params);  // validates params
  const int64_t P = int64_t(prompt.size()), capacity = session.capacity();
  TL_CHECK(P > 0, "generate: the prompt has no tokens");
  TL_CHECK(P <= capacity, "generate: the prompt has {} tokens, more than the context of {} tokens", P,
           capacity);
  for (const auto& stop : params.stop) TL_CHECK(!stop.empty(), "generate: empty stop string");
  if (int64_t(cached.tokens.size()) != session.length()) {  // used behind our back: the prefix is unknown
    session.clear();
    cached.tokens.clear();
  }

  GenerationResult r;
  r.prompt_tokens = P;
  // Prompt and completion never exceed the context (the last sampled token is not fed back, but it is
  // part of the text whose positions the model would need next).
  int64_t budget = capacity - P;
  if (params.max_tokens >= 0) budget = std::min<int64_t>(budget, params.max_tokens);
  if (budget <= 0) {
    r.finish_reason = "length";
    return r;
  }

  // Keep the common prefix, but always decode at least the prompt's last token: its logits are needed.
  size_t common = 0;
  const size_t reusable = std::min(cached.tokens.size(), size_t(P - 1));
  while (common < reusable && cached.tokens[common] == prompt[common]) ++common;
  session.truncate(int64_t(common));
  cached.tokens.resize(common);
  r.reused_prompt_tokens = int64_t(common);

  const auto t0 = Clock::now();
  std::span<const float> logits = session.decode(prompt.subspan(common));
  cached.tokens.insert(cached.tokens.end(), prompt.begin() + std::ptrdiff_t(common), prompt.end());
  const auto t1 = Clock::now();
  r.prompt_seconds = seconds_between(t0, t1);
  if (r.prompt_seconds > 0) r.prompt_tokens_per_s = double(P - int64_t(common)) / r.prompt_seconds;

  std::vector<int32_t> history(prompt.begin(), prompt.end());  // for the repetition penalty
  std::string held;                                            // decoded bytes not yet emitted
  bool stopped_by_string = false;
  const auto emit = [&](std::string_view bytes, int32_t token) {
    std::string piece = sanitize_utf8(bytes);
    r.text += piece;
    return on_piece ? on_piece(piece, token) : true;
  };
  while (true) {
    const int32_t next = sampler.sample(logits, history);
    ++r.completion_tokens;
    if (std::find(params.stop_ids.begin(), params.stop_ids.end(), next) != params.stop_ids.end()) {
      r.finish_reason = "stop";
      break;
    }
    r.tokens.push_back(next);
    history.push_back(next);
    held += tokenizer.decode(std::span<const int32_t>(&next, 1));

    const size_t stop_at = first_stop(held, params.stop);
    if (stop_at != std::string::npos) {
      emit(std::string_view(held).substr(0, stop_at), next);
      held.clear();
      stopped_by_string = true;
      r.finish_reason = "stop";
      break;
    }
    size_t ready = held.size() - stop_prefix_at_end(held, params.stop);
    ready -= utf8_incomplete_tail(std::string_view(held).substr(0, ready));
    const bool go_on = emit(std::string_view(held).substr(0, ready), next);
    held.erase(0, ready);
    if (!go_on) {
      r.finish_reason = "cancelled";
      break;
    }
    if (int64_t(r.tokens.size()) >= budget) {
      r.finish_reason = "length";
      break;
    }
    logits = session.decode(std::span<const int32_t>(&next, 1));
    cached.tokens.push_back(next);
  }
  // What was held back is final now: an unfinished character (U+FFFD) or the start of a stop string that
  // never came.
  if (!held.empty() && !stopped_by_string && r.finish_reason != "cancelled") emit(held, -1);
  r.generation_seconds = seconds_between(t1, Clock::now());
  if (r.generation_seconds > 0)
    r.generation_tokens_per_s = double(r.completion_tokens) / r.generation_seconds;
  return r;
}

GenerationResult generate_text(const LanguageModel& model, const Tokenizer& tokenizer,
                               std::span<const int32_t> prompt, const SamplingParams& params,
                               const PieceCallback& on_piece, int64_t context) {
  const int64_t max_ctx = model.config().max_position_embeddings;
  TL_CHECK(context >= 0 && context <= max_ctx, "generate: context {} is outside 0..{} (the model's maximum)",
           context, max_ctx);
  const int64_t limit = context > 0 ? context : max_ctx;
  TL_CHECK(int64_t(prompt.size()) <= limit,
           "generate: the prompt has {} tokens, more than the context of {} tokens", prompt.size(), limit);
  validate(params);
  // A cache just large enough: prompt + completion (the KV cache of a long context is large).
  const int64_t need = params.max_tokens < 0 ? limit : int64_t(prompt.size()) + params.max_tokens;
  CachedSession cached(model.new_session(std::clamp<int64_t>(need, 1, limit)));
  return generate_text(cached, tokenizer, prompt, params, on_piece);
}

}  // namespace tl
