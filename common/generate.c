/* generate.c - the in-process generation loop over one stage holding every layer. */
#include "generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_cache.h"
#include "stage.h"

/* Rows of scratch for the prompt batch; longer prompts run in chunks of this many. */
#define PROMPT_CHUNK_ROWS 512

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

generator *generator_open(const char *path, llorch_error *err)
{
    const double start = s_now_ms();
    generator *g = calloc(1, sizeof *g);
    if (!g) {
        llorch_error_set(err, "out of memory");
        return NULL;
    }
    g->m = model_open(path, err);
    if (!g->m) {
        generator_free(&g);
        return NULL;
    }
    g->tok = tokenizer_from_gguf(g->m->file, err);
    if (!g->tok) {
        llorch_error_prefix(err, "%s", path);
        generator_free(&g);
        return NULL;
    }
    if (g->tok->n_vocab != g->m->config.vocab_size) {
        llorch_error_set(err, "%s: the tokenizer has %u tokens but the model %u", path,
                         g->tok->n_vocab, g->m->config.vocab_size);
        generator_free(&g);
        return NULL;
    }
    g->load_ms = s_now_ms() - start;
    return g;
}

void generator_free(generator **pg)
{
    if (!pg || !*pg)
        return;
    tokenizer_free(&(*pg)->tok);
    model_free(&(*pg)->m);
    free(*pg);
    *pg = NULL;
}

void generate_result_free(generate_result *r)
{
    free(r->prompt_tokens);
    free(r->tokens);
    free(r->text);
    free(r->top);
    memset(r, 0, sizeof *r);
}

/* The k most probable of probs[0..n) into top[0..k), descending (lowest id first on
 * ties); k <= n. */
static void s_top_k(const float *probs, int n, int k, generate_prob *top)
{
    int have = 0;
    for (int i = 0; i < n; i++) {
        if (have == k && probs[i] <= top[k - 1].p)
            continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && top[j - 1].p < probs[i]) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = (generate_prob){.id = i, .p = probs[i]};
    }
}

/* Appends text to the result (and hands it to on_text). Returns the callback's value. */
static int s_emit(generate_result *out, const char *text, size_t len, generate_text_fn on_text,
                  void *user, size_t *cap)
{
    if (len == 0)
        return 0;
    if (out->text_len + len + 1 > *cap) {
        size_t want = (*cap ? *cap * 2 : 256) + len;
        char *grown = realloc(out->text, want);
        if (!grown)
            return -1;
        out->text = grown;
        *cap = want;
    }
    memcpy(out->text + out->text_len, text, len);
    out->text_len += len;
    out->text[out->text_len] = '\0';
    return on_text ? on_text(user, text, len) : 0;
}

int generate_run(generator *g, const generate_params *p, generate_text_fn on_text, void *user,
                 generate_result *out, llorch_error *err)
{
    memset(out, 0, sizeof *out);
    const model_config *c = &g->m->config;
    const int n_vocab = (int)c->vocab_size;
    if (p->n_predict < 0 || p->threads < 1 || p->top_k_probs < 0 || p->top_k_probs > n_vocab)
        return llorch_error_set(err, "n_predict %d must be >= 0, threads %d >= 1, top %d in "
                                     "0..%d", p->n_predict, p->threads, p->top_k_probs, n_vocab);
    out->load_ms = g->load_ms;
    out->top_k = p->top_k_probs;
    out->stop_reason = "length";
    out->text = calloc(1, 1);
    if (!out->text)
        return llorch_error_set(err, "out of memory");

    if (tokenizer_encode(g->tok, p->prompt ? p->prompt : "", p->prompt ? strlen(p->prompt) : 0,
                         TOKENIZE_ADD_SPECIAL, &out->prompt_tokens, &out->n_prompt, err) < 0)
        return -1;
    const size_t n_prompt = out->n_prompt;
    if (n_prompt == 0)
        return llorch_error_set(err, "the prompt is empty and the vocabulary adds no BOS: "
                                     "give a prompt");
    if (n_prompt >= c->context_length)
        return llorch_error_set(err, "the prompt has %zu tokens; the model's context holds %u",
                                n_prompt, c->context_length);
    size_t n_positions = n_prompt + (size_t)p->n_predict;
    if (n_positions > c->context_length)
        n_positions = c->context_length;

    const int max_rows = n_prompt < PROMPT_CHUNK_ROWS ? (int)n_prompt : PROMPT_CHUNK_ROWS;
    stage_opts opts = {
        .threads = p->threads,
        .kv_budget_bytes = kv_cache_bytes_per_position((int)c->n_layers, (int)c->kv_dim,
                                                       p->kv_type) *
                           (n_positions + KV_BLOCK_POSITIONS),
        .kv_type = p->kv_type,
        .max_batch_rows = max_rows,
        .max_seqs = 1,
        .n_ctx = (int)c->context_length,
    };
    stage_row *rows = calloc(n_prompt, sizeof *rows);
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    float *probs = p->top_k_probs ? malloc((size_t)n_vocab * sizeof *probs) : NULL;
    out->tokens = malloc(((size_t)p->n_predict + 1) * sizeof *out->tokens);
    out->top = p->top_k_probs ? malloc(((size_t)p->n_predict + 1) * (size_t)p->top_k_probs *
                                       sizeof *out->top)
                              : NULL;
    stage *st = NULL;
    sampler *smp = NULL;
    tokenizer_stream stream = {0};
    int rc = -1;
    size_t text_cap = 1;
    if (!rows || !logits || (p->top_k_probs && (!probs || !out->top)) || !out->tokens) {
        llorch_error_set(err, "out of memory");
        goto done;
    }
    st = stage_new(g->m, 0, c->n_layers, &opts, err);
    if (!st)
        goto done;
    smp = sampler_new(&p->sampling, n_vocab, err);
    if (!smp || tokenizer_stream_init(&stream, g->tok, TOKENIZER_DECODE_CONTINUE, err) < 0)
        goto done;

    /* The prompt as one batch; only its last row's logits are needed. */
    for (size_t i = 0; i < n_prompt; i++) {
        rows[i] = (stage_row){.seq_id = 0, .pos = (int32_t)i, .token = out->prompt_tokens[i],
                              .want_logits = i + 1 == n_prompt};
        sampler_accept(smp, out->prompt_tokens[i]);
    }
    double t0 = s_now_ms();
    if (stage_forward(st, rows, (int)n_prompt, NULL, logits, err) < 0)
        goto done;
    out->prompt_ms = s_now_ms() - t0;
    out->prompt_tokens_per_s = out->prompt_ms > 0 ? (double)n_prompt * 1e3 / out->prompt_ms : 0;

    /* One token per step: feed the previous token back (from the second step on),
     * sample from the logits, stop at EOS. */
    t0 = s_now_ms();
    int n_decoded = 0;
    int32_t pos = (int32_t)n_prompt;
    while (out->n_tokens < (size_t)p->n_predict) {
        if (out->n_tokens > 0) {
            if ((uint32_t)pos >= c->context_length) {
                out->stop_reason = "context";
                break;
            }
            stage_row row = {.seq_id = 0, .pos = pos++, .token = out->tokens[out->n_tokens - 1],
                             .want_logits = true};
            if (stage_forward(st, &row, 1, NULL, logits, err) < 0)
                goto done;
            n_decoded++;
        }
        if (out->top) {
            softmax_probs(logits, n_vocab, probs);
            s_top_k(probs, n_vocab, p->top_k_probs, out->top + out->n_tokens * p->top_k_probs);
        }
        const int token = sampler_sample(smp, logits);
        if (token == g->tok->eos_id && !p->ignore_eos) {
            out->stop_reason = "eos";
            break;
        }
        sampler_accept(smp, token);
        out->tokens[out->n_tokens++] = token;
        const char *piece;
        size_t piece_len;
        if (tokenizer_stream_push(&stream, token, &piece, &piece_len, err) < 0)
            goto done;
        int stop = s_emit(out, piece, piece_len, on_text, user, &text_cap);
        if (stop < 0) {
            llorch_error_set(err, "out of memory");
            goto done;
        }
        if (stop) {
            out->stop_reason = "cancelled";
            break;
        }
    }
    out->gen_ms = s_now_ms() - t0;
    out->gen_tokens_per_s = out->gen_ms > 0 ? (double)n_decoded * 1e3 / out->gen_ms : 0;
    const char *tail;
    size_t tail_len;
    tokenizer_stream_flush(&stream, &tail, &tail_len);
    if (s_emit(out, tail, tail_len, on_text, user, &text_cap) < 0) {
        llorch_error_set(err, "out of memory");
        goto done;
    }
    rc = 0;
done:
    tokenizer_stream_free(&stream);
    sampler_free(&smp);
    stage_free(&st);
    free(rows);
    free(logits);
    free(probs);
    return rc;
}
