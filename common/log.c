/* log.c - levelled one-line log records, written with a single write(2) each. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static char s_name[64] = "llorch";
static enum log_level s_min_level = LOG_INFO;

void log_init(const char *process_name, enum log_level min_level)
{
    if (process_name)
        snprintf(s_name, sizeof s_name, "%s", process_name);
    s_min_level = min_level;
    const char *env = getenv("LLORCH_LOG_LEVEL");
    if (env) {
        if (!strcasecmp(env, "debug")) s_min_level = LOG_DEBUG;
        else if (!strcasecmp(env, "info")) s_min_level = LOG_INFO;
        else if (!strcasecmp(env, "warn")) s_min_level = LOG_WARN;
        else if (!strcasecmp(env, "error")) s_min_level = LOG_ERROR;
    }
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < s_min_level)
        return;
    static const char *names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[1024];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level], s_name);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line - 1)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
