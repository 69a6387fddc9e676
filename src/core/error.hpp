// Errors: one exception type with a message that names the file, key or tensor, what was expected and
// what was found. The CLI catches it, prints it and exits non-zero.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace tl {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace tl

// Checks a condition that input data must satisfy; on failure throws tl::Error with the formatted message.
#define TL_CHECK(cond, ...)               \
  do {                                    \
    if (!(cond)) ::tl::fail(__VA_ARGS__); \
  } while (0)
