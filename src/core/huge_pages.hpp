// HugeVector: a std::vector for large read-mostly buffers (the engine's weights, GGUF float tables) whose
// blocks of 2 MiB or more are 2 MiB-aligned and advised MADV_HUGEPAGE. Where transparent huge pages are
// "madvise" only (Debian's default), a plain allocation gets 4 KiB pages, and a GEMV streaming 650 MB of
// LM head then takes a TLB miss every 4 KiB and its hardware prefetchers stop at every page boundary:
// measured on one AMD EPYC core, a stand-alone loop streamed the f16 head at 22 GB/s on 4 KiB pages and at
// 27 GB/s on 2 MiB ones (docs/benchmarks.md). The advice is only a hint: where the kernel refuses it, the
// pages stay small.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace tl {

inline constexpr size_t kHugePageBytes = size_t(2) << 20;

template <class T>
struct HugePageAllocator {
  using value_type = T;
  static constexpr size_t kSmallAlign = alignof(T) < 64 ? 64 : alignof(T);  // a cache line at least
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

  // Blocks of 2 MiB or more start on a 2 MiB boundary. The cost: a block's last partial 2 MiB may be backed
  // by a whole huge page (measured: peak RSS of `ternlab bench` on the 2b4t I2_S file 3.17 -> 3.26 GB).
  T* allocate(size_t n) {
    if (n > size_t(-1) / sizeof(T)) throw std::bad_array_new_length();
    const size_t bytes = n * sizeof(T);
    if (bytes < kHugePageBytes) return static_cast<T*>(::operator new(bytes, std::align_val_t(kSmallAlign)));
    void* p = nullptr;
    if (posix_memalign(&p, kHugePageBytes, bytes) != 0) throw std::bad_alloc();
    madvise(p, (bytes + 4095) / 4096 * 4096, MADV_HUGEPAGE);  // a hint; failure leaves small pages
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) noexcept {
    if (n * sizeof(T) < kHugePageBytes)
      ::operator delete(p, std::align_val_t(kSmallAlign));
    else
      std::free(p);
  }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;
  }
};

template <class T>
using HugeVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace tl
