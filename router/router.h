/* router.h - llorch-router's state: workers, pipelines, sessions, and the calls between its files. */
#ifndef LLORCH_ROUTER_H
#define LLORCH_ROUTER_H

/* The router is one thread with one poll loop (router_main.c). Workers register on the
 * control socket and are kept alive by heartbeats (router_workers.c); chains of live
 * workers that cover every layer become pipelines; clients submit on the clients socket
 * and become sessions that are batched, up to max_inflight FORWARDs in flight per
 * pipeline (each session in one at most), and sampled when their logits come back
 * (router_sessions.c); a session a worker's full KV budget stops is preempted and
 * recomputed later while others run there. docs/pipeline.md is the contract this
 * implements. */

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "sampler.h"
#include "security.h"
#include "tokenizer.h"
#include "wire.h"

#define ROUTER_MAX_WORKERS 256
#define ROUTER_MAX_PIPELINES 64
#define ROUTER_MAX_PUSH 256        /* cached PUSH sockets to first workers */
#define ROUTER_MAX_INFLIGHT 16     /* batches in flight on one pipeline */
/* SESSION_FREE travels on the control socket, FORWARDs on others: a worker may run a
 * batch before a free sent earlier. A full KV budget within this long of a free on the
 * pipeline may be stale, and the session it stopped retries after ROUTER_RETRY_MS. */
#define ROUTER_FREE_SETTLE_MS 1000
#define ROUTER_RETRY_MS 20

typedef struct router_opts {
    const char *loader_endpoint;   /* where the loader serves the MANIFEST */
    const char *control_endpoint;  /* bind: worker registration and heartbeats */
    const char *results_endpoint;  /* bind: LOGITS and ERROR from last workers */
    const char *results_connect;   /* what workers connect to (default: results_endpoint) */
    const char *clients_endpoint;  /* bind: client requests */
    int max_batch_rows;            /* rows in one FORWARD (1..WIRE_MAX_ROWS) */
    int prompt_chunk_rows;         /* prompt rows one session adds to a batch */
    int max_queue;                 /* requests waiting for a session slot */
    int max_sessions;              /* sessions being generated at once */
    int max_inflight;              /* batches in flight per pipeline (0: its worker count) */
    int heartbeat_ms;
    int liveness;                  /* heartbeats missed before a worker is dead */
    const char *curve_secret;      /* key file of this router (NULL: no CURVE) */
    const char *curve_allow;       /* allow-list of client/worker keys (with curve_secret) */
    const char *curve_server_public; /* loader's/workers' public key (Z85 or file) */
} router_opts;

typedef struct router_worker {
    bool used;                     /* slot holds a registered worker */
    bool alive;
    char id[WIRE_MAX_ID_BYTES + 1];
    uint8_t identity[255];         /* its routing id on the control socket */
    size_t identity_bytes;
    char endpoint[WIRE_MAX_ENDPOINT_BYTES + 1];
    uint32_t layer_first, layer_last; /* [first, last) */
    uint32_t threads;
    uint64_t kv_budget_bytes;
    int64_t last_seen_ms;          /* any message from it */
    int pipeline;                  /* index into pipelines, -1 = spare */
} router_worker;

/* One row group of a batch in flight: n_rows consecutive positions of a session. */
typedef struct router_batch_part {
    uint64_t session_id;
    uint32_t n_rows;
} router_batch_part;

/* One FORWARD in flight on a pipeline. */
typedef struct router_batch {
    uint64_t batch_id;             /* 0: the slot is free */
    int n_parts;
    router_batch_part *parts;      /* (router_batch_parts_cap) its sessions in row order */
} router_batch;

typedef struct router_pipeline {
    bool used;
    uint32_t id;                   /* on the wire as pipeline_id */
    int n_workers;
    int workers[WIRE_MAX_HOPS];    /* worker slots in layer order */
    void *push;                    /* PUSH socket to the first worker (borrowed from cache) */
    int n_inflight;                /* used slots of batches */
    router_batch batches[ROUTER_MAX_INFLIGHT]; /* in flight; parts allocated once per slot */
    int n_sessions;                /* sessions assigned */
    uint64_t departures;           /* sessions that finished on it */
    int64_t last_free_ms;          /* when it was last sent a SESSION_FREE */
} router_pipeline;

typedef enum router_session_state {
    SESSION_QUEUED = 0,  /* waiting for a session slot or a pipeline */
    SESSION_ACTIVE,      /* assigned to a pipeline */
} router_session_state;

typedef struct router_session {
    uint64_t id;                   /* session_id on the wire, >= 1 */
    uint64_t request_id;           /* the client's id */
    uint8_t client[255];           /* the client's routing id */
    size_t client_bytes;
    router_session_state state;
    int pipeline;                  /* index, -1 while queued */
    int32_t *tokens;               /* (n_tokens) prompt, then generated tokens */
    uint32_t n_tokens, cap_tokens;
    uint32_t n_prompt;
    uint32_t n_done;               /* positions the pipeline has processed (KV filled) */
    uint32_t n_in_flight;          /* rows in its batch in flight (a session is in one at most) */
    uint32_t n_generated;
    uint32_t max_tokens;
    bool ignore_eos;               /* EOS is an ordinary token (the request's choice) */
    uint32_t top_n_probs;
    uint32_t n_stop;
    char **stop;                   /* (n_stop) stop strings */
    char *text;                    /* generated text so far, for the stop strings */
    size_t text_len, text_cap;
    sampler *smp;
    tokenizer_stream stream;
    bool cancelled;                /* CANCEL or the client is gone: end at the next chance */
    bool client_gone;              /* send nothing more to the client */
    /* Preempted (its KV freed when a worker's budget was full): it sends nothing until
     * its pipeline's departures exceed resume_after, then recomputes from position 0. */
    bool preempted;
    uint64_t resume_after;
    uint64_t preempt_seq;          /* order of preemption: the oldest resumes first */
    int64_t retry_at_ms;           /* sends nothing before (a full budget that may be stale) */
    double submit_ms, start_ms, prompt_done_ms;
} router_session;

typedef struct router_stats {
    uint64_t requests, refused, tokens_in, tokens_out, batches, rows, max_rows_in_batch;
    uint64_t max_batches_in_flight; /* on one pipeline at once */
    uint64_t sessions_done, errors, malformed;
    uint64_t preemptions;          /* sessions set back to wait for KV room */
} router_stats;

typedef struct router {
    router_opts opts;
    void *ctx;
    void *control, *results, *clients, *loader;
    security_zap *zap;
    security_keypair keys;         /* this router's pair (when CURVE is on) */
    char server_public[SECURITY_Z85_KEY_LEN + 1];

    /* from the MANIFEST */
    char model_id[WIRE_MAX_ID_BYTES + 1];
    uint32_t n_vocab, n_embd, n_layers, n_ctx;
    tokenizer *tok;

    router_worker workers[ROUTER_MAX_WORKERS];
    char stat_names[ROUTER_MAX_WORKERS][WIRE_MAX_KEY_BYTES + 1]; /* "worker_alive:<id>" */
    router_pipeline pipelines[ROUTER_MAX_PIPELINES];
    uint32_t next_pipeline_id;
    struct { char endpoint[WIRE_MAX_ENDPOINT_BYTES + 1]; void *socket; } push[ROUTER_MAX_PUSH];
    int n_push;
    uint64_t heartbeat_seq;
    int64_t next_heartbeat_ms;

    router_session **sessions;     /* (n_sessions) queued and active, in arrival order */
    int n_sessions;
    int cap_sessions;
    int n_active;
    uint64_t next_session_id;
    uint64_t next_batch_id;
    uint64_t next_preempt_seq;
    int64_t wake_ms;               /* a session's retry_at_ms the poll must wake for, or 0 */
    int rr;                        /* round-robin start for batch fairness */

    float *scratch;                /* (n_vocab) logits being sampled */
    float *probs;                  /* (n_vocab) softmax for top_n_probs */
    wire_row *rows;                /* (max_batch_rows) a FORWARD being built */
    router_stats stats;
} router;

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t router_now_ms(void);

/* ---- router_workers.c ---- */

/* Asks the loader for the MANIFEST and builds the tokenizer from it, waiting (with a
 * log line now and then) until the loader answers or *stop becomes true. 0 or -1 with err. */
int router_fetch_manifest(router *r, volatile sig_atomic_t *stop, llorch_error *err);

/* Handles one message from the control socket (REGISTER, HEARTBEAT; anything else
 * gets an ERROR). Never fails: problems are answered or logged. */
void router_control_message(router *r, const wire_msg *raw, const wire_message *m);

/* Sends heartbeats when due and declares silent workers dead (taking their pipelines
 * out of service). Returns the ms until it next needs to run. */
int router_workers_tick(router *r);

/* Sends SESSION_FREE for session_id to every worker of pipeline p (and notes when). */
void router_free_session_on_workers(router *r, int p, uint64_t session_id);

/* Counts of live workers and pipelines in service. */
int router_workers_alive(const router *r);
int router_pipelines_ready(const router *r);

/* The PUSH socket to endpoint (connected once, then cached). NULL with err. */
void *router_push_socket(router *r, const char *endpoint, llorch_error *err);

/* Applies the CURVE client set-up to a socket about to connect to endpoint (tcp://
 * only, and only when keys were given). 0 or -1 with err. */
int router_curve_client(router *r, void *socket, const char *endpoint, llorch_error *err);

/* ---- router_sessions.c ---- */

/* Handles one decoded client message (SUBMIT, CANCEL, STATS_REQ; others get ERROR). */
void router_client_message(router *r, const wire_msg *raw, const wire_message *m);

/* Handles one message from the results socket (LOGITS, ERROR). */
void router_results_message(router *r, const wire_message *m);

/* Parts a batch slot needs room for: a batch holds at most one part per session and
 * one row per part. */
int router_batch_parts_cap(const router_opts *o);

/* Batches pipeline p may have in flight at once: --max-inflight, or its worker count. */
int router_max_inflight(const router *r, int p);

/* Admits queued requests to free slots and, while a pipeline has free in-flight
 * capacity and ready sessions, sends it another FORWARD holding a group of them. Sets
 * r->wake_ms when a session waits for a time rather than a message. */
void router_step(router *r);

/* A pipeline went out of service: its sessions end with ERROR + DONE("error") naming
 * the lost worker; the pipeline slot is released. */
void router_pipeline_lost(router *r, int p, const char *why);

/* Fills counters (at most cap) with the STATS values; returns how many. */
int router_stats_fill(router *r, wire_stat *counters, int cap);

/* Answers a STATS_REQ that arrived on socket (a ROUTER: raw's identity) with the counters
 * of router_stats_fill. Sends without blocking; a failed send is dropped. */
void router_stats_reply(router *r, void *socket, const wire_msg *raw);

/* Ends every session (DONE "error", the router is stopping) and frees them. */
void router_sessions_shutdown(router *r);

#endif
