// Parsing of numbers given on the command line or in lists ("1e-4,1e-3").
#pragma once
#include <cmath>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.hpp"

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

// The comma-separated items of a list flag ("10,20, 30"), each trimmed of blanks; an empty string has no
// items, an empty item ("10,,20") is kept as "" for the caller to refuse.
inline std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t i = 0;
  while (true) {
    const size_t j = s.find(',', i);
    std::string item(s.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i));
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    out.push_back(std::move(item));
    if (j == std::string_view::npos) return out;
    i = j + 1;
  }
}

// The items of a list flag as finite numbers. Errors: "<what>: 'x' is not a number" (an empty item too).
inline std::vector<double> parse_number_list(std::string_view s, std::string_view what) {
  std::vector<double> out;
  for (const auto& item : split_list(s)) {
    const auto v = parse_double(item);
    TL_CHECK(v.has_value(), "{}: '{}' is not a number", what, item);
    out.push_back(*v);
  }
  return out;
}

}  // namespace tl
