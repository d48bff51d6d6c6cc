/* llorch.c - libllorch: SUBMIT/TOKEN/DONE with a router over a ZeroMQ DEALER socket. */
#include "llorch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "security.h"
#include "wire.h"

/* ZMTP heartbeats on the connection to the router: a PING every HEARTBEAT_IVL_MS, the
 * connection dropped (and the request in flight failed) when nothing comes back within
 * HEARTBEAT_TIMEOUT_MS, which catches a router host that vanished without closing it. */
#define HEARTBEAT_IVL_MS 2000
#define HEARTBEAT_TIMEOUT_MS 10000

/* The connection events the client watches. */
#define CLIENT_EVENTS (ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | \
                       ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | \
                       ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)

struct llorch_client {
    void *ctx;
    void *socket;          /* DEALER connected to the router's client endpoint */
    void *monitor;         /* PAIR receiving socket's CLIENT_EVENTS (NULL: not watched) */
    bool handshaken;       /* the current connection completed its ZMTP handshake */
    int cancel_pipe[2];    /* llorch_cancel writes a byte; the request loop polls [0] */
    uint64_t next_request_id;
    char endpoint[WIRE_MAX_ENDPOINT_BYTES + 1];
};

static void s_err(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_err(char *buf, size_t size, const char *fmt, ...)
{
    if (!buf || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void llorch_params_init(llorch_params *p)
{
    wire_sampling d = wire_sampling_default();
    *p = (llorch_params){
        .temperature = d.temperature, .top_k = d.top_k, .top_p = d.top_p, .min_p = d.min_p,
        .penalty_last_n = d.penalty_last_n, .repeat_penalty = d.repeat_penalty,
        .frequency_penalty = d.frequency_penalty, .presence_penalty = d.presence_penalty,
        .seed = d.seed, .max_tokens = WIRE_DEFAULT_MAX_TOKENS,
    };
}

static int s_setup_curve(void *socket, const llorch_curve *curve, char *errbuf, size_t size)
{
    llorch_error err = {0};
    security_keypair kp;
    if (!curve->client_key_file || !curve->server_public_key) {
        s_err(errbuf, size, "CURVE needs both the client key file and the router's public key");
        return -1;
    }
    if (security_keypair_load(curve->client_key_file, &kp, &err) != 0) {
        s_err(errbuf, size, "%s", err.msg);
        return -1;
    }
    char server[SECURITY_Z85_KEY_LEN + 1];
    if (security_public_key_arg(curve->server_public_key, server, &err) != 0) {
        s_err(errbuf, size, "the router's public key: %s", err.msg);
        return -1;
    }
    if (security_client_setup(socket, &kp, server, &err) != 0) {
        s_err(errbuf, size, "%s", err.msg);
        return -1;
    }
    return 0;
}

llorch_client *llorch_connect(const char *endpoint, const llorch_curve *curve, char *errbuf,
                              size_t errbuf_size)
{
    if (!endpoint || !*endpoint || strlen(endpoint) > WIRE_MAX_ENDPOINT_BYTES) {
        s_err(errbuf, errbuf_size, "give the router's client endpoint (ipc://... or "
              "tcp://host:port, at most %d bytes)", WIRE_MAX_ENDPOINT_BYTES);
        return NULL;
    }
    llorch_client *c = calloc(1, sizeof *c);
    if (!c) {
        s_err(errbuf, errbuf_size, "out of memory");
        return NULL;
    }
    c->cancel_pipe[0] = c->cancel_pipe[1] = -1;
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    llorch_error err = {0};
    int linger = 0;
    if (pipe2(c->cancel_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        s_err(errbuf, errbuf_size, "pipe: %s", strerror(errno));
        goto fail;
    }
    c->ctx = zmq_ctx_new();
    c->socket = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
    if (!c->socket) {
        s_err(errbuf, errbuf_size, "ZeroMQ socket: %s", zmq_strerror(errno));
        goto fail;
    }
    zmq_setsockopt(c->socket, ZMQ_LINGER, &linger, sizeof linger);
    int ivl = HEARTBEAT_IVL_MS, hb_timeout = HEARTBEAT_TIMEOUT_MS;
    zmq_setsockopt(c->socket, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(c->socket, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout);
    c->monitor = wire_monitor_open(c->ctx, c->socket, "llorch-client", CLIENT_EVENTS);
    if (wire_socket_limits(c->socket, &err) != 0) {
        s_err(errbuf, errbuf_size, "%s", err.msg);
        goto fail;
    }
    if (curve && s_setup_curve(c->socket, curve, errbuf, errbuf_size) != 0)
        goto fail;
    if (zmq_connect(c->socket, endpoint) != 0) {
        s_err(errbuf, errbuf_size, "cannot connect to %s: %s", endpoint, zmq_strerror(errno));
        goto fail;
    }
    return c;
fail:
    llorch_close(&c);
    return NULL;
}

void llorch_close(llorch_client **pc)
{
    if (!pc || !*pc)
        return;
    llorch_client *c = *pc;
    wire_monitor_close(c->socket, c->monitor);
    if (c->socket)
        zmq_close(c->socket);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    for (int i = 0; i < 2; i++)
        if (c->cancel_pipe[i] >= 0)
            close(c->cancel_pipe[i]);
    free(c);
    *pc = NULL;
}

int llorch_cancel(llorch_client *c)
{
    if (!c)
        return -1;
    ssize_t n = write(c->cancel_pipe[1], "c", 1);
    (void)n; /* a full pipe already holds a cancel */
    return 0;
}

static void s_drain_pipe(llorch_client *c)
{
    char buf[64];
    while (read(c->cancel_pipe[0], buf, sizeof buf) > 0) {
    }
}

static void s_result_error(llorch_result *res, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_result_error(llorch_result *res, int code, const char *fmt, ...)
{
    res->error_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->error, sizeof res->error, fmt, ap);
    va_end(ap);
    snprintf(res->stop_reason, sizeof res->stop_reason, "error");
}

static int s_send_cancel(llorch_client *c, uint64_t request_id)
{
    wire_message m = {.type = WIRE_CANCEL};
    m.cancel.request_id = request_id;
    return wire_send_message(c->socket, NULL, 0, &m, 0, NULL);
}

/* Hands a TOKEN to the callback; returns its verdict. */
static int s_deliver(const wire_token *t, llorch_token_fn on_token, void *user)
{
    if (!on_token)
        return 0;
    char text[WIRE_MAX_TOKEN_BYTES + 1];
    size_t len = t->piece_bytes < WIRE_MAX_TOKEN_BYTES ? t->piece_bytes : WIRE_MAX_TOKEN_BYTES;
    memcpy(text, t->piece, len);
    text[len] = '\0';
    int32_t ids[WIRE_MAX_TOP_PROBS];
    float probs[WIRE_MAX_TOP_PROBS];
    unsigned n_top = t->n_top < WIRE_MAX_TOP_PROBS ? t->n_top : WIRE_MAX_TOP_PROBS;
    for (unsigned i = 0; i < n_top; i++) {
        ids[i] = t->top[i].token;
        probs[i] = t->top[i].prob;
    }
    llorch_token tok = {.index = t->index, .id = t->token, .text = text, .text_len = len,
                        .n_top = n_top, .top_ids = ids, .top_probs = probs};
    return on_token(user, &tok);
}

/* Reads the connection events waiting on c's monitor. Returns 0, or -1 with res set when
 * one of them ends the request in flight: a connection lost (the router stopped, the
 * network failed, or heartbeats went unanswered), or a handshake refused. The DEALER
 * connects again by itself, and the next request goes out on the new connection; the
 * router keeps no request of a lost connection. */
static int s_watch(llorch_client *c, llorch_result *res)
{
    for (int event; (event = wire_monitor_next(c->monitor));) {
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            c->handshaken = true;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            s_result_error(res, -1, "the router at %s refused this client's CURVE key (is its "
                           "public key in the router's --allow file?)", c->endpoint);
            return -1;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
            s_result_error(res, -1, "the handshake with the router at %s failed: with CURVE, "
                           "check the router's public key; else is it a llorch router?",
                           c->endpoint);
            return -1;
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
            const bool was = c->handshaken;
            c->handshaken = false;
            if (was)
                s_result_error(res, -1, "lost the connection to the router at %s while the "
                               "request ran (the router stopped, or the network or its "
                               "heartbeats failed): the request is gone", c->endpoint);
            else
                s_result_error(res, -1, "the router at %s closed the connection before its "
                               "handshake ended: with CURVE, check the router's public key "
                               "and that this client's key is in its --allow file", c->endpoint);
            return -1;
        }
    }
    return 0;
}

/* Reads the events waiting from before a request: they do not end it. */
static void s_forget_events(llorch_client *c)
{
    llorch_result before;
    while (s_watch(c, &before) != 0) {
    }
}

/* Sends the SUBMIT in m and runs the request to its DONE. */
static int s_run(llorch_client *c, wire_message *m, const llorch_params *p,
                 llorch_token_fn on_token, void *user, llorch_result *res)
{
    const double t0 = s_now_ms();
    const uint64_t request_id = m->submit.request_id;
    llorch_error err = {0};
    s_drain_pipe(c);
    s_forget_events(c);
    if (wire_send_message(c->socket, NULL, 0, m, 0, &err) != 0) {
        s_result_error(res, -1, "cannot send the request: %s", err.msg);
        return -1;
    }
    bool cancel_sent = false, done = false;
    while (!done) {
        zmq_pollitem_t items[] = {
            {.socket = c->socket, .events = ZMQ_POLLIN},
            {.fd = c->cancel_pipe[0], .events = ZMQ_POLLIN},
            {.socket = c->monitor, .events = ZMQ_POLLIN},
        };
        int n = zmq_poll(items, c->monitor ? 3 : 2, p->timeout_ms > 0 ? p->timeout_ms : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            s_result_error(res, -1, "poll: %s", zmq_strerror(errno));
            return -1;
        }
        if (n == 0) {
            s_send_cancel(c, request_id);
            s_result_error(res, -1, "no answer from the router at %s for %d ms: is it running "
                           "(llorch up prints its endpoint)?", c->endpoint, p->timeout_ms);
            return -1;
        }
        if (items[1].revents & ZMQ_POLLIN) {
            s_drain_pipe(c);
            if (!cancel_sent)
                cancel_sent = s_send_cancel(c, request_id) == 0;
        }
        /* Tokens already here come first; a lost connection ends the request after them. */
        if (!(items[0].revents & ZMQ_POLLIN)) {
            if ((items[2].revents & ZMQ_POLLIN) && s_watch(c, res) != 0)
                return -1;
            continue;
        }
        wire_msg raw = {0};
        wire_message r;
        int rc = wire_recv_message(c->socket, &raw, &r, ZMQ_DONTWAIT, &err);
        if (rc < 0)
            continue;
        if (rc != WIRE_OK) {
            wire_msg_free(&raw);
            s_send_cancel(c, request_id);
            s_result_error(res, rc, "the router sent a message this client cannot read (%s): "
                           "run the same llorch release on both sides", err.msg);
            return -1;
        }
        if (r.type == WIRE_TOKEN && r.token.request_id == request_id) {
            if (!cancel_sent && s_deliver(&r.token, on_token, user) != 0)
                cancel_sent = s_send_cancel(c, request_id) == 0;
        } else if (r.type == WIRE_DONE && r.done.request_id == request_id) {
            snprintf(res->stop_reason, sizeof res->stop_reason, "%s",
                     wire_stop_reason_name((int)r.done.stop_reason));
            res->n_prompt_tokens = r.done.n_prompt_tokens;
            res->n_generated_tokens = r.done.n_generated_tokens;
            res->queue_ms = r.done.queue_ms;
            res->prompt_ms = r.done.prompt_ms;
            res->generate_ms = r.done.generate_ms;
            done = true;
        } else if (r.type == WIRE_ERROR && r.error.request_id == request_id) {
            res->error_code = (int)r.error.code;
            snprintf(res->error, sizeof res->error, "%s", r.error.message);
        } else if (r.type == WIRE_ERROR && r.error.request_id == 0) {
            /* Not about any request: the router could not read ours. Nothing more comes. */
            s_result_error(res, (int)r.error.code, "the router refused the request: %s",
                           r.error.message);
            done = true;
        }
        /* Anything else belongs to an earlier request (e.g. after a timeout): dropped. */
        wire_message_free(&r);
        wire_msg_free(&raw);
    }
    res->total_ms = s_now_ms() - t0;
    if (!strcmp(res->stop_reason, "error")) {
        if (!res->error[0])
            s_result_error(res, res->error_code ? res->error_code : -1, "the request failed");
        return -1;
    }
    return 0;
}

static int s_prepare(llorch_client *c, const llorch_params *p, wire_message *m,
                     llorch_result *res)
{
    memset(res, 0, sizeof *res);
    if (!c || !p) {
        s_result_error(res, -1, "llorch_generate needs a client and parameters");
        return -1;
    }
    *m = (wire_message){.type = WIRE_SUBMIT};
    wire_submit *q = &m->submit;
    q->request_id = ++c->next_request_id;
    q->sampling = (wire_sampling){
        .temperature = p->temperature, .top_k = p->top_k, .top_p = p->top_p, .min_p = p->min_p,
        .penalty_last_n = p->penalty_last_n, .repeat_penalty = p->repeat_penalty,
        .frequency_penalty = p->frequency_penalty, .presence_penalty = p->presence_penalty,
        .seed = p->seed};
    q->max_tokens = p->max_tokens;
    q->ignore_eos = p->ignore_eos != 0;
    q->top_n_probs = p->top_n_probs;
    q->n_stop = p->n_stop;
    q->stop = p->stop;
    return 0;
}

static int s_check(const wire_message *m, llorch_result *res)
{
    llorch_error err = {0};
    if (wire_validate(m, &err) != 0) {
        s_result_error(res, -1, "invalid request: %s", err.msg);
        return -1;
    }
    return 0;
}

int llorch_generate(llorch_client *c, const char *prompt, const llorch_params *p,
                    llorch_token_fn on_token, void *user, llorch_result *result)
{
    wire_message m;
    if (s_prepare(c, p, &m, result) != 0)
        return -1;
    m.submit.prompt = prompt ? prompt : "";
    if (s_check(&m, result) != 0)
        return -1;
    return s_run(c, &m, p, on_token, user, result);
}

int llorch_generate_tokens(llorch_client *c, const int32_t *ids, size_t n_ids,
                           const llorch_params *p, llorch_token_fn on_token, void *user,
                           llorch_result *result)
{
    wire_message m;
    if (s_prepare(c, p, &m, result) != 0)
        return -1;
    if (!ids || n_ids == 0 || n_ids > WIRE_MAX_PROMPT_TOKENS) {
        s_result_error(result, -1, "give 1..%u prompt token ids", WIRE_MAX_PROMPT_TOKENS);
        return -1;
    }
    m.submit.n_tokens = (uint32_t)n_ids;
    m.submit.tokens = ids;
    if (s_check(&m, result) != 0)
        return -1;
    return s_run(c, &m, p, on_token, user, result);
}

int llorch_stats(llorch_client *c, llorch_stat *stats, size_t cap, size_t *n, int timeout_ms,
                 char *errbuf, size_t errbuf_size)
{
    if (n)
        *n = 0;
    if (!c) {
        s_err(errbuf, errbuf_size, "llorch_stats needs a client");
        return -1;
    }
    if (timeout_ms <= 0)
        timeout_ms = 5000;
    llorch_error err = {0};
    wire_message req = {.type = WIRE_STATS_REQ};
    s_forget_events(c);
    if (wire_send_message(c->socket, NULL, 0, &req, 0, &err) != 0) {
        s_err(errbuf, errbuf_size, "cannot send to the router: %s", err.msg);
        return -1;
    }
    const double deadline = s_now_ms() + timeout_ms;
    for (;;) {
        double left = deadline - s_now_ms();
        zmq_pollitem_t items[] = {{.socket = c->socket, .events = ZMQ_POLLIN},
                                  {.socket = c->monitor, .events = ZMQ_POLLIN}};
        int k = left > 0 ? zmq_poll(items, c->monitor ? 2 : 1, (long)left) : 0;
        if (k < 0 && errno == EINTR)
            continue;
        if (k > 0 && !(items[0].revents & ZMQ_POLLIN)) {
            llorch_result res;
            if (s_watch(c, &res) != 0) {
                s_err(errbuf, errbuf_size, "%s", res.error);
                return -1;
            }
            continue;
        }
        if (k <= 0) {
            s_err(errbuf, errbuf_size, "no answer from the router at %s within %d ms: is it "
                  "running (llorch up prints its endpoint)?", c->endpoint, timeout_ms);
            return -1;
        }
        wire_msg raw = {0};
        wire_message r;
        int rc = wire_recv_message(c->socket, &raw, &r, ZMQ_DONTWAIT, &err);
        if (rc < 0)
            continue;
        if (rc != WIRE_OK) {
            wire_msg_free(&raw);
            continue;
        }
        int result = 1; /* 1 = not the answer yet */
        if (r.type == WIRE_STATS) {
            size_t k2 = 0;
            for (uint32_t i = 0; i < r.stats.n_counters && k2 < cap; i++, k2++) {
                snprintf(stats[k2].name, sizeof stats[k2].name, "%s", r.stats.counters[i].name);
                stats[k2].value = r.stats.counters[i].value;
            }
            if (n)
                *n = k2;
            result = 0;
        } else if (r.type == WIRE_ERROR && r.error.request_id == 0) {
            s_err(errbuf, errbuf_size, "the router refused the stats request: %s",
                  r.error.message);
            result = -1;
        }
        wire_message_free(&r);
        wire_msg_free(&raw);
        if (result <= 0)
            return result;
    }
}

double llorch_stat_get(const llorch_stat *stats, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(stats[i].name, name))
            return stats[i].value;
    return -1;
}
