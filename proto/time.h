/* Timestamps: Unix seconds or milliseconds and RFC 3339 to UTC microseconds, and back, never through local time. */
#ifndef PW_TIME_H
#define PW_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Microseconds since 1970-01-01T00:00:00Z. */
typedef int64_t pw_time_us_t;

/* Inputs at or above this are read as milliseconds, below it as seconds (1e11 s is the year 5138). */
#define PW_TIME_MS_THRESHOLD 100000000000LL
/* The accepted range: 1970-01-01T00:00:00Z (exclusive: 0 is "absent") to 9999-12-31T23:59:59Z. */
#define PW_TIME_MAX_SECONDS 253402300799LL

/**
 * Reads a Unix time given as decimal digits (seconds or milliseconds, told apart by
 * PW_TIME_MS_THRESHOLD; an optional fraction after '.' is allowed for seconds, e.g. "1702207800.5").
 * No sign, no spaces, no exponent. Returns 0, PW_EINVAL (not a number) or PW_ERANGE (0, or after 9999).
 */
int pw_time_from_unix_text(const char *s, size_t len, pw_time_us_t *out, char *err, size_t errlen);

/* The same for a JSON number already read as a double (json-c): integral or not. */
int pw_time_from_unix_double(double v, pw_time_us_t *out, char *err, size_t errlen);

/**
 * Reads RFC 3339 with a 'Z' or a numeric offset ("2021-02-26T19:13:55.749Z", 0-9 fraction digits,
 * "+05:30"). Returns 0 or PW_EINVAL / PW_ERANGE.
 */
int pw_time_parse_rfc3339(const char *s, size_t len, pw_time_us_t *out, char *err, size_t errlen);

/* Formats as "YYYY-MM-DDTHH:MM:SSZ" (seconds truncated), the form whatsapp_status uses. out: 21 bytes. */
void pw_time_format_iso_seconds(pw_time_us_t t, char out[21]);

/* Formats as "YYYY-MM-DD HH:MM:SS.ffffff+00", unambiguous input for timestamptz. out: 30 bytes. */
void pw_time_format_pg(pw_time_us_t t, char out[30]);

#endif
