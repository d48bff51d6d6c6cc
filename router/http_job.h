/* http_job.h - the HTTP server's state and one generation request shared by two threads. */
#ifndef LLORCH_HTTP_JOB_H
#define LLORCH_HTTP_JOB_H

/* A generation request (job) is shared by the connection's thread (libmicrohttpd's,
 * which writes the response) and the job's own thread (which waits for a slot and runs
 * llorch_generate_tokens, whose token callback fills the job). Both hold a reference;
 * the last one frees it. Locks: srv->mu and job->mu are never held together. */

#include "http_internal.h"

#define HTTP_STATS_CAP 256

typedef struct http_job {
    pthread_mutex_t mu;
    pthread_cond_t cond;        /* signalled when output grows or the job ends */
    int refs;
    struct http_server *srv;
    http_request req;
    int32_t *ids;               /* (n_ids) the tokenized prompt */
    size_t n_ids;
    char id[48];                /* "cmpl-..." / "chatcmpl-..." */
    http_reply reply;
    char *out;                  /* SSE bytes, out_sent of them written (stream) */
    size_t out_len, out_cap, out_sent;
    char *text;                 /* the whole text so far (non-stream) */
    size_t text_len, text_cap;
    http_logprob *lps;          /* (n_lps) per token, when logprobs are on (non-stream) */
    size_t n_lps, cap_lps;
    http_stop stop;
    llorch_client *client;      /* while llorch_generate runs */
    int cancelled;              /* atomic: stop generating (read without the lock) */
    bool timed_out, client_gone;
    bool done;                  /* finished: nothing more is added to out/text */
    bool failed;
    http_fail fail;             /* when failed */
    char finish[16];            /* "stop" or "length" */
    llorch_result result;
    double arrival_ms, first_token_ms;
} http_job;

struct http_server {
    http_config cfg;
    struct MHD_Daemon *mhd;
    char endpoint[320];          /* "ipc://<dir>/http": the router's clients socket, plain */
    char dir[64];                /* its private folder (mode 0700), removed at stop */
    http_keys keys;
    http_metrics metrics;
    long long started;           /* unix seconds, for /v1/models */

    pthread_mutex_t mu;
    pthread_cond_t cond;         /* slots, threads and model changes */
    unsigned n_active, n_waiting, n_threads;
    bool stopping;
    bool model_ready;
    char model_id[80];
    const tokenizer *tok;
    uint32_t n_ctx;
    llorch_client **idle;        /* (n_idle) connected clients for the next jobs */
    unsigned n_idle;
    http_job **jobs;             /* (n_jobs) jobs whose thread runs, for stopping */
    unsigned n_jobs, cap_jobs;

    pthread_mutex_t stats_mu;
    llorch_client *stats_client;
    llorch_stat stats[HTTP_STATS_CAP];
    size_t n_stats;
    double stats_at_ms;
    bool stats_ok;
    char stats_err[256];
};

/* Milliseconds of CLOCK_MONOTONIC. */
double http_now_ms(void);

/* A job for req (moved into the job: req is zeroed) and the prompt ids (taken over),
 * holding one reference for the caller. NULL without memory (req and ids freed). */
http_job *http_job_new(struct http_server *srv, http_request *req, int32_t *ids, size_t n_ids);

/* Starts the job's thread (which takes its own reference); the caller must already
 * have counted it in srv->n_waiting. 0, or -1 when no thread could be made. */
int http_job_start(http_job *job);

/* Asks the job to stop (the client went away, or its time ran out). Thread-safe; does
 * nothing once the job is done. */
void http_job_cancel(http_job *job, bool timeout);

/* Drops a reference; the last one frees the job. Sets *job to NULL. */
void http_job_unref(http_job **job);

/* The router's counters, asked for anew when the last answer is max_age_ms old or
 * older (0 = always). 0, or -1 with errbuf. */
int http_router_stats(struct http_server *srv, double max_age_ms, llorch_stat *out, size_t cap,
                      size_t *n, char *errbuf, size_t errbuf_size);

/* Closes the pooled and stats clients (at stop). */
void http_clients_close(struct http_server *srv);

#endif
