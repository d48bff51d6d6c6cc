/* http_metrics.c - the HTTP API's counters and histograms, and /metrics in Prometheus text. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

static const double s_ttft_bounds[HTTP_HIST_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                        0.5,   1,    2.5,   5,    10,  30};
static const double s_speed_bounds[HTTP_HIST_BUCKETS] = {1,   5,    10,   25,   50,    100,
                                                         250, 500, 1000, 2500, 5000, 10000};
static const double s_duration_bounds[HTTP_HIST_BUCKETS] = {0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                                            2.5,  5,    10,  30,   60,  300};

void http_metrics_init(http_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->ttft_s.bounds = s_ttft_bounds;
    m->tokens_per_s.bounds = s_speed_bounds;
    m->duration_s.bounds = s_duration_bounds;
}

void http_metrics_destroy(http_metrics *m)
{
    pthread_mutex_destroy(&m->mu);
}

static void s_observe(http_histogram *h, double v)
{
    int b = 0;
    while (b < HTTP_HIST_BUCKETS && v > h->bounds[b])
        b++;
    h->counts[b]++;
    h->sum += v;
    h->count++;
}

void http_metrics_request(http_metrics *m, const char *endpoint, int status)
{
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_requests &&
           !(m->requests[i].status == status && !strcmp(m->requests[i].endpoint, endpoint)))
        i++;
    if (i == m->n_requests && i < HTTP_MAX_SERIES) {
        m->requests[i].endpoint = endpoint;
        m->requests[i].status = status;
        m->requests[i].n = 0;
        m->n_requests++;
    }
    if (i < m->n_requests)
        m->requests[i].n++;
    pthread_mutex_unlock(&m->mu);
}

void http_metrics_generation(http_metrics *m, unsigned prompt_tokens, unsigned completion_tokens,
                             double first_token_s, double generate_s, double total_s)
{
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += prompt_tokens;
    m->completion_tokens += completion_tokens;
    if (first_token_s >= 0)
        s_observe(&m->ttft_s, first_token_s);
    /* The speed after the first token: (n - 1) tokens over the time that took. */
    if (completion_tokens > 1 && generate_s > 0) {
        s_observe(&m->tokens_per_s, (completion_tokens - 1) / generate_s);
        m->generation_seconds += generate_s;
    }
    s_observe(&m->duration_s, total_s);
    pthread_mutex_unlock(&m->mu);
}

void http_metrics_cancelled(http_metrics *m, bool timeout)
{
    pthread_mutex_lock(&m->mu);
    if (timeout)
        m->cancelled_timeout++;
    else
        m->cancelled_client++;
    pthread_mutex_unlock(&m->mu);
}

void http_metrics_busy(http_metrics *m)
{
    pthread_mutex_lock(&m->mu);
    m->rejected_busy++;
    pthread_mutex_unlock(&m->mu);
}

static void s_histogram(FILE *o, const char *name, const char *help, const http_histogram *h)
{
    fprintf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int b = 0; b < HTTP_HIST_BUCKETS; b++) {
        cum += h->counts[b];
        fprintf(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[b], (unsigned long long)cum);
    }
    cum += h->counts[HTTP_HIST_BUCKETS];
    fprintf(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name,
            (unsigned long long)cum, name, h->sum, name, (unsigned long long)h->count);
}

static void s_counter(FILE *o, const char *name, const char *help, double v)
{
    fprintf(o, "# HELP %s %s\n# TYPE %s counter\n%s %.17g\n", name, help, name, name, v);
}

static void s_gauge(FILE *o, const char *name, const char *help, double v)
{
    fprintf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

/* A Prometheus metric name from a router counter name: [a-zA-Z0-9_], others become '_'. */
static void s_metric_name(char *out, size_t cap, const char *in, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < cap; i++)
        out[o++] = (isalnum((unsigned char)in[i]) || in[i] == '_') ? in[i] : '_';
    out[o] = '\0';
}

/* A label value with '\\', '"' and newlines escaped. */
static void s_label_value(FILE *o, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(o, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", o);
        else
            fputc(*v, o);
    }
}

static void s_router(FILE *o, const llorch_stat *st, size_t n)
{
    /* Plain counters first; "NAME:LABEL" ones grouped under one family per NAME. */
    for (size_t i = 0; i < n; i++) {
        if (strchr(st[i].name, ':'))
            continue;
        char name[96];
        s_metric_name(name, sizeof name, st[i].name, strlen(st[i].name));
        fprintf(o, "# HELP llorch_router_%s The router's %s counter.\n# TYPE llorch_router_%s "
                   "gauge\nllorch_router_%s %.17g\n",
                name, st[i].name, name, name, st[i].value);
    }
    for (size_t i = 0; i < n; i++) {
        const char *colon = strchr(st[i].name, ':');
        if (!colon)
            continue;
        size_t flen = (size_t)(colon - st[i].name);
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = !strncmp(st[k].name, st[i].name, flen + 1);
        if (seen)
            continue;
        char name[96];
        s_metric_name(name, sizeof name, st[i].name, flen);
        fprintf(o, "# HELP llorch_router_%s The router's %s counter, per id.\n"
                   "# TYPE llorch_router_%s gauge\n", name, name, name);
        for (size_t k = i; k < n; k++) {
            if (strncmp(st[k].name, st[i].name, flen + 1))
                continue;
            fprintf(o, "llorch_router_%s{id=\"", name);
            s_label_value(o, st[k].name + flen + 1);
            fprintf(o, "\"} %.17g\n", st[k].value);
        }
    }
}

char *http_metrics_render(http_metrics *m, unsigned in_flight, unsigned queued,
                          bool model_ready, const llorch_stat *router, size_t n_router,
                          bool router_ok)
{
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    if (!o)
        return NULL;
    pthread_mutex_lock(&m->mu);
    fputs("# HELP llorch_http_requests_total HTTP requests answered, by endpoint and status.\n"
          "# TYPE llorch_http_requests_total counter\n", o);
    for (int i = 0; i < m->n_requests; i++)
        fprintf(o, "llorch_http_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n",
                m->requests[i].endpoint, m->requests[i].status,
                (unsigned long long)m->requests[i].n);
    s_counter(o, "llorch_http_prompt_tokens_total", "Prompt tokens of finished requests.",
              (double)m->prompt_tokens);
    s_counter(o, "llorch_http_completion_tokens_total", "Tokens generated for finished requests.",
              (double)m->completion_tokens);
    s_counter(o, "llorch_http_generation_seconds_total",
              "Time spent generating after the first token.", m->generation_seconds);
    s_counter(o, "llorch_http_cancelled_client_total",
              "Generations cancelled because the client went away.", (double)m->cancelled_client);
    s_counter(o, "llorch_http_cancelled_timeout_total",
              "Generations cancelled by the request timeout.", (double)m->cancelled_timeout);
    s_counter(o, "llorch_http_rejected_busy_total",
              "Requests refused because the queue was full (429).", (double)m->rejected_busy);
    s_histogram(o, "llorch_http_time_to_first_token_seconds",
                "From the request's arrival to its first generated token.", &m->ttft_s);
    s_histogram(o, "llorch_http_tokens_per_second",
                "Generation speed of each request after its first token.", &m->tokens_per_s);
    s_histogram(o, "llorch_http_request_duration_seconds", "Whole generation requests.",
                &m->duration_s);
    pthread_mutex_unlock(&m->mu);
    s_gauge(o, "llorch_http_requests_in_flight", "Generation requests submitted to the router.",
            in_flight);
    s_gauge(o, "llorch_http_queue_depth", "Generation requests waiting for a slot.", queued);
    s_gauge(o, "llorch_http_model_ready", "1 once the model's manifest is known.", model_ready);
    s_gauge(o, "llorch_router_up", "1 when the router answered its stats request.", router_ok);
    if (router_ok)
        s_router(o, router, n_router);
    if (fclose(o) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
