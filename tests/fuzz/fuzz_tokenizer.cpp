// libFuzzer target for the tokenizer: the input is read as a tokenizer.json (anything but tl::Error is a
// bug; a file that loads must survive encode/decode and a to_json round trip), and as text for a fixed
// byte-level tokenizer with merges (only invalid UTF-8 may throw, and decode(encode(x)) == x).
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.hpp"
#include "text/tokenizer.hpp"
#include "text/unicode.hpp"

namespace {

#define FUZZ_REQUIRE(cond)         \
  do {                             \
    if (!(cond)) __builtin_trap(); \
  } while (0)

tl::Tokenizer make_fixed() {
  nlohmann::json doc = nlohmann::json::parse(tl::Tokenizer::byte_level(260).to_json());
  auto& vocab = doc["model"]["vocab"];
  const char* extra[] = {"aa",        "aaa",        "bc",          "ab", "abc",
                         "\xC4\xA0t", "\xC4\xA0th", "\xC4\xA0the", "er", "\xC3\xA4\xC2\xB8"};
  for (int i = 0; i < 10; ++i) vocab[extra[i]] = 260 + i;
  doc["model"]["merges"] = {"a a",        "aa a",        "b c",          "a b", "ab c",
                            "\xC4\xA0 t", "\xC4\xA0t h", "\xC4\xA0th e", "e r", "\xC3\xA4 \xC2\xB8"};
  doc["model"]["ignore_merges"] = false;
  return tl::Tokenizer::from_json(doc.dump(), "fixed");
}

void check_text(const tl::Tokenizer& t, std::string_view text) {
  try {
    const auto ids = t.encode(text, true);
    FUZZ_REQUIRE(!ids.empty() && ids[0] == t.bos_id());
    FUZZ_REQUIRE(t.decode(ids) == "<|begin_of_text|>" + std::string(text));
  } catch (const tl::Error&) {
    FUZZ_REQUIRE(tl::utf8_invalid_at(text) != std::string_view::npos);
  }
}

// A loaded file may still fail to encode, but only for invalid UTF-8 or a regex that PCRE2 gives up on.
bool expected_encode_error(const tl::Error& e, std::string_view text) {
  return tl::utf8_invalid_at(text) != std::string_view::npos ||
         std::string_view(e.what()).starts_with("pre-tokenizer regex");
}

void check_json(std::string_view json) {
  std::optional<tl::Tokenizer> t;
  try {
    t = tl::Tokenizer::from_json(json, "fuzz");
  } catch (const tl::Error&) {
    return;
  }
  try {
    (void)t->decode(t->encode(json));
    (void)t->pre_tokenize(json);
  } catch (const tl::Error& e) {
    FUZZ_REQUIRE(expected_encode_error(e, json));
  }
  // What we write must load back and encode the same.
  const tl::Tokenizer back = tl::Tokenizer::from_json(t->to_json(), "fuzz round trip");
  FUZZ_REQUIRE(back.vocab_size() == t->vocab_size());
  FUZZ_REQUIRE(back.to_json() == t->to_json());
  const std::string_view sample = "Hello world, it's 2024!\n\n  <|begin_of_text|> \xC3\xA4\xC2\xB8";
  std::vector<int32_t> want;
  try {
    want = t->encode(sample, true);
  } catch (const tl::Error& e) {
    FUZZ_REQUIRE(expected_encode_error(e, sample));
    return;
  }
  FUZZ_REQUIRE(back.encode(sample, true) == want);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const tl::Tokenizer fixed = make_fixed();
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  check_json(in);
  check_text(fixed, in);
  return 0;
}
