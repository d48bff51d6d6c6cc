/* tokenizer_decode.c - ids to text, whole or streamed one id at a time as clean UTF-8. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "utf8.h"

/* The text of token id: control and unknown tokens show only with
 * TOKENIZER_DECODE_SPECIAL, as llama.cpp's token_to_piece(special) does. */
static const char *s_text(const tokenizer *t, int32_t id, unsigned flags, size_t *len)
{
    uint8_t type = t->types[id];
    if (!(flags & TOKENIZER_DECODE_SPECIAL) && (type == TOKEN_CONTROL || type == TOKEN_UNKNOWN)) {
        *len = 0;
        return "";
    }
    *len = t->decoded_len[id];
    return t->decoded + t->decoded_offset[id];
}

int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char **text,
                     size_t *len, llorch_error *err)
{
    *text = NULL;
    *len = 0;
    /* llama.cpp drops one leading space of the first token, but when it removes a
     * leading BOS the next token keeps its space */
    bool strip_space = t->add_space_prefix && !(flags & TOKENIZER_DECODE_CONTINUE);
    if ((flags & TOKENIZER_DECODE_REMOVE_SPECIAL) && t->add_bos && n > 0 && ids[0] == t->bos_id) {
        strip_space = false;
        ids++;
        n--;
    }
    if ((flags & TOKENIZER_DECODE_REMOVE_SPECIAL) && t->add_eos && n > 0 && ids[n - 1] == t->eos_id)
        n--;

    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= t->n_vocab)
            return llorch_error_set(err, "detokenize: token id %d (position %zu) is outside the "
                                         "vocabulary [0, %u)", ids[i], i, t->n_vocab);
        size_t piece_len;
        s_text(t, ids[i], flags, &piece_len);
        total += piece_len;
    }
    char *out = malloc(total + 1);
    if (!out)
        return llorch_error_set(err, "detokenize: out of memory for %zu bytes", total + 1);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t piece_len;
        const char *piece = s_text(t, ids[i], flags, &piece_len);
        if (strip_space && piece_len > 0 && piece[0] == ' ') {
            piece++;
            piece_len--;
        }
        strip_space = false;
        memcpy(out + at, piece, piece_len);
        at += piece_len;
    }
    out[at] = '\0';
    *text = out;
    *len = at;
    return 0;
}

/* ---- streaming ------------------------------------------------------------------ */

/* out holds two areas: the output of a call (out_cap bytes) and, after it, the
 * held bytes joined with the next piece (4 + max_piece_len bytes). */
static char *s_work(const tokenizer_stream *s)
{
    return s->out + s->out_cap;
}

int tokenizer_stream_init(tokenizer_stream *s, const tokenizer *t, unsigned flags,
                          llorch_error *err)
{
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->flags = flags;
    /* a piece decodes to at most max_piece_len bytes; with up to 3 held bytes in
     * front, each ill-formed byte may become 3 bytes of U+FFFD */
    size_t work = 4 + (size_t)t->max_piece_len;
    s->out_cap = 3 * work;
    s->out = malloc(s->out_cap + work);
    if (!s->out) {
        s->out_cap = 0;
        return llorch_error_set(err, "detokenize: out of memory for a stream buffer");
    }
    return 0;
}

int tokenizer_stream_push(tokenizer_stream *s, int32_t id, const char **text, size_t *len,
                          llorch_error *err)
{
    const tokenizer *t = s->tok;
    *text = s->out;
    *len = 0;
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return llorch_error_set(err, "detokenize: token id %d is outside the vocabulary [0, %u)",
                                id, t->n_vocab);
    bool first = s->n_pushed++ == 0;
    if (first && (s->flags & TOKENIZER_DECODE_REMOVE_SPECIAL) && t->add_bos && id == t->bos_id)
        return 0; /* dropped, and (as in tokenizer_decode) the next piece keeps its space */
    size_t piece_len;
    const char *piece = s_text(t, id, s->flags, &piece_len);
    if (first && t->add_space_prefix && !(s->flags & TOKENIZER_DECODE_CONTINUE) &&
        piece_len > 0 && piece[0] == ' ') {
        piece++;
        piece_len--;
    }

    char *work = s_work(s);
    memcpy(work, s->held, s->n_held);
    memcpy(work + s->n_held, piece, piece_len);
    size_t n = s->n_held + piece_len, in = 0, out = 0;
    s->n_held = 0;
    while (in < n) {
        int k = utf8_check((const uint8_t *)work + in, n - in);
        if (k > 0) {
            memcpy(s->out + out, work + in, (size_t)k);
            out += (size_t)k;
            in += (size_t)k;
        } else if (k < 0) {
            memcpy(s->out + out, "\xEF\xBF\xBD", 3);
            out += 3;
            in += (size_t)-k;
        } else { /* an unfinished character at the end: wait for its other bytes */
            memcpy(s->held, work + in, n - in);
            s->n_held = n - in;
            break;
        }
    }
    *len = out;
    return 0;
}

void tokenizer_stream_flush(tokenizer_stream *s, const char **text, size_t *len)
{
    *text = s->out ? s->out : "";
    *len = 0;
    if (s->n_held > 0 && s->out) {
        memcpy(s->out, "\xEF\xBF\xBD", 3);
        *len = 3;
    }
    s->n_held = 0;
    s->n_pushed = 0;
}

void tokenizer_stream_free(tokenizer_stream *s)
{
    free(s->out);
    s->out = NULL;
    s->out_cap = 0;
    s->n_held = 0;
}
