// libFuzzer: arbitrary bytes as a whole safetensors file image. The parser must either return a header whose
// every tensor lies inside the buffer, or throw tl::Error; anything else (a crash, another exception, a
// sanitizer report) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "core/error.hpp"
#include "formats/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto h = tl::parse_safetensors(std::span<const uint8_t>(data, size), "fuzz");
    for (const auto& t : h.tensors) {
      // Invariants the reader relies on.
      if (t.end < t.begin || h.data_start + t.end > size) std::abort();
      if (t.nbytes() != t.numel() * tl::dtype_size(t.dtype)) std::abort();
    }
  } catch (const tl::Error&) {
  }
  return 0;
}
