/* test_mkmodel.c - proves the GGUF writer and mkmodel through the reader: values, shapes, determinism. */
#include "testutil.h"

#include <math.h>
#include <stdint.h>

#include "fp16.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "mkmodel.h"
#include "quant.h"

/* ---- helpers ---------------------------------------------------------------- */

static uint8_t *s_read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static bool s_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static bool s_str_eq(gguf_str s, const char *c)
{
    return s.len == strlen(c) && !memcmp(s.ptr, c, s.len);
}

/* A small model: dim 64, 2 layers, 4 heads of 16, 2 KV heads, ffn 96. */
static mkmodel_config s_small(enum tensor_type type)
{
    mkmodel_config c;
    assert_int_equal(mkmodel_preset("tiny", &c, NULL), 0);
    c.dim = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.ffn_dim = 96, c.ctx = 128;
    c.vocab_size = mkmodel_builtin_vocab_min();
    c.type = type;
    c.seed = 42;
    return c;
}

/* ---- the writer ------------------------------------------------------------- */

/* Every metadata kind, arrays of strings and of arrays, a non-default alignment,
 * padded tensors written in pieces: the reader sees exactly what was written. */
static void test_writer_round_trip(void **state)
{
    (void)state;
    const char *path = test_tmp_path(".gguf");
    llorch_error err = {{0}};
    gguf_writer *w = gguf_writer_new(64);
    assert_non_null(w);
    assert_int_equal(gguf_writer_set_u8(w, "t.u8", 200, &err), 0);
    assert_int_equal(gguf_writer_set_i8(w, "t.i8", -100, &err), 0);
    assert_int_equal(gguf_writer_set_u16(w, "t.u16", 60000, &err), 0);
    assert_int_equal(gguf_writer_set_i16(w, "t.i16", -30000, &err), 0);
    assert_int_equal(gguf_writer_set_u32(w, "t.u32", 4000000000u, &err), 0);
    assert_int_equal(gguf_writer_set_i32(w, "t.i32", -2000000000, &err), 0);
    assert_int_equal(gguf_writer_set_u64(w, "t.u64", 1ull << 60, &err), 0);
    assert_int_equal(gguf_writer_set_i64(w, "t.i64", -(1ll << 60), &err), 0);
    assert_int_equal(gguf_writer_set_f32(w, "t.f32", 1.5f, &err), 0);
    assert_int_equal(gguf_writer_set_f64(w, "t.f64", -2.25, &err), 0);
    assert_int_equal(gguf_writer_set_bool(w, "t.bool", true, &err), 0);
    assert_int_equal(gguf_writer_set_string(w, "t.str", "h\xc3\xa9llo", &err), 0);
    const float floats[3] = {0.5f, -1.0f, 3.0f};
    assert_int_equal(gguf_writer_set_array(w, "t.floats", GGUF_TYPE_FLOAT32, floats, 3, &err), 0);
    const char *strs[] = {"a", "", "\xe2\x96\x81the"};
    assert_int_equal(gguf_writer_set_string_array(w, "t.strs", strs, 3, &err), 0);
    /* a nested array [[1, 2], [3]] of int32 through gguf_writer_set_value */
    int32_t in0[2] = {1, 2}, in1[1] = {3};
    gguf_array inner[2] = {{.elem_type = GGUF_TYPE_INT32, .n = 2, .raw = in0},
                           {.elem_type = GGUF_TYPE_INT32, .n = 1, .raw = in1}};
    gguf_value items[2] = {{.type = GGUF_TYPE_ARRAY, .arr = &inner[0]},
                           {.type = GGUF_TYPE_ARRAY, .arr = &inner[1]}};
    gguf_array outer = {.elem_type = GGUF_TYPE_ARRAY, .n = 2, .items = items};
    gguf_value nested = {.type = GGUF_TYPE_ARRAY, .arr = &outer};
    assert_int_equal(gguf_writer_set_value(w, "t.nested", &nested, &err), 0);

    uint64_t ne_a[1] = {5}, ne_b[2] = {3, 2}, ne_c[2] = {64, 3};
    assert_int_equal(gguf_writer_add_tensor(w, "a", TENSOR_F32, 1, ne_a, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "b", TENSOR_F16, 2, ne_b, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "c", TENSOR_Q8_0, 2, ne_c, &err), 0);
    uint64_t expected_size = gguf_writer_file_bytes(w);
    assert_int_equal(gguf_writer_open(w, path, &err), 0);

    float a[5] = {1, 2, 3, 4, 5};
    uint16_t b[6];
    for (int i = 0; i < 6; i++)
        b[i] = f32_to_fp16(0.25f * (float)i);
    uint8_t c[3 * 2 * 34];
    for (size_t i = 0; i < sizeof c; i++)
        c[i] = (uint8_t)(i * 7);
    assert_int_equal(gguf_writer_begin_tensor(w, "a", &err), 0);
    assert_int_equal(gguf_writer_write(w, a, 8, &err), 0); /* in two pieces */
    assert_int_equal(gguf_writer_write(w, (uint8_t *)a + 8, 12, &err), 0);
    assert_int_equal(gguf_writer_begin_tensor(w, "b", &err), 0);
    assert_int_equal(gguf_writer_write(w, b, sizeof b, &err), 0);
    assert_int_equal(gguf_writer_begin_tensor(w, "c", &err), 0);
    assert_int_equal(gguf_writer_write(w, c, sizeof c, &err), 0);
    assert_int_equal(gguf_writer_finish(w, &err), 0);
    gguf_writer_free(&w);
    assert_null(w);

    gguf_file *f = gguf_open(path, &err);
    if (!f)
        fail_msg("%s", err.msg);
    assert_int_equal(f->version, 3);
    assert_int_equal(f->size, expected_size);
    assert_int_equal(f->alignment, 64);
    uint32_t u32;
    assert_int_equal(gguf_get_u32(f, "general.alignment", &u32, &err), 0);
    assert_int_equal(u32, 64);
    assert_int_equal(gguf_find(f, "t.u8")->u64, 200);
    assert_int_equal(gguf_find(f, "t.i8")->i64, -100);
    assert_int_equal(gguf_find(f, "t.u16")->u64, 60000);
    assert_int_equal(gguf_find(f, "t.i16")->i64, -30000);
    assert_int_equal(gguf_find(f, "t.u32")->u64, 4000000000u);
    assert_int_equal(gguf_find(f, "t.i32")->i64, -2000000000);
    assert_int_equal(gguf_find(f, "t.u64")->u64, 1ull << 60);
    assert_true(gguf_find(f, "t.i64")->i64 == -(1ll << 60));
    assert_true(gguf_find(f, "t.f32")->f64 == 1.5);
    assert_true(gguf_find(f, "t.f64")->f64 == -2.25);
    assert_int_equal(gguf_find(f, "t.f64")->type, GGUF_TYPE_FLOAT64);
    assert_true(gguf_find(f, "t.bool")->b);
    assert_true(s_str_eq(gguf_find(f, "t.str")->str, "h\xc3\xa9llo"));
    const gguf_array *fa = gguf_get_array(f, "t.floats", GGUF_TYPE_FLOAT32, &err);
    assert_non_null(fa);
    assert_int_equal(fa->n, 3);
    assert_true(gguf_array_f64(fa, 1) == -1.0);
    const gguf_array *sa = gguf_get_array(f, "t.strs", GGUF_TYPE_STRING, &err);
    assert_non_null(sa);
    assert_int_equal(sa->n, 3);
    assert_true(s_str_eq(sa->strs[1], "") && s_str_eq(sa->strs[2], "\xe2\x96\x81the"));
    const gguf_array *na = gguf_get_array(f, "t.nested", GGUF_TYPE_ARRAY, &err);
    assert_non_null(na);
    assert_int_equal(na->n, 2);
    assert_int_equal(na->items[0].arr->n, 2);
    assert_int_equal(gguf_array_i64(na->items[0].arr, 1), 2);
    assert_int_equal(gguf_array_i64(na->items[1].arr, 0), 3);

    assert_int_equal(f->n_tensors, 3);
    const gguf_tensor *ta = gguf_find_tensor(f, "a"), *tb = gguf_find_tensor(f, "b"),
                      *tc = gguf_find_tensor(f, "c");
    assert_true(ta && tb && tc);
    assert_int_equal(ta->offset % 64, 0);
    assert_int_equal(tb->offset % 64, 0);
    assert_int_equal(tc->offset % 64, 0);
    assert_int_equal(tb->type, TENSOR_F16);
    assert_int_equal(tb->n_dims, 2);
    assert_int_equal(tb->ne[0], 3);
    assert_int_equal(tb->ne[1], 2);
    assert_int_equal(tc->type, TENSOR_Q8_0);
    assert_memory_equal(ta->data, a, sizeof a);
    assert_memory_equal(tb->data, b, sizeof b);
    assert_memory_equal(tc->data, c, sizeof c);
    gguf_close(&f);
    unlink(path);
}

/* Misuse and bad input are errors with a message, the file never appears under its
 * name, and the temporary .part file is removed. */
static void test_writer_errors(void **state)
{
    (void)state;
    llorch_error err = {{0}};
    gguf_writer *w = gguf_writer_new(0);
    assert_int_equal(gguf_writer_set_u32(w, "k", 1, &err), 0);
    assert_int_equal(gguf_writer_set_u32(w, "k", 2, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate metadata key 'k'"));
    /* the failure is sticky */
    assert_int_equal(gguf_writer_set_u32(w, "other", 2, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate"));
    gguf_writer_free(&w);

    uint64_t ne_bad[2] = {33, 2}, ne[2] = {32, 2};
    w = gguf_writer_new(0);
    assert_int_equal(gguf_writer_add_tensor(w, "q", TENSOR_Q8_0, 2, ne_bad, &err), -1);
    assert_non_null(strstr(err.msg, "'q'"));
    gguf_writer_free(&w);

    w = gguf_writer_new(0);
    assert_int_equal(gguf_writer_add_tensor(w, "t", TENSOR_F32, 2, ne, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "t", TENSOR_F32, 2, ne, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate tensor name 't'"));
    gguf_writer_free(&w);

    assert_null(gguf_writer_new(48)); /* not a power of two */

    w = gguf_writer_new(0);
    assert_int_equal(gguf_writer_add_tensor(w, "t", TENSOR_F32, 1, ne, &err), 0);
    assert_int_equal(gguf_writer_open(w, "/nonexistent-dir/x.gguf", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.gguf.part"));
    gguf_writer_free(&w);

    const char *path = test_tmp_path(".gguf");
    unlink(path);
    char part[300];
    snprintf(part, sizeof part, "%s.part", path);
    w = gguf_writer_new(0);
    assert_int_equal(gguf_writer_add_tensor(w, "t", TENSOR_F32, 1, ne, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "u", TENSOR_F32, 1, ne, &err), 0);
    assert_int_equal(gguf_writer_open(w, path, &err), 0);
    assert_true(s_exists(part));
    assert_int_equal(gguf_writer_set_u32(w, "late", 1, &err), -1);
    gguf_writer_free(&w);
    assert_false(s_exists(part));

    float data[33] = {0};
    w = gguf_writer_new(0);
    assert_int_equal(gguf_writer_add_tensor(w, "t", TENSOR_F32, 1, ne, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "u", TENSOR_F32, 1, ne, &err), 0);
    assert_int_equal(gguf_writer_open(w, path, &err), 0);
    assert_int_equal(gguf_writer_begin_tensor(w, "u", &err), -1);
    assert_non_null(strstr(err.msg, "out of order"));
    gguf_writer_free(&w);

    w = gguf_writer_new(0);
    assert_int_equal(gguf_writer_add_tensor(w, "t", TENSOR_F32, 1, ne, &err), 0);
    assert_int_equal(gguf_writer_open(w, path, &err), 0);
    assert_int_equal(gguf_writer_begin_tensor(w, "t", &err), 0);
    assert_int_equal(gguf_writer_write(w, data, sizeof data, &err), -1);
    assert_non_null(strstr(err.msg, "holds 128 bytes"));
    gguf_writer_free(&w);

    w = gguf_writer_new(0);
    assert_int_equal(gguf_writer_add_tensor(w, "t", TENSOR_F32, 1, ne, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "u", TENSOR_F32, 1, ne, &err), 0);
    assert_int_equal(gguf_writer_open(w, path, &err), 0);
    assert_int_equal(gguf_writer_begin_tensor(w, "t", &err), 0);
    assert_int_equal(gguf_writer_write(w, data, 128, &err), 0);
    assert_int_equal(gguf_writer_finish(w, &err), -1);
    assert_non_null(strstr(err.msg, "only 1 of 2 tensors"));
    gguf_writer_free(&w);
    assert_false(s_exists(path));
    assert_false(s_exists(part));
}

/* A full disk is reported as such (when /dev/full exists: every write fails ENOSPC). */
static void test_writer_disk_full(void **state)
{
    (void)state;
    if (access("/dev/full", W_OK) != 0)
        skip();
    /* /dev/full cannot be renamed into, so write through a symlink named x.part */
    char dir[] = "/tmp/llorch-test-full-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], part[300];
    snprintf(path, sizeof path, "%s/x.gguf", dir);
    snprintf(part, sizeof part, "%s.part", path);
    assert_int_equal(symlink("/dev/full", part), 0);
    llorch_error err = {{0}};
    gguf_writer *w = gguf_writer_new(0);
    uint64_t ne[1] = {1 << 22};
    assert_int_equal(gguf_writer_add_tensor(w, "big", TENSOR_F32, 1, ne, &err), 0);
    float *data = calloc(1 << 22, sizeof *data);
    int rc = gguf_writer_open(w, path, &err);
    if (!rc)
        rc = gguf_writer_begin_tensor(w, "big", &err);
    if (!rc)
        rc = gguf_writer_write(w, data, (1u << 22) * sizeof *data, &err);
    if (!rc)
        rc = gguf_writer_finish(w, &err);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.msg, "disk is full"));
    gguf_writer_free(&w);
    free(data);
    unlink(part);
    rmdir(dir);
}

/* ---- mkmodel ---------------------------------------------------------------- */

static void s_expect_u32(const gguf_file *f, const char *key, uint32_t want)
{
    uint32_t v = 0;
    llorch_error err = {{0}};
    if (gguf_get_u32(f, key, &v, &err))
        fail_msg("%s", err.msg);
    if (v != want)
        fail_msg("%s = %u, want %u", key, v, want);
}

static void s_expect_shape(const gguf_file *f, const char *name, enum tensor_type type,
                           uint64_t ne0, uint64_t ne1)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t)
        fail_msg("no tensor %s", name);
    if (t->type != type || t->ne[0] != ne0 || t->ne[1] != ne1 || t->n_dims != (ne1 > 1 ? 2 : 1))
        fail_msg("%s: type %d shape [%llu, %llu], want type %d [%llu, %llu]", name, t->type,
                 (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], type,
                 (unsigned long long)ne0, (unsigned long long)ne1);
}

/* The llama.* keys, the tensor set, shapes and types in each of the three types. */
static void test_mkmodel_keys_and_shapes(void **state)
{
    (void)state;
    const enum tensor_type types[] = {TENSOR_F32, TENSOR_F16, TENSOR_Q8_0};
    const uint32_t file_types[] = {0, 1, 7};
    for (int k = 0; k < 3; k++) {
        mkmodel_config c = s_small(types[k]);
        const char *path = test_tmp_path(".gguf");
        llorch_error err = {{0}};
        if (mkmodel_write(&c, path, NULL, NULL, &err))
            fail_msg("%s", err.msg);
        gguf_file *f = gguf_open(path, &err);
        if (!f)
            fail_msg("%s", err.msg);
        char *arch = NULL;
        assert_int_equal(gguf_get_string(f, "general.architecture", &arch, &err), 0);
        assert_string_equal(arch, "llama");
        free(arch);
        s_expect_u32(f, "general.file_type", file_types[k]);
        s_expect_u32(f, "llama.context_length", 128);
        s_expect_u32(f, "llama.embedding_length", 64);
        s_expect_u32(f, "llama.block_count", 2);
        s_expect_u32(f, "llama.feed_forward_length", 96);
        s_expect_u32(f, "llama.rope.dimension_count", 16);
        s_expect_u32(f, "llama.attention.head_count", 4);
        s_expect_u32(f, "llama.attention.head_count_kv", 2);
        s_expect_u32(f, "tokenizer.ggml.bos_token_id", 1);
        s_expect_u32(f, "tokenizer.ggml.eos_token_id", 2);
        float eps = 0, theta = 0;
        assert_int_equal(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &eps, &err), 0);
        assert_true(eps == 1e-5f);
        assert_int_equal(gguf_get_f32(f, "llama.rope.freq_base", &theta, &err), 0);
        assert_true(theta == 10000.0f);
        const uint64_t nv = c.vocab_size;
        assert_int_equal(f->n_tensors, 1 + 9 * 2 + 2);
        s_expect_shape(f, "token_embd.weight", types[k], 64, nv);
        s_expect_shape(f, "output.weight", types[k], 64, nv);
        s_expect_shape(f, "output_norm.weight", TENSOR_F32, 64, 1);
        for (int l = 0; l < 2; l++) {
            char name[64];
#define SHAPE(suffix, type, a, b)                                      \
    snprintf(name, sizeof name, "blk.%d.%s.weight", l, suffix);        \
    s_expect_shape(f, name, type, a, b)
            SHAPE("attn_norm", TENSOR_F32, 64, 1);
            SHAPE("ffn_norm", TENSOR_F32, 64, 1);
            SHAPE("attn_q", types[k], 64, 64);
            SHAPE("attn_k", types[k], 64, 32);
            SHAPE("attn_v", types[k], 64, 32);
            SHAPE("attn_output", types[k], 64, 64);
            SHAPE("ffn_gate", types[k], 64, 96);
            SHAPE("ffn_up", types[k], 64, 96);
            SHAPE("ffn_down", types[k], 96, 64);
#undef SHAPE
        }
        gguf_close(&f);
        unlink(path);
    }
}

/* The same config gives the same bytes with 1 or 3 threads; another seed differs. */
static void test_mkmodel_deterministic(void **state)
{
    (void)state;
    mkmodel_config c = s_small(TENSOR_Q8_0);
    c.dim = 128, c.ffn_dim = 352, c.vocab_size = 20000; /* big enough for several chunks */
    llorch_error err = {{0}};
    char p1[256], p2[256], p3[256];
    snprintf(p1, sizeof p1, "%s", test_tmp_path(".gguf"));
    snprintf(p2, sizeof p2, "%s", test_tmp_path(".gguf"));
    snprintf(p3, sizeof p3, "%s", test_tmp_path(".gguf"));
    c.n_threads = 1;
    assert_int_equal(mkmodel_write(&c, p1, NULL, NULL, &err), 0);
    c.n_threads = 3;
    assert_int_equal(mkmodel_write(&c, p2, NULL, NULL, &err), 0);
    c.seed = 43;
    assert_int_equal(mkmodel_write(&c, p3, NULL, NULL, &err), 0);
    size_t n1, n2, n3;
    uint8_t *b1 = s_read_all(p1, &n1), *b2 = s_read_all(p2, &n2), *b3 = s_read_all(p3, &n3);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    assert_int_equal(n1, n3);
    assert_true(memcmp(b1, b3, n1) != 0);
    free(b1), free(b2), free(b3);
    unlink(p1), unlink(p2), unlink(p3);
}

/* Stored values are the generated ones: F32 exactly, F16 rounded, Q8_0 as the
 * reference quantizer makes them (scale equal, each int8 within 1) and within half a
 * step of the float; weights have the asked std, norms sit near 1. */
static void test_mkmodel_values(void **state)
{
    (void)state;
    const enum tensor_type types[] = {TENSOR_F32, TENSOR_F16, TENSOR_Q8_0};
    const char *names[] = {"blk.1.attn_k.weight", "output.weight", "blk.0.ffn_down.weight",
                           "blk.0.attn_norm.weight", "token_embd.weight"};
    for (int k = 0; k < 3; k++) {
        mkmodel_config c = s_small(types[k]);
        const char *path = test_tmp_path(".gguf");
        llorch_error err = {{0}};
        assert_int_equal(mkmodel_write(&c, path, NULL, NULL, &err), 0);
        gguf_file *f = gguf_open(path, &err);
        assert_non_null(f);
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            const gguf_tensor *t = gguf_find_tensor(f, names[i]);
            assert_non_null(t);
            const uint64_t n = t->ne[0];
            float gen[128], deq[128];
            double sum = 0, sum2 = 0;
            for (uint64_t r = 0; r < t->ne[1]; r++) {
                if (mkmodel_tensor_row(&c, c.vocab_size, names[i], r, gen, n, &err))
                    fail_msg("%s", err.msg);
                const uint8_t *row = (const uint8_t *)t->data + r * (t->n_bytes / t->ne[1]);
                if (t->type == TENSOR_F32) {
                    assert_memory_equal(row, gen, n * 4);
                } else if (t->type == TENSOR_F16) {
                    for (uint64_t j = 0; j < n; j++) {
                        uint16_t h;
                        memcpy(&h, row + 2 * j, 2);
                        assert_int_equal(h, f32_to_fp16(gen[j]));
                    }
                } else {
                    q8_0_block ref[4];
                    q8_0_quantize_row(gen, ref, (int64_t)n);
                    const q8_0_block *blocks = (const q8_0_block *)(const void *)row;
                    q8_0_dequantize_row(blocks, deq, (int64_t)n);
                    for (uint64_t b = 0; b < n / 32; b++) {
                        assert_int_equal(blocks[b].d, ref[b].d);
                        const float d = fp16_to_f32(blocks[b].d);
                        for (int j = 0; j < 32; j++) {
                            assert_true(abs(blocks[b].qs[j] - ref[b].qs[j]) <= 1);
                            assert_true(fabsf(deq[b * 32 + j] - gen[b * 32 + j]) <=
                                        0.5f * d + 1e-3f * fabsf(gen[b * 32 + j]) + 1e-7f);
                        }
                    }
                }
                for (uint64_t j = 0; j < n; j++)
                    sum += gen[j], sum2 += (double)gen[j] * gen[j];
            }
            const double count = (double)(n * t->ne[1]);
            const double mean = sum / count, sd = sqrt(sum2 / count - mean * mean);
            const bool norm = strstr(names[i], "norm") != NULL;
            const double want_mean = norm ? 1.0 : 0.0;
            const double want_sd = norm ? c.norm_std : strstr(names[i], "output") ? c.out_std
                                                                                    : c.std;
            if (fabs(mean - want_mean) > 4 * want_sd / sqrt(count) + 1e-6 ||
                fabs(sd - want_sd) > 0.2 * want_sd)
                fail_msg("%s: mean %g sd %g, want %g and %g", names[i], mean, sd, want_mean,
                         want_sd);
        }
        gguf_close(&f);
        unlink(path);
    }
}

/* The built-in vocabulary: unique pieces, specials and 256 byte tokens at their ids,
 * and every multi-character piece reachable by SentencePiece merges (the piece minus
 * its last character is a piece too). */
static void test_builtin_vocab(void **state)
{
    (void)state;
    mkmodel_config c = s_small(TENSOR_F32);
    c.vocab_size = 32000;
    const char *path = test_tmp_path(".gguf");
    llorch_error err = {{0}};
    assert_int_equal(mkmodel_write(&c, path, NULL, NULL, &err), 0);
    gguf_file *f = gguf_open(path, &err);
    assert_non_null(f);
    const gguf_array *tokens = gguf_get_array(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &err);
    const gguf_array *types = gguf_get_array(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &err);
    const gguf_array *scores = gguf_get_array(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, &err);
    assert_true(tokens && types && scores);
    assert_int_equal(tokens->n, 32000);
    assert_int_equal(types->n, 32000);
    assert_int_equal(scores->n, 32000);
    assert_true(s_str_eq(tokens->strs[0], "<unk>") && gguf_array_i64(types, 0) == 2);
    assert_true(s_str_eq(tokens->strs[1], "<s>") && gguf_array_i64(types, 1) == 3);
    assert_true(s_str_eq(tokens->strs[2], "</s>") && gguf_array_i64(types, 2) == 3);
    assert_true(s_str_eq(tokens->strs[3], "<0x00>") && gguf_array_i64(types, 3) == 6);
    assert_true(s_str_eq(tokens->strs[3 + 0x0A], "<0x0A>"));
    assert_true(s_str_eq(tokens->strs[258], "<0xFF>") && gguf_array_i64(types, 258) == 6);
    bool has_the = false;
    for (uint64_t i = 0; i < tokens->n; i++) {
        gguf_str s = tokens->strs[i];
        has_the |= s_str_eq(s, "\xe2\x96\x81the");
        for (uint64_t j = 0; j < i && i < 3000; j++) /* uniqueness, on the hand-made part */
            assert_false(s.len == tokens->strs[j].len && !memcmp(s.ptr, tokens->strs[j].ptr, s.len));
        if (i < 259)
            continue;
        assert_int_equal(gguf_array_i64(types, i), 1);
        /* drop the last UTF-8 character */
        uint64_t cut = s.len;
        do
            cut--;
        while (cut > 0 && ((uint8_t)s.ptr[cut] & 0xc0) == 0x80);
        if (cut == 0)
            continue;
        bool found = false;
        for (uint64_t j = 259; j < tokens->n && !found; j++)
            found = tokens->strs[j].len == cut && !memcmp(tokens->strs[j].ptr, s.ptr, cut);
        if (!found)
            fail_msg("piece %llu '%.*s' cannot be merged from a shorter piece",
                     (unsigned long long)i, (int)s.len, s.ptr);
    }
    assert_true(has_the);
    gguf_close(&f);
    unlink(path);
}

/* --vocab copies every tokenizer.* key of the vocab file and sizes the embedding by it. */
static void test_mkmodel_copies_vocab(void **state)
{
    (void)state;
    const char *vocab_path = test_shared_path("vocab/ggml-vocab-llama-spm.gguf");
    mkmodel_config c = s_small(TENSOR_Q8_0);
    c.vocab_path = vocab_path;
    c.vocab_size = 0; /* ignored with a vocab file */
    const char *path = test_tmp_path(".gguf");
    llorch_error err = {{0}};
    if (mkmodel_write(&c, path, NULL, NULL, &err))
        fail_msg("%s", err.msg);
    gguf_file *f = gguf_open(path, &err), *v = gguf_open(vocab_path, &err);
    assert_true(f && v);
    uint64_t n_copied = 0;
    for (uint64_t i = 0; i < v->n_kv; i++) {
        if (strncmp(v->kvs[i].key, "tokenizer.", 10))
            continue;
        const gguf_value *a = &v->kvs[i].value, *b = gguf_find(f, v->kvs[i].key);
        if (!b)
            fail_msg("%s was not copied", v->kvs[i].key);
        assert_int_equal(a->type, b->type);
        if (a->type == GGUF_TYPE_ARRAY) {
            assert_int_equal(a->arr->n, b->arr->n);
            assert_int_equal(a->arr->elem_type, b->arr->elem_type);
            if (a->arr->elem_type == GGUF_TYPE_STRING)
                for (uint64_t j = 0; j < a->arr->n; j++)
                    assert_true(a->arr->strs[j].len == b->arr->strs[j].len &&
                                !memcmp(a->arr->strs[j].ptr, b->arr->strs[j].ptr,
                                        a->arr->strs[j].len));
            else
                for (uint64_t j = 0; j < a->arr->n; j++)
                    assert_true(gguf_array_f64(a->arr, j) == gguf_array_f64(b->arr, j));
        } else if (a->type == GGUF_TYPE_STRING) {
            assert_true(a->str.len == b->str.len && !memcmp(a->str.ptr, b->str.ptr, a->str.len));
        } else {
            assert_true(a->u64 == b->u64);
        }
        n_copied++;
    }
    assert_true(n_copied >= 8);
    s_expect_shape(f, "token_embd.weight", TENSOR_Q8_0, 64, 32000);
    s_expect_shape(f, "output.weight", TENSOR_Q8_0, 64, 32000);
    gguf_close(&f);
    gguf_close(&v);
    unlink(path);

    c.vocab_path = "/nonexistent/vocab.gguf";
    assert_int_equal(mkmodel_write(&c, path, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/vocab.gguf"));
    assert_false(s_exists(path));
}

/* Bad configurations are refused with a message naming the values. */
static void test_mkmodel_validate(void **state)
{
    (void)state;
    llorch_error err = {{0}};
    mkmodel_config c = s_small(TENSOR_F32);
    assert_int_equal(mkmodel_validate(&c, &err), 0);
    c.dim = 62;
    assert_int_equal(mkmodel_validate(&c, &err), -1);
    assert_non_null(strstr(err.msg, "--dim 62 is not divisible by --heads 4"));
    c = s_small(TENSOR_Q8_0);
    c.ffn_dim = 100;
    assert_int_equal(mkmodel_validate(&c, &err), -1);
    assert_non_null(strstr(err.msg, "multiples of 32"));
    c = s_small(TENSOR_F32);
    c.n_kv_heads = 3;
    assert_int_equal(mkmodel_validate(&c, &err), -1);
    assert_non_null(strstr(err.msg, "--kv-heads 3"));
    c = s_small(TENSOR_F32);
    c.dim = 68, c.n_heads = 68, c.n_kv_heads = 68; /* head size 1 */
    assert_int_equal(mkmodel_validate(&c, &err), -1);
    assert_non_null(strstr(err.msg, "odd"));
    c = s_small(TENSOR_F32);
    c.vocab_size = 10;
    assert_int_equal(mkmodel_validate(&c, &err), -1);
    assert_non_null(strstr(err.msg, "built-in vocabulary"));
    c = s_small(TENSOR_F32);
    c.n_layers = 0;
    assert_int_equal(mkmodel_validate(&c, &err), -1);
    assert_non_null(strstr(err.msg, "--layers 0"));
    c = s_small(TENSOR_F32);
    c.std = -1;
    assert_int_equal(mkmodel_validate(&c, &err), -1);
    assert_int_equal(mkmodel_preset("gpt-5", &c, &err), -1);
    assert_non_null(strstr(err.msg, "llama2-7b"));
}

/* The presets have the shapes the benchmarks and `make run` rely on. */
static void test_mkmodel_presets(void **state)
{
    (void)state;
    mkmodel_config c;
    assert_int_equal(mkmodel_preset("llama2-7b", &c, NULL), 0);
    assert_true(c.dim == 4096 && c.n_layers == 32 && c.n_heads == 32 && c.n_kv_heads == 32 &&
                c.ffn_dim == 11008 && c.ctx == 4096 && c.vocab_size == 32000 &&
                c.type == TENSOR_Q8_0);
    assert_int_equal(mkmodel_validate(&c, NULL), 0);
    assert_int_equal(mkmodel_preset("tinyllama-1.1b", &c, NULL), 0);
    assert_true(c.dim == 2048 && c.n_layers == 22 && c.n_heads == 32 && c.n_kv_heads == 4 &&
                c.ffn_dim == 5632 && c.ctx == 2048 && c.vocab_size == 32000);
    assert_int_equal(mkmodel_validate(&c, NULL), 0);
    assert_int_equal(mkmodel_preset("tiny", &c, NULL), 0);
    assert_true(c.dim == 256 && c.n_layers == 4 && c.n_heads == 8 && c.n_kv_heads == 4 &&
                c.type == TENSOR_F32 && c.vocab_path == NULL && c.out_std >= 0.4f);
    assert_int_equal(mkmodel_validate(&c, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_writer_disk_full),
        cmocka_unit_test(test_mkmodel_keys_and_shapes),
        cmocka_unit_test(test_mkmodel_deterministic),
        cmocka_unit_test(test_mkmodel_values),
        cmocka_unit_test(test_builtin_vocab),
        cmocka_unit_test(test_mkmodel_copies_vocab),
        cmocka_unit_test(test_mkmodel_validate),
        cmocka_unit_test(test_mkmodel_presets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
