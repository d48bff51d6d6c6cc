/* http.h - the router's OpenAI-compatible HTTP API: configuration and server lifecycle. */
#ifndef LLORCH_HTTP_H
#define LLORCH_HTTP_H

/* The HTTP server is a module of llorch-router that reaches the router core with
 * libllorch, one llorch_client per request in flight (pooled), on a private ipc endpoint
 * the router binds on its clients socket without CURVE: in the same process there is no
 * key to check, and the --clients endpoint may be anything (tcp:// with CURVE too). It
 * tokenizes prompts itself with the router's tokenizer (so that prompt limits, usage and
 * the chat template's <s>/</s> are exact) and submits token ids. Serves POST
 * /v1/completions, POST /v1/chat/completions (JSON or Server-Sent Events), GET /v1/models,
 * GET /health, GET /metrics. docs/http.md is the reference. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "tokenizer.h"

/* Limits and settings, from flags or a config file (see http_config_usage). */
typedef struct http_config {
    char listen[256];            /* "ADDR:PORT" ("" = no HTTP server); "*:8080" = all */
    size_t max_body_bytes;       /* request bodies larger than this get 413 */
    unsigned max_prompt_tokens;  /* 0 = the model's context minus one */
    unsigned max_tokens;         /* largest max_tokens a request may ask for */
    unsigned default_max_tokens; /* when a request gives none */
    unsigned max_concurrent;     /* requests submitted to the router at once */
    unsigned max_queue;          /* requests waiting for one of those slots; beyond: 429 */
    unsigned timeout_s;          /* a whole request, queueing included */
    unsigned keepalive_s;        /* an SSE comment after this many silent seconds */
    char model_name[128];        /* the name /v1/models shows ("" = the model id) */
    char api_key_file[1024];     /* "" = no keys required */
} http_config;

/* The defaults: off, 1 MiB bodies, 4096 max_tokens (256 by default), 16 concurrent,
 * 64 queued, 600 s timeout, 15 s keep-alive. Cannot fail. */
void http_config_init(http_config *c);

/* Applies one option: name is the flag ("--http-max-queue"), value its argument.
 * "--config FILE" reads `name = value` lines (the same names, with or without the
 * dashes; '#' starts a comment). Returns 1 when the option was applied, 0 when name is
 * not an HTTP option (c unchanged), -1 with err when the value is bad. */
int http_config_option(http_config *c, const char *name, const char *value, llorch_error *err);

/* Writes the HTTP options' help lines to out. */
void http_config_usage(FILE *out);

typedef struct http_server http_server;

/* Starts serving c->listen (binding now, so a busy port fails here) and makes the
 * private folder /tmp/llorch-router-<pid>-XXXXXX (mode 0700: only this user may connect
 * there) for the endpoint http_server_router_endpoint names. Until http_server_set_model
 * runs, /health and generation answer 503. Loads the API keys. Returns the server, or
 * NULL with err. */
http_server *http_server_start(const http_config *c, llorch_error *err);

/* The endpoint ("ipc://...") the router binds on its clients socket for the HTTP server,
 * before it sets CURVE on that socket: a bind keeps the socket's security as it was then,
 * so the HTTP server's clients need no keys whatever --clients uses. NULL when s is NULL.
 * Valid until http_server_stop. */
const char *http_server_router_endpoint(const http_server *s);

/* Makes the model servable: its id (the manifest's model_id), the tokenizer (borrowed:
 * it must outlive the server and never change) and its context length. Call once. */
void http_server_set_model(http_server *s, const char *model_id, const tokenizer *tok,
                           uint32_t n_ctx);

/* Stops accepting, cancels every request in flight, closes the listening socket, removes
 * the private folder and frees the server; sets *s to NULL. Safe on NULL. Requests whose
 * router never answers (the router loop has ended) are abandoned, not waited for, after a
 * short grace. */
void http_server_stop(http_server **s);

#endif
