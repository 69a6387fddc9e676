#include "cpu/team.hpp"

#include <algorithm>

namespace tl {

bool TeamBarrier::arrive(int threads, uint32_t& gen) {
  gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 < threads) return false;
  arrived_.store(0, std::memory_order_relaxed);  // the last one resets the count and opens the barrier
  generation_.fetch_add(1, std::memory_order_seq_cst);
  // A sleeper counted itself before its last look at the generation, so either it sees the new one or it
  // is counted here (both orders are seq_cst): no lost wake-up, and no futex call when none sleeps.
  if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
  return true;
}

void TeamBarrier::spun(double spin) {
  if (spin < max_spin_us_)
    spin_us_.store(std::min(max_spin_us_, spin * 1.25 + 0.5), std::memory_order_relaxed);
}

void TeamBarrier::sleep(uint32_t gen, double spin) {
  spin_us_.store(spin / 2, std::memory_order_relaxed);
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  while (generation_.load(std::memory_order_seq_cst) == gen) generation_.wait(gen, std::memory_order_seq_cst);
  sleepers_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace tl
