// thread_pool.cpp — pylin's CPU thread pool behind parallel_for (see parallel.h for why).
//
// One job at a time (concurrent callers queue on a mutex).  Tasks are claimed from an atomic
// counter by the caller and by woken workers; the caller returns once every task has finished,
// so a worker that wakes late finds nothing to claim and delays no one.  Idle workers sleep on a
// condition variable.  The pool is created on first use and never destroyed (threads end with
// the process), which keeps interpreter shutdown and fork()ed children safe: in a child the
// caller simply runs every task itself.
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "parallel.h"

namespace pylin {
namespace {

struct Job {
    void (*task)(void*, int64_t);
    void* ctx;
    int64_t n_tasks;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
};

void work(Job& job) {
    for (;;) {
        const int64_t t = job.next.fetch_add(1, std::memory_order_relaxed);
        if (t >= job.n_tasks) return;
        job.task(job.ctx, t);
        job.done.fetch_add(1, std::memory_order_release);
    }
}

class Pool {
public:
    void run(int64_t n_tasks, int n_threads, void (*task)(void*, int64_t), void* ctx) {
        std::lock_guard<std::mutex> one_job_at_a_time(run_mutex_);
        auto job = std::make_shared<Job>();
        job->task = task;
        job->ctx = ctx;
        job->n_tasks = n_tasks;
        const int helpers = (int)std::min<int64_t>(n_threads, n_tasks) - 1;
        grow(helpers);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            current_ = job;
            helpers_wanted_ = helpers;
            ++generation_;
        }
        wake_.notify_all();
        work(*job);
        while (job->done.load(std::memory_order_acquire) < n_tasks) std::this_thread::yield();
    }

private:
    void grow(int n) {
        while ((int)workers_.size() < n) {
            const int index = (int)workers_.size();
            workers_.emplace_back([this, index] { loop(index); });
            workers_.back().detach();
        }
    }

    void loop(int index) {
        uint64_t seen = 0;
        for (;;) {
            std::shared_ptr<Job> job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_ != seen && index < helpers_wanted_; });
                seen = generation_;
                job = current_;
            }
            work(*job);
        }
    }

    std::mutex run_mutex_, mutex_;
    std::condition_variable wake_;
    std::vector<std::thread> workers_;
    std::shared_ptr<Job> current_;
    uint64_t generation_ = 0;
    int helpers_wanted_ = 0;
};

Pool& pool() {
    static Pool* instance = new Pool();  // intentionally leaked: see the file comment
    return *instance;
}

}  // namespace

void run_tasks(int64_t n_tasks, int n_threads, void (*task)(void*, int64_t), void* ctx) {
    pool().run(n_tasks, n_threads, task, ctx);
}

}  // namespace pylin
