#include "cpu/team.hpp"

#include <immintrin.h>

#include <algorithm>
#include <chrono>

namespace tl {

void TeamBarrier::arrive_and_wait(int threads) {
  if (threads <= 1) return;
  const uint32_t gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == threads) {  // the last one opens it
    arrived_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_seq_cst);
    // A sleeper counted itself before its last look at the generation, so either it sees the new one or
    // it is counted here (both orders are seq_cst): no lost wake-up, and no futex call when none sleeps.
    if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
    return;
  }
  using clock = std::chrono::steady_clock;
  const double spin = spin_us_.load(std::memory_order_relaxed);
  const auto deadline = clock::now() + std::chrono::duration<double, std::micro>(spin);
  for (int i = 1;; ++i) {
    if (generation_.load(std::memory_order_acquire) != gen) {
      if (spin < max_spin_us_)
        spin_us_.store(std::min(max_spin_us_, spin * 1.25 + 0.5), std::memory_order_relaxed);
      return;
    }
    _mm_pause();
    if (i % 64 == 0 && clock::now() >= deadline) break;
  }
  spin_us_.store(spin / 2, std::memory_order_relaxed);
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  while (generation_.load(std::memory_order_seq_cst) == gen) generation_.wait(gen, std::memory_order_seq_cst);
  sleepers_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace tl
