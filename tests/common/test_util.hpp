// Small helpers shared by the test suites.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "core/error.hpp"

namespace tl::test {

// Runs f, expects a tl::Error, returns its message (and records a failure if none was thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected tl::Error";
  return {};
}

}  // namespace tl::test
