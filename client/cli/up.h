/* up.h - starting and stopping a whole pipeline (loader, workers, router) as child processes. */
#ifndef LLORCH_UP_H
#define LLORCH_UP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

#define UP_MAX_WORKERS 64
#define UP_MAX_ROUTER_EXTRA 32

typedef struct up_opts {
    const char *model;           /* GGUF file */
    int n_workers;               /* K; 0 = as many as --split has ranges (else 1) */
    const char *split;           /* "0:8,8:16,16:22" or NULL for an even split */
    int threads_per_worker;      /* 0 = the CPUs online */
    const char *endpoint;        /* the router's client endpoint; NULL = ipc:// in the run dir */
    const char *kv_budget;       /* passed to every worker as --kv-budget, or NULL */
    const char *kv_type;         /* passed to every worker as --kv-type ("f32", "f16"), or NULL */
    bool verify;                 /* passed to every worker as --verify */
    const char *layout;          /* passed to the loader as --layout ("auto", "rows"), or NULL */
    bool quiet;                  /* children log into files in the run dir, not stderr */
    const char *router_extra[UP_MAX_ROUTER_EXTRA]; /* (n_router_extra) more router arguments:
                                    the HTTP API's --http ADDR:PORT, its limits, --config, and the
                                    scheduling options (--max-batch, --max-inflight, ...) */
    int n_router_extra;
} up_opts;

typedef struct up_child {
    pid_t pid;                   /* 0 once reaped */
    char name[64];               /* "loader", "worker 1 (layers 8:16)", "router" */
    char log_path[320];          /* "" when logging to stderr */
} up_child;

typedef struct up_pipeline {
    char run_dir[128];           /* /tmp/llorch-<pid> */
    char clients_endpoint[256];  /* what clients connect to */
    up_child children[UP_MAX_WORKERS + 2];
    int n_children;
    double start_ms;
    double ready_ms;             /* from start until the router had a pipeline */
} up_pipeline;

/* Makes the run dir, starts the loader, the workers and the router (the sibling
 * binaries of this executable), and waits until the router reports a ready pipeline.
 * On failure (a bad split, a child that died, a stop signal) everything started is
 * stopped, the run dir removed, and -1 returned with err naming what went wrong. */
int up_start(const up_opts *o, up_pipeline *p, llorch_error *err);

/* Waits in the foreground until a stop signal (0) or a child's early exit (-1, err says
 * which child and how). Does not stop anything. */
int up_wait(up_pipeline *p, llorch_error *err);

/* Stops every child (SIGTERM, a grace period, then SIGKILL), removes any segment a
 * killed loader left, and removes the run dir. Safe to call twice. */
void up_stop(up_pipeline *p);

/* Parses one of the options `up` and `generate --workers` share (--workers, --split,
 * --threads-per-worker, --endpoint, --kv-budget, --kv-type, --layout, --verify) at argv[*i] into
 * o, moving *i past its value. Returns 1 when it was one, 0 when not, -1 after printing a bad value. */
int up_parse_option(up_opts *o, int argc, char **argv, int *i);

/* Prints the last lines of each child's log file to stderr (after a failure). */
void up_print_logs(const up_pipeline *p);

#endif
