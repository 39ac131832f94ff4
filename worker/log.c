/* JSON-line logging for Cloud Logging: severity, time, message, and caller-supplied members. */
#include "worker/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
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

/* The length of the well-formed UTF-8 sequence at s (2-4), or 0 when s (NUL-terminated) does not start one. */
static size_t utf8_seq_len(const unsigned char *s)
{
    unsigned cp;
    size_t n;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        cp = s[0] & 0x1fu;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        cp = s[0] & 0x0fu;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) { /* stops at the NUL: it is no continuation byte */
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0; /* overlong, a surrogate, or beyond Unicode */
    return n;
}

/*
 * Whole pieces only: an escape or a UTF-8 character is copied entirely or not at all, so that a
 * cut string is still a valid JSON string. Bytes that are not UTF-8 become \ufffd (a log line
 * with them is not JSON that Cloud Logging or any strict parser reads).
 */
char *pw_log_escape(const char *s, char *out, size_t cap)
{
    if (cap == 0)
        return out;
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0';) {
        char piece[8];
        size_t k, used = 1;
        if (*p == '"' || *p == '\\') {
            piece[0] = '\\';
            piece[1] = (char)*p;
            k = 2;
        } else if (*p < 0x20) {
            k = (size_t)snprintf(piece, sizeof piece, "\\u%04x", *p);
        } else if (*p < 0x80) {
            piece[0] = (char)*p;
            k = 1;
        } else if ((used = utf8_seq_len(p)) > 0) {
            memcpy(piece, p, used);
            k = used;
        } else {
            memcpy(piece, "\\ufffd", 6);
            k = 6;
            used = 1;
        }
        if (o + k >= cap)
            break;
        memcpy(out + o, piece, k);
        o += k;
        p += used;
    }
    out[o] = '\0';
    return out;
}

/* Written in place of members that do not fit in a line. */
static const char dropped_members[] = "\"logTruncated\":true";

void pw_log(pw_log_level_t level, const char *extra_json, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[1024], line[PW_LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    /* Time in UTC from the wall clock, formatted without local time. */
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int head = snprintf(line, sizeof line, "{\"severity\":\"%s\",\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"message\":\"",
                        severity_names[level], tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                        (long)tv.tv_usec);
    if (head < 0 || (size_t)head >= sizeof line)
        return;
    /*
     * The line stays valid JSON whatever the lengths: a message too long is cut at a whole escape
     * or character (pw_log_escape), and members that would leave the message less than
     * PW_LOG_MESSAGE_MIN bytes are replaced by "logTruncated":true (they cannot be cut safely:
     * they are already JSON).
     */
    size_t room = sizeof line - (size_t)head - 4; /* the closing quote, '}', '\n' and NUL */
    const char *members = extra_json;
    size_t members_len = members != NULL ? strlen(members) : 0;
    if (members != NULL && members_len + 1 + PW_LOG_MESSAGE_MIN > room) {
        members = dropped_members;
        members_len = sizeof dropped_members - 1;
    }
    size_t message_room = room - (members != NULL ? members_len + 1 : 0);
    pw_log_escape(msg, line + head, message_room + 1);
    size_t n = (size_t)head + strlen(line + head);
    line[n++] = '"';
    if (members != NULL) {
        line[n++] = ',';
        memcpy(line + n, members, members_len);
        n += members_len;
    }
    line[n++] = '}';
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
