// Parity with the reference LLaMA-3 tokenizer (npm llama3-tokenizer-js): the tokenizer.json rebuilt by
// scripts/build-llama3-tokenizer.mjs must give the same ids as the JS encoder on every Brown document
// (and on a few non-ASCII strings), and decode must give the text back. When the npm package "tokenizers"
// (Hugging Face tokenizers) is installed, it must load what to_json() writes and agree with us too.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/file.hpp"
#include "text/corpus.hpp"
#include "text/tokenizer.hpp"

namespace tl {
namespace {

using Ids = std::vector<int32_t>;

// Single-quoted for the shell (temp paths hold no quote characters).
std::string quote(const fs::path& p) {
  std::string q = "'";
  q += p.string();
  q += '\'';
  return q;
}

bool have_node() {
  return std::system("node --version > /dev/null 2>&1") == 0;
}

// Exit status of a shell command (-1 if it did not exit normally).
int run(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Non-ASCII and otherwise tricky strings (Brown is plain ASCII).
const std::vector<std::string>& unicode_texts() {
  static const std::vector<std::string> texts = {
      "The llama (/\xCB\x88l\xC9\x91\xCB\x90m\xC9\x99/; \xF0\x9F\xA6\x99Spanish pronunciation: "
      "[\xCB\x88\xCA\x8E"
      "ama]) is a domesticated South American camelid.",
      "\xE4\xB8\xAD\xE6\x96\x87\xE5\xAD\x97\xE7\xAC\xA6\xE4\xB8\xB2\xE3\x80\x82\xE6\x97\xA5\xE6\x9C\xAC\xE8"
      "\xAA\x9E"
      "\xE3\x81\xAE\xE6\x96\x87\xE7\xAB\xA0\xE3\x80\x82 \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 "
      "\xD0\xA0\xD1\x83\xD1\x81"
      "\xD1\x81\xD0\xBA\xD0\xB8\xD0\xB9 \xCE\x95\xCE\xBB\xCE\xBB\xCE\xB7\xCE\xBD\xCE\xB9\xCE\xBA\xCE\xAC",
      "e\xCC\x81 a\xCC\x8A\xCC\x81 \xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87 "
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 "
      "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7",
      "I'M you'LL they'Re WE'VE 1234567 3.14159 $1,000,000 x\t\ty  \n\n  z   ",
      "ax\n####\nboo  \r\n\r\n\tend\n",
      // Special-token names differ between 3.0 (ours) and the package's 3.1 set, except these.
      "<|begin_of_text|>raw <|eot_id|> specials and <|reserved_special_token_1|> inside",
  };
  return texts;
}

class Llama3Parity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_node()) return;
    dir_ = new fs::path(fs::temp_directory_path() / ("tl_test_tokenizer_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    const fs::path script = fs::path(TERNLAB_SOURCE_DIR) / "scripts" / "build-llama3-tokenizer.mjs";
    const std::string cmd = "node " + quote(script) + " " + quote(*dir_ / "tokenizer.json");
    if (std::system(cmd.c_str()) == 0) tok_ = new Tokenizer(Tokenizer::from_file(*dir_ / "tokenizer.json"));
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
    if (dir_) fs::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!have_node()) GTEST_SKIP() << "node is not installed";
    ASSERT_NE(tok_, nullptr) << "scripts/build-llama3-tokenizer.mjs failed";
  }
  // Encodes each text with llama3-tokenizer-js (no BOS/EOS), or with Hugging Face tokenizers loading
  // `hf_json` (with special tokens); nullopt when the latter is not installed.
  static std::optional<std::vector<Ids>> js_encode(const std::vector<std::string>& texts,
                                                   const std::string& name, const fs::path& hf_json = {}) {
    const fs::path in = *dir_ / (name + ".jsonl"), out = *dir_ / (name + ".bin");
    {
      std::ofstream f(in, std::ios::binary);
      for (const auto& t : texts) f << nlohmann::json{{"text", t}}.dump() << '\n';
    }
    const fs::path script = fs::path(TERNLAB_SOURCE_DIR) / "tests" / "text" / "llama3_encode.mjs";
    std::string cmd = "node " + quote(script) + " " + quote(in) + " " + quote(out);
    if (!hf_json.empty()) cmd += " --hf " + quote(hf_json);
    const int rc = run(cmd);
    if (rc == 77 && !hf_json.empty()) return std::nullopt;
    EXPECT_EQ(rc, 0) << cmd;
    const std::string bin = rc == 0 ? read_file(out) : std::string();
    std::vector<Ids> all;
    size_t pos = 0;
    const auto u32 = [&] {
      uint32_t v = 0;
      if (pos + 4 <= bin.size()) std::memcpy(&v, bin.data() + pos, 4);
      pos += 4;
      return v;
    };
    while (pos < bin.size()) {
      Ids ids(u32());
      for (auto& id : ids) id = int32_t(u32());
      all.push_back(std::move(ids));
    }
    EXPECT_EQ(pos, bin.size()) << "truncated " << out;
    EXPECT_EQ(all.size(), texts.size()) << out;
    return all;
  }
  // The first difference, with the tokens around it, for a readable failure.
  static std::string diff(const Ids& got, const Ids& want, const Tokenizer& tok = *tok_) {
    size_t i = 0;
    while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
    const auto show = [&](const Ids& ids) {
      std::string s;
      for (size_t k = i >= 3 ? i - 3 : 0; k < std::min(ids.size(), i + 4); ++k)
        s += std::to_string(ids[k]) + ":" + nlohmann::json(std::string(tok.token_bytes(ids[k]))).dump() + " ";
      return s;
    };
    return "sizes " + std::to_string(got.size()) + " vs " + std::to_string(want.size()) +
           ", first difference at " + std::to_string(i) + "\n  C++: " + show(got) + "\n  JS:  " + show(want);
  }

  static inline fs::path* dir_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
};

TEST_F(Llama3Parity, KnownIds) {
  const Tokenizer& t = *tok_;
  EXPECT_EQ(t.vocab_size(), 128256u);
  EXPECT_EQ(t.merges().size(), 280147u);
  EXPECT_EQ(t.bos_id(), 128000);
  EXPECT_EQ(t.eos_id(), 128001);
  EXPECT_EQ(t.token(128009), "<|eot_id|>");
  EXPECT_EQ(t.token(128036), "<|reserved_special_token_31|>");  // the 3.0 names (BitNet #264)
  EXPECT_EQ(t.encode("This is a test sentence."), (Ids{2028, 374, 264, 1296, 11914, 13}));
  EXPECT_EQ(t.encode("This is a test sentence.", true), (Ids{128000, 2028, 374, 264, 1296, 11914, 13}));
  EXPECT_EQ(t.encode("grabbed"), (Ids{59312, 2788}));
  EXPECT_EQ(t.encode("           grabbed"), (Ids{1881, 30418}));
  EXPECT_EQ(t.encode(" \n"), (Ids{720}));
  EXPECT_EQ(t.encode("\xF0\x9F\xA6\x99"), (Ids{9468, 99, 247}));  // 🦙 is not a token: three byte tokens
  EXPECT_EQ(t.encode("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"),
            (Ids{128006, 882, 128007, 271, 6151, 128009}));
  EXPECT_EQ(t.decode(Ids{128000, 9906, 1917, 0}), "<|begin_of_text|>Hello world!");
  EXPECT_EQ(t.decode(Ids{128000, 9906, 1917, 0}, true), "Hello world!");
}

TEST_F(Llama3Parity, UnicodeStrings) {
  const auto& texts = unicode_texts();
  const std::vector<Ids> want = js_encode(texts, "unicode").value();
  ASSERT_EQ(want.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const Ids got = tok_->encode(texts[i]);
    EXPECT_EQ(got, want[i]) << "text " << i << ": " << diff(got, want[i]);
    EXPECT_EQ(tok_->decode(got), texts[i]);
  }
}

TEST_F(Llama3Parity, BrownCorpus) {
  const std::vector<Document> docs = load_brown(find_brown_dir(), Split::All);
  ASSERT_EQ(docs.size(), 500u);
  std::vector<std::string> texts;
  size_t bytes = 0;
  for (const auto& d : docs) {
    texts.push_back(d.text);
    bytes += d.text.size();
  }
  const std::vector<Ids> want = js_encode(texts, "brown").value();
  ASSERT_EQ(want.size(), docs.size());

  std::vector<Ids> got(docs.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < docs.size(); ++i) got[i] = tok_->encode(texts[i]);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  size_t total = 0, mismatched = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    total += got[i].size();
    if (got[i] != want[i] && ++mismatched <= 5) ADD_FAILURE() << docs[i].id << ": " << diff(got[i], want[i]);
    if (tok_->decode(got[i]) != texts[i]) ADD_FAILURE() << docs[i].id << ": decode(encode(text)) != text";
  }
  EXPECT_EQ(mismatched, 0u) << "documents whose ids differ from llama3-tokenizer-js";
  std::printf(
      "Brown parity: %zu documents, %zu bytes, %zu tokens; C++ encode %.3f s, %.0f tokens/s, %.1f MB/s\n",
      docs.size(), bytes, total, secs, double(total) / secs, double(bytes) / secs / 1e6);
}

// Hugging Face tokenizers itself (npm "tokenizers", when installed) loads what to_json() writes, for
// LLaMA 3 and for byte_level(), and encodes as we do, BOS included.
TEST_F(Llama3Parity, HfTokenizersAgree) {
  std::vector<std::string> texts = unicode_texts();
  for (const auto& d : load_brown(find_brown_dir(), Split::All)) texts.push_back(d.text);
  const Tokenizer small = Tokenizer::byte_level(300);
  const std::pair<const Tokenizer*, size_t> cases[] = {{tok_, texts.size()},
                                                       {&small, unicode_texts().size() + 20}};
  for (const auto& [tok, n] : cases) {
    const std::vector<std::string> some(texts.begin(), texts.begin() + ptrdiff_t(n));
    const fs::path json = *dir_ / (tok == tok_ ? "llama3_to_json.json" : "byte_level_to_json.json");
    write_file_atomic(json, tok->to_json());
    const auto want = js_encode(some, "hf", json);
    if (!want) GTEST_SKIP() << "npm package 'tokenizers' is not installed";
    ASSERT_EQ(want->size(), some.size());
    size_t mismatched = 0;
    for (size_t i = 0; i < some.size(); ++i) {
      const Ids got = tok->encode(some[i], true);
      if (got != (*want)[i] && ++mismatched <= 5)
        ADD_FAILURE() << json << " text " << i << ": " << diff(got, (*want)[i], *tok);
    }
    EXPECT_EQ(mismatched, 0u) << json;
  }
}

}  // namespace
}  // namespace tl
