// generate_text: greedy parity with cpu/generate, seeded reproducibility, stop tokens and strings, UTF-8
// streaming, budgets, prefix reuse. A scripted model (logits that spell a chosen text) makes the text
// tests exact; a tiny random BitNet on the reference backend checks the real path.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../common/test_util.hpp"
#include "cpu/generate.hpp"
#include "infer/reference_model.hpp"
#include "infer/text_generation.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "text/unicode.hpp"

namespace tl {
namespace {

using test::error_of;

// A language model whose logits at cache length L pick script[L] (one-hot): with a prompt that is the
// script's beginning, generation continues the script. A negative entry gives NaN logits.
class ScriptedModel : public LanguageModel {
 public:
  explicit ScriptedModel(std::vector<int32_t> script, int64_t context = 64) : script_(std::move(script)) {
    cfg_ = config_preset("tiny");
    cfg_.max_position_embeddings = context;
  }
  const BitNetConfig& config() const override { return cfg_; }
  std::string describe() const override { return "scripted"; }
  std::unique_ptr<DecodeSession> new_session(int64_t capacity) const override {
    return std::make_unique<Session>(*this, capacity == 0 ? cfg_.max_position_embeddings : capacity);
  }
  mutable int64_t decoded_tokens = 0;

 private:
  class Session : public DecodeSession {
   public:
    Session(const ScriptedModel& m, int64_t capacity)
        : m_(m), capacity_(capacity), logits_(size_t(m.cfg_.vocab_size)) {}
    int64_t length() const override { return length_; }
    int64_t capacity() const override { return capacity_; }
    void truncate(int64_t n) override { length_ = n; }
    std::span<const float> decode(std::span<const int32_t> tokens) override {
      TL_CHECK(!tokens.empty() && length_ + int64_t(tokens.size()) <= capacity_,
               "scripted decode out of range");
      length_ += int64_t(tokens.size());
      m_.decoded_tokens += int64_t(tokens.size());
      const int32_t next = size_t(length_) < m_.script_.size() ? m_.script_[size_t(length_)] : 0;
      std::fill(logits_.begin(), logits_.end(), next < 0 ? std::numeric_limits<float>::quiet_NaN() : 0.0f);
      if (next >= 0) logits_[size_t(next)] = 10.0f;
      return logits_;
    }

   private:
    const ScriptedModel& m_;
    int64_t capacity_, length_ = 0;
    std::vector<float> logits_;
  };
  BitNetConfig cfg_;
  std::vector<int32_t> script_;
};

const Tokenizer& byte_tokenizer() {
  static const Tokenizer tok = Tokenizer::byte_level(512);
  return tok;
}

// Prompt "<bos>>" followed by `text` byte by byte (the byte-level tokenizer's ids are the bytes).
std::vector<int32_t> script_for(const std::string& text, std::vector<int32_t> extra = {}) {
  std::vector<int32_t> s = {256, '>'};
  for (unsigned char c : text) s.push_back(int32_t(c));
  s.insert(s.end(), extra.begin(), extra.end());
  return s;
}
const std::vector<int32_t> kPrompt = {256, '>'};

SamplingParams greedy(int max_tokens) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  return p;
}

struct Streamed {
  std::vector<std::string> pieces;
  std::vector<int32_t> ids;
  PieceCallback callback() {
    return [this](std::string_view piece, int32_t id) {
      pieces.emplace_back(piece);
      ids.push_back(id);
      return true;
    };
  }
  std::string joined() const {
    std::string s;
    for (const auto& p : pieces) s += p;
    return s;
  }
};

TEST(Generation, StreamsTheScriptAndStopsAtTheStopToken) {
  const std::string text = "Hello, world";
  ScriptedModel model(script_for(text, {257, 'x'}));
  SamplingParams p = greedy(100);
  p.stop_ids = {257};
  Streamed s;
  const auto r = generate_text(model, byte_tokenizer(), kPrompt, p, s.callback());
  EXPECT_EQ(r.text, text);
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.tokens.size(), text.size());  // the stop token is not part of the text or the tokens
  EXPECT_EQ(r.completion_tokens, int64_t(text.size()) + 1);
  EXPECT_EQ(r.prompt_tokens, 2);
  EXPECT_EQ(s.joined(), text);
  EXPECT_EQ(s.pieces.size(), text.size());  // one piece per token, ASCII releases at once
}

TEST(Generation, MaxTokensAndContextEndWithLength) {
  ScriptedModel model(script_for("abcdefghijklmnopqrstuvwxyz"), /*context=*/10);
  auto r = generate_text(model, byte_tokenizer(), kPrompt, greedy(5));
  EXPECT_EQ(r.text, "abcde");
  EXPECT_EQ(r.finish_reason, "length");
  r = generate_text(model, byte_tokenizer(), kPrompt, greedy(-1));  // until the context is full
  EXPECT_EQ(r.text, "abcdefgh");                                    // 2 + 8 = 10 positions
  EXPECT_EQ(r.finish_reason, "length");
  r = generate_text(model, byte_tokenizer(), kPrompt, greedy(0));
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_EQ(r.completion_tokens, 0);
}

TEST(Generation, StopStringEndsTheTextAndIsNotEmitted) {
  const std::string text = "Hello, world! STOP here";
  ScriptedModel model(script_for(text));
  SamplingParams p = greedy(100);
  p.stop = {"STOP", "never"};
  Streamed s;
  const auto r = generate_text(model, byte_tokenizer(), kPrompt, p, s.callback());
  EXPECT_EQ(r.text, "Hello, world! ");
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(s.joined(), r.text);
  for (const auto& piece : s.pieces)
    EXPECT_EQ(piece.find('S'), std::string::npos) << "held back, never shown";
}

TEST(Generation, HeldBackStopPrefixIsReleasedWhenItDoesNotComplete) {
  const std::string text = "a STO b ST";
  ScriptedModel model(script_for(text));
  SamplingParams p = greedy(int(text.size()));
  p.stop = {"STOP"};
  Streamed s;
  const auto r = generate_text(model, byte_tokenizer(), kPrompt, p, s.callback());
  EXPECT_EQ(r.text, text);
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_EQ(s.joined(), text);
  // "STO" is only shown with the " " that rules out "STOP"; the final "ST" comes with the last call (-1).
  const std::vector<std::string> expected = {"a", " ", "", "", "", "STO ", "b", " ", "", "", "ST"};
  EXPECT_EQ(s.pieces, expected);
  EXPECT_EQ(s.ids.back(), -1);
}

TEST(Generation, StopStringAcrossTokensAndMultiByteStops) {
  const std::string text = "x→y<|eot_id|>z";
  ScriptedModel model(script_for(text));
  SamplingParams p = greedy(100);
  p.stop = {"<|eot_id|>"};
  EXPECT_EQ(generate_text(model, byte_tokenizer(), kPrompt, p).text, "x→y");
  p.stop = {"→"};
  EXPECT_EQ(generate_text(model, byte_tokenizer(), kPrompt, p).text, "x");
}

TEST(Generation, StreamingNeverSplitsACharacter) {
  const std::string text = "héllo 世界 🙂 ok ∑";
  ScriptedModel model(script_for(text));
  Streamed s;
  const auto r = generate_text(model, byte_tokenizer(), kPrompt, greedy(int(text.size())), s.callback());
  EXPECT_EQ(r.text, text);
  EXPECT_EQ(s.joined(), text);
  for (const auto& piece : s.pieces) EXPECT_EQ(utf8_invalid_at(piece), std::string::npos) << piece;
  // "🙂" is 4 bytes: 3 empty pieces, then the whole character.
  const auto smiley = std::find(s.pieces.begin(), s.pieces.end(), "🙂");
  ASSERT_NE(smiley, s.pieces.end());
  for (int back = 1; back <= 3; ++back) EXPECT_EQ(*(smiley - back), "");
}

TEST(Generation, InvalidBytesBecomeReplacementCharacters) {
  // A lone continuation byte, an unfinished 3-byte sequence cut by ASCII, and an unfinished end.
  const std::string bytes = std::string("a\x80") + "b\xE2\x82" + "c\xF0\x9F";
  ScriptedModel model(script_for(bytes));
  Streamed s;
  const auto r = generate_text(model, byte_tokenizer(), kPrompt, greedy(int(bytes.size())), s.callback());
  EXPECT_EQ(r.text, "a\uFFFDb\uFFFDc\uFFFD");
  for (const auto& piece : s.pieces) EXPECT_EQ(utf8_invalid_at(piece), std::string::npos);
  EXPECT_EQ(s.joined(), r.text);
}

TEST(Generation, Utf8Helpers) {
  EXPECT_EQ(utf8_incomplete_tail(""), 0u);
  EXPECT_EQ(utf8_incomplete_tail("abc"), 0u);
  EXPECT_EQ(utf8_incomplete_tail("a\xE2"), 1u);
  EXPECT_EQ(utf8_incomplete_tail("a\xE2\x82"), 2u);
  EXPECT_EQ(utf8_incomplete_tail("a\xE2\x82\xAC"), 0u);
  EXPECT_EQ(utf8_incomplete_tail("\xF0\x9F\x99"), 3u);
  EXPECT_EQ(utf8_incomplete_tail("a\x80"), 0u);  // invalid, not unfinished
  EXPECT_EQ(sanitize_utf8("ok é"), "ok é");
  EXPECT_EQ(sanitize_utf8("\xFF"), "\uFFFD");
  EXPECT_EQ(sanitize_utf8("\xE2\x82x"), "\uFFFDx");
}

TEST(Generation, CallbackCanCancel) {
  ScriptedModel model(script_for("abcdef"));
  int calls = 0;
  const auto r = generate_text(model, byte_tokenizer(), kPrompt, greedy(6),
                               [&](std::string_view, int32_t) { return ++calls < 2; });
  EXPECT_EQ(r.finish_reason, "cancelled");
  EXPECT_EQ(r.text, "ab");
  EXPECT_EQ(calls, 2);
}

TEST(Generation, ErrorsAreClear) {
  ScriptedModel model(script_for("abc", {-1}), /*context=*/8);
  const auto& tok = byte_tokenizer();
  EXPECT_NE(error_of([&] { generate_text(model, tok, std::vector<int32_t>{}, greedy(3)); }).find("no tokens"),
            std::string::npos);
  const std::vector<int32_t> long_prompt(9, 'a');
  EXPECT_NE(
      error_of([&] { generate_text(model, tok, long_prompt, greedy(3)); }).find("more than the context"),
      std::string::npos);
  SamplingParams bad = greedy(3);
  bad.top_p = 0;
  EXPECT_NE(error_of([&] { generate_text(model, tok, kPrompt, bad); }).find("top_p"), std::string::npos);
  EXPECT_NE(error_of([&] { generate_text(model, tok, kPrompt, greedy(10)); }).find("NaN"), std::string::npos);
}

TEST(Generation, PrefixReuseDecodesOnlyTheNewTokens) {
  const std::string text = "The quick brown fox jumps";
  ScriptedModel model(script_for(text));
  CachedSession cached(model.new_session(0));
  auto r = generate_text(cached, byte_tokenizer(), kPrompt, greedy(4));
  EXPECT_EQ(r.text, "The ");
  EXPECT_EQ(r.reused_prompt_tokens, 0);
  EXPECT_EQ(int64_t(cached.tokens.size()), cached.session->length());
  EXPECT_EQ(cached.tokens.size(), 5u);  // prompt + 3 tokens fed back (the last sampled one is not)

  // A chat's next turn: the earlier text and more.
  std::vector<int32_t> next(script_for("The quick"));
  model.decoded_tokens = 0;
  r = generate_text(cached, byte_tokenizer(), next, greedy(6));
  EXPECT_EQ(r.reused_prompt_tokens, 5);
  EXPECT_EQ(r.text, " brown");
  EXPECT_EQ(model.decoded_tokens, int64_t(next.size()) - 5 + 5);  // the new prompt part, then 5 feedbacks

  // A prompt that diverges early keeps only the common prefix.
  r = generate_text(cached, byte_tokenizer(), std::vector<int32_t>{256, '>', 'X'}, greedy(1));
  EXPECT_EQ(r.reused_prompt_tokens, 2);
  // The same prompt again: everything but its last token is reused (its logits are needed).
  r = generate_text(cached, byte_tokenizer(), std::vector<int32_t>{256, '>', 'X'}, greedy(1));
  EXPECT_EQ(r.reused_prompt_tokens, 2);
}

// ---- the real reference backend ----

struct TinyModel {
  Model weights;
  std::unique_ptr<ReferenceModel> lm;
  TinyModel() {
    weights = make_model(config_preset("tiny"));
    init_random(weights, 1234);
    lm = std::make_unique<ReferenceModel>(weights);
  }
};
const TinyModel& tiny() {
  static const TinyModel m;
  return m;
}

TEST(Generation, GreedyEqualsCpuGreedyGenerate) {
  CpuModel cpu(tiny().weights);
  const auto prompt = test::random_tokens(12, 256, 5);
  const std::vector<int32_t> expected = greedy_generate(cpu, prompt, 24);
  const auto r = generate_text(*tiny().lm, byte_tokenizer(), prompt, greedy(24));
  EXPECT_EQ(r.tokens, expected);
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_EQ(r.text, sanitize_utf8(byte_tokenizer().decode(expected)));
  EXPECT_GT(r.prompt_tokens_per_s, 0);
  EXPECT_GT(r.generation_tokens_per_s, 0);
}

TEST(Generation, SameSeedSameTextOnTheReferenceModel) {
  SamplingParams p;
  p.max_tokens = 30;
  p.temperature = 1.0;
  p.seed = 99;
  const auto prompt = test::random_tokens(6, 256, 8);
  const auto a = generate_text(*tiny().lm, byte_tokenizer(), prompt, p);
  const auto b = generate_text(*tiny().lm, byte_tokenizer(), prompt, p);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.text, b.text);
  p.seed = 100;
  EXPECT_NE(generate_text(*tiny().lm, byte_tokenizer(), prompt, p).tokens, a.tokens);
}

TEST(Generation, RandomModelStreamsValidUtf8) {
  SamplingParams p;
  p.max_tokens = 60;
  p.temperature = 1.5;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0;
  Streamed s;
  const auto r = generate_text(*tiny().lm, byte_tokenizer(), test::random_tokens(4, 256, 3), p, s.callback());
  for (const auto& piece : s.pieces) EXPECT_EQ(utf8_invalid_at(piece), std::string::npos);
  EXPECT_EQ(s.joined(), r.text);
}

TEST(Generation, TruncatedSessionGivesTheLogitsOfAFreshOne) {
  const auto prefix = test::random_tokens(10, 256, 21);
  const auto first = test::random_tokens(7, 256, 22);
  const auto second = test::random_tokens(5, 256, 23);
  auto fresh = tiny().lm->new_session(64);
  fresh->decode(prefix);
  const auto want = fresh->decode(second);
  const std::vector<float> expected(want.begin(), want.end());

  auto reused = tiny().lm->new_session(64);
  reused->decode(prefix);
  reused->decode(first);
  reused->truncate(int64_t(prefix.size()));
  const auto got = reused->decode(second);
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), expected.size() * sizeof(float)), 0);

  // Through generate_text: a cached session that held another continuation generates what a fresh
  // session does on the same prompt (decoded in the same pieces).
  std::vector<int32_t> prompt1 = prefix, prompt2 = prefix;
  prompt1.insert(prompt1.end(), first.begin(), first.end());
  prompt2.insert(prompt2.end(), second.begin(), second.end());
  CachedSession cached(tiny().lm->new_session(64));
  generate_text(cached, byte_tokenizer(), prompt1, greedy(3));
  const auto r_reused = generate_text(cached, byte_tokenizer(), prompt2, greedy(8));
  EXPECT_EQ(r_reused.reused_prompt_tokens, int64_t(prefix.size()));
  CachedSession clean(tiny().lm->new_session(64));
  clean.session->decode(prefix);
  clean.tokens = prefix;
  const auto r_fresh = generate_text(clean, byte_tokenizer(), prompt2, greedy(8));
  EXPECT_EQ(r_reused.tokens, r_fresh.tokens);
}

}  // namespace
}  // namespace tl
