/* JSON-line logging for Cloud Logging: severity, time, message, and caller-supplied members. */
#include "worker/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static pw_log_level_t min_level = PW_LOG_INFO;

static const char *const severity_names[] = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"};

void pw_log_set_level(pw_log_level_t level)
{
    min_level = level;
}

int pw_log_enabled(pw_log_level_t level)
{
    return level >= min_level;
}

int pw_log_parse_level(const char *s)
{
    static const char *const names[] = {"debug", "info", "warning", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    if (strcasecmp(s, "warn") == 0)
        return PW_LOG_WARNING;
    return -1;
}

char *pw_log_escape(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s != '\0' && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return out;
}

void pw_log(pw_log_level_t level, const char *extra_json, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[1024], esc[2048], line[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    /* Time in UTC from the wall clock, formatted without local time. */
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "{\"severity\":\"%s\",\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"message\":\"%s\"%s%s}\n",
                     severity_names[level], tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)tv.tv_usec, pw_log_escape(msg, esc, sizeof esc), extra_json != NULL ? "," : "",
                     extra_json != NULL ? extra_json : "");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) { /* keep the line valid JSON when truncated */
        n = (int)sizeof line - 1;
        line[n - 2] = '}';
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
