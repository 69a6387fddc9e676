// A barrier for a small team of threads that meet hundreds of times per decoded token (the engine runs a
// token's layers in one OpenMP region and meets between phases). OpenMP's own barrier with the passive
// wait policy puts a waiter to sleep at once, and waking it costs about 10-20 us on the VMs measured here;
// a waiter here spins first (a phase lasts tens of microseconds), then sleeps on a futex
// (std::atomic::wait), so a team-mate descheduled on a busy machine costs a sleeping thread, not a
// spinning one.
#pragma once
#include <atomic>
#include <cstdint>

namespace tl {

class TeamBarrier {
 public:
  // spin_us: how long a waiter spins before it sleeps.
  explicit TeamBarrier(double spin_us = 200.0) : spin_us_(spin_us) {}
  TeamBarrier(const TeamBarrier&) = delete;
  TeamBarrier& operator=(const TeamBarrier&) = delete;

  // Returns once all `threads` members (the same count from every member) have arrived. Everything a
  // member wrote before it arrived is visible to every member after it returns.
  void arrive_and_wait(int threads);

 private:
  const double spin_us_;
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};
};

}  // namespace tl
