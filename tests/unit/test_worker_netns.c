/* test_worker_netns.c - a worker in its own network namespace (and its own /dev/shm, as on
 * another host) fetches its weights from the loader over tcp:// with CurveZMQ, verifies every
 * digest and serves a FORWARD over tcp; a tampered chunk makes it refuse to serve; a key that
 * is not on the loader's allow-list is refused. Needs root (ip netns); skipped otherwise.
 * Traffic stays on a veth pair with link-local addresses between namespaces of this machine. */
#include "proc_test.h"

#include <math.h>

#include "security.h"

typedef struct netns {
    char name[32], veth_root[16], veth_ns[16];
    char addr_root[32], addr_ns[32];
    bool up;
} netns;

static netns N;

static int s_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int s_sh(const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static void s_netns_down(void)
{
    s_sh("ip netns del %s 2>/dev/null", N.name);
    s_sh("ip link del %s 2>/dev/null", N.veth_root);
    N.up = false;
}

static int s_netns_up(void)
{
    const int id = (int)(getpid() % 250) + 1;
    snprintf(N.name, sizeof N.name, "llorch-t%d", (int)getpid());
    snprintf(N.veth_root, sizeof N.veth_root, "llv%da", (int)(getpid() % 100000));
    snprintf(N.veth_ns, sizeof N.veth_ns, "llv%db", (int)(getpid() % 100000));
    snprintf(N.addr_root, sizeof N.addr_root, "169.254.%d.1", id);
    snprintf(N.addr_ns, sizeof N.addr_ns, "169.254.%d.2", id);
    N.up = true;
    if (s_sh("ip netns add %s", N.name) || s_sh("ip link add %s type veth peer name %s",
                                                N.veth_root, N.veth_ns) ||
        s_sh("ip link set %s netns %s", N.veth_ns, N.name) ||
        s_sh("ip addr add %s/30 dev %s", N.addr_root, N.veth_root) ||
        s_sh("ip link set %s up", N.veth_root) ||
        s_sh("ip -n %s addr add %s/30 dev %s", N.name, N.addr_ns, N.veth_ns) ||
        s_sh("ip -n %s link set %s up", N.name, N.veth_ns) ||
        s_sh("ip -n %s link set lo up", N.name)) {
        s_netns_down();
        return -1;
    }
    return 0;
}

static void s_keys(const char *dir, const char *name, security_keypair *kp)
{
    char sec[300], pub[300];
    snprintf(sec, sizeof sec, "%s/%s.key", dir, name);
    snprintf(pub, sizeof pub, "%s/%s.pub", dir, name);
    llorch_error err;
    if (security_keypair_generate(kp, &err) < 0 || security_keypair_save(kp, sec, pub, &err) < 0)
        fail_msg("%s", err.msg);
}

static void s_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Starts the worker inside the namespace, with a private /dev/shm (another host's view). */
static pid_t s_worker(const char *dir, const char *key_name, const char *loader_ep,
                      const char *control_ep, const char *bind_ep, const char *log)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "mount -t tmpfs tmpfs /dev/shm && exec %s --loader %s --router %s --layers 0:5 "
             "--bind %s --threads 1 --curve-secret %s/%s.key --loader-public %s/loader.pub "
             "--router-public %s/router.pub --allow %s/allow-worker",
             pt_bin("llorch-worker"), loader_ep, control_ep, bind_ep, dir, key_name, dir, dir,
             dir);
    char *argv[] = {"ip", "netns", "exec", N.name, "unshare", "-m", "--propagation", "private",
                    "sh", "-c", cmd, NULL};
    return pt_spawn(argv, log, NULL);
}

static void test_worker_in_netns_fetches_over_curve_and_serves(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        print_message("SKIPPED: the network-namespace test needs root (ip netns, veth); "
                      "run it as root (CI does)\n");
        skip();
    }
    if (s_netns_up() < 0) {
        print_message("SKIPPED: cannot create a network namespace and veth pair here\n");
        skip();
    }
    char dir[256];
    pt_run_dir(dir);
    security_keypair loader_kp, router_kp, worker_kp, stranger_kp;
    s_keys(dir, "loader", &loader_kp);
    s_keys(dir, "router", &router_kp);
    s_keys(dir, "worker", &worker_kp);
    s_keys(dir, "stranger", &stranger_kp);
    char path[300], text[256];
    snprintf(path, sizeof path, "%s/allow-loader", dir);
    snprintf(text, sizeof text, "%s worker\n", worker_kp.public_key);
    s_write(path, text);
    snprintf(path, sizeof path, "%s/allow-router", dir);
    s_write(path, text);
    snprintf(path, sizeof path, "%s/allow-worker", dir);
    snprintf(text, sizeof text, "%s router\n", router_kp.public_key);
    s_write(path, text);

    const int port = 20000 + (int)(getpid() % 10000) * 4;
    char loader_ep[64], control_ep[64], results_ep[64], bind_ep[64];
    snprintf(loader_ep, sizeof loader_ep, "tcp://%s:%d", N.addr_root, port);
    snprintf(control_ep, sizeof control_ep, "tcp://%s:%d", N.addr_root, port + 1);
    snprintf(results_ep, sizeof results_ep, "tcp://%s:%d", N.addr_root, port + 2);
    snprintf(bind_ep, sizeof bind_ep, "tcp://%s:%d", N.addr_ns, port + 3);

    /* The stand-in router: CURVE servers admitting the worker's key. */
    void *ctx = zmq_ctx_new();
    llorch_error err;
    snprintf(path, sizeof path, "%s/allow-router", dir);
    security_zap *zap = security_zap_start(ctx, path, &err);
    assert_non_null(zap);
    pt_router router;
    memset(&router, 0, sizeof router);
    router.ctx = ctx;
    router.liveness = 1000;
    router.control = pt_socket(ctx, ZMQ_ROUTER);
    router.results = pt_socket(ctx, ZMQ_PULL);
    assert_int_equal(security_server_setup(router.control, &router_kp, NULL), 0);
    assert_int_equal(security_server_setup(router.results, &router_kp, NULL), 0);
    assert_int_equal(zmq_bind(router.control, control_ep), 0);
    assert_int_equal(zmq_bind(router.results, results_ep), 0);

    char loader_log[300], worker_log[300], key[300], allow[300];
    snprintf(loader_log, sizeof loader_log, "%s/loader.log", dir);
    snprintf(worker_log, sizeof worker_log, "%s/worker.log", dir);
    snprintf(key, sizeof key, "%s/loader.key", dir);
    snprintf(allow, sizeof allow, "%s/allow-loader", dir);
    char *largv[] = {(char *)pt_bin("llorch-loader"), "-m",
                     (char *)test_shared_path("models/stories260K.gguf"), "--endpoint", loader_ep,
                     "--curve-secret", key, "--allow", allow, NULL};
    pid_t loader = pt_spawn(largv, loader_log, NULL);
    pt_wait_log(loader, loader_log, "serving on", 30000);

    /* 1. The worker fetches (it cannot see the loader's segment), verifies and serves. */
    pid_t worker = s_worker(dir, "worker", loader_ep, control_ep, bind_ep, worker_log);
    int w = pt_router_accept(&router, 30000);
    assert_true(pt_file_has(worker_log, "fetched and verified 48 tensors"));
    void *push = pt_socket(ctx, ZMQ_PUSH);
    int linger = 2000;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(security_client_setup(push, &router_kp, worker_kp.public_key, NULL), 0);
    assert_int_equal(zmq_connect(push, router.worker_endpoint[w]), 0);
    wire_row rows[3] = {{1, 0, 1, false}, {1, 1, 403, false}, {1, 2, 407, true}};
    const char *route[] = {results_ep};
    wire_message fw = {.type = WIRE_FORWARD,
                       .forward = {.batch_id = 5, .pipeline_id = 1, .hidden_dim = 64,
                                   .n_rows = 3, .rows = rows, .n_hops = 1, .route = route}};
    assert_int_equal(wire_send_message(push, NULL, 0, &fw, 0, NULL), 0);
    wire_msg raw = {0};
    wire_message m = {0};
    if (pt_recv(router.results, &raw, &m, 20000) < 0) {
        pt_dump(worker_log);
        fail_msg("no logits from the worker in the namespace");
    }
    assert_int_equal(m.type, WIRE_LOGITS);
    assert_int_equal(m.logits.n_rows, 1);
    assert_int_equal(m.logits.n_vocab, 512);
    for (int i = 0; i < 512; i++)
        assert_true(isfinite(m.logits.logits[i]));
    wire_message_free(&m);
    wire_msg_free(&raw);
    zmq_close(push);
    assert_int_equal(pt_stop(worker), 0);

    /* 2. A key the loader does not know is refused; the worker keeps waiting. */
    char stranger_log[300];
    snprintf(stranger_log, sizeof stranger_log, "%s/stranger.log", dir);
    pid_t stranger = s_worker(dir, "stranger", loader_ep, control_ep, bind_ep, stranger_log);
    pt_wait_log(loader, loader_log, "refused a connection", 15000);
    assert_true(pt_alive(stranger));
    assert_int_equal(pt_stop(stranger), 0);
    assert_int_equal(pt_stop(loader), 0);
    assert_int_equal(pt_segments_of(loader), 0);

    /* 3. A loader that corrupts a chunk: the worker refuses to serve (exit 1). */
    loader = pt_spawn(largv, loader_log, "LLORCH_LOADER_TAMPER=output_norm.weight");
    pt_wait_log(loader, loader_log, "TEST ONLY", 30000);
    pt_wait_log(loader, loader_log, "serving on", 30000);
    char tamper_log[300];
    snprintf(tamper_log, sizeof tamper_log, "%s/tampered.log", dir);
    worker = s_worker(dir, "worker", loader_ep, control_ep, bind_ep, tamper_log);
    int rc = pt_wait_exit(worker, 30000);
    if (rc != 1)
        pt_dump(tamper_log);
    assert_int_equal(rc, 1);
    assert_true(pt_file_has(tamper_log, "output_norm.weight: the fetched bytes do not match"));
    assert_int_equal(pt_stop(loader), 0);

    pt_router_close(&router);
    security_zap_stop(&zap);
    zmq_ctx_term(ctx);
    pt_rm_run_dir(dir);
}

static int teardown(void **state)
{
    (void)state;
    if (N.up)
        s_netns_down();
    return 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    pt_init(argv[0]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_worker_in_netns_fetches_over_curve_and_serves, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
