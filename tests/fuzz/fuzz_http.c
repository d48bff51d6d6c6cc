/* fuzz_http.c - libFuzzer target: request bodies through the HTTP API's parser, chat template,
 * tokenizer, stop strings and reply JSON, and any Authorization header through the key check. */
/* fuzz-sources: router/http_openai.c router/http_chat.c router/http_stop.c router/http_config.c client/lib/llorch.c tests/fuzz/vocab.c */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_internal.h"
#include "utf8.h"
#include "vocab.h"

/* Input layout. Byte 0: bit 0 = chat (else completions); bit 1 = prompt ids checked
 * against the vocabulary (else unchecked, n_vocab 0); bit 2 = only the second model
 * name is set; bits 3-4 = max_tokens limit (1, 16, 4096 or 2^20); bits 5-7 = the
 * first chunk size of the generated text fed to the stop matcher. The rest is the
 * request body, and also the generated text and the Authorization header. */

static const tokenizer *s_tok;
static http_keys s_keys;
static const char *const s_key = "sk-fuzz-0123456789";

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The keys come from a real key file (comments, blanks, spaces), as the server loads them. */
static void s_load_keys(void)
{
    char path[] = "/tmp/llorch-fuzz-keys-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f)
        abort();
    fprintf(f, "# keys\n\n  %s  \nsk-other # second\n", s_key);
    fclose(f);
    llorch_error err = {0};
    int rc = http_keys_load(&s_keys, path, &err);
    unlink(path);
    if (rc != 0 || s_keys.n != 2) {
        fprintf(stderr, "fuzz_http: keys: %s\n", err.msg);
        abort();
    }
    char auth[64];
    snprintf(auth, sizeof auth, "bearer  %s ", s_key);
    if (!http_keys_check(&s_keys, auth) || http_keys_check(&s_keys, "Bearer sk-fuzz"))
        abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!(s_tok = fuzz_vocab_builtin()))
        abort();
    s_load_keys();
    return 0;
}

/* Every refusal has a status, a reason, and an error body that is JSON: a NULL body
 * would drop the connection without an answer. */
static void s_check_fail(const http_fail *f)
{
    if (f->status < 400 || f->status > 599 || f->message[0] == '\0')
        abort();
    char *j = http_fail_json(f);
    if (!j)
        abort();
    json_t *back = json_loads(j, 0, NULL);
    if (!back)
        abort();
    json_decref(back);
    free(j);
}

/* Where the earliest stop string starts in text[from..len), or len. */
static size_t s_first_stop(const http_request *r, const char *text, size_t from, size_t len)
{
    size_t cut = len;
    for (unsigned i = 0; i < r->n_stop; i++) {
        const char *p = memmem(text + from, len - from, r->stop[i], strlen(r->stop[i]));
        if (p && (size_t)(p - text) < cut)
            cut = (size_t)(p - text);
    }
    return cut;
}

/* Feeds text as the generated text, in chunks of varying size, through the request's
 * stop strings. Generation stops with the first chunk that completes a stop string, and
 * what comes out must be exactly the text before the earliest stop string in the text
 * up to that chunk (a longer one that began earlier but was not complete yet does not
 * count), or all of it. Returns the released text (malloc'd, *out_len bytes). */
static char *s_run_stop(const http_request *r, const char *text, size_t len, unsigned chunk,
                        size_t *out_len)
{
    http_stop m;
    http_stop_init(&m, r->stop_ptrs, r->n_stop);
    char *out = malloc(len + 1);
    size_t n_out = 0, want = len;
    int hit = 0;
    for (size_t at = 0; at < len && !hit;) {
        size_t n = chunk < len - at ? chunk : len - at;
        const char *emit;
        size_t n_emit;
        int rc = http_stop_push(&m, text + at, n, &emit, &n_emit);
        if (rc < 0 || n_out + n_emit > len)
            abort();
        memcpy(out + n_out, emit, n_emit);
        n_out += n_emit;
        hit = rc == 1;
        /* A stop string this chunk completed ends in it: no need to look further back. */
        size_t from = at > HTTP_MAX_STOP_BYTES ? at - HTTP_MAX_STOP_BYTES : 0;
        at += n;
        size_t cut = s_first_stop(r, text, from, at);
        if (hit != (cut < at))
            abort(); /* a stop string was missed, or one was seen where there is none */
        if (hit)
            want = cut;
        chunk = chunk * 5 % 17 + 1; /* 1..17 bytes, mixed */
    }
    if (!hit) {
        const char *emit;
        size_t n_emit;
        http_stop_flush(&m, &emit, &n_emit);
        if (n_out + n_emit > len)
            abort();
        memcpy(out + n_out, emit, n_emit);
        n_out += n_emit;
    }
    const char *after;
    size_t n_after;
    if (hit && (http_stop_push(&m, "x", 1, &after, &n_after) != 1 || n_after != 0))
        abort(); /* nothing is released after a stop */
    http_stop_free(&m);
    if (n_out != want || memcmp(out, text, n_out) != 0)
        abort();
    *out_len = n_out;
    return out;
}

/* Builds the non-streaming reply and the SSE chunks of a generation that produced text
 * and the tokens ids[0..n_ids) (used as sampled tokens and alternatives, some out of
 * range). Everything must come out as JSON. */
static void s_replies(const http_request *r, const char *text, size_t len, const int32_t *ids,
                      size_t n_ids)
{
    size_t n_lps = n_ids < 8 ? n_ids : 8;
    http_logprob lps[8];
    for (size_t i = 0; i < n_lps; i++) {
        lps[i] = (http_logprob){.id = ids[i], .logprob = -(float)i, .n_top = r->top_logprobs};
        for (unsigned k = 0; k < lps[i].n_top; k++) {
            lps[i].top_ids[k] = k % 3 == 2 ? (int32_t)s_tok->n_vocab + (int32_t)k
                                           : ids[(i + k) % n_ids];
            lps[i].top_logprobs[k] = -(float)k;
        }
    }
    size_t clean_len;
    char *clean = http_utf8_sanitize(text, len, &clean_len);
    if (!clean)
        abort();
    http_reply reply = {.kind = r->kind, .id = r->kind == HTTP_CHAT ? "chatcmpl-1" : "cmpl-1",
                        .created = 1, .model = r->model, .tok = s_tok, .logprobs = r->logprobs};
    json_t *j = http_reply_json(&reply, clean, clean_len, "stop", (unsigned)n_ids, 3, lps,
                                n_lps);
    if (!j)
        abort();
    json_decref(j);
    char *sse = NULL;
    size_t sse_len = 0, sse_cap = 0;
    if (http_sse_append_json(&sse, &sse_len, &sse_cap,
                             http_chunk_json(&reply, true, clean, clean_len, NULL, lps, n_lps)) ||
        http_sse_append_json(&sse, &sse_len, &sse_cap,
                             http_chunk_json(&reply, false, "", 0, "length", NULL, 0)) ||
        (r->include_usage &&
         http_sse_append_json(&sse, &sse_len, &sse_cap, http_usage_chunk_json(&reply, 1, 2))) ||
        http_buf_append(&sse, &sse_len, &sse_cap, "data: [DONE]\n\n", 14))
        abort();
    free(sse);
    free(clean);
}

/* A request the parser accepted: its fields are in range, its prompt tokenizes as the
 * server tokenizes it, and a generation of that prompt's text goes through the stop
 * matcher and the reply builders. */
static void s_accepted(const http_request *r, const http_limits *lim, unsigned chunk)
{
    if (!r->prompt_text == !r->prompt_ids || (r->prompt_ids && r->n_prompt_ids == 0) ||
        r->params.max_tokens < 1 || r->params.max_tokens > lim->max_tokens ||
        r->n_stop > HTTP_MAX_STOP || r->params.n_stop != r->n_stop ||
        r->top_logprobs > HTTP_MAX_TOP_LOGPROBS || (r->include_usage && !r->stream) ||
        (r->kind == HTTP_CHAT && !r->prompt_text))
        abort();
    for (size_t i = 0; i < r->n_prompt_ids; i++)
        if (r->prompt_ids[i] < 0 || (lim->n_vocab && (uint32_t)r->prompt_ids[i] >= lim->n_vocab))
            abort();
    for (unsigned i = 0; i < r->n_stop; i++)
        if (r->params.stop[i] != r->stop[i] || !*r->stop[i] ||
            strlen(r->stop[i]) > HTTP_MAX_STOP_BYTES)
            abort();

    int32_t *ids = NULL;
    size_t n_ids = 0;
    const char *text = r->prompt_text;
    size_t len = text ? strlen(text) : 0;
    if (text) {
        llorch_error err = {0};
        if (tokenizer_encode(s_tok, text, len, r->tokenize_flags, &ids, &n_ids, &err) != 0)
            abort();
    } else {
        /* A token-id prompt: the generated text is its decoding (ids out of this
         * vocabulary are dropped: the limits may not have checked them). */
        ids = malloc(r->n_prompt_ids * sizeof *ids);
        for (size_t i = 0; i < r->n_prompt_ids; i++)
            if ((uint32_t)r->prompt_ids[i] < s_tok->n_vocab)
                ids[n_ids++] = r->prompt_ids[i];
    }
    char *decoded = NULL;
    if (!text) {
        llorch_error err = {0};
        if (tokenizer_decode(s_tok, ids, n_ids, 0, &decoded, &len, &err) != 0)
            abort();
        text = decoded;
    }
    size_t out_len;
    char *out = s_run_stop(r, text, len, chunk, &out_len);
    if (n_ids)
        s_replies(r, out, out_len, ids, n_ids);
    free(out);
    free(decoded);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const unsigned max_tokens[4] = {1, 16, 4096, 1u << 20};
    const http_kind kind = (data[0] & 1) ? HTTP_CHAT : HTTP_COMPLETION;
    const http_limits lim = {
        .max_tokens = max_tokens[(data[0] >> 3) & 3],
        .default_max_tokens = 16 < max_tokens[(data[0] >> 3) & 3] ? 16 : 1,
        .n_vocab = (data[0] & 2) ? s_tok->n_vocab : 0,
        .model_names = {(data[0] & 4) ? NULL : "stories", "c5f93a75"},
    };
    const unsigned chunk = ((data[0] >> 5) & 7u) + 1;
    const char *body = (const char *)data + 1;
    const size_t len = size - 1;

    http_request req;
    http_fail fail = {0};
    if (http_request_parse(kind, body, len, &lim, &req, &fail) == 0) {
        s_accepted(&req, &lim, chunk);
        http_request_free(&req);
        http_request_free(&req); /* promised safe */
    } else {
        s_check_fail(&fail);
        if (req.prompt_text || req.prompt_ids || req.n_stop)
            abort(); /* a refused request holds nothing */
    }

    /* The chat template over any JSON value, not only a request's "messages". */
    json_t *root = json_loadb(body, len, 0, NULL);
    if (root) {
        http_fail f = {0};
        char *prompt = http_chat_render(root, &f);
        if (prompt)
            free(prompt);
        else
            s_check_fail(&f);
        json_decref(root);
    }

    /* Sanitized text is what jansson takes; text that was well-formed is unchanged. */
    size_t clean_len;
    char *clean = http_utf8_sanitize(body, len, &clean_len);
    if (!clean || clean[clean_len] != '\0')
        abort();
    json_t *s = json_stringn(clean, clean_len);
    if (!s)
        abort();
    json_decref(s);
    json_t *as_is = json_stringn(body, len);
    if (as_is && (clean_len != len || memcmp(clean, body, len) != 0))
        abort();
    json_decref(as_is);
    free(clean);

    /* The body as an Authorization header, bare and after "Bearer ". */
    char *auth = malloc(len + 8);
    memcpy(auth, "Bearer ", 7);
    memcpy(auth + 7, body, len);
    auth[7 + len] = '\0';
    const bool known = !strcmp(auth + 7, s_key) || !strcmp(auth + 7, "sk-other");
    if (http_keys_check(&s_keys, auth) && !memchr(auth + 7, ' ', strlen(auth + 7)) && !known)
        abort(); /* a key without spaces passes only when it is one of the keys */
    if (known && !http_keys_check(&s_keys, auth))
        abort();
    (void)http_keys_check(&s_keys, auth + 7);
    free(auth);
    return 0;
}
