/* cmd_check.c - `llorch check`: the 12 correctness checkpoints, written as a proof bundle. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "check.h"
#include "check_points.h"
#include "cli.h"
#include "model.h"
#include "sampler.h"
#include "stage.h"
#include "tokenizer.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch check -m MODEL.gguf [-p PROMPT] [--out DIR] [--threads N] [--json]\n"
            "                    [--no-llama-cpp] [--keep-dumps]\n"
            "\n"
            "Runs llorch's engine on the prompt with every intermediate tensor traced and\n"
            "compares 12 checkpoints with llama.cpp's own tensors (through llama-dump, which\n"
            "reads them with cb_eval) and with an independent float64 forward pass:\n"
            "  1 RMSNorm output   2 Q, K, V   3 after RoPE   4 attention scores\n"
            "  5 attention output   6 FFN output   7 first block output   8 all logits\n"
            "  9 selected logit   10 argmax   11 softmax probabilities\n"
            "  12 end-to-end 10-token greedy continuation\n"
            "Writes one JSON file per checkpoint and summary.json to\n"
            ".proof_bundle/checkpoint/<UTC time>-<model>/ (or --out DIR), prints a table and\n"
            "exits 0 only when all 12 pass (1 when one fails, 2 on a usage error).\n"
            "\n"
            "  -m, --model PATH  the GGUF model\n"
            "  -p, --prompt TEXT the prompt (default \"Once upon a time\"; BOS is added)\n"
            "  --out DIR         the bundle directory\n"
            "  --threads N       threads of llorch and llama.cpp (default 2)\n"
            "  --json            print summary.json instead of the table\n"
            "  --no-llama-cpp    compare with the float64 reference only\n"
            "  --keep-dumps      keep llama-dump's files in the bundle (llama-dump-*/)\n"
            "\n"
            "llama-dump is looked for in $LLORCH_LLAMA_DUMP, build/ref/llama-dump, then\n"
            "../ref/llama-dump beside this binary (tests/reference/build_dump.sh builds it).\n"
            "LLORCH_CHECK_PERTURB=1 adds 1e-2 to llorch's RMSNorm output before comparing\n"
            "(checkpoint 1 must then fail: it proves the comparison can fail).\n");
}

/* What the trace hook collects from llorch's stage. */
typedef struct trace_ctx {
    check_trace *tr;
    const model_config *cfg;
    int n_prompt;
    bool active;          /* only the prompt's batch is recorded */
    bool seen[CHECK_SLOT_COUNT];
    char problem[256];    /* a shape that is not what check.h expects */
} trace_ctx;

static void s_on_trace(void *user, const stage_trace_tensor *t)
{
    trace_ctx *ctx = user;
    if (!ctx->active || t->layer != 0)
        return;
    int slot = check_slot_find(t->name);
    if (slot < 0)
        return;
    int64_t want[4];
    check_expected_shape(ctx->cfg, (enum check_slot)slot, ctx->n_prompt, want);
    for (int i = 0; i < 4; i++)
        if ((i < t->n_dims ? t->ne[i] : 1) != want[i]) {
            snprintf(ctx->problem, sizeof ctx->problem,
                     "llorch traced %s as [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld, %lld]", t->name,
                     (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                     (long long)want[0], (long long)want[1], (long long)want[2], (long long)want[3]);
            return;
        }
    check_tensor *dst = &ctx->tr->layer0[slot];
    if (check_tensor_alloc(dst, want[0], want[1], want[2], want[3], NULL) != 0) {
        snprintf(ctx->problem, sizeof ctx->problem, "out of memory for the trace of %s", t->name);
        return;
    }
    for (int64_t i = 0; i < check_tensor_count(dst); i++)
        dst->data[i] = t->data[i];
    ctx->seen[slot] = true;
}

/* Runs llorch's stage over all layers: the prompt as one traced batch (layer-0
 * tensors and the logits of every position into tr), then n_gen greedy tokens one at
 * a time into gen. */
static int s_run_llorch(const model *m, const int32_t *tokens, int n_prompt, int threads, int n_gen,
                        check_trace *tr, int32_t *gen, llorch_error *err)
{
    const model_config *cfg = &m->config;
    memset(tr, 0, sizeof *tr);
    trace_ctx ctx = {.tr = tr, .cfg = cfg, .n_prompt = n_prompt, .active = true};
    int n_ctx = n_prompt + n_gen;
    if ((uint32_t)n_ctx > cfg->context_length)
        return llorch_error_set(err, "the prompt (%d tokens) plus %d generated passes the model's context of %u",
                                n_prompt, n_gen, cfg->context_length);
    /* Whole 32-position blocks of F32 keys and values for every layer, plus one. */
    size_t block_bytes = (size_t)32 * cfg->n_layers * 2 * cfg->kv_dim * sizeof(float);
    stage_opts opts = {.threads = threads, .kv_budget_bytes = block_bytes * (size_t)((n_ctx + 31) / 32 + 1),
                       .max_batch_rows = n_prompt, .max_seqs = 1, .n_ctx = n_ctx,
                       .trace = s_on_trace, .trace_user = &ctx};
    stage *st = stage_new(m, 0, cfg->n_layers, &opts, err);
    if (!st)
        return -1;
    int rc = -1;
    size_t V = cfg->vocab_size;
    stage_row *rows = calloc((size_t)n_prompt, sizeof *rows);
    float *logits = malloc((size_t)n_prompt * V * sizeof *logits);
    tr->logits = malloc((size_t)n_prompt * V * sizeof *tr->logits);
    if (!rows || !logits || !tr->logits) {
        llorch_error_set(err, "out of memory for %d rows of logits", n_prompt);
        goto done;
    }
    for (int i = 0; i < n_prompt; i++)
        rows[i] = (stage_row){.seq_id = 1, .pos = i, .token = tokens[i], .want_logits = true};
    if (stage_forward(st, rows, n_prompt, NULL, logits, err) != n_prompt) {
        if (!err || !err->msg[0])
            llorch_error_set(err, "the stage returned another number of logit rows than %d", n_prompt);
        goto done;
    }
    ctx.active = false;
    if (ctx.problem[0]) {
        llorch_error_set(err, "%s", ctx.problem);
        goto done;
    }
    for (int s = 0; s < CHECK_SLOT_COUNT; s++)
        if (!ctx.seen[s]) {
            llorch_error_set(err, "llorch's stage did not trace %s for layer 0", check_slot_name((enum check_slot)s));
            goto done;
        }
    tr->n_prompt = tr->n_tokens = n_prompt;
    tr->n_vocab = (int)V;
    for (size_t i = 0; i < (size_t)n_prompt * V; i++)
        tr->logits[i] = logits[i];

    const float *last = logits + (size_t)(n_prompt - 1) * V;
    for (int g = 0; g < n_gen; g++) {
        gen[g] = sampler_argmax(last, (int)V);
        if (g + 1 == n_gen)
            break;
        stage_row row = {.seq_id = 1, .pos = n_prompt + g, .token = gen[g], .want_logits = true};
        if (stage_forward(st, &row, 1, NULL, logits, err) != 1)
            goto done;
        last = logits;
    }
    rc = 0;
done:
    free(rows);
    free(logits);
    stage_free(&st);
    if (rc != 0)
        check_trace_free(tr);
    return rc;
}

/* mkdir -p. */
static int s_mkdir_p(const char *dir, llorch_error *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return llorch_error_set(err, "path too long: %s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return llorch_error_set(err, "cannot create %s: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return llorch_error_set(err, "cannot create %s: %s", buf, strerror(errno));
    return 0;
}

/* ".proof_bundle/checkpoint/20260101T120000Z-stories260K". */
static void s_default_bundle(const char *model_path, char *out, size_t cap)
{
    const char *base = strrchr(model_path, '/');
    base = base ? base + 1 : model_path;
    size_t len = strlen(base);
    if (len > 5 && !strcmp(base + len - 5, ".gguf"))
        len -= 5;
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(out, cap, ".proof_bundle/checkpoint/%s-%.*s", stamp, (int)len, base);
}

int cmd_check(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = "Once upon a time", *out_dir = NULL;
    int threads = 2;
    bool json = false, use_llama = true, keep_dumps = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            s_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && has_val) {
            model_path = argv[++i];
        } else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && has_val) {
            prompt = argv[++i];
        } else if (!strcmp(a, "--out") && has_val) {
            out_dir = argv[++i];
        } else if (!strcmp(a, "--threads") && has_val) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1024) {
                fprintf(stderr, "llorch check: --threads wants a number from 1 to 1024, not '%s'\n", argv[i]);
                return 2;
            }
            threads = (int)v;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--no-llama-cpp")) {
            use_llama = false;
        } else if (!strcmp(a, "--keep-dumps")) {
            keep_dumps = true;
        } else {
            fprintf(stderr, "llorch check: %s '%s' (see --help)\n",
                    a[0] == '-' && !has_val ? "missing value or unknown option" : "unknown argument", a);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "llorch check: -m MODEL is missing\n\n");
        s_usage(stderr);
        return 2;
    }

    llorch_error err = {{0}};
    int status = 1;
    model *m = NULL;
    tokenizer *tok = NULL;
    int32_t *tokens = NULL, *seq = NULL;
    size_t n_prompt = 0;
    check_trace mine = {0}, ref64 = {0}, llama = {0}, llama_cont = {0};
    char bundle[PATH_MAX], dump_bin[PATH_MAX], dump_note[640] = "";
    int32_t gen[CHECK_N_GEN];

    m = model_open(model_path, &err);
    if (!m)
        goto fail;
    tok = tokenizer_from_gguf(m->file, &err);
    if (!tok) {
        llorch_error_prefix(&err, "%s", model_path);
        goto fail;
    }
    if (tokenizer_encode(tok, prompt, strlen(prompt), TOKENIZE_ADD_SPECIAL | TOKENIZE_PARSE_SPECIAL, &tokens,
                         &n_prompt, &err) != 0)
        goto fail;
    if (n_prompt == 0) {
        llorch_error_set(&err, "the prompt gives no tokens: give a non-empty prompt with -p");
        goto fail;
    }
    if (out_dir)
        snprintf(bundle, sizeof bundle, "%s", out_dir);
    else
        s_default_bundle(model_path, bundle, sizeof bundle);
    if (s_mkdir_p(bundle, &err) != 0)
        goto fail;

    if (s_run_llorch(m, tokens, (int)n_prompt, threads, CHECK_N_GEN, &mine, gen, &err) != 0) {
        llorch_error_prefix(&err, "llorch");
        goto fail;
    }
    const char *perturb = getenv("LLORCH_CHECK_PERTURB");
    if (perturb && *perturb && strcmp(perturb, "0") != 0) {
        check_tensor *t = &mine.layer0[CHECK_ATTN_NORM];
        for (int64_t i = 0; i < check_tensor_count(t); i++)
            t->data[i] += 1e-2;
    }

    /* The prompt and the continuation but its last token: teacher-forced, each
     * position's argmax must give the next generated token. */
    int n_seq = (int)n_prompt + CHECK_N_GEN - 1;
    seq = malloc((size_t)n_seq * sizeof *seq);
    if (!seq) {
        llorch_error_set(&err, "out of memory");
        goto fail;
    }
    memcpy(seq, tokens, n_prompt * sizeof *seq);
    memcpy(seq + n_prompt, gen, (CHECK_N_GEN - 1) * sizeof *seq);

    if (ref64_run(m->file, &m->config, seq, n_seq, (int)n_prompt, true, &ref64, &err) != 0)
        goto fail;

    bool have_llama = false;
    if (use_llama && m->file->version < 2) {
        snprintf(dump_note, sizeof dump_note,
                 "llama.cpp v0.4.0 does not load GGUF v%u files: compared with the float64 reference only",
                 m->file->version);
        fprintf(stderr, "llorch check: %s\n", dump_note);
    } else if (use_llama) {
        llorch_error find_err = {{0}};
        if (dump_find(dump_bin, sizeof dump_bin, &find_err)) {
            char d1[PATH_MAX + 32], d2[PATH_MAX + 32];
            snprintf(d1, sizeof d1, "%s/llama-dump-prompt", bundle);
            snprintf(d2, sizeof d2, "%s/llama-dump-continuation", bundle);
            if (dump_run(dump_bin, model_path, tokens, (int)n_prompt, threads, NULL, d1, &err) != 0 ||
                dump_load(d1, &m->config, (int)n_prompt, true, &llama, &err) != 0 ||
                dump_run(dump_bin, model_path, seq, n_seq, threads, "^result_output$", d2, &err) != 0 ||
                dump_load(d2, &m->config, (int)n_prompt, false, &llama_cont, &err) != 0) {
                llorch_error_prefix(&err, "llama.cpp reference");
                size_t len = strlen(err.msg);
                snprintf(err.msg + len, sizeof err.msg - len, " (--no-llama-cpp compares with the float64 "
                                                              "reference only)");
                goto fail;
            }
            if (!keep_dumps) {
                dump_remove(d1);
                dump_remove(d2);
            }
            have_llama = true;
        } else {
            snprintf(dump_note, sizeof dump_note, "%s: compared with the float64 reference only", find_err.msg);
            fprintf(stderr, "llorch check: %s\n", dump_note);
        }
    } else {
        snprintf(dump_note, sizeof dump_note, "--no-llama-cpp: compared with the float64 reference only");
    }

    check_inputs in = {
        .model_path = model_path, .prompt = prompt, .tokens = tokens, .n_prompt = (int)n_prompt,
        .cfg = &m->config, .file = m->file, .tok = tok, .gen = gen, .n_gen = CHECK_N_GEN,
        .mine = &mine, .ref64 = &ref64, .llama = have_llama ? &llama : NULL,
        .llama_cont = have_llama ? &llama_cont : NULL, .llama_dump_path = have_llama ? dump_bin : NULL,
        .reference_note = dump_note, .threads = threads, .bundle_dir = bundle,
    };
    int all_pass = check_points_write(&in, json, &err);
    if (all_pass < 0)
        goto fail;
    status = all_pass ? 0 : 1;
    goto done;
fail:
    fprintf(stderr, "llorch check: %s\n", err.msg);
    status = 1;
done:
    check_trace_free(&mine);
    check_trace_free(&ref64);
    check_trace_free(&llama);
    check_trace_free(&llama_cont);
    free(tokens);
    free(seq);
    tokenizer_free(&tok);
    model_free(&m);
    return status;
}
