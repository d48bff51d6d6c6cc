/* threadpool.h - a fixed set of threads that run parallel-for loops, created once. */
#ifndef LLORCH_THREADPOOL_H
#define LLORCH_THREADPOOL_H

#include <stdint.h>

#include "error.h"

typedef struct threadpool threadpool;

/* One thread's share of a loop: the items [begin, end) of the range, run by thread
 * `thread_index` (0 = the caller, 1..n_threads-1 = the pool's threads). */
typedef void (*threadpool_fn)(void *ctx, int64_t begin, int64_t end, int thread_index);

/* Starts n_threads - 1 threads (the caller is the n-th worker of every loop). Returns
 * NULL with err when n_threads is not in 1..256 or a thread cannot be created.
 * Free with threadpool_free. */
threadpool *threadpool_new(int n_threads, llorch_error *err);

/* Stops and joins the threads, frees the pool and sets *pool to NULL. Safe on NULL. */
void threadpool_free(threadpool **pool);

/* The number of threads that run each loop (including the caller). */
int threadpool_size(const threadpool *pool);

/* Runs fn over [0, n) split into n_threads contiguous, nearly equal shares, one per
 * thread, the caller taking share 0, and returns when every share is done (a
 * barrier). Neither allocates nor creates threads. Threads spin briefly between loops
 * and then sleep, so back-to-back loops start fast. One caller at a time; fn must
 * not call threadpool_for on the same pool. NULL pool: runs fn(ctx, 0, n, 0). */
void threadpool_for(threadpool *pool, int64_t n, threadpool_fn fn, void *ctx);

#endif
