/* test_gguf.c - proves the GGUF reader on the shared real files and refuses every bad-file class. */
#include "testutil.h"

#include <stdint.h>

#include "gguf.h"

/* ---- a tiny GGUF byte builder ------------------------------------------------ */

typedef struct builder {
    uint8_t *buf;
    size_t len, cap;
    uint32_t version; /* 1: 32-bit counts, lengths and dims */
} builder;

static void b_bytes(builder *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->buf = realloc(b->buf, b->cap);
        assert_non_null(b->buf);
    }
    if (n)
        memcpy(b->buf + b->len, p, n);
    b->len += n;
}

static void b_u8(builder *b, uint8_t v) { b_bytes(b, &v, 1); }
static void b_u32(builder *b, uint32_t v) { b_bytes(b, &v, 4); }
static void b_u64(builder *b, uint64_t v) { b_bytes(b, &v, 8); }

static void b_count(builder *b, uint64_t v)
{
    if (b->version == 1)
        b_u32(b, (uint32_t)v);
    else
        b_u64(b, v);
}

static void b_str(builder *b, const char *s)
{
    b_count(b, strlen(s));
    b_bytes(b, s, strlen(s));
}

static void b_header(builder *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    b->len = 0;
    b->version = version;
    b_bytes(b, "GGUF", 4);
    b_u32(b, version);
    b_count(b, n_tensors);
    b_count(b, n_kv);
}

static void b_key(builder *b, const char *key, uint32_t type)
{
    b_str(b, key);
    b_u32(b, type);
}

static void b_kv_u32(builder *b, const char *key, uint32_t v)
{
    b_key(b, key, GGUF_TYPE_UINT32);
    b_u32(b, v);
}

static void b_kv_str(builder *b, const char *key, const char *v)
{
    b_key(b, key, GGUF_TYPE_STRING);
    b_str(b, v);
}

/* tokenizer.ggml.tokens with n tokens "t0", "t1", ... */
static void b_kv_tokens(builder *b, int n)
{
    b_key(b, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
    b_u32(b, GGUF_TYPE_STRING);
    b_count(b, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        char s[16];
        snprintf(s, sizeof s, "t%d", i);
        b_str(b, s);
    }
}

static void b_tensor(builder *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                     uint32_t type, uint64_t offset)
{
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        b_count(b, ne[d]);
    b_u32(b, type);
    b_u64(b, offset);
}

static void b_align(builder *b, size_t alignment)
{
    while (b->len % alignment)
        b_u8(b, 0);
}

static void b_fill(builder *b, size_t n, uint8_t byte)
{
    for (size_t i = 0; i < n; i++)
        b_u8(b, byte);
}

/* A valid file: 3 metadata keys and two F32 tensors, "a" [4,2] then "b" [8]. */
static void b_valid(builder *b, uint32_t version)
{
    const uint64_t ne_a[] = {4, 2}, ne_b[] = {8};
    b_header(b, version, 2, 3);
    b_kv_str(b, "general.architecture", "llama");
    b_kv_u32(b, "llama.block_count", 2);
    b_kv_tokens(b, 3);
    b_tensor(b, "a", 2, ne_a, TENSOR_F32, 0);
    b_tensor(b, "b", 1, ne_b, TENSOR_F32, 32);
    b_align(b, 32);
    b_fill(b, 64, 0x3f);
}

static gguf_file *b_open(const builder *b)
{
    llorch_error err = {{0}};
    gguf_file *f = gguf_open_buffer(b->buf, b->len, &err);
    if (!f)
        fail_msg("gguf_open_buffer: %s", err.msg);
    return f;
}

/* The buffer must be refused with a message that holds each needle (NULL ends). */
static void s_expect_error(const builder *b, const char *needle, const char *needle2)
{
    llorch_error err = {{0}};
    gguf_file *f = gguf_open_buffer(b->buf, b->len, &err);
    if (f) {
        gguf_close(&f);
        fail_msg("a bad file was accepted (expected an error with '%s')", needle);
    }
    if (!strstr(err.msg, needle) || (needle2 && !strstr(err.msg, needle2)))
        fail_msg("error '%s' does not say '%s'%s%s", err.msg, needle, needle2 ? " and " : "",
                 needle2 ? needle2 : "");
    if (strncmp(err.msg, "(buffer): ", 10) != 0)
        fail_msg("error '%s' does not name the file", err.msg);
}

/* ---- valid files ---------------------------------------------------------------- */

static void test_builder_file_reads(void **state)
{
    builder b = {0};
    b_valid(&b, 3);
    gguf_file *f = b_open(&b);
    assert_int_equal(f->version, 3);
    assert_int_equal(f->n_kv, 3);
    assert_int_equal(f->n_tensors, 2);
    assert_int_equal(f->alignment, 32);
    assert_int_equal(f->data_offset % 32, 0);
    assert_int_equal(f->data_offset + 64, b.len);
    const gguf_tensor *t = gguf_find_tensor(f, "b");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 8);
    assert_int_equal(t->ne[1], 1);
    assert_int_equal(t->n_bytes, 32);
    assert_ptr_equal(t->data, f->base + f->data_offset + 32);
    assert_null(gguf_find_tensor(f, "c"));
    uint32_t n;
    assert_int_equal(gguf_get_u32(f, "llama.block_count", &n, NULL), 0);
    assert_int_equal(n, 2);
    const gguf_array *tok = gguf_get_array(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, NULL);
    assert_non_null(tok);
    assert_int_equal(tok->n, 3);
    assert_memory_equal(tok->strs[2].ptr, "t2", 2);
    gguf_close(&f);
    assert_null(f);
    gguf_close(&f); /* safe twice */
    free(b.buf);
}

/* Version 1 packs counts, lengths and dims in 32 bits; the reader must agree. */
static void test_version1_reads(void **state)
{
    builder b = {0};
    b_valid(&b, 1);
    gguf_file *f = b_open(&b);
    assert_int_equal(f->version, 1);
    assert_int_equal(gguf_find_tensor(f, "a")->ne[1], 2);
    gguf_close(&f);
    free(b.buf);
}

/* Every value kind, arrays of strings and arrays of arrays, and the typed getters. */
static void test_every_value_type(void **state)
{
    builder b = {0};
    b_header(&b, 2, 0, 14);
    b_key(&b, "u8", GGUF_TYPE_UINT8); b_u8(&b, 200);
    b_key(&b, "i8", GGUF_TYPE_INT8); b_u8(&b, 0x80);
    b_key(&b, "u16", GGUF_TYPE_UINT16); b_bytes(&b, &(uint16_t){65535}, 2);
    b_key(&b, "i16", GGUF_TYPE_INT16); b_bytes(&b, &(int16_t){-2}, 2);
    b_kv_u32(&b, "u32", 4000000000u);
    b_key(&b, "i32", GGUF_TYPE_INT32); b_bytes(&b, &(int32_t){-7}, 4);
    b_key(&b, "f32", GGUF_TYPE_FLOAT32); b_bytes(&b, &(float){1e-5f}, 4);
    b_key(&b, "bool", GGUF_TYPE_BOOL); b_u8(&b, 1);
    b_kv_str(&b, "str", "hello");
    b_key(&b, "u64", GGUF_TYPE_UINT64); b_u64(&b, UINT64_MAX);
    b_key(&b, "i64", GGUF_TYPE_INT64); b_u64(&b, (uint64_t)INT64_MIN);
    b_key(&b, "f64", GGUF_TYPE_FLOAT64); b_bytes(&b, &(double){2.5}, 8);
    b_key(&b, "ints", GGUF_TYPE_ARRAY); b_u32(&b, GGUF_TYPE_INT32); b_count(&b, 3);
    for (int32_t i = -1; i <= 1; i++)
        b_bytes(&b, &i, 4);
    /* [[1, 2], [], [3]] as uint8 arrays */
    b_key(&b, "nested", GGUF_TYPE_ARRAY); b_u32(&b, GGUF_TYPE_ARRAY); b_count(&b, 3);
    b_u32(&b, GGUF_TYPE_UINT8); b_count(&b, 2); b_u8(&b, 1); b_u8(&b, 2);
    b_u32(&b, GGUF_TYPE_UINT8); b_count(&b, 0);
    b_u32(&b, GGUF_TYPE_UINT8); b_count(&b, 1); b_u8(&b, 3);
    gguf_file *f = b_open(&b);
    assert_int_equal(gguf_find(f, "u8")->u64, 200);
    assert_int_equal(gguf_find(f, "i8")->i64, -128);
    assert_int_equal(gguf_find(f, "u16")->u64, 65535);
    assert_int_equal(gguf_find(f, "i16")->i64, -2);
    assert_int_equal(gguf_find(f, "i32")->i64, -7);
    assert_true(gguf_find(f, "bool")->b);
    assert_true(gguf_find(f, "u64")->u64 == UINT64_MAX);
    assert_true(gguf_find(f, "i64")->i64 == INT64_MIN);
    assert_true(gguf_find(f, "f64")->f64 == 2.5);
    assert_int_equal(gguf_find(f, "str")->str.len, 5);

    uint32_t u32;
    uint64_t u64;
    float f32;
    bool flag;
    char *s = NULL;
    llorch_error err = {{0}};
    assert_int_equal(gguf_get_u32(f, "u32", &u32, &err), 0);
    assert_int_equal(u32, 4000000000u);
    assert_int_equal(gguf_get_u32(f, "u8", &u32, &err), 0);
    assert_int_equal(u32, 200);
    assert_int_equal(gguf_get_u64(f, "u64", &u64, &err), 0);
    assert_int_equal(gguf_get_f32(f, "f32", &f32, &err), 0);
    assert_true(f32 == 1e-5f);
    assert_int_equal(gguf_get_bool(f, "bool", &flag, &err), 0);
    assert_true(flag);
    assert_int_equal(gguf_get_string(f, "str", &s, &err), 0);
    assert_string_equal(s, "hello");
    free(s);
    /* conversions that do not fit are refused with the key named */
    assert_int_equal(gguf_get_u32(f, "u64", &u32, &err), -1);
    assert_non_null(strstr(err.msg, "'u64'"));
    assert_non_null(strstr(err.msg, "out of range"));
    assert_int_equal(gguf_get_u32(f, "i16", &u32, &err), -1);
    assert_non_null(strstr(err.msg, "negative"));
    assert_int_equal(gguf_get_u32(f, "str", &u32, &err), -1);
    assert_non_null(strstr(err.msg, "type string"));
    assert_int_equal(gguf_get_u32(f, "missing.key", &u32, &err), -1);
    assert_non_null(strstr(err.msg, "key 'missing.key' is missing"));
    assert_int_equal(gguf_get_bool(f, "u8", &flag, &err), -1);

    const gguf_array *ints = gguf_get_array(f, "ints", GGUF_TYPE_INT32, &err);
    assert_non_null(ints);
    assert_int_equal(ints->n, 3);
    assert_int_equal(gguf_array_i64(ints, 0), -1);
    assert_true(gguf_array_f64(ints, 2) == 1.0);
    assert_null(gguf_get_array(f, "ints", GGUF_TYPE_STRING, &err));
    assert_non_null(strstr(err.msg, "array of int32"));
    const gguf_array *nested = gguf_get_array(f, "nested", GGUF_TYPE_ARRAY, &err);
    assert_non_null(nested);
    assert_int_equal(nested->n, 3);
    assert_int_equal(nested->items[0].arr->n, 2);
    assert_int_equal(gguf_array_i64(nested->items[0].arr, 1), 2);
    assert_int_equal(nested->items[1].arr->n, 0);
    assert_int_equal(gguf_array_i64(nested->items[2].arr, 0), 3);
    gguf_close(&f);
    free(b.buf);
}

/* F16, BF16 and Q8_0 tensors with a 64-byte alignment and the byte sizes they imply. */
static void test_supported_types_and_alignment(void **state)
{
    builder b = {0};
    const uint64_t ne[] = {64, 3};
    b_header(&b, 3, 3, 1);
    b_kv_u32(&b, "general.alignment", 64);
    b_tensor(&b, "h", 2, ne, TENSOR_F16, 0);     /* 384 bytes */
    b_tensor(&b, "bf", 2, ne, TENSOR_BF16, 384); /* 384 bytes */
    b_tensor(&b, "q", 2, ne, TENSOR_Q8_0, 768);  /* 3 rows x 2 blocks x 34 = 204 */
    b_align(&b, 64);
    b_fill(&b, 768 + 204, 0);
    gguf_file *f = b_open(&b);
    assert_int_equal(f->alignment, 64);
    assert_int_equal(f->data_offset % 64, 0);
    assert_int_equal(gguf_find_tensor(f, "h")->n_bytes, 384);
    assert_int_equal(gguf_find_tensor(f, "q")->n_bytes, 204);
    assert_int_equal(gguf_find_tensor(f, "q")->type, TENSOR_Q8_0);
    gguf_close(&f);
    assert_int_equal(tensor_row_bytes(TENSOR_Q8_0, 33), 0);
    assert_int_equal(tensor_row_bytes(TENSOR_BF16, 10), 20);
    assert_string_equal(tensor_type_name(12), "Q4_K");
    assert_string_equal(tensor_type_name(1000), "unknown(1000)");
    assert_string_equal(gguf_type_name(GGUF_TYPE_FLOAT64), "float64");
    free(b.buf);
}

/* Every proper prefix of a valid file is refused cleanly (never a crash). */
static void test_every_truncation_refused(void **state)
{
    builder b = {0};
    b_valid(&b, 3);
    for (size_t n = 0; n < b.len; n++) {
        llorch_error err = {{0}};
        gguf_file *f = gguf_open_buffer(b.buf, n, &err);
        if (f)
            fail_msg("a file cut to %zu of %zu bytes was accepted", n, b.len);
        assert_true(err.msg[0] != '\0');
    }
    free(b.buf);
}

/* ---- the shared real files -------------------------------------------------------- */

static gguf_file *s_open_shared(const char *rel)
{
    llorch_error err = {{0}};
    gguf_file *f = gguf_open(test_shared_path(rel), &err);
    if (!f)
        fail_msg("gguf_open: %s", err.msg);
    return f;
}

static void s_check_stories_shapes(const gguf_file *f)
{
    uint32_t v;
    float eps;
    assert_int_equal(gguf_get_u32(f, "llama.block_count", &v, NULL), 0);
    assert_int_equal(v, 5);
    assert_int_equal(gguf_get_u32(f, "llama.embedding_length", &v, NULL), 0);
    assert_int_equal(v, 64);
    assert_int_equal(gguf_get_u32(f, "llama.attention.head_count", &v, NULL), 0);
    assert_int_equal(v, 8);
    assert_int_equal(gguf_get_u32(f, "llama.attention.head_count_kv", &v, NULL), 0);
    assert_int_equal(v, 4);
    assert_int_equal(gguf_get_u32(f, "llama.feed_forward_length", &v, NULL), 0);
    assert_int_equal(v, 172);
    assert_int_equal(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &eps, NULL), 0);
    assert_true(eps == 1e-5f);
    assert_int_equal(f->n_tensors, 48);
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    assert_non_null(emb);
    assert_int_equal(emb->type, TENSOR_F32);
    assert_int_equal(emb->n_dims, 2);
    assert_int_equal(emb->ne[0], 64);
    assert_int_equal(emb->ne[1], 512);
    assert_int_equal(emb->n_bytes, 64 * 512 * 4);
    const gguf_tensor *down = gguf_find_tensor(f, "blk.4.ffn_down.weight");
    assert_non_null(down);
    assert_int_equal(down->ne[0], 172);
    assert_int_equal(down->ne[1], 64);
    const gguf_tensor *k = gguf_find_tensor(f, "blk.0.attn_k.weight");
    assert_int_equal(k->ne[1], 32); /* 4 kv heads x head_dim 8 */
    const gguf_array *tok = gguf_get_array(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, NULL);
    assert_non_null(tok);
    assert_int_equal(tok->n, 512);
    assert_int_equal(tok->strs[1].len, 3);
    assert_memory_equal(tok->strs[1].ptr, "<s>", 3);
}

static void test_stories260k_v3(void **state)
{
    gguf_file *f = s_open_shared("models/stories260K.gguf");
    assert_int_equal(f->version, 3);
    s_check_stories_shapes(f);
    uint32_t ctx;
    assert_int_equal(gguf_get_u32(f, "llama.context_length", &ctx, NULL), 0);
    assert_int_equal(ctx, 2048);
    char *arch = NULL;
    assert_int_equal(gguf_get_string(f, "general.architecture", &arch, NULL), 0);
    assert_string_equal(arch, "llama");
    free(arch);
    gguf_close(&f);
}

/* The v1 file holds the same weights: every tensor's bytes equal the v3 file's. */
static void test_stories260k_v1_matches_v3(void **state)
{
    gguf_file *v1 = s_open_shared("models/tinyllamas-stories-260k-f32.gguf");
    assert_int_equal(v1->version, 1);
    s_check_stories_shapes(v1);
    gguf_file *v3 = s_open_shared("models/stories260K.gguf");
    for (uint64_t i = 0; i < v1->n_tensors; i++) {
        const gguf_tensor *a = &v1->tensors[i];
        const gguf_tensor *b = gguf_find_tensor(v3, a->name);
        if (!b)
            fail_msg("tensor %s of the v1 file is missing from the v3 file", a->name);
        assert_int_equal(a->n_bytes, b->n_bytes);
        if (memcmp(a->data, b->data, (size_t)a->n_bytes) != 0)
            fail_msg("tensor %s differs between the v1 and v3 files", a->name);
    }
    gguf_close(&v1);
    gguf_close(&v3);
}

static void test_llama_vocab(void **state)
{
    gguf_file *f = s_open_shared("vocab/ggml-vocab-llama-spm.gguf");
    assert_int_equal(f->n_tensors, 0);
    const gguf_array *tok = gguf_get_array(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, NULL);
    assert_non_null(tok);
    assert_int_equal(tok->n, 32000);
    assert_int_equal(tok->strs[15043].len, strlen("\xe2\x96\x81Hello"));
    assert_memory_equal(tok->strs[15043].ptr, "\xe2\x96\x81Hello", tok->strs[15043].len);
    const gguf_array *scores = gguf_get_array(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, NULL);
    assert_non_null(scores);
    assert_int_equal(scores->n, 32000);
    const gguf_array *types =
        gguf_get_array(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, NULL);
    assert_non_null(types);
    assert_int_equal(gguf_array_i64(types, 0), 2); /* <unk> is UNKNOWN */
    assert_int_equal(gguf_array_i64(types, 1), 3); /* <s> is CONTROL */
    uint32_t bos;
    bool add_bos;
    assert_int_equal(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &bos, NULL), 0);
    assert_int_equal(bos, 1);
    assert_int_equal(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos, NULL), 0);
    assert_true(add_bos);
    gguf_close(&f);
}

static void test_open_missing_and_written_file(void **state)
{
    llorch_error err = {{0}};
    assert_null(gguf_open("/nonexistent/model.gguf", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/model.gguf: cannot open"));

    builder b = {0};
    b_valid(&b, 2);
    const char *path = test_tmp_path(".gguf");
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fwrite(b.buf, 1, b.len, fp);
    fclose(fp);
    gguf_file *f = gguf_open(path, &err);
    if (!f)
        fail_msg("gguf_open: %s", err.msg);
    assert_int_equal(f->size, b.len);
    gguf_close(&f);
    /* the same bytes with a bad magic: the message names the path */
    fp = fopen(path, "r+b");
    fputc('X', fp);
    fclose(fp);
    assert_null(gguf_open(path, &err));
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "bad magic"));
    unlink(path);
    free(b.buf);
}

/* ---- one test per bad-file class ----------------------------------------------- */

static void test_bad_magic(void **state)
{
    builder b = {0};
    b_valid(&b, 3);
    b.buf[0] = 'L';
    s_expect_error(&b, "bad magic 4c 47 55 46", "expected 'GGUF'");
    b.len = 2;
    s_expect_error(&b, "not a GGUF file", "2 bytes");
    free(b.buf);
}

static void test_bad_version(void **state)
{
    builder b = {0};
    b_valid(&b, 3);
    b.buf[4] = 4;
    s_expect_error(&b, "unsupported GGUF version 4", NULL);
    b.buf[4] = 0;
    s_expect_error(&b, "unsupported GGUF version 0", NULL);
    memcpy(b.buf + 4, "\0\0\0\3", 4);
    s_expect_error(&b, "unsupported GGUF version", "big-endian");
    free(b.buf);
}

static void test_absurd_counts(void **state)
{
    builder b = {0};
    b_header(&b, 3, 1ull << 40, 0);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "absurd tensor count 1099511627776", NULL);
    b_header(&b, 3, 0, UINT64_MAX);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "absurd metadata count 18446744073709551615", NULL);
    /* each count fits alone but not both together */
    b_header(&b, 3, 3, 3);
    b_fill(&b, 3 * 14 + 2 * 33, 0);
    s_expect_error(&b, "absurd tensor count 3", NULL);
    free(b.buf);
}

static void test_huge_string_length(void **state)
{
    builder b = {0};
    b_header(&b, 3, 0, 1);
    b_u64(&b, 1ull << 62); /* key length */
    b_fill(&b, 32, 'k');
    s_expect_error(&b, "metadata key 0 has length 4611686018427387904", "bytes left");
    b_header(&b, 3, 0, 1);
    b_key(&b, "general.name", GGUF_TYPE_STRING);
    b_u64(&b, UINT64_MAX);
    b_fill(&b, 16, 'x');
    s_expect_error(&b, "key 'general.name' has length 18446744073709551615", NULL);
    free(b.buf);
}

static void test_bad_value_type(void **state)
{
    builder b = {0};
    b_header(&b, 3, 0, 1);
    b_key(&b, "general.name", 13);
    b_u32(&b, 0);
    s_expect_error(&b, "key 'general.name' has an unknown value type 13", NULL);
    b_header(&b, 3, 0, 1);
    b_key(&b, "list", GGUF_TYPE_ARRAY);
    b_u32(&b, 77);
    b_u64(&b, 1);
    b_u32(&b, 0);
    s_expect_error(&b, "key 'list': array has an unknown element type 77", NULL);
    b_header(&b, 3, 0, 1);
    b_key(&b, "flag", GGUF_TYPE_BOOL);
    b_u8(&b, 2);
    s_expect_error(&b, "key 'flag': bool value is 2", NULL);
    /* arrays nested 5 deep */
    b_header(&b, 3, 0, 1);
    b_key(&b, "deep", GGUF_TYPE_ARRAY);
    for (int i = 0; i < 5; i++) {
        b_u32(&b, GGUF_TYPE_ARRAY);
        b_u64(&b, 1);
    }
    b_fill(&b, 64, 0);
    s_expect_error(&b, "key 'deep': arrays nested more than 4 deep", NULL);
    /* a numeric array longer than the file */
    b_header(&b, 3, 0, 1);
    b_key(&b, "nums", GGUF_TYPE_ARRAY);
    b_u32(&b, GGUF_TYPE_UINT64);
    b_u64(&b, 1ull << 61);
    b_fill(&b, 16, 0);
    s_expect_error(&b, "key 'nums': array of 2305843009213693952 uint64 values does not fit", NULL);
    free(b.buf);
}

static void test_duplicate_key(void **state)
{
    builder b = {0};
    b_header(&b, 3, 0, 3);
    b_kv_str(&b, "general.name", "a");
    b_kv_u32(&b, "llama.block_count", 1);
    b_kv_str(&b, "general.name", "b");
    s_expect_error(&b, "duplicate key 'general.name' (entries 0 and 2)", NULL);
    free(b.buf);
}

static void test_bad_alignment(void **state)
{
    const uint32_t bad[] = {0, 3, 48, 1u << 30};
    builder b = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "bad general.alignment %u", bad[i]);
        b_header(&b, 3, 0, 1);
        b_kv_u32(&b, "general.alignment", bad[i]);
        s_expect_error(&b, want, "power of two");
    }
    b_header(&b, 3, 0, 1);
    b_kv_str(&b, "general.alignment", "32");
    s_expect_error(&b, "general.alignment has type string", NULL);
    /* a tensor offset that is not a multiple of the alignment */
    const uint64_t ne[] = {4};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 1, ne, TENSOR_F32, 16);
    b_align(&b, 32);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "tensor 'w' data offset 16 is not a multiple of the alignment 32", NULL);
    free(b.buf);
}

static void test_bad_dims(void **state)
{
    const uint64_t ne[] = {4, 1, 1, 1, 1};
    builder b = {0};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 0, ne, TENSOR_F32, 0);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "tensor 'w' has 0 dimensions (1 to 4 allowed)", NULL);
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 5, ne, TENSOR_F32, 0);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "tensor 'w' has 5 dimensions", NULL);
    const uint64_t zero[] = {4, 0};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 2, zero, TENSOR_F32, 0);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "tensor 'w' has a zero-sized dimension 1", NULL);
    free(b.buf);
}

static void test_element_count_overflow(void **state)
{
    const uint64_t ne[] = {1ull << 32, 1ull << 32, 4};
    builder b = {0};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 3, ne, TENSOR_F32, 0);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "tensor 'w': element count overflows", NULL);
    /* fits in elements, not in bytes */
    const uint64_t big[] = {1ull << 62};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 1, big, TENSOR_F32, 0);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "tensor 'w': byte size overflows", NULL);
    free(b.buf);
}

static void test_unknown_tensor_type(void **state)
{
    const uint64_t ne[] = {256};
    builder b = {0};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "blk.0.attn_q.weight", 1, ne, 12, 0);
    b_fill(&b, 1024, 0);
    s_expect_error(&b, "tensor 'blk.0.attn_q.weight' has type Q4_K (12)", "does not support");
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 1, ne, 99, 0);
    b_fill(&b, 1024, 0);
    s_expect_error(&b, "tensor 'w' has type unknown(99) (99)", NULL);
    const uint64_t odd[] = {48};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "q", 1, odd, TENSOR_Q8_0, 0);
    b_fill(&b, 1024, 0);
    s_expect_error(&b, "tensor 'q' is Q8_0 with rows of 48 elements", "block size 32");
    free(b.buf);
}

static void test_data_offset_past_end(void **state)
{
    const uint64_t ne[] = {8};
    builder b = {0};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 1, ne, TENSOR_F32, 1ull << 40);
    b_align(&b, 32);
    b_fill(&b, 32, 0);
    s_expect_error(&b, "tensor 'w' data offset 1099511627776 is past the end of the file", NULL);
    /* offset near 2^64: the sum with data_offset must not wrap */
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 1, ne, TENSOR_F32, UINT64_MAX - 31);
    b_align(&b, 32);
    b_fill(&b, 32, 0);
    s_expect_error(&b, "tensor 'w' data offset", "past the end");
    /* no byte of data at all after the infos */
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 1, ne, TENSOR_F32, 0);
    b_fill(&b, 3, 0);
    s_expect_error(&b, "truncated", NULL);
    free(b.buf);
}

static void test_truncated_data(void **state)
{
    builder b = {0};
    b_valid(&b, 3);
    b.len -= 4; /* tensor "b" loses its last float */
    s_expect_error(&b, "truncated: tensor 'b' needs 32 bytes at data offset 32", "4 bytes short");
    free(b.buf);
}

static void test_duplicate_tensor_name(void **state)
{
    const uint64_t ne[] = {8};
    builder b = {0};
    b_header(&b, 3, 2, 0);
    b_tensor(&b, "w", 1, ne, TENSOR_F32, 0);
    b_tensor(&b, "w", 1, ne, TENSOR_F32, 32);
    b_align(&b, 32);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "duplicate tensor name 'w' (tensors 0 and 1)", NULL);
    free(b.buf);
}

static void test_overlapping_tensors(void **state)
{
    const uint64_t ne_a[] = {16}, ne_b[] = {8};
    builder b = {0};
    b_header(&b, 3, 2, 0);
    b_tensor(&b, "b", 1, ne_b, TENSOR_F32, 32);
    b_tensor(&b, "a", 1, ne_a, TENSOR_F32, 0); /* 64 bytes: covers b */
    b_align(&b, 32);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "tensors 'a' (data bytes 0..64) and 'b' (from 32) overlap", NULL);
    free(b.buf);
}

static void test_bad_special_token_id(void **state)
{
    builder b = {0};
    b_header(&b, 3, 0, 3);
    b_kv_tokens(&b, 5);
    b_kv_u32(&b, "tokenizer.ggml.bos_token_id", 1);
    b_kv_u32(&b, "tokenizer.ggml.eos_token_id", 7);
    s_expect_error(&b, "tokenizer.ggml.eos_token_id = 7 is out of range", "5 tokens");
    b_header(&b, 3, 0, 2);
    b_kv_tokens(&b, 5);
    b_key(&b, "tokenizer.ggml.unknown_token_id", GGUF_TYPE_INT32);
    b_bytes(&b, &(int32_t){-5}, 4);
    s_expect_error(&b, "tokenizer.ggml.unknown_token_id = -5 is out of range", NULL);
    b_header(&b, 3, 0, 2);
    b_kv_tokens(&b, 5);
    b_kv_str(&b, "tokenizer.ggml.padding_token_id", "0");
    s_expect_error(&b, "tokenizer.ggml.padding_token_id has type string", NULL);
    /* -1 (as uint32 too) means "no such token", as llama.cpp writes it */
    b_header(&b, 3, 0, 2);
    b_kv_tokens(&b, 5);
    b_kv_u32(&b, "tokenizer.ggml.padding_token_id", UINT32_MAX);
    gguf_file *f = b_open(&b);
    gguf_close(&f);
    /* scores must have one entry per token */
    b_header(&b, 3, 0, 2);
    b_kv_tokens(&b, 5);
    b_key(&b, "tokenizer.ggml.scores", GGUF_TYPE_ARRAY);
    b_u32(&b, GGUF_TYPE_FLOAT32);
    b_count(&b, 4);
    b_fill(&b, 16, 0);
    s_expect_error(&b, "tokenizer.ggml.scores must be an array of 5 values", "it has 4");
    free(b.buf);
}

static void test_bad_names(void **state)
{
    builder b = {0};
    b_header(&b, 3, 0, 1);
    b_count(&b, 4);
    b_bytes(&b, "a\0bc", 4);
    b_u32(&b, GGUF_TYPE_UINT8);
    b_u8(&b, 0);
    s_expect_error(&b, "metadata key 0 'a\\x00bc' contains a NUL byte", NULL);
    b_header(&b, 3, 0, 1);
    b_kv_u32(&b, "", 1);
    s_expect_error(&b, "metadata key 0 at offset", "is empty");
    const uint64_t ne[] = {8};
    char long_name[80];
    memset(long_name, 'n', 65);
    long_name[65] = '\0';
    b_header(&b, 3, 1, 0);
    b_tensor(&b, long_name, 1, ne, TENSOR_F32, 0);
    b_fill(&b, 64, 0);
    s_expect_error(&b, "is 65 bytes long (at most 64 allowed)", NULL);
    llorch_error err = {{0}};
    assert_null(gguf_open_buffer(NULL, 0, &err));
    assert_non_null(strstr(err.msg, "not a GGUF file"));
    free(b.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builder_file_reads),
        cmocka_unit_test(test_version1_reads),
        cmocka_unit_test(test_every_value_type),
        cmocka_unit_test(test_supported_types_and_alignment),
        cmocka_unit_test(test_every_truncation_refused),
        cmocka_unit_test(test_stories260k_v3),
        cmocka_unit_test(test_stories260k_v1_matches_v3),
        cmocka_unit_test(test_llama_vocab),
        cmocka_unit_test(test_open_missing_and_written_file),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_absurd_counts),
        cmocka_unit_test(test_huge_string_length),
        cmocka_unit_test(test_bad_value_type),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_bad_alignment),
        cmocka_unit_test(test_bad_dims),
        cmocka_unit_test(test_element_count_overflow),
        cmocka_unit_test(test_unknown_tensor_type),
        cmocka_unit_test(test_data_offset_past_end),
        cmocka_unit_test(test_truncated_data),
        cmocka_unit_test(test_duplicate_tensor_name),
        cmocka_unit_test(test_overlapping_tensors),
        cmocka_unit_test(test_bad_special_token_id),
        cmocka_unit_test(test_bad_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
