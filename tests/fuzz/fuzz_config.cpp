// libFuzzer: arbitrary bytes as config.json text. parse_hf_config must return a validated config or throw
// tl::Error; the writer's output for a parsed config must parse back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.hpp"
#include "formats/hf_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tl::BitNetConfig c;
  try {
    c = tl::parse_hf_config(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const tl::Error&) {
    return 0;
  }
  try {
    const auto back = tl::parse_hf_config(tl::hf_config_to_json(c), "fuzz (rewritten)");
    if (back.hidden_size != c.hidden_size || back.head_dim != c.head_dim || back.rope_theta != c.rope_theta ||
        back.tie_word_embeddings != c.tie_word_embeddings || back.quant_mode != c.quant_mode)
      std::abort();
  } catch (const tl::Error&) {
    std::abort();  // a config we accepted must survive our own writer
  }
  return 0;
}
