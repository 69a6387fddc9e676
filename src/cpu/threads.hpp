// Thread count for OpenMP loops and OpenBLAS GEMMs together.
#pragma once

namespace tl {

// n <= 0: leave the defaults (OMP_NUM_THREADS, else all cores).
void set_num_threads(int n);
int num_threads();

}  // namespace tl
