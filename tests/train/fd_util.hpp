// Finite-difference helpers for the training engine's gradient checks (double precision).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.hpp"

namespace tl::test {

inline std::vector<double> randn(size_t n, Rng& rng, double sd = 1.0) {
  std::vector<double> v(n);
  for (auto& x : v) x = rng.normal() * sd;
  return v;
}

// Central difference d f / d x[i] with step h (x[i] is restored).
template <class F>
double central_diff(double* x, size_t i, F&& f, double h = 1e-5) {
  const double x0 = x[i];
  x[i] = x0 + h;
  const double fp = f();
  x[i] = x0 - h;
  const double fm = f();
  x[i] = x0;
  return (fp - fm) / (2 * h);
}

// Compares analytic gradients with numerical ones entry by entry: |a - n| <= rel * max(|a|, |n|) + abs_floor.
// abs_floor covers entries whose true value is 0 up to rounding. Returns the largest relative error seen.
struct GradCheck {
  double rel = 1e-6, abs_floor = 1e-10;
  double max_rel = 0;
  int64_t checked = 0;
  std::string worst;
  void check(double analytic, double numeric, const std::string& what) {
    const double err = std::fabs(analytic - numeric);
    const double scale = std::max(std::fabs(analytic), std::fabs(numeric));
    ++checked;
    if (scale > 1e-8 && err / scale > max_rel) {
      max_rel = err / scale;
      worst = what + " a=" + std::to_string(analytic) + " n=" + std::to_string(numeric);
    }
    EXPECT_LE(err, rel * scale + abs_floor) << what << ": analytic " << analytic << " numeric " << numeric;
  }
};

// FD check of every entry of x (n values) against grad: f() is the scalar loss.
template <class F>
void check_all(double* x, const double* grad, size_t n, F&& f, GradCheck& gc, const std::string& what) {
  for (size_t i = 0; i < n; ++i)
    gc.check(grad[i], central_diff(x, i, f), what + "[" + std::to_string(i) + "]");
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace tl::test
