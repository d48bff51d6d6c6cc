/* proc_test.h - helpers for tests that run llorch's process binaries: spawn with a log file,
 * wait for a log line, stop with SIGTERM, and a stand-in router speaking the wire protocol. */
#ifndef LLORCH_PROC_TEST_H
#define LLORCH_PROC_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <zmq.h>

#include "proc.h"
#include "testutil.h"
#include "wire.h"

/* The folder of the binaries built with this test: <build>/bin beside <build>/tests. */
static char pt_bin_dir[PATH_MAX - 64];

static inline void pt_init(const char *argv0)
{
    char self[PATH_MAX];
    if (!realpath(argv0, self))
        snprintf(self, sizeof self, "%s", argv0);
    char *dir = dirname(self);
    snprintf(pt_bin_dir, sizeof pt_bin_dir, "%.3000s/../bin", dir);
    signal(SIGPIPE, SIG_IGN);
}

static inline const char *pt_bin(const char *name)
{
    static char path[4][PATH_MAX];
    static int k;
    char *p = path[k++ % 4];
    snprintf(p, PATH_MAX, "%s/%.40s", pt_bin_dir, name);
    if (access(p, X_OK) != 0)
        fail_msg("%s is not built (make all)", p);
    return p;
}

/* Starts argv[0] with stdout and stderr into log_path; env_set ("NAME=value") may be NULL. */
static inline pid_t pt_spawn(char *const argv[], const char *log_path, const char *env_set)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (env_set)
            putenv((char *)env_set);
        execvp(argv[0], argv);
        _exit(127);
    }
    assert_true(pid > 0);
    return pid;
}

static inline bool pt_file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static inline void pt_dump(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[4096];
    fprintf(stderr, "---- %s\n", path);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

/* Waits until the log holds needle; fails (showing the log) after timeout_ms or when the
 * process exits first. */
static inline void pt_wait_log(pid_t pid, const char *log_path, const char *needle,
                               int timeout_ms)
{
    int64_t end = proc_now_ms() + timeout_ms;
    while (proc_now_ms() < end) {
        if (pt_file_has(log_path, needle))
            return;
        if (pid > 0) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                pt_dump(log_path);
                fail_msg("process %d exited (status %d) before logging '%s'", (int)pid, st,
                         needle);
            }
        }
        usleep(20000);
    }
    pt_dump(log_path);
    fail_msg("no '%s' in %s after %d ms", needle, log_path, timeout_ms);
}

/* Waits for pid to exit by itself; returns its exit status, or -1 after timeout_ms. */
static inline int pt_wait_exit(pid_t pid, int timeout_ms)
{
    int64_t end = proc_now_ms() + timeout_ms;
    while (proc_now_ms() < end) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(20000);
    }
    return -1;
}

static inline bool pt_alive(pid_t pid)
{
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
}

/* SIGTERM, then the exit status (SIGKILL and -1 when it does not exit in 10 s). */
static inline int pt_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    int rc = pt_wait_exit(pid, 10000);
    if (rc < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return rc;
}

/* Number of /dev/shm/llorch-*-<pid> segments (a loader's). */
static inline int pt_segments_of(pid_t pid)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "/dev/shm/llorch-*-%d", (int)pid);
    glob_t g;
    int n = glob(pattern, 0, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
    globfree(&g);
    return n;
}

/* Proportional set size of a process in bytes, from /proc/PID/smaps_rollup. */
static inline uint64_t pt_pss_bytes(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Pss: %" SCNu64 " kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

/* A fresh run directory for ipc endpoints and logs; path in out (256 bytes). */
static inline void pt_run_dir(char *out)
{
    snprintf(out, 256, "/tmp/llorch-pt-XXXXXX");
    assert_non_null(mkdtemp(out));
}

static inline void pt_rm_run_dir(const char *dir)
{
    proc_run_dir_remove(dir, NULL);
}

/* ---- a stand-in router: control ROUTER and results PULL, both bound ---- */
typedef struct pt_router {
    void *ctx;
    void *control;
    void *results;
    uint8_t worker_identity[8][256];
    size_t worker_identity_bytes[8];
    char worker_endpoint[8][WIRE_MAX_ENDPOINT_BYTES + 1];
    uint32_t worker_first[8];
    int n_workers;
    uint32_t liveness; /* sent in REGISTER_ACK (heartbeat 200 ms); the stand-in sends no
                          heartbeats, so the default is long */
} pt_router;

static inline void *pt_socket(void *ctx, int type)
{
    void *s = zmq_socket(ctx, type);
    assert_non_null(s);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(wire_socket_limits(s, NULL), 0);
    return s;
}

static inline void pt_router_open(pt_router *r, void *ctx, const char *control_ep,
                                  const char *results_ep)
{
    memset(r, 0, sizeof *r);
    r->ctx = ctx;
    r->liveness = 1000;
    r->control = pt_socket(ctx, ZMQ_ROUTER);
    r->results = pt_socket(ctx, ZMQ_PULL);
    assert_int_equal(zmq_bind(r->control, control_ep), 0);
    assert_int_equal(zmq_bind(r->results, results_ep), 0);
}

static inline void pt_router_close(pt_router *r)
{
    if (r->control)
        zmq_close(r->control);
    if (r->results)
        zmq_close(r->results);
    r->control = r->results = NULL;
}

/* Receives on sock within timeout_ms; 0 with raw and m filled (free both), -1 on timeout. */
static inline int pt_recv(void *sock, wire_msg *raw, wire_message *m, int timeout_ms)
{
    int64_t end = proc_now_ms() + timeout_ms;
    while (proc_now_ms() < end) {
        zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 50) <= 0)
            continue;
        llorch_error err;
        int rc = wire_recv_message(sock, raw, m, ZMQ_DONTWAIT, &err);
        if (rc == 0)
            return 0;
        if (rc > 0)
            fail_msg("undecodable message: %s", err.msg);
    }
    return -1;
}

/* Waits for a REGISTER on the control socket, answers REGISTER_ACK and records the
 * worker; heartbeats met on the way are skipped. Returns the worker's index. */
static inline int pt_router_accept(pt_router *r, int timeout_ms)
{
    int64_t end = proc_now_ms() + timeout_ms;
    while (proc_now_ms() < end) {
        wire_msg raw = {0};
        wire_message m = {0};
        if (pt_recv(r->control, &raw, &m, (int)(end - proc_now_ms())) < 0)
            break;
        if (m.type != WIRE_REGISTER) {
            wire_message_free(&m);
            wire_msg_free(&raw);
            continue;
        }
        int i = r->n_workers < 8 ? r->n_workers++ : 7;
        memcpy(r->worker_identity[i], raw.identity, raw.identity_bytes);
        r->worker_identity_bytes[i] = raw.identity_bytes;
        snprintf(r->worker_endpoint[i], sizeof r->worker_endpoint[i], "%s", m.reg.endpoint);
        r->worker_first[i] = m.reg.layer_first;
        wire_message ack = {.type = WIRE_REGISTER_ACK,
                            .reg_ack = {.worker_id = m.reg.worker_id, .heartbeat_ms = 200,
                                        .liveness = r->liveness}};
        assert_int_equal(wire_send_message(r->control, raw.identity, raw.identity_bytes, &ack,
                                           0, NULL), 0);
        wire_message_free(&m);
        wire_msg_free(&raw);
        return i;
    }
    fail_msg("no worker registered within %d ms", timeout_ms);
    return -1;
}

/* Sends FORWARD to endpoint with token rows (hidden NULL) and the given route. */
static inline void pt_send_forward(void *ctx, const char *endpoint, uint64_t batch_id,
                                   const wire_row *rows, uint32_t n_rows, uint32_t hidden_dim,
                                   const char *const *route, uint32_t n_hops)
{
    void *push = pt_socket(ctx, ZMQ_PUSH);
    int linger = 2000;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(push, endpoint), 0);
    wire_message m = {.type = WIRE_FORWARD,
                      .forward = {.batch_id = batch_id, .pipeline_id = 1,
                                  .hidden_dim = hidden_dim, .n_rows = n_rows, .rows = rows,
                                  .n_hops = n_hops, .route = route}};
    llorch_error err;
    if (wire_send_message(push, NULL, 0, &m, 0, &err) != 0)
        fail_msg("send forward: %s", err.msg);
    zmq_close(push);
}

#endif
