// libFuzzer: arbitrary bytes as a GGUF model file. The model importer must either decode every tensor into a
// Model whose ternary linears hold only code * alpha with a positive alpha, or throw tl::Error; anything else
// (a crash, another exception, a sanitizer report) is a finding. Seeds: tests/fuzz/seeds/fuzz_gguf_model/
// (tiny files written by export_gguf, one per kind).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "core/error.hpp"
#include "core/log.hpp"
#include "formats/import.hpp"
#include "model/quant.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tl::set_log_level(tl::LogLevel::Quiet);
  try {
    const tl::GgufModel g = tl::import_gguf(std::span<const uint8_t>(data, size), "fuzz");
    for (const auto& v : g.model.views) {
      if (v.kind != tl::ParamKind::Linear) continue;
      const float alpha = g.model.fixed_scale.at(v.name);
      if (!(alpha > 0) || !std::isfinite(alpha)) std::abort();
      // the one quantizer must give back codes whose product with alpha is the stored weight
      const tl::TernaryWeight t = tl::quantize_weight(g.model, v);
      const auto w = g.model.tensor(v.name);
      for (size_t i = 0; i < w.size(); ++i)
        if (float(t.codes[i]) * t.scale != w[i]) std::abort();
    }
    if (int64_t(g.tokenizer.vocab_size()) > g.config.vocab_size) std::abort();
  } catch (const tl::Error&) {
  }
  return 0;
}
