/* router_poke.c - test driver for a running router: malformed frames, concurrent sessions, stats. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "lib/llorch.h"
#include "security.h"
#include "wire.h"

/* Usage:
 *   router_poke malformed CLIENTS_EP CONTROL_EP
 *       sends off-schema, truncated, oversized, wrong-version, unknown-type and
 *       wrong-direction frames to both sockets, expects an ERROR for each where a reply
 *       is due, then checks the router still answers STATS. Exit 0 when it does.
 *   router_poke curve CLIENTS_EP SERVER_PUB CLIENT_KEY
 *       connects with a key the router does not know (no answer expected), then with
 *       CLIENT_KEY from its allow-list (STATS expected). Exit 0 when both hold.
 *   router_poke cancel CLIENTS_EP
 *       a long request cancelled by llorch_cancel from another thread, and one whose
 *       callback returns non-zero after 3 tokens: both end "cancelled", soon.
 *   router_poke lost CLIENTS_EP MARK_FILE
 *       creates MARK_FILE and submits a request with no timeout, which must fail once the
 *       caller kills the router; then waits for a new router's ready pipeline and submits
 *       again on the same client, which must be served. Exit 0 when both hold.
 *   router_poke concurrent CLIENTS_EP N_PREDICT PROMPT...
 *       runs each prompt alone (greedy), then all at once, one client per thread;
 *       exit 0 when every concurrent text equals its solo text and the router's
 *       max_rows_in_batch is above 1 (it batched them); prints the batch stats,
 *       max_batches_in_flight among them. */

typedef struct job {
    const char *endpoint;
    const char *prompt;
    unsigned n_predict;
    char text[16384];
    size_t len;
    int rc;
    char error[512];
} job;

static int s_collect(void *user, const llorch_token *t)
{
    job *j = user;
    if (j->len + t->text_len < sizeof j->text) {
        memcpy(j->text + j->len, t->text, t->text_len);
        j->len += t->text_len;
        j->text[j->len] = '\0';
    }
    return 0;
}

static void *s_run(void *arg)
{
    job *j = arg;
    j->len = 0;
    j->text[0] = '\0';
    llorch_client *c = llorch_connect(j->endpoint, NULL, j->error, sizeof j->error);
    if (!c) {
        j->rc = -1;
        return NULL;
    }
    llorch_params p;
    llorch_params_init(&p);
    p.temperature = 0;
    p.max_tokens = j->n_predict;
    p.timeout_ms = 60000;
    llorch_result res;
    j->rc = llorch_generate(c, j->prompt, &p, s_collect, j, &res);
    if (j->rc != 0)
        snprintf(j->error, sizeof j->error, "%s", res.error);
    llorch_close(&c);
    return NULL;
}

static int s_concurrent(const char *ep, unsigned n_predict, int n, char **prompts)
{
    job *solo = calloc((size_t)n, sizeof *solo), *together = calloc((size_t)n, sizeof *together);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        solo[i] = (job){.endpoint = ep, .prompt = prompts[i], .n_predict = n_predict};
        together[i] = solo[i];
        s_run(&solo[i]);
        if (solo[i].rc != 0) {
            fprintf(stderr, "solo %d: %s\n", i, solo[i].error);
            bad = 1;
        }
    }
    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, s_run, &together[i]);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < n; i++) {
        if (together[i].rc != 0) {
            fprintf(stderr, "concurrent %d: %s\n", i, together[i].error);
            bad = 1;
        } else if (strcmp(solo[i].text, together[i].text) != 0) {
            fprintf(stderr, "session %d differs:\n  alone:    %s\n  together: %s\n", i,
                    solo[i].text, together[i].text);
            bad = 1;
        }
    }
    char err[512];
    llorch_client *c = llorch_connect(ep, NULL, err, sizeof err);
    llorch_stat st[64];
    size_t k = 0;
    if (!c || llorch_stats(c, st, 64, &k, 5000, err, sizeof err) != 0) {
        fprintf(stderr, "stats: %s\n", err);
        bad = 1;
    } else {
        double max_rows = llorch_stat_get(st, k, "max_rows_in_batch");
        printf("batches %.0f, rows %.0f, max_rows_in_batch %.0f, mean %.2f, "
               "max_batches_in_flight %.0f\n",
               llorch_stat_get(st, k, "batches"), llorch_stat_get(st, k, "rows"), max_rows,
               llorch_stat_get(st, k, "mean_rows_per_batch"),
               llorch_stat_get(st, k, "max_batches_in_flight"));
        if (max_rows <= 1) {
            fprintf(stderr, "the router never put two rows in one batch\n");
            bad = 1;
        }
    }
    llorch_close(&c);
    if (!bad)
        printf("%d sessions: the same text alone and together\n", n);
    free(solo);
    free(together);
    free(th);
    return bad;
}

/* Sends frames as one multipart message on a DEALER. */
static void s_send_raw(void *s, const void *const *frames, const size_t *sizes, int n)
{
    for (int i = 0; i < n; i++)
        zmq_send(s, frames[i], sizes[i], i + 1 < n ? ZMQ_SNDMORE : 0);
}

/* Waits for one reply; returns its ERROR code, 0 for another message type, -1 for none. */
static int s_reply(void *s, int timeout_ms)
{
    zmq_pollitem_t item = {.socket = s, .events = ZMQ_POLLIN};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return -1;
    wire_msg raw = {0};
    wire_message m;
    int rc = wire_recv_message(s, &raw, &m, 0, NULL);
    if (rc != WIRE_OK) {
        wire_msg_free(&raw);
        return 0;
    }
    int code = m.type == WIRE_ERROR ? (int)m.error.code : 0;
    wire_message_free(&m);
    wire_msg_free(&raw);
    return code;
}

static int s_alive(const char *ep)
{
    char err[512];
    llorch_client *c = llorch_connect(ep, NULL, err, sizeof err);
    llorch_stat st[64];
    size_t k = 0;
    int rc = c ? llorch_stats(c, st, 64, &k, 5000, err, sizeof err) : -1;
    llorch_close(&c);
    if (rc != 0)
        fprintf(stderr, "the router does not answer STATS any more: %s\n", err);
    return rc == 0;
}

static int s_malformed(const char *clients_ep, const char *control_ep)
{
    void *ctx = zmq_ctx_new();
    int bad = 0;
    const char *eps[] = {clients_ep, control_ep};
    for (int e = 0; e < 2; e++) {
        void *s = zmq_socket(ctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(s, eps[e]);
        /* Headers: garbage, a huge map claim, a truncated map, an array, wrong version,
         * unknown type, a submit without request_id, a submit whose frame count lies,
         * a type the socket does not serve, a forward to the wrong place. */
        static const unsigned char garbage[] = {0xc1, 0xff, 0x00, 0x13};
        static const unsigned char huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
        static const unsigned char trunc_map[] = {0x82, 0xa1, 'v'};
        static const unsigned char array[] = {0x92, 0x01, 0x02};
        static const unsigned char v9[] = {0x82, 0xa1, 'v', 0x09, 0xa1, 't', 0xa6,
                                           's', 't', 'a', 't', 's', '_'};
        static const unsigned char v9b[] = {0x82, 0xa1, 'v', 0x09, 0xa1, 't', 0xa9, 's', 't',
                                            'a', 't', 's', '_', 'r', 'e', 'q'};
        static const unsigned char unknown[] = {0x82, 0xa1, 'v', WIRE_PROTOCOL_VERSION, 0xa1, 't', 0xa3, 'f',
                                                'o', 'o'};
        static const unsigned char no_id[] = {0x83, 0xa1, 'v', WIRE_PROTOCOL_VERSION, 0xa1, 't', 0xa6, 's', 'u',
                                              'b', 'm', 'i', 't', 0xa6, 'p', 'r', 'o', 'm',
                                              'p', 't', 0xa1, 'x'};
        const struct { const void *data; size_t n; int frames; } cases[] = {
            {garbage, sizeof garbage, 1}, {huge_map, sizeof huge_map, 1},
            {trunc_map, sizeof trunc_map, 1}, {array, sizeof array, 1}, {v9, sizeof v9, 1},
            {v9b, sizeof v9b, 1}, {unknown, sizeof unknown, 1}, {no_id, sizeof no_id, 1},
            {no_id, sizeof no_id, 3}, {"", 0, 1},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            const void *frames[4] = {cases[i].data, "x", "yy", "zzz"};
            size_t sizes[4] = {cases[i].n, 1, 2, 3};
            s_send_raw(s, frames, sizes, cases[i].frames);
            int code = s_reply(s, 2000);
            if (code <= 0) {
                fprintf(stderr, "%s: case %zu: expected an ERROR, got %s\n", eps[e], i,
                        code < 0 ? "nothing" : "another message");
                bad = 1;
            }
        }
        /* Valid messages of the wrong direction: a TOKEN, a LOGITS, a REGISTER on the
         * clients socket; a SUBMIT on the control socket. */
        wire_message m = {.type = e == 0 ? WIRE_TOKEN : WIRE_SUBMIT};
        if (e == 0)
            m.token = (wire_token){.request_id = 1, .token = 1, .piece = "a", .piece_bytes = 1};
        else
            m.submit = (wire_submit){.request_id = 1, .prompt = "hi",
                                     .sampling = wire_sampling_default(), .max_tokens = 1};
        wire_send_message(s, NULL, 0, &m, 0, NULL);
        if (s_reply(s, 2000) <= 0) {
            fprintf(stderr, "%s: a %s got no ERROR\n", eps[e], wire_type_name(m.type));
            bad = 1;
        }
        /* A valid SUBMIT with out-of-range token ids, and a bad request then a cancel of
         * an unknown id: ERROR, never a crash. */
        if (e == 0) {
            int32_t ids[2] = {1, 1 << 20};
            wire_message q = {.type = WIRE_SUBMIT};
            q.submit = (wire_submit){.request_id = 7, .n_tokens = 2, .tokens = ids,
                                     .sampling = wire_sampling_default(), .max_tokens = 4};
            wire_send_message(s, NULL, 0, &q, 0, NULL);
            if (s_reply(s, 2000) != WIRE_ERR_INVALID) {
                fprintf(stderr, "out-of-range token ids were not refused as invalid\n");
                bad = 1;
            }
            s_reply(s, 500); /* its DONE */
            wire_message c = {.type = WIRE_CANCEL};
            c.cancel.request_id = 99;
            wire_send_message(s, NULL, 0, &c, 0, NULL);
        }
        zmq_close(s);
    }
    zmq_ctx_term(ctx);
    if (!s_alive(clients_ep))
        bad = 1;
    if (!bad)
        printf("malformed frames: every one refused with ERROR, the router still serves\n");
    return bad;
}

static int s_curve(const char *ep, const char *server_pub, const char *client_key)
{
    security_keypair stranger;
    llorch_error err = {0};
    if (security_keypair_generate(&stranger, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    security_client_setup(s, &stranger, server_pub, NULL);
    zmq_connect(s, ep);
    wire_message m = {.type = WIRE_STATS_REQ};
    wire_send_message(s, NULL, 0, &m, ZMQ_DONTWAIT, NULL);
    int got = s_reply(s, 1500);
    zmq_close(s);
    zmq_ctx_term(ctx);
    if (got != -1) {
        fprintf(stderr, "a client with an unknown key got an answer\n");
        return 1;
    }
    printf("unknown CURVE key: refused\n");
    llorch_curve curve = {client_key, server_pub};
    char e[512];
    llorch_client *c = llorch_connect(ep, &curve, e, sizeof e);
    llorch_stat st[64];
    size_t k = 0;
    int rc = c ? llorch_stats(c, st, 64, &k, 5000, e, sizeof e) : -1;
    llorch_close(&c);
    if (rc != 0) {
        fprintf(stderr, "an allowed CURVE key was not served: %s\n", e);
        return 1;
    }
    printf("allowed CURVE key: served\n");
    return 0;
}

typedef struct cancel_job {
    llorch_client *c;
    llorch_result res;
    int rc;
    unsigned seen;
    unsigned stop_after; /* callback returns 1 at this many tokens (0 = never) */
} cancel_job;

static int s_count(void *user, const llorch_token *t)
{
    cancel_job *j = user;
    (void)t;
    unsigned seen = __atomic_add_fetch(&j->seen, 1, __ATOMIC_RELAXED);
    return j->stop_after && seen >= j->stop_after;
}

static void *s_long(void *arg)
{
    cancel_job *j = arg;
    llorch_params p;
    llorch_params_init(&p);
    p.temperature = 0;
    p.max_tokens = 1u << 20;
    p.timeout_ms = 30000;
    j->rc = llorch_generate(j->c, "Once upon a time", &p, s_count, j, &j->res);
    return NULL;
}

static int s_cancel(const char *ep)
{
    int bad = 0;
    char err[512];
    for (int mode = 0; mode < 2; mode++) {
        cancel_job j = {.stop_after = mode == 1 ? 3 : 0};
        j.c = llorch_connect(ep, NULL, err, sizeof err);
        if (!j.c) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        pthread_t th;
        pthread_create(&th, NULL, s_long, &j);
        if (mode == 0) {
            while (__atomic_load_n(&j.seen, __ATOMIC_RELAXED) < 2)
                sched_yield();
            llorch_cancel(j.c);
        }
        pthread_join(th, NULL);
        if (j.rc != 0 || strcmp(j.res.stop_reason, "cancelled") != 0) {
            fprintf(stderr, "%s: rc %d, stop %s (%s)\n", mode ? "callback" : "llorch_cancel",
                    j.rc, j.res.stop_reason, j.res.error);
            bad = 1;
        } else {
            printf("%s: cancelled after %u tokens\n", mode ? "callback" : "llorch_cancel",
                   j.res.n_generated_tokens);
        }
        llorch_close(&j.c);
    }
    return bad;
}

/* A request whose router is lost (the caller kills it once mark exists), then, on the same
 * client, one to the router that replaces it. */
static int s_lost(const char *ep, const char *mark)
{
    char err[512];
    llorch_client *c = llorch_connect(ep, NULL, err, sizeof err);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    llorch_params p;
    llorch_params_init(&p);
    p.temperature = 0;
    p.max_tokens = 8; /* and no timeout: only the lost connection can end the first request */
    FILE *f = fopen(mark, "w");
    if (f)
        fclose(f);
    llorch_result res;
    int bad = 0;
    if (llorch_generate(c, "Hello", &p, NULL, NULL, &res) == 0) {
        fprintf(stderr, "the request survived its router (%s)\n", res.stop_reason);
        bad = 1;
    } else {
        printf("request 1: %s\n", res.error);
    }
    /* The next request, once a new router serves a pipeline again. */
    llorch_stat st[64];
    size_t n = 0;
    for (int i = 0; i < 100; i++) {
        if (llorch_stats(c, st, 64, &n, 1000, err, sizeof err) == 0 &&
            llorch_stat_get(st, n, "pipelines_ready") >= 1)
            break;
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    if (llorch_generate(c, "Hello", &p, NULL, NULL, &res) != 0 || res.n_generated_tokens != 8) {
        fprintf(stderr, "the next request to the new router: %s (%u tokens)\n", res.error,
                res.n_generated_tokens);
        bad = 1;
    } else {
        printf("request 2, the same client to the new router: %u tokens\n",
               res.n_generated_tokens);
    }
    llorch_close(&c);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "lost"))
        return s_lost(argv[2], argv[3]);
    if (argc >= 3 && !strcmp(argv[1], "cancel"))
        return s_cancel(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "malformed"))
        return s_malformed(argv[2], argv[3]);
    if (argc >= 5 && !strcmp(argv[1], "curve"))
        return s_curve(argv[2], argv[3], argv[4]);
    if (argc >= 5 && !strcmp(argv[1], "concurrent"))
        return s_concurrent(argv[2], (unsigned)atoi(argv[3]), argc - 4, argv + 4);
    fprintf(stderr, "usage: router_poke malformed CLIENTS_EP CONTROL_EP | curve EP SERVER_PUB CLIENT_KEY | "
                    "cancel EP | concurrent EP N_PREDICT PROMPT... | lost EP MARK_FILE\n");
    return 2;
}
