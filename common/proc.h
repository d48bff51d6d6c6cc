/* proc.h - what every llorch process binary shares: stop signals, host identity,
 * option parsing helpers, run directories and a monotonic clock. */
#ifndef LLORCH_PROC_H
#define LLORCH_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Installs SIGTERM and SIGINT handlers that only record the signal (no SA_RESTART, so
 * a blocking zmq_poll returns EINTR and the loop sees the flag at once), and ignores
 * SIGPIPE. Returns 0 or -1 with err. */
int proc_signals_install(llorch_error *err);

/* The stop signal received so far (SIGTERM, SIGINT), or 0. Async-signal-safe to read. */
int proc_stop_signal(void);

/* This host's identity: "<machine-id>/<boot-id>" from /etc/machine-id (or the host name
 * when it is missing) and /proc/sys/kernel/random/boot_id. Two processes with the same
 * id see the same /dev/shm unless they sit in different IPC namespaces (a worker still
 * checks that shm_open works). Writes at most n bytes, NUL-terminated. Returns 0, or -1
 * with err when neither a machine id nor a host name can be read. */
int proc_host_id(char *out, size_t n, llorch_error *err);

/* Parses a byte count with an optional K, M, G or T suffix (powers of 1024, "KiB"/"KB"
 * forms accepted): "512M" -> 536870912. Returns 0, or -1 with err naming what is
 * wrong. */
int proc_parse_bytes(const char *s, uint64_t *out, llorch_error *err);

/* Parses "FIRST:LAST" (layers [first, last), first < last). Returns 0 or -1 with err. */
int proc_parse_range(const char *s, uint32_t *first, uint32_t *last, llorch_error *err);

/* Parses a decimal integer in [min, max]. Returns 0 or -1 with err naming opt. */
int proc_parse_long(const char *opt, const char *s, long min, long max, long *out,
                    llorch_error *err);

/* Parses a sampler seed: a non-negative integer, or "-1" for UINT64_MAX (a random seed
 * drawn at run time). Returns 0 or -1 with err naming opt. */
int proc_parse_seed(const char *opt, const char *s, uint64_t *out, llorch_error *err);

/* Parses a finite decimal number. Returns 0 or -1 with err naming opt. */
int proc_parse_float(const char *opt, const char *s, float *out, llorch_error *err);

/* Creates a fresh private run directory (mode 0700) under $XDG_RUNTIME_DIR or /tmp,
 * named "<prefix>-XXXXXX", for ipc:// endpoints. Returns a malloc'd path the caller
 * frees, or NULL with err. */
char *proc_run_dir_new(const char *prefix, llorch_error *err);

/* Removes the files directly inside dir (sockets, pid files), then dir itself. Does not
 * recurse. Returns 0, or -1 with err when dir cannot be removed. */
int proc_run_dir_remove(const char *dir, llorch_error *err);

/* Removes the run directories "<base>/<prefix>-<pid>-..." whose process is gone (killed
 * with SIGKILL, it could not remove its own): owned by this user, <pid> no longer
 * running, the files directly inside removed with them (proc_run_dir_remove). Returns
 * how many were removed. */
int proc_run_dirs_sweep(const char *base, const char *prefix);

/* True when endpoint is an ipc:// path on which a process is listening. ZeroMQ's ipc bind
 * silently replaces such a socket file, stealing the endpoint from its owner; call this
 * before binding to refuse instead. tcp:// binds fail by themselves (EADDRINUSE). */
bool proc_endpoint_in_use(const char *endpoint);

/* Reads exactly n bytes at offset of fd into buf, going on after EINTR and short reads
 * (in pieces of at most 64 MB). Returns 0, or -1 with errno (EIO when the file ends
 * first). */
int proc_pread_all(int fd, void *buf, size_t n, uint64_t offset);

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t proc_now_ms(void);

#endif
