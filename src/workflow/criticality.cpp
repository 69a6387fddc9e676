#include "workflow/criticality.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "workflow/backends.hpp"

namespace tl {

std::vector<std::vector<int32_t>> analysis_token_texts(const Tokenizer& tok, const std::string& corpus,
                                                       const std::filesystem::path& input,
                                                       const std::string& split, int texts, int chars,
                                                       int64_t max_tokens) {
  TL_CHECK(max_tokens >= 1, "criticality: at least 1 token per text, found {}", max_tokens);
  const auto rows = select_analysis_texts(analysis_rows(corpus, input, split), texts, chars);
  TL_CHECK(!rows.empty(), "criticality: no row of the corpus has more than 100 characters");
  std::vector<std::vector<int32_t>> ids;
  for (const auto& t : rows) {
    auto v = tok.encode(t, true);  // the study: default special tokens (BOS), truncation to max_length
    if (int64_t(v.size()) > max_tokens) v.resize(size_t(max_tokens));
    ids.push_back(std::move(v));
  }
  return ids;
}

CriticalityReport run_criticality_on(Model& model, const std::vector<std::vector<int32_t>>& texts,
                                     const CriticalityOptions& opt, const std::vector<std::string>& controls,
                                     uint64_t control_seed, Device device) {
  require_device(device);
  size_t longest = 0;
  for (const auto& v : texts) longest = std::max(longest, v.size());
  const BlockRunnerFactory runners = make_block_runners(device, int64_t(longest));  // empty: the CPU's
  return run_criticality_with_controls(model, texts, opt, controls, control_seed, runners);
}

}  // namespace tl
