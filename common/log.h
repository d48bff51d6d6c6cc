/* log.h - one-line, levelled log records on stderr for every llorch process. */
#ifndef LLORCH_LOG_H
#define LLORCH_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Sets the process name shown in every record (e.g. "worker[0:8]") and the lowest
 * level printed. The name is copied. LLORCH_LOG_LEVEL=debug|info|warn|error in the
 * environment overrides min_level. */
void log_init(const char *process_name, enum log_level min_level);

/* Writes "2026-11-26T12:00:00.123Z INFO  name: message" as one line (one write). */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
