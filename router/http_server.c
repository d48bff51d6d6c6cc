/* http_server.c - libmicrohttpd serving the OpenAI-compatible API, /health and /metrics. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_job.h"
#include "log.h"
#include "proc.h"

/* One thread per connection: a handler may block while its request generates, and
 * every wait is a short timed one so that a client that left is noticed at once. */
#define S_POLL_MS 100
#define S_GRACE_MS 3000  /* after a cancel, how long a request may take to wind down */
#define S_DRAIN_BYTES (16u << 20) /* oversized bodies up to this are read before the 413 */

typedef struct s_conn {
    char *body;
    size_t len, cap;
    bool too_big;
} s_conn;

/* The reader of one streamed response. */
typedef struct s_stream {
    http_job *job;
    int fd;                  /* the client's socket, watched for a hang-up */
    double last_write_ms;
    double deadline_ms;
    bool ended;              /* the timeout's error event went out: end the stream */
} s_stream;

/* ---- responses ---- */

/* Queues body (malloc'd, freed here) with its type and one more header when header is
 * not NULL (Retry-After, Allow). */
static enum MHD_Result s_send(struct MHD_Connection *c, int status, const char *type, char *body,
                              const char *header, const char *value)
{
    if (!body)
        return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (header)
        MHD_add_response_header(r, header, value);
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result s_json(http_server *srv, struct MHD_Connection *c, const char *endpoint,
                              int status, json_t *j)
{
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    http_metrics_request(&srv->metrics, endpoint, status);
    return s_send(c, status, "application/json", body, status == 503 ? "Retry-After" : NULL, "1");
}

static enum MHD_Result s_fail(http_server *srv, struct MHD_Connection *c, const char *endpoint,
                              const http_fail *f)
{
    http_metrics_request(&srv->metrics, endpoint, f->status);
    const bool retry = f->status == 429 || f->status == 503;
    return s_send(c, f->status, "application/json", http_fail_json(f),
                  retry ? "Retry-After" : NULL, "1");
}

/* ---- the client's socket ---- */

static int s_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* Whether the peer closed its end: a hang-up, or a readable socket with nothing in it. */
static bool s_peer_gone(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
        return true;
    char byte;
    return (p.revents & POLLIN) && recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void s_timed_wait(pthread_cond_t *cond, pthread_mutex_t *mu, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cond, mu, &ts);
}

/* ---- streaming ---- */

/* The stream outlived --http-timeout: its last event is the timeout error, written at
 * once (the generation winds down on its own; nothing waits for it). */
static ssize_t s_timeout_event(s_stream *st, http_server *srv, char *buf, size_t max)
{
    http_fail f;
    http_fail_set(&f, 504, "timeout", "timeout", NULL,
                  "the request took longer than %u s (--http-timeout): it was cancelled",
                  srv->cfg.timeout_s);
    char *body = http_fail_json(&f);
    json_error_t e;
    json_t *ev = body ? json_loads(body, 0, &e) : NULL;
    free(body);
    char *out = NULL;
    size_t len = 0, cap = 0;
    st->ended = true;
    if (!ev || http_sse_append_json(&out, &len, &cap, ev) != 0 || len > max) {
        free(out);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    memcpy(buf, out, len);
    free(out);
    return (ssize_t)len;
}

static ssize_t s_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    s_stream *st = cls;
    http_job *j = st->job;
    http_server *srv = j->srv;
    if (st->ended)
        return MHD_CONTENT_READER_END_OF_STREAM;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        if (j->out_sent < j->out_len) {
            size_t n = j->out_len - j->out_sent;
            n = n < max ? n : max;
            memcpy(buf, j->out + j->out_sent, n);
            j->out_sent += n;
            pthread_mutex_unlock(&j->mu);
            st->last_write_ms = http_now_ms();
            return (ssize_t)n;
        }
        if (j->done) {
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        const double now = http_now_ms();
        bool stopping = __atomic_load_n(&srv->stopping, __ATOMIC_ACQUIRE);
        bool gone = !stopping && s_peer_gone(st->fd);
        if (stopping || gone) {
            pthread_mutex_unlock(&j->mu);
            if (gone)
                log_debug("http: %s: the client went away: cancelling", j->id);
            http_job_cancel(j, false);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (now > st->deadline_ms) {
            pthread_mutex_unlock(&j->mu);
            http_job_cancel(j, true);
            return s_timeout_event(st, srv, buf, max);
        }
        if (now - st->last_write_ms >= srv->cfg.keepalive_s * 1000.0) {
            pthread_mutex_unlock(&j->mu);
            static const char ka[] = ": keep-alive\n\n";
            size_t n = sizeof ka - 1 < max ? sizeof ka - 1 : max;
            memcpy(buf, ka, n);
            st->last_write_ms = now;
            return (ssize_t)n;
        }
        s_timed_wait(&j->cond, &j->mu, S_POLL_MS);
    }
}

/* The response is gone (finished, or the client hung up mid-write): stop generating. */
static void s_reader_free(void *cls)
{
    s_stream *st = cls;
    http_job_cancel(st->job, false);
    http_job_unref(&st->job);
    free(st);
}

static enum MHD_Result s_stream_response(http_server *srv, struct MHD_Connection *c,
                                         const char *endpoint, http_job *j)
{
    s_stream *st = calloc(1, sizeof *st);
    if (!st)
        return MHD_NO;
    st->job = j;
    st->fd = s_fd(c);
    st->last_write_ms = http_now_ms();
    st->deadline_ms = j->arrival_ms + srv->cfg.timeout_s * 1000.0;
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, s_reader, st, s_reader_free);
    if (!r) {
        free(st);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    http_metrics_request(&srv->metrics, endpoint, 200);
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return rc;
}

/* ---- a whole body ---- */

/* Waits in the connection's thread for the job to end, watching the client and the
 * deadline; answers with the completion or the failure. */
static enum MHD_Result s_wait_response(http_server *srv, struct MHD_Connection *c,
                                       const char *endpoint, http_job *j)
{
    const int fd = s_fd(c);
    const double deadline = j->arrival_ms + srv->cfg.timeout_s * 1000.0;
    double cancelled_at = 0;
    bool gone = false;
    pthread_mutex_lock(&j->mu);
    while (!j->done) {
        const double now = http_now_ms();
        if (__atomic_load_n(&srv->stopping, __ATOMIC_ACQUIRE))
            break;
        if (cancelled_at && now - cancelled_at > S_GRACE_MS)
            break;
        if (!cancelled_at && (now > deadline || (gone = s_peer_gone(fd)))) {
            cancelled_at = now;
            pthread_mutex_unlock(&j->mu);
            http_job_cancel(j, !gone);
            pthread_mutex_lock(&j->mu);
            continue;
        }
        s_timed_wait(&j->cond, &j->mu, S_POLL_MS);
    }
    http_fail f;
    json_t *body = NULL;
    if (gone) {
        pthread_mutex_unlock(&j->mu);
        http_metrics_request(&srv->metrics, endpoint, 499);
        return MHD_NO; /* nobody to answer: close */
    }
    if (!j->done) {
        if (cancelled_at)
            http_fail_set(&f, 504, "timeout", "timeout", NULL,
                          "the request took longer than %u s (--http-timeout)",
                          srv->cfg.timeout_s);
        else
            http_fail_set(&f, 503, "server_error", "unavailable", NULL,
                          "the server is stopping: retry with another instance");
    } else if (j->failed) {
        f = j->fail;
    } else {
        body = http_reply_json(&j->reply, j->text ? j->text : "", j->text_len, j->finish,
                               (unsigned)j->n_ids, j->result.n_generated_tokens, j->lps,
                               j->n_lps);
    }
    bool ok = j->done && !j->failed;
    pthread_mutex_unlock(&j->mu);
    if (ok)
        return s_json(srv, c, endpoint, 200, body);
    return s_fail(srv, c, endpoint, &f);
}

/* ---- generation requests ---- */

static enum MHD_Result s_generate(http_server *srv, struct MHD_Connection *c,
                                  const char *endpoint, http_kind kind, const s_conn *body)
{
    http_fail f = {0};
    pthread_mutex_lock(&srv->mu);
    bool ready = srv->model_ready;
    pthread_mutex_unlock(&srv->mu);
    if (!ready) {
        http_fail_set(&f, 503, "server_error", "model_not_ready", NULL,
                      "the model is still loading (the router waits for the loader's "
                      "manifest): retry shortly");
        return s_fail(srv, c, endpoint, &f);
    }
    /* Without a pipeline the router would queue the request until one appears: a load
     * balancer is better served by a prompt 503, as /health says. */
    llorch_stat st[HTTP_STATS_CAP];
    size_t n_st = 0;
    char stats_err[256];
    if (http_router_stats(srv, 100, st, HTTP_STATS_CAP, &n_st, stats_err, sizeof stats_err) != 0) {
        http_fail_set(&f, 503, "server_error", "unavailable", NULL,
                      "the router does not answer: %s", stats_err);
        return s_fail(srv, c, endpoint, &f);
    }
    if (llorch_stat_get(st, n_st, "pipelines_ready") < 1) {
        http_fail_set(&f, 503, "server_error", "unavailable", NULL,
                      "no pipeline is ready: %.0f workers alive, none covering every layer; "
                      "retry when /health says ok", llorch_stat_get(st, n_st, "workers_alive"));
        return s_fail(srv, c, endpoint, &f);
    }
    const unsigned max_prompt = srv->cfg.max_prompt_tokens ? srv->cfg.max_prompt_tokens
                                                           : srv->n_ctx - 1;
    http_limits lim = {.max_tokens = srv->cfg.max_tokens,
                       .default_max_tokens = srv->cfg.default_max_tokens,
                       .n_vocab = srv->tok->n_vocab,
                       .model_names = {srv->cfg.model_name[0] ? srv->cfg.model_name : NULL,
                                       srv->model_id}};
    if (!lim.model_names[0])
        lim.model_names[0] = srv->model_id;
    http_request req;
    if (http_request_parse(kind, body->body ? body->body : "", body->len, &lim, &req, &f) != 0)
        return s_fail(srv, c, endpoint, &f);

    int32_t *ids = req.prompt_ids;
    size_t n_ids = req.n_prompt_ids;
    req.prompt_ids = NULL;
    if (req.prompt_text) {
        llorch_error err = {0};
        if (tokenizer_encode(srv->tok, req.prompt_text, strlen(req.prompt_text),
                             req.tokenize_flags, &ids, &n_ids, &err) != 0) {
            http_fail_set(&f, 400, "invalid_request_error", "invalid_value",
                          kind == HTTP_CHAT ? "messages" : "prompt",
                          "cannot tokenize the prompt: %s", err.msg);
            http_request_free(&req);
            return s_fail(srv, c, endpoint, &f);
        }
    }
    if (n_ids == 0 || n_ids > max_prompt) {
        if (n_ids == 0)
            http_fail_set(&f, 400, "invalid_request_error", "invalid_value", "prompt",
                          "the prompt is empty and this vocabulary adds no BOS: give a prompt");
        else
            http_fail_set(&f, 400, "invalid_request_error", "context_length_exceeded",
                          kind == HTTP_CHAT ? "messages" : "prompt",
                          "the prompt has %zu tokens; at most %u are allowed (%s)", n_ids,
                          max_prompt, srv->cfg.max_prompt_tokens ? "--http-max-prompt-tokens"
                                                                 : "the model's context");
        free(ids);
        http_request_free(&req);
        return s_fail(srv, c, endpoint, &f);
    }

    /* Admission: a slot now or a place in the queue, else 429. */
    pthread_mutex_lock(&srv->mu);
    const unsigned queued = srv->n_waiting, active = srv->n_active;
    const bool stopping = srv->stopping;
    const bool full = active + queued >= srv->cfg.max_concurrent + srv->cfg.max_queue;
    if (!stopping && !full)
        srv->n_waiting++;
    pthread_mutex_unlock(&srv->mu);
    if (stopping || full) {
        free(ids);
        http_request_free(&req);
        if (full)
            http_metrics_busy(&srv->metrics);
        if (stopping)
            http_fail_set(&f, 503, "server_error", "unavailable", NULL, "the server is stopping");
        else
            http_fail_set(&f, 429, "rate_limit_error", "queue_full", NULL,
                          "the server is busy: %u requests generating and %u queued "
                          "(--http-max-concurrent %u, --http-max-queue %u); retry later",
                          active, queued, srv->cfg.max_concurrent, srv->cfg.max_queue);
        return s_fail(srv, c, endpoint, &f);
    }
    http_job *j = http_job_new(srv, &req, ids, n_ids);
    if (!j || http_job_start(j) != 0) {
        pthread_mutex_lock(&srv->mu);
        srv->n_waiting--;
        pthread_mutex_unlock(&srv->mu);
        http_job_unref(&j);
        http_fail_set(&f, 503, "server_error", NULL, NULL,
                      "the server cannot start another request now (memory or threads)");
        return s_fail(srv, c, endpoint, &f);
    }
    if (j->req.stream)
        return s_stream_response(srv, c, endpoint, j); /* the reader owns j now */
    enum MHD_Result rc = s_wait_response(srv, c, endpoint, j);
    http_job_unref(&j);
    return rc;
}

/* ---- the other endpoints ---- */

static enum MHD_Result s_health(http_server *srv, struct MHD_Connection *c)
{
    pthread_mutex_lock(&srv->mu);
    bool ready = srv->model_ready;
    pthread_mutex_unlock(&srv->mu);
    if (!ready)
        return s_json(srv, c, "/health", 503,
                      json_pack("{s:s, s:s}", "status", "loading", "reason",
                                "the router is waiting for the model's manifest from the loader"));
    llorch_stat st[HTTP_STATS_CAP];
    size_t n = 0;
    char err[256];
    if (http_router_stats(srv, 0, st, HTTP_STATS_CAP, &n, err, sizeof err) != 0)
        return s_json(srv, c, "/health", 503,
                      json_pack("{s:s, s:s+}", "status", "unavailable", "reason",
                                "the router does not answer: ", err));
    const double pipelines = llorch_stat_get(st, n, "pipelines_ready");
    const double workers = llorch_stat_get(st, n, "workers_alive");
    const double layers = llorch_stat_get(st, n, "n_layers");
    if (pipelines < 1) {
        char reason[200];
        snprintf(reason, sizeof reason,
                 "no pipeline covers all %.0f layers yet: %.0f workers alive; start or wait for "
                 "workers", layers, workers);
        return s_json(srv, c, "/health", 503,
                      json_pack("{s:s, s:s, s:f, s:f}", "status", "unavailable", "reason", reason,
                                "workers_alive", workers, "pipelines_ready", pipelines));
    }
    return s_json(srv, c, "/health", 200,
                  json_pack("{s:s, s:f, s:f, s:f, s:f}", "status", "ok", "pipelines_ready",
                            pipelines, "workers_alive", workers, "sessions_active",
                            llorch_stat_get(st, n, "sessions_active"), "queue_depth",
                            llorch_stat_get(st, n, "queue_depth")));
}

static enum MHD_Result s_metrics(http_server *srv, struct MHD_Connection *c)
{
    llorch_stat st[HTTP_STATS_CAP];
    size_t n = 0;
    char err[256];
    pthread_mutex_lock(&srv->mu);
    const bool ready = srv->model_ready;
    const unsigned active = srv->n_active, queued = srv->n_waiting;
    pthread_mutex_unlock(&srv->mu);
    const bool ok = ready && http_router_stats(srv, 0, st, HTTP_STATS_CAP, &n, err, sizeof err) == 0;
    http_metrics_request(&srv->metrics, "/metrics", 200);
    char *text = http_metrics_render(&srv->metrics, active, queued, ready, st, n, ok);
    return s_send(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, NULL, NULL);
}

static json_t *s_model_object(http_server *srv)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:{s:s, s:i}}", "id",
                     srv->cfg.model_name[0] ? srv->cfg.model_name : srv->model_id, "object",
                     "model", "created", (json_int_t)srv->started, "owned_by", "llorch", "meta",
                     "model_id", srv->model_id, "n_ctx", (json_int_t)srv->n_ctx);
}

static enum MHD_Result s_models(http_server *srv, struct MHD_Connection *c, const char *which)
{
    http_fail f;
    pthread_mutex_lock(&srv->mu);
    bool ready = srv->model_ready;
    pthread_mutex_unlock(&srv->mu);
    if (!ready) {
        http_fail_set(&f, 503, "server_error", "model_not_ready", NULL,
                      "the model is still loading: retry shortly");
        return s_fail(srv, c, "/v1/models", &f);
    }
    if (!which)
        return s_json(srv, c, "/v1/models", 200,
                      json_pack("{s:s, s:[o]}", "object", "list", "data", s_model_object(srv)));
    if (strcmp(which, srv->model_id) && strcmp(which, srv->cfg.model_name)) {
        http_fail_set(&f, 404, "invalid_request_error", "model_not_found", "model",
                      "the model '%.100s' does not exist here", which);
        return s_fail(srv, c, "/v1/models", &f);
    }
    return s_json(srv, c, "/v1/models", 200, s_model_object(srv));
}

/* ---- dispatch ---- */

static enum MHD_Result s_method_not_allowed(http_server *srv, struct MHD_Connection *c,
                                            const char *endpoint, const char *allow,
                                            const char *method)
{
    http_fail f;
    http_fail_set(&f, 405, "invalid_request_error", "method_not_allowed", NULL,
                  "%s takes %s, not %s", endpoint, allow, method);
    http_metrics_request(&srv->metrics, endpoint, 405);
    return s_send(c, 405, "application/json", http_fail_json(&f), "Allow", allow);
}

static enum MHD_Result s_access(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version,
                                const char *upload_data, size_t *upload_data_size,
                                void **con_cls)
{
    (void)version;
    http_server *srv = cls;
    s_conn *cc = *con_cls;
    http_fail f;
    if (!cc) {
        if (!(cc = calloc(1, sizeof *cc)))
            return MHD_NO;
        *con_cls = cc;
        /* A body somewhat too large is read and dropped, so that the client, still
         * sending, gets to read the 413; a huge one is refused at once (the connection
         * closes under the sender). */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        const unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
        if (declared > srv->cfg.max_body_bytes)
            cc->too_big = true;
        if (declared > S_DRAIN_BYTES && declared > srv->cfg.max_body_bytes) {
            http_fail_set(&f, 413, "invalid_request_error", "request_too_large", NULL,
                          "the request body has %s bytes; at most %zu are accepted "
                          "(--http-max-body)", cl, srv->cfg.max_body_bytes);
            cc->too_big = true;
            return s_fail(srv, c, "other", &f);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!cc->too_big && cc->len + *upload_data_size > srv->cfg.max_body_bytes)
            cc->too_big = true;
        if (!cc->too_big &&
            http_buf_append(&cc->body, &cc->len, &cc->cap, upload_data, *upload_data_size) != 0)
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }

    const bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    const bool post = !strcmp(method, "POST");
    if (!strcmp(url, "/health"))
        return get ? s_health(srv, c) : s_method_not_allowed(srv, c, "/health", "GET", method);

    if (srv->keys.n &&
        !http_keys_check(&srv->keys,
                         MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"))) {
        bool given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization") != NULL;
        http_fail_set(&f, 401, "invalid_request_error", "invalid_api_key", NULL,
                      given ? "the API key is not valid: send Authorization: Bearer KEY with a "
                              "key of the server's --api-key-file"
                            : "an API key is required: send Authorization: Bearer KEY");
        return s_fail(srv, c, "other", &f);
    }
    if (cc->too_big) {
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        http_fail_set(&f, 413, "invalid_request_error", "request_too_large", NULL,
                      "the request body has %s bytes; at most %zu are accepted "
                      "(--http-max-body)", cl ? cl : "more", srv->cfg.max_body_bytes);
        return s_fail(srv, c, "other", &f);
    }
    if (!strcmp(url, "/metrics"))
        return get ? s_metrics(srv, c) : s_method_not_allowed(srv, c, "/metrics", "GET", method);
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models"))
        return get ? s_models(srv, c, NULL)
                   : s_method_not_allowed(srv, c, "/v1/models", "GET", method);
    if (!strncmp(url, "/v1/models/", 11))
        return get ? s_models(srv, c, url + 11)
                   : s_method_not_allowed(srv, c, "/v1/models", "GET", method);
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/completions"))
        return post ? s_generate(srv, c, "/v1/completions", HTTP_COMPLETION, cc)
                    : s_method_not_allowed(srv, c, "/v1/completions", "POST", method);
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions"))
        return post ? s_generate(srv, c, "/v1/chat/completions", HTTP_CHAT, cc)
                    : s_method_not_allowed(srv, c, "/v1/chat/completions", "POST", method);
    http_fail_set(&f, 404, "invalid_request_error", "not_found", NULL,
                  "no such endpoint: %s %.200s (POST /v1/completions, POST /v1/chat/completions, "
                  "GET /v1/models, /health, /metrics)", method, url);
    return s_fail(srv, c, "other", &f);
}

static void s_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    s_conn *cc = *con_cls;
    if (cc) {
        free(cc->body);
        free(cc);
    }
    *con_cls = NULL;
}

static void s_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_debug("http: %s", msg);
}

/* ---- lifecycle ---- */

/* "ADDR:PORT", "[V6]:PORT", "*:PORT" or ":PORT" into a socket address. */
static int s_listen_addr(const char *listen, struct sockaddr_storage *sa, bool *v6,
                         llorch_error *err)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || !colon[1])
        return llorch_error_set(err, "--http wants ADDR:PORT (e.g. 127.0.0.1:8080 or *:8080), "
                                "got '%s'", listen);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return llorch_error_set(err, "--http %s: the port must be 0..65535", listen);
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof host)
        return llorch_error_set(err, "--http %s: the address is too long", listen);
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    memset(sa, 0, sizeof *sa);
    struct sockaddr_in *in4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
    *v6 = false;
    if (!strcmp(host, "localhost"))
        snprintf(host, sizeof host, "127.0.0.1");
    if (!host[0] || !strcmp(host, "*")) {
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl(INADDR_ANY);
        in4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *v6 = true;
    } else {
        return llorch_error_set(err, "--http %s: '%s' is not an IPv4 or IPv6 address (use "
                                "127.0.0.1, localhost, 0.0.0.0, * or [::1])", listen, host);
    }
    return 0;
}

/* The private folder and the endpoint in it. 0, or -1 with err. */
static int s_private_endpoint(http_server *srv, llorch_error *err)
{
    const int stale = proc_run_dirs_sweep("/tmp", "llorch-router");
    if (stale > 0)
        log_info("http: removed %d private folder%s of routers that were killed", stale,
                 stale == 1 ? "" : "s");
    snprintf(srv->dir, sizeof srv->dir, "/tmp/llorch-router-%ld-XXXXXX", (long)getpid());
    if (!mkdtemp(srv->dir)) {
        int e = errno;
        srv->dir[0] = '\0';
        return llorch_error_set(err, "cannot make a private folder in /tmp for the HTTP "
                                "server's path to the router: %s", strerror(e));
    }
    snprintf(srv->endpoint, sizeof srv->endpoint, "ipc://%s/http", srv->dir);
    return 0;
}

/* Removes the endpoint's socket file (the router's socket may still be bound: it serves
 * the clients it has, and nobody can connect anew) and the folder. */
static void s_private_remove(http_server *srv)
{
    if (!srv->dir[0])
        return;
    char path[sizeof srv->dir + 8];
    snprintf(path, sizeof path, "%s/http", srv->dir);
    unlink(path);
    if (rmdir(srv->dir) != 0 && errno != ENOENT)
        log_warn("http: cannot remove %s: %s", srv->dir, strerror(errno));
    srv->dir[0] = '\0';
}

const char *http_server_router_endpoint(const http_server *srv)
{
    return srv ? srv->endpoint : NULL;
}

http_server *http_server_start(const http_config *cfg, llorch_error *err)
{
    struct sockaddr_storage sa;
    bool v6;
    if (s_listen_addr(cfg->listen, &sa, &v6, err) != 0)
        return NULL;
    if (sodium_init() < 0) {
        llorch_error_set(err, "libsodium failed to initialise");
        return NULL;
    }
    http_server *srv = calloc(1, sizeof *srv);
    if (!srv || !(srv->idle = calloc(cfg->max_concurrent, sizeof *srv->idle))) {
        free(srv);
        llorch_error_set(err, "out of memory");
        return NULL;
    }
    srv->cfg = *cfg;
    srv->started = (long long)time(NULL);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cond, NULL);
    pthread_mutex_init(&srv->stats_mu, NULL);
    http_metrics_init(&srv->metrics);
    if ((cfg->api_key_file[0] && http_keys_load(&srv->keys, cfg->api_key_file, err) != 0) ||
        s_private_endpoint(srv, err) != 0) {
        http_server_stop(&srv);
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    srv->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, s_access, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_NOTIFY_COMPLETED, s_completed, srv, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log,
        srv, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(cfg->max_concurrent + cfg->max_queue + 64), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)120, MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512 * 1024), MHD_OPTION_END);
    if (!srv->mhd) {
        llorch_error_set(err, "cannot serve HTTP on %s (is the port in use, or the address "
                         "not on this host?)", cfg->listen);
        http_server_stop(&srv);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    log_info("http: serving the OpenAI API on %s (port %u)%s", cfg->listen,
             di ? di->port : 0, srv->keys.n ? ", API keys required" : "");
    log_debug("http: reaches the router on %s", srv->endpoint);
    return srv;
}

void http_server_set_model(http_server *srv, const char *model_id, const tokenizer *tok,
                           uint32_t n_ctx)
{
    if (!srv)
        return;
    pthread_mutex_lock(&srv->mu);
    snprintf(srv->model_id, sizeof srv->model_id, "%s", model_id);
    srv->tok = tok;
    srv->n_ctx = n_ctx;
    srv->model_ready = true;
    pthread_mutex_unlock(&srv->mu);
}

void http_server_stop(http_server **ps)
{
    http_server *srv = *ps;
    *ps = NULL;
    if (!srv)
        return;
    /* Everything in flight is told to stop; the connection threads see `stopping`. */
    pthread_mutex_lock(&srv->mu);
    __atomic_store_n(&srv->stopping, true, __ATOMIC_RELEASE);
    unsigned n = srv->n_jobs;
    http_job **jobs = n ? malloc(n * sizeof *jobs) : NULL;
    for (unsigned i = 0; jobs && i < n; i++) {
        jobs[i] = srv->jobs[i];
        pthread_mutex_lock(&jobs[i]->mu);
        jobs[i]->refs++;
        pthread_mutex_unlock(&jobs[i]->mu);
    }
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->mu);
    for (unsigned i = 0; jobs && i < n; i++) {
        http_job_cancel(jobs[i], false);
        http_job_unref(&jobs[i]);
    }
    free(jobs);
    if (srv->mhd)
        MHD_stop_daemon(srv->mhd);
    s_private_remove(srv);
    /* Job threads end once the router answers their cancel; if it no longer runs they
     * never do, and the server is left to the process's exit. */
    const double until = http_now_ms() + 300;
    pthread_mutex_lock(&srv->mu);
    while (srv->n_threads && http_now_ms() < until)
        s_timed_wait(&srv->cond, &srv->mu, 50);
    unsigned left = srv->n_threads;
    pthread_mutex_unlock(&srv->mu);
    if (left) {
        log_warn("http: %u requests did not end (the router no longer answers); leaving them",
                 left);
        return;
    }
    http_clients_close(srv);
    http_keys_free(&srv->keys);
    http_metrics_destroy(&srv->metrics);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cond);
    pthread_mutex_destroy(&srv->stats_mu);
    free(srv->idle);
    free(srv->jobs);
    free(srv);
}
