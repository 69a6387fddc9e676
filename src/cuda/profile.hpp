// Where the GPU's time goes, phase by phase (TERNLAB_CUDA_PROFILE=1): events recorded on a stream between
// the phases of a step, their elapsed times summed by phase name. Every gap — a GPU waiting for the host
// included — is charged to the phase that ends it, so the phases add up to the stream's wall time. Off (the
// default), a mark is one branch. For profiling only: the events serialise nothing but add a little time.
#pragma once
#include <string>

#include <cuda_runtime.h>

namespace tl::cuda::prof {

bool enabled();  // TERNLAB_CUDA_PROFILE is set and not "0"
// The time on `stream` since the previous mark is charged to `phase` (a string literal: kept by pointer).
void mark(cudaStream_t stream, const char* phase);
// Waits for the marks so far and adds their times to the totals.
void flush();
// The totals (ms, calls, share), largest first; `steps` divides the totals into per-step figures.
std::string report(int steps);
void reset();

}  // namespace tl::cuda::prof

#define TL_PROF(stream, phase)                                              \
  do {                                                                      \
    if (::tl::cuda::prof::enabled()) ::tl::cuda::prof::mark(stream, phase); \
  } while (0)
