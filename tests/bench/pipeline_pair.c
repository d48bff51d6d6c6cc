/* pipeline_pair.c - benchmark driver: one session's generation in-process and through a
 * router, in pairs of runs back to back, from one process. */
/*
 * usage: pipeline_pair MODEL THREADS ENDPOINT MAX_TOKENS PAIRS PROMPT
 *
 * Loads MODEL and places its weights as `llorch generate` does (once), connects to the
 * router at ENDPOINT (a pipeline serving the same model), and then runs PAIRS pairs: greedy
 * generation of MAX_TOKENS tokens (EOS ignored) from PROMPT in-process on THREADS threads
 * (generate_run, the engine of `llorch generate --in-process`) and the same request through
 * the router (libllorch), in turn first. Both rates are (n - 1) tokens over the first..last
 * token: generate_run's own count, and the client's clock for the pipeline. Each pair's ratio
 * is taken on the machine of that moment, so a bandwidth that moves from one second to the
 * next cancels out of it; the median of the ratios is the measure. While one side runs, the
 * other's threads sleep. A short pair before them is not counted. Prints one JSON object:
 *
 *   pairs[]       {in_process, pipeline, ratio}: tok/s of each run and their ratio
 *   median_ratio  the median of the pairs' ratios
 *   in_process, pipeline  the medians of each side's rates
 *
 * The instrument of tests/bench/pipeline.mjs, not a test: it asserts nothing. Exit 1 when a
 * run fails (the message on stderr), 2 on bad arguments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "generate.h"
#include "lib/llorch.h"

typedef struct timed {
    double first_ms, last_ms;
    unsigned n;
} timed;

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int s_on_token(void *user, const llorch_token *t)
{
    timed *s = user;
    const double now = s_now_ms();
    if (s->n++ == 0)
        s->first_ms = now;
    s->last_ms = now;
    (void)t;
    return 0;
}

static int s_cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double s_median(const double *xs, int n)
{
    double *s = malloc((size_t)n * sizeof *s);
    if (!s)
        return 0;
    memcpy(s, xs, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, s_cmp);
    const double m = s[n / 2];
    free(s);
    return m;
}

/* One in-process run: its generation rate, or -1. */
static double s_in_process(generator *g, const generate_params *gp)
{
    generate_result r = {0};
    llorch_error err;
    double rate = -1;
    if (generate_run(g, gp, NULL, NULL, &r, &err) == 0)
        rate = r.gen_tokens_per_s;
    else
        fprintf(stderr, "pipeline_pair: in-process: %s\n", err.msg);
    generate_result_free(&r);
    return rate;
}

/* One run through the router: its generation rate, or -1. */
static double s_pipeline(llorch_client *c, const char *prompt, const llorch_params *p)
{
    timed t = {0};
    llorch_result res;
    if (llorch_generate(c, prompt, p, s_on_token, &t, &res) != 0) {
        fprintf(stderr, "pipeline_pair: pipeline: %s\n", res.error);
        return -1;
    }
    return t.n > 1 && t.last_ms > t.first_ms ? (t.n - 1) * 1e3 / (t.last_ms - t.first_ms) : -1;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: pipeline_pair MODEL THREADS ENDPOINT MAX_TOKENS PAIRS PROMPT\n");
        return 2;
    }
    const int threads = atoi(argv[2]), max_tokens = atoi(argv[4]), n_pairs = atoi(argv[5]);
    if (threads < 1 || threads > 256 || max_tokens < 2 || max_tokens > 1 << 20 || n_pairs < 1 ||
        n_pairs > 1000) {
        fprintf(stderr, "pipeline_pair: THREADS 1..256, MAX_TOKENS 2..1048576, PAIRS 1..1000\n");
        return 2;
    }
    const char *prompt = argv[6];
    llorch_error err;
    generator *g = generator_open(argv[1], &err);
    if (!g || model_place_weights(g->m, &err) < 0) {
        fprintf(stderr, "pipeline_pair: %s: %s\n", argv[1], err.msg);
        generator_free(&g);
        return 1;
    }
    char cerr[512];
    llorch_client *c = llorch_connect(argv[3], NULL, cerr, sizeof cerr);
    if (!c) {
        fprintf(stderr, "pipeline_pair: %s\n", cerr);
        generator_free(&g);
        return 1;
    }
    generate_params gp = {.prompt = prompt, .n_predict = max_tokens, .threads = threads,
                          .ignore_eos = true};
    gp.sampling = sampler_params_default();
    gp.sampling.temperature = 0;
    llorch_params lp;
    llorch_params_init(&lp);
    lp.temperature = 0;
    lp.max_tokens = (unsigned)max_tokens;
    lp.ignore_eos = 1;

    double *in = calloc((size_t)n_pairs, sizeof *in), *pipe = calloc((size_t)n_pairs, sizeof *pipe);
    double *ratio = calloc((size_t)n_pairs, sizeof *ratio);
    int rc = in && pipe && ratio ? 0 : 1;
    /* A short pair first, not counted: the first run of either side pays for its caches. */
    generate_params warm_gp = gp;
    llorch_params warm_lp = lp;
    warm_gp.n_predict = 4;
    warm_lp.max_tokens = 4;
    if (rc == 0 && (s_in_process(g, &warm_gp) <= 0 || s_pipeline(c, prompt, &warm_lp) <= 0))
        rc = 1;
    for (int i = 0; i < n_pairs && rc == 0; i++) {
        if (i % 2 == 0) {
            in[i] = s_in_process(g, &gp);
            pipe[i] = in[i] > 0 ? s_pipeline(c, prompt, &lp) : -1;
        } else {
            pipe[i] = s_pipeline(c, prompt, &lp);
            in[i] = pipe[i] > 0 ? s_in_process(g, &gp) : -1;
        }
        if (in[i] <= 0 || pipe[i] <= 0)
            rc = 1;
        else
            ratio[i] = pipe[i] / in[i];
    }
    if (rc == 0) {
        printf("{\"threads\":%d,\"max_tokens\":%d,\"pairs\":[", threads, max_tokens);
        for (int i = 0; i < n_pairs; i++)
            printf("%s{\"in_process\":%.3f,\"pipeline\":%.3f,\"ratio\":%.4f}", i ? "," : "",
                   in[i], pipe[i], ratio[i]);
        printf("],\"median_ratio\":%.4f,\"in_process\":%.3f,\"pipeline\":%.3f}\n",
               s_median(ratio, n_pairs), s_median(in, n_pairs), s_median(pipe, n_pairs));
    } else if (!in || !pipe || !ratio) {
        fprintf(stderr, "pipeline_pair: out of memory\n");
    }
    free(in);
    free(pipe);
    free(ratio);
    llorch_close(&c);
    generator_free(&g);
    return rc;
}
