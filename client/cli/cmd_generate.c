/* cmd_generate.c - `llorch generate`: text from a prompt, streamed or as JSON. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "generate.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch generate -m MODEL -p PROMPT [-n N] [options]\n"
            "\n"
            "Generates text from PROMPT with the GGUF model MODEL, in this process.\n"
            "\n"
            "  -m, --model PATH        GGUF model file\n"
            "  -p, --prompt TEXT       prompt (BOS is added when the vocabulary says so)\n"
            "  -n, --n-predict N       tokens to generate at most (default 128)\n"
            "      --temp T            temperature; 0 = greedy (default 0.8)\n"
            "      --top-k K           keep the K most likely tokens; 0 = off (default 40)\n"
            "      --top-p P           nucleus sampling mass; 1 = off (default 0.95)\n"
            "      --min-p P           drop tokens below P x the top probability (default 0.05)\n"
            "      --repeat-penalty R  penalty for the last 64 tokens; 1 = off (default 1)\n"
            "      --seed S            seed of the sampler; -1 = random (default -1)\n"
            "      --threads T         threads (default: the CPUs online)\n"
            "      --top K             report the K most probable tokens of every step (JSON)\n"
            "      --json              print one JSON object instead of streaming the text:\n"
            "                          prompt_tokens, tokens, text, stop_reason, timings\n"
            "                          {prompt_tokens_per_s, gen_tokens_per_s, load_ms}, top\n"
            "      --in-process        run the model in this process (the only mode today)\n"
            "      --ignore-eos        do not stop at the end-of-sequence token: always make\n"
            "                          N tokens (benchmarks)\n"
            "  -h, --help              this help\n"
            "\n"
            "Environment: LLORCH_ISA=scalar|avx2 chooses the kernel variant.\n");
}

static int s_parse_int(const char *opt, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "llorch generate: %s wants an integer in %ld..%ld, got '%s'\n", opt, min,
                max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int s_parse_float(const char *opt, const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) {
        fprintf(stderr, "llorch generate: %s wants a number, got '%s'\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int s_stream_text(void *user, const char *text, size_t len)
{
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static json_t *s_ids(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static int s_print_json(const generate_result *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "prompt_tokens", s_ids(r->prompt_tokens, r->n_prompt));
    json_object_set_new(o, "tokens", s_ids(r->tokens, r->n_tokens));
    json_object_set_new(o, "text", json_stringn(r->text, r->text_len));
    json_object_set_new(o, "stop_reason", json_string(r->stop_reason));
    json_t *t = json_object();
    json_object_set_new(t, "prompt_tokens_per_s", json_real(r->prompt_tokens_per_s));
    json_object_set_new(t, "gen_tokens_per_s", json_real(r->gen_tokens_per_s));
    json_object_set_new(t, "load_ms", json_real(r->load_ms));
    json_object_set_new(o, "timings", t);
    if (r->top_k > 0) {
        json_t *steps = json_array();
        for (size_t s = 0; s < r->n_tokens; s++) {
            json_t *step = json_array();
            for (int k = 0; k < r->top_k; k++) {
                const generate_prob *g = &r->top[s * (size_t)r->top_k + (size_t)k];
                json_array_append_new(step, json_pack("{s:i, s:f}", "id", (json_int_t)g->id,
                                                      "p", (double)g->p));
            }
            json_array_append_new(steps, step);
        }
        json_object_set_new(o, "top", steps);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!s) {
        fprintf(stderr, "llorch generate: cannot format the JSON output\n");
        return 1;
    }
    puts(s);
    free(s);
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    if (generate_remote_wanted(argc, argv))
        return cmd_generate_remote(argc, argv);
    const char *model_path = NULL, *prompt = NULL;
    bool json = false;
    long n_predict = 128, top = 0, threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    generate_params p = {.sampling = sampler_params_default()};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
            continue;
        } else if (!strcmp(a, "--in-process")) {
            continue;
        } else if (!strcmp(a, "--ignore-eos")) {
            p.ignore_eos = true;
            continue;
        }
        if (!v || a[0] != '-') {
            fprintf(stderr, "llorch generate: %s %s\n\n", a,
                    a[0] == '-' ? "needs a value" : "is not an option");
            s_usage(stderr);
            return 2;
        }
        int bad = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            prompt = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            bad = s_parse_int(a, v, 0, 1 << 24, &n_predict);
        } else if (!strcmp(a, "--temp")) {
            bad = s_parse_float(a, v, &p.sampling.temperature);
        } else if (!strcmp(a, "--top-k")) {
            bad = s_parse_int(a, v, 0, 1 << 24, &n);
            p.sampling.top_k = (int)n;
        } else if (!strcmp(a, "--top-p")) {
            bad = s_parse_float(a, v, &p.sampling.top_p);
        } else if (!strcmp(a, "--min-p")) {
            bad = s_parse_float(a, v, &p.sampling.min_p);
        } else if (!strcmp(a, "--repeat-penalty")) {
            bad = s_parse_float(a, v, &p.sampling.repeat_penalty);
        } else if (!strcmp(a, "--seed")) {
            if (!strcmp(v, "-1")) {
                p.sampling.seed = SAMPLER_SEED_RANDOM;
            } else {
                char *end;
                errno = 0;
                unsigned long long seed = strtoull(v, &end, 10);
                bad = errno || end == v || *end || v[0] == '-';
                if (bad)
                    fprintf(stderr, "llorch generate: --seed wants a non-negative integer or -1, "
                                    "got '%s'\n", v);
                p.sampling.seed = seed;
            }
        } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            bad = s_parse_int(a, v, 1, 256, &threads);
        } else if (!strcmp(a, "--top")) {
            bad = s_parse_int(a, v, 0, 1000, &top);
        } else {
            fprintf(stderr, "llorch generate: unknown option %s\n\n", a);
            s_usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
        i++;
    }
    if (!model_path || !prompt) {
        fprintf(stderr, "llorch generate: -m MODEL and -p PROMPT are required\n\n");
        s_usage(stderr);
        return 2;
    }
    llorch_error err = {0};
    if (sampler_params_validate(&p.sampling, &err) < 0) {
        fprintf(stderr, "llorch generate: %s\n", err.msg);
        return 2;
    }
    p.prompt = prompt;
    p.n_predict = (int)n_predict;
    p.threads = (int)threads;
    p.top_k_probs = (int)top;

    generator *g = generator_open(model_path, &err);
    if (!g) {
        fprintf(stderr, "llorch generate: %s\n", err.msg);
        return 1;
    }
    generate_result r;
    int rc = generate_run(g, &p, json ? NULL : s_stream_text, NULL, &r, &err);
    if (rc < 0) {
        fprintf(stderr, "llorch generate: %s\n", err.msg);
    } else if (json) {
        rc = s_print_json(&r);
    } else {
        printf("\n");
        fprintf(stderr, "llorch: stop: %s; prompt %zu tokens, %.1f tok/s; generated %zu tokens, "
                        "%.1f tok/s; load %.0f ms\n",
                r.stop_reason, r.n_prompt, r.prompt_tokens_per_s, r.n_tokens, r.gen_tokens_per_s,
                r.load_ms);
    }
    generate_result_free(&r);
    generator_free(&g);
    return rc == 0 ? 0 : 1;
}
