/* forward.c - a worker's forward path: a FORWARD through the stage, the result PUSHed to the
 * next hop (FORWARD or LOGITS), ERROR to the results endpoint, next hops watched. */
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "kv_cache.h"
#include "log.h"
#include "proc.h"

/* Sends to a dead next hop give up after this (the batch is lost; the router's liveness
 * check notices). */
#define HOPS_SEND_TIMEOUT_MS 5000
#define HOPS_LINGER_MS 500

typedef struct hop {
    char endpoint[WIRE_MAX_ENDPOINT_BYTES + 1];
    void *push;
    void *monitor;  /* PAIR receiving push's connect/disconnect events */
    int64_t used_ms;
} hop;

struct worker_hops {
    void *ctx;
    const worker_config *cfg;
    hop hops[WORKER_MAX_HOPS];
    int n_hops;
    unsigned monitor_seq;
    float *out;              /* (out_cap) stage output */
    size_t out_cap;
    stage_row *rows;         /* (rows_cap) */
    wire_row *next_rows;     /* (rows_cap) rows sent on, token -1 */
    wire_logit_row *logit_rows; /* (rows_cap) */
    size_t rows_cap;
    uint64_t sessions[4096]; /* sessions holding KV cache here */
    int n_sessions;
    size_t kv_pos_bytes;     /* K and V bytes of one position over this range */
};

worker_hops *worker_hops_new(void *ctx, const worker_config *cfg, llorch_error *err)
{
    worker_hops *h = calloc(1, sizeof *h);
    if (!h) {
        llorch_error_set(err, "out of memory");
        return NULL;
    }
    h->ctx = ctx;
    h->cfg = cfg;
    return h;
}

static void s_hop_close(hop *p)
{
    wire_monitor_close(p->push, p->monitor);
    if (p->push)
        zmq_close(p->push);
    memset(p, 0, sizeof *p);
}

void worker_hops_free(worker_hops **ph)
{
    if (!ph || !*ph)
        return;
    worker_hops *h = *ph;
    for (int i = 0; i < h->n_hops; i++)
        s_hop_close(&h->hops[i]);
    free(h->out);
    free(h->rows);
    free(h->next_rows);
    free(h->logit_rows);
    free(h);
    *ph = NULL;
}

/* The PUSH socket to endpoint, connected (and monitored) on first use; the least
 * recently used one is closed when the cache is full. NULL when it cannot be made. */
static void *s_hop(worker_hops *h, const char *endpoint)
{
    const int64_t now = proc_now_ms();
    int lru = 0;
    for (int i = 0; i < h->n_hops; i++) {
        if (!strcmp(h->hops[i].endpoint, endpoint)) {
            h->hops[i].used_ms = now;
            return h->hops[i].push;
        }
        if (h->hops[i].used_ms < h->hops[lru].used_ms)
            lru = i;
    }
    hop *p;
    if (h->n_hops < WORKER_MAX_HOPS) {
        p = &h->hops[h->n_hops++];
    } else {
        p = &h->hops[lru];
        s_hop_close(p);
    }
    snprintf(p->endpoint, sizeof p->endpoint, "%s", endpoint);
    p->used_ms = now;
    llorch_error err;
    p->push = zmq_socket(h->ctx, ZMQ_PUSH);
    if (!p->push)
        goto fail;
    int timeout = HOPS_SEND_TIMEOUT_MS, linger = HOPS_LINGER_MS;
    zmq_setsockopt(p->push, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(p->push, ZMQ_LINGER, &linger, sizeof linger);
    if (wire_socket_limits(p->push, &err) < 0) {
        log_warn("next hop %s: %s", endpoint, err.msg);
        goto fail;
    }
    const worker_config *c = h->cfg;
    if (c->has_curve && !strncmp(endpoint, "tcp://", 6)) {
        const char *server = c->hop_public[0] ? c->hop_public : c->router_public;
        if (!server[0] || security_client_setup(p->push, &c->keys, server, &err) < 0) {
            log_warn("next hop %s: %s", endpoint,
                     server[0] ? err.msg : "no server key (give --hop-public or --router-public)");
            goto fail;
        }
    }
    char mon[64];
    snprintf(mon, sizeof mon, "worker-hop-%u", h->monitor_seq++);
    p->monitor = wire_monitor_open(h->ctx, p->push, mon,
                                   ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED);
    if (zmq_connect(p->push, endpoint) != 0) {
        log_warn("cannot connect to next hop %s: %s", endpoint, zmq_strerror(errno));
        goto fail;
    }
    return p->push;
fail:
    s_hop_close(p);
    if (p == &h->hops[h->n_hops - 1])
        h->n_hops--;
    else
        p->used_ms = 0;
    return NULL;
}

int worker_hops_poll_items(worker_hops *h, void *items, int max)
{
    zmq_pollitem_t *it = items;
    int n = 0;
    for (int i = 0; i < h->n_hops && n < max; i++)
        if (h->hops[i].monitor)
            it[n++] = (zmq_pollitem_t){.socket = h->hops[i].monitor, .events = ZMQ_POLLIN};
    return n;
}

void worker_hops_check_monitors(worker_hops *h)
{
    for (int i = 0; i < h->n_hops; i++) {
        hop *p = &h->hops[i];
        if (!p->monitor)
            continue;
        for (int event; (event = wire_monitor_next(p->monitor));) {
            if (event == ZMQ_EVENT_DISCONNECTED)
                log_warn("next hop %s disconnected (the next worker or the router is gone or "
                         "restarting)", p->endpoint);
            else if (event == ZMQ_EVENT_CONNECTED)
                log_info("next hop %s connected", p->endpoint);
        }
    }
}

static void s_push(worker_hops *h, const char *endpoint, const wire_message *m,
                   worker_shared *shared)
{
    void *sock = s_hop(h, endpoint);
    llorch_error err;
    if (!sock) {
        atomic_fetch_add(&shared->errors, 1);
        return;
    }
    if (wire_send_message(sock, NULL, 0, m, 0, &err) < 0) {
        atomic_fetch_add(&shared->errors, 1);
        log_warn("cannot send %s to %s: %s", wire_type_name(m->type), endpoint, err.msg);
    }
}

/* ERROR about a batch to the results endpoint (the route's last entry). */
static void s_fail(worker_hops *h, const wire_forward *f, uint32_t code, uint64_t session_id,
                   const char *message, worker_shared *shared)
{
    atomic_fetch_add(&shared->errors, 1);
    if (f->n_hops == 0) {
        log_warn("batch %llu: %s (no route: nobody to tell)", (unsigned long long)f->batch_id,
                 message);
        return;
    }
    log_warn("batch %llu: %s", (unsigned long long)f->batch_id, message);
    wire_message m = {.type = WIRE_ERROR,
                      .error = {.code = code, .message = message, .batch_id = f->batch_id,
                                .session_id = session_id}};
    s_push(h, f->route[f->n_hops - 1], &m, shared);
}

static int s_grow(worker_hops *h, size_t n_rows, size_t n_floats)
{
    if (n_rows > h->rows_cap) {
        stage_row *r = realloc(h->rows, n_rows * sizeof *r);
        if (r)
            h->rows = r;
        wire_row *nr = realloc(h->next_rows, n_rows * sizeof *nr);
        if (nr)
            h->next_rows = nr;
        wire_logit_row *lr = realloc(h->logit_rows, n_rows * sizeof *lr);
        if (lr)
            h->logit_rows = lr;
        if (!r || !nr || !lr)
            return -1;
        h->rows_cap = n_rows;
    }
    if (n_floats > h->out_cap) {
        float *o = realloc(h->out, n_floats * sizeof *o);
        if (!o)
            return -1;
        h->out = o;
        h->out_cap = n_floats;
    }
    return 0;
}

/* Keeps the set of sessions with cache here and the bytes they hold. */
static void s_account(worker_hops *h, stage *s, const wire_forward *f, worker_shared *shared)
{
    for (uint32_t i = 0; i < f->n_rows; i++) {
        uint64_t id = f->rows[i].session_id;
        int k = 0;
        while (k < h->n_sessions && h->sessions[k] != id)
            k++;
        if (k == h->n_sessions && h->n_sessions < (int)(sizeof h->sessions / sizeof h->sessions[0]))
            h->sessions[h->n_sessions++] = id;
    }
    uint64_t bytes = 0;
    for (int k = 0; k < h->n_sessions; k++) {
        int32_t len = stage_seq_len(s, h->sessions[k]);
        bytes += (uint64_t)(len + KV_BLOCK_POSITIONS - 1) / KV_BLOCK_POSITIONS *
                 KV_BLOCK_POSITIONS * h->kv_pos_bytes;
    }
    atomic_store(&shared->n_sessions, (uint64_t)h->n_sessions);
    atomic_store(&shared->kv_used_bytes, bytes);
}

void worker_session_free(worker_hops *h, stage *s, uint64_t session_id, worker_shared *shared)
{
    int held = stage_free_seq(s, session_id);
    for (int k = 0; k < h->n_sessions; k++)
        if (h->sessions[k] == session_id) {
            h->sessions[k] = h->sessions[--h->n_sessions];
            break;
        }
    log_debug("session %llu freed%s", (unsigned long long)session_id,
              held ? "" : " (held no cache here)");
    atomic_store(&shared->n_sessions, (uint64_t)h->n_sessions);
}

/* The session a stage error names ("sequence N: ..."), else the batch's only session. */
static uint64_t s_error_session(const char *msg, const wire_forward *f)
{
    const char *p = strstr(msg, "sequence ");
    unsigned long long id;
    if (p && sscanf(p, "sequence %llu", &id) == 1)
        return id;
    for (uint32_t i = 1; i < f->n_rows; i++)
        if (f->rows[i].session_id != f->rows[0].session_id)
            return 0;
    return f->rows[0].session_id;
}

int worker_handle(worker_hops *h, stage *s, const worker_weights *w, const wire_message *m,
                  worker_shared *shared)
{
    char msg[WIRE_MAX_TEXT_BYTES];
    if (m->type != WIRE_FORWARD) {
        atomic_fetch_add(&shared->errors, 1);
        log_warn("'%s' arrived on the forward socket (only forward belongs there): dropped",
                 wire_type_name(m->type));
        return 0;
    }
    const wire_forward *f = &m->forward;
    const worker_config *c = h->cfg;
    const bool is_last = c->last == w->cfg.n_layers;
    if (!h->kv_pos_bytes)
        h->kv_pos_bytes = kv_cache_bytes_per_position((int)(c->last - c->first),
                                                      (int)w->cfg.kv_dim, c->kv_type);
    if (f->hidden_dim != w->cfg.dim) {
        snprintf(msg, sizeof msg, "forward: hidden_dim %u, the model's is %u", f->hidden_dim,
                 w->cfg.dim);
        s_fail(h, f, WIRE_ERR_INVALID, 0, msg, shared);
        return 0;
    }
    if ((c->first == 0) != (f->hidden == NULL)) {
        snprintf(msg, sizeof msg, "forward: worker %s serves layers [%u, %u) and needs %s",
                 c->id, c->first, c->last, c->first == 0 ? "token ids, not hidden states"
                                                          : "hidden states, not token ids");
        s_fail(h, f, WIRE_ERR_INVALID, 0, msg, shared);
        return 0;
    }
    if (f->n_hops == 0 || (!is_last && f->n_hops < 2)) {
        snprintf(msg, sizeof msg, "forward: the route (%u hops) ends before layer %u; it must "
                 "list the next workers and end with the router's results endpoint",
                 f->n_hops, w->cfg.n_layers);
        s_fail(h, f, WIRE_ERR_INVALID, 0, msg, shared);
        return 0;
    }
    const size_t cols = (size_t)stage_out_cols(s);
    if (s_grow(h, f->n_rows, (size_t)f->n_rows * cols) < 0) {
        snprintf(msg, sizeof msg, "forward: out of memory for %u rows", f->n_rows);
        s_fail(h, f, WIRE_ERR_NO_MEMORY, 0, msg, shared);
        return 0;
    }
    uint32_t n_want = 0;
    for (uint32_t i = 0; i < f->n_rows; i++) {
        const wire_row *r = &f->rows[i];
        h->rows[i] = (stage_row){.seq_id = r->session_id,
                                 .pos = r->pos > INT32_MAX ? -1 : (int32_t)r->pos,
                                 .token = r->token, .want_logits = r->want_logits};
        h->next_rows[i] = (wire_row){.session_id = r->session_id, .pos = r->pos, .token = -1,
                                     .want_logits = r->want_logits};
        if (r->want_logits)
            h->logit_rows[n_want++] = (wire_logit_row){.session_id = r->session_id,
                                                       .pos = r->pos};
    }
    llorch_error err;
    int n_out = stage_forward(s, h->rows, (int)f->n_rows, f->hidden, h->out, &err);
    if (n_out < 0) {
        /* The stage changed nothing; the router decides what becomes of the sessions. */
        snprintf(msg, sizeof msg, "worker %s [%u, %u): %s", c->id, c->first, c->last, err.msg);
        s_fail(h, f, worker_stage_error_code(n_out), s_error_session(err.msg, f), msg, shared);
        return 0;
    }
    atomic_fetch_add(&shared->batches, 1);
    s_account(h, s, f, shared);
    wire_message out;
    if (is_last) {
        out = (wire_message){.type = WIRE_LOGITS,
                             .logits = {.batch_id = f->batch_id, .pipeline_id = f->pipeline_id,
                                        .n_vocab = (uint32_t)cols, .n_rows = (uint32_t)n_out,
                                        .rows = h->logit_rows, .logits = h->out}};
    } else {
        out = (wire_message){.type = WIRE_FORWARD,
                             .forward = {.batch_id = f->batch_id, .pipeline_id = f->pipeline_id,
                                         .hidden_dim = f->hidden_dim, .n_rows = f->n_rows,
                                         .rows = h->next_rows, .n_hops = f->n_hops - 1,
                                         .route = f->route + 1, .hidden = h->out}};
    }
    s_push(h, f->route[0], &out, shared);
    return 0;
}
