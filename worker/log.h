/* Structured logs: one JSON object per line on stderr, in Cloud Logging's format. */
#ifndef PW_LOG_H
#define PW_LOG_H

#include <stddef.h>

/* A log line's length at most, newline included (longer ones are cut, and stay valid JSON). */
#define PW_LOG_LINE_MAX 4096
/* The message keeps at least this many bytes: members that would leave less are dropped. */
#define PW_LOG_MESSAGE_MIN 256

typedef enum { PW_LOG_DEBUG = 0, PW_LOG_INFO, PW_LOG_WARNING, PW_LOG_ERROR, PW_LOG_CRITICAL } pw_log_level_t;

/* Sets the lowest level written (default INFO). Call before threads start. */
void pw_log_set_level(pw_log_level_t level);
/* Parses "debug" "info" "warning" "error" (case-insensitive); returns -1 when unknown. */
int pw_log_parse_level(const char *s);
int pw_log_enabled(pw_log_level_t level);

/**
 * Writes {"severity":..,"time":..,"message":..} plus extra members. extra_json is either NULL or
 * the text of further members without braces (`"k":1,"s":"v"`), already escaped by the caller
 * (see pw_log_escape). Never pass tokens, full phone numbers or message bodies. Thread-safe: one
 * write(2) per line of at most PW_LOG_LINE_MAX bytes, always one valid JSON object: a long message
 * is cut at a whole character, and members that do not fit are replaced by "logTruncated":true.
 */
void pw_log(pw_log_level_t level, const char *extra_json, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/**
 * Copies s as JSON string content (no quotes) into out (cap bytes with the NUL); returns out.
 * When it does not fit it is cut before a whole escape or UTF-8 character, never inside one;
 * bytes that are not UTF-8 are written as \ufffd. The result is always a valid JSON string.
 */
char *pw_log_escape(const char *s, char *out, size_t cap);

#define pw_log_debug(...) pw_log(PW_LOG_DEBUG, NULL, __VA_ARGS__)
#define pw_log_info(...) pw_log(PW_LOG_INFO, NULL, __VA_ARGS__)
#define pw_log_warning(...) pw_log(PW_LOG_WARNING, NULL, __VA_ARGS__)
#define pw_log_error(...) pw_log(PW_LOG_ERROR, NULL, __VA_ARGS__)

#endif
