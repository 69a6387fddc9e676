#include "formats/gguf_values.hpp"

#include <cmath>
#include <limits>

#include "core/error.hpp"

namespace tl {

std::optional<int64_t> gguf_int(const GgufFile& f, std::string_view key) {
  const GgufValue* v = f.find(key);
  if (!v) return std::nullopt;
  return std::visit(
      [&](const auto& x) -> int64_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if constexpr (std::is_same_v<T, uint64_t>)
            TL_CHECK(x <= uint64_t(std::numeric_limits<int64_t>::max()),
                     "{}: metadata key '{}': {} is out of range", f.what(), key, x);
          return int64_t(x);
        } else {
          fail("{}: metadata key '{}': expected an integer, found {}", f.what(), key,
               gguf_type_name(v->type()));
        }
      },
      v->variant());
}

std::optional<double> gguf_float(const GgufFile& f, std::string_view key) {
  const GgufValue* v = f.find(key);
  if (!v) return std::nullopt;
  double d = 0;
  if (const auto* p = v->get_if<float>())
    d = *p;
  else if (const auto* q = v->get_if<double>())
    d = *q;
  else
    fail("{}: metadata key '{}': expected f32 or f64, found {}", f.what(), key, gguf_type_name(v->type()));
  TL_CHECK(std::isfinite(d), "{}: metadata key '{}': {} is not finite", f.what(), key, d);
  return d;
}

std::optional<std::string> gguf_string(const GgufFile& f, std::string_view key) {
  if (!f.find(key)) return std::nullopt;
  return f.get<std::string>(key);
}

}  // namespace tl
