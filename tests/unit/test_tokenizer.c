/* test_tokenizer.c - proves the SentencePiece tokenizer against llama.cpp's ids, and the decoders. */
#include "testutil.h"

#include <math.h>
#include <time.h>

#include "gguf.h"
#include "tokenizer.h"
#include "utf8.h"

#define VOCAB_GGUF "vocab/ggml-vocab-llama-spm.gguf"
#define STORIES_GGUF "models/stories260K.gguf"

static tokenizer *s_load(const char *rel)
{
    llorch_error err = {{0}};
    gguf_file *f = gguf_open(test_shared_path(rel), &err);
    if (!f)
        fail_msg("gguf_open %s: %s", rel, err.msg);
    tokenizer *t = tokenizer_from_gguf(f, &err);
    gguf_close(&f); /* the tokenizer keeps copies */
    if (!t)
        fail_msg("tokenizer_from_gguf %s: %s", rel, err.msg);
    return t;
}

static char *s_read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        fail_msg("cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    buf[n] = '\0';
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

/* The .inp cases: each case is followed by "\n__ggml_vocab_test__\n". */
#define MAX_CASES 64
typedef struct vocab_cases {
    char *inp, *out;        /* file contents, cut in place */
    const char *text[MAX_CASES];
    size_t text_len[MAX_CASES];
    const char *expected[MAX_CASES]; /* ids separated by spaces */
    int n;
} vocab_cases;

static void s_read_cases(vocab_cases *c)
{
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t inp_len, out_len;
    c->inp = s_read_file(test_shared_path(VOCAB_GGUF ".inp"), &inp_len);
    c->out = s_read_file(test_shared_path(VOCAB_GGUF ".out"), &out_len);
    c->n = 0;
    char *p = c->inp;
    for (char *hit; (hit = strstr(p, sep)) != NULL; p = hit + strlen(sep)) {
        assert_true(c->n < MAX_CASES);
        *hit = '\0';
        c->text[c->n] = p;
        c->text_len[c->n] = (size_t)(hit - p);
        c->n++;
    }
    int line = 0;
    for (char *q = c->out; line < c->n; line++) {
        char *nl = strchr(q, '\n');
        assert_non_null(nl);
        *nl = '\0';
        c->expected[line] = q;
        q = nl + 1;
    }
}

static void s_free_cases(vocab_cases *c)
{
    free(c->inp);
    free(c->out);
}

static void s_format_ids(const int32_t *ids, size_t n, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, i ? " %d" : "%d", ids[i]);
}

static void s_expect_ids(const tokenizer *t, const char *text, unsigned flags, const int32_t *want,
                         size_t n_want)
{
    llorch_error err = {{0}};
    int32_t *ids;
    size_t n;
    if (tokenizer_encode(t, text, strlen(text), flags, &ids, &n, &err) != 0)
        fail_msg("encode '%s': %s", text, err.msg);
    char got[1024], exp[1024];
    s_format_ids(ids, n, got, sizeof got);
    s_format_ids(want, n_want, exp, sizeof exp);
    if (strcmp(got, exp) != 0)
        fail_msg("'%s' (flags %u): got [%s], llama.cpp gives [%s]", text, flags, got, exp);
    free(ids);
}

/* All 46 cases of llama.cpp's own vocabulary test give its ids, with and without
 * special-token parsing (none of the cases holds special-token text). */
static void test_vocab_cases(void **state)
{
    tokenizer *t = s_load(VOCAB_GGUF);
    assert_int_equal(t->n_vocab, 32000);
    vocab_cases c;
    s_read_cases(&c);
    assert_int_equal(c.n, 46);
    int empty_cases = 0;
    for (int flags = 0; flags <= (int)TOKENIZE_PARSE_SPECIAL; flags += TOKENIZE_PARSE_SPECIAL) {
        for (int i = 0; i < c.n; i++) {
            llorch_error err = {{0}};
            int32_t *ids;
            size_t n;
            if (tokenizer_encode(t, c.text[i], c.text_len[i], (unsigned)flags, &ids, &n, &err) != 0)
                fail_msg("case %d: %s", i, err.msg);
            char got[4096];
            s_format_ids(ids, n, got, sizeof got);
            const char *want = c.expected[i];
            while (*want == ' ')
                want++; /* the .out lines start with a space */
            if (strcmp(got, want) != 0)
                fail_msg("case %d '%s': got [%s], llama.cpp gives [%s]", i, c.text[i], got, want);
            empty_cases += c.text_len[i] == 0;
            free(ids);
        }
    }
    assert_int_equal(empty_cases, 2); /* the one empty case, seen twice */
    s_free_cases(&c);
    tokenizer_free(&t);
    assert_null(t);
}

/* BOS comes from add_bos_token; control-token text becomes the token only when asked
 * (ids measured with llama.cpp v0.4.0 through node-llama-cpp). */
static void test_bos_and_special_text(void **state)
{
    tokenizer *t = s_load(VOCAB_GGUF);
    assert_int_equal(t->bos_id, 1);
    assert_int_equal(t->eos_id, 2);
    assert_int_equal(t->unk_id, 0);
    assert_true(t->add_bos);
    s_expect_ids(t, "Hello world", 0, (int32_t[]){15043, 3186}, 2);
    s_expect_ids(t, "Hello world", TOKENIZE_ADD_SPECIAL, (int32_t[]){1, 15043, 3186}, 3);
    s_expect_ids(t, "", TOKENIZE_ADD_SPECIAL, (int32_t[]){1}, 1);
    s_expect_ids(t, "", 0, NULL, 0);
    s_expect_ids(t, "<s>hi</s> x", TOKENIZE_PARSE_SPECIAL, (int32_t[]){1, 7251, 2, 29871, 921}, 5);
    s_expect_ids(t, "<s>hi</s> x", 0,
                 (int32_t[]){529, 29879, 29958, 2918, 829, 29879, 29958, 921}, 8);
    s_expect_ids(t, "<unk>", TOKENIZE_PARSE_SPECIAL, (int32_t[]){0}, 1);
    tokenizer_free(&t);
}

/* Decoding the ids of every case gives its text back (the "▁" prefix's space is
 * dropped from the first token), and streaming gives the same bytes. */
static void test_round_trip(void **state)
{
    tokenizer *t = s_load(VOCAB_GGUF);
    vocab_cases c;
    s_read_cases(&c);
    llorch_error err = {{0}};
    tokenizer_stream st;
    assert_int_equal(tokenizer_stream_init(&st, t, 0, &err), 0);
    for (int i = 0; i < c.n; i++) {
        int32_t *ids;
        size_t n;
        assert_int_equal(tokenizer_encode(t, c.text[i], c.text_len[i], 0, &ids, &n, &err), 0);
        char *text;
        size_t len;
        assert_int_equal(tokenizer_decode(t, ids, n, 0, &text, &len, &err), 0);
        if (len != c.text_len[i] || memcmp(text, c.text[i], len) != 0)
            fail_msg("case %d: '%s' decodes to '%s'", i, c.text[i], text);
        char streamed[4096];
        size_t at = 0;
        for (size_t k = 0; k < n; k++) {
            const char *piece;
            size_t piece_len;
            assert_int_equal(tokenizer_stream_push(&st, ids[k], &piece, &piece_len, &err), 0);
            assert_true(at + piece_len < sizeof streamed);
            memcpy(streamed + at, piece, piece_len);
            at += piece_len;
        }
        const char *rest;
        size_t rest_len;
        tokenizer_stream_flush(&st, &rest, &rest_len);
        assert_int_equal(rest_len, 0);
        assert_int_equal(at, len);
        assert_memory_equal(streamed, text, len);
        free(text);
        free(ids);
    }
    tokenizer_stream_free(&st);
    tokenizer_stream_free(&st);
    s_free_cases(&c);
    tokenizer_free(&t);
}

/* llama.cpp's detokenize: the first token loses one leading space; a BOS first
 * takes that place (so the next piece keeps its space), removed or not; control
 * tokens show only when asked; CONTINUE keeps the space. */
static void test_decode_rules(void **state)
{
    tokenizer *t = s_load(VOCAB_GGUF);
    llorch_error err = {{0}};
    struct {
        int32_t ids[4];
        size_t n;
        unsigned flags;
        const char *want;
    } cases[] = {
        {{15043, 3186}, 2, 0, "Hello world"},
        {{1, 15043, 3186}, 3, 0, " Hello world"},
        {{1, 15043, 3186}, 3, TOKENIZER_DECODE_SPECIAL, "<s> Hello world"},
        {{1, 15043, 3186}, 3, TOKENIZER_DECODE_REMOVE_SPECIAL, " Hello world"},
        {{15043, 3186, 2}, 3, TOKENIZER_DECODE_SPECIAL, "Hello world</s>"},
        {{15043, 3186}, 2, TOKENIZER_DECODE_CONTINUE, " Hello world"},
        {{0}, 1, 0, ""},
        {{0}, 1, TOKENIZER_DECODE_SPECIAL, "<unk>"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text;
        size_t len;
        assert_int_equal(tokenizer_decode(t, cases[i].ids, cases[i].n, cases[i].flags, &text, &len,
                                          &err), 0);
        if (strcmp(text, cases[i].want) != 0)
            fail_msg("decode case %zu: got '%s', want '%s'", i, text, cases[i].want);
        free(text);
    }
    char *text;
    size_t len;
    int32_t bad[2] = {15043, 32000};
    assert_int_equal(tokenizer_decode(t, bad, 2, 0, &text, &len, &err), -1);
    assert_non_null(strstr(err.msg, "32000"));
    tokenizer_free(&t);
}

/* Pushes ids and returns what the stream emitted for each, joined by '|'. */
static void s_stream(tokenizer_stream *st, const int32_t *ids, size_t n, char *buf, size_t cap)
{
    llorch_error err = {{0}};
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const char *text;
        size_t len;
        assert_int_equal(tokenizer_stream_push(st, ids[i], &text, &len, &err), 0);
        assert_true(at + len + 2 < cap);
        memcpy(buf + at, text, len);
        at += len;
        buf[at++] = '|';
    }
    const char *text;
    size_t len;
    tokenizer_stream_flush(st, &text, &len);
    memcpy(buf + at, text, len);
    buf[at + len] = '\0';
}

/* A character spread over byte tokens comes out whole, at its last byte; bytes that
 * can never make a character come out as U+FFFD; a held tail is flushed as U+FFFD. */
static void test_stream_split_utf8(void **state)
{
    tokenizer *t = s_load(VOCAB_GGUF);
    llorch_error err = {{0}};
    int32_t *ids;
    size_t n;
    const char *llama = " this is \xF0\x9F\xA6\x99.cpp"; /* 🦙 has no token: four byte tokens */
    assert_int_equal(tokenizer_encode(t, llama, strlen(llama), 0, &ids, &n, &err), 0);
    int bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += t->types[ids[i]] == TOKEN_BYTE;
    assert_int_equal(bytes, 4);

    tokenizer_stream st;
    assert_int_equal(tokenizer_stream_init(&st, t, 0, &err), 0);
    char out[256];
    s_stream(&st, ids, n, out, sizeof out);
    /* ids: ▁ ▁this ▁is ▁ <F0> <9F> <A6> <99> . cpp */
    assert_string_equal(out, "| this| is| ||||\xF0\x9F\xA6\x99|.|cpp|");
    free(ids);

    int32_t b_c3 = t->byte_to_id[0xC3], b_a9 = t->byte_to_id[0xA9], b_e2 = t->byte_to_id[0xE2];
    int32_t a = tokenizer_find(t, "a", 1);
    assert_true(b_c3 >= 0 && b_a9 >= 0 && b_e2 >= 0 && a >= 0);
    s_stream(&st, (int32_t[]){b_c3, b_a9, a}, 3, out, sizeof out); /* é then a */
    assert_string_equal(out, "|\xC3\xA9|a|");
    s_stream(&st, (int32_t[]){b_c3, a}, 2, out, sizeof out); /* C3 cut short by 'a' */
    assert_string_equal(out, "|\xEF\xBF\xBD" "a|");
    s_stream(&st, (int32_t[]){a, b_a9}, 2, out, sizeof out); /* stray continuation byte */
    assert_string_equal(out, "a|\xEF\xBF\xBD|");
    s_stream(&st, (int32_t[]){a, b_e2}, 2, out, sizeof out); /* unfinished at the end */
    assert_string_equal(out, "a||\xEF\xBF\xBD");
    const char *text;
    size_t len;
    assert_int_equal(tokenizer_stream_push(&st, -1, &text, &len, &err), -1);
    assert_int_equal(tokenizer_stream_push(&st, 32000, &text, &len, &err), -1);
    tokenizer_stream_free(&st);
    tokenizer_free(&t);
}

/* utf8_check follows the WHATWG decoder, maximal subparts included. */
static void test_utf8_check(void **state)
{
    assert_int_equal(utf8_check((const uint8_t *)"a", 1), 1);
    assert_int_equal(utf8_check((const uint8_t *)"\xC3\xA9", 2), 2);
    assert_int_equal(utf8_check((const uint8_t *)"\xE2\x96\x81", 3), 3);
    assert_int_equal(utf8_check((const uint8_t *)"\xF0\x9F\xA6\x99", 4), 4);
    assert_int_equal(utf8_check((const uint8_t *)"\xF0\x9F\xA6", 3), 0);
    assert_int_equal(utf8_check((const uint8_t *)"\xF0\x9F\xA6" "a", 4), -3);
    assert_int_equal(utf8_check((const uint8_t *)"\xC0\x80", 2), -1); /* overlong lead */
    assert_int_equal(utf8_check((const uint8_t *)"\xE0\x80\x80", 3), -1); /* overlong */
    assert_int_equal(utf8_check((const uint8_t *)"\xED\xA0\x80", 3), -1); /* surrogate */
    assert_int_equal(utf8_check((const uint8_t *)"\xF4\x90\x80\x80", 4), -1); /* > U+10FFFF */
    assert_int_equal(utf8_check((const uint8_t *)"\x80", 1), -1);
    char out[32];
    size_t n = utf8_sanitize(out, "a\xF0\x9F" "b\xC3", 5);
    assert_int_equal(n, 1 + 3 + 1 + 3);
    assert_memory_equal(out, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD", n);
}

/* The 512-token stories260K vocabulary (ids from llama.cpp). */
static void test_stories260k_vocab(void **state)
{
    tokenizer *t = s_load(STORIES_GGUF);
    assert_int_equal(t->n_vocab, 512);
    assert_int_equal(t->bos_id, 1);
    assert_int_equal(t->eos_id, 2);
    s_expect_ids(t, "Once upon a time <s> x", TOKENIZE_PARSE_SPECIAL,
                 (int32_t[]){403, 407, 261, 378, 410, 1, 410, 410, 444}, 9);
    llorch_error err = {{0}};
    const char *texts[] = {"Once upon a time, there was a little girl named Lily.",
                           "Ünïcödé 日本語 🦙\t\n  end", ""};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids;
        size_t n;
        assert_int_equal(tokenizer_encode(t, texts[i], strlen(texts[i]), TOKENIZE_ADD_SPECIAL, &ids,
                                          &n, &err), 0);
        assert_true(n >= 1);
        assert_int_equal(ids[0], 1);
        char *text;
        size_t len;
        /* skip the BOS so that the first piece's prefix space is dropped */
        assert_int_equal(tokenizer_decode(t, ids + 1, n - 1, 0, &text, &len, &err), 0);
        assert_string_equal(text, texts[i]);
        free(text);
        free(ids);
    }
    tokenizer_free(&t);
}

/* Merges go by score, highest first, and equal scores merge the leftmost pair first. */
static void test_merge_order_and_config(void **state)
{
    const char *pieces[] = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "ab", "ba",
                            "\xE2\x96\x81\x61" /* ▁a */, "<0x41>"};
    uint32_t lens[10];
    for (int i = 0; i < 10; i++)
        lens[i] = (uint32_t)strlen(pieces[i]);
    float scores[10] = {0, 0, 0, -1, -1, -1, -2, -2, -3, 0};
    int32_t types[10] = {TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL, 1, 1, 1, 1, 1, 1, TOKEN_BYTE};
    tokenizer_config cfg = {.n_vocab = 10, .pieces = pieces, .piece_lens = lens, .scores = scores,
                            .types = types, .bos_id = 1, .eos_id = 2, .unk_id = 0,
                            .add_bos = true, .add_space_prefix = true};
    llorch_error err = {{0}};
    tokenizer *t = tokenizer_new(&cfg, &err);
    if (!t)
        fail_msg("tokenizer_new: %s", err.msg);
    /* "▁aba": ab (left) and ba tie at -2, ▁a scores -3: ab wins, leaving ▁ ab a */
    s_expect_ids(t, "aba", 0, (int32_t[]){3, 6, 4}, 3);
    /* with ▁a the best-scored pair, it goes first */
    scores[8] = -1.5f;
    tokenizer_free(&t);
    t = tokenizer_new(&cfg, &err);
    assert_non_null(t);
    s_expect_ids(t, "aba", 0, (int32_t[]){8, 7}, 2);
    /* 'A' falls back to its byte token; 'C' has none and becomes <unk> */
    s_expect_ids(t, "A", 0, (int32_t[]){3, 9}, 2);
    s_expect_ids(t, "C", TOKENIZE_ADD_SPECIAL, (int32_t[]){1, 3, 0}, 3);
    tokenizer_free(&t);

    cfg.unk_id = -1;
    t = tokenizer_new(&cfg, &err);
    assert_non_null(t);
    int32_t *ids;
    size_t n;
    assert_int_equal(tokenizer_encode(t, "C", 1, 0, &ids, &n, &err), -1);
    assert_non_null(strstr(err.msg, "0x43"));
    tokenizer_free(&t);
    cfg.unk_id = 0;

    /* what tokenizer_new refuses */
    tokenizer_config bad = cfg;
    bad.bos_id = 10;
    assert_null(tokenizer_new(&bad, &err));
    assert_non_null(strstr(err.msg, "BOS"));
    bad = cfg;
    bad.bos_id = -1;
    assert_null(tokenizer_new(&bad, &err));
    assert_non_null(strstr(err.msg, "add_bos"));
    bad = cfg;
    bad.n_vocab = 0;
    assert_null(tokenizer_new(&bad, &err));
    const char *dup_pieces[10];
    memcpy(dup_pieces, pieces, sizeof pieces);
    dup_pieces[5] = "a";
    uint32_t dup_lens[10];
    memcpy(dup_lens, lens, sizeof lens);
    dup_lens[5] = 1;
    bad = cfg;
    bad.pieces = dup_pieces;
    bad.piece_lens = dup_lens;
    assert_null(tokenizer_new(&bad, &err));
    assert_non_null(strstr(err.msg, "same piece"));
    dup_pieces[5] = "b";
    dup_pieces[9] = "<0xZZ>";
    assert_null(tokenizer_new(&bad, &err));
    assert_non_null(strstr(err.msg, "<0xNN>"));
    scores[4] = NAN;
    assert_null(tokenizer_new(&cfg, &err));
    assert_non_null(strstr(err.msg, "finite"));
}

/* Any bytes at all (NULs and ill-formed UTF-8 included) survive encode then decode:
 * byte fallback covers what the vocabulary lacks. The bytes leave out 0xE2 (a
 * literal "▁" in the input decodes as a space) and '<' (no control-token text),
 * and ill-formed text has no spaces: as in llama.cpp, a lead byte before a space
 * swallows bytes of its "▁", which then decode as those bytes, not as a space. */
static void test_random_bytes_round_trip(void **state)
{
    tokenizer *t = s_load(VOCAB_GGUF);
    llorch_error err = {{0}};
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    for (int iter = 0; iter < 300; iter++) {
        char text[300];
        size_t len = (size_t)(iter % 97) * 3;
        for (size_t i = 0; i < len; i++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            uint8_t b = (uint8_t)(rng >> 24);
            /* mostly ASCII and Latin/CJK lead bytes, so that merges happen too */
            if (iter % 2 == 0 && b >= 0x80)
                b = (uint8_t)(0x20 + b % 0x5F);
            bool dropped = b == 0xE2 || b == '<' || (iter % 2 == 1 && b == ' ');
            text[i] = (char)(dropped ? 'x' : b);
        }
        int32_t *ids;
        size_t n;
        assert_int_equal(tokenizer_encode(t, text, len, 0, &ids, &n, &err), 0);
        for (size_t i = 0; i < n; i++)
            assert_true(ids[i] >= 0 && ids[i] < (int32_t)t->n_vocab);
        char *back;
        size_t back_len;
        assert_int_equal(tokenizer_decode(t, ids, n, 0, &back, &back_len, &err), 0);
        assert_int_equal(back_len, len);
        assert_memory_equal(back, text, len);
        free(back);
        free(ids);
    }
    tokenizer_free(&t);
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Tokenizing grows linearly: 256 KiB of mixed text takes well under a second, and
 * four times the text takes about four times as long (not sixteen). */
static void test_speed(void **state)
{
    tokenizer *t = s_load(VOCAB_GGUF);
    vocab_cases c;
    s_read_cases(&c);
    size_t cap = 1 << 18, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (int i = 0; len < cap; i = (i + 1) % c.n) {
        size_t n = c.text_len[i] < cap - len ? c.text_len[i] : cap - len;
        memcpy(text + len, c.text[i], n);
        len += n;
    }
    llorch_error err = {{0}};
    int32_t *ids;
    size_t n;
    double t0 = s_now();
    assert_int_equal(tokenizer_encode(t, text, len / 4, 0, &ids, &n, &err), 0);
    double quarter = s_now() - t0;
    free(ids);
    t0 = s_now();
    assert_int_equal(tokenizer_encode(t, text, len, 0, &ids, &n, &err), 0);
    double whole = s_now() - t0;
    free(ids);
    print_message("tokenize: %zu bytes in %.1f ms, %zu bytes in %.1f ms\n", len / 4,
                  quarter * 1e3, len, whole * 1e3);
    assert_true(whole < 2.0);
    assert_true(whole < 12 * quarter + 0.05);
    free(text);
    s_free_cases(&c);
    tokenizer_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vocab_cases),
        cmocka_unit_test(test_bos_and_special_text),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_decode_rules),
        cmocka_unit_test(test_stream_split_utf8),
        cmocka_unit_test(test_utf8_check),
        cmocka_unit_test(test_stories260k_vocab),
        cmocka_unit_test(test_merge_order_and_config),
        cmocka_unit_test(test_random_bytes_round_trip),
        cmocka_unit_test(test_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
