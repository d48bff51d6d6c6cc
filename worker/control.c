/* control.c - the worker's router link on its own thread: registration, heartbeats both ways,
 * re-registration after a lost router, SESSION_FREE handed to the main thread. */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "proc.h"

/* REGISTER is sent again (on a fresh connection) when no REGISTER_ACK came within this. */
#define CONTROL_REGISTER_RETRY_MS 2000
#define CONTROL_DEFAULT_HEARTBEAT_MS 1000
#define CONTROL_DEFAULT_LIVENESS 3

struct worker_control {
    pthread_t thread;
    void *ctx;
    worker_config cfg;
    char worker_id[WIRE_MAX_ID_BYTES + 1];
    char model_id[WIRE_MAX_ID_BYTES + 1];
    char endpoint[WIRE_MAX_ENDPOINT_BYTES + 1];
    wire_register reg;
    worker_shared *shared;
    atomic_bool stop;
};

/* A fresh DEALER to the router (a reconnect drops whatever an old connection queued). */
static void *s_connect(worker_control *c)
{
    llorch_error err;
    void *sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!sock) {
        log_error("cannot create the router socket: %s", zmq_strerror(errno));
        return NULL;
    }
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (wire_socket_limits(sock, &err) < 0 ||
        (c->cfg.has_curve && c->cfg.router_public[0] &&
         security_client_setup(sock, &c->cfg.keys, c->cfg.router_public, &err) < 0)) {
        log_error("router socket: %s", err.msg);
        zmq_close(sock);
        return NULL;
    }
    if (zmq_connect(sock, c->cfg.router_ep) != 0) {
        log_error("cannot connect to the router at %s: %s", c->cfg.router_ep,
                  zmq_strerror(errno));
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

static void s_send(void *sock, const wire_message *m)
{
    llorch_error err;
    if (sock && wire_send_message(sock, NULL, 0, m, ZMQ_DONTWAIT, &err) < 0 && errno != EAGAIN)
        log_warn("router link: cannot send %s: %s", wire_type_name(m->type), err.msg);
}

static void s_send_stats(worker_control *c, void *sock)
{
    worker_shared *sh = c->shared;
    const wire_stat counters[] = {
        {"batches", (double)atomic_load(&sh->batches)},
        {"sessions", (double)atomic_load(&sh->n_sessions)},
        {"kv_used_bytes", (double)atomic_load(&sh->kv_used_bytes)},
        {"kv_budget_bytes", (double)c->reg.kv_budget_bytes},
        {"errors", (double)atomic_load(&sh->errors)},
        {"layer_first", (double)c->reg.layer_first},
        {"layer_last", (double)c->reg.layer_last},
    };
    wire_message m = {.type = WIRE_STATS,
                      .stats = {.sender_id = c->worker_id,
                                .n_counters = sizeof counters / sizeof counters[0],
                                .counters = counters}};
    s_send(sock, &m);
}

static void *s_run(void *arg)
{
    worker_control *c = arg;
    void *pipe = zmq_socket(c->ctx, ZMQ_PAIR);
    int linger = 0;
    zmq_setsockopt(pipe, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(pipe, WORKER_CONTROL_PIPE) != 0)
        log_error("control pipe: %s", zmq_strerror(errno));
    void *sock = s_connect(c);
    bool registered = false;
    int attempts = 0;
    int64_t last_sent = 0, last_seen = 0, next_beat = 0;
    uint32_t beat_ms = CONTROL_DEFAULT_HEARTBEAT_MS, liveness = CONTROL_DEFAULT_LIVENESS;
    uint64_t seq = 0;
    const wire_message reg = {.type = WIRE_REGISTER, .reg = c->reg};

    while (!atomic_load(&c->stop)) {
        const int64_t now = proc_now_ms();
        if (!registered && now - last_sent >= CONTROL_REGISTER_RETRY_MS) {
            if (attempts > 0) {
                if (attempts == 1 || attempts % 15 == 0)
                    log_warn("the router at %s does not answer; registering again",
                             c->cfg.router_ep);
                if (sock)
                    zmq_close(sock);
                sock = s_connect(c);
            }
            s_send(sock, &reg);
            attempts++;
            last_sent = now;
        }
        if (registered && now >= next_beat) {
            worker_shared *sh = c->shared;
            wire_message hb = {.type = WIRE_HEARTBEAT,
                               .heartbeat = {.sender_id = c->worker_id, .seq = ++seq,
                                             .n_sessions = (uint32_t)atomic_load(&sh->n_sessions),
                                             .kv_used_bytes = atomic_load(&sh->kv_used_bytes),
                                             .batches = atomic_load(&sh->batches)}};
            s_send(sock, &hb);
            next_beat = now + beat_ms;
        }
        if (registered && now - last_seen > (int64_t)beat_ms * liveness) {
            log_warn("lost the router at %s (silent for %lld ms); registering again",
                     c->cfg.router_ep, (long long)(now - last_seen));
            registered = false;
            attempts = 1;
            last_sent = 0;
            continue;
        }
        zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
        if (!sock || zmq_poll(&item, 1, 100) <= 0)
            continue;
        wire_msg raw = {0};
        wire_message m = {0};
        llorch_error err;
        int rc = wire_recv_message(sock, &raw, &m, ZMQ_DONTWAIT, &err);
        if (rc < 0)
            continue;
        if (rc > 0) {
            log_warn("unreadable message from the router: %s", err.msg);
            wire_msg_free(&raw);
            continue;
        }
        last_seen = proc_now_ms();
        switch (m.type) {
        case WIRE_REGISTER_ACK:
            beat_ms = m.reg_ack.heartbeat_ms;
            liveness = m.reg_ack.liveness;
            if (!registered)
                log_info("registered with the router at %s as %s (heartbeat %u ms, "
                         "liveness %u)", c->cfg.router_ep, c->worker_id, beat_ms, liveness);
            registered = true;
            attempts = 0;
            next_beat = last_seen + beat_ms;
            break;
        case WIRE_HEARTBEAT:
            break;
        case WIRE_SESSION_FREE: {
            uint64_t id = m.session_free.session_id;
            if (zmq_send(pipe, &id, sizeof id, 0) < 0)
                log_warn("control pipe: %s", zmq_strerror(errno));
            break;
        }
        case WIRE_STATS_REQ:
            s_send_stats(c, sock);
            break;
        case WIRE_ERROR:
            log_warn("the router says: %s (%s)", m.error.message, wire_errc_name(m.error.code));
            /* A router that no longer knows this worker (it restarted) says not_found. */
            if (registered && m.error.code == WIRE_ERR_NOT_FOUND) {
                registered = false;
                attempts = 0;
                last_sent = 0;
            }
            break;
        default:
            log_warn("unexpected '%s' from the router, ignored", wire_type_name(m.type));
        }
        wire_message_free(&m);
        wire_msg_free(&raw);
    }
    if (sock)
        zmq_close(sock);
    zmq_close(pipe);
    return NULL;
}

worker_control *worker_control_start(void *ctx, const worker_config *cfg,
                                     const wire_register *reg, worker_shared *shared,
                                     llorch_error *err)
{
    worker_control *c = calloc(1, sizeof *c);
    if (!c) {
        llorch_error_set(err, "out of memory");
        return NULL;
    }
    c->ctx = ctx;
    c->cfg = *cfg;
    c->shared = shared;
    snprintf(c->worker_id, sizeof c->worker_id, "%s", reg->worker_id);
    snprintf(c->model_id, sizeof c->model_id, "%s", reg->model_id);
    snprintf(c->endpoint, sizeof c->endpoint, "%s", reg->endpoint);
    c->reg = *reg;
    c->reg.worker_id = c->worker_id;
    c->reg.model_id = c->model_id;
    c->reg.endpoint = c->endpoint;
    atomic_init(&c->stop, false);
    int rc = pthread_create(&c->thread, NULL, s_run, c);
    if (rc != 0) {
        llorch_error_set(err, "cannot start the control thread: %s", strerror(rc));
        free(c);
        return NULL;
    }
    return c;
}

void worker_control_stop(worker_control **pc)
{
    if (!pc || !*pc)
        return;
    atomic_store(&(*pc)->stop, true);
    pthread_join((*pc)->thread, NULL);
    free(*pc);
    *pc = NULL;
}
