/* test_worker_zero_copy.c - a loader and three workers on one host share one copy of a
 * generated ~100 MB model: their summed PSS (/proc/PID/smaps_rollup) stays within the model
 * bytes plus KV caches plus a small constant per process, after every weight was read. */
#include "proc_test.h"

#include "mkmodel.h"

#define MODEL_PATH "build/test-models/worker-zero-copy-q8.gguf"

/* Memory a process has besides the model and its KV cache: code, libraries, ZeroMQ, the
 * stage's scratch. Sanitizer builds carry shadow memory and allocator caches on top. */
#if defined(__SANITIZE_ADDRESS__)
#define PROC_OVERHEAD_BYTES (24ull << 20)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PROC_OVERHEAD_BYTES (24ull << 20)
#endif
#endif
#ifndef PROC_OVERHEAD_BYTES
#define PROC_OVERHEAD_BYTES (12ull << 20)
#endif

static mkmodel_config s_config(void)
{
    mkmodel_config c;
    assert_int_equal(mkmodel_preset("tiny", &c, NULL), 0);
    c.name = "zero-copy";
    c.dim = 1024;
    c.n_layers = 8;
    c.n_heads = 16;
    c.n_kv_heads = 4;
    c.ffn_dim = 2816;
    c.ctx = 256;
    c.vocab_size = mkmodel_builtin_vocab_min() + 64;
    c.type = TENSOR_Q8_0;
    return c;
}

static void test_workers_share_one_copy_of_the_model(void **state)
{
    (void)state;
    mkmodel_config mc = s_config();
    llorch_error err;
    if (access(MODEL_PATH, R_OK) != 0) {
        mkdir("build", 0755);
        mkdir("build/test-models", 0755);
        if (mkmodel_write(&mc, MODEL_PATH, NULL, NULL, &err) < 0)
            fail_msg("%s", err.msg);
    }
    char dir[256], loader_ep[300], control_ep[300], results_ep[300], logs[4][300];
    pt_run_dir(dir);
    snprintf(loader_ep, sizeof loader_ep, "ipc://%s/loader", dir);
    snprintf(control_ep, sizeof control_ep, "ipc://%s/control", dir);
    snprintf(results_ep, sizeof results_ep, "ipc://%s/results", dir);
    void *ctx = zmq_ctx_new();
    pt_router router;
    pt_router_open(&router, ctx, control_ep, results_ep);

    snprintf(logs[0], sizeof logs[0], "%s/loader.log", dir);
    char *largv[] = {(char *)pt_bin("llorch-loader"), "-m", MODEL_PATH, "--endpoint",
                     loader_ep, NULL};
    pid_t pids[4];
    pids[0] = pt_spawn(largv, logs[0], NULL);
    pt_wait_log(pids[0], logs[0], "serving on", 60000);
    static const char *ranges[3] = {"0:3", "3:6", "6:8"};
    for (int k = 0; k < 3; k++) {
        char bind[300];
        snprintf(bind, sizeof bind, "ipc://%s/w%d", dir, k);
        snprintf(logs[1 + k], sizeof logs[1 + k], "%s/worker%d.log", dir, k);
        char *wargv[] = {(char *)pt_bin("llorch-worker"), "--loader", loader_ep, "--router",
                         control_ep, "--layers", (char *)ranges[k], "--bind", bind,
                         "--threads", "1", NULL};
        pids[1 + k] = pt_spawn(wargv, logs[1 + k], NULL);
    }
    char endpoint_of[3][WIRE_MAX_ENDPOINT_BYTES + 1];
    for (int k = 0; k < 3; k++) {
        int i = pt_router_accept(&router, 60000);
        int slot = router.worker_first[i] == 0 ? 0 : router.worker_first[i] == 3 ? 1 : 2;
        snprintf(endpoint_of[slot], sizeof endpoint_of[slot], "%s", router.worker_endpoint[i]);
    }
    for (int k = 0; k < 3; k++)
        assert_true(pt_file_has(logs[1 + k], "zero copy"));

    /* One batch through all layers touches every weight page. */
    wire_row rows[8];
    for (uint32_t i = 0; i < 8; i++)
        rows[i] = (wire_row){1, i, (int32_t)(3 + i), i == 7};
    const char *route[] = {endpoint_of[1], endpoint_of[2], results_ep};
    pt_send_forward(ctx, endpoint_of[0], 1, rows, 8, mc.dim, route, 3);
    wire_msg raw = {0};
    wire_message m = {0};
    if (pt_recv(router.results, &raw, &m, 60000) < 0) {
        for (int k = 0; k < 4; k++)
            pt_dump(logs[k]);
        fail_msg("no logits");
    }
    assert_int_equal(m.type, WIRE_LOGITS);
    assert_int_equal(m.logits.n_rows, 1);
    wire_message_free(&m);
    wire_msg_free(&raw);

    struct stat st;
    assert_int_equal(stat(MODEL_PATH, &st), 0);
    uint64_t pss = 0;
    for (int k = 0; k < 4; k++) {
        uint64_t p = pt_pss_bytes(pids[k]);
        print_message("pss of %s: %.1f MB\n", k ? "worker" : "loader", p / 1e6);
        pss += p;
    }
    /* KV: 8 positions (one block of 32) of all 8 layers, K and V, F32, kv_dim 256. */
    const uint64_t kv = 32ull * 8 * 2 * 256 * 4;
    const uint64_t bound = (uint64_t)st.st_size + kv + 4 * PROC_OVERHEAD_BYTES;
    print_message("summed pss %.1f MB, model %.1f MB, bound %.1f MB\n", pss / 1e6,
                  st.st_size / 1e6, bound / 1e6);
    assert_true(pss <= bound);
    /* Had each worker a private copy of its share, the sum would pass twice the model. */
    assert_true(pss < 2 * (uint64_t)st.st_size);

    for (int k = 3; k >= 0; k--)
        assert_int_equal(pt_stop(pids[k]), 0);
    assert_int_equal(pt_segments_of(pids[0]), 0);
    pt_router_close(&router);
    zmq_ctx_term(ctx);
    pt_rm_run_dir(dir);
}

int main(int argc, char **argv)
{
    (void)argc;
    pt_init(argv[0]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workers_share_one_copy_of_the_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
