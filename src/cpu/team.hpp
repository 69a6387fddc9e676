// A barrier for a small team of threads that meet hundreds of times per decoded token (the engine runs a
// token's layers in one OpenMP region and meets between phases). OpenMP's own barrier with the passive
// wait policy puts a waiter to sleep at once, and waking it costs about 10-20 us on the VMs measured here;
// a waiter here spins first (a phase lasts tens of microseconds), then sleeps on a futex
// (std::atomic::wait). The spin adapts: a wait that ends in sleep halves it, one that ends while spinning
// lengthens it again, up to max_spin_us. So on a busy machine, where team-mates are descheduled for whole
// time slices, waiters soon sleep at once instead of burning the CPU time the others need.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>

namespace tl {

class TeamBarrier {
 public:
  explicit TeamBarrier(double max_spin_us = 50.0) : max_spin_us_(max_spin_us), spin_us_(max_spin_us) {}
  TeamBarrier(const TeamBarrier&) = delete;
  TeamBarrier& operator=(const TeamBarrier&) = delete;

  // Returns once all `threads` members (the same count from every member) have arrived. Everything a
  // member wrote before it arrived is visible to every member after it returns.
  void arrive_and_wait(int threads) {
    arrive_and_wait(threads, [] { return false; });
  }
  // The same; while it waits, the member calls work() (a small piece at a time) until it returns false,
  // and stops calling it when the barrier opens, so the work never keeps the others waiting.
  template <class Work>
  void arrive_and_wait(int threads, Work&& work) {
    if (threads <= 1) return;
    uint32_t gen = 0;
    if (arrive(threads, gen)) return;
    const double spin = spin_us_.load(std::memory_order_relaxed);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double, std::micro>(spin);
    bool more = true;
    for (int i = 1;; ++i) {
      if (generation_.load(std::memory_order_acquire) != gen) return spun(spin);
      if (more) {
        more = work();
        continue;
      }
      __builtin_ia32_pause();
      if (i % 64 == 0 && std::chrono::steady_clock::now() >= deadline) break;
    }
    sleep(gen, spin);
  }

 private:
  bool arrive(int threads, uint32_t& gen);  // true for the last member (it opened the barrier)
  void spun(double spin);                   // a wait ended while spinning
  void sleep(uint32_t gen, double spin);    // sleeps until the generation moves on

  const double max_spin_us_;
  std::atomic<double> spin_us_;  // the current spin before sleeping
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};
};

}  // namespace tl
