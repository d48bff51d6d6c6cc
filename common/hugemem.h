/* hugemem.h - memory for model weights on 2 MiB pages where the kernel gives them. */
#ifndef LLORCH_HUGEMEM_H
#define LLORCH_HUGEMEM_H

#include <stddef.h>

#include "error.h"

/* Streaming gigabytes of weights through 4 KiB pages costs a TLB miss every 4 KiB, and
 * the hardware prefetchers stop at every page boundary: on 2 MiB pages a matrix x vector
 * product reads 5-15% faster. Nothing here requires huge pages; where the kernel does
 * not give them the memory works the same on small pages. */
#define HUGEMEM_PAGE ((size_t)2 << 20)

/* Anonymous read-write memory of `bytes` (> 0) at a 2 MiB-aligned address, asked for on
 * transparent huge pages (MADV_HUGEPAGE) and populated now, so that a machine short of
 * memory fails here with a message instead of later with the OOM killer. Returns NULL
 * with err. Free with hugemem_unmap. */
void *hugemem_alloc(size_t bytes, llorch_error *err);

/* Maps the first `bytes` (> 0) bytes of fd shared, with protection prot (PROT_READ,
 * PROT_WRITE), at a 2 MiB-aligned address: a shared-memory segment whose pages are huge
 * (hugemem_collapse) is then mapped with 2 MiB entries. Returns NULL with errno set.
 * Unmap with hugemem_unmap. */
void *hugemem_map(int fd, size_t bytes, int prot);

/* Unmaps what hugemem_alloc or hugemem_map returned, with the `bytes` it was asked for
 * (NULL: nothing). */
void hugemem_unmap(void *p, size_t bytes);

/* Moves the 2 MiB-aligned part of [p, p + bytes) of a shared-memory mapping onto huge
 * pages (MADV_COLLAPSE; the kernel copies the data), 2 MiB at a time so that a failure
 * part-way keeps what was done. Works whatever the system's shmem_enabled setting but
 * "deny", on Linux 6.1 and later. Returns the bytes now on huge pages (0 when the kernel
 * cannot do it); never fails otherwise. */
size_t hugemem_collapse(void *p, size_t bytes);

/* The memory the kernel says could be had without swapping (MemAvailable of
 * /proc/meminfo, which counts the page cache it can drop), in bytes; -1 when unknown. */
long long hugemem_available(void);

/* Bytes of [p, p + bytes) this process maps with 2 MiB entries, from
 * /proc/self/smaps (for logs and tests); -1 when it cannot be read. */
long long hugemem_mapped_huge(const void *p, size_t bytes);

#endif
