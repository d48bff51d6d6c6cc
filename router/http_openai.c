/* http_openai.c - OpenAI request bodies parsed and range-checked; response and SSE chunk JSON. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "http_internal.h"

int http_fail_set(http_fail *f, int status, const char *type, const char *code,
                  const char *param, const char *fmt, ...)
{
    f->status = status;
    f->type = type;
    f->code = code;
    snprintf(f->param, sizeof f->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
    return -1;
}

char *http_fail_json(const http_fail *f)
{
    /* The message quotes the client's bytes (jansson's "near '...'" of a bad body, a
     * model name) cut at a byte count, which can split a character: jansson refuses
     * such a string, and without a body the server would drop the connection instead
     * of answering. */
    size_t len;
    char *message = http_utf8_sanitize(f->message, strlen(f->message), &len);
    if (!message)
        return NULL;
    json_t *e = json_pack("{s:{s:s%, s:s, s:o, s:o}}", "error", "message", message, len, "type",
                          f->type ? f->type : "invalid_request_error", "param",
                          f->param[0] ? json_string(f->param) : json_null(), "code",
                          f->code ? json_string(f->code) : json_null());
    free(message);
    if (!e)
        return NULL;
    char *s = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    return s;
}

int http_buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n + 1)
            c *= 2;
        char *b = realloc(*buf, c);
        if (!b)
            return -1;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

int http_sse_append_json(char **buf, size_t *len, size_t *cap, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s)
        return -1;
    int rc = http_buf_append(buf, len, cap, "data: ", 6);
    if (rc == 0)
        rc = http_buf_append(buf, len, cap, s, strlen(s));
    if (rc == 0)
        rc = http_buf_append(buf, len, cap, "\n\n", 2);
    free(s);
    return rc;
}

/* Length of the well-formed UTF-8 character at s[0..n), or 0 when ill-formed. */
static size_t s_utf8_char(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t k;
    unsigned cp;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        k = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        k = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        k = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (k > n)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k;
}

char *http_utf8_sanitize(const char *s, size_t n, size_t *out_len)
{
    char *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = s_utf8_char((const unsigned char *)s + i, n - i);
        if (k) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return out;
}

/* ---- request parsing ---- */

static const char *s_bad = "invalid_request_error";

/* A number field: absent or null leaves *out. Must be a number in [lo, hi]. */
static int s_number(const json_t *body, const char *key, double lo, double hi, double *out,
                    bool *given, http_fail *f)
{
    const json_t *v = json_object_get(body, key);
    if (given)
        *given = false;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return http_fail_set(f, 400, s_bad, "invalid_type", key,
                             "%s must be a number in [%g, %g]", key, lo, hi);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return http_fail_set(f, 400, s_bad, "invalid_value", key,
                             "%s is %g; it must be in [%g, %g]", key, d, lo, hi);
    *out = d;
    if (given)
        *given = true;
    return 0;
}

/* An integer field in [lo, hi]; absent or null leaves *out. */
static int s_integer(const json_t *body, const char *key, long long lo, long long hi,
                     long long *out, bool *given, http_fail *f)
{
    const json_t *v = json_object_get(body, key);
    if (given)
        *given = false;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return http_fail_set(f, 400, s_bad, "invalid_type", key,
                             "%s must be an integer in [%lld, %lld]", key, lo, hi);
    long long n = json_integer_value(v);
    if (n < lo || n > hi)
        return http_fail_set(f, 400, s_bad, "invalid_value", key,
                             "%s is %lld; it must be in [%lld, %lld]", key, n, lo, hi);
    *out = n;
    if (given)
        *given = true;
    return 0;
}

static int s_bool(const json_t *body, const char *key, bool *out, http_fail *f)
{
    const json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return http_fail_set(f, 400, s_bad, "invalid_type", key, "%s must be true or false",
                             key);
    *out = json_is_true(v);
    return 0;
}

static int s_stop(const json_t *body, http_request *r, http_fail *f)
{
    const json_t *v = json_object_get(body, "stop");
    if (!v || json_is_null(v))
        return 0;
    const json_t *one[1] = {v};
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > HTTP_MAX_STOP)
            return http_fail_set(f, 400, s_bad, "invalid_value", "stop",
                                 "stop has %zu strings; at most %d are allowed", n,
                                 HTTP_MAX_STOP);
    } else if (!json_is_string(v)) {
        return http_fail_set(f, 400, s_bad, "invalid_type", "stop",
                             "stop must be a string or an array of strings");
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_is_array(v) ? json_array_get(v, i) : one[0];
        if (!json_is_string(s))
            return http_fail_set(f, 400, s_bad, "invalid_type", "stop",
                                 "stop[%zu] must be a string", i);
        size_t len = json_string_length(s);
        if (len == 0 || len > HTTP_MAX_STOP_BYTES || memchr(json_string_value(s), 0, len))
            return http_fail_set(f, 400, s_bad, "invalid_value", "stop",
                                 "stop strings must be 1..%d bytes without NUL (stop[%zu] has "
                                 "%zu)", HTTP_MAX_STOP_BYTES, i, len);
        if (!(r->stop[r->n_stop] = strdup(json_string_value(s))))
            return http_fail_set(f, 500, "server_error", NULL, NULL, "out of memory");
        r->stop_ptrs[r->n_stop] = r->stop[r->n_stop];
        r->n_stop++;
    }
    return 0;
}

/* The completions prompt: a string, [string], [int...] or [[int...]]. */
static int s_prompt(const json_t *body, const http_limits *lim, http_request *r, http_fail *f)
{
    const json_t *p = json_object_get(body, "prompt");
    const char *want = "prompt must be a string, an array of token ids, or an array holding "
                       "one of those (n = 1: one prompt per request)";
    if (!p)
        return http_fail_set(f, 400, s_bad, "missing_required_parameter", "prompt",
                             "prompt is missing: %s", want);
    if (json_is_array(p) && json_array_size(p) == 1 &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
        p = json_array_get(p, 0);
    if (json_is_string(p)) {
        if (memchr(json_string_value(p), 0, json_string_length(p)))
            return http_fail_set(f, 400, s_bad, "invalid_value", "prompt",
                                 "prompt holds a NUL character");
        if (!(r->prompt_text = strdup(json_string_value(p))))
            return http_fail_set(f, 500, "server_error", NULL, NULL, "out of memory");
        r->tokenize_flags = TOKENIZE_ADD_SPECIAL | TOKENIZE_PARSE_SPECIAL;
        return 0;
    }
    if (!json_is_array(p) || json_array_size(p) == 0)
        return http_fail_set(f, 400, s_bad, json_is_array(p) ? "invalid_value" : "invalid_type",
                             "prompt", "%s", want);
    size_t n = json_array_size(p);
    if (!(r->prompt_ids = malloc(n * sizeof *r->prompt_ids)))
        return http_fail_set(f, 500, "server_error", NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(p, i);
        long long id = json_is_integer(t) ? json_integer_value(t) : -1;
        /* Without a vocabulary size (no model yet) an id must still fit a token id. */
        const long long end = lim->n_vocab ? (long long)lim->n_vocab : (long long)INT32_MAX + 1;
        if (!json_is_integer(t) || id < 0 || id >= end)
            return http_fail_set(f, 400, s_bad, "invalid_value", "prompt",
                                 "prompt[%zu] is not a token id: ids are integers in [0, %lld)%s%s",
                                 i, end, json_is_string(t) ? "; " : "",
                                 json_is_string(t) ? want : "");
        r->prompt_ids[i] = (int32_t)id;
    }
    r->n_prompt_ids = n;
    return 0;
}

/* Fields this server cannot honour: refused rather than silently ignored. */
static int s_unsupported(const json_t *body, http_kind kind, http_fail *f)
{
    const json_t *v;
    if ((v = json_object_get(body, "echo")) && json_is_true(v))
        return http_fail_set(f, 400, s_bad, "unsupported_parameter", "echo",
                             "echo is not supported: the response holds the completion only");
    if ((v = json_object_get(body, "best_of")) && !json_is_null(v) &&
        !(json_is_integer(v) && json_integer_value(v) == 1))
        return http_fail_set(f, 400, s_bad, "unsupported_parameter", "best_of",
                             "best_of must be 1: one completion per request");
    if ((v = json_object_get(body, "suffix")) && !json_is_null(v))
        return http_fail_set(f, 400, s_bad, "unsupported_parameter", "suffix",
                             "suffix (insertion) is not supported by this model");
    if ((v = json_object_get(body, "logit_bias")) && !json_is_null(v) &&
        !(json_is_object(v) && json_object_size(v) == 0))
        return http_fail_set(f, 400, s_bad, "unsupported_parameter", "logit_bias",
                             "logit_bias is not supported");
    if (kind == HTTP_CHAT && (v = json_object_get(body, "tools")) && !json_is_null(v) &&
        !(json_is_array(v) && json_array_size(v) == 0))
        return http_fail_set(f, 400, s_bad, "unsupported_parameter", "tools",
                             "tools (function calling) are not supported");
    const json_t *rf = json_object_get(body, "response_format");
    const json_t *rt = json_object_get(rf, "type");
    if (rf && !json_is_null(rf) && !(json_is_string(rt) && !strcmp(json_string_value(rt), "text")))
        return http_fail_set(f, 400, s_bad, "unsupported_parameter", "response_format",
                             "response_format must be {\"type\": \"text\"}: constrained output "
                             "is not supported");
    return 0;
}

static int s_parse(http_kind kind, const json_t *body, const http_limits *lim, http_request *r,
                   http_fail *f)
{
    const json_t *model = json_object_get(body, "model");
    if (!model)
        return http_fail_set(f, 400, s_bad, "missing_required_parameter", "model",
                             "model is missing: GET /v1/models lists the model served");
    if (!json_is_string(model))
        return http_fail_set(f, 400, s_bad, "invalid_type", "model", "model must be a string");
    bool known = false;
    for (int i = 0; i < 2; i++)
        if (lim->model_names[i] && !strcmp(lim->model_names[i], json_string_value(model)))
            known = true;
    if (!known)
        return http_fail_set(f, 404, s_bad, "model_not_found", "model",
                             "the model '%.100s' does not exist here; this server serves '%s'",
                             json_string_value(model),
                             lim->model_names[0] ? lim->model_names[0] : "(none yet)");
    snprintf(r->model, sizeof r->model, "%s", json_string_value(model));
    if (s_unsupported(body, kind, f) != 0)
        return -1;

    if (kind == HTTP_CHAT) {
        if (!json_object_get(body, "messages"))
            return http_fail_set(f, 400, s_bad, "missing_required_parameter", "messages",
                                 "messages is missing: give an array of {role, content}");
        if (!(r->prompt_text = http_chat_render(json_object_get(body, "messages"), f)))
            return -1;
        r->tokenize_flags = TOKENIZE_PARSE_SPECIAL;
    } else if (s_prompt(body, lim, r, f) != 0) {
        return -1;
    }

    llorch_params *p = &r->params;
    long long max_tokens = lim->default_max_tokens, top_k = p->top_k, seed = -1;
    bool given;
    const json_t *nv = json_object_get(body, "n");
    if (nv && !json_is_null(nv) && !(json_is_integer(nv) && json_integer_value(nv) == 1))
        return http_fail_set(f, 400, s_bad, json_is_integer(nv) ? "invalid_value" : "invalid_type",
                             "n", "n must be 1: one choice per request");
    if (s_integer(body, "max_tokens", 1, lim->max_tokens, &max_tokens, &given, f) != 0)
        return -1;
    if (!given && kind == HTTP_CHAT &&
        s_integer(body, "max_completion_tokens", 1, lim->max_tokens, &max_tokens, NULL, f) != 0)
        return -1;
    double temperature = p->temperature, top_p = p->top_p, min_p = p->min_p;
    double presence = p->presence_penalty, frequency = p->frequency_penalty;
    double repeat = p->repeat_penalty;
    if (s_number(body, "temperature", 0, 2, &temperature, NULL, f) != 0 ||
        s_number(body, "top_p", 0, 1, &top_p, NULL, f) != 0 ||
        s_number(body, "min_p", 0, 1, &min_p, NULL, f) != 0 ||
        s_number(body, "presence_penalty", -2, 2, &presence, NULL, f) != 0 ||
        s_number(body, "frequency_penalty", -2, 2, &frequency, NULL, f) != 0 ||
        s_number(body, "repeat_penalty", 0.01, 10, &repeat, NULL, f) != 0 ||
        s_integer(body, "top_k", 0, 1 << 20, &top_k, NULL, f) != 0 ||
        s_integer(body, "seed", 0, (long long)(((uint64_t)1 << 63) - 1), &seed, &given, f) != 0)
        return -1;
    p->temperature = (float)temperature;
    p->top_p = (float)top_p;
    p->min_p = (float)min_p;
    p->presence_penalty = (float)presence;
    p->frequency_penalty = (float)frequency;
    p->repeat_penalty = (float)repeat;
    p->top_k = (int)top_k;
    if (given)
        p->seed = (uint64_t)seed;
    p->max_tokens = (unsigned)max_tokens;

    if (s_bool(body, "stream", &r->stream, f) != 0)
        return -1;
    const json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return http_fail_set(f, 400, s_bad, "invalid_type", "stream_options",
                                 "stream_options must be an object");
        if (!r->stream)
            return http_fail_set(f, 400, s_bad, "invalid_value", "stream_options",
                                 "stream_options is only allowed with stream: true");
        if (s_bool(so, "include_usage", &r->include_usage, f) != 0)
            return http_fail_set(f, 400, s_bad, "invalid_type", "stream_options",
                                 "stream_options.include_usage must be true or false");
    }
    if (s_stop(body, r, f) != 0)
        return -1;
    p->stop = r->stop_ptrs;
    p->n_stop = r->n_stop;

    long long top = 0;
    if (kind == HTTP_COMPLETION) {
        /* Completions: "logprobs": N asks for N alternatives per token (0 = just the
         * sampled token's). */
        if (s_integer(body, "logprobs", 0, HTTP_MAX_TOP_LOGPROBS, &top, &given, f) != 0)
            return -1;
        r->logprobs = given;
    } else {
        if (s_bool(body, "logprobs", &r->logprobs, f) != 0 ||
            s_integer(body, "top_logprobs", 0, HTTP_MAX_TOP_LOGPROBS, &top, &given, f) != 0)
            return -1;
        if (given && !r->logprobs)
            return http_fail_set(f, 400, s_bad, "invalid_value", "top_logprobs",
                                 "top_logprobs needs logprobs: true");
    }
    r->top_logprobs = (unsigned)top;
    p->top_n_probs = r->logprobs ? HTTP_TOP_FETCH : 0;
    return 0;
}

int http_request_parse(http_kind kind, const char *body, size_t body_len,
                       const http_limits *lim, http_request *out, http_fail *fail)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    llorch_params_init(&out->params);
    json_error_t jerr;
    json_t *root = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        http_fail_set(fail, 400, s_bad, "invalid_json", NULL,
                      "the body is not valid JSON: %s (line %d, column %d)", jerr.text,
                      jerr.line, jerr.column);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(root))
        http_fail_set(fail, 400, s_bad, "invalid_type", NULL,
                      "the body must be a JSON object");
    else
        rc = s_parse(kind, root, lim, out, fail);
    json_decref(root);
    if (rc != 0)
        http_request_free(out);
    return rc;
}

void http_request_free(http_request *r)
{
    free(r->prompt_text);
    free(r->prompt_ids);
    for (unsigned i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    r->prompt_text = NULL;
    r->prompt_ids = NULL;
    r->n_stop = 0;
}

/* ---- responses ---- */

/* The text of token id as a JSON string, and its bytes as an array of numbers. */
static json_t *s_token_text(const tokenizer *tok, int32_t id, json_t **bytes)
{
    char *raw = NULL;
    size_t len = 0;
    if (bytes)
        *bytes = json_array();
    if (!tok || id < 0 || (uint32_t)id >= tok->n_vocab ||
        tokenizer_decode(tok, &id, 1, TOKENIZER_DECODE_CONTINUE, &raw, &len, NULL) != 0)
        return json_string("");
    for (size_t i = 0; bytes && *bytes && i < len; i++)
        json_array_append_new(*bytes, json_integer((unsigned char)raw[i]));
    char *s = http_utf8_sanitize(raw, len, &len);
    free(raw);
    json_t *j = s ? json_stringn(s, len) : json_string("");
    free(s);
    return j;
}

/* Completions' logprobs object: tokens, token_logprobs, top_logprobs, text_offset. */
static json_t *s_completion_logprobs(const http_reply *r, const http_logprob *lps, size_t n,
                                     size_t offset)
{
    json_t *tokens = json_array(), *lp = json_array(), *top = json_array(), *off = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *t = s_token_text(r->tok, lps[i].id, NULL);
        size_t tl = json_string_length(t);
        json_array_append_new(tokens, t);
        json_array_append_new(lp, json_real(lps[i].logprob));
        json_t *alts = json_object();
        for (unsigned k = 0; k < lps[i].n_top; k++) {
            json_t *at = s_token_text(r->tok, lps[i].top_ids[k], NULL);
            json_object_set_new(alts, json_string_value(at), json_real(lps[i].top_logprobs[k]));
            json_decref(at);
        }
        json_array_append_new(top, alts);
        json_array_append_new(off, json_integer((json_int_t)offset));
        offset += tl;
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lp,
                     "top_logprobs", top, "text_offset", off);
}

/* Chat's logprobs object: {"content": [{token, logprob, bytes, top_logprobs}]}. */
static json_t *s_chat_logprobs(const http_reply *r, const http_logprob *lps, size_t n)
{
    json_t *content = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *bytes, *alts = json_array();
        json_t *t = s_token_text(r->tok, lps[i].id, &bytes);
        for (unsigned k = 0; k < lps[i].n_top; k++) {
            json_t *ab;
            json_t *at = s_token_text(r->tok, lps[i].top_ids[k], &ab);
            json_array_append_new(alts, json_pack("{s:o, s:f, s:o}", "token", at, "logprob",
                                                  (double)lps[i].top_logprobs[k], "bytes", ab));
        }
        json_array_append_new(content, json_pack("{s:o, s:f, s:o, s:o}", "token", t, "logprob",
                                                 (double)lps[i].logprob, "bytes", bytes,
                                                 "top_logprobs", alts));
    }
    return json_pack("{s:o}", "content", content);
}

static json_t *s_usage(unsigned prompt, unsigned completion)
{
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                     (json_int_t)completion, "total_tokens", (json_int_t)prompt + completion);
}

static json_t *s_envelope(const http_reply *r, bool chunk, json_t *choice)
{
    const char *object = r->kind == HTTP_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                              : "text_completion";
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:[o]}", "id", r->id, "object", object,
                     "created", (json_int_t)r->created, "model", r->model, "system_fingerprint",
                     "llorch", "choices", choice);
}

json_t *http_reply_json(const http_reply *r, const char *text, size_t text_len,
                        const char *finish_reason, unsigned prompt_tokens,
                        unsigned completion_tokens, const http_logprob *lps, size_t n_lps)
{
    json_t *logprobs = json_null();
    if (r->logprobs)
        logprobs = r->kind == HTTP_CHAT ? s_chat_logprobs(r, lps, n_lps)
                                        : s_completion_logprobs(r, lps, n_lps, 0);
    json_t *choice;
    if (r->kind == HTTP_CHAT)
        choice = json_pack("{s:i, s:{s:s, s:s%}, s:o, s:s}", "index", 0, "message", "role",
                           "assistant", "content", text, text_len, "logprobs", logprobs,
                           "finish_reason", finish_reason);
    else
        choice = json_pack("{s:i, s:s%, s:o, s:s}", "index", 0, "text", text, text_len,
                           "logprobs", logprobs, "finish_reason", finish_reason);
    json_t *j = choice ? s_envelope(r, false, choice) : NULL;
    if (j)
        json_object_set_new(j, "usage", s_usage(prompt_tokens, completion_tokens));
    return j;
}

json_t *http_chunk_json(const http_reply *r, bool first, const char *text, size_t text_len,
                        const char *finish_reason, const http_logprob *lps, size_t n_lps)
{
    json_t *logprobs = json_null();
    if (r->logprobs && n_lps)
        logprobs = r->kind == HTTP_CHAT ? s_chat_logprobs(r, lps, n_lps)
                                        : s_completion_logprobs(r, lps, n_lps, 0);
    json_t *fr = finish_reason ? json_string(finish_reason) : json_null();
    json_t *choice;
    if (r->kind == HTTP_CHAT) {
        json_t *delta = json_object();
        if (first)
            json_object_set_new(delta, "role", json_string("assistant"));
        if (text_len || first)
            json_object_set_new(delta, "content", json_stringn(text, text_len));
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "delta", delta, "logprobs",
                           logprobs, "finish_reason", fr);
    } else {
        choice = json_pack("{s:i, s:s%, s:o, s:o}", "index", 0, "text", text, text_len,
                           "logprobs", logprobs, "finish_reason", fr);
    }
    return choice ? s_envelope(r, true, choice) : NULL;
}

json_t *http_usage_chunk_json(const http_reply *r, unsigned prompt_tokens,
                              unsigned completion_tokens)
{
    const char *object = r->kind == HTTP_CHAT ? "chat.completion.chunk" : "text_completion";
    return json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", r->id, "object", object,
                     "created", (json_int_t)r->created, "model", r->model, "choices", "usage",
                     s_usage(prompt_tokens, completion_tokens));
}
