/* fuzz_tokenizer.c - libFuzzer target: any bytes through the SPM tokenizer and back, and any
 * id sequences (out-of-range ones too) through the whole and the streaming decoder. */
/* fuzz-sources: tests/fuzz/vocab.c */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "utf8.h"
#include "vocab.h"

/* Input layout. Byte 0: bit 0 = the shared Llama vocabulary (the built-in one when it is
 * missing); bit 1 = id mode; bits 2-3 = tokenizer_encode flags; bits 4-6 =
 * tokenizer_decode flags. Text mode: the rest is the text. Id mode: the rest is 3-byte
 * ids: (b0 | b1 << 8 | b2 << 16) % n_vocab, or when b2 == 0xff an id chosen by b0 among
 * -1, n_vocab, INT32_MIN, INT32_MAX and n_vocab + b1 (all out of range). */

static const tokenizer *s_builtin, *s_shared;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    s_builtin = fuzz_vocab_builtin();
    s_shared = fuzz_vocab_shared();
    if (!s_builtin)
        abort(); /* the built-in vocabulary needs nothing outside the checkout */
    return 0;
}

/* Whether s[0..n) is well-formed UTF-8 throughout. */
static int s_well_formed(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int k = utf8_check((const uint8_t *)s + i, n - i);
        if (k <= 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

/* Streams ids[0..n) (out-of-range ones must be refused and change nothing) and checks
 * that the output is well-formed and equals the whole decoder's text of the in-range
 * ids, sanitized, as tokenizer_stream promises. */
static void s_check_stream(const tokenizer *t, const int32_t *ids, size_t n, unsigned flags)
{
    int32_t *valid = malloc((n ? n : 1) * sizeof *valid);
    size_t n_valid = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && (uint32_t)ids[i] < t->n_vocab)
            valid[n_valid++] = ids[i];
    char *whole;
    size_t whole_len;
    llorch_error err = {0};
    if (tokenizer_decode(t, valid, n_valid, flags, &whole, &whole_len, &err) != 0)
        abort(); /* in-range ids always decode */
    char *want = malloc(3 * whole_len + 1);
    size_t want_len = utf8_sanitize(want, whole, whole_len);

    tokenizer_stream s;
    if (tokenizer_stream_init(&s, t, flags, &err) != 0)
        abort();
    char *got = malloc(3 * whole_len + 16);
    size_t got_len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *piece;
        size_t len;
        err.msg[0] = '\0';
        int rc = tokenizer_stream_push(&s, ids[i], &piece, &len, &err);
        const int in_range = ids[i] >= 0 && (uint32_t)ids[i] < t->n_vocab;
        if (rc != (in_range ? 0 : -1) || (rc != 0 && err.msg[0] == '\0'))
            abort();
        if (rc != 0)
            continue;
        if (!s_well_formed(piece, len) || got_len + len > 3 * whole_len + 16)
            abort();
        memcpy(got + got_len, piece, len);
        got_len += len;
    }
    const char *tail;
    size_t tail_len;
    tokenizer_stream_flush(&s, &tail, &tail_len);
    if (!s_well_formed(tail, tail_len) || got_len + tail_len > 3 * whole_len + 16)
        abort();
    memcpy(got + got_len, tail, tail_len);
    got_len += tail_len;
    if (got_len != want_len || memcmp(got, want, want_len) != 0)
        abort(); /* the stream and the whole decoder disagree */
    tokenizer_stream_free(&s);
    tokenizer_stream_free(&s); /* promised safe */
    free(got);
    free(want);
    free(whole);
    free(valid);
}

static void s_text_mode(const tokenizer *t, const char *text, size_t len, unsigned eflags,
                        unsigned dflags)
{
    int32_t *ids = NULL;
    size_t n_ids = 0;
    llorch_error err = {0};
    /* Every vocabulary here has all 256 byte tokens: no text can fail to encode. */
    if (tokenizer_encode(t, text, len, eflags, &ids, &n_ids, &err) != 0 || !ids)
        abort();
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= t->n_vocab)
            abort();
    if ((eflags & TOKENIZE_ADD_SPECIAL) && t->add_bos && (n_ids == 0 || ids[0] != t->bos_id))
        abort();
    char *back;
    size_t back_len;
    if (tokenizer_decode(t, ids, n_ids, dflags, &back, &back_len, &err) != 0 || !back ||
        back[back_len] != '\0')
        abort();
    /* Plain encoding keeps every byte: only spaces become "▁" (and one is prefixed), and
     * the decoder undoes both, so the text comes back unless it held a "▁" itself, or a
     * space that ill-formed UTF-8 swallowed: text is split into characters by lead bytes
     * after spaces became "▁", so "\xe2\x82 " holds the first byte of a "▁" and comes
     * back as byte tokens, "▁" unchanged (as with llama.cpp). */
    if (eflags == 0 && dflags == 0 && !memmem(text, len, "\xe2\x96\x81", 3) &&
        (!memchr(text, ' ', len) || s_well_formed(text, len)) &&
        (back_len != len || memcmp(back, text, len) != 0))
        abort();
    free(back);
    s_check_stream(t, ids, n_ids, dflags);
    free(ids);
}

static void s_id_mode(const tokenizer *t, const uint8_t *p, size_t size, unsigned dflags)
{
    size_t n = size / 3;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    int any_bad = 0;
    for (size_t i = 0; i < n; i++, p += 3) {
        if (p[2] == 0xff) {
            const int32_t bad[5] = {-1, (int32_t)t->n_vocab, INT32_MIN, INT32_MAX,
                                    (int32_t)t->n_vocab + p[1]};
            ids[i] = bad[p[0] % 5];
            any_bad = 1;
        } else {
            ids[i] = (int32_t)((p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16) % t->n_vocab);
        }
    }
    char *text = NULL;
    size_t len = 0;
    llorch_error err = {0};
    int rc = tokenizer_decode(t, ids, n, dflags, &text, &len, &err);
    if (any_bad ? rc != -1 || text || err.msg[0] == '\0' : rc != 0 || !text)
        abort();
    free(text);
    s_check_stream(t, ids, n, dflags);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const tokenizer *t = (data[0] & 1) && s_shared ? s_shared : s_builtin;
    const unsigned eflags = (data[0] >> 2) & 3u, dflags = (data[0] >> 4) & 7u;
    if (data[0] & 2)
        s_id_mode(t, data + 1, size - 1, dflags);
    else
        s_text_mode(t, (const char *)data + 1, size - 1, eflags, dflags);
    return 0;
}
