// libFuzzer: arbitrary bytes as a whole GGUF file image. The parser must either return a header whose every
// tensor lies inside the buffer, aligned and sized by its ggml type, or throw tl::Error; anything else (a
// crash, another exception, a sanitizer report) is a finding. Seeds: tests/fuzz/seeds/fuzz_gguf/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "core/error.hpp"
#include "formats/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const tl::GgufFile f(std::span<const uint8_t>(data, size), "fuzz");
    const auto& h = f.header();
    if (h.data_start % h.alignment != 0) std::abort();
    for (const auto& t : h.tensors) {
      // Invariants the reader relies on.
      if (t.offset % h.alignment != 0) std::abort();
      if (t.nbytes != tl::ggml_nbytes(t.type, t.dims, "fuzz")) std::abort();
      if (h.data_start + t.offset + t.nbytes > size) std::abort();
      if (f.bytes(t).size() != t.nbytes) std::abort();
    }
    for (const auto& [k, v] : h.metadata)
      if (f.find(k) != &v) std::abort();
  } catch (const tl::Error&) {
  }
  return 0;
}
