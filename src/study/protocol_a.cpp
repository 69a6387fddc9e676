#include "study/protocol_a.hpp"

#include "core/error.hpp"

namespace tl::study {

const std::vector<std::string>& protocol_a_sentences() {
  static const std::vector<std::string> s = {
      "The capital of France is Paris, which is known for the Eiffel Tower.",
      "Water boils at 100 degrees Celsius at standard atmospheric pressure.",
      "The largest planet in the solar system is Jupiter, a gas giant.",
      "Python is a programming language that is widely used for data science.",
      "In 1969, humans first landed on the Moon during the Apollo 11 mission.",
      "Machine learning is a subset of artificial intelligence that focuses on learning from data.",
      "The speed of light in vacuum is approximately 299,792,458 meters per second.",
      "DNA contains the genetic instructions for the development of all living organisms.",
  };
  return s;
}

const std::vector<std::string>& study_test_prompts() {
  static const std::vector<std::string> p = {
      "The capital of France is", "Water boils at", "The largest planet in the solar system is",
      "Python is a programming language that", "In 1969, humans first"};
  return p;
}

std::vector<std::vector<int32_t>> protocol_a_tokens(const Tokenizer& tok, int64_t max_length) {
  TL_CHECK(max_length >= 2, "protocol A: max_length must be >= 2, found {}", max_length);
  std::vector<std::vector<int32_t>> out;
  for (const auto& s : protocol_a_sentences()) {
    auto ids = tok.encode(s, true);
    if (int64_t(ids.size()) > max_length) ids.resize(size_t(max_length));
    TL_CHECK(ids.size() >= 2, "protocol A: \"{}\" encodes to {} token(s); a sentence needs 2 to score", s,
             ids.size());
    out.push_back(std::move(ids));
  }
  return out;
}

}  // namespace tl::study
