// One table per enum of the values a flag or a file may name: name_of and parse_enum are derived from it,
// so the name printed and the name parsed cannot disagree, and a refusal lists every choice.
#pragma once
#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "core/error.hpp"

namespace tl {

template <class E>
struct EnumName {
  E value;
  std::string_view name;
};

template <class E, size_t N>
constexpr std::string_view name_of(const std::array<EnumName<E>, N>& table, E value) {
  for (const auto& e : table)
    if (e.value == value) return e.name;
  return "?";
}

// "a, b or c"
template <class E, size_t N>
std::string enum_choices(const std::array<EnumName<E>, N>& table) {
  std::string s;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) s += i + 1 == N ? " or " : ", ";
    s += table[i].name;
  }
  return s;
}

// The value named `name`; else tl::Error "<prefix>unknown <what> '<name>': expected a, b or c".
template <class E, size_t N>
E parse_enum(const std::array<EnumName<E>, N>& table, std::string_view name, std::string_view what,
             std::string_view prefix = "") {
  for (const auto& e : table)
    if (e.name == name) return e.value;
  fail("{}unknown {} '{}': expected {}", prefix, what, name, enum_choices(table));
}

}  // namespace tl
