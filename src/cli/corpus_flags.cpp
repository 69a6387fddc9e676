// --corpus flags shared by `data prepare` and `tokenizer train`.
#include <algorithm>

#include "cli/cli.hpp"
#include "core/error.hpp"

namespace tl::cli {

bool is_corpus_spec_list(const std::string& corpus) {
  return corpus.find_first_of(":,=") != std::string::npos;
}

std::vector<CorpusSpec> corpus_spec_list(const std::string& corpus, bool split_given, bool input_given,
                                         bool field_given, bool per_line) {
  TL_CHECK(
      !split_given && !input_given,
      "--corpus {} is a list of corpus specs KIND[:SPLIT][=PATH]; name each split and path in it, not with "
      "--split / --input",
      corpus);
  std::vector<CorpusSpec> specs = parse_corpus_specs(corpus);
  const auto has = [&](CorpusKind k) {
    return std::any_of(specs.begin(), specs.end(), [k](const CorpusSpec& s) { return s.kind == k; });
  };
  TL_CHECK(has(CorpusKind::Jsonl) || !field_given, "--field applies to jsonl corpora only");
  TL_CHECK(has(CorpusKind::Text) || !per_line, "--per-line applies to text corpora only");
  return specs;
}

}  // namespace tl::cli
