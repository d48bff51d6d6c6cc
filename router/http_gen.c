/* http_gen.c - generation jobs: a slot, a pooled libllorch client, tokens into SSE or a body. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <time.h>

#include "http_job.h"
#include "log.h"

double http_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

http_job *http_job_new(struct http_server *srv, http_request *req, int32_t *ids, size_t n_ids)
{
    http_job *j = calloc(1, sizeof *j);
    if (!j) {
        http_request_free(req);
        free(ids);
        return NULL;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cond, NULL);
    j->refs = 1;
    j->srv = srv;
    j->req = *req;
    memset(req, 0, sizeof *req);
    /* The stop pointers must follow the strings into the job. */
    for (unsigned i = 0; i < j->req.n_stop; i++)
        j->req.stop_ptrs[i] = j->req.stop[i];
    j->req.params.stop = j->req.stop_ptrs;
    j->ids = ids;
    j->n_ids = n_ids;
    j->arrival_ms = http_now_ms();
    uint8_t rnd[12];
    randombytes_buf(rnd, sizeof rnd);
    int o = snprintf(j->id, sizeof j->id, "%s", j->req.kind == HTTP_CHAT ? "chatcmpl-" : "cmpl-");
    for (size_t i = 0; i < sizeof rnd && o + 2 < (int)sizeof j->id; i++)
        o += snprintf(j->id + o, sizeof j->id - (size_t)o, "%02x", rnd[i]);
    j->reply = (http_reply){.kind = j->req.kind, .id = j->id, .created = (long long)time(NULL),
                            .model = j->req.model, .tok = srv->tok,
                            .logprobs = j->req.logprobs};
    http_stop_init(&j->stop, j->req.stop_ptrs, j->req.n_stop);
    return j;
}

void http_job_unref(http_job **pj)
{
    http_job *j = *pj;
    *pj = NULL;
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left > 0)
        return;
    http_request_free(&j->req);
    http_stop_free(&j->stop);
    free(j->ids);
    free(j->out);
    free(j->text);
    free(j->lps);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cond);
    free(j);
}

void http_job_cancel(http_job *j, bool timeout)
{
    pthread_mutex_lock(&j->mu);
    if (!j->done && !__atomic_load_n(&j->cancelled, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&j->cancelled, 1, __ATOMIC_RELEASE);
        if (timeout)
            j->timed_out = true;
        else
            j->client_gone = true;
        if (j->client)
            llorch_cancel(j->client);
        http_metrics_cancelled(&j->srv->metrics, timeout);
    }
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->mu);
    /* A job still waiting for a slot notices at once. */
    pthread_mutex_lock(&j->srv->mu);
    pthread_cond_broadcast(&j->srv->cond);
    pthread_mutex_unlock(&j->srv->mu);
}

/* ---- the client pool ---- */

static llorch_client *s_pool_get(struct http_server *srv, char *err, size_t errsz)
{
    pthread_mutex_lock(&srv->mu);
    llorch_client *c = srv->n_idle ? srv->idle[--srv->n_idle] : NULL;
    pthread_mutex_unlock(&srv->mu);
    return c ? c : llorch_connect(srv->endpoint, NULL, err, errsz);
}

/* Keeps c for the next job unless enough are idle or it failed locally (a lost
 * connection is better made anew). */
static void s_pool_put(struct http_server *srv, llorch_client *c, bool reusable)
{
    pthread_mutex_lock(&srv->mu);
    if (reusable && !srv->stopping && srv->n_idle < srv->cfg.max_concurrent) {
        srv->idle[srv->n_idle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&srv->mu);
    llorch_close(&c);
}

void http_clients_close(struct http_server *srv)
{
    for (unsigned i = 0; i < srv->n_idle; i++)
        llorch_close(&srv->idle[i]);
    srv->n_idle = 0;
    llorch_close(&srv->stats_client);
}

/* ---- tokens ---- */

static float s_logprob(float p)
{
    return p > 0 ? logf(p) : (float)HTTP_LOGPROB_FLOOR;
}

/* Appends a streaming chunk to j->out (j->mu held). */
static void s_chunk(http_job *j, bool first, const char *text, size_t len, const char *finish,
                    const http_logprob *lps, size_t n_lps)
{
    json_t *c = http_chunk_json(&j->reply, first, text, len, finish, lps, n_lps);
    if (http_sse_append_json(&j->out, &j->out_len, &j->out_cap, c) != 0)
        log_warn("http: out of memory building a stream chunk of %s", j->id);
}

/* libllorch's token callback, in the job's thread. */
static int s_on_token(void *user, const llorch_token *t)
{
    http_job *j = user;
    pthread_mutex_lock(&j->mu);
    if (__atomic_load_n(&j->cancelled, __ATOMIC_ACQUIRE)) {
        pthread_mutex_unlock(&j->mu);
        return 1;
    }
    if (!j->first_token_ms)
        j->first_token_ms = http_now_ms();
    http_logprob lp = {.id = t->id, .logprob = (float)HTTP_LOGPROB_FLOOR};
    if (j->req.logprobs) {
        for (unsigned k = 0; k < t->n_top; k++)
            if (t->top_ids[k] == t->id)
                lp.logprob = s_logprob(t->top_probs[k]);
        lp.n_top = t->n_top < j->req.top_logprobs ? t->n_top : j->req.top_logprobs;
        for (unsigned k = 0; k < lp.n_top; k++) {
            lp.top_ids[k] = t->top_ids[k];
            lp.top_logprobs[k] = s_logprob(t->top_probs[k]);
        }
    }
    const char *emit;
    size_t n_emit;
    bool was_hit = j->stop.hit;
    if (http_stop_push(&j->stop, t->text, t->text_len, &emit, &n_emit) < 0) {
        emit = t->text;
        n_emit = t->text_len;
    }
    if (!was_hit) {
        if (j->req.stream) {
            if (n_emit || j->req.logprobs)
                s_chunk(j, false, emit, n_emit, NULL, &lp, j->req.logprobs ? 1 : 0);
        } else {
            if (http_buf_append(&j->text, &j->text_len, &j->text_cap, emit, n_emit) != 0)
                log_warn("http: out of memory collecting the text of %s", j->id);
            if (j->req.logprobs && j->n_lps == j->cap_lps) {
                size_t cap = j->cap_lps ? j->cap_lps * 2 : 64;
                http_logprob *g = realloc(j->lps, cap * sizeof *g);
                if (g) {
                    j->lps = g;
                    j->cap_lps = cap;
                }
            }
            if (j->req.logprobs && j->n_lps < j->cap_lps)
                j->lps[j->n_lps++] = lp;
        }
    }
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

/* An error the router reported, as an HTTP status. */
static int s_status_of(int code)
{
    switch (code) {
    case 5: return 429;  /* busy */
    case 4: return 400;  /* invalid */
    case 6:              /* no_memory (a KV budget) */
    case 9: return 503;  /* unavailable */
    default: return code < 0 ? 503 : 500;
    }
}

/* Ends the job (j->mu held): finish reason or failure, the stream's last events. */
static void s_finish(http_job *j, int rc, const llorch_result *res)
{
    struct http_server *srv = j->srv;
    j->result = *res;
    const double now = http_now_ms();
    if (j->timed_out) {
        j->failed = true;
        http_fail_set(&j->fail, 504, "timeout", "timeout", NULL,
                      "the request took longer than %u s (--http-timeout): it was cancelled",
                      srv->cfg.timeout_s);
    } else if (j->client_gone) {
        j->failed = true;
        http_fail_set(&j->fail, 499, "cancelled", "cancelled", NULL, "the client went away");
    } else if (rc != 0 || !strcmp(res->stop_reason, "error") ||
               !strcmp(res->stop_reason, "cancelled")) {
        j->failed = true;
        http_fail_set(&j->fail, s_status_of(res->error_code),
                      res->error_code == 5 ? "rate_limit_error" : "server_error",
                      res->error_code == 5 ? "busy" : NULL, NULL, "generation failed: %s",
                      res->error[0] ? res->error : "the router ended the request");
    } else {
        bool hit = j->stop.hit;
        snprintf(j->finish, sizeof j->finish, "%s",
                 hit || strcmp(res->stop_reason, "length") ? "stop" : "length");
        const char *emit;
        size_t n_emit;
        http_stop_flush(&j->stop, &emit, &n_emit);
        if (j->req.stream && n_emit)
            s_chunk(j, false, emit, n_emit, NULL, NULL, 0);
        else if (n_emit)
            http_buf_append(&j->text, &j->text_len, &j->text_cap, emit, n_emit);
        double first = j->first_token_ms ? (j->first_token_ms - j->arrival_ms) / 1e3 : -1;
        double gen = j->first_token_ms ? (now - j->first_token_ms) / 1e3 : 0;
        http_metrics_generation(&srv->metrics, (unsigned)j->n_ids, res->n_generated_tokens,
                                first, gen, (now - j->arrival_ms) / 1e3);
    }
    if (j->req.stream) {
        if (j->failed) {
            json_error_t e;
            char *body = http_fail_json(&j->fail);
            json_t *ev = body ? json_loads(body, 0, &e) : NULL;
            free(body);
            http_sse_append_json(&j->out, &j->out_len, &j->out_cap, ev);
        } else {
            s_chunk(j, false, "", 0, j->finish, NULL, 0);
            if (j->req.include_usage)
                http_sse_append_json(&j->out, &j->out_len, &j->out_cap,
                                     http_usage_chunk_json(&j->reply, (unsigned)j->n_ids,
                                                           res->n_generated_tokens));
            http_buf_append(&j->out, &j->out_len, &j->out_cap, "data: [DONE]\n\n", 14);
        }
    }
    j->done = true;
    pthread_cond_broadcast(&j->cond);
}

static void *s_job_main(void *arg)
{
    http_job *j = arg;
    struct http_server *srv = j->srv;
    llorch_result res = {0};
    int rc = -1;

    /* A slot: at most max_concurrent jobs are at the router at once. */
    pthread_mutex_lock(&srv->mu);
    while (!srv->stopping && !__atomic_load_n(&j->cancelled, __ATOMIC_ACQUIRE) &&
           srv->n_active >= srv->cfg.max_concurrent)
        pthread_cond_wait(&srv->cond, &srv->mu);
    srv->n_waiting--;
    bool run = !srv->stopping && !__atomic_load_n(&j->cancelled, __ATOMIC_ACQUIRE);
    if (run)
        srv->n_active++;
    pthread_mutex_unlock(&srv->mu);

    if (!run) {
        snprintf(res.stop_reason, sizeof res.stop_reason, "cancelled");
        snprintf(res.error, sizeof res.error, "the server is stopping");
        res.error_code = 9;
    } else {
        char err[256] = "";
        llorch_client *c = s_pool_get(srv, err, sizeof err);
        if (!c) {
            snprintf(res.stop_reason, sizeof res.stop_reason, "error");
            snprintf(res.error, sizeof res.error, "cannot reach the router: %s", err);
            res.error_code = -1;
        } else {
            pthread_mutex_lock(&j->mu);
            j->client = c;
            bool cancelled = __atomic_load_n(&j->cancelled, __ATOMIC_ACQUIRE);
            pthread_mutex_unlock(&j->mu);
            if (cancelled) {
                snprintf(res.stop_reason, sizeof res.stop_reason, "cancelled");
            } else {
                /* The silence limit is only a backstop for a router that stopped
                 * answering; the request timeout proper is enforced by the server. */
                j->req.params.timeout_ms = (int)(srv->cfg.timeout_s + 30) * 1000;
                rc = llorch_generate_tokens(c, j->ids, j->n_ids, &j->req.params, s_on_token, j,
                                            &res);
            }
            pthread_mutex_lock(&j->mu);
            j->client = NULL;
            pthread_mutex_unlock(&j->mu);
            s_pool_put(srv, c, rc == 0 || res.error_code > 0);
        }
        pthread_mutex_lock(&srv->mu);
        srv->n_active--;
        pthread_cond_broadcast(&srv->cond);
        pthread_mutex_unlock(&srv->mu);
    }

    pthread_mutex_lock(&j->mu);
    s_finish(j, rc, &res);
    pthread_mutex_unlock(&j->mu);

    pthread_mutex_lock(&srv->mu);
    for (unsigned i = 0; i < srv->n_jobs; i++)
        if (srv->jobs[i] == j) {
            srv->jobs[i] = srv->jobs[--srv->n_jobs];
            break;
        }
    srv->n_threads--;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->mu);
    http_job_unref(&j);
    return NULL;
}

int http_job_start(http_job *j)
{
    struct http_server *srv = j->srv;
    if (j->req.stream && j->req.kind == HTTP_CHAT) {
        /* OpenAI's first chat chunk carries the role; it also commits the headers. */
        pthread_mutex_lock(&j->mu);
        s_chunk(j, true, "", 0, NULL, NULL, 0);
        pthread_mutex_unlock(&j->mu);
    }
    pthread_mutex_lock(&srv->mu);
    if (srv->n_jobs == srv->cap_jobs) {
        unsigned cap = srv->cap_jobs ? srv->cap_jobs * 2 : 64;
        http_job **g = realloc(srv->jobs, cap * sizeof *g);
        if (!g) {
            pthread_mutex_unlock(&srv->mu);
            return -1;
        }
        srv->jobs = g;
        srv->cap_jobs = cap;
    }
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t t;
    int rc = pthread_create(&t, &attr, s_job_main, j);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_unlock(&srv->mu);
        pthread_mutex_lock(&j->mu);
        j->refs--;
        pthread_mutex_unlock(&j->mu);
        return -1;
    }
    srv->jobs[srv->n_jobs++] = j;
    srv->n_threads++;
    pthread_mutex_unlock(&srv->mu);
    return 0;
}

int http_router_stats(struct http_server *srv, double max_age_ms, llorch_stat *out, size_t cap,
                      size_t *n, char *errbuf, size_t errbuf_size)
{
    pthread_mutex_lock(&srv->stats_mu);
    const double now = http_now_ms();
    if (now - srv->stats_at_ms >= max_age_ms || !srv->stats_at_ms) {
        char err[256] = "";
        if (!srv->stats_client)
            srv->stats_client = llorch_connect(srv->endpoint, NULL, err, sizeof err);
        srv->stats_ok = srv->stats_client &&
                        llorch_stats(srv->stats_client, srv->stats, HTTP_STATS_CAP,
                                     &srv->n_stats, 1000, err, sizeof err) == 0;
        if (!srv->stats_ok) {
            /* A late answer must not pass for the next one's: start afresh. */
            llorch_close(&srv->stats_client);
            snprintf(srv->stats_err, sizeof srv->stats_err, "%s", err);
            srv->n_stats = 0;
        }
        srv->stats_at_ms = http_now_ms();
    }
    size_t k = srv->n_stats < cap ? srv->n_stats : cap;
    memcpy(out, srv->stats, k * sizeof *out);
    *n = k;
    int rc = srv->stats_ok ? 0 : -1;
    if (!srv->stats_ok)
        snprintf(errbuf, errbuf_size, "%s", srv->stats_err);
    pthread_mutex_unlock(&srv->stats_mu);
    return rc;
}
