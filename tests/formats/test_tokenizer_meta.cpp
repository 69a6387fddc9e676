// The GGUF tokenizer block for the real LLaMA-3 tokenizer (data/llama3/tokenizer.json, built by
// scripts/install-deps.sh): written as llama.cpp expects (reference §3.5) and rebuilt into a tokenizer that
// encodes exactly like the original.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../common/test_util.hpp"
#include "deploy_test_util.hpp"
#include "formats/gguf_tokenizer.hpp"

namespace tl {
namespace {

using test::error_of;
using ::testing::HasSubstr;

TEST(TokenizerMeta, Llama3RoundTrip) {
  const fs::path path = fs::path(TERNLAB_SOURCE_DIR) / "data" / "llama3" / "tokenizer.json";
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent (scripts/install-deps.sh builds it)";
  const Tokenizer tok = Tokenizer::from_file(path);
  BitNetConfig cfg;  // 2B-4T: vocab 128256, BOS 128000, EOS 128001
  const GgufTokenizerMetadata meta = gguf_tokenizer_metadata(tok, cfg, "tmpl");
  EXPECT_EQ(meta.pre, "llama-bpe");
  EXPECT_EQ(meta.padding, 0u);
  GgufMetadata kv = meta.kv;
  kv.emplace(kv.begin(), "general.architecture", "bitnet");
  const auto img = gguf_bytes(kv, {});
  const GgufFile f(img, "llama3.gguf");
  const auto& types = f.get_array("tokenizer.ggml.token_type", GgufType::I32).items;
  ASSERT_EQ(types.size(), 128256u);
  EXPECT_EQ(*types[0].get_if<int32_t>(), kTokenTypeNormal);
  EXPECT_EQ(*types[127999].get_if<int32_t>(), kTokenTypeNormal);
  EXPECT_EQ(*types[128000].get_if<int32_t>(), kTokenTypeControl);
  EXPECT_EQ(*types[128255].get_if<int32_t>(), kTokenTypeControl);
  EXPECT_EQ(f.get_array("tokenizer.ggml.merges", GgufType::String).items.size(), tok.merges().size());
  EXPECT_EQ(f.get<uint32_t>("tokenizer.ggml.bos_token_id"), 128000u);
  EXPECT_TRUE(f.get<bool>("tokenizer.ggml.add_bos_token"));

  const GgufTokenizer back = tokenizer_from_gguf(f, "bitnet", "");
  EXPECT_EQ(back.tokenizer.vocab_size(), tok.vocab_size());
  EXPECT_EQ(back.tokenizer.merges(), tok.merges());
  EXPECT_EQ(back.chat_template, "tmpl");
  for (const std::string s : {"Hello, world! It's 2024-05-01 and 12345678 people said 'we'll see'.",
                              "  indented\n\n\tcode(x) { return x*2; }  ", "ünïcödé 日本語 ✓ 🙂",
                              "<|begin_of_text|>User: hi<|eot_id|>Assistant: "})
    EXPECT_EQ(back.tokenizer.encode(s, true), tok.encode(s, true)) << s;
}

TEST(TokenizerMeta, OtherPreTokenizersRefused) {
  // GPT-2 style: ByteLevel with its own regex and a prefix space, which llama.cpp's llama-bpe does not do
  nlohmann::json doc = nlohmann::json::parse(Tokenizer::byte_level(258).to_json());
  doc["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  const Tokenizer gpt2 = Tokenizer::from_json(doc.dump());
  BitNetConfig cfg = test::small_config();
  EXPECT_THAT(error_of([&] { gguf_tokenizer_metadata(gpt2, cfg, ""); }), HasSubstr("is not LLaMA-3's"));
  cfg.vocab_size = 200;
  EXPECT_THAT(error_of([&] { gguf_tokenizer_metadata(Tokenizer::byte_level(258), cfg, ""); }),
              HasSubstr("258 tokens, more than the model's vocab_size 200"));
}

}  // namespace
}  // namespace tl
