/* llorch.h - libllorch: generate text through a running llorch-router. */
#ifndef LLORCH_CLIENT_H
#define LLORCH_CLIENT_H

/* A client connects to a router's client endpoint (`llorch up` prints it), submits a
 * prompt with sampling parameters, and receives the generated tokens and their text
 * through a callback while the router makes them. Link with `pkg-config --libs llorch`.
 *
 *     llorch_client *c = llorch_connect("ipc:///tmp/llorch-123/clients", NULL, err, sizeof err);
 *     llorch_params p;
 *     llorch_params_init(&p);
 *     p.temperature = 0;                      // greedy
 *     llorch_result res;
 *     if (llorch_generate(c, "Once upon a time", &p, on_token, NULL, &res) != 0)
 *         fprintf(stderr, "%s\n", res.error);
 *     llorch_close(&c);
 *
 * Threads: one client runs one request at a time; use one client per thread for
 * concurrent requests (they are cheap). llorch_cancel is the exception: any thread may
 * call it while another is inside llorch_generate. This header is self-contained. */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct llorch_client llorch_client;

/* CURVE keys for a tcp:// router (see `llorch keygen`). */
typedef struct llorch_curve {
    const char *client_key_file;   /* this client's key pair file (PREFIX.key) */
    const char *server_public_key; /* the router's public key: 40 Z85 characters, or a file
                                      holding it (PREFIX.pub) */
} llorch_curve;

/* Sampling and stopping, the same set as `llorch generate`. Fill with llorch_params_init. */
typedef struct llorch_params {
    float temperature;        /* >= 0; 0 = greedy (default 0.8) */
    int top_k;                /* >= 0; 0 = off (default 40) */
    float top_p;              /* [0, 1]; 1 = off (default 0.95) */
    float min_p;              /* [0, 1]; 0 = off (default 0.05) */
    int penalty_last_n;       /* >= 0 (default 64) */
    float repeat_penalty;     /* > 0; 1 = off (default 1) */
    float frequency_penalty;  /* [-2, 2] (default 0) */
    float presence_penalty;   /* [-2, 2] (default 0) */
    uint64_t seed;            /* UINT64_MAX = random (default) */
    unsigned max_tokens;      /* tokens to generate, 1..1048576 (default 256) */
    unsigned top_n_probs;     /* alternatives reported with each token, 0..32 (default 0) */
    const char *const *stop;  /* (n_stop) strings that end generation once produced */
    unsigned n_stop;          /* 0..16 */
    int timeout_ms;           /* longest silence from the router before giving up;
                                 0 = wait forever (default 0) */
    int ignore_eos;           /* non-zero: the end-of-sequence token does not end the
                                 request, which then always makes max_tokens tokens (unless
                                 the context fills); for benchmarks (default 0) */
} llorch_params;

/* One generated token as the callback sees it. Pointers are valid during the call. */
typedef struct llorch_token {
    unsigned index;           /* 0 for the first generated token */
    int32_t id;               /* token id */
    const char *text;         /* the UTF-8 this token completes (may be empty, never half
                                 a character), NUL-terminated */
    size_t text_len;
    unsigned n_top;           /* top_n_probs alternatives, most probable first */
    const int32_t *top_ids;   /* (n_top) */
    const float *top_probs;   /* (n_top) softmax of the raw logits */
} llorch_token;

/* Called for each token as it arrives. Return 0 to go on, non-zero to cancel the
 * request (llorch_generate then ends with stop_reason "cancelled"). */
typedef int (*llorch_token_fn)(void *user, const llorch_token *token);

/* How a request ended. */
typedef struct llorch_result {
    char stop_reason[16];     /* "eos", "length", "stop", "cancelled", "error" */
    unsigned n_prompt_tokens;
    unsigned n_generated_tokens;
    double queue_ms;          /* waiting for a session slot at the router */
    double prompt_ms;         /* from admission to the first token's logits */
    double generate_ms;       /* from the first token to the end */
    double total_ms;          /* as the client measured it */
    int error_code;           /* 0, or the router's error code (5 = busy, 9 = unavailable,
                                 see docs/protocol.md); -1 = a local failure */
    char error[512];          /* what went wrong and what to do, "" when nothing did */
} llorch_result;

/* Connects to the router at endpoint (ipc://..., tcp://host:port). curve may be NULL
 * (no encryption; use on ipc:// or trusted networks). ZeroMQ connects in the
 * background, so a router that is not up yet is not an error here: the first request
 * waits for it. Returns a client to free with llorch_close, or NULL with a message in
 * errbuf (errbuf may be NULL). */
llorch_client *llorch_connect(const char *endpoint, const llorch_curve *curve, char *errbuf,
                              size_t errbuf_size);

/* Closes the connection and frees the client; sets *c to NULL. Safe on NULL and on
 * *c == NULL. Must not run while another thread is in llorch_generate on it. */
void llorch_close(llorch_client **c);

/* The defaults listed in llorch_params. Cannot fail. */
void llorch_params_init(llorch_params *p);

/* Generates from prompt (text; the router tokenizes it and adds BOS as the model's
 * vocabulary says). on_token (may be NULL) runs in the calling thread for every token.
 * Blocks until the request ends. Fills *result (always, also on failure). Returns 0
 * when the request ran to a stop reason other than "error", -1 otherwise (the router
 * refused it: busy, invalid parameters, a lost worker; or the connection failed). A
 * connection lost while the request runs (the router stopped, or it left 10 s of
 * heartbeats unanswered) or a CURVE handshake the router refuses ends it at once, whatever
 * timeout_ms says; the client connects again by itself for the next request. */
int llorch_generate(llorch_client *c, const char *prompt, const llorch_params *p,
                    llorch_token_fn on_token, void *user, llorch_result *result);

/* As llorch_generate, with the prompt given as token ids (ids[0..n_ids), n_ids >= 1,
 * exactly what the model will see: no BOS is added). */
int llorch_generate_tokens(llorch_client *c, const int32_t *ids, size_t n_ids,
                           const llorch_params *p, llorch_token_fn on_token, void *user,
                           llorch_result *result);

/* Asks the request running on c (in another thread) to stop; llorch_generate returns
 * soon after with stop_reason "cancelled". Does nothing when no request runs.
 * Thread-safe, async-signal-safe. Returns 0, or -1 when c is NULL. */
int llorch_cancel(llorch_client *c);

/* One router counter (requests, tokens_out, batches, rows, max_rows_in_batch,
 * mean_rows_per_batch, sessions_active, queue_depth, workers_alive, pipelines_ready, ...). */
typedef struct llorch_stat {
    char name[65];
    double value;
} llorch_stat;

/* Asks the router for its counters, waiting at most timeout_ms (<= 0: 5000). Writes up to
 * cap of them to stats and their count to *n. Returns 0, or -1 with a message in errbuf
 * (no answer in time, or an error). Not while llorch_generate runs on c. */
int llorch_stats(llorch_client *c, llorch_stat *stats, size_t cap, size_t *n, int timeout_ms,
                 char *errbuf, size_t errbuf_size);

/* The value of counter name in stats[0..n), or -1 when absent. */
double llorch_stat_get(const llorch_stat *stats, size_t n, const char *name);

#ifdef __cplusplus
}
#endif

#endif
