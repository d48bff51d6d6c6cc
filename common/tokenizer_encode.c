/* tokenizer_encode.c - text to ids: special-token split, then SentencePiece bigram merges. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "utf8.h"

/* A run of the input: raw text [off, off + len), or one special token. */
typedef struct fragment {
    size_t off, len;
    int32_t token; /* -1 = raw text */
} fragment;

/* One character or merged run of the escaped text; a linked list in text order. */
typedef struct symbol {
    int prev, next; /* -1 at the ends */
    uint32_t off;   /* into the escaped text */
    uint32_t n;     /* bytes; 0 once merged into its left neighbour */
} symbol;

/* A candidate merge of two neighbouring symbols into the token of their joined text. */
typedef struct bigram {
    int left, right;
    float score;   /* of the joined token */
    uint32_t size; /* bytes of the joined text, to tell stale entries apart */
} bigram;

typedef struct id_list {
    int32_t *v;
    size_t n, cap;
} id_list;

/* Work space of one encode call, sized for the whole input once. */
typedef struct encoder {
    const tokenizer *tok;
    char *escaped;     /* "▁" prefix + fragment text with spaces as "▁" */
    symbol *symbols;   /* (sym_cap) */
    bigram *heap;      /* (3 * sym_cap) binary max-heap: highest score, then leftmost */
    size_t heap_n;
    size_t sym_cap;
    id_list out;
} encoder;

static int s_push_id(id_list *l, int32_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        int32_t *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = id;
    return 0;
}

/* ---- the merge queue: llama.cpp's order, higher score first, ties to the left ---- */

static int s_before(const bigram *a, const bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void s_heap_push(encoder *e, bigram b)
{
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!s_before(&b, &e->heap[parent]))
            break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = b;
}

static bigram s_heap_pop(encoder *e)
{
    bigram top = e->heap[0];
    bigram last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && s_before(&e->heap[child + 1], &e->heap[child]))
            child++;
        if (!s_before(&e->heap[child], &last))
            break;
        e->heap[i] = e->heap[child];
        i = child;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

/* Queues the merge of symbols left and right when their joined text is a token. */
static void s_try_bigram(encoder *e, int left, int right)
{
    if (left < 0 || right < 0)
        return;
    const symbol *l = &e->symbols[left], *r = &e->symbols[right];
    uint32_t size = l->n + r->n;
    int32_t id = tokenizer_find(e->tok, e->escaped + l->off, size);
    if (id < 0)
        return;
    s_heap_push(e, (bigram){.left = left, .right = right, .score = e->tok->scores[id], .size = size});
}

/* SentencePiece on one raw fragment: characters, merges until none is left, then
 * each final symbol as its token or, failing that, as byte tokens. */
static int s_spm(encoder *e, const char *text, size_t len, bool space_prefix, llorch_error *err)
{
    const tokenizer *t = e->tok;
    size_t n_esc = 0;
    if (space_prefix) {
        memcpy(e->escaped, "\xE2\x96\x81", 3);
        n_esc = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(e->escaped + n_esc, "\xE2\x96\x81", 3);
            n_esc += 3;
        } else {
            e->escaped[n_esc++] = text[i];
        }
    }
    if (n_esc == 0)
        return 0;

    /* Usually one symbol per character, but ill-formed text can split a "▁" into
     * three; the heap gets at most two candidates per merge on top of the first. */
    size_t need = 0;
    for (size_t off = 0; off < n_esc; need++)
        off += utf8_seq_len((uint8_t)e->escaped[off]);
    if (need > e->sym_cap) {
        free(e->symbols);
        free(e->heap);
        e->symbols = malloc(need * sizeof *e->symbols);
        e->heap = malloc(3 * need * sizeof *e->heap);
        e->sym_cap = need;
        if (!e->symbols || !e->heap) {
            e->sym_cap = 0;
            return llorch_error_set(err, "tokenize: out of memory for %zu bytes of text", len);
        }
    }
    int n_sym = 0;
    for (size_t off = 0; off < n_esc;) {
        size_t n = utf8_seq_len((uint8_t)e->escaped[off]);
        if (n > n_esc - off)
            n = n_esc - off;
        e->symbols[n_sym] = (symbol){.prev = n_sym - 1, .next = n_sym + 1, .off = (uint32_t)off,
                                     .n = (uint32_t)n};
        off += n;
        n_sym++;
    }
    e->symbols[n_sym - 1].next = -1;

    e->heap_n = 0;
    for (int i = 1; i < n_sym; i++)
        s_try_bigram(e, i - 1, i);
    while (e->heap_n > 0) {
        bigram b = s_heap_pop(e);
        symbol *l = &e->symbols[b.left], *r = &e->symbols[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue; /* one side merged since this entry was queued */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            e->symbols[r->next].prev = b.left;
        s_try_bigram(e, l->prev, b.left);
        s_try_bigram(e, b.left, l->next);
    }

    for (int i = 0; i != -1; i = e->symbols[i].next) {
        const symbol *s = &e->symbols[i];
        int32_t id = tokenizer_find(t, e->escaped + s->off, s->n);
        if (id >= 0) {
            if (s_push_id(&e->out, id) != 0)
                return llorch_error_set(err, "tokenize: out of memory");
            continue;
        }
        for (uint32_t j = 0; j < s->n; j++) {
            uint8_t byte = (uint8_t)e->escaped[s->off + j];
            int32_t byte_id = t->byte_to_id[byte] >= 0 ? t->byte_to_id[byte] : t->unk_id;
            if (byte_id < 0)
                return llorch_error_set(err,
                                        "tokenize: byte 0x%02X has no token (no <0x%02X> byte "
                                        "token and no unknown token in the vocabulary)",
                                        byte, byte);
            if (s_push_id(&e->out, byte_id) != 0)
                return llorch_error_set(err, "tokenize: out of memory");
        }
    }
    return 0;
}

/* Splits the input at every occurrence of a special token's text, longest tokens
 * first, as llama.cpp's tokenizer_st_partition does. *frags is malloc'd. */
static int s_partition(const tokenizer *t, const char *text, size_t len, bool parse_special,
                       fragment **frags, size_t *n_frags)
{
    size_t cap = 16, n = 1;
    fragment *cur = malloc(cap * sizeof *cur), *next = malloc(cap * sizeof *next);
    if (!cur || !next)
        goto oom;
    cur[0] = (fragment){.off = 0, .len = len, .token = -1};
    for (uint32_t s = 0; s < t->n_special; s++) {
        int32_t id = t->special_ids[s];
        if (!parse_special && t->types[id] != TOKEN_USER_DEFINED)
            continue;
        size_t plen;
        const char *piece = tokenizer_piece(t, id, &plen);
        if (plen > len)
            continue;
        size_t m = 0;
        for (size_t f = 0; f < n; f++) {
            /* each split adds at most two fragments */
            size_t pos = cur[f].off, end = cur[f].off + cur[f].len;
            for (;;) {
                if (m + 3 > cap) {
                    cap *= 2;
                    fragment *a = realloc(cur, cap * sizeof *a);
                    if (!a)
                        goto oom;
                    cur = a;
                    fragment *b = realloc(next, cap * sizeof *b);
                    if (!b)
                        goto oom;
                    next = b;
                }
                const char *hit = cur[f].token < 0 && end - pos >= plen
                                      ? memmem(text + pos, end - pos, piece, plen)
                                      : NULL;
                if (!hit) {
                    if (cur[f].token >= 0)
                        next[m++] = cur[f];
                    else if (end > pos)
                        next[m++] = (fragment){.off = pos, .len = end - pos, .token = -1};
                    break;
                }
                size_t at = (size_t)(hit - text);
                if (at > pos)
                    next[m++] = (fragment){.off = pos, .len = at - pos, .token = -1};
                next[m++] = (fragment){.off = at, .len = plen, .token = id};
                pos = at + plen;
            }
        }
        fragment *swap = cur;
        cur = next;
        next = swap;
        n = m;
    }
    free(next);
    *frags = cur;
    *n_frags = n;
    return 0;
oom:
    free(cur);
    free(next);
    return -1;
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t text_len, unsigned flags,
                     int32_t **ids, size_t *n_ids, llorch_error *err)
{
    *ids = NULL;
    *n_ids = 0;
    if (text_len > (size_t)1 << 28)
        return llorch_error_set(err, "tokenize: %zu bytes of text is more than the 256 MiB "
                                     "llorch tokenizes at once; split it", text_len);
    encoder e = {.tok = t};
    fragment *frags = NULL;
    size_t n_frags = 0;
    int rc = -1;
    /* every byte may become 3 ("▁"), plus the prefix */
    e.escaped = malloc(3 * text_len + 3);
    if (!e.escaped || s_push_id(&e.out, 0) != 0) {
        llorch_error_set(err, "tokenize: out of memory for %zu bytes of text", text_len);
        goto done;
    }
    e.out.n = 0;
    if (text_len > 0 &&
        s_partition(t, text, text_len, flags & TOKENIZE_PARSE_SPECIAL, &frags, &n_frags) != 0) {
        llorch_error_set(err, "tokenize: out of memory for %zu bytes of text", text_len);
        goto done;
    }

    bool add_special = flags & TOKENIZE_ADD_SPECIAL;
    if (add_special && t->add_bos && s_push_id(&e.out, t->bos_id) != 0)
        goto oom;
    /* text gets the "▁" prefix at the start and again after every special token */
    bool prev_special = true;
    for (size_t f = 0; f < n_frags; f++) {
        if (frags[f].token >= 0) {
            if (s_push_id(&e.out, frags[f].token) != 0)
                goto oom;
            prev_special = true;
            continue;
        }
        if (s_spm(&e, text + frags[f].off, frags[f].len, t->add_space_prefix && prev_special,
                  err) != 0)
            goto done;
        prev_special = false;
    }
    if (add_special && t->add_eos && s_push_id(&e.out, t->eos_id) != 0)
        goto oom;
    *ids = e.out.v;
    *n_ids = e.out.n;
    e.out.v = NULL;
    rc = 0;
    goto done;
oom:
    llorch_error_set(err, "tokenize: out of memory");
done:
    free(e.escaped);
    free(e.symbols);
    free(e.heap);
    free(e.out.v);
    free(frags);
    return rc;
}
