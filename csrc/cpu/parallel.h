// parallel.h — the one threading helper every CPU kernel uses.
//
// Work is split into `n_tasks` independent tasks run on `n_threads` threads
// (OpenMP when compiled with it, else serially).  The Python layer passes
// torch.get_num_threads() / OMP_NUM_THREADS, so pylin never oversubscribes.
#pragma once

#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace pylin {

template <typename Fn>
void parallel_for(int64_t n_tasks, int n_threads, Fn&& fn) {
    if (n_tasks <= 0) return;
#ifdef _OPENMP
    if (n_threads > 1 && n_tasks > 1) {
        const int threads = (int)(n_tasks < n_threads ? n_tasks : n_threads);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int64_t t = 0; t < n_tasks; ++t) fn(t);
        return;
    }
#endif
    (void)n_threads;
    for (int64_t t = 0; t < n_tasks; ++t) fn(t);
}

}  // namespace pylin
