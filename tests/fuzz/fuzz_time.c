/*
 * libFuzzer target: proto/time.c (pw_time_from_unix_text, pw_time_from_unix_double,
 * pw_time_parse_rfc3339, pw_time_format_iso_seconds, pw_time_format_pg).
 *
 * Invariants (abort() on a violation):
 *   - every success lies in the documented range: 0 < t <= 9999-12-31T23:59:59.999999Z;
 *   - RFC 3339 is stable: t = parse(x); parse(format_iso_seconds(t)) is t truncated to the second
 *     (except below one second: the epoch itself is "absent" and refused with PW_ERANGE), and
 *     formatting that again gives the same text; the pg format, read back as RFC 3339 (' ' -> 'T',
 *     "+00" -> "Z"), gives t exactly;
 *   - the formatters write exactly 20 / 29 characters plus the NUL, for any int64 (clamped);
 *   - a Unix time given as text and the same text read as a double (the two ways a webhook may
 *     send it, string or JSON number) agree within the double's precision, except at the
 *     documented edges (text truncates sub-microsecond digits, the double rounds; the seconds/ms
 *     threshold; the upper limit).
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/pw_str.h"
#include "proto/time.h"

#define US 1000000LL
#define MAX_US (PW_TIME_MAX_SECONDS * US + US - 1)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_result(int rc, pw_time_us_t t, const char *err)
{
    CHECK(rc == 0 || rc == PW_EINVAL || rc == PW_ERANGE);
    CHECK(memchr(err, '\0', 128) != NULL);
    if (rc == 0)
        CHECK(t > 0 && t <= MAX_US);
}

static void check_formats(pw_time_us_t t)
{
    char iso[21 + 8], pg[30 + 8];
    memset(iso, 0x7f, sizeof iso);
    memset(pg, 0x7f, sizeof pg);
    pw_time_format_iso_seconds(t, iso);
    pw_time_format_pg(t, pg);
    CHECK(strlen(iso) == 20 && (unsigned char)iso[21] == 0x7f);
    CHECK(strlen(pg) == 29 && (unsigned char)pg[30] == 0x7f);
}

/* format/parse stability for a t that a parser returned. */
static void check_roundtrip(pw_time_us_t t)
{
    char iso[21], iso2[21], pg[30], err[128];
    pw_time_us_t t2 = 0, t3 = 0;

    pw_time_format_iso_seconds(t, iso);
    int rc = pw_time_parse_rfc3339(iso, strlen(iso), &t2, err, sizeof err);
    if (t < US) {
        /* 1970-01-01T00:00:00.5Z formats as the epoch, which every parser refuses (0 = absent). */
        CHECK(rc == PW_ERANGE);
    } else {
        CHECK(rc == 0 && t2 == t - t % US);
        pw_time_format_iso_seconds(t2, iso2);
        CHECK(strcmp(iso, iso2) == 0);
    }

    pw_time_format_pg(t, pg); /* "YYYY-MM-DD HH:MM:SS.ffffff+00" */
    CHECK(pg[10] == ' ' && strcmp(pg + 26, "+00") == 0);
    pg[10] = 'T';
    pg[26] = 'Z';
    pg[27] = '\0';
    rc = pw_time_parse_rfc3339(pg, 27, &t3, err, sizeof err);
    CHECK(rc == 0 && t3 == t);
}

/* Is the text "digits[.digits]" (what both Unix readers can take)? */
static int plain_number(const char *s, size_t n)
{
    size_t i = 0, dots = 0;
    if (n == 0 || n > 64)
        return 0;
    for (; i < n; i++) {
        if (s[i] == '.')
            dots++;
        else if (s[i] < '0' || s[i] > '9')
            return 0;
    }
    return dots <= 1 && s[0] != '.' && s[n - 1] != '.';
}

static void compare_text_and_double(const char *s, size_t n, int rc_text, pw_time_us_t t_text)
{
    char buf[65], err[128];
    pw_time_us_t t_dbl = 0;

    if (!plain_number(s, n))
        return;
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    double v = strtod(buf, NULL);
    int rc_dbl = pw_time_from_unix_double(v, &t_dbl, err, sizeof err);
    /* The documented edges where the two may disagree: rounding across the seconds/ms threshold
       or the upper limit, and text truncating what the double rounds up (below 1 us). */
    int edge = fabs(v - (double)PW_TIME_MS_THRESHOLD) < 1.0 || v > (double)PW_TIME_MAX_SECONDS * 1000 - 2 || v < 2e-6;
    if (edge)
        return;
    CHECK((rc_text == 0) == (rc_dbl == 0));
    if (rc_text == 0) {
        /* A double has ~15.9 significant digits: allow its error plus 1 us of rounding vs truncation. */
        double tol = fabs((double)t_text) * 4e-16 + 2.0;
        CHECK(fabs((double)t_text - (double)t_dbl) <= tol);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char err[128];
    pw_time_us_t t;
    int rc;

    /* Unix text. */
    memset(err, 0, sizeof err);
    t = 0;
    rc = pw_time_from_unix_text(s, size, &t, err, sizeof err);
    check_result(rc, t, err);
    if (rc == 0)
        check_roundtrip(t);
    compare_text_and_double(s, size, rc, t);

    /* RFC 3339. */
    memset(err, 0, sizeof err);
    t = 0;
    rc = pw_time_parse_rfc3339(s, size, &t, err, sizeof err);
    check_result(rc, t, err);
    if (rc == 0)
        check_roundtrip(t);

    /* The first 8 bytes as a double (any bit pattern: NaN, infinities, subnormals) and as an int64. */
    if (size >= 8) {
        double v;
        int64_t i64;
        memcpy(&v, data, 8);
        memcpy(&i64, data, 8);
        memset(err, 0, sizeof err);
        t = 0;
        rc = pw_time_from_unix_double(v, &t, err, sizeof err);
        check_result(rc, t, err);
        if (rc == 0)
            check_roundtrip(t);
        check_formats(i64);
        if (i64 > 0 && i64 <= MAX_US)
            check_roundtrip(i64);
    }
    return 0;
}
