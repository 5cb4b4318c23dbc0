// parallel.h — the one threading helper every CPU kernel uses.
//
// Work is split into `n_tasks` independent tasks run by up to `n_threads` threads, the calling
// thread included, on pylin's own std::thread pool (thread_pool.cpp).  Why not OpenMP: torch
// already runs an OpenMP pool in the same process, and two libgomp runtimes whose idle workers
// spin starve each other on small machines; and an OpenMP join waits for every worker even when
// the caller has already done all the work, which stalls for a scheduler slice whenever a worker
// is descheduled.  Here idle workers sleep, and the caller waits only for tasks that were claimed.
// The Python layer passes torch.get_num_threads() / OMP_NUM_THREADS.
// Tests: tests/test_matmul.py (every kernel runs threaded and single-threaded).
#pragma once

#include <cstdint>
#include <type_traits>

namespace pylin {

// Runs task(ctx, t) for every t in [0, n_tasks) on up to n_threads threads; returns when all ran.
void run_tasks(int64_t n_tasks, int n_threads, void (*task)(void*, int64_t), void* ctx);

template <typename Fn>
void parallel_for(int64_t n_tasks, int n_threads, Fn&& fn) {
    if (n_tasks <= 0) return;
    if (n_threads <= 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; ++t) fn(t);
        return;
    }
    using Body = std::remove_reference_t<Fn>;
    run_tasks(n_tasks, n_threads, [](void* ctx, int64_t t) { (*static_cast<Body*>(ctx))(t); },
              const_cast<void*>(static_cast<const void*>(&fn)));
}

}  // namespace pylin
