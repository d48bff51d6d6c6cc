/* proc.c - stop signals, host identity, option parsing and run directories for process binaries. */
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t s_stop_signal;

static void s_on_signal(int sig)
{
    s_stop_signal = sig;
}

int proc_signals_install(llorch_error *err)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR */
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return llorch_error_set(err, "cannot install signal handlers: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int proc_stop_signal(void)
{
    return (int)s_stop_signal;
}

/* Reads the first line of path into out (n bytes), trimmed; 0 or -1. */
static int s_read_line(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *got = fgets(out, (int)n, f);
    fclose(f);
    if (!got)
        return -1;
    size_t len = strcspn(out, "\r\n \t");
    out[len] = 0;
    return len ? 0 : -1;
}

int proc_host_id(char *out, size_t n, llorch_error *err)
{
    char machine[256], boot[64];
    if (s_read_line("/etc/machine-id", machine, sizeof machine) != 0 &&
        s_read_line("/var/lib/dbus/machine-id", machine, sizeof machine) != 0) {
        if (gethostname(machine, sizeof machine) != 0 || !machine[0])
            return llorch_error_set(err, "cannot identify this host: no /etc/machine-id and no "
                                         "host name (%s)", strerror(errno));
        machine[sizeof machine - 1] = 0;
    }
    if (s_read_line("/proc/sys/kernel/random/boot_id", boot, sizeof boot) != 0)
        snprintf(boot, sizeof boot, "noboot");
    snprintf(out, n, "%s/%s", machine, boot);
    return 0;
}

int proc_parse_bytes(const char *s, uint64_t *out, llorch_error *err)
{
    if (!s || !*s)
        return llorch_error_set(err, "empty byte count; give e.g. 512M or 2G");
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || s[0] == '-')
        return llorch_error_set(err, "'%s' is not a byte count; give e.g. 512M or 2G", s);
    unsigned shift = 0;
    switch (*end) {
    case 0: break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default:
        return llorch_error_set(err, "'%s': unknown suffix (K, M, G or T accepted)", s);
    }
    if (shift && (!strcmp(end, "iB") || !strcmp(end, "B")))
        end += strlen(end);
    if (*end)
        return llorch_error_set(err, "'%s': trailing characters after the byte count", s);
    if (shift && v > (UINT64_MAX >> shift))
        return llorch_error_set(err, "'%s' is too large", s);
    *out = (uint64_t)v << shift;
    return 0;
}

int proc_parse_range(const char *s, uint32_t *first, uint32_t *last, llorch_error *err)
{
    unsigned long a, b;
    char *end;
    if (!s || !*s || s[0] == '-')
        return llorch_error_set(err, "layer range '%s': give FIRST:LAST, e.g. 0:8", s ? s : "");
    errno = 0;
    a = strtoul(s, &end, 10);
    if (end == s || *end != ':' || errno || end[1] == '-')
        return llorch_error_set(err, "layer range '%s': give FIRST:LAST, e.g. 0:8", s);
    const char *s2 = end + 1;
    b = strtoul(s2, &end, 10);
    if (end == s2 || *end || errno)
        return llorch_error_set(err, "layer range '%s': give FIRST:LAST, e.g. 0:8", s);
    if (a >= b || b > 65536)
        return llorch_error_set(err, "layer range '%s': FIRST must be below LAST (layers "
                                     "[FIRST, LAST))", s);
    *first = (uint32_t)a;
    *last = (uint32_t)b;
    return 0;
}

int proc_parse_long(const char *opt, const char *s, long min, long max, long *out,
                    llorch_error *err)
{
    errno = 0;
    char *end;
    long v = strtol(s ? s : "", &end, 10);
    if (!s || end == s || *end || errno || v < min || v > max)
        return llorch_error_set(err, "%s: '%s' is not an integer in [%ld, %ld]", opt,
                                s ? s : "", min, max);
    *out = v;
    return 0;
}

int proc_parse_seed(const char *opt, const char *s, uint64_t *out, llorch_error *err)
{
    if (s && !strcmp(s, "-1")) {
        *out = UINT64_MAX;
        return 0;
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s ? s : "", &end, 10);
    if (!s || end == s || *end || errno || s[0] == '-')
        return llorch_error_set(err, "%s: '%s' is not a non-negative integer or -1", opt,
                                s ? s : "");
    *out = v;
    return 0;
}

int proc_parse_float(const char *opt, const char *s, float *out, llorch_error *err)
{
    errno = 0;
    char *end;
    float v = strtof(s ? s : "", &end);
    if (!s || end == s || *end || errno || !isfinite(v))
        return llorch_error_set(err, "%s: '%s' is not a number", opt, s ? s : "");
    *out = v;
    return 0;
}

char *proc_run_dir_new(const char *prefix, llorch_error *err)
{
    const char *base = getenv("XDG_RUNTIME_DIR");
    if (!base || !*base || access(base, W_OK) != 0)
        base = "/tmp";
    size_t n = strlen(base) + strlen(prefix) + 16;
    char *path = malloc(n);
    if (!path) {
        llorch_error_set(err, "out of memory");
        return NULL;
    }
    snprintf(path, n, "%s/%s-XXXXXX", base, prefix);
    if (!mkdtemp(path)) {
        llorch_error_set(err, "cannot create a run directory under %s: %s", base,
                         strerror(errno));
        free(path);
        return NULL;
    }
    return path;
}

int proc_run_dir_remove(const char *dir, llorch_error *err)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[PATH_MAX];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    if (rmdir(dir) != 0 && errno != ENOENT)
        return llorch_error_set(err, "cannot remove run directory %s: %s", dir, strerror(errno));
    return 0;
}

int proc_run_dirs_sweep(const char *base, const char *prefix)
{
    DIR *d = opendir(base);
    if (!d)
        return 0;
    const size_t plen = strlen(prefix);
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, plen) != 0 || e->d_name[plen] != '-')
            continue;
        char *end;
        errno = 0;
        const long pid = strtol(e->d_name + plen + 1, &end, 10);
        if (errno || end == e->d_name + plen + 1 || *end != '-' || pid <= 0 || pid > INT_MAX)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* running (or not ours to signal: leave it) */
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", base, e->d_name);
        if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
            continue;
        if (proc_run_dir_remove(path, NULL) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

int proc_pread_all(int fd, void *buf, size_t n, uint64_t offset)
{
    const size_t piece = (size_t)64 << 20;
    for (size_t got = 0; got < n;) {
        const size_t want = n - got < piece ? n - got : piece;
        const ssize_t r = pread(fd, (uint8_t *)buf + got, want, (off_t)(offset + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO; /* the file ended first */
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

bool proc_endpoint_in_use(const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) != 0)
        return false;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    const char *path = endpoint + 6;
    if (!*path || *path == '@' || strlen(path) >= sizeof addr.sun_path)
        return false;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool live = connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
    close(fd);
    return live;
}

int64_t proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
