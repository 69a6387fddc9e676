// Tokenizer unit tests: byte map, UTF-8 checks, the LLaMA-3 pre-tokenizer regex, added tokens, BPE merge
// order, round trips, tokenizer.json output, and malformed tokenizer.json files.
#include "text/tokenizer.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "../common/test_util.hpp"

#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "text/unicode.hpp"

namespace tl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;
using Ids = std::vector<int32_t>;
using Pieces = std::vector<std::string>;

using test::error_of;

// The tokenizer.json of byte_level(n), parsed, for tests that edit it.
json byte_level_doc(int32_t n = 300) {
  return json::parse(Tokenizer::byte_level(n).to_json());
}

Tokenizer load(const json& doc) {
  return Tokenizer::from_json(doc.dump(), "test.json");
}

std::string load_error(const json& doc) {
  return error_of([&] { load(doc); });
}

// A byte-level tokenizer with a few merges on top of the 256 byte tokens (ids = byte values):
// 300 "ab", 301 "bc", 302 "abc", 303 "aa", 304 "aaaa", 305 "Ġt", 306 "Ġth", 307 "Ġthe".
json merges_doc(bool ignore_merges) {
  json doc = byte_level_doc(300);
  auto& vocab = doc["model"]["vocab"];
  const char* extra[] = {"ab", "bc", "abc", "aa", "aaaa", "Ġt", "Ġth", "Ġthe"};
  for (int i = 0; i < 8; ++i) vocab[extra[i]] = 300 + i;
  // "b c" ranks before "a b", so "abc" becomes a + bc unless ignore_merges finds "abc" whole. Both
  // spellings of a merge are used.
  doc["model"]["merges"] = {"b c", json::array({"a", "b"}), "ab c", "a a", "aa aa", "Ġ t", "Ġt h", "Ġth e"};
  doc["model"]["ignore_merges"] = ignore_merges;
  return doc;
}

TEST(TokenizerUnicode, ByteMapMatchesGpt2) {
  EXPECT_EQ(byte_to_codepoint(0x0A), 0x10Au);
  EXPECT_EQ(byte_to_codepoint(0x20), 0x120u);
  EXPECT_EQ(byte_to_codepoint(0x7F), 0x121u);
  EXPECT_EQ(byte_to_codepoint(0xAD), 0x143u);
  EXPECT_EQ(byte_to_codepoint(0x00), 0x100u);
  EXPECT_EQ(byte_to_codepoint('A'), uint32_t('A'));
  EXPECT_EQ(byte_to_codepoint(0xA1), 0xA1u);
  EXPECT_EQ(byte_to_codepoint(0xFF), 0xFFu);
  // A bijection onto 256 code points, inverted by codepoint_to_byte.
  std::vector<bool> seen(0x200);
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = byte_to_codepoint(uint8_t(b));
    ASSERT_LT(cp, seen.size());
    EXPECT_FALSE(seen[cp]) << b;
    seen[cp] = true;
    EXPECT_EQ(codepoint_to_byte(cp), b);
  }
  EXPECT_EQ(codepoint_to_byte(0x20), -1);
  EXPECT_EQ(codepoint_to_byte(0x4E2D), -1);
  EXPECT_EQ(bytes_to_unicode("hello world\n"), "hello\xC4\xA0world\xC4\x8A");  // "helloĠworldĊ"
  EXPECT_EQ(unicode_to_bytes("\xC4\xA0the"), " the");
  EXPECT_EQ(unicode_to_bytes("\xC3\xA9"), "\xE9");            // é is the target of byte 0xE9
  EXPECT_EQ(unicode_to_bytes("\xE4\xB8\xAD"), std::nullopt);  // 中 is no byte's target
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  EXPECT_EQ(unicode_to_bytes(bytes_to_unicode(all)), all);
}

TEST(TokenizerUnicode, Utf8Validation) {
  constexpr size_t ok = std::string_view::npos;
  EXPECT_EQ(utf8_invalid_at(""), ok);
  EXPECT_EQ(utf8_invalid_at("plain ASCII text that is longer than eight bytes"), ok);
  EXPECT_EQ(utf8_invalid_at("\xC3\xA9\xE4\xB8\xAD\xF0\x9F\xA6\x99"), ok);  // é 中 🦙
  EXPECT_EQ(utf8_invalid_at("abcdefghijklmnop\xFF"), 16u);
  EXPECT_EQ(utf8_invalid_at("\xC0\x80"), 0u);                   // overlong NUL
  EXPECT_EQ(utf8_invalid_at("\xE0\x80\xAF"), 0u);               // overlong '/'
  EXPECT_EQ(utf8_invalid_at("ab\xED\xA0\x80"), 2u);             // surrogate U+D800
  EXPECT_EQ(utf8_invalid_at("\xF4\x90\x80\x80"), 0u);           // above U+10FFFF
  EXPECT_EQ(utf8_invalid_at("x\xE4\xB8"), 1u);                  // truncated
  EXPECT_EQ(utf8_invalid_at("\x80"), 0u);                       // lone continuation byte
  EXPECT_EQ(utf8_invalid_at(std::string_view("a\0b", 3)), ok);  // NUL is valid
}

TEST(Tokenizer, Llama3RegexSplits) {
  const Tokenizer t = Tokenizer::byte_level(300);
  // Contractions, case-insensitively.
  EXPECT_THAT(t.pre_tokenize("I'm"), ElementsAre("I", "'m"));
  EXPECT_THAT(t.pre_tokenize("DON'T we'LL they'Ve"), ElementsAre("DON", "'T", " we", "'LL", " they", "'Ve"));
  // Digits in groups of at most three, never joined to letters or a space.
  EXPECT_THAT(t.pre_tokenize("1234567"), ElementsAre("123", "456", "7"));
  EXPECT_THAT(t.pre_tokenize("in 2024 $100"), ElementsAre("in", " ", "202", "4", " $", "100"));
  // \s+(?!\S): a run of spaces leaves its last space to the next word.
  EXPECT_THAT(t.pre_tokenize("Hello   world"), ElementsAre("Hello", "  ", " world"));
  EXPECT_THAT(t.pre_tokenize("end   "), ElementsAre("end", "   "));
  // \s*[\r\n]+ takes spaces before newlines; punctuation runs with one optional leading space.
  EXPECT_THAT(t.pre_tokenize("x   \n  y"), ElementsAre("x", "   \n", " ", " y"));
  EXPECT_THAT(t.pre_tokenize("a\r\n\r\nb"), ElementsAre("a", "\r\n\r\n", "b"));
  EXPECT_THAT(t.pre_tokenize("Hi!!! ok..."), ElementsAre("Hi", "!!!", " ok", "..."));
  EXPECT_THAT(t.pre_tokenize("(x)\n"), ElementsAre("(x", ")\n"));
  // A non-letter before letters joins them; Unicode letters and numbers count as such.
  EXPECT_THAT(t.pre_tokenize("\xC3\xA9t\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xD9\xA3"),  // été 中文 ٣
              ElementsAre("\xC3\xA9t\xC3\xA9", " \xE4\xB8\xAD\xE6\x96\x87", " ", "\xD9\xA3"));
  EXPECT_THAT(t.pre_tokenize(""), ElementsAre());
}

TEST(Tokenizer, Gpt2ByteLevelRegexAndPrefixSpace) {
  json doc = byte_level_doc();
  doc["pre_tokenizer"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  EXPECT_THAT(load(doc).pre_tokenize("Hello world's 12345  x"),
              ElementsAre("Hello", " world", "'s", " 12345", " ", " x"));
  doc["pre_tokenizer"]["add_prefix_space"] = true;
  const Tokenizer t = load(doc);
  EXPECT_THAT(t.pre_tokenize("Hello world"), ElementsAre(" Hello", " world"));
  EXPECT_THAT(t.pre_tokenize(" Hello"), ElementsAre(" Hello"));
  EXPECT_EQ(t.encode("hi"), (Ids{' ', 'h', 'i'}));
}

TEST(Tokenizer, ByteLevelFactory) {
  const Tokenizer t = Tokenizer::byte_level(300);
  EXPECT_EQ(t.vocab_size(), 300u);
  EXPECT_EQ(t.bos_id(), 256);
  EXPECT_EQ(t.eos_id(), 257);
  EXPECT_EQ(t.token(256), "<|begin_of_text|>");
  EXPECT_EQ(t.token(258), "<|reserved_special_token_0|>");
  EXPECT_EQ(t.token(299), "<|reserved_special_token_41|>");
  EXPECT_EQ(t.token(' '), "\xC4\xA0");
  EXPECT_EQ(t.token_bytes(' '), " ");
  EXPECT_EQ(t.find("\xC4\x8A"), '\n');
  EXPECT_EQ(t.find("nope"), std::nullopt);
  EXPECT_TRUE(t.is_special(256));
  EXPECT_FALSE(t.is_special(65));
  EXPECT_FALSE(t.is_special(300));
  EXPECT_TRUE(t.merges().empty());
  EXPECT_EQ(t.encode("hi \n"), (Ids{'h', 'i', ' ', '\n'}));
  EXPECT_EQ(t.encode("hi", true), (Ids{256, 'h', 'i'}));
  EXPECT_EQ(t.encode("", true), (Ids{256}));
  EXPECT_THAT(error_of([] { Tokenizer::byte_level(257); }), HasSubstr("below 258"));
  EXPECT_THAT(error_of([&] { t.token(300); }), HasSubstr("token id 300 is out of range"));
}

TEST(Tokenizer, SpecialTokensInText) {
  const Tokenizer t = Tokenizer::byte_level(300);
  EXPECT_EQ(t.encode("a<|end_of_text|>b"), (Ids{'a', 257, 'b'}));
  EXPECT_EQ(t.encode("<|reserved_special_token_3|><|reserved_special_token_33|>"), (Ids{261, 291}));
  // Not quite a special token: plain text.
  EXPECT_EQ(t.encode("<|end_of_text>").size(), std::string("<|end_of_text>").size());
  EXPECT_EQ(t.decode(Ids{256, 'o', 'k', 257}), "<|begin_of_text|>ok<|end_of_text|>");
  EXPECT_EQ(t.decode(Ids{256, 'o', 'k', 257}, true), "ok");
  EXPECT_THAT(t.pre_tokenize("x <|eot|> y_of"), ElementsAre("x", " <|", "eot", "|>", " y", "_of"));
  EXPECT_THAT(t.pre_tokenize("x <|end_of_text|> y"), ElementsAre("x", " ", "<|end_of_text|>", " y"));
  EXPECT_THAT(error_of([&] { t.decode(Ids{300}); }), HasSubstr("token id 300 is out of range"));
  EXPECT_THAT(error_of([&] { t.decode(Ids{-1}); }), HasSubstr("token id -1 is out of range"));
}

TEST(Tokenizer, AddedTokensLongestFirst) {
  json doc = byte_level_doc(300);
  const auto add = [&](int id, const char* content, bool special) {
    doc["added_tokens"].push_back({{"id", id},
                                   {"content", content},
                                   {"single_word", false},
                                   {"lstrip", false},
                                   {"rstrip", false},
                                   {"normalized", false},
                                   {"special", special}});
  };
  add(300, "ab", false);
  add(301, "abc", true);
  add(302, "<|begin_of_text|>x", true);
  const Tokenizer t = load(doc);
  EXPECT_EQ(t.vocab_size(), 303u);
  EXPECT_EQ(t.encode("xabcd"), (Ids{'x', 301, 'd'}));
  EXPECT_EQ(t.encode("ababc"), (Ids{300, 301}));
  EXPECT_EQ(t.encode("<|begin_of_text|>xy"), (Ids{302, 'y'}));
  EXPECT_EQ(t.encode("<|begin_of_text|>y"), (Ids{256, 'y'}));
  EXPECT_FALSE(t.is_special(300));
  EXPECT_TRUE(t.is_special(301));
  EXPECT_EQ(t.decode(t.encode("ab abc"), true), "ab ");
}

TEST(Tokenizer, BpeMergeOrder) {
  const Tokenizer t = load(merges_doc(false));
  ASSERT_EQ(t.merges().size(), 8u);
  EXPECT_EQ(t.merges()[0], (std::pair<std::string, std::string>{"b", "c"}));
  EXPECT_EQ(t.merges()[1], (std::pair<std::string, std::string>{"a", "b"}));
  // "b c" has the lower rank, so "abc" ends as a + bc, never reaching "ab c".
  EXPECT_EQ(t.encode("abc"), (Ids{'a', 301}));
  EXPECT_EQ(t.encode("ab"), (Ids{300}));
  // Equal ranks merge leftmost first: aaa -> aa a; aaaa -> aa aa -> aaaa.
  EXPECT_EQ(t.encode("aaa"), (Ids{303, 'a'}));
  EXPECT_EQ(t.encode("aaaa"), (Ids{304}));
  EXPECT_EQ(t.encode("aaaaaaa"), (Ids{304, 303, 'a'}));
  EXPECT_EQ(t.encode("the then"), (Ids{'t', 'h', 'e', 307, 'n'}));
  // A long pre-token: 4001 'a's -> 1000 x aaaa + a.
  const Ids long_ids = t.encode(std::string(4001, 'a'));
  ASSERT_EQ(long_ids.size(), 1001u);
  EXPECT_EQ(long_ids.back(), 'a');
  EXPECT_EQ(std::count(long_ids.begin(), long_ids.end(), 304), 1000);
}

TEST(Tokenizer, IgnoreMergesEmitsWholeVocabEntries) {
  const Tokenizer t = load(merges_doc(true));
  EXPECT_EQ(t.encode("abc"), (Ids{302}));                    // in the vocabulary: taken whole
  EXPECT_EQ(t.encode("abcabc"), (Ids{'a', 301, 'a', 301}));  // not: BPE as before
  EXPECT_EQ(t.encode(" the"), (Ids{307}));
}

TEST(Tokenizer, RoundTripsUnicode) {
  const Tokenizer plain = Tokenizer::byte_level(300);
  const Tokenizer merged = load(merges_doc(true));
  const std::vector<std::string> texts = {
      "",
      "Hello, world! It's 12:30 -- aaaa bc abc.",
      "\xF0\x9F\xA6\x99\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 emoji + "
      "ZWJ",  // 🦙👨‍👩‍👧
      "\xE4\xB8\xAD\xE6\x96\x87\xE5\xAD\x97\xE7\xAC\xA6 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E "
      "\xED\x95\x9C\xEA\xB5\xAD",
      "e\xCC\x81 a\xCC\x8A\xCC\x81 "
      "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87",  // combining
      "tabs\tand\r\nnewlines\n\n\n  indented\u00a0nbsp\u2003em\u3000ideographic",
      std::string("nul") + '\0' + "byte and \x7f del",
      "<|begin_of_text|>special<|end_of_text|> and <|not_special|>",
  };
  for (const auto& s : texts) {
    EXPECT_EQ(plain.decode(plain.encode(s)), s);
    EXPECT_EQ(merged.decode(merged.encode(s)), s);
    EXPECT_EQ(plain.decode(plain.encode(s, true)), "<|begin_of_text|>" + s);
  }
}

TEST(Tokenizer, LongRunsOfOneClass) {
  // Megabyte-long pieces: the regex must not run out of (JIT) stack and BPE must stay linear-ish.
  const Tokenizer t = load(merges_doc(false));
  const size_t n = 1 << 20;
  for (const std::string& s :
       {std::string(n, 'a'), std::string(n, ' ') + "x", std::string(n, '7'), std::string(n, '!') + "\n",
        std::string(n / 2, '\n') + std::string(n / 2, ' '), [&] {
          std::string u;
          while (u.size() < n) u += "\xE4\xB8\xAD\xCC\x81";  // letter + combining mark
          return u;
        }()}) {
    const Ids ids = t.encode(s);
    EXPECT_EQ(t.decode(ids), s);
    EXPECT_LE(ids.size(), s.size());
  }
  EXPECT_EQ(t.encode(std::string(n, 'a')).size(), n / 4);  // all "aaaa"
  EXPECT_EQ(t.pre_tokenize(std::string(n, '7')).size(), (n + 2) / 3);
}

TEST(Tokenizer, StackHungryRegex) {
  // Each repetition of an alternation leaves a backtracking point: 200k of them overflow PCRE2's default
  // 32 KiB JIT stack, so the match is retried with a larger one.
  json doc = byte_level_doc();
  doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(?:a|b)+";
  const Tokenizer t = load(doc);
  std::string s;
  for (int i = 0; i < 100000; ++i) s += "ab";
  EXPECT_THAT(t.pre_tokenize(s + " c"), ElementsAre(s, " c"));
}

TEST(Tokenizer, InvalidUtf8IsAnError) {
  const Tokenizer t = Tokenizer::byte_level(300);
  EXPECT_THAT(error_of([&] { t.encode("ab\xFF"); }), HasSubstr("invalid UTF-8 at byte 2"));
  EXPECT_THAT(error_of([&] { t.encode("\xE4\xB8"); }), HasSubstr("invalid UTF-8 at byte 0"));
  EXPECT_THAT(error_of([&] { t.encode("ok \xED\xA0\x80"); }), HasSubstr("invalid UTF-8 at byte 3"));
}

TEST(Tokenizer, ToJsonIsCompleteAndLoadsBack) {
  const Tokenizer t = load(merges_doc(true));
  const json doc = json::parse(t.to_json());
  EXPECT_EQ(doc["version"], "1.0");
  EXPECT_TRUE(doc["truncation"].is_null());
  EXPECT_TRUE(doc["padding"].is_null());
  EXPECT_TRUE(doc["normalizer"].is_null());
  ASSERT_EQ(doc["added_tokens"].size(), 44u);
  for (const char* k : {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"})
    EXPECT_TRUE(doc["added_tokens"][0].contains(k)) << k;
  EXPECT_EQ(doc["added_tokens"][0]["content"], "<|begin_of_text|>");
  EXPECT_EQ(doc["pre_tokenizer"]["type"], "Sequence");
  EXPECT_EQ(doc["pre_tokenizer"]["pretokenizers"][0]["type"], "Split");
  EXPECT_EQ(doc["pre_tokenizer"]["pretokenizers"][1]["type"], "ByteLevel");
  EXPECT_EQ(doc["post_processor"]["type"], "TemplateProcessing");
  EXPECT_EQ(doc["decoder"]["type"], "ByteLevel");
  const json& m = doc["model"];
  EXPECT_EQ(m["type"], "BPE");
  for (const char* k : {"dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"})
    EXPECT_TRUE(m.contains(k) && m[k].is_null()) << k;
  EXPECT_EQ(m["fuse_unk"], false);
  EXPECT_EQ(m["byte_fallback"], false);
  EXPECT_EQ(m["ignore_merges"], true);
  EXPECT_EQ(m["vocab"].size(), 264u);
  EXPECT_EQ(m["vocab"]["abc"], 302);
  EXPECT_EQ(m["merges"][1], "a b");

  const Tokenizer back = Tokenizer::from_json(t.to_json(), "round trip");
  EXPECT_EQ(back.to_json(), t.to_json());
  EXPECT_EQ(back.merges(), t.merges());
  for (const char* s : {"abc abcabc aaaa the", "<|begin_of_text|>x"})
    EXPECT_EQ(back.encode(s, true), t.encode(s, true));

  const Tokenizer bl = Tokenizer::from_json(Tokenizer::byte_level(260).to_json(), "byte_level");
  EXPECT_EQ(bl.vocab_size(), 260u);
  EXPECT_EQ(bl.encode("x", true), (Ids{256, 'x'}));
}

TEST(Tokenizer, ConcurrentEncodeAgrees) {
  const Tokenizer t = load(merges_doc(false));
  const std::string text = "abc aaaa the then \xF0\x9F\xA6\x99 12345 <|end_of_text|> done";
  const Ids want = t.encode(text);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int i = 0; i < 200; ++i) ok[size_t(k)] += t.encode(text) == want;
    });
  for (auto& th : threads) th.join();
  EXPECT_THAT(ok, ElementsAre(200, 200, 200, 200));
}

// ---- malformed tokenizer.json ----

TEST(TokenizerJson, NotJson) {
  EXPECT_THAT(error_of([] { Tokenizer::from_json("{\"model\": ", "broken.json"); }),
              HasSubstr("broken.json: not valid JSON"));
  EXPECT_THAT(
      error_of([] { Tokenizer::from_json(std::string(40, '[') + std::string(40, ']'), "deep.json"); }),
      HasSubstr("deep.json: JSON nested more than 32 levels deep"));
  EXPECT_THAT(error_of([] { Tokenizer::from_json("[1, 2]", "list.json"); }),
              HasSubstr("list.json: expected a JSON object at the top level, found array"));
}

TEST(TokenizerJson, UnsupportedModelType) {
  json doc = byte_level_doc();
  doc["model"]["type"] = "WordPiece";
  EXPECT_THAT(load_error(doc), HasSubstr("test.json: model.type: \"WordPiece\" is not supported"));
  doc = byte_level_doc();
  doc.erase("model");
  EXPECT_THAT(load_error(doc), HasSubstr("model: missing"));
}

TEST(TokenizerJson, MergeWithUnknownToken) {
  json doc = byte_level_doc();
  doc["model"]["merges"] = {"a b"};
  EXPECT_THAT(load_error(doc), HasSubstr("model.merges[0]: the merged token \"ab\" is not in model.vocab"));
  doc["model"]["merges"] = json::array({json::array({"a", "zz"})});
  EXPECT_THAT(load_error(doc), HasSubstr("model.merges[0]: \"zz\" is not in model.vocab"));
  doc["model"]["merges"] = {"abc"};
  EXPECT_THAT(load_error(doc), HasSubstr("model.merges[0]: expected \"left right\""));
  doc["model"]["merges"] = json::array({json::array({"a"})});
  EXPECT_THAT(load_error(doc),
              HasSubstr("model.merges[0]: expected \"left right\" or [\"left\", \"right\"]"));
}

TEST(TokenizerJson, VocabIdsDuplicatedOrOutOfRange) {
  json doc = byte_level_doc();
  doc["model"]["vocab"]["extra"] = 65;  // "A" has 65
  EXPECT_THAT(load_error(doc), HasSubstr("model.vocab: id 65 is used by both"));
  doc = byte_level_doc();
  doc["model"]["vocab"]["extra"] = 5000;
  EXPECT_THAT(load_error(doc), HasSubstr("model.vocab: id 5000 of \"extra\" is out of range"));
  doc["model"]["vocab"]["extra"] = -1;
  EXPECT_THAT(load_error(doc), HasSubstr("model.vocab: id -1 of \"extra\" is out of range"));
  doc["model"]["vocab"]["extra"] = "7";
  EXPECT_THAT(load_error(doc), HasSubstr("model.vocab: id of \"extra\" must be an integer"));
  doc["model"]["vocab"].erase("extra");
  doc["added_tokens"][43]["id"] = 298;  // 298 twice, 299 never
  EXPECT_THAT(load_error(doc), HasSubstr("added_tokens[43]: id 298 is used by both"));
  doc = byte_level_doc();
  doc["added_tokens"][42] = {{"id", 65}, {"content", "A"}, {"special", false}};  // 298 now missing
  EXPECT_THAT(load_error(doc), HasSubstr("no token has id 298 (ids must run 0..299 without gaps)"));
  doc = byte_level_doc();
  doc["added_tokens"][0]["content"] = "A";  // "A" is 65 in the vocabulary
  EXPECT_THAT(load_error(doc), HasSubstr("added_tokens[0]: \"A\" already has id 65, not 256"));
}

TEST(TokenizerJson, MissingVocab) {
  json doc = byte_level_doc();
  doc["model"].erase("vocab");
  EXPECT_THAT(load_error(doc), HasSubstr("test.json: model.vocab: missing"));
  doc["model"]["vocab"] = json::array();
  EXPECT_THAT(load_error(doc), HasSubstr("model.vocab: expected an object of token -> id, found array"));
  doc = byte_level_doc();
  doc["model"]["vocab"].erase("\xC4\x8A");  // the newline byte; 10 becomes a gap first
  doc["model"]["vocab"]["zz"] = 10;
  EXPECT_THAT(load_error(doc), HasSubstr("no token for byte 0x0A"));
}

TEST(TokenizerJson, UnsupportedPipelineParts) {
  json doc = byte_level_doc();
  doc["normalizer"] = {{"type", "NFC"}};
  EXPECT_THAT(load_error(doc), HasSubstr("normalizer: {\"type\":\"NFC\"} is not supported"));
  doc = byte_level_doc();
  doc["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  EXPECT_THAT(load_error(doc),
              HasSubstr("pre_tokenizer.pretokenizers[0].behavior: \"Removed\" is not supported"));
  doc = byte_level_doc();
  doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  EXPECT_THAT(load_error(doc),
              HasSubstr("pre_tokenizer.pretokenizers[0].pattern: cannot compile \"(unclosed\""));
  doc = byte_level_doc();
  doc["pre_tokenizer"] = doc["pre_tokenizer"]["pretokenizers"][0];
  EXPECT_THAT(load_error(doc), HasSubstr("pre_tokenizer: no ByteLevel step"));
  doc = byte_level_doc();
  doc["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_THAT(load_error(doc), HasSubstr("pre_tokenizer.type: \"Whitespace\" is not supported"));
  doc = byte_level_doc();
  doc["model"]["byte_fallback"] = true;
  EXPECT_THAT(load_error(doc), HasSubstr("model.byte_fallback: true is not supported"));
  doc = byte_level_doc();
  doc["model"]["dropout"] = 0.1;
  EXPECT_THAT(load_error(doc), HasSubstr("model.dropout: 0.1 is not supported"));
  doc = byte_level_doc();
  doc["post_processor"] = {{"type", "BertProcessing"}};
  EXPECT_THAT(load_error(doc), HasSubstr("post_processor.type: \"BertProcessing\" is not supported"));
  doc = byte_level_doc();
  doc["decoder"] = {{"type", "WordPiece"}};
  EXPECT_THAT(load_error(doc), HasSubstr("decoder.type: \"WordPiece\" is not supported"));
  doc = byte_level_doc();
  doc["added_tokens"][1]["lstrip"] = true;
  EXPECT_THAT(load_error(doc), HasSubstr("added_tokens[1].lstrip: true is not supported"));
}

TEST(TokenizerJson, PostProcessorVariants) {
  json doc = byte_level_doc();
  doc["post_processor"] = nullptr;
  EXPECT_EQ(load(doc).encode("x", true), (Ids{'x'}));
  doc = byte_level_doc();
  // Meta's later files wrap the template in a Sequence after a ByteLevel processor; add an EOS suffix.
  json tp = doc["post_processor"];
  tp["single"].push_back({{"SpecialToken", {{"id", "<|end_of_text|>"}, {"type_id", 0}}}});
  tp["special_tokens"]["<|end_of_text|>"] = {
      {"id", "<|end_of_text|>"}, {"ids", {257}}, {"tokens", {"<|end_of_text|>"}}};
  doc["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       {{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}},
        tp}}};
  const Tokenizer t = load(doc);
  EXPECT_EQ(t.encode("x", true), (Ids{256, 'x', 257}));
  EXPECT_EQ(t.bos_id(), 256);
  tp["special_tokens"].erase("<|end_of_text|>");
  doc["post_processor"]["processors"][1] = tp;
  EXPECT_THAT(load_error(doc),
              HasSubstr("\"<|end_of_text|>\" is not in post_processor.processors[1].special_tokens"));
}

TEST(TokenizerJson, FromFileNamesThePath) {
  EXPECT_THAT(error_of([] { Tokenizer::from_file("/nonexistent/tokenizer.json"); }),
              HasSubstr("/nonexistent/tokenizer.json"));
}

}  // namespace
}  // namespace tl
