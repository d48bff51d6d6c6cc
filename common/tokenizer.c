/* tokenizer.c - building and checking a SentencePiece vocabulary, and piece look-ups. */
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "utf8.h"

#define SPACE_MARK "\xE2\x96\x81" /* U+2581 "▁", SentencePiece's visible space */
#define SPACE_MARK_LEN 3

/* ---- piece hash --------------------------------------------------------------- */

static uint64_t s_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

int32_t tokenizer_find(const tokenizer *t, const char *s, size_t n)
{
    if (n == 0 || n > t->max_piece_len)
        return -1;
    for (uint32_t slot = (uint32_t)s_hash(s, n) & t->slot_mask;; slot = (slot + 1) & t->slot_mask) {
        uint32_t v = t->slots[slot];
        if (v == 0)
            return -1;
        uint32_t id = v - 1;
        if (t->piece_len[id] == n && memcmp(t->text + t->piece_offset[id], s, n) == 0)
            return (int32_t)id;
    }
}

const char *tokenizer_piece(const tokenizer *t, int32_t id, size_t *len)
{
    if (len)
        *len = t->piece_len[id];
    return t->text + t->piece_offset[id];
}

/* ---- construction ------------------------------------------------------------- */

void tokenizer_free(tokenizer **tp)
{
    if (!tp || !*tp)
        return;
    tokenizer *t = *tp;
    free(t->text);
    free(t->piece_offset);
    free(t->piece_len);
    free(t->scores);
    free(t->types);
    free(t->decoded);
    free(t->decoded_offset);
    free(t->decoded_len);
    free(t->slots);
    free(t->special_ids);
    free(t);
    *tp = NULL;
}

static int s_parse_hex_byte(const char *p, size_t n, uint8_t *out)
{
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>')
        return -1;
    unsigned v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return -1;
        v = v * 16 + d;
    }
    *out = (uint8_t)v;
    return 0;
}

/* Sort order of the special-token list: longest piece first (llama.cpp matches
 * longer special tokens before shorter ones), then by id for a stable order. */
static int s_cmp_special(const void *a, const void *b, void *tok)
{
    const tokenizer *t = tok;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = t->piece_len[x], ly = t->piece_len[y];
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* The text a piece decodes to: "▁" -> " " for normal pieces, the byte for byte
 * tokens, the piece itself for control/user-defined/unknown, nothing otherwise
 * (unused and undefined tokens, which llama.cpp also renders as nothing). */
static size_t s_decode_piece(const tokenizer *t, uint32_t id, char *out)
{
    const char *p = t->text + t->piece_offset[id];
    size_t n = t->piece_len[id];
    switch (t->types[id]) {
    case TOKEN_CONTROL:
    case TOKEN_USER_DEFINED:
    case TOKEN_UNKNOWN:
        memcpy(out, p, n);
        return n;
    case TOKEN_NORMAL: {
        size_t o = 0;
        for (size_t i = 0; i < n;) {
            if (i + SPACE_MARK_LEN <= n && memcmp(p + i, SPACE_MARK, SPACE_MARK_LEN) == 0) {
                out[o++] = ' ';
                i += SPACE_MARK_LEN;
            } else {
                out[o++] = p[i++];
            }
        }
        return o;
    }
    case TOKEN_BYTE: {
        uint8_t b = 0;
        s_parse_hex_byte(p, n, &b); /* checked at construction */
        out[0] = (char)b;
        return 1;
    }
    default:
        return 0;
    }
}

/* Fills the hash, the byte table, the special list and the decoded pieces of a
 * tokenizer whose pieces, scores and types are in place. */
static int s_index(tokenizer *t, llorch_error *err)
{
    uint32_t cap = 1;
    while (cap < 2 * t->n_vocab)
        cap <<= 1;
    t->slots = calloc(cap, sizeof *t->slots);
    t->slot_mask = cap - 1;
    size_t text_bytes = (size_t)t->piece_offset[t->n_vocab - 1] + t->piece_len[t->n_vocab - 1] + 1;
    t->decoded = malloc(text_bytes);
    t->decoded_offset = malloc(t->n_vocab * sizeof *t->decoded_offset);
    t->decoded_len = malloc(t->n_vocab * sizeof *t->decoded_len);
    t->special_ids = malloc(t->n_vocab * sizeof *t->special_ids);
    if (!t->slots || !t->decoded || !t->decoded_offset || !t->decoded_len || !t->special_ids)
        return llorch_error_set(err, "tokenizer: out of memory for a %u-token vocabulary",
                                t->n_vocab);

    size_t decoded_at = 0;
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        const char *p = t->text + t->piece_offset[id];
        size_t n = t->piece_len[id];
        uint32_t slot = (uint32_t)s_hash(p, n) & t->slot_mask;
        while (t->slots[slot] != 0) {
            uint32_t other = t->slots[slot] - 1;
            if (t->piece_len[other] == n && memcmp(t->text + t->piece_offset[other], p, n) == 0)
                return llorch_error_set(err,
                                        "tokenizer: tokens %u and %u have the same piece '%.*s'; "
                                        "the vocabulary is corrupt, re-convert the model",
                                        other, id, (int)(n < 64 ? n : 64), p);
            slot = (slot + 1) & t->slot_mask;
        }
        t->slots[slot] = id + 1;
        if (t->types[id] == TOKEN_BYTE) {
            uint8_t b;
            if (s_parse_hex_byte(p, n, &b) != 0)
                return llorch_error_set(err,
                                        "tokenizer: token %u is a byte token but its piece '%.*s' "
                                        "is not of the form <0xNN>",
                                        id, (int)(n < 64 ? n : 64), p);
        }
        if (t->types[id] == TOKEN_CONTROL || t->types[id] == TOKEN_USER_DEFINED ||
            t->types[id] == TOKEN_UNKNOWN)
            t->special_ids[t->n_special++] = (int32_t)id;
        /* decoded text is never longer than the piece ("▁" shrinks, a byte token is 1) */
        t->decoded_offset[id] = (uint32_t)decoded_at;
        t->decoded_len[id] = (uint32_t)s_decode_piece(t, id, t->decoded + decoded_at);
        decoded_at += t->decoded_len[id];
    }
    for (int b = 0; b < 256; b++) {
        static const char hex[] = "0123456789ABCDEF";
        char spelled[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        char raw = (char)b;
        int32_t id = tokenizer_find(t, spelled, 6);
        t->byte_to_id[b] = id >= 0 ? id : tokenizer_find(t, &raw, 1);
    }
    qsort_r(t->special_ids, t->n_special, sizeof *t->special_ids, s_cmp_special, t);
    return 0;
}

tokenizer *tokenizer_new(const tokenizer_config *cfg, llorch_error *err)
{
    if (!cfg || cfg->n_vocab == 0 || !cfg->pieces || !cfg->piece_lens) {
        llorch_error_set(err, "tokenizer: the vocabulary is empty (no pieces given)");
        return NULL;
    }
    uint32_t n = cfg->n_vocab;
    if (n > TOKENIZER_MAX_VOCAB) {
        llorch_error_set(err, "tokenizer: %u tokens is more than the %u llorch accepts", n,
                         TOKENIZER_MAX_VOCAB);
        return NULL;
    }
    const int32_t special[3] = {cfg->bos_id, cfg->eos_id, cfg->unk_id};
    const char *special_name[3] = {"BOS", "EOS", "unknown"};
    for (int i = 0; i < 3; i++) {
        if (special[i] < -1 || special[i] >= (int64_t)n) {
            llorch_error_set(err, "tokenizer: %s token id %d is outside the vocabulary [0, %u)",
                             special_name[i], special[i], n);
            return NULL;
        }
    }
    if (cfg->add_bos && cfg->bos_id < 0) {
        llorch_error_set(err, "tokenizer: add_bos is set but there is no BOS token id");
        return NULL;
    }
    if (cfg->add_eos && cfg->eos_id < 0) {
        llorch_error_set(err, "tokenizer: add_eos is set but there is no EOS token id");
        return NULL;
    }

    /* Sizes first, so one allocation holds all pieces. */
    uint64_t text_bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = cfg->piece_lens[i];
        if (len > TOKENIZER_MAX_PIECE_BYTES) {
            llorch_error_set(err, "tokenizer: token %u's piece is %u bytes (at most %u accepted)",
                             i, len, TOKENIZER_MAX_PIECE_BYTES);
            return NULL;
        }
        if (len > 0 && !cfg->pieces[i]) {
            llorch_error_set(err, "tokenizer: token %u has a length but no piece", i);
            return NULL;
        }
        text_bytes += (len ? len : 32) + 1; /* room for "[EMPTY_i]" */
        if (cfg->scores && !isfinite(cfg->scores[i])) {
            llorch_error_set(err, "tokenizer: token %u's score is not a finite number", i);
            return NULL;
        }
    }
    if (text_bytes >= UINT32_MAX) {
        llorch_error_set(err, "tokenizer: the pieces add up to %llu bytes, too many",
                         (unsigned long long)text_bytes);
        return NULL;
    }

    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        llorch_error_set(err, "tokenizer: out of memory");
        return NULL;
    }
    t->n_vocab = n;
    t->bos_id = cfg->bos_id;
    t->eos_id = cfg->eos_id;
    t->unk_id = cfg->unk_id;
    t->add_bos = cfg->add_bos;
    t->add_eos = cfg->add_eos;
    t->add_space_prefix = cfg->add_space_prefix;
    t->text = malloc(text_bytes);
    t->piece_offset = malloc(n * sizeof *t->piece_offset);
    t->piece_len = malloc(n * sizeof *t->piece_len);
    t->scores = malloc(n * sizeof *t->scores);
    t->types = malloc(n);
    if (!t->text || !t->piece_offset || !t->piece_len || !t->scores || !t->types) {
        llorch_error_set(err, "tokenizer: out of memory for a %u-token vocabulary", n);
        tokenizer_free(&t);
        return NULL;
    }
    uint32_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = cfg->piece_lens[i];
        t->piece_offset[i] = at;
        if (len == 0) /* llama.cpp renames empty pieces so that every piece is findable */
            len = (uint32_t)snprintf(t->text + at, 32, "[EMPTY_%u]", i);
        else
            memcpy(t->text + at, cfg->pieces[i], len);
        t->text[at + len] = '\0';
        t->piece_len[i] = len;
        if (len > t->max_piece_len)
            t->max_piece_len = len;
        at += len + 1;
        t->scores[i] = cfg->scores ? cfg->scores[i] : 0.0f;
        int32_t type = cfg->types ? cfg->types[i] : TOKEN_NORMAL;
        t->types[i] = (uint8_t)(type >= TOKEN_UNDEFINED && type <= TOKEN_BYTE ? type
                                                                             : TOKEN_UNDEFINED);
    }
    if (s_index(t, err) != 0) {
        tokenizer_free(&t);
        return NULL;
    }
    return t;
}

/* An optional id key: keeps *id when absent; a value outside the vocabulary (such
 * as -1 or 0xFFFFFFFF for "none") keeps it too, with a warning, as llama.cpp does. */
static int s_gguf_id(const gguf_file *f, const char *key, uint32_t n_vocab, int32_t *id,
                     llorch_error *err)
{
    const gguf_value *v = gguf_find(f, key);
    if (!v)
        return 0;
    int64_t value;
    switch (v->type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_UINT64:
        value = v->u64 > INT32_MAX ? -1 : (int64_t)v->u64;
        break;
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_INT64:
        value = v->i64;
        break;
    default:
        return llorch_error_set(err, "tokenizer: %s is a %s; an integer token id is expected", key,
                                gguf_type_name(v->type));
    }
    if (value < 0 || value >= n_vocab) {
        log_warn("tokenizer: %s = %lld is outside the %u-token vocabulary; using %d", key,
                 (long long)value, n_vocab, *id);
        return 0;
    }
    *id = (int32_t)value;
    return 0;
}

static int s_gguf_flag(const gguf_file *f, const char *key, bool *flag, llorch_error *err)
{
    if (!gguf_find(f, key))
        return 0;
    if (gguf_get_bool(f, key, flag, err) != 0)
        return llorch_error_prefix(err, "tokenizer");
    return 0;
}

tokenizer *tokenizer_from_gguf(const gguf_file *f, llorch_error *err)
{
    char *model = NULL;
    if (gguf_get_string(f, "tokenizer.ggml.model", &model, err) != 0) {
        llorch_error_prefix(err, "tokenizer (the file has no usable vocabulary)");
        return NULL;
    }
    if (strcmp(model, "llama") != 0) {
        llorch_error_set(err,
                         "tokenizer: tokenizer.ggml.model is '%s'; llorch reads only 'llama' "
                         "(SentencePiece) vocabularies",
                         model);
        free(model);
        return NULL;
    }
    free(model);

    const gguf_array *tokens = gguf_get_array(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, err);
    if (!tokens) {
        llorch_error_prefix(err, "tokenizer");
        return NULL;
    }
    if (tokens->n == 0 || tokens->n > TOKENIZER_MAX_VOCAB) {
        llorch_error_set(err, "tokenizer: tokenizer.ggml.tokens holds %llu tokens (1..%u accepted)",
                         (unsigned long long)tokens->n, TOKENIZER_MAX_VOCAB);
        return NULL;
    }
    uint32_t n = (uint32_t)tokens->n;

    const gguf_array *scores = NULL, *types = NULL;
    if (gguf_find(f, "tokenizer.ggml.scores")) {
        scores = gguf_get_array(f, "tokenizer.ggml.scores", GGUF_TYPE_COUNT, err);
        if (!scores) {
            llorch_error_prefix(err, "tokenizer");
            return NULL;
        }
        if (scores->elem_type != GGUF_TYPE_FLOAT32 && scores->elem_type != GGUF_TYPE_INT32) {
            llorch_error_set(err, "tokenizer: tokenizer.ggml.scores holds %s; float32 or int32 "
                             "expected", gguf_type_name(scores->elem_type));
            return NULL;
        }
        if (scores->n < n) {
            llorch_error_set(err, "tokenizer: tokenizer.ggml.scores has %llu entries for %u tokens",
                             (unsigned long long)scores->n, n);
            return NULL;
        }
    }
    if (gguf_find(f, "tokenizer.ggml.token_type")) {
        types = gguf_get_array(f, "tokenizer.ggml.token_type", GGUF_TYPE_COUNT, err);
        if (!types) {
            llorch_error_prefix(err, "tokenizer");
            return NULL;
        }
        enum gguf_type et = types->elem_type;
        if (et == GGUF_TYPE_STRING || et == GGUF_TYPE_ARRAY || et == GGUF_TYPE_FLOAT32 ||
            et == GGUF_TYPE_FLOAT64 || et == GGUF_TYPE_BOOL) {
            llorch_error_set(err, "tokenizer: tokenizer.ggml.token_type holds %s; int32 expected",
                             gguf_type_name(et));
            return NULL;
        }
        if (types->n < n) {
            llorch_error_set(err,
                             "tokenizer: tokenizer.ggml.token_type has %llu entries for %u tokens",
                             (unsigned long long)types->n, n);
            return NULL;
        }
    }

    tokenizer_config cfg = {.n_vocab = n, .bos_id = 1, .eos_id = 2, .unk_id = 0,
                            .add_bos = true, .add_eos = false, .add_space_prefix = true};
    /* llama.cpp's defaults for 'llama' vocabularies, disabled when out of range */
    if ((uint32_t)cfg.bos_id >= n)
        cfg.bos_id = -1;
    if ((uint32_t)cfg.eos_id >= n)
        cfg.eos_id = -1;
    if (s_gguf_id(f, "tokenizer.ggml.bos_token_id", n, &cfg.bos_id, err) != 0 ||
        s_gguf_id(f, "tokenizer.ggml.eos_token_id", n, &cfg.eos_id, err) != 0 ||
        s_gguf_id(f, "tokenizer.ggml.unknown_token_id", n, &cfg.unk_id, err) != 0 ||
        s_gguf_flag(f, "tokenizer.ggml.add_bos_token", &cfg.add_bos, err) != 0 ||
        s_gguf_flag(f, "tokenizer.ggml.add_eos_token", &cfg.add_eos, err) != 0 ||
        s_gguf_flag(f, "tokenizer.ggml.add_space_prefix", &cfg.add_space_prefix, err) != 0)
        return NULL;
    if (cfg.add_bos && cfg.bos_id < 0) {
        llorch_error_set(err, "tokenizer: the file asks for a BOS token but has none in range");
        return NULL;
    }
    if (cfg.add_eos && cfg.eos_id < 0)
        cfg.add_eos = false;

    const char **pieces = malloc(n * sizeof *pieces);
    uint32_t *lens = malloc(n * sizeof *lens);
    float *score_values = scores ? malloc(n * sizeof *score_values) : NULL;
    int32_t *type_values = types ? malloc(n * sizeof *type_values) : NULL;
    tokenizer *t = NULL;
    if (!pieces || !lens || (scores && !score_values) || (types && !type_values)) {
        llorch_error_set(err, "tokenizer: out of memory for a %u-token vocabulary", n);
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (tokens->strs[i].len > TOKENIZER_MAX_PIECE_BYTES) {
            llorch_error_set(err, "tokenizer: token %u's piece is %llu bytes (at most %u accepted)",
                             i, (unsigned long long)tokens->strs[i].len, TOKENIZER_MAX_PIECE_BYTES);
            goto done;
        }
        pieces[i] = tokens->strs[i].ptr;
        lens[i] = (uint32_t)tokens->strs[i].len;
        if (score_values)
            score_values[i] = (float)gguf_array_f64(scores, i);
        if (type_values) {
            int64_t v = gguf_array_i64(types, i);
            type_values[i] = v >= 0 && v <= TOKEN_BYTE ? (int32_t)v : TOKEN_UNDEFINED;
        }
    }
    cfg.pieces = pieces;
    cfg.piece_lens = lens;
    cfg.scores = score_values;
    cfg.types = type_values;
    t = tokenizer_new(&cfg, err);
done:
    free(pieces);
    free(lens);
    free(score_values);
    free(type_values);
    return t;
}
