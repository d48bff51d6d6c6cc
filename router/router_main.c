/* router_main.c - llorch-router: options, sockets, and the poll loop that drives everything. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "http.h"
#include "log.h"
#include "router.h"

static volatile sig_atomic_t s_stop;
static http_config s_http_cfg;   /* --http and its limits */
static http_server *s_http;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch-router --loader EP --control EP --results EP --clients EP [options]\n"
            "\n"
            "Owns sessions, tokenizer, sampling and batching of a llorch pipeline: workers\n"
            "register on --control, last workers send logits to --results, clients submit on\n"
            "--clients (docs/pipeline.md).\n"
            "\n"
            "  --loader EP             the loader's endpoint (the manifest: config, tokenizer)\n"
            "  --control EP            bind: worker registration and heartbeats\n"
            "  --results EP            bind: logits from the last worker of each pipeline\n"
            "  --results-connect EP    the address workers use for --results when it differs\n"
            "                          (e.g. --results tcp://*:5557 --results-connect\n"
            "                          tcp://router-host:5557)\n"
            "  --clients EP            bind: client requests (libllorch, llorch generate)\n"
            "  --max-batch N           rows in one batch (default 256)\n"
            "  --prompt-chunk N        prompt rows one session adds to a batch (default 64)\n"
            "  --max-queue N           requests waiting for a slot; more are refused as busy\n"
            "                          (default 64)\n"
            "  --max-sessions N        sessions generating at once (default 16)\n"
            "  --max-inflight N        batches in flight per pipeline, each on another stage\n"
            "                          (1..16; default: the pipeline's worker count)\n"
            "  --heartbeat-ms MS       heartbeat period (default 1000)\n"
            "  --liveness N            heartbeats missed before a worker is dead (default 3)\n"
            "  --curve-secret FILE     this router's key pair (llorch keygen): tcp:// sockets\n"
            "                          it binds become CURVE servers\n"
            "  --allow FILE            public keys of the workers and clients it admits\n"
            "  --curve-server-public KEY|FILE  the loader's and workers' public key, for the\n"
            "                          tcp:// sockets it connects\n"
            "  -h, --help              this help\n"
            "\n");
    http_config_usage(out);
    fprintf(out, "\nSIGTERM or SIGINT stops it cleanly. LLORCH_LOG_LEVEL=debug shows every session.\n");
}

static int s_int(const char *opt, const char *v, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < min || n > max) {
        fprintf(stderr, "llorch-router: %s wants an integer in %d..%d, got '%s'\n", opt, min,
                max, v);
        return -1;
    }
    *out = (int)n;
    return 0;
}

/* 0 on success, 1 after --help, 2 on a usage error. */
static int s_parse(int argc, char **argv, router_opts *o)
{
    *o = (router_opts){.max_batch_rows = 256, .prompt_chunk_rows = 64, .max_queue = 64,
                       .max_sessions = 16, .heartbeat_ms = 1000, .liveness = 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage(stdout);
            return 1;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v) {
            fprintf(stderr, "llorch-router: %s needs a value\n", a);
            return 2;
        }
        int bad = 0;
        if (!strcmp(a, "--loader")) o->loader_endpoint = v;
        else if (!strcmp(a, "--control")) o->control_endpoint = v;
        else if (!strcmp(a, "--results")) o->results_endpoint = v;
        else if (!strcmp(a, "--results-connect")) o->results_connect = v;
        else if (!strcmp(a, "--clients")) o->clients_endpoint = v;
        else if (!strcmp(a, "--max-batch")) bad = s_int(a, v, 1, WIRE_MAX_ROWS, &o->max_batch_rows);
        else if (!strcmp(a, "--prompt-chunk")) bad = s_int(a, v, 1, WIRE_MAX_ROWS, &o->prompt_chunk_rows);
        else if (!strcmp(a, "--max-queue")) bad = s_int(a, v, 0, 1 << 20, &o->max_queue);
        else if (!strcmp(a, "--max-sessions")) bad = s_int(a, v, 1, 1 << 16, &o->max_sessions);
        else if (!strcmp(a, "--max-inflight")) bad = s_int(a, v, 1, ROUTER_MAX_INFLIGHT, &o->max_inflight);
        else if (!strcmp(a, "--heartbeat-ms")) bad = s_int(a, v, 10, 3600000, &o->heartbeat_ms);
        else if (!strcmp(a, "--liveness")) bad = s_int(a, v, 1, 1000, &o->liveness);
        else if (!strcmp(a, "--curve-secret")) o->curve_secret = v;
        else if (!strcmp(a, "--allow")) o->curve_allow = v;
        else if (!strcmp(a, "--curve-server-public")) o->curve_server_public = v;
        else {
            llorch_error herr = {0};
            int h = http_config_option(&s_http_cfg, a, v, &herr);
            if (h < 0)
                fprintf(stderr, "llorch-router: %s\n", herr.msg);
            else if (h == 0)
                fprintf(stderr, "llorch-router: unknown option %s (see --help)\n", a);
            if (h <= 0)
                return 2;
        }
        if (bad)
            return 2;
    }
    if (!o->loader_endpoint || !o->control_endpoint || !o->results_endpoint ||
        !o->clients_endpoint) {
        fprintf(stderr, "llorch-router: --loader, --control, --results and --clients are "
                        "required (see --help)\n");
        return 2;
    }
    if (o->curve_secret && !o->curve_allow) {
        fprintf(stderr, "llorch-router: --curve-secret needs --allow FILE (the public keys of "
                        "the workers and clients it admits)\n");
        return 2;
    }
    if (!o->results_connect)
        o->results_connect = o->results_endpoint;
    return 0;
}

/* zmq_bind with the message for err. 0, or -1 with err. */
static int s_bind_endpoint(void *s, const char *ep, const char *what, llorch_error *err)
{
    if (zmq_bind(s, ep) != 0)
        return llorch_error_set(err, "cannot bind the %s socket to %s: %s", what, ep,
                                zmq_strerror(errno));
    return 0;
}

/* A bound socket of the given type with limits, CURVE server set-up on tcp://. plain_ep
 * (or NULL) is bound first, before CURVE is set, so that it stays without CURVE: the
 * HTTP server's private path. */
static void *s_bind(router *r, int type, const char *ep, const char *plain_ep, const char *what,
                    llorch_error *err)
{
    void *s = zmq_socket(r->ctx, type);
    int on = 1, linger = 0;
    if (!s) {
        llorch_error_set(err, "%s socket: %s", what, zmq_strerror(errno));
        return NULL;
    }
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (type == ZMQ_ROUTER)
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &on, sizeof on);
    if (wire_socket_limits(s, err) != 0) {
        llorch_error_prefix(err, "%s socket", what);
    } else if (plain_ep && s_bind_endpoint(s, plain_ep, what, err) != 0) {
        /* err says it */
    } else if (r->opts.curve_secret && !strncmp(ep, "tcp://", 6) &&
               security_server_setup(s, &r->keys, err) != 0) {
        llorch_error_prefix(err, "%s socket", what);
    } else if (s_bind_endpoint(s, ep, what, err) == 0) {
        return s;
    }
    zmq_close(s);
    return NULL;
}

static int s_setup_curve(router *r, llorch_error *err)
{
    const router_opts *o = &r->opts;
    if (!o->curve_secret)
        return 0;
    if (security_keypair_load(o->curve_secret, &r->keys, err) != 0)
        return -1;
    if (!r->keys.secret_key[0])
        return llorch_error_set(err, "%s holds no secret key: give the .key file of "
                                     "`llorch keygen`", o->curve_secret);
    if (o->curve_server_public &&
        security_public_key_arg(o->curve_server_public, r->server_public, err) != 0)
        return llorch_error_prefix(err, "--curve-server-public");
    r->zap = security_zap_start(r->ctx, o->curve_allow, err);
    return r->zap ? 0 : -1;
}

/* Receives everything waiting on socket s and hands it to the handler of its kind. */
static void s_drain(router *r, void *s)
{
    for (int n = 0; n < 1024; n++) {
        wire_msg raw = {0};
        wire_message m;
        llorch_error err = {0};
        int rc = wire_recv_message(s, &raw, &m, ZMQ_DONTWAIT, &err);
        if (rc < 0)
            return; /* EAGAIN: nothing more */
        if (rc != WIRE_OK) {
            r->stats.malformed++;
            log_info("%s socket: refused a message: %s",
                     s == r->clients ? "clients" : s == r->control ? "control" : "results",
                     err.msg);
            if (s != r->results)
                wire_reply_error(s, &raw, (uint32_t)rc, err.msg, 0, 0, 0, NULL);
            wire_msg_free(&raw);
            continue;
        }
        if (s == r->clients)
            router_client_message(r, &raw, &m);
        else if (s == r->control)
            router_control_message(r, &raw, &m);
        else
            router_results_message(r, &m);
        wire_message_free(&m);
        wire_msg_free(&raw);
    }
}

static int s_run(router *r, llorch_error *err)
{
    r->ctx = zmq_ctx_new();
    if (!r->ctx)
        return llorch_error_set(err, "cannot create a ZeroMQ context: %s", zmq_strerror(errno));
    if (s_setup_curve(r, err) != 0)
        return -1;
    if (router_fetch_manifest(r, &s_stop, err) != 0)
        return -1;
    r->scratch = malloc(r->n_vocab * sizeof *r->scratch);
    r->probs = malloc(r->n_vocab * sizeof *r->probs);
    r->rows = malloc((size_t)r->opts.max_batch_rows * sizeof *r->rows);
    if (!r->scratch || !r->probs || !r->rows)
        return llorch_error_set(err, "out of memory");
    /* Parts for every slot a pipeline may use: --max-inflight, or the most there is. */
    const int n_slots = r->opts.max_inflight ? r->opts.max_inflight : ROUTER_MAX_INFLIGHT;
    const size_t parts_bytes = (size_t)router_batch_parts_cap(&r->opts) * sizeof(router_batch_part);
    for (int p = 0; p < ROUTER_MAX_PIPELINES; p++)
        for (int b = 0; b < n_slots; b++)
            if (!(r->pipelines[p].batches[b].parts = malloc(parts_bytes)))
                return llorch_error_set(err, "out of memory");
    r->control = s_bind(r, ZMQ_ROUTER, r->opts.control_endpoint, NULL, "control", err);
    if (r->control)
        r->results = s_bind(r, ZMQ_PULL, r->opts.results_endpoint, NULL, "results", err);
    if (r->results)
        r->clients = s_bind(r, ZMQ_ROUTER, r->opts.clients_endpoint,
                            http_server_router_endpoint(s_http), "clients", err);
    if (!r->clients)
        return -1;
    http_server_set_model(s_http, r->model_id, r->tok, r->n_ctx);
    log_info("serving: control %s, results %s, clients %s", r->opts.control_endpoint,
             r->opts.results_endpoint, r->opts.clients_endpoint);
    while (!s_stop) {
        int wait_ms = router_workers_tick(r);
        if (r->wake_ms) {
            const int64_t until = r->wake_ms - router_now_ms();
            if (until < wait_ms)
                wait_ms = until < 1 ? 1 : (int)until;
        }
        zmq_pollitem_t items[] = {
            {.socket = r->results, .events = ZMQ_POLLIN},
            {.socket = r->control, .events = ZMQ_POLLIN},
            {.socket = r->clients, .events = ZMQ_POLLIN},
        };
        int n = zmq_poll(items, 3, wait_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return llorch_error_set(err, "poll: %s", zmq_strerror(errno));
        }
        /* Results first: they free pipelines for the next step. */
        if (items[0].revents & ZMQ_POLLIN)
            s_drain(r, r->results);
        if (items[1].revents & ZMQ_POLLIN)
            s_drain(r, r->control);
        if (items[2].revents & ZMQ_POLLIN)
            s_drain(r, r->clients);
        router_step(r);
    }
    log_info("stopping");
    return 0;
}

static void s_close(router *r)
{
    if (r->clients)
        router_sessions_shutdown(r);
    void *sockets[] = {r->control, r->results, r->clients, r->loader};
    for (size_t i = 0; i < sizeof sockets / sizeof sockets[0]; i++)
        if (sockets[i])
            zmq_close(sockets[i]);
    for (int i = 0; i < r->n_push; i++)
        zmq_close(r->push[i].socket);
    security_zap_stop(&r->zap);
    if (r->ctx)
        zmq_ctx_term(r->ctx);
    for (int p = 0; p < ROUTER_MAX_PIPELINES; p++)
        for (int b = 0; b < ROUTER_MAX_INFLIGHT; b++)
            free(r->pipelines[p].batches[b].parts);
    free(r->scratch);
    free(r->probs);
    free(r->rows);
    tokenizer_free(&r->tok);
}

int main(int argc, char **argv)
{
    log_init("router", LOG_INFO);
    static router r;
    http_config_init(&s_http_cfg);
    int rc = s_parse(argc, argv, &r.opts);
    if (rc)
        return rc == 1 ? 0 : 2;
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    llorch_error err = {0};
    if (s_http_cfg.listen[0] &&
        !(s_http = http_server_start(&s_http_cfg, &err)))
        rc = -1;
    else
        rc = s_run(&r, &err);
    http_server_stop(&s_http);
    if (rc != 0)
        log_error("%s", err.msg);
    s_close(&r);
    return rc == 0 ? 0 : 1;
}
