/* threadpool.c - persistent worker threads: a generation counter wakes them, an
 * atomic count of unfinished shares tells the caller when a loop is done. Both sides
 * spin first and only touch the mutex when the other side has gone to sleep, so
 * back-to-back loops cost no system call. */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

/* Polls of an atomic before a thread goes to sleep on a condition variable (a few
 * tens of microseconds): long enough to cover the gap between the loops of one
 * forward pass, short enough not to steal the core from a descheduled partner when
 * the machine has more runnable threads than cores. */
#define SPIN_POLLS 2000

typedef struct pool_thread {
    threadpool *pool;
    int index;
    pthread_t tid;
} pool_thread;

struct threadpool {
    int n_threads;
    pool_thread *threads; /* n_threads - 1 */
    pthread_mutex_t mutex;
    pthread_cond_t wake; /* generation changed (or stop) */
    pthread_cond_t done; /* pending reached 0 */
    _Atomic uint64_t generation; /* bumped once per loop, after the job is written */
    _Atomic int pending;         /* pool threads still running the current loop */
    _Atomic int sleepers;        /* pool threads waiting (or about to wait) on `wake` */
    _Atomic bool caller_asleep;  /* the caller waits (or is about to wait) on `done` */
    _Atomic bool stop;
    /* the current loop, written by the caller before bumping generation */
    threadpool_fn fn;
    void *ctx;
    int64_t n;
};

static inline void s_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void s_run_share(threadpool *pool, int index)
{
    int64_t begin = pool->n * index / pool->n_threads;
    int64_t end = pool->n * (index + 1) / pool->n_threads;
    if (begin < end)
        pool->fn(pool->ctx, begin, end, index);
}

/* The sleeper/waker handshakes below are Dekker-style: each side stores its flag and
 * then loads the other side's with sequentially consistent atomics, so at least one
 * of them sees the other: either the sleeper sees the new state and does not wait,
 * or the waker sees the sleeper and signals under the mutex. */
static void *s_thread_main(void *arg)
{
    pool_thread *self = arg;
    threadpool *pool = self->pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        for (int i = 0; i < SPIN_POLLS && gen == seen && !atomic_load(&pool->stop); i++) {
            s_pause();
            gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        }
        if (gen == seen) {
            pthread_mutex_lock(&pool->mutex);
            atomic_fetch_add(&pool->sleepers, 1);
            while ((gen = atomic_load(&pool->generation)) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->wake, &pool->mutex);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mutex);
        }
        if (atomic_load(&pool->stop))
            return NULL;
        seen = gen;
        s_run_share(pool, self->index);
        if (atomic_fetch_sub(&pool->pending, 1) == 1 && atomic_load(&pool->caller_asleep)) {
            pthread_mutex_lock(&pool->mutex);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->mutex);
        }
    }
}

threadpool *threadpool_new(int n_threads, llorch_error *err)
{
    if (n_threads < 1 || n_threads > 256) {
        llorch_error_set(err, "thread count %d is out of range (1..256)", n_threads);
        return NULL;
    }
    threadpool *pool = calloc(1, sizeof *pool);
    if (!pool) {
        llorch_error_set(err, "out of memory for the thread pool");
        return NULL;
    }
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    pool->threads = calloc((size_t)n_threads, sizeof *pool->threads);
    if (!pool->threads) {
        llorch_error_set(err, "out of memory for the thread pool");
        threadpool_free(&pool);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        pool_thread *t = &pool->threads[i - 1];
        t->pool = pool;
        t->index = i;
        if (pthread_create(&t->tid, NULL, s_thread_main, t) != 0) {
            llorch_error_set(err, "cannot start thread %d of %d", i + 1, n_threads);
            pool->n_threads = i; /* join only the ones started */
            threadpool_free(&pool);
            return NULL;
        }
    }
    return pool;
}

void threadpool_free(threadpool **pp)
{
    if (!pp || !*pp)
        return;
    threadpool *pool = *pp;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->stop, true);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    if (pool->threads)
        for (int i = 1; i < pool->n_threads; i++)
            pthread_join(pool->threads[i - 1].tid, NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->threads);
    free(pool);
    *pp = NULL;
}

int threadpool_size(const threadpool *pool)
{
    return pool ? pool->n_threads : 1;
}

void threadpool_for(threadpool *pool, int64_t n, threadpool_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (!pool || pool->n_threads == 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n = n;
    atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&pool->generation, 1);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
    }
    s_run_share(pool, 0);
    for (int i = 0; i < SPIN_POLLS && atomic_load_explicit(&pool->pending, memory_order_acquire); i++)
        s_pause();
    if (atomic_load_explicit(&pool->pending, memory_order_acquire)) {
        pthread_mutex_lock(&pool->mutex);
        atomic_store(&pool->caller_asleep, true);
        while (atomic_load(&pool->pending))
            pthread_cond_wait(&pool->done, &pool->mutex);
        atomic_store(&pool->caller_asleep, false);
        pthread_mutex_unlock(&pool->mutex);
    }
}
