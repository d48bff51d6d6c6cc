/* main.c - llorch-worker: runs layers [FIRST, LAST) of the loader's model for the router. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"
#include "proc.h"
#include "kv_cache.h"
#include "worker.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch-worker --loader EP --router EP --layers FIRST:LAST --bind EP [options]\n\n"
            "Runs layers [FIRST, LAST) of the loader's model: maps the loader's shared segment\n"
            "read-only on the same host (or fetches and verifies its tensors), registers with\n"
            "the router, and passes each batch on to the next worker or back to the router.\n\n"
            "  --loader EP            the loader's endpoint\n"
            "  --router EP            the router's control endpoint (registration, heartbeats)\n"
            "  --layers FIRST:LAST    the layer range, e.g. 0:16 (the first worker embeds,\n"
            "                         the last one applies the output head)\n"
            "  --bind EP              where this worker receives batches (PULL)\n"
            "  --advertise EP         the endpoint others connect to (default: --bind)\n"
            "  --threads T            compute threads (default: the CPUs online)\n"
            "  --kv-budget BYTES      KV cache memory, K/M/G suffixes (default: one full\n"
            "                         context of this range's layers)\n"
            "  --kv-type f32|f16      how the KV cache stores keys and values (default f32;\n"
            "                         f16 takes half the bytes per position, as llama.cpp's\n"
            "                         default cache)\n"
            "  --max-batch N          rows per stage pass (default 64; larger batches run in\n"
            "                         parts)\n"
            "  --id ID                worker id (default w<FIRST>-<LAST>-<pid>)\n"
            "  --fetch                fetch the tensors over the wire even on the loader's host\n"
            "  --verify               on the loader's host, check the digests of the mapped\n"
            "                         tensors too (a segment changed after loading is refused;\n"
            "                         costs a read of the range's weights at start)\n"
            "  --curve-secret FILE    this worker's key pair (llorch keygen): CurveZMQ on tcp\n"
            "  --loader-public KEY    the loader's public key (Z85 or a .pub/.key file)\n"
            "  --router-public KEY    the router's public key (Z85 or file)\n"
            "  --hop-public KEY       the next workers' public key for tcp hops (default: the\n"
            "                         router's)\n"
            "  --allow FILE           public keys admitted to --bind (makes it a CURVE server;\n"
            "                         needs --curve-secret)\n"
            "  -h, --help             this text\n\n"
            "Exit status: 0 after SIGTERM/SIGINT, 1 when the weights cannot be had or do not\n"
            "match their digests, 2 on bad options.\n");
}

static int s_public_key(const char *opt, const char *arg, char *out)
{
    llorch_error err;
    if (security_public_key_arg(arg, out, &err) < 0) {
        fprintf(stderr, "llorch-worker: %s: %s\n", opt, err.msg);
        return -1;
    }
    return 0;
}

typedef struct worker_args {
    worker_config cfg;
    const char *advertise;
    const char *curve_secret;
} worker_args;

static int s_parse(int argc, char **argv, worker_args *a)
{
    worker_config *c = &a->cfg;
    const char *layers = NULL;
    long v_long;
    llorch_error err;
    c->max_batch = 64;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = cpus > 0 ? (int)cpus : 1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            s_usage(stdout);
            exit(0);
        } else if (!strcmp(o, "--fetch")) {
            c->fetch = true;
            continue;
        } else if (!strcmp(o, "--verify")) {
            c->verify = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "llorch-worker: %s needs a value (see --help)\n", o);
            return -1;
        }
        i++;
        if (!strcmp(o, "--loader"))
            c->loader_ep = v;
        else if (!strcmp(o, "--router"))
            c->router_ep = v;
        else if (!strcmp(o, "--bind"))
            c->bind_ep = v;
        else if (!strcmp(o, "--advertise"))
            a->advertise = v;
        else if (!strcmp(o, "--layers"))
            layers = v;
        else if (!strcmp(o, "--id")) {
            if (!*v || strlen(v) > WIRE_MAX_ID_BYTES) {
                fprintf(stderr, "llorch-worker: --id: 1..%d bytes\n", WIRE_MAX_ID_BYTES);
                return -1;
            }
            snprintf(c->id, sizeof c->id, "%s", v);
        } else if (!strcmp(o, "--threads")) {
            if (proc_parse_long(o, v, 1, 4096, &v_long, &err) < 0)
                goto bad;
            c->threads = (int)v_long;
        } else if (!strcmp(o, "--max-batch")) {
            if (proc_parse_long(o, v, 1, WIRE_MAX_ROWS, &v_long, &err) < 0)
                goto bad;
            c->max_batch = (int)v_long;
        } else if (!strcmp(o, "--kv-budget")) {
            if (proc_parse_bytes(v, &c->kv_budget_bytes, &err) < 0) {
                llorch_error_prefix(&err, "--kv-budget");
                goto bad;
            }
        } else if (!strcmp(o, "--kv-type")) {
            if (kv_type_parse(v, &c->kv_type, &err) < 0) {
                llorch_error_prefix(&err, "--kv-type");
                goto bad;
            }
        } else if (!strcmp(o, "--curve-secret"))
            a->curve_secret = v;
        else if (!strcmp(o, "--loader-public")) {
            if (s_public_key(o, v, c->loader_public) < 0)
                return -1;
        } else if (!strcmp(o, "--router-public")) {
            if (s_public_key(o, v, c->router_public) < 0)
                return -1;
        } else if (!strcmp(o, "--hop-public")) {
            if (s_public_key(o, v, c->hop_public) < 0)
                return -1;
        } else if (!strcmp(o, "--allow"))
            c->allow = v;
        else {
            fprintf(stderr, "llorch-worker: unknown option '%s' (see --help)\n", o);
            return -1;
        }
    }
    if (!c->loader_ep || !c->router_ep || !c->bind_ep || !layers) {
        fprintf(stderr, "llorch-worker: --loader, --router, --layers and --bind are required "
                        "(see --help)\n");
        return -1;
    }
    if (proc_parse_range(layers, &c->first, &c->last, &err) < 0) {
        llorch_error_prefix(&err, "--layers");
        goto bad;
    }
    if (!c->id[0])
        snprintf(c->id, sizeof c->id, "w%u-%u-%ld", c->first, c->last, (long)getpid());
    if (a->curve_secret) {
        if (security_keypair_load(a->curve_secret, &c->keys, &err) < 0)
            goto bad;
        if (!c->keys.secret_key[0]) {
            fprintf(stderr, "llorch-worker: %s holds no secret key (give the .key file)\n",
                    a->curve_secret);
            return -1;
        }
        c->has_curve = true;
    } else if (c->allow || c->loader_public[0] || c->router_public[0] || c->hop_public[0]) {
        fprintf(stderr, "llorch-worker: --allow and the --*-public keys need --curve-secret "
                        "(this worker's key pair)\n");
        return -1;
    }
    return 0;
bad:
    fprintf(stderr, "llorch-worker: %s\n", err.msg);
    return -1;
}

static void s_warn_plain(const worker_config *c, const char *what, const char *ep,
                         const char *key)
{
    if (!strncmp(ep, "tcp://", 6) && (!c->has_curve || (key && !key[0])))
        log_warn("%s %s is tcp:// without CurveZMQ: traffic is neither encrypted nor "
                 "authenticated", what, ep);
}

int main(int argc, char **argv)
{
    worker_args a = {0};
    if (s_parse(argc, argv, &a) < 0)
        return 2;
    worker_config *c = &a.cfg;
    char name[64];
    snprintf(name, sizeof name, "worker[%u:%u]", c->first, c->last);
    log_init(name, LOG_INFO);
    llorch_error err = {{0}};
    if (proc_signals_install(&err) < 0) {
        log_error("%s", err.msg);
        return 1;
    }
    s_warn_plain(c, "loader", c->loader_ep, c->loader_public);
    s_warn_plain(c, "router", c->router_ep, c->router_public);
    s_warn_plain(c, "bind", c->bind_ep, c->allow ? "x" : "");
    log_info("starting %s (pid %ld): layers [%u, %u), %d threads", c->id, (long)getpid(),
             c->first, c->last, c->threads);

    int status = 1;
    void *ctx = zmq_ctx_new();
    security_zap *zap = NULL;
    void *pull = NULL, *pipe = NULL;
    worker_hops *hops = NULL;
    worker_control *control = NULL;
    stage *st = NULL;
    worker_weights w = {0};
    worker_shared shared;
    atomic_init(&shared.batches, 0);
    atomic_init(&shared.n_sessions, 0);
    atomic_init(&shared.kv_used_bytes, 0);
    atomic_init(&shared.errors, 0);
    if (!ctx) {
        log_error("cannot create a ZeroMQ context: %s", zmq_strerror(errno));
        return 1;
    }
    if (c->has_curve && c->allow && !(zap = security_zap_start(ctx, c->allow, &err))) {
        log_error("%s", err.msg);
        goto out;
    }

    if (worker_weights_acquire(&w, ctx, c, &err) < 0) {
        if (proc_stop_signal()) {
            log_info("stopped by signal %d during start-up", proc_stop_signal());
            status = 0;
        } else {
            log_error("%s", err.msg);
        }
        goto out;
    }
    stage_opts so = {.threads = c->threads, .kv_budget_bytes = c->kv_budget_bytes,
                     .kv_type = c->kv_type,
                     .max_batch_rows = c->max_batch};
    st = stage_new(w.m, c->first, c->last, &so, &err);
    if (!st) {
        log_error("cannot build the stage: %s", err.msg);
        goto out;
    }
    const uint64_t kv_budget = c->kv_budget_bytes
                                   ? c->kv_budget_bytes
                                   : kv_cache_bytes_per_position((int)(c->last - c->first),
                                                                 (int)w.cfg.kv_dim, c->kv_type) *
                                         (uint64_t)(w.cfg.context_length + KV_BLOCK_POSITIONS);

    int linger = 0;
    pull = zmq_socket(ctx, ZMQ_PULL);
    pipe = zmq_socket(ctx, ZMQ_PAIR);
    if (!pull || !pipe) {
        log_error("cannot create sockets: %s", zmq_strerror(errno));
        goto out;
    }
    zmq_setsockopt(pull, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(pipe, ZMQ_LINGER, &linger, sizeof linger);
    if (wire_socket_limits(pull, &err) < 0 ||
        (zap && security_server_setup(pull, &c->keys, &err) < 0)) {
        log_error("%s", err.msg);
        goto out;
    }
    if (proc_endpoint_in_use(c->bind_ep)) {
        log_error("cannot bind %s: another process is serving there (stop it or choose "
                  "another endpoint)", c->bind_ep);
        goto out;
    }
    if (zmq_bind(pull, c->bind_ep) != 0) {
        log_error("cannot bind %s: %s", c->bind_ep, zmq_strerror(errno));
        goto out;
    }
    if (zmq_bind(pipe, WORKER_CONTROL_PIPE) != 0) {
        log_error("control pipe: %s", zmq_strerror(errno));
        goto out;
    }
    hops = worker_hops_new(ctx, c, &err);
    if (!hops) {
        log_error("%s", err.msg);
        goto out;
    }
    const char *advertise = a.advertise ? a.advertise : c->bind_ep;
    wire_register reg = {.worker_id = c->id, .model_id = w.model_id, .endpoint = advertise,
                         .layer_first = c->first, .layer_last = c->last,
                         .n_layers = w.cfg.n_layers, .threads = (uint32_t)c->threads,
                         .kv_budget_bytes = kv_budget};
    control = worker_control_start(ctx, c, &reg, &shared, &err);
    if (!control) {
        log_error("%s", err.msg);
        goto out;
    }
    log_info("serving layers [%u, %u) of %u on %s%s (kv budget %" PRIu64 " bytes of %s, %s)",
             c->first, c->last, w.cfg.n_layers, c->bind_ep, zap ? " (CurveZMQ)" : "", kv_budget,
             kv_type_name(c->kv_type),
             w.zero_copy ? "zero copy" : "private copy");

    uint64_t malformed = 0;
    while (!proc_stop_signal()) {
        zmq_pollitem_t items[2 + WORKER_MAX_HOPS];
        items[0] = (zmq_pollitem_t){.socket = pull, .events = ZMQ_POLLIN};
        items[1] = (zmq_pollitem_t){.socket = pipe, .events = ZMQ_POLLIN};
        int n = 2 + worker_hops_poll_items(hops, items + 2, WORKER_MAX_HOPS);
        if (zmq_poll(items, n, 1000) < 0) {
            if (errno == EINTR)
                continue;
            log_error("poll: %s", zmq_strerror(errno));
            goto out;
        }
        if (items[1].revents & ZMQ_POLLIN) {
            uint64_t id;
            while (zmq_recv(pipe, &id, sizeof id, ZMQ_DONTWAIT) == (int)sizeof id)
                worker_session_free(hops, st, id, &shared);
        }
        for (int k = 0; k < 16 && (items[0].revents & ZMQ_POLLIN) && !proc_stop_signal(); k++) {
            wire_msg raw = {0};
            wire_message m = {0};
            int rc = wire_recv_message(pull, &raw, &m, ZMQ_DONTWAIT, &err);
            if (rc < 0)
                break;
            if (rc > 0) {
                /* PULL has no reply address; the route is unknown when decoding failed. */
                atomic_fetch_add(&shared.errors, 1);
                if (malformed++ < 20 || malformed % 1000 == 0)
                    log_warn("dropped a message on %s (%s): %s", c->bind_ep,
                             wire_errc_name((uint32_t)rc), err.msg);
                wire_msg_free(&raw);
                continue;
            }
            worker_handle(hops, st, &w, &m, &shared);
            wire_message_free(&m);
            wire_msg_free(&raw);
        }
        worker_hops_check_monitors(hops);
    }
    log_info("signal %d: stopping after %" PRIu64 " batches", proc_stop_signal(),
             (uint64_t)atomic_load(&shared.batches));
    status = 0;
out:
    worker_control_stop(&control);
    if (pull)
        zmq_close(pull);
    if (pipe)
        zmq_close(pipe);
    worker_hops_free(&hops);
    stage_free(&st);
    worker_weights_free(&w);
    security_zap_stop(&zap);
    zmq_ctx_term(ctx);
    log_info("stopped (exit %d)", status);
    return status;
}
