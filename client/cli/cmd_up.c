/* cmd_up.c - `llorch up`: a loader, K workers and a router as child processes on this host. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "gguf.h"
#include "kv_cache.h"
#include "lib/llorch.h"
#include "proc.h"
#include "up.h"

#define UP_STOP_GRACE_MS 5000

static void s_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The directory of this executable, where the sibling binaries live. */
static int s_exe_dir(char *out, size_t n, llorch_error *err)
{
    char path[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", path, sizeof path - 1);
    if (len <= 0)
        return llorch_error_set(err, "cannot find this executable: %s", strerror(errno));
    path[len] = '\0';
    char *slash = strrchr(path, '/');
    if (slash)
        *slash = '\0';
    snprintf(out, n, "%s", path);
    return 0;
}

static int s_model_layers(const char *model, uint32_t *n_layers, llorch_error *err)
{
    gguf_file *f = gguf_open(model, err);
    if (!f)
        return -1;
    char *arch = NULL;
    int rc = gguf_get_string(f, "general.architecture", &arch, err);
    if (rc == 0) {
        char key[128];
        snprintf(key, sizeof key, "%s.block_count", arch);
        rc = gguf_get_u32(f, key, n_layers, err);
    }
    free(arch);
    gguf_close(&f);
    return rc == 0 ? 0 : llorch_error_prefix(err, "%s", model);
}

/* Layer ranges of the workers: the split, or K even ranges. Checks that the ranges
 * chain from layer 0 to n_layers so that the router can build a pipeline. */
static int s_ranges(const up_opts *o, uint32_t n_layers, uint32_t (*ranges)[2], int *n_out,
                    llorch_error *err)
{
    int n = 0;
    if (o->split) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", o->split);
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (n == UP_MAX_WORKERS)
                return llorch_error_set(err, "--split: at most %d ranges", UP_MAX_WORKERS);
            if (proc_parse_range(tok, &ranges[n][0], &ranges[n][1], err) != 0)
                return llorch_error_prefix(err, "--split");
            if (ranges[n][1] > n_layers)
                return llorch_error_set(err, "--split: range %s passes the model's %u layers",
                                        tok, n_layers);
            n++;
        }
        if (o->n_workers && o->n_workers != n)
            return llorch_error_set(err, "--workers %d but --split has %d ranges: give one "
                                    "range per worker", o->n_workers, n);
        /* Reachable layer boundaries from 0. */
        bool reach[4097] = {false};
        reach[0] = true;
        for (bool grew = true; grew;) {
            grew = false;
            for (int i = 0; i < n; i++)
                if (reach[ranges[i][0]] && !reach[ranges[i][1]])
                    reach[ranges[i][1]] = grew = true;
        }
        if (n_layers > 4096 || !reach[n_layers])
            return llorch_error_set(err, "--split %s does not chain from layer 0 to %u: give "
                                    "contiguous ranges such as 0:3,3:%u", o->split, n_layers,
                                    n_layers);
    } else {
        n = o->n_workers ? o->n_workers : 1;
        if (n > UP_MAX_WORKERS || (uint32_t)n > n_layers)
            return llorch_error_set(err, "--workers %d: the model has %u layers (and at most "
                                    "%d workers)", n, n_layers, UP_MAX_WORKERS);
        uint32_t first = 0;
        for (int i = 0; i < n; i++) {
            uint32_t len = n_layers / (uint32_t)n + ((uint32_t)i < n_layers % (uint32_t)n);
            ranges[i][0] = first;
            ranges[i][1] = first + len;
            first += len;
        }
    }
    *n_out = n;
    return 0;
}

/* Forks and execs argv; the child dies with this process (PR_SET_PDEATHSIG), has its
 * stdout on stderr, and logs to log_path when it is set. */
static int s_spawn(up_pipeline *p, const char *name, char *const argv[], bool quiet,
                   llorch_error *err)
{
    up_child *c = &p->children[p->n_children];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->log_path[0] = '\0';
    if (quiet) {
        char file[64];
        snprintf(file, sizeof file, "%s", name);
        for (char *s = file; *s; s++)
            if (*s == ' ' || *s == '(' || *s == ')' || *s == ':')
                *s = '_';
        char path[sizeof c->log_path];
        snprintf(path, sizeof path, "%s/%s.log", p->run_dir, file);
        memcpy(c->log_path, path, sizeof path);
    }
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return llorch_error_set(err, "cannot start %s: %s", name, strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        if (c->log_path[0]) {
            int fd = open(c->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (fd >= 0)
                dup2(fd, STDERR_FILENO);
        }
        dup2(STDERR_FILENO, STDOUT_FILENO);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        fprintf(stderr, "llorch up: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    p->n_children++;
    return 0;
}

/* Reaps children that exited; returns the index of one that did, or -1. */
static int s_reap(up_pipeline *p, int *status)
{
    for (int i = 0; i < p->n_children; i++) {
        up_child *c = &p->children[i];
        if (c->pid > 0 && waitpid(c->pid, status, WNOHANG) == c->pid) {
            c->pid = -c->pid; /* remembered (negated) for the segment clean-up */
            return i;
        }
    }
    return -1;
}

static void s_describe_exit(const up_child *c, int status, llorch_error *err)
{
    if (WIFSIGNALED(status))
        llorch_error_set(err, "%s (pid %d) was killed by signal %d", c->name, -c->pid,
                         WTERMSIG(status));
    else
        llorch_error_set(err, "%s (pid %d) exited with status %d", c->name, -c->pid,
                         WEXITSTATUS(status));
}

/* A bind address on every interface (tcp, star or 0.0.0.0) as a client on this host reaches it. */
static void s_connectable(const char *ep, char *out, size_t n, bool for_print)
{
    if (!strncmp(ep, "tcp://*:", 8) || !strncmp(ep, "tcp://0.0.0.0:", 14)) {
        char host[256] = "127.0.0.1";
        if (for_print && gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "127.0.0.1");
        snprintf(out, n, "tcp://%s%s", host, strrchr(ep, ':'));
    } else {
        snprintf(out, n, "%s", ep);
    }
}

/* Batches the router may keep in flight on one pipeline when its stages share this host's
 * CPUs (n_workers x threads > cpus): as many as can run at once without two stages' thread
 * pools taking turns on a core, which costs far more than it gains (8 sessions on K=2 x 2
 * threads on 2 cores: ~1.6x the rate with one batch in flight as with two). 0 when the
 * router's default (one per stage) holds, or --max-inflight was given. */
#define UP_MAX_INFLIGHT 16 /* llorch-router's --max-inflight bound (ROUTER_MAX_INFLIGHT) */

static int s_inflight(const up_opts *o, int n_workers, int threads, long cpus)
{
    for (int k = 0; k < o->n_router_extra; k++)
        if (!strcmp(o->router_extra[k], "--max-inflight"))
            return 0;
    if (cpus < 1 || (long)n_workers * threads <= cpus)
        return 0;
    const long at_once = cpus / threads;
    return at_once < 1 ? 1 : at_once > UP_MAX_INFLIGHT ? UP_MAX_INFLIGHT : (int)at_once;
}

int up_start(const up_opts *o, up_pipeline *p, llorch_error *err)
{
    memset(p, 0, sizeof *p);
    p->start_ms = (double)proc_now_ms();
    uint32_t n_layers = 0;
    uint32_t ranges[UP_MAX_WORKERS][2];
    int n = 0;
    char dir[PATH_MAX];
    if (s_model_layers(o->model, &n_layers, err) != 0 || s_ranges(o, n_layers, ranges, &n, err) != 0 ||
        s_exe_dir(dir, sizeof dir, err) != 0)
        return -1;
    snprintf(p->run_dir, sizeof p->run_dir, "/tmp/llorch-%d", (int)getpid());
    if (mkdir(p->run_dir, 0700) != 0)
        return llorch_error_set(err, "cannot make the run directory %s: %s", p->run_dir,
                                strerror(errno));
    /* By default every worker runs on every CPU: one session's batch keeps one stage busy
     * at a time, and then it has all the cores (K=2 on 2 cores: ~0.97x in-process against
     * ~0.6x with one core each); concurrent sessions then share one batch per pipeline
     * (s_inflight), which takes the stages in turn on all the cores as well. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = o->threads_per_worker ? o->threads_per_worker : (int)(cpus > 1 ? cpus : 1);
    char loader_ep[300], control_ep[300], results_ep[300], clients_ep[300];
    snprintf(loader_ep, sizeof loader_ep, "ipc://%s/loader", p->run_dir);
    snprintf(control_ep, sizeof control_ep, "ipc://%s/control", p->run_dir);
    snprintf(results_ep, sizeof results_ep, "ipc://%s/results", p->run_dir);
    if (o->endpoint)
        snprintf(clients_ep, sizeof clients_ep, "%s", o->endpoint);
    else
        snprintf(clients_ep, sizeof clients_ep, "ipc://%s/clients", p->run_dir);
    s_connectable(clients_ep, p->clients_endpoint, sizeof p->clients_endpoint, true);

    char bin[PATH_MAX + 32];
    snprintf(bin, sizeof bin, "%s/llorch-loader", dir);
    char *loader_argv[] = {bin, "-m", (char *)o->model, "--endpoint", loader_ep,
                           o->layout ? "--layout" : NULL, (char *)o->layout, NULL};
    if (s_spawn(p, "loader", loader_argv, o->quiet, err) != 0)
        goto fail;
    snprintf(bin, sizeof bin, "%s/llorch-router", dir);
    char *router_argv[12 + UP_MAX_ROUTER_EXTRA] = {bin, "--loader", loader_ep, "--control",
                                                   control_ep, "--results", results_ep,
                                                   "--clients", clients_ep, NULL};
    int n_argv = 9;
    for (int k = 0; k < o->n_router_extra; k++)
        router_argv[n_argv++] = (char *)o->router_extra[k];
    char inflight_s[16];
    const int inflight = s_inflight(o, n, threads, cpus);
    if (inflight > 0) {
        snprintf(inflight_s, sizeof inflight_s, "%d", inflight);
        router_argv[n_argv++] = "--max-inflight";
        router_argv[n_argv++] = inflight_s;
        if (!o->quiet)
            fprintf(stderr, "llorch up: %d workers x %d threads share %ld CPUs: up to %d "
                    "batch%s in flight per pipeline (--max-inflight to change)\n", n, threads,
                    cpus, inflight, inflight > 1 ? "es" : "");
    }
    if (s_spawn(p, "router", router_argv, o->quiet, err) != 0)
        goto fail;
    for (int i = 0; i < n; i++) {
        char name[64], layers[32], bind[300], id[32], threads_s[16];
        snprintf(name, sizeof name, "worker %d (layers %u:%u)", i, ranges[i][0], ranges[i][1]);
        snprintf(layers, sizeof layers, "%u:%u", ranges[i][0], ranges[i][1]);
        snprintf(bind, sizeof bind, "ipc://%s/worker-%d", p->run_dir, i);
        snprintf(id, sizeof id, "w%d-%u-%u", i, ranges[i][0], ranges[i][1]);
        snprintf(threads_s, sizeof threads_s, "%d", threads);
        snprintf(bin, sizeof bin, "%s/llorch-worker", dir);
        char *argv[22] = {bin, "--loader", loader_ep, "--router", control_ep, "--bind", bind,
                          "--layers", layers, "--threads", threads_s, "--id", id};
        int k = 13;
        if (o->kv_budget) {
            argv[k++] = "--kv-budget";
            argv[k++] = (char *)o->kv_budget;
        }
        if (o->kv_type) {
            argv[k++] = "--kv-type";
            argv[k++] = (char *)o->kv_type;
        }
        if (o->verify)
            argv[k++] = "--verify";
        argv[k] = NULL;
        if (s_spawn(p, name, argv, o->quiet, err) != 0)
            goto fail;
    }

    /* Ready when the router's STATS show a pipeline covering every layer. */
    char ping_ep[300];
    s_connectable(clients_ep, ping_ep, sizeof ping_ep, false);
    char errbuf[512];
    llorch_client *c = llorch_connect(ping_ep, NULL, errbuf, sizeof errbuf);
    if (!c) {
        llorch_error_set(err, "%s", errbuf);
        goto fail;
    }
    for (;;) {
        int status, dead = s_reap(p, &status);
        if (dead >= 0) {
            s_describe_exit(&p->children[dead], status, err);
            llorch_error_prefix(err, "while starting");
            break;
        }
        if (proc_stop_signal()) {
            llorch_error_set(err, "stopped by signal %d while starting", proc_stop_signal());
            break;
        }
        llorch_stat stats[64];
        size_t n_stats = 0;
        if (llorch_stats(c, stats, 64, &n_stats, 500, errbuf, sizeof errbuf) == 0 &&
            llorch_stat_get(stats, n_stats, "pipelines_ready") >= 1) {
            llorch_close(&c);
            p->ready_ms = (double)proc_now_ms() - p->start_ms;
            return 0;
        }
        s_sleep_ms(50);
    }
    llorch_close(&c);
fail:
    up_stop(p);
    return -1;
}

int up_wait(up_pipeline *p, llorch_error *err)
{
    for (;;) {
        if (proc_stop_signal())
            return 0;
        int status, dead = s_reap(p, &status);
        if (dead >= 0) {
            s_describe_exit(&p->children[dead], status, err);
            return -1;
        }
        s_sleep_ms(100);
    }
}

/* Unlinks /dev/shm/llorch-*-<pid>: what a loader killed before its clean-up leaves. */
static void s_remove_segments(pid_t loader_pid)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    char suffix[32];
    snprintf(suffix, sizeof suffix, "-%d", (int)loader_pid);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name), sl = strlen(suffix);
        if (!strncmp(e->d_name, "llorch-", 7) && len > sl &&
            !strcmp(e->d_name + len - sl, suffix)) {
            char name[300];
            snprintf(name, sizeof name, "/%s", e->d_name);
            shm_unlink(name);
        }
    }
    closedir(d);
}

void up_stop(up_pipeline *p)
{
    for (int i = 0; i < p->n_children; i++)
        if (p->children[i].pid > 0)
            kill(p->children[i].pid, SIGTERM);
    const int64_t deadline = proc_now_ms() + UP_STOP_GRACE_MS;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < p->n_children; i++) {
            up_child *c = &p->children[i];
            if (c->pid > 0 && waitpid(c->pid, NULL, WNOHANG) == c->pid)
                c->pid = -c->pid;
            alive += c->pid > 0;
        }
        if (!alive)
            break;
        if (proc_now_ms() >= deadline) {
            for (int i = 0; i < p->n_children; i++) {
                up_child *c = &p->children[i];
                if (c->pid > 0) {
                    fprintf(stderr, "llorch up: %s (pid %d) ignored SIGTERM for %d ms: killed\n",
                            c->name, c->pid, UP_STOP_GRACE_MS);
                    kill(c->pid, SIGKILL);
                    waitpid(c->pid, NULL, 0);
                    c->pid = -c->pid;
                }
            }
            break;
        }
        s_sleep_ms(20);
    }
    for (int i = 0; i < p->n_children; i++)
        if (!strcmp(p->children[i].name, "loader") && p->children[i].pid < 0)
            s_remove_segments(-p->children[i].pid);
    if (p->run_dir[0]) {
        llorch_error err = {0};
        if (proc_run_dir_remove(p->run_dir, &err) != 0)
            fprintf(stderr, "llorch up: %s\n", err.msg);
        p->run_dir[0] = '\0';
    }
}

void up_print_logs(const up_pipeline *p)
{
    for (int i = 0; i < p->n_children; i++) {
        const up_child *c = &p->children[i];
        if (!c->log_path[0])
            continue;
        FILE *f = fopen(c->log_path, "r");
        if (!f)
            continue;
        char lines[8][512];
        int n = 0;
        while (fgets(lines[n % 8], sizeof lines[0], f))
            n++;
        fclose(f);
        for (int k = n > 8 ? n - 8 : 0; k < n; k++)
            fprintf(stderr, "  %s| %s", c->name, lines[k % 8]);
    }
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch up -m MODEL --workers K [options]\n"
            "\n"
            "Starts a loader, K workers and a router on this host, prints the router's client\n"
            "endpoint when the pipeline is ready, and stays in the foreground; Ctrl-C or\n"
            "SIGTERM stops all of them and removes the run directory /tmp/llorch-<pid>.\n"
            "\n"
            "  -m, --model PATH            GGUF model file\n"
            "  --workers K                 workers (default 1, or one per --split range)\n"
            "  --split F:L,F:L,...         layer range of each worker (default: even split);\n"
            "                              repeated ranges make several pipelines\n"
            "  --threads-per-worker T      threads of each worker (default: the CPUs online;\n"
            "                              stages take turns on them)\n"
            "  --endpoint EP               the client endpoint (default ipc://RUN_DIR/clients)\n"
            "  --kv-budget B               KV cache bytes per worker (e.g. 512M)\n"
            "  --kv-type f32|f16           how the workers' KV caches store keys and values\n"
            "                              (default f32; f16 takes half the bytes)\n"
            "  --verify                    workers check the digests of their tensors in\n"
            "                              the shared segment before serving\n"
            "  --layout auto|rows          how the loader lays out Q8_0 matrices: auto\n"
            "                              (default) repacks them for this CPU's kernels,\n"
            "                              rows keeps the file's order (and ggml's arithmetic)\n"
            "  --http ADDR:PORT            serve the OpenAI-compatible HTTP API there; the\n"
            "                              router's --http-* options, --api-key-file and\n"
            "                              --config are passed on (llorch-router --help)\n"
            "  --max-batch N, --max-inflight N, --prompt-chunk N, --max-queue N,\n"
            "  --max-sessions N, --heartbeat-ms MS, --liveness N\n"
            "                              passed on to the router (llorch-router --help)\n"
            "  -h, --help                  this help\n"
            "\n"
            "Then: llorch generate --router EP -p PROMPT, or libllorch (llorch.h).\n");
}

/* The router's scheduling options that `up` passes on as they are. */
static bool s_router_option(const char *a)
{
    static const char *const names[] = {"--max-batch", "--max-inflight", "--prompt-chunk",
                                        "--max-queue", "--max-sessions", "--heartbeat-ms",
                                        "--liveness"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (!strcmp(a, names[k]))
            return true;
    return false;
}

/* Parses the options shared by `up` and `generate --workers`: returns 1 when argv[*i]
 * was one of them (its value consumed), 0 when not, -1 on a bad value. */
int up_parse_option(up_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--verify")) {
        o->verify = true;
        return 1;
    }
    const bool known = !strcmp(a, "--workers") || !strcmp(a, "--split") ||
                       !strcmp(a, "--threads-per-worker") || !strcmp(a, "--endpoint") ||
                       !strcmp(a, "--kv-budget") || !strcmp(a, "--kv-type") ||
                       !strcmp(a, "--layout");
    if (!known)
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "llorch: %s needs a value\n", a);
        return -1;
    }
    const char *v = argv[++*i];
    llorch_error err = {0};
    long n;
    if (!strcmp(a, "--workers")) {
        if (proc_parse_long(a, v, 1, UP_MAX_WORKERS, &n, &err) != 0)
            goto bad;
        o->n_workers = (int)n;
    } else if (!strcmp(a, "--threads-per-worker")) {
        if (proc_parse_long(a, v, 1, 1024, &n, &err) != 0)
            goto bad;
        o->threads_per_worker = (int)n;
    } else if (!strcmp(a, "--split")) {
        o->split = v;
    } else if (!strcmp(a, "--endpoint")) {
        o->endpoint = v;
    } else if (!strcmp(a, "--layout")) {
        if (strcmp(v, "auto") && strcmp(v, "rows")) {
            llorch_error_set(&err, "--layout '%s': give auto or rows", v);
            goto bad;
        }
        o->layout = v;
    } else if (!strcmp(a, "--kv-type")) {
        kv_type t;
        if (kv_type_parse(v, &t, &err) != 0) {
            llorch_error_prefix(&err, "--kv-type");
            goto bad;
        }
        o->kv_type = v;
    } else {
        uint64_t bytes;
        if (proc_parse_bytes(v, &bytes, &err) != 0)
            goto bad;
        o->kv_budget = v;
    }
    return 1;
bad:
    fprintf(stderr, "llorch: %s\n", err.msg);
    return -1;
}

int cmd_up(int argc, char **argv)
{
    up_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage(stdout);
            return 0;
        }
        int r = up_parse_option(&o, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            o.model = argv[++i];
        } else if ((!strncmp(a, "--http", 6) || !strcmp(a, "--api-key-file") ||
                    !strcmp(a, "--config") || s_router_option(a)) && i + 1 < argc &&
                   o.n_router_extra + 2 <= UP_MAX_ROUTER_EXTRA) {
            o.router_extra[o.n_router_extra++] = a;
            o.router_extra[o.n_router_extra++] = argv[++i];
        } else {
            fprintf(stderr, "llorch up: unknown option %s\n\n", a);
            s_usage(stderr);
            return 2;
        }
    }
    if (!o.model) {
        fprintf(stderr, "llorch up: -m MODEL is required\n\n");
        s_usage(stderr);
        return 2;
    }
    llorch_error err = {0};
    if (proc_signals_install(&err) != 0) {
        fprintf(stderr, "llorch up: %s\n", err.msg);
        return 1;
    }
    up_pipeline p;
    if (up_start(&o, &p, &err) != 0) {
        fprintf(stderr, "llorch up: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "llorch up: ready in %.0f ms: %d processes, run dir %s; Ctrl-C stops\n",
            p.ready_ms, p.n_children, p.run_dir);
    printf("%s\n", p.clients_endpoint);
    fflush(stdout);
    int rc = up_wait(&p, &err);
    if (rc != 0)
        fprintf(stderr, "llorch up: %s: stopping the others\n", err.msg);
    up_stop(&p);
    return rc == 0 ? 0 : 1;
}
