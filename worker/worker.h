/* worker.h - llorch-worker's parts: its weights (mapped or fetched), the router link and the
 * forward path. */
#ifndef LLORCH_WORKER_H
#define LLORCH_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "security.h"
#include "stage.h"
#include "wire.h"

/* Largest CHUNK_REQ a worker sends (the loader allows up to WIRE_MAX_CHUNK_BYTES). */
#define WORKER_CHUNK_BYTES (4u << 20)
/* CHUNK_REQs in flight while fetching. */
#define WORKER_FETCH_WINDOW 8
/* Next-hop PUSH sockets kept open at once. */
#define WORKER_MAX_HOPS 64

typedef struct worker_config {
    const char *loader_ep;
    const char *router_ep;
    const char *bind_ep;
    uint32_t first, last;         /* layers [first, last) */
    int threads;
    uint64_t kv_budget_bytes;     /* 0: one full context of this range's layers */
    kv_type kv_type;              /* how the KV cache stores keys and values (0: F32) */
    int max_batch;                /* rows the scratch is sized for */
    char id[WIRE_MAX_ID_BYTES + 1];
    bool fetch;                   /* always fetch over the wire, never map */
    bool verify;                  /* check the digests of mapped tensors too */
    /* CurveZMQ: own key pair, servers' public keys (Z85); has_curve false = plain */
    bool has_curve;
    security_keypair keys;
    char loader_public[SECURITY_Z85_KEY_LEN + 1];
    char router_public[SECURITY_Z85_KEY_LEN + 1];
    char hop_public[SECURITY_Z85_KEY_LEN + 1]; /* next workers' PULL (default router's) */
    const char *allow;            /* allow-list of the PULL socket (CURVE server) or NULL */
} worker_config;

/* This worker's share of the model: the config and tensor records of its range, their
 * bytes either in the loader's segment (mapped read-only) or in private memory. */
typedef struct worker_weights {
    model_config cfg;
    char model_id[WIRE_MAX_ID_BYTES + 1];
    gguf_tensor *records;       /* (n_records) the tensors the range needs */
    size_t n_records;
    char (*names)[WIRE_MAX_TENSOR_NAME_BYTES + 1];
    void *map;                  /* the segment, or the fetched bytes */
    size_t map_bytes;
    bool zero_copy;             /* map is the shared segment */
    model *m;                   /* over records */
} worker_weights;

/* Asks the loader for the manifest (waiting for the loader to come up, as long as no stop
 * signal arrives), checks the layer range against it, then maps the segment read-only
 * when the loader is on this host and !cfg->fetch (checking the mapped tensors' BLAKE2b
 * digests with cfg->verify), else fetches the range's tensors in chunks of at most
 * WORKER_CHUNK_BYTES and checks every BLAKE2b digest. Returns 0, or -1
 * with err: a digest mismatch (errno EBADMSG), a range the model does not have, a loader
 * error, a stop signal (errno EINTR). Free with worker_weights_free. */
int worker_weights_acquire(worker_weights *w, void *zmq_ctx, const worker_config *cfg,
                           llorch_error *err);

/* Unmaps or frees the bytes, frees the records and the model, zeroes *w. */
void worker_weights_free(worker_weights *w);

/* State shared between the main thread (forward path) and the control thread (router
 * link); counters are atomics so the heartbeat reads them while a batch runs. */
typedef struct worker_shared {
    atomic_uint_fast64_t batches;
    atomic_uint_fast64_t n_sessions;
    atomic_uint_fast64_t kv_used_bytes;
    atomic_uint_fast64_t errors;
} worker_shared;

/* The control thread: owns the DEALER to the router, registers (again after a lost
 * router), heartbeats while batches run, and passes SESSION_FREE ids to the main thread
 * over the inproc PAIR "inproc://worker-control" (8-byte session ids; the main thread
 * binds it before starting the thread). */
typedef struct worker_control worker_control;

#define WORKER_CONTROL_PIPE "inproc://worker-control"

/* Starts the thread. reg is copied (strings too). NULL with err. */
worker_control *worker_control_start(void *zmq_ctx, const worker_config *cfg,
                                     const wire_register *reg, worker_shared *shared,
                                     llorch_error *err);

/* Tells the thread to stop, joins it and frees *c (NULL after). Safe on NULL. */
void worker_control_stop(worker_control **c);

/* The forward path: PUSH sockets per next hop with a disconnect monitor each, and the
 * output buffers. */
typedef struct worker_hops worker_hops;

worker_hops *worker_hops_new(void *zmq_ctx, const worker_config *cfg, llorch_error *err);
void worker_hops_free(worker_hops **h);

/* Poll items of the hops' monitor sockets: fills up to max items, returns the count. */
int worker_hops_poll_items(worker_hops *h, void *items, int max);

/* Reads and logs the monitor events that are waiting (connected, disconnected). */
void worker_hops_check_monitors(worker_hops *h);

/* Handles one decoded message from the PULL socket: a FORWARD runs through the stage and
 * goes to route[0] (FORWARD to the next worker or LOGITS to the router's results); a
 * FORWARD that cannot run gets an ERROR to the results endpoint (the last route entry):
 * WIRE_ERR_NO_MEMORY when the KV budget does not hold a session, WIRE_ERR_INVALID for
 * rows the stage refuses. Other types are logged and dropped (no reply address).
 * Never fails on what a peer sent; returns -1 only when the process should stop. */
int worker_handle(worker_hops *h, stage *s, const worker_weights *w, const wire_message *m,
                  worker_shared *shared);

/* The wire error code for a failed stage_forward, from its return value: the KV cache's
 * LLORCH_ERR_NO_MEMORY is WIRE_ERR_NO_MEMORY (the router may retry the session later or
 * tell its client), any other failure WIRE_ERR_INVALID (the rows make no sense here).
 * Decided by the value alone: the message's wording may change freely. */
static inline uint32_t worker_stage_error_code(int stage_rc)
{
    return stage_rc == LLORCH_ERR_NO_MEMORY ? WIRE_ERR_NO_MEMORY : WIRE_ERR_INVALID;
}

/* Forgets a session: frees its KV cache. */
void worker_session_free(worker_hops *h, stage *s, uint64_t session_id, worker_shared *shared);

#endif
