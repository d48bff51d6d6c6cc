/* generate_remote.c - `llorch generate` through a pipeline: --router EP, or -m MODEL --workers K. */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "generate.h"
#include "generate_options.h"
#include "generate_output.h"
#include "gguf.h"
#include "lib/llorch.h"
#include "proc.h"
#include "tokenizer.h"
#include "up.h"

#define REMOTE_MAX_STOP 16

/* What the token callback collects: the same things the in-process run reports. */
typedef struct remote_run {
    bool stream;                /* print text as it comes */
    int32_t *tokens;
    size_t n_tokens, cap;
    char *text;
    size_t text_len, text_cap;
    int top_k;
    generate_prob *top;         /* (cap x top_k) */
    int failed;                 /* out of memory */
} remote_run;

bool generate_remote_wanted(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--router") || !strcmp(argv[i], "--workers") ||
            !strcmp(argv[i], "--split"))
            return true;
    return false;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch generate --router EP -p PROMPT [options]\n"
            "       llorch generate -m MODEL --workers K [--split F:L,...] -p PROMPT [options]\n"
            "\n"
            "Generates text through a pipeline: a running router (llorch up prints its\n"
            "endpoint), or a pipeline of K workers started for this call and stopped after.\n"
            "The output (text, or --json) is the in-process `llorch generate`'s.\n"
            "\n"
            "  --router EP             the router's client endpoint\n"
            "  -m, --model PATH        the model: with --workers, the one to serve; with\n"
            "                          --router, used to tokenize locally so that --json\n"
            "                          lists the prompt tokens\n"
            "  --workers K, --split F:L,..., --threads-per-worker T, --kv-budget B,\n"
            "  --kv-type f32|f16, --layout auto|rows, --verify\n"
            "                          the pipeline to start (see llorch up --help)\n"
            "  -p, -n, --temp, --top-k, --top-p, --min-p, --repeat-penalty, --seed, --top,\n"
            "  --json, --ignore-eos    as in-process (llorch generate --help); --top at most 32\n"
            "  --threads T             threads per worker when --threads-per-worker is absent\n"
            "  --stop TEXT             end when TEXT is produced (repeatable, up to 16)\n"
            "  --curve-key FILE        this client's key pair, for a tcp:// router with CURVE\n"
            "  --curve-server-public KEY|FILE  the router's public key\n"
            "  --timeout-ms MS         give up when the router is silent this long (default:\n"
            "                          wait)\n"
            "  -h, --help              this help\n");
}

static int s_on_token(void *user, const llorch_token *t)
{
    remote_run *r = user;
    if (r->n_tokens == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        int32_t *tk = realloc(r->tokens, cap * sizeof *tk);
        generate_prob *top = r->top_k ? realloc(r->top, cap * (size_t)r->top_k * sizeof *top)
                                      : NULL;
        if (tk)
            r->tokens = tk;
        if (top)
            r->top = top;
        if (!tk || (r->top_k && !top)) {
            r->failed = 1;
            return 1;
        }
        r->cap = cap;
    }
    for (int k = 0; k < r->top_k; k++)
        r->top[r->n_tokens * (size_t)r->top_k + (size_t)k] =
            (unsigned)k < t->n_top ? (generate_prob){t->top_ids[k], t->top_probs[k]}
                                   : (generate_prob){-1, 0};
    r->tokens[r->n_tokens++] = t->id;
    if (r->text_len + t->text_len + 1 > r->text_cap) {
        size_t cap = (r->text_cap ? r->text_cap * 2 : 256) + t->text_len;
        char *s = realloc(r->text, cap);
        if (!s) {
            r->failed = 1;
            return 1;
        }
        r->text = s;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, t->text, t->text_len);
    r->text_len += t->text_len;
    r->text[r->text_len] = '\0';
    if (r->stream) {
        fwrite(t->text, 1, t->text_len, stdout);
        fflush(stdout);
    }
    return 0;
}

/* Tokenizes prompt with the model's vocabulary, as the router would. */
static int s_tokenize(const char *model_path, const char *prompt, int32_t **ids, size_t *n,
                      llorch_error *err)
{
    gguf_file *f = gguf_open(model_path, err);
    if (!f)
        return -1;
    tokenizer *tok = tokenizer_from_gguf(f, err);
    gguf_close(&f);
    if (!tok)
        return llorch_error_prefix(err, "%s", model_path);
    int rc = tokenizer_encode(tok, prompt, strlen(prompt), TOKENIZE_ADD_SPECIAL, ids, n, err);
    tokenizer_free(&tok);
    return rc;
}

int cmd_generate_remote(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL, *router_ep = NULL;
    const char *curve_key = NULL, *curve_server = NULL;
    const char *stop[REMOTE_MAX_STOP];
    unsigned n_stop = 0;
    bool json = false;
    long n_predict = 128, top = 0, threads = 0, timeout_ms = 0;
    up_opts up = {.quiet = true};
    llorch_params p;
    llorch_params_init(&p);
    sampler_params sp = sampler_params_default(); /* the same defaults as p's */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
            continue;
        } else if (!strcmp(a, "--ignore-eos")) {
            p.ignore_eos = 1;
            continue;
        } else if (!strcmp(a, "--in-process")) {
            fprintf(stderr, "llorch generate: %s does not go with --router/--workers\n", a);
            return 2;
        }
        int r = up_parse_option(&up, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v || a[0] != '-') {
            fprintf(stderr, "llorch generate: %s %s\n\n", a,
                    a[0] == '-' ? "needs a value" : "is not an option");
            s_usage(stderr);
            return 2;
        }
        const int sampling = generate_opt_sampling(a, v, &sp);
        if (sampling != 0) {
            if (sampling < 0)
                return 2;
            i++;
            continue;
        }
        int bad = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--router")) router_ep = v;
        else if (!strcmp(a, "--curve-key")) curve_key = v;
        else if (!strcmp(a, "--curve-server-public")) curve_server = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict"))
            bad = generate_opt_long(a, v, 0, 1 << 20, &n_predict);
        else if (!strcmp(a, "--threads") || !strcmp(a, "-t"))
            bad = generate_opt_long(a, v, 1, 256, &threads);
        else if (!strcmp(a, "--top")) bad = generate_opt_long(a, v, 0, 32, &top);
        else if (!strcmp(a, "--timeout-ms")) bad = generate_opt_long(a, v, 0, 1L << 30, &timeout_ms);
        else if (!strcmp(a, "--stop")) {
            if (n_stop == REMOTE_MAX_STOP) {
                fprintf(stderr, "llorch generate: at most %d --stop strings\n", REMOTE_MAX_STOP);
                return 2;
            }
            stop[n_stop++] = v;
        } else {
            fprintf(stderr, "llorch generate: unknown option %s\n\n", a);
            s_usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
        i++;
    }
    p.temperature = sp.temperature;
    p.top_k = sp.top_k;
    p.top_p = sp.top_p;
    p.min_p = sp.min_p;
    p.repeat_penalty = sp.repeat_penalty;
    p.seed = sp.seed;
    if (!prompt || (!router_ep && !model_path)) {
        fprintf(stderr, "llorch generate: -p PROMPT, and --router EP or -m MODEL --workers K, "
                        "are required\n\n");
        s_usage(stderr);
        return 2;
    }
    if (router_ep && (up.n_workers || up.split)) {
        fprintf(stderr, "llorch generate: --router uses a running pipeline; --workers/--split "
                        "start one: give one or the other\n");
        return 2;
    }
    if (router_ep && (up.kv_budget || up.kv_type || up.threads_per_worker || up.layout ||
                      up.verify)) {
        fprintf(stderr, "llorch generate: --kv-budget, --kv-type, --threads-per-worker, "
                        "--layout and --verify set up the pipeline started with --workers; a "
                        "running router's pipeline keeps its own\n");
        return 2;
    }
    if ((curve_key != NULL) != (curve_server != NULL)) {
        fprintf(stderr, "llorch generate: --curve-key and --curve-server-public go together\n");
        return 2;
    }
    p.max_tokens = (unsigned)n_predict;
    p.top_n_probs = (unsigned)top;
    p.stop = stop;
    p.n_stop = n_stop;
    p.timeout_ms = (int)timeout_ms;
    if (!up.threads_per_worker && threads)
        up.threads_per_worker = (int)threads;

    llorch_error err = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (model_path && s_tokenize(model_path, prompt, &ids, &n_ids, &err) != 0) {
        fprintf(stderr, "llorch generate: %s\n", err.msg);
        return 1;
    }
    if (proc_signals_install(&err) != 0) {
        fprintf(stderr, "llorch generate: %s\n", err.msg);
        free(ids);
        return 1;
    }
    up_pipeline pl;
    bool started = false;
    double load_ms = 0;
    const char *endpoint = router_ep;
    if (!router_ep) {
        up.model = model_path;
        if (up_start(&up, &pl, &err) != 0) {
            fprintf(stderr, "llorch generate: %s\n", err.msg);
            free(ids);
            return 1;
        }
        started = true;
        load_ms = pl.ready_ms;
        endpoint = pl.clients_endpoint;
    }
    char errbuf[512];
    llorch_curve curve = {curve_key, curve_server};
    llorch_client *c = llorch_connect(endpoint, curve_key ? &curve : NULL, errbuf, sizeof errbuf);
    remote_run run = {.stream = !json, .top_k = (int)top};
    llorch_result res = {0};
    int rc = 0;
    size_t n_stats = 0;
    llorch_stat stats[8];
    if (!c) {
        fprintf(stderr, "llorch generate: %s\n", errbuf);
        rc = 1;
    } else if (router_ep && llorch_stats(c, stats, 8, &n_stats, timeout_ms ? (int)timeout_ms
                                                                          : 5000,
                                         errbuf, sizeof errbuf) != 0) {
        fprintf(stderr, "llorch generate: %s\n", errbuf);
        rc = 1;
    } else if (n_predict == 0) {
        snprintf(res.stop_reason, sizeof res.stop_reason, "length");
        res.n_prompt_tokens = (unsigned)n_ids;
    } else {
        int g = ids ? llorch_generate_tokens(c, ids, n_ids, &p, s_on_token, &run, &res)
                    : llorch_generate(c, prompt, &p, s_on_token, &run, &res);
        if (run.failed) {
            fprintf(stderr, "llorch generate: out of memory\n");
            rc = 1;
        } else if (g != 0) {
            fprintf(stderr, "llorch generate: %s\n", res.error);
            rc = 1;
        }
    }
    llorch_close(&c);
    if (started) {
        if (rc != 0)
            up_print_logs(&pl);
        up_stop(&pl);
    }
    if (rc == 0) {
        /* The router ends a full context with "length"; in-process calls it "context". */
        const char *reason = res.stop_reason;
        if (!strcmp(reason, "length") && res.n_generated_tokens < (unsigned)n_predict)
            reason = "context";
        const bool eos = !strcmp(reason, "eos");
        const double n_forward = (double)res.n_generated_tokens - 1 + (eos ? 1 : 0);
        const double prompt_tps = res.prompt_ms > 0 ? res.n_prompt_tokens * 1e3 / res.prompt_ms
                                                    : 0;
        const double gen_tps = res.generate_ms > 0 && n_forward > 0
                                   ? n_forward * 1e3 / res.generate_ms : 0;
        const generate_output o = {
            .prompt_tokens = ids, .n_prompt = n_ids, .tokens = run.tokens,
            .n_tokens = run.n_tokens, .text = run.text, .text_len = run.text_len,
            .stop_reason = reason, .prompt_tokens_per_s = prompt_tps, .gen_tokens_per_s = gen_tps,
            .load_ms = load_ms, .top = run.top, .top_k = run.top_k};
        if (json) {
            rc = generate_output_json(&o);
        } else {
            generate_output counted = o; /* the router's count: ids is empty without -m */
            counted.n_prompt = res.n_prompt_tokens;
            generate_output_summary(&counted);
        }
    }
    free(ids);
    free(run.tokens);
    free(run.text);
    free(run.top);
    return rc;
}
