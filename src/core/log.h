/* log.h - leveled logging to stderr. */
#ifndef MR_LOG_H
#define MR_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_threshold;

/* Parse "error|warn|info|debug"; returns -1 when unknown. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level l);

void log_msg(enum log_level l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_enabled(l) ((l) <= log_threshold)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  do { if (log_enabled(LOG_WARN)) log_msg(LOG_WARN, __VA_ARGS__); } while (0)
#define log_info(...)  do { if (log_enabled(LOG_INFO)) log_msg(LOG_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
