/* router_workers.c - the manifest, the worker registry with heartbeats, and pipeline assembly. */
#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "log.h"

int64_t router_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int router_curve_client(router *r, void *socket, const char *endpoint, llorch_error *err)
{
    if (!r->opts.curve_secret || !r->server_public[0] || strncmp(endpoint, "tcp://", 6) != 0)
        return 0;
    return security_client_setup(socket, &r->keys, r->server_public, err);
}

/* Takes what the router needs from a MANIFEST: ids, sizes and the tokenizer. */
static int s_take_manifest(router *r, const wire_manifest *mf, llorch_error *err)
{
    const wire_model_config *c = &mf->config;
    const wire_tokenizer *t = &mf->tokenizer;
    if (strcmp(t->model, "llama") != 0)
        return llorch_error_set(err, "the manifest's tokenizer is '%s'; llorch serves 'llama' "
                                     "(SentencePiece) vocabularies", t->model);
    if (t->n_tokens != c->n_vocab)
        return llorch_error_set(err, "the manifest's tokenizer has %u tokens, its config %u",
                                t->n_tokens, c->n_vocab);
    tokenizer_config tc = {
        .n_vocab = t->n_tokens, .pieces = t->pieces, .piece_lens = t->piece_lens,
        .scores = t->scores, .types = t->types, .bos_id = t->bos_id, .eos_id = t->eos_id,
        .unk_id = t->unk_id, .add_bos = t->add_bos, .add_eos = t->add_eos,
        .add_space_prefix = t->add_space_prefix,
    };
    r->tok = tokenizer_new(&tc, err);
    if (!r->tok)
        return llorch_error_prefix(err, "the manifest's tokenizer");
    snprintf(r->model_id, sizeof r->model_id, "%s", mf->model_id);
    r->n_vocab = c->n_vocab;
    r->n_embd = c->n_embd;
    r->n_layers = c->n_layers;
    r->n_ctx = c->n_ctx_train ? c->n_ctx_train : 2048;
    return 0;
}

int router_fetch_manifest(router *r, volatile sig_atomic_t *stop, llorch_error *err)
{
    const char *ep = r->opts.loader_endpoint;
    r->loader = zmq_socket(r->ctx, ZMQ_DEALER);
    int linger = 0;
    if (!r->loader || zmq_setsockopt(r->loader, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        wire_socket_limits(r->loader, err) != 0 || router_curve_client(r, r->loader, ep, err) != 0)
        return llorch_error_prefix(err, "loader socket");
    if (zmq_connect(r->loader, ep) != 0)
        return llorch_error_set(err, "cannot connect to the loader at %s: %s", ep,
                                zmq_strerror(errno));
    wire_message req = {.type = WIRE_MANIFEST_REQ};
    req.manifest_req.worker_id = "router";
    const int64_t start = router_now_ms();
    int64_t next_send = 0, next_log = start + 5000;
    while (!*stop) {
        int64_t now = router_now_ms();
        if (now >= next_send) {
            /* Asked again now and then: a loader that restarted lost the first request. */
            if (wire_send_message(r->loader, NULL, 0, &req, ZMQ_DONTWAIT, err) != 0 &&
                errno != EAGAIN)
                return -1;
            next_send = now + 5000;
        }
        if (now >= next_log) {
            log_info("waiting for the loader at %s (%.0f s)", ep, (double)(now - start) / 1e3);
            next_log = now + 10000;
        }
        zmq_pollitem_t item = {.socket = r->loader, .events = ZMQ_POLLIN};
        int n = zmq_poll(&item, 1, 200);
        if (n < 0 && errno != EINTR)
            return llorch_error_set(err, "poll: %s", zmq_strerror(errno));
        if (n <= 0)
            continue;
        wire_msg raw = {0};
        wire_message m;
        int rc = wire_recv_message(r->loader, &raw, &m, ZMQ_DONTWAIT, err);
        if (rc < 0)
            continue;
        if (rc != WIRE_OK) {
            wire_msg_free(&raw);
            return llorch_error_prefix(err, "the loader's reply");
        }
        if (m.type == WIRE_ERROR) {
            llorch_error_set(err, "the loader refused the manifest request: %s (%s)",
                             m.error.message, wire_errc_name(m.error.code));
            rc = -1;
        } else if (m.type != WIRE_MANIFEST) {
            llorch_error_set(err, "the loader answered %s to a manifest request",
                             wire_type_name(m.type));
            rc = -1;
        } else {
            rc = s_take_manifest(r, &m.manifest, err);
        }
        wire_message_free(&m);
        wire_msg_free(&raw);
        if (rc == 0)
            log_info("model %s: %u layers, n_embd %u, vocab %u, context %u", r->model_id,
                     r->n_layers, r->n_embd, r->n_vocab, r->n_ctx);
        return rc;
    }
    return llorch_error_set(err, "stopped while waiting for the loader");
}

void *router_push_socket(router *r, const char *endpoint, llorch_error *err)
{
    for (int i = 0; i < r->n_push; i++)
        if (!strcmp(r->push[i].endpoint, endpoint))
            return r->push[i].socket;
    if (r->n_push == ROUTER_MAX_PUSH) {
        llorch_error_set(err, "more than %d worker endpoints", ROUTER_MAX_PUSH);
        return NULL;
    }
    void *s = zmq_socket(r->ctx, ZMQ_PUSH);
    int linger = 0;
    if (!s || zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        router_curve_client(r, s, endpoint, err) != 0 || zmq_connect(s, endpoint) != 0) {
        llorch_error_set(err, "cannot connect to worker %s: %s", endpoint, zmq_strerror(errno));
        if (s)
            zmq_close(s);
        return NULL;
    }
    snprintf(r->push[r->n_push].endpoint, sizeof r->push[r->n_push].endpoint, "%s", endpoint);
    r->push[r->n_push++].socket = s;
    return s;
}

int router_workers_alive(const router *r)
{
    int n = 0;
    for (int i = 0; i < ROUTER_MAX_WORKERS; i++)
        n += r->workers[i].used && r->workers[i].alive;
    return n;
}

int router_pipelines_ready(const router *r)
{
    int n = 0;
    for (int i = 0; i < ROUTER_MAX_PIPELINES; i++)
        n += r->pipelines[i].used;
    return n;
}

int router_batch_parts_cap(const router_opts *o)
{
    return o->max_batch_rows < o->max_sessions ? o->max_batch_rows : o->max_sessions;
}

int router_max_inflight(const router *r, int p)
{
    int n = r->opts.max_inflight ? r->opts.max_inflight : r->pipelines[p].n_workers;
    return n < 1 ? 1 : n > ROUTER_MAX_INFLIGHT ? ROUTER_MAX_INFLIGHT : n;
}

/* Depth-first search for a chain of spare live workers from layer to n_layers.
 * chain[depth..] receives worker slots; returns the chain's length or 0. */
static int s_chain(router *r, uint32_t layer, int *chain, int depth)
{
    if (layer == r->n_layers)
        return depth;
    if (depth == WIRE_MAX_HOPS)
        return 0;
    for (int i = 0; i < ROUTER_MAX_WORKERS; i++) {
        router_worker *w = &r->workers[i];
        if (!w->used || !w->alive || w->pipeline != -1 || w->layer_first != layer)
            continue;
        bool taken = false;
        for (int d = 0; d < depth; d++)
            taken |= chain[d] == i;
        if (taken)
            continue;
        chain[depth] = i;
        int n = s_chain(r, w->layer_last, chain, depth + 1);
        if (n)
            return n;
    }
    return 0;
}

/* Builds pipelines from spare workers until no more chain covers every layer. */
static void s_assemble(router *r)
{
    for (;;) {
        int slot = -1;
        for (int i = 0; i < ROUTER_MAX_PIPELINES && slot < 0; i++)
            if (!r->pipelines[i].used)
                slot = i;
        if (slot < 0)
            return;
        int chain[WIRE_MAX_HOPS];
        int n = s_chain(r, 0, chain, 0);
        if (!n)
            return;
        llorch_error err = {0};
        void *push = router_push_socket(r, r->workers[chain[0]].endpoint, &err);
        if (!push) {
            log_error("pipeline: %s", err.msg);
            return;
        }
        router_pipeline *p = &r->pipelines[slot];
        router_batch_part *parts[ROUTER_MAX_INFLIGHT]; /* allocated once per slot, kept */
        for (int b = 0; b < ROUTER_MAX_INFLIGHT; b++)
            parts[b] = p->batches[b].parts;
        memset(p, 0, sizeof *p);
        for (int b = 0; b < ROUTER_MAX_INFLIGHT; b++)
            p->batches[b].parts = parts[b];
        p->used = true;
        p->id = ++r->next_pipeline_id;
        p->n_workers = n;
        p->push = push;
        char desc[1024];
        size_t len = 0;
        desc[0] = '\0';
        for (int k = 0; k < n; k++) {
            p->workers[k] = chain[k];
            r->workers[chain[k]].pipeline = slot;
            len += (size_t)snprintf(desc + len, len < sizeof desc ? sizeof desc - len : 0,
                                    "%s%s[%u:%u]", k ? " -> " : "", r->workers[chain[k]].id,
                                    r->workers[chain[k]].layer_first,
                                    r->workers[chain[k]].layer_last);
            if (len >= sizeof desc)
                len = sizeof desc - 1;
        }
        const int inflight = router_max_inflight(r, slot);
        log_info("pipeline %u ready: %s (up to %d batch%s in flight)", p->id, desc, inflight,
                 inflight > 1 ? "es" : "");
    }
}

/* Takes worker w out of service (dead or replaced) with its pipeline. */
static void s_worker_lost(router *r, int w, const char *why)
{
    router_worker *wk = &r->workers[w];
    log_warn("worker %s (%s, layers %u:%u) %s", wk->id, wk->endpoint, wk->layer_first,
             wk->layer_last, why);
    int p = wk->pipeline;
    wk->alive = false;
    wk->used = false;
    wk->pipeline = -1;
    if (p >= 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "worker %s (layers %u:%u) %s", wk->id, wk->layer_first,
                 wk->layer_last, why);
        router_pipeline_lost(r, p, msg);
        for (int i = 0; i < ROUTER_MAX_WORKERS; i++)
            if (r->workers[i].pipeline == p)
                r->workers[i].pipeline = -1;
    }
    s_assemble(r);
}

static int s_find_worker(router *r, const char *id)
{
    for (int i = 0; i < ROUTER_MAX_WORKERS; i++)
        if (r->workers[i].used && !strcmp(r->workers[i].id, id))
            return i;
    return -1;
}

static int s_find_identity(router *r, const wire_msg *raw)
{
    for (int i = 0; i < ROUTER_MAX_WORKERS; i++) {
        router_worker *w = &r->workers[i];
        if (w->used && w->identity_bytes == raw->identity_bytes &&
            !memcmp(w->identity, raw->identity, raw->identity_bytes))
            return i;
    }
    return -1;
}

static void s_register(router *r, const wire_msg *raw, const wire_register *g)
{
    char why[512];
    if (strcmp(g->model_id, r->model_id) != 0) {
        snprintf(why, sizeof why, "worker %s serves model %s but this router serves %s: "
                 "point the worker at this router's loader", g->worker_id, g->model_id,
                 r->model_id);
    } else if (g->n_layers != r->n_layers || g->layer_last > r->n_layers) {
        snprintf(why, sizeof why, "worker %s has layers %u:%u of %u, the model has %u",
                 g->worker_id, g->layer_first, g->layer_last, g->n_layers, r->n_layers);
    } else {
        why[0] = '\0';
    }
    if (why[0]) {
        log_warn("registration refused: %s", why);
        wire_reply_error(r->control, raw, WIRE_ERR_INVALID, why, 0, 0, 0, NULL);
        return;
    }
    int w = s_find_worker(r, g->worker_id);
    if (w >= 0) {
        router_worker *old = &r->workers[w];
        bool same = !strcmp(old->endpoint, g->endpoint) && old->layer_first == g->layer_first &&
                    old->layer_last == g->layer_last;
        if (!same || !old->alive) {
            s_worker_lost(r, w, "registered again with another shape");
            w = -1;
        }
    }
    if (w < 0) {
        for (int i = 0; i < ROUTER_MAX_WORKERS && w < 0; i++)
            if (!r->workers[i].used)
                w = i;
        if (w < 0) {
            wire_reply_error(r->control, raw, WIRE_ERR_BUSY, "the router holds its maximum of "
                             "workers", 0, 0, 0, NULL);
            return;
        }
        router_worker *n = &r->workers[w];
        memset(n, 0, sizeof *n);
        n->used = true;
        n->pipeline = -1;
        snprintf(n->id, sizeof n->id, "%s", g->worker_id);
        snprintf(n->endpoint, sizeof n->endpoint, "%s", g->endpoint);
        n->layer_first = g->layer_first;
        n->layer_last = g->layer_last;
        n->threads = g->threads;
        n->kv_budget_bytes = g->kv_budget_bytes;
        log_info("worker %s registered: layers %u:%u at %s, %u threads", n->id, n->layer_first,
                 n->layer_last, n->endpoint, n->threads);
    }
    router_worker *wk = &r->workers[w];
    wk->alive = true;
    wk->last_seen_ms = router_now_ms();
    memcpy(wk->identity, raw->identity, raw->identity_bytes);
    wk->identity_bytes = raw->identity_bytes;
    wire_message ack = {.type = WIRE_REGISTER_ACK};
    ack.reg_ack = (wire_register_ack){.worker_id = wk->id,
                                      .heartbeat_ms = (uint32_t)r->opts.heartbeat_ms,
                                      .liveness = (uint32_t)r->opts.liveness};
    llorch_error err = {0};
    if (wire_send_message(r->control, wk->identity, wk->identity_bytes, &ack, ZMQ_DONTWAIT,
                          &err) != 0)
        log_warn("register_ack to %s: %s", wk->id, err.msg);
    s_assemble(r);
}

void router_control_message(router *r, const wire_msg *raw, const wire_message *m)
{
    int w = s_find_identity(r, raw);
    if (w >= 0)
        r->workers[w].last_seen_ms = router_now_ms();
    switch (m->type) {
    case WIRE_REGISTER:
        s_register(r, raw, &m->reg);
        break;
    case WIRE_HEARTBEAT:
        if (w < 0)
            log_debug("heartbeat from unregistered %s: ignored (it will register again)",
                      m->heartbeat.sender_id);
        break;
    case WIRE_ERROR:
        log_warn("worker %s: %s (%s)", w >= 0 ? r->workers[w].id : "?", m->error.message,
                 wire_errc_name(m->error.code));
        break;
    case WIRE_STATS_REQ:
        router_stats_reply(r, r->control, raw);
        break;
    default: {
        char msg[128];
        snprintf(msg, sizeof msg, "the router's control socket takes register and heartbeat, "
                 "not %s", wire_type_name(m->type));
        wire_reply_error(r->control, raw, WIRE_ERR_UNSUPPORTED, msg, 0, 0, 0, NULL);
    }
    }
}

void router_free_session_on_workers(router *r, int p, uint64_t session_id)
{
    router_pipeline *pl = &r->pipelines[p];
    pl->last_free_ms = router_now_ms();
    wire_message m = {.type = WIRE_SESSION_FREE};
    m.session_free.session_id = session_id;
    for (int k = 0; k < pl->n_workers; k++) {
        router_worker *w = &r->workers[pl->workers[k]];
        if (w->used && w->alive)
            wire_send_message(r->control, w->identity, w->identity_bytes, &m, ZMQ_DONTWAIT,
                              NULL);
    }
}

int router_workers_tick(router *r)
{
    const int64_t now = router_now_ms();
    const int64_t dead_after = (int64_t)r->opts.heartbeat_ms * r->opts.liveness;
    for (int i = 0; i < ROUTER_MAX_WORKERS; i++) {
        router_worker *w = &r->workers[i];
        if (w->used && w->alive && now - w->last_seen_ms > dead_after) {
            char why[128];
            snprintf(why, sizeof why, "is silent for %lld ms: declared dead",
                     (long long)(now - w->last_seen_ms));
            s_worker_lost(r, i, why);
        }
    }
    if (now >= r->next_heartbeat_ms) {
        wire_message hb = {.type = WIRE_HEARTBEAT};
        hb.heartbeat = (wire_heartbeat){.sender_id = "router", .seq = ++r->heartbeat_seq,
                                        .n_sessions = (uint32_t)r->n_active,
                                        .queue_depth = (uint32_t)(r->n_sessions - r->n_active),
                                        .batches = r->stats.batches};
        for (int i = 0; i < ROUTER_MAX_WORKERS; i++) {
            router_worker *w = &r->workers[i];
            if (w->used && w->alive)
                wire_send_message(r->control, w->identity, w->identity_bytes, &hb, ZMQ_DONTWAIT,
                                  NULL);
        }
        r->next_heartbeat_ms = now + r->opts.heartbeat_ms;
    }
    int64_t wait = r->next_heartbeat_ms - now;
    return wait < 1 ? 1 : (int)wait;
}
