/* http_internal.h - the pieces of the HTTP API shared between its files and its unit tests. */
#ifndef LLORCH_HTTP_INTERNAL_H
#define LLORCH_HTTP_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "lib/llorch.h"

#define HTTP_MAX_STOP 16          /* stop strings per request (the wire's limit) */
#define HTTP_MAX_STOP_BYTES 256
#define HTTP_MAX_TOP_LOGPROBS 20  /* top_logprobs / logprobs a request may ask for */
#define HTTP_TOP_FETCH 32         /* alternatives asked of the router when logprobs are on */
#define HTTP_LOGPROB_FLOOR (-9999.0) /* a sampled token outside the alternatives seen */

/* ---- http_openai.c: requests and responses ---- */

typedef enum http_kind { HTTP_COMPLETION = 0, HTTP_CHAT = 1 } http_kind;

/* Why a request is refused: becomes {"error": {message, type, param, code}}. */
typedef struct http_fail {
    int status;          /* 4xx / 5xx */
    const char *type;    /* "invalid_request_error", "authentication_error", ... */
    const char *code;    /* NULL = null in JSON */
    char param[64];      /* "" = null */
    char message[512];
} http_fail;

/* Sets *f and returns -1 (for `return http_fail_set(...)`). param may be NULL. */
int http_fail_set(http_fail *f, int status, const char *type, const char *code,
                  const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* What a request may ask for. */
typedef struct http_limits {
    unsigned max_tokens;         /* upper bound of max_tokens */
    unsigned default_max_tokens;
    uint32_t n_vocab;            /* token ids in a prompt are below this (0 = unchecked) */
    const char *model_names[2];  /* names accepted in "model" (NULL entries skipped) */
} http_limits;

/* A validated generation request. */
typedef struct http_request {
    http_kind kind;
    bool stream;
    bool include_usage;          /* stream_options.include_usage */
    char model[128];             /* as the client named it */
    char *prompt_text;           /* text to tokenize (malloc'd), or NULL with prompt_ids */
    unsigned tokenize_flags;     /* tokenizer_encode flags for prompt_text */
    int32_t *prompt_ids;         /* (n_prompt_ids) a token-id prompt, malloc'd */
    size_t n_prompt_ids;
    llorch_params params;        /* stop points into stop[] */
    char *stop[HTTP_MAX_STOP];   /* (n_stop) malloc'd */
    const char *stop_ptrs[HTTP_MAX_STOP];
    unsigned n_stop;
    bool logprobs;               /* per-token log probabilities wanted */
    unsigned top_logprobs;       /* alternatives per token, 0..HTTP_MAX_TOP_LOGPROBS */
} http_request;

/* Parses and validates a JSON body of kind. On success fills *out (free with
 * http_request_free) and returns 0; otherwise -1 with *fail saying what is wrong
 * (400, or 404 for an unknown model). */
int http_request_parse(http_kind kind, const char *body, size_t body_len,
                       const http_limits *lim, http_request *out, http_fail *fail);

/* Frees what a parsed request holds; safe on a zeroed or already freed request. */
void http_request_free(http_request *r);

/* {"error": {...}} of f as a malloc'd compact JSON string. NULL only without memory. */
char *http_fail_json(const http_fail *f);

/* One token's log probability and its alternatives, for the logprobs fields. */
typedef struct http_logprob {
    int32_t id;
    float logprob;
    unsigned n_top;
    int32_t top_ids[HTTP_MAX_TOP_LOGPROBS];
    float top_logprobs[HTTP_MAX_TOP_LOGPROBS];
} http_logprob;

/* What a finished or streaming response is made of. */
typedef struct http_reply {
    http_kind kind;
    const char *id;              /* "cmpl-..." / "chatcmpl-..." */
    long long created;           /* unix seconds */
    const char *model;
    const tokenizer *tok;        /* for token texts in logprobs (may be NULL without them) */
    bool logprobs;
} http_reply;

/* The non-streaming body: text, finish_reason, usage and (when r->logprobs) the
 * logprobs of lps[0..n_lps). Returns a new JSON object or NULL without memory. */
json_t *http_reply_json(const http_reply *r, const char *text, size_t text_len,
                        const char *finish_reason, unsigned prompt_tokens,
                        unsigned completion_tokens, const http_logprob *lps, size_t n_lps);

/* One streaming chunk: the text delta (chat: and role when first), finish_reason or
 * NULL, the logprobs of lps[0..n_lps). Returns a new JSON object or NULL. */
json_t *http_chunk_json(const http_reply *r, bool first, const char *text, size_t text_len,
                        const char *finish_reason, const http_logprob *lps, size_t n_lps);

/* The final usage-only chunk of stream_options.include_usage. */
json_t *http_usage_chunk_json(const http_reply *r, unsigned prompt_tokens,
                              unsigned completion_tokens);

/* Appends the SSE event "data: <compact json>\n\n" of j (consumed) to *buf (*len bytes,
 * *cap allocated). 0, or -1 without memory. */
int http_sse_append_json(char **buf, size_t *len, size_t *cap, json_t *j);

/* Appends raw bytes (e.g. "data: [DONE]\n\n"). 0 or -1 without memory. */
int http_buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

/* Copies s[0..n) into a NUL-terminated malloc'd string, replacing every ill-formed
 * UTF-8 sequence by U+FFFD (jansson only takes valid UTF-8). NULL without memory. */
char *http_utf8_sanitize(const char *s, size_t n, size_t *out_len);

/* ---- http_chat.c: the Llama-2 chat template ---- */

/* Renders messages (a JSON array of {role, content}) as the Llama-2 chat prompt
 * "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ..."
 * (contents trimmed, as Meta's reference and Hugging Face's template do), to be
 * tokenized with TOKENIZE_PARSE_SPECIAL. Roles: an optional first "system", then
 * "user" and "assistant" alternating, ending with "user". Returns a malloc'd string,
 * or NULL with *fail (400) saying which message is wrong. */
char *http_chat_render(const json_t *messages, http_fail *fail);

/* ---- http_stop.c: stop strings across token boundaries ---- */

/* Holds back text that could be the start of a stop string, and cuts the text at the
 * first stop string once one appears. Text pushed is the generated text in order. */
typedef struct http_stop {
    const char *const *stop;     /* (n_stop) borrowed */
    unsigned n_stop;
    char *held;                  /* bytes not yet released */
    size_t n_held, cap_held;
    char *out;                   /* the last release */
    size_t cap_out;
    bool hit;                    /* a stop string was found: nothing more is released */
} http_stop;

void http_stop_init(http_stop *m, const char *const *stop, unsigned n_stop);

/* Adds text[0..len); *emit and *emit_len receive what can be shown now (valid until the
 * next call). Returns 1 when a stop string completed (emit is the text before it),
 * 0 otherwise, -1 without memory. After a hit every push releases nothing. */
int http_stop_push(http_stop *m, const char *text, size_t len, const char **emit,
                   size_t *emit_len);

/* The end of generation without a stop string: releases what is held. */
void http_stop_flush(http_stop *m, const char **emit, size_t *emit_len);

void http_stop_free(http_stop *m);

/* ---- http_metrics.c: counters and Prometheus text ---- */

#define HTTP_HIST_BUCKETS 12
#define HTTP_MAX_SERIES 64

typedef struct http_histogram {
    const double *bounds;             /* (HTTP_HIST_BUCKETS) upper bounds, ascending */
    uint64_t counts[HTTP_HIST_BUCKETS + 1]; /* last = +Inf */
    double sum;
    uint64_t count;
} http_histogram;

typedef struct http_metrics {
    pthread_mutex_t mu;
    struct { const char *endpoint; int status; uint64_t n; } requests[HTTP_MAX_SERIES];
    int n_requests;
    uint64_t prompt_tokens, completion_tokens;
    uint64_t cancelled_client, cancelled_timeout, rejected_busy;
    double generation_seconds;
    http_histogram ttft_s;            /* time to first token */
    http_histogram tokens_per_s;      /* per request, after the first token */
    http_histogram duration_s;        /* whole requests */
} http_metrics;

void http_metrics_init(http_metrics *m);
void http_metrics_destroy(http_metrics *m);

/* Counts one answered request (endpoint is a static string). */
void http_metrics_request(http_metrics *m, const char *endpoint, int status);

/* Records a finished generation. first_token_s < 0 when no token came. */
void http_metrics_generation(http_metrics *m, unsigned prompt_tokens, unsigned completion_tokens,
                             double first_token_s, double generate_s, double total_s);

void http_metrics_cancelled(http_metrics *m, bool timeout);
void http_metrics_busy(http_metrics *m);

/* The Prometheus text exposition (version 0.0.4) of m, the gauges given, and the
 * router's counters (router_ok false: llorch_router_up 0 and no counters). Counters
 * named "NAME:LABEL" become llorch_router_NAME{id="LABEL"} (per-worker series).
 * Returns a malloc'd string, NULL without memory. */
char *http_metrics_render(http_metrics *m, unsigned in_flight, unsigned queued,
                          bool model_ready, const llorch_stat *router, size_t n_router,
                          bool router_ok);

/* ---- http_config.c: API keys ---- */

#define HTTP_KEY_DIGEST_BYTES 32

typedef struct http_keys {
    uint8_t (*digests)[HTTP_KEY_DIGEST_BYTES]; /* (n) BLAKE2b-256 of each key */
    size_t n;
} http_keys;

/* Reads one key per line ('#' comments, blank lines and surrounding spaces ignored).
 * A file without keys is an error (it would lock everyone out). 0 or -1 with err. */
int http_keys_load(http_keys *k, const char *path, llorch_error *err);

/* Whether the Authorization header value ("Bearer KEY") holds a known key. Compares
 * fixed-length digests in constant time against every key (no early exit). */
bool http_keys_check(const http_keys *k, const char *authorization);

void http_keys_free(http_keys *k);

#endif
