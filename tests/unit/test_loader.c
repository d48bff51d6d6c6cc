/* test_loader.c - llorch-loader as a real process: the manifest describes the model and the
 * segment, chunks carry the file's bytes and are bounds-checked, Q8_0 matrices lie in the
 * layout this CPU's kernels prefer (or in GGUF rows with --layout rows) with digests of the
 * segment's bytes, malformed or unsupported requests get ERROR replies without harming the
 * loader, bad models are refused, and SIGINT or SIGTERM removes the segment. */
#include "proc_test.h"

#include <sodium.h>
#include <sys/mman.h>

#include "gguf.h"
#include "kernels.h"
#include "mkmodel.h"

#define Q8_MODEL_PATH "build/test-models/loader-layout-q8.gguf"

typedef struct fixture {
    char dir[256];
    char endpoint[300];
    char log_path[300];
    void *ctx;
    void *dealer;
    pid_t loader;
} fixture;

static fixture F;

/* Up to two extra arguments (NULL: none); env ("NAME=value") may be NULL. */
static void s_start_env(const char *model_path, const char *extra, const char *extra2,
                        const char *env)
{
    char *argv[] = {(char *)pt_bin("llorch-loader"), "-m", (char *)model_path, "--endpoint",
                    F.endpoint, (char *)extra, (char *)extra2, NULL};
    F.loader = pt_spawn(argv, F.log_path, env);
}

static void s_start(const char *model_path, const char *extra)
{
    s_start_env(model_path, extra, NULL, NULL);
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    pt_run_dir(F.dir);
    snprintf(F.endpoint, sizeof F.endpoint, "ipc://%s/loader", F.dir);
    snprintf(F.log_path, sizeof F.log_path, "%s/loader.log", F.dir);
    F.ctx = zmq_ctx_new();
    F.dealer = pt_socket(F.ctx, ZMQ_DEALER);
    assert_int_equal(zmq_connect(F.dealer, F.endpoint), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0, segments = 0;
    if (F.loader > 0) {
        rc = pt_stop(F.loader);
        if (rc != 0)
            pt_dump(F.log_path);
        segments = pt_segments_of(F.loader);
    }
    zmq_close(F.dealer);
    zmq_ctx_term(F.ctx);
    pt_rm_run_dir(F.dir);
    assert_int_equal(rc, 0);
    assert_int_equal(segments, 0);
    return 0;
}

static void s_ask(const wire_message *req, wire_msg *raw, wire_message *reply)
{
    assert_int_equal(wire_send_message(F.dealer, NULL, 0, req, 0, NULL), 0);
    if (pt_recv(F.dealer, raw, reply, 10000) < 0) {
        pt_dump(F.log_path);
        fail_msg("the loader did not answer %s", wire_type_name(req->type));
    }
}

/* The running loader's manifest (in m, decoded from raw: free both). */
static const wire_manifest *s_manifest(wire_msg *raw, wire_message *m)
{
    wire_message req = {.type = WIRE_MANIFEST_REQ, .manifest_req = {.worker_id = "test"}};
    s_ask(&req, raw, m);
    assert_int_equal(m->type, WIRE_MANIFEST);
    return &m->manifest;
}

static void s_expect_error_for(const wire_message *req, uint32_t code)
{
    wire_msg raw = {0};
    wire_message m = {0};
    s_ask(req, &raw, &m);
    assert_int_equal(m.type, WIRE_ERROR);
    if (m.error.code != code)
        fail_msg("ERROR %u (%s), expected %u", m.error.code, m.error.message, code);
    wire_message_free(&m);
    wire_msg_free(&raw);
}

static void test_manifest_and_chunks_match_the_file(void **state)
{
    (void)state;
    const char *path = test_shared_path("models/stories260K.gguf");
    s_start(path, "--progress");
    pt_wait_log(F.loader, F.log_path, "serving on", 30000);
    assert_true(pt_file_has(F.log_path, "copy: 100%"));
    assert_true(sodium_init() >= 0);
    llorch_error err;
    gguf_file *g = gguf_open(path, &err);
    assert_non_null(g);

    wire_msg raw = {0};
    wire_message m = {0};
    const wire_manifest *mf = s_manifest(&raw, &m);
    assert_int_equal(strlen(mf->model_id), 16);
    char host[256];
    assert_int_equal(proc_host_id(host, sizeof host, NULL), 0);
    assert_string_equal(mf->host_id, host);
    assert_int_equal(mf->config.n_layers, 5);
    assert_int_equal(mf->config.n_embd, 64);
    assert_int_equal(mf->config.n_kv_heads, 4);
    assert_int_equal(mf->tokenizer.n_tokens, 512);
    assert_int_equal(mf->tokenizer.bos_id, 1);
    assert_int_equal(mf->tokenizer.eos_id, 2);
    assert_true(mf->tokenizer.add_bos);
    assert_int_equal(mf->n_tensors, g->n_tensors);

    /* The segment holds every tensor at a page-aligned offset, byte for byte. */
    int fd = shm_open(mf->segment_name, O_RDONLY, 0);
    assert_true(fd >= 0);
    const uint8_t *seg = mmap(NULL, mf->segment_bytes, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    assert_true(seg != MAP_FAILED);
    for (uint32_t i = 0; i < mf->n_tensors; i++) {
        const wire_tensor_info *t = &mf->tensors[i];
        const gguf_tensor *gt = gguf_find_tensor(g, t->name);
        assert_non_null(gt);
        assert_int_equal(t->offset % 4096, 0);
        assert_int_equal(t->n_bytes, gt->n_bytes);
        assert_int_equal(t->type, gt->type);
        assert_memory_equal(seg + t->offset, gt->data, gt->n_bytes);
        uint8_t d[32];
        crypto_generichash(d, 32, gt->data, gt->n_bytes, NULL, 0);
        assert_memory_equal(d, t->digest, 32);
    }
    munmap((void *)seg, mf->segment_bytes);

    /* Chunks: a whole tensor in pieces of 1000 bytes; the last one is clamped. */
    const wire_tensor_info *t = &mf->tensors[1];
    const gguf_tensor *gt = gguf_find_tensor(g, t->name);
    for (uint64_t off = 0; off < t->n_bytes; off += 1000) {
        wire_msg craw = {0};
        wire_message c = {0};
        wire_message cr = {.type = WIRE_CHUNK_REQ,
                           .chunk_req = {.tensor = 1, .offset = off, .length = 1000}};
        s_ask(&cr, &craw, &c);
        assert_int_equal(c.type, WIRE_CHUNK);
        uint64_t want = t->n_bytes - off < 1000 ? t->n_bytes - off : 1000;
        assert_int_equal(c.chunk.length, want);
        assert_memory_equal(c.chunk.data, (const uint8_t *)gt->data + off, want);
        wire_message_free(&c);
        wire_msg_free(&craw);
    }
    /* At the very end: an empty chunk. */
    wire_msg craw = {0};
    wire_message c = {0};
    wire_message cr = {.type = WIRE_CHUNK_REQ,
                       .chunk_req = {.tensor = 1, .offset = t->n_bytes, .length = 10}};
    s_ask(&cr, &craw, &c);
    assert_int_equal(c.type, WIRE_CHUNK);
    assert_int_equal(c.chunk.length, 0);
    wire_message_free(&c);
    wire_msg_free(&craw);
    wire_message_free(&m);
    wire_msg_free(&raw);
    gguf_close(&g);
}

/* A generated Q8_0 model (written once). Its vocabulary is not a multiple of 16, so
 * token_embd and output fit no 16-row layout and stay in GGUF rows; every layer matrix
 * fits one. The FFN matrices (30848 x 128, 4.2 MB) are just over the loader's 4 MiB
 * step, so they are repacked in two steps of whole groups, the second a short one. */
static const char *s_q8_model(void)
{
    return test_q8_model(Q8_MODEL_PATH, "loader-layout", 30848, mkmodel_builtin_vocab_min() / 16 * 16 + 16 + 5);
}

/* Asks the running loader for its manifest and checks every tensor of the model at path
 * against the segment: a Q8_0 matrix that fits `want` is in it, every other tensor in
 * GGUF rows; each digest is of the segment's bytes; repacked bytes unpack to the file's,
 * the others are the file's; a chunk of a repacked tensor carries the segment's bytes.
 * Returns how many tensors are repacked. */
static uint32_t s_check_layouts(const char *path, enum weight_layout want)
{
    assert_true(sodium_init() >= 0);
    llorch_error err;
    gguf_file *g = gguf_open(path, &err);
    assert_non_null(g);
    wire_msg raw = {0};
    wire_message m = {0};
    const wire_manifest *mf = s_manifest(&raw, &m);
    int fd = shm_open(mf->segment_name, O_RDONLY, 0);
    assert_true(fd >= 0);
    const uint8_t *seg = mmap(NULL, mf->segment_bytes, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    assert_true(seg != MAP_FAILED);
    uint32_t n_repacked = 0, first_repacked = UINT32_MAX;
    for (uint32_t i = 0; i < mf->n_tensors; i++) {
        const wire_tensor_info *t = &mf->tensors[i];
        const gguf_tensor *gt = gguf_find_tensor(g, t->name);
        assert_non_null(gt);
        const int64_t rows = (int64_t)t->ne[1], cols = (int64_t)t->ne[0];
        const bool fits = t->type == TENSOR_Q8_0 && t->n_dims == 2 &&
                          weight_layout_fits(want, TENSOR_Q8_0, rows, cols);
        if (t->layout != (fits ? (uint32_t)want : WEIGHT_LAYOUT_ROWS))
            fail_msg("tensor %s: layout %u, expected %u", t->name, t->layout,
                     fits ? (unsigned)want : 0u);
        uint8_t d[32];
        crypto_generichash(d, 32, seg + t->offset, t->n_bytes, NULL, 0);
        assert_memory_equal(d, t->digest, 32);
        if (t->layout == WEIGHT_LAYOUT_ROWS) {
            assert_memory_equal(seg + t->offset, gt->data, gt->n_bytes);
            continue;
        }
        n_repacked++;
        if (first_repacked == UINT32_MAX)
            first_repacked = i;
        uint8_t *rows_back = malloc(t->n_bytes);
        assert_non_null(rows_back);
        kernel_unpack_rows((enum weight_layout)t->layout, seg + t->offset, rows_back, rows, cols);
        assert_memory_equal(rows_back, gt->data, gt->n_bytes);
        assert_true(memcmp(seg + t->offset, gt->data, gt->n_bytes) != 0);
        free(rows_back);
    }
    if (first_repacked != UINT32_MAX) {
        const wire_tensor_info *t = &mf->tensors[first_repacked];
        wire_msg craw = {0};
        wire_message c = {0};
        wire_message cr = {.type = WIRE_CHUNK_REQ,
                           .chunk_req = {.tensor = first_repacked, .offset = 0,
                                         .length = t->n_bytes}};
        s_ask(&cr, &craw, &c);
        assert_int_equal(c.type, WIRE_CHUNK);
        assert_int_equal(c.chunk.length, t->n_bytes);
        assert_memory_equal(c.chunk.data, seg + t->offset, t->n_bytes);
        wire_message_free(&c);
        wire_msg_free(&craw);
    }
    munmap((void *)seg, mf->segment_bytes);
    wire_message_free(&m);
    wire_msg_free(&raw);
    gguf_close(&g);
    return n_repacked;
}

/* By default the loader repacks for its CPU: with AVX-512 VNNI the Q8_0 matrices whose
 * rows are a multiple of 16 are in 16-row groups (and the log says how many); without it
 * everything stays in GGUF rows. */
static void test_q8_0_matrices_take_the_kernels_layout(void **state)
{
    (void)state;
    const char *path = s_q8_model();
    const bool avx512 = kernel_isa_available(KERNEL_ISA_AVX512);
    /* LLORCH_ISA pins the loader's kernels to the best this CPU has, whatever the test's
     * environment says. */
    s_start_env(path, NULL, NULL, avx512 ? "LLORCH_ISA=avx512" : NULL);
    pt_wait_log(F.loader, F.log_path, "serving on", 30000);
    const uint32_t n = s_check_layouts(path, avx512 ? WEIGHT_LAYOUT_Q8_0_R16 : WEIGHT_LAYOUT_ROWS);
    if (avx512) {
        assert_int_equal(n, 2 * 7); /* q, k, v, output, gate, up, down per layer */
        assert_true(pt_file_has(F.log_path, "repacked 14 Q8_0 matrices into q8_0_r16"));
    } else {
        assert_int_equal(n, 0);
        assert_false(pt_file_has(F.log_path, "repacked"));
    }
}

/* --layout rows: every tensor is the file's bytes, even where AVX-512 would repack. */
static void test_layout_rows_keeps_the_gguf_bytes(void **state)
{
    (void)state;
    const char *path = s_q8_model();
    s_start_env(path, "--layout", "rows",
                kernel_isa_available(KERNEL_ISA_AVX512) ? "LLORCH_ISA=avx512" : NULL);
    pt_wait_log(F.loader, F.log_path, "serving on", 30000);
    assert_int_equal(s_check_layouts(path, WEIGHT_LAYOUT_ROWS), 0);
    assert_true(pt_file_has(F.log_path, "GGUF row order (--layout rows)"));
}

static void test_bad_requests_get_errors_and_the_loader_goes_on(void **state)
{
    (void)state;
    s_start(test_shared_path("models/stories260K.gguf"), NULL);
    pt_wait_log(F.loader, F.log_path, "serving on", 30000);
    wire_message r1 = {.type = WIRE_CHUNK_REQ,
                       .chunk_req = {.tensor = 9999, .offset = 0, .length = 10}};
    s_expect_error_for(&r1, WIRE_ERR_NOT_FOUND);
    wire_message r2 = {.type = WIRE_CHUNK_REQ,
                       .chunk_req = {.tensor = 0, .offset = 1ull << 40, .length = 10}};
    s_expect_error_for(&r2, WIRE_ERR_INVALID);
    wire_message r3 = {.type = WIRE_SESSION_FREE, .session_free = {.session_id = 1}};
    s_expect_error_for(&r3, WIRE_ERR_UNSUPPORTED);

    /* Raw frames: not msgpack; a huge claimed map; a wrong version; too many frames; an
     * over-long chunk request. Each gets an ERROR reply. */
    static const struct {
        const char *bytes;
        size_t n;
        uint32_t code;
    } raw_cases[] = {
        {"garbage", 7, WIRE_ERR_MALFORMED},
        {"\xdf\xff\xff\xff\xff\x01", 6, WIRE_ERR_MALFORMED},
        {"\x82\xa1v\x09\xa1t\xa5stats", 12, WIRE_ERR_VERSION},
        {"\x82\xa1v\x02\xa1t\xa4nope", 11, WIRE_ERR_UNSUPPORTED},
        {"\x85\xa1v\x02\xa1t\xa9""chunk_req\xa6tensor\x00\xa6offset\x00\xa6length\xce\x40\x00\x00\x00",
         44, WIRE_ERR_MALFORMED},
        {"", 0, WIRE_ERR_MALFORMED},
    };
    for (size_t i = 0; i < sizeof raw_cases / sizeof raw_cases[0]; i++) {
        assert_int_equal(zmq_send(F.dealer, raw_cases[i].bytes, raw_cases[i].n, 0),
                         (int)raw_cases[i].n);
        wire_msg raw = {0};
        wire_message m = {0};
        if (pt_recv(F.dealer, &raw, &m, 10000) < 0)
            fail_msg("no reply to raw case %zu", i);
        assert_int_equal(m.type, WIRE_ERROR);
        if (m.error.code != raw_cases[i].code)
            fail_msg("raw case %zu: ERROR %u (%s), expected %u", i, m.error.code,
                     m.error.message, raw_cases[i].code);
        wire_message_free(&m);
        wire_msg_free(&raw);
    }
    for (int i = 0; i < 5; i++)
        zmq_send(F.dealer, "x", 1, ZMQ_SNDMORE);
    zmq_send(F.dealer, "x", 1, 0);
    {
        wire_msg raw = {0};
        wire_message m = {0};
        assert_int_equal(pt_recv(F.dealer, &raw, &m, 10000), 0);
        assert_int_equal(m.type, WIRE_ERROR);
        assert_int_equal(m.error.code, WIRE_ERR_MALFORMED);
        wire_message_free(&m);
        wire_msg_free(&raw);
    }
    /* Still serving, and counting. */
    assert_true(pt_alive(F.loader));
    wire_msg raw = {0};
    wire_message m = {0};
    wire_message st = {.type = WIRE_STATS_REQ};
    s_ask(&st, &raw, &m);
    assert_int_equal(m.type, WIRE_STATS);
    bool found = false;
    for (uint32_t i = 0; i < m.stats.n_counters; i++)
        if (!strcmp(m.stats.counters[i].name, "errors")) {
            found = true;
            assert_true(m.stats.counters[i].value >= 10);
        }
    assert_true(found);
    wire_message_free(&m);
    wire_msg_free(&raw);
    wire_message req = {.type = WIRE_MANIFEST_REQ, .manifest_req = {.worker_id = ""}};
    s_ask(&req, &raw, &m);
    assert_int_equal(m.type, WIRE_MANIFEST);
    wire_message_free(&m);
    wire_msg_free(&raw);
}

static void test_sigint_removes_the_segment(void **state)
{
    (void)state;
    s_start(test_shared_path("models/stories260K.gguf"), NULL);
    pt_wait_log(F.loader, F.log_path, "serving on", 30000);
    assert_int_equal(pt_segments_of(F.loader), 1);
    kill(F.loader, SIGINT);
    assert_int_equal(pt_wait_exit(F.loader, 10000), 0);
    assert_int_equal(pt_segments_of(F.loader), 0);
    assert_true(pt_file_has(F.log_path, "removed"));
    F.loader = 0;
}

static void test_bad_models_and_options_are_refused(void **state)
{
    (void)state;
    /* No such file; a vocabulary without tensors; no endpoint. */
    s_start("/nonexistent/model.gguf", NULL);
    assert_int_equal(pt_wait_exit(F.loader, 10000), 1);
    assert_true(pt_file_has(F.log_path, "/nonexistent/model.gguf"));
    assert_int_equal(pt_segments_of(F.loader), 0);
    s_start(test_shared_path("vocab/ggml-vocab-llama-spm.gguf"), NULL);
    assert_int_equal(pt_wait_exit(F.loader, 10000), 1);
    assert_int_equal(pt_segments_of(F.loader), 0);
    char *argv[] = {(char *)pt_bin("llorch-loader"), "-m", "x.gguf", NULL};
    assert_int_equal(pt_wait_exit(pt_spawn(argv, F.log_path, NULL), 5000), 2);
    char *argv2[] = {(char *)pt_bin("llorch-loader"), "--curve-secret", "k", "-m", "x",
                     "--endpoint", "ipc:///tmp/x", NULL};
    assert_int_equal(pt_wait_exit(pt_spawn(argv2, F.log_path, NULL), 5000), 2);
    assert_true(pt_file_has(F.log_path, "--curve-secret and --allow go together"));
    char *argv3[] = {(char *)pt_bin("llorch-loader"), "-m", "x", "--endpoint", "ipc:///tmp/x",
                     "--layout", "tiles", NULL};
    assert_int_equal(pt_wait_exit(pt_spawn(argv3, F.log_path, NULL), 5000), 2);
    assert_true(pt_file_has(F.log_path, "--layout 'tiles': give auto or rows"));
    char *argv4[] = {(char *)pt_bin("llorch-loader"), "--help", NULL};
    assert_int_equal(pt_wait_exit(pt_spawn(argv4, F.log_path, NULL), 5000), 0);
    assert_true(pt_file_has(F.log_path, "--layout auto|rows"));
    F.loader = 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    pt_init(argv[0]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_manifest_and_chunks_match_the_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_q8_0_matrices_take_the_kernels_layout, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_layout_rows_keeps_the_gguf_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests_get_errors_and_the_loader_goes_on,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigint_removes_the_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_models_and_options_are_refused, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
