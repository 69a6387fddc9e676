// Parsing of numbers given on the command line or in lists ("1e-4,1e-3").
#pragma once
#include <cmath>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

namespace tl {

// The whole of `s` as a finite double, or nullopt ("1e-3" yes; "", "1e-3x", "nan", "inf" no).
inline std::optional<double> parse_double(std::string_view s) {
  const std::string str(s);
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(str, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used == 0 || used != str.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace tl
