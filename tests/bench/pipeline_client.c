/* pipeline_client.c - benchmark driver: N concurrent greedy sessions against a router, timed per token. */
/*
 * usage: pipeline_client ENDPOINT N_SESSIONS MAX_TOKENS PROMPT [PROMPT...]
 *
 * Starts N_SESSIONS threads, each with its own client (libllorch: one request per client at
 * a time), lines them up (all connected) and submits PROMPTS[i % n_prompts] with temperature 0
 * and ignore_eos, so every session makes MAX_TOKENS tokens. Every token's arrival time is
 * taken on the client's monotonic clock. Prints one JSON object:
 *
 *   wall_ms            submit to the last DONE
 *   gen_tok_s_sum      the sessions' generation rates added up, each (n - 1) tokens over
 *                      its first..last token on the client's clock (one session: its rate)
 *   all_generating_tok_s  the tokens of all sessions per second while every session
 *                      generates (from the last first token to the first last token)
 *   end_to_end_tok_s   tokens / wall_ms, prompts included
 *   sessions[]         per session: the router's timings and stop reason, and the client's
 *                      first/last token times (ms after the start)
 *
 * The instrument of tests/bench/pipeline.mjs, not a test: it asserts nothing. Exit 1 when a
 * request fails (with the router's message on stderr), 2 on bad arguments.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/llorch.h"

typedef struct session_run {
    const char *endpoint;
    const char *prompt;
    unsigned max_tokens;
    pthread_barrier_t *barrier; /* passed twice: all connected; then t0_ms is set, go */
    double t0_ms;         /* the start, shared by all sessions */
    double *token_ms;     /* (max_tokens) arrival times, ms after t0_ms */
    unsigned n_tokens;
    llorch_result res;
    int rc;
} session_run;

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int s_on_token(void *user, const llorch_token *t)
{
    session_run *s = user;
    if (s->n_tokens < s->max_tokens)
        s->token_ms[s->n_tokens++] = s_now_ms() - s->t0_ms;
    (void)t;
    return 0;
}

static void *s_session(void *arg)
{
    session_run *s = arg;
    char err[512];
    llorch_client *c = llorch_connect(s->endpoint, NULL, err, sizeof err);
    if (!c) {
        snprintf(s->res.error, sizeof s->res.error, "%s", err);
        s->rc = -1;
        pthread_barrier_wait(s->barrier);
        pthread_barrier_wait(s->barrier);
        return NULL;
    }
    llorch_params p;
    llorch_params_init(&p);
    p.temperature = 0;
    p.max_tokens = s->max_tokens;
    p.ignore_eos = 1;
    pthread_barrier_wait(s->barrier);
    pthread_barrier_wait(s->barrier);
    s->rc = llorch_generate(c, s->prompt, &p, s_on_token, s, &s->res);
    llorch_close(&c);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: pipeline_client ENDPOINT N_SESSIONS MAX_TOKENS PROMPT [PROMPT...]\n");
        return 2;
    }
    const int n_sessions = atoi(argv[2]);
    const int max_tokens = atoi(argv[3]);
    const int n_prompts = argc - 4;
    if (n_sessions < 1 || n_sessions > 256 || max_tokens < 2 || max_tokens > 1 << 20) {
        fprintf(stderr, "pipeline_client: N_SESSIONS 1..256 and MAX_TOKENS 2..1048576\n");
        return 2;
    }
    session_run *runs = calloc((size_t)n_sessions, sizeof *runs);
    pthread_t *threads = calloc((size_t)n_sessions, sizeof *threads);
    pthread_barrier_t barrier;
    if (!runs || !threads || pthread_barrier_init(&barrier, NULL, (unsigned)n_sessions + 1)) {
        fprintf(stderr, "pipeline_client: out of memory\n");
        return 1;
    }
    for (int i = 0; i < n_sessions; i++) {
        runs[i] = (session_run){.endpoint = argv[1], .prompt = argv[4 + i % n_prompts],
                                .max_tokens = (unsigned)max_tokens, .barrier = &barrier};
        runs[i].token_ms = calloc((size_t)max_tokens, sizeof *runs[i].token_ms);
        if (!runs[i].token_ms) {
            fprintf(stderr, "pipeline_client: out of memory\n");
            return 1;
        }
    }
    for (int i = 0; i < n_sessions; i++)
        if (pthread_create(&threads[i], NULL, s_session, &runs[i])) {
            fprintf(stderr, "pipeline_client: cannot start a thread\n");
            return 1;
        }
    /* Every client is connected after the first pass; sessions read t0_ms only after the
     * second. */
    pthread_barrier_wait(&barrier);
    const double t0 = s_now_ms();
    for (int i = 0; i < n_sessions; i++)
        runs[i].t0_ms = t0;
    pthread_barrier_wait(&barrier);
    int failed = 0;
    for (int i = 0; i < n_sessions; i++) {
        pthread_join(threads[i], NULL);
        if (runs[i].rc != 0) {
            fprintf(stderr, "pipeline_client: session %d: %s\n", i, runs[i].res.error);
            failed = 1;
        }
    }
    const double wall_ms = s_now_ms() - t0;
    if (failed)
        return 1;

    /* A session's generation rate: (n - 1) tokens between its first and its last token, as
     * the in-process `generate` counts (the first token comes from the prompt's pass). The
     * sessions start together and make the same number of tokens, so they overlap and their
     * rates add up to the aggregate. */
    unsigned total = 0;
    double sum_tok_s = 0, first_min = 1e300, first_max = 0;
    for (int i = 0; i < n_sessions; i++) {
        const session_run *s = &runs[i];
        total += s->n_tokens;
        if (s->n_tokens < 2)
            continue;
        const double span_ms = s->token_ms[s->n_tokens - 1] - s->token_ms[0];
        if (span_ms > 0)
            sum_tok_s += (s->n_tokens - 1) * 1e3 / span_ms;
        first_min = s->token_ms[0] < first_min ? s->token_ms[0] : first_min;
        first_max = s->token_ms[0] > first_max ? s->token_ms[0] : first_max;
    }
    /* While every session generates: from the last first token to the first last token,
     * the tokens of all sessions that arrive in between over its length (the batch's steady
     * rate, without the start, where prompts hold the stages, and the end, where sessions
     * have finished). */
    double w0 = 0, w1 = 1e300;
    for (int i = 0; i < n_sessions; i++) {
        const session_run *s = &runs[i];
        if (s->n_tokens == 0)
            continue;
        w0 = s->token_ms[0] > w0 ? s->token_ms[0] : w0;
        w1 = s->token_ms[s->n_tokens - 1] < w1 ? s->token_ms[s->n_tokens - 1] : w1;
    }
    unsigned in_window = 0;
    for (int i = 0; i < n_sessions && w1 > w0; i++)
        for (unsigned k = 0; k < runs[i].n_tokens; k++)
            in_window += runs[i].token_ms[k] > w0 && runs[i].token_ms[k] <= w1;
    const double all_tok_s = w1 > w0 ? in_window * 1e3 / (w1 - w0) : 0;
    printf("{\"sessions_n\":%d,\"max_tokens\":%d,\"wall_ms\":%.3f,\"tokens\":%u,"
           "\"gen_tok_s_sum\":%.3f,\"all_generating_tok_s\":%.3f,\"all_generating_ms\":%.3f,"
           "\"end_to_end_tok_s\":%.3f,\"first_token_spread_ms\":%.3f,\"sessions\":[",
           n_sessions, max_tokens, wall_ms, total, sum_tok_s, all_tok_s, w1 > w0 ? w1 - w0 : 0,
           total * 1e3 / wall_ms, first_max >= first_min ? first_max - first_min : 0);
    for (int i = 0; i < n_sessions; i++) {
        const session_run *s = &runs[i];
        printf("%s{\"stop_reason\":\"%s\",\"prompt_tokens\":%u,\"generated\":%u,"
               "\"queue_ms\":%.3f,\"prompt_ms\":%.3f,\"generate_ms\":%.3f,\"total_ms\":%.3f,"
               "\"first_token_ms\":%.3f,\"last_token_ms\":%.3f}",
               i ? "," : "", s->res.stop_reason, s->res.n_prompt_tokens,
               s->res.n_generated_tokens, s->res.queue_ms, s->res.prompt_ms, s->res.generate_ms,
               s->res.total_ms, s->n_tokens ? s->token_ms[0] : 0,
               s->n_tokens ? s->token_ms[s->n_tokens - 1] : 0);
    }
    printf("]}\n");
    for (int i = 0; i < n_sessions; i++)
        free(runs[i].token_ms);
    free(runs);
    free(threads);
    pthread_barrier_destroy(&barrier);
    return 0;
}
