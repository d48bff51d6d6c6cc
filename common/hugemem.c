/* hugemem.c - 2 MiB-aligned mappings, transparent huge pages and MADV_COLLAPSE. */
#include "hugemem.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1 */
#endif

static size_t s_round_up(size_t n) { return (n + HUGEMEM_PAGE - 1) & ~(HUGEMEM_PAGE - 1); }

/* Reserves `bytes` (a multiple of 2 MiB) of address space at a 2 MiB-aligned address
 * (NULL with errno). The caller maps over it with MAP_FIXED; what it leaves stays
 * reserved until hugemem_unmap. */
static void *s_reserve_aligned(size_t bytes)
{
    const size_t span = bytes + HUGEMEM_PAGE;
    uint8_t *raw = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + HUGEMEM_PAGE - 1) & ~(uintptr_t)(HUGEMEM_PAGE - 1));
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    const size_t tail = (size_t)(raw + span - (p + bytes));
    if (tail > 0)
        munmap(p + bytes, tail);
    return p;
}

void *hugemem_alloc(size_t bytes, llorch_error *err)
{
    if (bytes == 0) {
        llorch_error_set(err, "hugemem_alloc: zero bytes");
        return NULL;
    }
    const size_t span = s_round_up(bytes);
    void *p = s_reserve_aligned(span);
    if (!p || mmap(p, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
                   0) == MAP_FAILED) {
        llorch_error_set(err, "cannot map %.1f MB: %s", span / 1e6, strerror(errno));
        if (p)
            munmap(p, span);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, span, MADV_HUGEPAGE); /* advice only: small pages work the same */
#endif
#ifdef MADV_POPULATE_WRITE
    if (madvise(p, span, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
        /* EINVAL: a kernel before 5.14, the pages come on first touch */
        llorch_error_set(err, "cannot get %.1f MB of memory: %s (free some, or use a smaller "
                              "model)", span / 1e6, strerror(errno));
        munmap(p, span);
        return NULL;
    }
#endif
    return p;
}

void *hugemem_map(int fd, size_t bytes, int prot)
{
    if (bytes == 0) {
        errno = EINVAL;
        return NULL;
    }
    const size_t span = s_round_up(bytes);
    void *p = s_reserve_aligned(span);
    if (!p)
        return NULL;
    if (mmap(p, bytes, prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
        const int e = errno;
        munmap(p, span);
        errno = e;
        return NULL;
    }
    return p;
}

void hugemem_unmap(void *p, size_t bytes)
{
    if (p && bytes > 0)
        munmap(p, s_round_up(bytes));
}

size_t hugemem_collapse(void *p, size_t bytes)
{
    uint8_t *begin = (uint8_t *)(((uintptr_t)p + HUGEMEM_PAGE - 1) & ~(uintptr_t)(HUGEMEM_PAGE - 1));
    uint8_t *end = (uint8_t *)(((uintptr_t)p + bytes) & ~(uintptr_t)(HUGEMEM_PAGE - 1));
    size_t done = 0;
    for (uint8_t *at = begin; at < end; at += HUGEMEM_PAGE) {
        if (madvise(at, HUGEMEM_PAGE, MADV_COLLAPSE) == 0)
            done += HUGEMEM_PAGE;
        else if (errno == EINVAL || errno == EPERM)
            break; /* not supported by this kernel or for this mapping: stop asking */
    }
    return done;
}

long long hugemem_mapped_huge(const void *p, size_t bytes)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    const uintptr_t lo = (uintptr_t)p, hi = lo + bytes;
    char line[512];
    bool inside = false;
    long long total = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = a < hi && b > lo;
            continue;
        }
        long long kb;
        if (inside && (sscanf(line, "AnonHugePages: %lld kB", &kb) == 1 ||
                       sscanf(line, "ShmemPmdMapped: %lld kB", &kb) == 1 ||
                       sscanf(line, "FilePmdMapped: %lld kB", &kb) == 1))
            total += kb * 1024;
    }
    fclose(f);
    return total;
}

long long hugemem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1)
            break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}
