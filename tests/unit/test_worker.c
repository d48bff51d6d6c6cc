/* test_worker.c - llorch-loader and llorch-worker as real processes on stories260K, driven by
 * a stand-in router: logits equal the in-process stage's for one worker, two chained workers
 * and a fetching worker, and on a Q8_0 model for workers mapping or fetching matrices in
 * the loader's layout with kernels that prefer it or not; tampered chunks are refused; a
 * session over the KV budget gets ERROR no_memory (chosen by the stage's return value,
 * never its message); malformed frames, a lost router and a lost next hop are survived;
 * SIGTERM leaves no segment and no process behind. */
#include "proc_test.h"

#include <fcntl.h>
#include <math.h>
#include <sys/mman.h>

#include "../../worker/worker.h"
#include "kernels.h"
#include "kv_cache.h"
#include "mkmodel.h"
#include "model.h"
#include "stage.h"

#define N_LAYERS 5
#define DIM 64
#define VOCAB 512
#define Q8_MODEL_PATH "build/test-models/worker-layout-q8.gguf"

typedef struct fixture {
    char dir[256];
    char loader_ep[300], control_ep[300], results_ep[300];
    char log_path[8][300];
    void *ctx;
    pt_router router;
    pid_t loader;
    pid_t workers[4];
    int n_workers;
} fixture;

static fixture F;

static void s_start_loader(const char *model_path, const char *env)
{
    const char *dir = F.dir;
    snprintf(F.log_path[0], sizeof F.log_path[0], "%s/loader.log", dir);
    char *argv[] = {(char *)pt_bin("llorch-loader"), "-m", (char *)model_path, "--endpoint",
                    F.loader_ep, NULL};
    F.loader = pt_spawn(argv, F.log_path[0], env);
    pt_wait_log(F.loader, F.log_path[0], "serving on", 60000);
}

/* Starts a worker for layers (e.g. "0:5") binding ipc://dir/w<k>; extra args appended; env
 * ("NAME=value") may be NULL. */
static pid_t s_start_worker_env(const char *layers, const char *const *extra, int n_extra,
                                const char *env)
{
    int k = F.n_workers;
    char bind[300], *argv[32];
    snprintf(bind, sizeof bind, "ipc://%s/w%d", F.dir, k);
    char log[300];
    snprintf(log, sizeof log, "%s/worker%d.log", F.dir, k);
    memcpy(F.log_path[1 + k], log, sizeof log);
    int n = 0;
    argv[n++] = (char *)pt_bin("llorch-worker");
    argv[n++] = "--loader";
    argv[n++] = F.loader_ep;
    argv[n++] = "--router";
    argv[n++] = F.control_ep;
    argv[n++] = "--layers";
    argv[n++] = (char *)layers;
    argv[n++] = "--bind";
    argv[n++] = bind;
    argv[n++] = "--threads";
    argv[n++] = "1";
    for (int i = 0; i < n_extra; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    F.workers[F.n_workers++] = pt_spawn(argv, F.log_path[1 + k], env);
    return F.workers[k];
}

static pid_t s_start_worker(const char *layers, const char *const *extra, int n_extra)
{
    return s_start_worker_env(layers, extra, n_extra, NULL);
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    pt_run_dir(F.dir);
    snprintf(F.loader_ep, sizeof F.loader_ep, "ipc://%s/loader", F.dir);
    snprintf(F.control_ep, sizeof F.control_ep, "ipc://%s/control", F.dir);
    snprintf(F.results_ep, sizeof F.results_ep, "ipc://%s/results", F.dir);
    F.ctx = zmq_ctx_new();
    pt_router_open(&F.router, F.ctx, F.control_ep, F.results_ep);
    return 0;
}

/* The kernel variant the test process started with; a test that switches restores it. */
static kernel_isa s_default_isa;

/* Stops every process with SIGTERM: each must exit 0 and the loader's segment be gone.
 * Everything is stopped before a failure is reported, so a failed test leaves nothing. */
static int teardown(void **state)
{
    (void)state;
    kernel_isa_select(s_default_isa, NULL);
    char problem[256] = "";
    for (int i = 0; i < F.n_workers; i++)
        if (F.workers[i] > 0) {
            int rc = pt_stop(F.workers[i]);
            if (rc != 0) {
                pt_dump(F.log_path[1 + i]);
                snprintf(problem, sizeof problem, "worker %d exited %d after SIGTERM", i, rc);
            }
        }
    if (F.loader > 0) {
        int rc = pt_stop(F.loader);
        if (rc != 0) {
            pt_dump(F.log_path[0]);
            snprintf(problem, sizeof problem, "loader exited %d after SIGTERM", rc);
        } else if (pt_segments_of(F.loader) != 0) {
            snprintf(problem, sizeof problem, "the loader left its segment behind");
        }
    }
    pt_router_close(&F.router);
    zmq_ctx_term(F.ctx);
    pt_rm_run_dir(F.dir);
    if (problem[0])
        fail_msg("%s", problem);
    return 0;
}

/* ---- the in-process reference ---- */
static model *s_ref_model;

static stage *s_ref_stage_of(model *m)
{
    llorch_error err;
    stage_opts o = {.threads = 1, .max_batch_rows = 64};
    stage *s = stage_new(m, 0, (int)m->config.n_layers, &o, &err);
    if (!s)
        fail_msg("%s", err.msg);
    return s;
}

/* stories260K, opened on first use. */
static model *s_stories(void)
{
    llorch_error err;
    if (!s_ref_model) {
        s_ref_model = model_open(test_shared_path("models/stories260K.gguf"), &err);
        if (!s_ref_model)
            fail_msg("%s", err.msg);
    }
    return s_ref_model;
}

static stage *s_ref_stage(void)
{
    return s_ref_stage_of(s_stories());
}

static void s_ref_forward(stage *s, const wire_row *rows, uint32_t n, float *out)
{
    stage_row sr[64];
    for (uint32_t i = 0; i < n; i++)
        sr[i] = (stage_row){.seq_id = rows[i].session_id, .pos = (int32_t)rows[i].pos,
                            .token = rows[i].token, .want_logits = rows[i].want_logits};
    llorch_error err;
    if (stage_forward(s, sr, (int)n, NULL, out, &err) < 0)
        fail_msg("%s", err.msg);
}

/* Receives LOGITS for batch_id and checks them against the reference's n_want rows of
 * n_vocab: no element further than tolerance away. */
static void s_expect_logits_of(uint64_t batch_id, const float *ref, uint32_t n_want,
                               uint32_t n_vocab, float tolerance)
{
    wire_msg raw = {0};
    wire_message m = {0};
    if (pt_recv(F.router.results, &raw, &m, 20000) < 0) {
        for (int i = 0; i <= F.n_workers; i++)
            pt_dump(F.log_path[i]);
        fail_msg("no result for batch %llu", (unsigned long long)batch_id);
    }
    if (m.type == WIRE_ERROR)
        fail_msg("ERROR instead of logits: %s", m.error.message);
    assert_int_equal(m.type, WIRE_LOGITS);
    assert_int_equal(m.logits.batch_id, batch_id);
    assert_int_equal(m.logits.n_vocab, n_vocab);
    assert_int_equal(m.logits.n_rows, n_want);
    float max_diff = 0;
    for (size_t i = 0; i < (size_t)n_want * n_vocab; i++)
        max_diff = fmaxf(max_diff, fabsf(m.logits.logits[i] - ref[i]));
    if (max_diff > tolerance)
        fail_msg("batch %llu: logits differ by up to %g from the reference (tolerance %g)",
                 (unsigned long long)batch_id, max_diff, tolerance);
    wire_message_free(&m);
    wire_msg_free(&raw);
}

static void s_expect_logits(uint64_t batch_id, const float *ref, uint32_t n_want)
{
    s_expect_logits_of(batch_id, ref, n_want, VOCAB, 1e-5f);
}

static void s_expect_error(uint32_t code, uint64_t batch_id)
{
    wire_msg raw = {0};
    wire_message m = {0};
    assert_int_equal(pt_recv(F.router.results, &raw, &m, 20000), 0);
    assert_int_equal(m.type, WIRE_ERROR);
    if (m.error.code != code)
        fail_msg("ERROR %u (%s), expected %u", m.error.code, m.error.message, code);
    assert_int_equal(m.error.batch_id, batch_id);
    wire_message_free(&m);
    wire_msg_free(&raw);
}

static int s_argmax(const float *v, uint32_t n)
{
    int best = 0;
    for (int i = 1; i < (int)n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* A prompt of 4 tokens, then 3 greedy steps, through the pipeline whose first worker is
 * index `first` and route `route` (ending with results); compared with the in-process
 * stage over all of ref_model's layers (its vocabulary holds the prompt's ids) within
 * tolerance. */
static void s_generate_and_compare_on(model *ref_model, int first, const char *const *route,
                                      uint32_t n_hops, uint64_t session, float tolerance)
{
    const uint32_t dim = ref_model->config.dim, n_vocab = ref_model->config.vocab_size;
    stage *ref = s_ref_stage_of(ref_model);
    float *ref_out = malloc(4 * (size_t)n_vocab * sizeof *ref_out);
    assert_non_null(ref_out);
    wire_row rows[4] = {{session, 0, 1, false}, {session, 1, 403, false},
                        {session, 2, 407, false}, {session, 3, 261, true}};
    s_ref_forward(ref, rows, 4, ref_out);
    pt_send_forward(F.ctx, F.router.worker_endpoint[first], 1, rows, 4, dim, route, n_hops);
    s_expect_logits_of(1, ref_out, 1, n_vocab, tolerance);
    for (uint32_t step = 0; step < 3; step++) {
        wire_row r = {session, 4 + step, s_argmax(ref_out, n_vocab), true};
        s_ref_forward(ref, &r, 1, ref_out);
        pt_send_forward(F.ctx, F.router.worker_endpoint[first], 2 + step, &r, 1, dim, route,
                        n_hops);
        s_expect_logits_of(2 + step, ref_out, 1, n_vocab, tolerance);
    }
    free(ref_out);
    stage_free(&ref);
}

static void s_generate_and_compare(int first, const char *const *route, uint32_t n_hops,
                                   uint64_t session)
{
    s_generate_and_compare_on(s_stories(), first, route, n_hops, session, 1e-5f);
}

static void test_one_worker_matches_in_process(void **state)
{
    (void)state;
    s_start_loader(test_shared_path("models/stories260K.gguf"), NULL);
    s_start_worker("0:5", NULL, 0);
    int w = pt_router_accept(&F.router, 30000);
    pt_wait_log(F.workers[0], F.log_path[1], "zero copy", 10000);
    const char *route[] = {F.results_ep};
    s_generate_and_compare(w, route, 1, 7);
    /* SESSION_FREE, then the same session from position 0 again. */
    wire_message fr = {.type = WIRE_SESSION_FREE, .session_free = {.session_id = 7}};
    assert_int_equal(wire_send_message(F.router.control, F.router.worker_identity[w],
                                       F.router.worker_identity_bytes[w], &fr, 0, NULL), 0);
    /* SESSION_FREE travels on the control link, FORWARD on another socket: no order between
     * them, so wait until a heartbeat reports the session gone before reusing its id. */
    bool freed = false;
    for (int64_t end = proc_now_ms() + 10000; !freed && proc_now_ms() < end;) {
        wire_msg raw = {0};
        wire_message m = {0};
        if (pt_recv(F.router.control, &raw, &m, 1000) < 0)
            continue;
        /* Heartbeats from before the batches also say 0 sessions: skip those. */
        if (m.type == WIRE_HEARTBEAT && m.heartbeat.batches >= 4)
            freed = m.heartbeat.n_sessions == 0;
        wire_message_free(&m);
        wire_msg_free(&raw);
    }
    assert_true(freed);
    s_generate_and_compare(w, route, 1, 7);
}

static void test_two_workers_chained(void **state)
{
    (void)state;
    s_start_loader(test_shared_path("models/stories260K.gguf"), NULL);
    s_start_worker("0:2", NULL, 0);
    s_start_worker("2:5", NULL, 0);
    int a = pt_router_accept(&F.router, 30000);
    int b = pt_router_accept(&F.router, 30000);
    int first = F.router.worker_first[a] == 0 ? a : b;
    int second = first == a ? b : a;
    const char *route[] = {F.router.worker_endpoint[second], F.results_ep};
    s_generate_and_compare(first, route, 2, 11);

    /* Two sessions in one batch, both wanting logits. */
    stage *ref = s_ref_stage();
    static float ref_out[2 * VOCAB];
    wire_row rows[2] = {{21, 0, 1, true}, {22, 0, 300, true}};
    s_ref_forward(ref, rows, 2, ref_out);
    pt_send_forward(F.ctx, F.router.worker_endpoint[first], 9, rows, 2, DIM, route, 2);
    s_expect_logits(9, ref_out, 2);
    stage_free(&ref);

    /* The next hop (process 1, layers 2:5) goes away: the first worker notices. */
    assert_int_equal(pt_stop(F.workers[1]), 0);
    F.workers[1] = 0;
    pt_wait_log(F.workers[0], F.log_path[1], "disconnected", 10000);
}

static void test_fetch_verifies_and_serves(void **state)
{
    (void)state;
    s_start_loader(test_shared_path("models/stories260K.gguf"), NULL);
    const char *extra[] = {"--fetch"};
    s_start_worker("0:5", extra, 1);
    int w = pt_router_accept(&F.router, 30000);
    assert_true(pt_file_has(F.log_path[1], "fetched and verified"));
    const char *route[] = {F.results_ep};
    s_generate_and_compare(w, route, 1, 3);
}

/* A generated Q8_0 model whose matrices all fit the 16-row layout (written once). */
static const char *s_q8_model_path(void)
{
    return test_q8_model(Q8_MODEL_PATH, "worker-layout", 352, (mkmodel_builtin_vocab_min() + 15) / 16 * 16);
}

/* The Q8_0 model in process: placed (model_place_weights repacks it for the active
 * kernels, as the loader does) or read from the file in GGUF rows. Free with model_free. */
static model *s_q8_model(bool placed)
{
    llorch_error err;
    model *m = model_open(s_q8_model_path(), &err);
    if (!m)
        fail_msg("%s", err.msg);
    if (placed && model_place_weights(m, &err) < 0)
        fail_msg("%s", err.msg);
    return m;
}

/* Switches this process's kernels (teardown restores them). */
static void s_select(kernel_isa isa)
{
    llorch_error err;
    if (kernel_isa_select(isa, &err) < 0)
        fail_msg("%s", err.msg);
}

/* Workers mapping a Q8_0 segment compute in the loader's layout: with AVX-512 kernels in
 * the 16-row groups, as in-process placed weights do; with AVX2 kernels (no AVX-512 VNNI)
 * in the same groups, correctly, after warning that they are slower there. Without
 * AVX-512 on this CPU everything is in GGUF rows and there is nothing to warn about. */
static void test_q8_0_mapped_segment_keeps_the_loader_layout(void **state)
{
    (void)state;
    const bool avx512 = kernel_isa_available(KERNEL_ISA_AVX512);
    /* pinned, so that the environment of the test cannot choose other kernels */
    const char *pin = avx512 ? "LLORCH_ISA=avx512" : NULL;
    if (avx512)
        s_select(KERNEL_ISA_AVX512);
    model *ref = s_q8_model(true);
    s_start_loader(s_q8_model_path(), pin);
    s_start_worker_env("0:2", NULL, 0, pin);
    int w = pt_router_accept(&F.router, 30000);
    pt_wait_log(F.workers[0], F.log_path[1], "zero copy", 10000);
    assert_false(pt_file_has(F.log_path[1], "only slower"));
    const char *route[] = {F.results_ep};
    s_generate_and_compare_on(ref, w, route, 1, 5, 0.0f);
    if (avx512) {
        s_start_worker_env("0:2", NULL, 0, "LLORCH_ISA=avx2");
        int w2 = pt_router_accept(&F.router, 30000);
        pt_wait_log(F.workers[1], F.log_path[2], "zero copy", 10000);
        assert_true(pt_file_has(F.log_path[2], "16 matrices are in layout q8_0_r16, but this "
                                               "CPU's avx2 kernels are faster on rows"));
        s_select(KERNEL_ISA_AVX2);
        s_generate_and_compare_on(ref, w2, route, 1, 6, 0.0f);
    }
    model_free(&ref);
}

/* Fetching workers keep a private copy: one with AVX-512 kernels keeps the 16-row groups
 * and computes as in-process placed weights do; one with AVX2 kernels converts them back
 * to GGUF rows after the digest check and computes as an in-process AVX2 run from the
 * file does. */
static void test_q8_0_fetched_matrices_take_the_worker_layout(void **state)
{
    (void)state;
    if (!kernel_isa_available(KERNEL_ISA_AVX2))
        skip();
    const bool avx512 = kernel_isa_available(KERNEL_ISA_AVX512);
    const char *pin = avx512 ? "LLORCH_ISA=avx512" : "LLORCH_ISA=avx2";
    s_select(avx512 ? KERNEL_ISA_AVX512 : KERNEL_ISA_AVX2);
    model *placed = s_q8_model(true), *rows = s_q8_model(false);
    s_start_loader(s_q8_model_path(), pin);
    const char *fetch[] = {"--fetch"};
    s_start_worker_env("0:2", fetch, 1, pin);
    int w = pt_router_accept(&F.router, 30000);
    assert_true(pt_file_has(F.log_path[1], "fetched and verified"));
    assert_false(pt_file_has(F.log_path[1], "converted"));
    const char *route[] = {F.results_ep};
    s_generate_and_compare_on(placed, w, route, 1, 5, 0.0f);

    s_start_worker_env("0:2", fetch, 1, "LLORCH_ISA=avx2");
    int w2 = pt_router_accept(&F.router, 30000);
    assert_true(pt_file_has(F.log_path[2], "fetched and verified"));
    assert_int_equal(pt_file_has(F.log_path[2], "converted 16 fetched matrices from q8_0_r16 "
                                                "to rows"), avx512);
    s_select(KERNEL_ISA_AVX2);
    s_generate_and_compare_on(rows, w2, route, 1, 6, 0.0f);
    model_free(&placed);
    model_free(&rows);
}

/* The other way: a loader that keeps GGUF rows (a CPU without AVX-512, here pinned to
 * AVX2) and a worker with AVX-512, which repacks what it fetched after the digest check
 * and then serves exactly the in-process (repacked) output. */
static void test_q8_0_fetched_rows_are_repacked_for_avx512(void **state)
{
    (void)state;
    if (!kernel_isa_available(KERNEL_ISA_AVX512))
        skip();
    s_select(KERNEL_ISA_AVX512);
    model *placed = s_q8_model(true);
    s_start_loader(s_q8_model_path(), "LLORCH_ISA=avx2");
    const char *fetch[] = {"--fetch"};
    s_start_worker_env("0:2", fetch, 1, "LLORCH_ISA=avx512");
    int w = pt_router_accept(&F.router, 30000);
    assert_true(pt_file_has(F.log_path[1], "fetched and verified"));
    assert_true(pt_file_has(F.log_path[1], "converted 16 fetched matrices from rows to q8_0_r16"));
    const char *route[] = {F.results_ep};
    s_generate_and_compare_on(placed, w, route, 1, 5, 0.0f);
    model_free(&placed);
}

static void test_tampered_chunk_is_refused(void **state)
{
    (void)state;
    s_start_loader(test_shared_path("models/stories260K.gguf"),
                   "LLORCH_LOADER_TAMPER=blk.1.attn_q.weight");
    const char *extra[] = {"--fetch"};
    pid_t w = s_start_worker("0:5", extra, 1);
    int rc = pt_wait_exit(w, 30000);
    F.workers[0] = 0;
    if (rc != 1)
        pt_dump(F.log_path[1]);
    assert_int_equal(rc, 1);
    assert_true(pt_file_has(F.log_path[1], "blk.1.attn_q.weight"));
    assert_true(pt_file_has(F.log_path[1], "digest"));
    assert_true(pt_file_has(F.log_path[1], "refusing to serve"));
    /* A worker whose range does not include the tampered tensor serves. */
    s_start_worker("2:5", extra, 1);
    pt_router_accept(&F.router, 30000);
}

/* The loader's segment name, from its log line "... in segment /llorch-... (". */
static void s_segment_name(char *out, size_t n)
{
    FILE *f = fopen(F.log_path[0], "r");
    assert_non_null(f);
    char line[1024];
    out[0] = 0;
    while (fgets(line, sizeof line, f)) {
        const char *at = strstr(line, " in segment /");
        if (at)
            snprintf(out, n, "%.*s", (int)strcspn(at + 12, " \n"), at + 12);
    }
    fclose(f);
    assert_true(out[0] == '/');
}

/* A segment changed after loading: a worker with --verify refuses to serve it, naming
 * the tensor. */
static void test_verify_refuses_a_changed_segment(void **state)
{
    (void)state;
    s_start_loader(test_shared_path("models/stories260K.gguf"), NULL);
    char name[256];
    s_segment_name(name, sizeof name);
    const char *verify[] = {"--verify"};
    pid_t w = s_start_worker("0:5", verify, 1);
    pt_router_accept(&F.router, 30000);
    assert_true(pt_file_has(F.log_path[1], "verified"));
    assert_int_equal(pt_stop(w), 0);
    F.workers[0] = 0;

    int fd = shm_open(name, O_RDWR, 0);
    assert_true(fd >= 0);
    uint8_t byte;
    assert_int_equal(pread(fd, &byte, 1, 0), 1); /* the first tensor starts at offset 0 */
    byte ^= 0x5a;
    assert_int_equal(pwrite(fd, &byte, 1, 0), 1);
    close(fd);
    w = s_start_worker("0:5", verify, 1);
    const int rc = pt_wait_exit(w, 30000);
    F.workers[1] = 0;
    if (rc != 1)
        pt_dump(F.log_path[2]);
    assert_int_equal(rc, 1);
    assert_true(pt_file_has(F.log_path[2], "do not match the manifest's BLAKE2b-256 digest"));
    assert_true(pt_file_has(F.log_path[2], "refusing to serve"));
}

static void test_kv_budget_refusal_is_an_error_reply(void **state)
{
    (void)state;
    s_start_loader(test_shared_path("models/stories260K.gguf"), NULL);
    /* One block of 32 positions: 5 layers x 2 x 32 floats x 4 bytes x 32 = 40960 bytes. */
    const char *extra[] = {"--kv-budget", "40K"};
    s_start_worker("0:5", extra, 2);
    int w = pt_router_accept(&F.router, 30000);
    const char *route[] = {F.results_ep};
    wire_row rows[40];
    for (uint32_t i = 0; i < 40; i++)
        rows[i] = (wire_row){5, i, (int32_t)(10 + i), i == 39};
    pt_send_forward(F.ctx, F.router.worker_endpoint[w], 1, rows, 40, DIM, route, 1);
    s_expect_error(WIRE_ERR_NO_MEMORY, 1);
    /* The worker goes on: a session that fits is served. */
    s_generate_and_compare(w, route, 1, 6);
    assert_true(pt_alive(F.workers[0]));
}

/* The worker's ERROR code comes from stage_forward's return value. Real stage failures on
 * stories260K: a full KV budget and full sequence slots are no_memory, bad rows invalid. A
 * message that mentions the kv cache does not make a failure no_memory, and a no_memory
 * failure needs no such words: text matching would fail here. */
static void test_stage_failure_kind_picks_the_wire_code(void **state)
{
    (void)state;
    assert_int_equal(worker_stage_error_code(LLORCH_ERR_NO_MEMORY), WIRE_ERR_NO_MEMORY);
    assert_int_equal(worker_stage_error_code(-1), WIRE_ERR_INVALID);
    llorch_error err;
    int rc = llorch_error_set(&err, "sequence 7: kv cache position %d follows nothing", 9);
    assert_int_equal(worker_stage_error_code(rc), WIRE_ERR_INVALID);

    stage *ref = s_ref_stage(); /* opens the model */
    stage_free(&ref);
    const size_t block = kv_cache_bytes_per_position(N_LAYERS,
                                                     (int)s_ref_model->config.kv_dim, KV_TYPE_F32) *
                         KV_BLOCK_POSITIONS;
    stage_opts o = {.threads = 1, .max_batch_rows = 64, .max_seqs = 2,
                    .kv_budget_bytes = 2 * block};
    stage *s = stage_new(s_ref_model, 0, N_LAYERS, &o, &err);
    if (!s)
        fail_msg("%s", err.msg);
    static float out[64 * VOCAB];
    stage_row rows[40];
    for (int i = 0; i < 40; i++)
        rows[i] = (stage_row){.seq_id = 1, .pos = i, .token = 10 + i, .want_logits = i == 39};
    rc = stage_forward(s, rows, 40, NULL, out, &err); /* 2 blocks: the whole budget */
    assert_int_equal(rc, 1);
    stage_row next = {.seq_id = 2, .pos = 0, .token = 1, .want_logits = true};
    rc = stage_forward(s, &next, 1, NULL, out, &err);
    assert_int_equal(worker_stage_error_code(rc), WIRE_ERR_NO_MEMORY);
    assert_int_equal(stage_free_seq(s, 1), 1);
    stage_row a = {3, 0, 1, true}, b = {4, 0, 1, true}, c = {5, 0, 1, true};
    assert_int_equal(stage_forward(s, &a, 1, NULL, out, &err), 1);
    assert_int_equal(stage_forward(s, &b, 1, NULL, out, &err), 1);
    rc = stage_forward(s, &c, 1, NULL, out, &err); /* both sequence slots taken */
    assert_int_equal(worker_stage_error_code(rc), WIRE_ERR_NO_MEMORY);
    stage_row bad_token = {3, 1, VOCAB + 5, true}, gap = {3, 9, 1, true};
    rc = stage_forward(s, &bad_token, 1, NULL, out, &err);
    assert_int_equal(worker_stage_error_code(rc), WIRE_ERR_INVALID);
    rc = stage_forward(s, &gap, 1, NULL, out, &err);
    assert_int_equal(worker_stage_error_code(rc), WIRE_ERR_INVALID);
    stage_free(&s);
}

static void test_malformed_frames_never_crash_the_worker(void **state)
{
    (void)state;
    s_start_loader(test_shared_path("models/stories260K.gguf"), NULL);
    s_start_worker("0:5", NULL, 0);
    int w = pt_router_accept(&F.router, 30000);
    void *push = pt_socket(F.ctx, ZMQ_PUSH);
    int linger = 2000;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(push, F.router.worker_endpoint[w]), 0);
    /* Not msgpack; a map claiming 2^32-1 entries; five frames; an empty frame. */
    zmq_send(push, "garbage", 7, 0);
    zmq_send(push, "\xdf\xff\xff\xff\xff\x01", 6, 0);
    for (int i = 0; i < 4; i++)
        zmq_send(push, "x", 1, ZMQ_SNDMORE);
    zmq_send(push, "x", 1, 0);
    zmq_send(push, "", 0, 0);
    /* Well-formed messages that do not belong on this socket. */
    wire_message hb = {.type = WIRE_HEARTBEAT, .heartbeat = {.sender_id = "x", .seq = 1}};
    assert_int_equal(wire_send_message(push, NULL, 0, &hb, 0, NULL), 0);
    zmq_close(push);
    const char *route[] = {F.results_ep};
    /* Wrong hidden_dim: ERROR invalid to the results endpoint. */
    wire_row r = {1, 0, 1, true};
    pt_send_forward(F.ctx, F.router.worker_endpoint[w], 77, &r, 1, DIM + 1, route, 1);
    s_expect_error(WIRE_ERR_INVALID, 77);
    /* A token outside the vocabulary, a position that skips ahead. */
    r = (wire_row){1, 0, VOCAB + 5, true};
    pt_send_forward(F.ctx, F.router.worker_endpoint[w], 78, &r, 1, DIM, route, 1);
    s_expect_error(WIRE_ERR_INVALID, 78);
    r = (wire_row){1, 9, 1, true};
    pt_send_forward(F.ctx, F.router.worker_endpoint[w], 79, &r, 1, DIM, route, 1);
    s_expect_error(WIRE_ERR_INVALID, 79);
    assert_true(pt_alive(F.workers[0]));
    s_generate_and_compare(w, route, 1, 2);
    assert_true(pt_file_has(F.log_path[1], "dropped a message"));
    assert_true(pt_file_has(F.log_path[1], "'heartbeat' arrived on the forward socket"));
}

static void test_lost_router_is_logged_and_registration_repeated(void **state)
{
    (void)state;
    s_start_loader(test_shared_path("models/stories260K.gguf"), NULL);
    s_start_worker("0:5", NULL, 0);
    F.router.liveness = 5;
    pt_router_accept(&F.router, 30000);
    /* The router goes away (its control socket closes) and comes back. */
    zmq_close(F.router.control);
    pt_wait_log(F.workers[0], F.log_path[1], "lost the router", 10000);
    F.router.control = pt_socket(F.ctx, ZMQ_ROUTER);
    assert_int_equal(zmq_bind(F.router.control, F.control_ep), 0);
    F.router.n_workers = 0;
    int w = pt_router_accept(&F.router, 15000);
    const char *route[] = {F.results_ep};
    s_generate_and_compare(w, route, 1, 4);
}

static void test_bad_options_and_ranges(void **state)
{
    (void)state;
    s_start_loader(test_shared_path("models/stories260K.gguf"), NULL);
    /* Layers beyond the model: exit 1 with a message naming the model's layer count. */
    pid_t w = s_start_worker("3:9", NULL, 0);
    assert_int_equal(pt_wait_exit(w, 20000), 1);
    F.workers[0] = 0;
    assert_true(pt_file_has(F.log_path[1], "the model has 5 layers"));
    char log[300];
    snprintf(log, sizeof log, "%s/bad.log", F.dir);
    char *argv[] = {(char *)pt_bin("llorch-worker"), "--layers", "5:2", NULL};
    assert_int_equal(pt_wait_exit(pt_spawn(argv, log, NULL), 5000), 2);
    char *argv2[] = {(char *)pt_bin("llorch-worker"), "--kv-budget", "12Q", NULL};
    assert_int_equal(pt_wait_exit(pt_spawn(argv2, log, NULL), 5000), 2);
    char *argv3[] = {(char *)pt_bin("llorch-worker"), "--help", NULL};
    assert_int_equal(pt_wait_exit(pt_spawn(argv3, log, NULL), 5000), 0);
    assert_true(pt_file_has(log, "--kv-budget BYTES"));
}

int main(int argc, char **argv)
{
    (void)argc;
    pt_init(argv[0]);
    s_default_isa = kernel_isa_active();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_worker_matches_in_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_workers_chained, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fetch_verifies_and_serves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_q8_0_mapped_segment_keeps_the_loader_layout, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_q8_0_fetched_rows_are_repacked_for_avx512, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_q8_0_fetched_matrices_take_the_worker_layout,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered_chunk_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_refuses_a_changed_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_budget_refusal_is_an_error_reply, setup,
                                        teardown),
        cmocka_unit_test(test_stage_failure_kind_picks_the_wire_code),
        cmocka_unit_test_setup_teardown(test_malformed_frames_never_crash_the_worker, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lost_router_is_logged_and_registration_repeated,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_options_and_ranges, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    model_free(&s_ref_model);
    return rc;
}
