/* main.c - llorch-loader: puts a GGUF model into shared memory and serves its manifest and bytes. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "loader.h"
#include "log.h"
#include "proc.h"
#include "security.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch-loader -m MODEL --endpoint EP [options]\n\n"
            "Validates a GGUF model, copies its tensors into a POSIX shared-memory segment\n"
            "(BLAKE2b-256 digest per tensor) and serves the manifest and tensor chunks to\n"
            "workers and the router on a ZeroMQ ROUTER socket.\n\n"
            "  -m, --model FILE       the GGUF model\n"
            "  --endpoint EP          where to serve, e.g. ipc:///run/llorch/loader or\n"
            "                         tcp://10.0.0.1:5550\n"
            "  --shm-name NAME        segment name (default /llorch-<tag>-<pid>, the tag\n"
            "                         from the tensor table)\n"
            "  --curve-secret FILE    serve with CurveZMQ using this key pair (llorch keygen)\n"
            "  --allow FILE           public keys admitted (needed with --curve-secret)\n"
            "  --layout auto|rows     how Q8_0 matrices lie in the segment: auto (default)\n"
            "                         repacks them in 16-row groups when this CPU runs the\n"
            "                         AVX-512 VNNI kernels; rows keeps the GGUF order (for\n"
            "                         workers that map the segment on a CPU without AVX-512,\n"
            "                         or workers older than the layout field)\n"
            "  --progress             progress lines for any model size (large models always\n"
            "                         report progress)\n"
            "  -h, --help             this text\n\n"
            "SIGTERM or SIGINT removes the segment and exits 0.\n"
            "LLORCH_LOADER_TAMPER=TENSOR (tests only) corrupts the chunks served of TENSOR.\n");
}

typedef struct loader_args {
    loader_options opts;
    const char *endpoint;
    const char *curve_secret;
    const char *allow;
} loader_args;

static int s_parse(int argc, char **argv, loader_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            s_usage(stdout);
            exit(0);
        } else if (!strcmp(o, "--progress")) {
            a->opts.progress = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "llorch-loader: %s needs a value (see --help)\n", o);
            return -1;
        }
        if (!strcmp(o, "-m") || !strcmp(o, "--model"))
            a->opts.model_path = v;
        else if (!strcmp(o, "--endpoint"))
            a->endpoint = v;
        else if (!strcmp(o, "--shm-name"))
            a->opts.shm_name = v;
        else if (!strcmp(o, "--curve-secret"))
            a->curve_secret = v;
        else if (!strcmp(o, "--allow"))
            a->allow = v;
        else if (!strcmp(o, "--layout")) {
            if (strcmp(v, "auto") != 0 && strcmp(v, "rows") != 0) {
                fprintf(stderr, "llorch-loader: --layout '%s': give auto or rows\n", v);
                return -1;
            }
            a->opts.layout_rows = !strcmp(v, "rows");
        } else {
            fprintf(stderr, "llorch-loader: unknown option '%s' (see --help)\n", o);
            return -1;
        }
        i++;
    }
    if (!a->opts.model_path || !a->endpoint) {
        fprintf(stderr, "llorch-loader: -m MODEL and --endpoint EP are required (see --help)\n");
        return -1;
    }
    if (!!a->curve_secret != !!a->allow) {
        fprintf(stderr, "llorch-loader: --curve-secret and --allow go together (the loader's "
                        "key pair and the public keys it admits)\n");
        return -1;
    }
    return 0;
}

static int s_tamper_index(const loader_model *lm)
{
    const char *name = getenv(LOADER_TAMPER_ENV);
    if (!name || !*name)
        return -1;
    for (uint32_t i = 0; i < lm->manifest.n_tensors; i++)
        if (!strcmp(lm->tensors[i].name, name)) {
            log_warn("TEST ONLY: %s is set: chunks of tensor %s are served corrupted",
                     LOADER_TAMPER_ENV, name);
            return (int)i;
        }
    log_warn("TEST ONLY: %s names no tensor ('%s'); nothing is corrupted", LOADER_TAMPER_ENV,
             name);
    return -1;
}

int main(int argc, char **argv)
{
    log_init("loader", LOG_INFO);
    loader_args a = {0};
    if (s_parse(argc, argv, &a) < 0)
        return 2;
    llorch_error err = {{0}};
    if (proc_signals_install(&err) < 0) {
        log_error("%s", err.msg);
        return 1;
    }
    security_keypair kp;
    if (a.curve_secret) {
        if (security_keypair_load(a.curve_secret, &kp, &err) < 0) {
            log_error("%s", err.msg);
            return 1;
        }
        if (!kp.secret_key[0]) {
            log_error("%s holds no secret key: give the .key file made by llorch keygen",
                      a.curve_secret);
            return 1;
        }
    } else if (!strncmp(a.endpoint, "tcp://", 6)) {
        log_warn("serving %s without CurveZMQ: anyone who reaches it can read the model "
                 "(give --curve-secret and --allow)", a.endpoint);
    }

    if (proc_endpoint_in_use(a.endpoint)) {
        log_error("cannot bind %s: another process is serving there (stop it or choose "
                  "another endpoint)", a.endpoint);
        return 1;
    }
    log_info("starting (pid %ld): model %s", (long)getpid(), a.opts.model_path);
    loader_model *lm = loader_model_load(&a.opts, &err);
    if (!lm) {
        if (proc_stop_signal()) {
            log_info("stopped by signal %d while loading; nothing left behind",
                     proc_stop_signal());
            return 0;
        }
        log_error("%s", err.msg);
        return 1;
    }
    log_info("model %s in segment %s (%" PRIu64 " bytes, %u tensors) in %.0f ms",
             lm->model_id, lm->segment_name, lm->segment_bytes, lm->manifest.n_tensors,
             lm->load_ms);
    const int tamper = s_tamper_index(lm);

    int status = 1;
    void *ctx = zmq_ctx_new();
    security_zap *zap = NULL;
    void *sock = ctx ? zmq_socket(ctx, ZMQ_ROUTER) : NULL;
    int linger = 0;
    if (!sock) {
        log_error("cannot create a ZeroMQ socket: %s", zmq_strerror(errno));
        goto out;
    }
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (wire_socket_limits(sock, &err) < 0) {
        log_error("%s", err.msg);
        goto out;
    }
    if (a.curve_secret) {
        zap = security_zap_start(ctx, a.allow, &err);
        if (!zap || security_server_setup(sock, &kp, &err) < 0) {
            log_error("%s", err.msg);
            goto out;
        }
    }
    if (proc_endpoint_in_use(a.endpoint)) {
        log_error("cannot bind %s: another process is serving there (stop it or choose "
                  "another endpoint)", a.endpoint);
        goto out;
    }
    if (zmq_bind(sock, a.endpoint) != 0) {
        log_error("cannot bind %s: %s", a.endpoint, zmq_strerror(errno));
        goto out;
    }
    log_info("serving on %s%s", a.endpoint, a.curve_secret ? " (CurveZMQ)" : "");

    loader_stats st = {0};
    while (!proc_stop_signal()) {
        zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
        int n = zmq_poll(&item, 1, 1000);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("poll: %s", zmq_strerror(errno));
            goto out;
        }
        /* Drain what is waiting, then poll again. */
        for (int k = 0; k < 64 && !proc_stop_signal(); k++) {
            int rc = loader_serve_one(lm, sock, tamper, &st, &err);
            if (rc == 0)
                break;
            if (rc < 0 && errno != EINTR) {
                log_error("%s", err.msg);
                goto out;
            }
        }
    }
    log_info("signal %d: stopping (served %" PRIu64 " manifests, %" PRIu64 " chunks)",
             proc_stop_signal(), st.manifests, st.chunks);
    status = 0;
out:
    if (sock)
        zmq_close(sock);
    security_zap_stop(&zap);
    if (ctx)
        zmq_ctx_term(ctx);
    char name[sizeof lm->segment_name];
    snprintf(name, sizeof name, "%s", lm->segment_name);
    loader_model_free(&lm);
    log_info("segment %s removed; exit %d", name, status);
    return status;
}
