/* membw.c - this machine's memory read bandwidth: T threads each summing its own
 * first-touched part of a large buffer (on 2 MiB pages where the kernel gives them, as
 * llorch's weights are), best of several passes, in GB/s. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PASSES 5

typedef struct part {
    const uint64_t *data;
    size_t n_words;
    uint64_t sum;
    pthread_barrier_t *barrier;
    double best_s;
} part;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *s_run(void *arg)
{
    part *p = arg;
    memset((void *)p->data, 1, p->n_words * sizeof(uint64_t)); /* first touch by this thread */
    p->best_s = 1e30;
    for (int pass = 0; pass < PASSES; pass++) {
        pthread_barrier_wait(p->barrier);
        double t0 = s_now();
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i + 4 <= p->n_words; i += 4) {
            s0 += p->data[i];
            s1 += p->data[i + 1];
            s2 += p->data[i + 2];
            s3 += p->data[i + 3];
        }
        p->sum += s0 + s1 + s2 + s3;
        pthread_barrier_wait(p->barrier);
        double dt = s_now() - t0;
        if (dt < p->best_s)
            p->best_s = dt;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 1024;
    if (threads < 1 || threads > 256 || mib < 64) {
        fprintf(stderr, "usage: membw [THREADS] [MIB >= 64]\n");
        return 2;
    }
    size_t bytes = mib << 20;
    uint64_t *buf = aligned_alloc((size_t)2 << 20, bytes);
    if (buf)
        madvise(buf, bytes, MADV_HUGEPAGE);
    if (!buf) {
        fprintf(stderr, "membw: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)threads);
    part *parts = calloc((size_t)threads, sizeof *parts);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    size_t words = bytes / sizeof(uint64_t) / (size_t)threads;
    for (int t = 0; t < threads; t++) {
        parts[t] = (part){.data = buf + (size_t)t * words, .n_words = words, .barrier = &barrier};
        pthread_create(&tids[t], NULL, s_run, &parts[t]);
    }
    double worst_best = 0;
    uint64_t sum = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tids[t], NULL);
        if (parts[t].best_s > worst_best)
            worst_best = parts[t].best_s;
        sum += parts[t].sum;
    }
    printf("{\"threads\": %d, \"bytes\": %zu, \"read_gb_per_s\": %.2f, \"checksum\": %llu}\n",
           threads, bytes, (double)(words * sizeof(uint64_t) * (size_t)threads) / worst_best / 1e9,
           (unsigned long long)(sum & 0xff));
    free(parts);
    free(tids);
    free(buf);
    return 0;
}
