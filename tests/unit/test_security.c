/* test_security.c - CurveZMQ key files, allow-lists, and the ZAP handler admitting only
 * listed keys over real tcp://127.0.0.1 sockets. */
#include "testutil.h"

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <zmq.h>

#include "security.h"
#include "wire.h"

static void s_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Two fresh paths that do not exist yet (keys are never written over a file). */
static void s_key_paths(char secret[256], char pub[300])
{
    snprintf(secret, 256, "%s", test_tmp_path(".key"));
    unlink(secret);
    snprintf(pub, 300, "%s.pub", secret);
}

/* A public key on a command line: a key file when one of that name exists (a path can
 * be 40 Z85 characters, like a key), else the key itself, else a clear error. */
static void test_public_key_arg_file_before_key(void **state)
{
    (void)state;
    security_keypair kp, other;
    llorch_error err = {{0}};
    assert_int_equal(security_keypair_generate(&kp, &err), 0);
    assert_int_equal(security_keypair_generate(&other, &err), 0);
    char out[SECURITY_Z85_KEY_LEN + 1];
    assert_int_equal(security_public_key_arg(kp.public_key, out, &err), 0);
    assert_string_equal(out, kp.public_key);

    char dir[64] = "/tmp/llorch-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char secret[128], pub[128];
    snprintf(secret, sizeof secret, "%s/k.key", dir);
    snprintf(pub, sizeof pub, "%s/", dir);
    size_t n = strlen(pub);
    while (n < SECURITY_Z85_KEY_LEN)
        pub[n++] = 'p';
    pub[n] = 0;
    assert_true(security_key_valid(pub)); /* the path alone would pass for a key */
    assert_int_equal(security_keypair_save(&other, secret, pub, &err), 0);
    assert_int_equal(security_public_key_arg(pub, out, &err), 0);
    assert_string_equal(out, other.public_key);

    assert_int_equal(security_public_key_arg("/no/such/key-file", out, &err), -1);
    assert_non_null(strstr(err.msg, "neither a Z85 key nor a key file"));
    unlink(secret);
    unlink(pub);
    rmdir(dir);
}

static void test_keygen_save_load(void **state)
{
    security_keypair kp, back;
    llorch_error err = {{0}};
    char secret[256], pub[300];
    s_key_paths(secret, pub);
    assert_int_equal(security_keypair_generate(&kp, &err), 0);
    assert_true(security_key_valid(kp.public_key) && security_key_valid(kp.secret_key));
    assert_int_equal(security_keypair_save(&kp, secret, pub, &err), 0);
    struct stat st;
    assert_int_equal(stat(secret, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    assert_int_equal(security_keypair_load(secret, &back, &err), 0);
    assert_string_equal(back.public_key, kp.public_key);
    assert_string_equal(back.secret_key, kp.secret_key);
    assert_int_equal(security_keypair_load(pub, &back, &err), 0);
    assert_string_equal(back.public_key, kp.public_key);
    assert_string_equal(back.secret_key, "");

    /* Never overwrites, and leaves nothing half-written. */
    assert_int_equal(security_keypair_save(&kp, secret, pub, &err), -1);
    assert_non_null(strstr(err.msg, "keys are never overwritten"));
    unlink(secret);
    assert_int_equal(security_keypair_save(&kp, secret, pub, &err), -1);
    assert_int_equal(access(secret, F_OK), -1);
    unlink(pub);

    /* A damaged key, a secret key with someone else's public key, an empty file. */
    const char *bad = test_tmp_path(".key");
    s_write(bad, "public-key = \"not-a-key\"\n");
    assert_int_equal(security_keypair_load(bad, &back, &err), -1);
    assert_non_null(strstr(err.msg, ":1: the public key is not a 40-character Z85 key"));
    security_keypair other;
    assert_int_equal(security_keypair_generate(&other, &err), 0);
    char text[256];
    snprintf(text, sizeof text, "curve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n",
             other.public_key, kp.secret_key);
    s_write(bad, text);
    assert_int_equal(security_keypair_load(bad, &back, &err), -1);
    assert_non_null(strstr(err.msg, "does not belong to the secret key"));
    s_write(bad, "# nothing here\n");
    assert_int_equal(security_keypair_load(bad, &back, &err), -1);
    assert_non_null(strstr(err.msg, "no public-key line"));
    unlink(bad);
}

static void test_allow_list_parsing(void **state)
{
    security_keypair a, b;
    llorch_error err = {{0}};
    security_keypair_generate(&a, &err);
    security_keypair_generate(&b, &err);
    const char *path = test_tmp_path(".allow");
    char text[512];
    snprintf(text, sizeof text, "# workers\n\n%s worker-1\npublic-key = \"%s\"\n", a.public_key,
             b.public_key);
    s_write(path, text);
    void *ctx = zmq_ctx_new();
    security_zap *zap = security_zap_start(ctx, path, &err);
    if (!zap)
        fail_msg("%s", err.msg);
    /* A second handler in the same context cannot bind. */
    assert_null(security_zap_start(ctx, path, &err));
    assert_non_null(strstr(err.msg, "one handler per context"));
    /* A bad line: reload fails with the line number, the old list stays. */
    s_write(path, "# ok\nnot-a-key\n");
    assert_int_equal(security_zap_reload(zap, &err), -1);
    assert_non_null(strstr(err.msg, ":2: \"not-a-key\" is not a 40-character Z85"));
    security_zap_stop(&zap);
    assert_null(zap);
    security_zap_stop(&zap);
    assert_null(security_zap_start(ctx, "/nonexistent/allow", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/allow"));
    zmq_ctx_term(ctx);
    unlink(path);
}

/* The kind of the next handshake event on a monitor socket within timeout_ms, or 0. */
static int s_next_event(void *monitor, int timeout_ms, uint32_t *value)
{
    zmq_setsockopt(monitor, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    uint8_t buf[6];
    char addr[256];
    if (zmq_recv(monitor, buf, sizeof buf, 0) < 6)
        return 0;
    zmq_recv(monitor, addr, sizeof addr, 0);
    uint16_t ev;
    memcpy(&ev, buf, 2);
    memcpy(value, buf + 2, 4);
    return ev;
}

static void *s_client(void *ctx, const char *endpoint, const security_keypair *kp,
                      const char *server_public)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0, ms = 3000;
    llorch_error err = {{0}};
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &ms, sizeof ms);
    if (kp && security_client_setup(s, kp, server_public, &err) != 0)
        fail_msg("%s", err.msg);
    return s;
}

static void test_curve_allowed_key_talks_unknown_key_refused(void **state)
{
    security_keypair server, good, stranger;
    llorch_error err = {{0}};
    assert_int_equal(security_keypair_generate(&server, &err), 0);
    assert_int_equal(security_keypair_generate(&good, &err), 0);
    assert_int_equal(security_keypair_generate(&stranger, &err), 0);
    const char *allow = test_tmp_path(".allow");
    char text[128];
    snprintf(text, sizeof text, "%s good-client\n", good.public_key);
    s_write(allow, text);

    void *ctx = zmq_ctx_new();
    security_zap *zap = security_zap_start(ctx, allow, &err);
    if (!zap)
        fail_msg("%s", err.msg);
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0, ms = 3000;
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &ms, sizeof ms);
    assert_int_equal(security_server_setup(router, &server, &err), 0);
    assert_int_equal(zmq_bind(router, "tcp://127.0.0.1:*"), 0);
    char endpoint[256];
    size_t len = sizeof endpoint;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, endpoint, &len);

    /* The listed key connects and exchanges a message both ways. */
    void *client = s_client(ctx, endpoint, &good, server.public_key);
    assert_int_equal(zmq_connect(client, endpoint), 0);
    wire_message hb = {.type = WIRE_HEARTBEAT, .heartbeat = {.sender_id = "w0", .seq = 1}};
    assert_int_equal(wire_send_message(client, NULL, 0, &hb, 0, &err), 0);
    wire_msg raw;
    wire_message in;
    int rc = wire_recv_message(router, &raw, &in, 0, &err);
    if (rc != 0)
        fail_msg("the allowed client's message did not arrive (%d): %s", rc, err.msg);
    assert_int_equal(in.type, WIRE_HEARTBEAT);
    assert_string_equal(in.heartbeat.sender_id, "w0");
    hb.heartbeat.sender_id = "router";
    assert_int_equal(wire_send_message(router, raw.identity, raw.identity_bytes, &hb, 0, &err), 0);
    wire_message_free(&in);
    wire_msg_free(&raw);
    assert_int_equal(wire_recv_message(client, &raw, &in, 0, &err), 0);
    assert_string_equal(in.heartbeat.sender_id, "router");
    wire_message_free(&in);
    wire_msg_free(&raw);

    /* An unknown key: the handshake fails with ZAP status 400, nothing is delivered. */
    void *intruder = s_client(ctx, endpoint, &stranger, server.public_key);
    assert_int_equal(zmq_socket_monitor(intruder, "inproc://monitor-intruder",
                                        ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                            ZMQ_EVENT_HANDSHAKE_SUCCEEDED),
                     0);
    void *monitor = zmq_socket(ctx, ZMQ_PAIR);
    zmq_setsockopt(monitor, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(monitor, "inproc://monitor-intruder"), 0);
    assert_int_equal(zmq_connect(intruder, endpoint), 0);
    wire_message evil = {.type = WIRE_SESSION_FREE, .session_free = {.session_id = 1}};
    zmq_setsockopt(intruder, ZMQ_SNDTIMEO, &zero, sizeof zero);
    wire_send_message(intruder, NULL, 0, &evil, ZMQ_DONTWAIT, &err); /* queued or refused */
    uint32_t value = 0;
    assert_int_equal(s_next_event(monitor, 5000, &value), ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    assert_int_equal(value, 400);
    ms = 500;
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &ms, sizeof ms);
    assert_int_equal(wire_recv(router, &raw, 0, &err), -1);
    assert_int_equal(errno, EAGAIN);

    /* A client without CURVE at all never gets through either. */
    void *plain = s_client(ctx, endpoint, NULL, NULL);
    assert_int_equal(zmq_connect(plain, endpoint), 0);
    wire_send_message(plain, NULL, 0, &evil, ZMQ_DONTWAIT, &err);
    assert_int_equal(wire_recv(router, &raw, 0, &err), -1);

    uint64_t accepted = 0, refused = 0;
    security_zap_counts(zap, &accepted, &refused);
    assert_int_equal(accepted, 1);
    assert_true(refused >= 1);

    zmq_close(monitor);
    zmq_close(plain);
    zmq_close(intruder);
    zmq_close(client);
    zmq_close(router);
    security_zap_stop(&zap);
    zmq_ctx_term(ctx);
    unlink(allow);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keygen_save_load),
        cmocka_unit_test(test_public_key_arg_file_before_key),
        cmocka_unit_test(test_allow_list_parsing),
        cmocka_unit_test(test_curve_allowed_key_talks_unknown_key_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
