/* Unit tests for proto/time.c: Unix seconds/ms, RFC 3339, formatting; expected values from `date -u -d @N`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/pw_str.h"
#include "proto/time.h"

#define S 1000000LL /* microseconds per second */

static void expect_iso(pw_time_us_t t, const char *want)
{
    char out[21];
    pw_time_format_iso_seconds(t, out);
    assert_string_equal(out, want);
}

static void expect_pg(pw_time_us_t t, const char *want)
{
    char out[30];
    pw_time_format_pg(t, out);
    assert_string_equal(out, want);
}

static void expect_text(const char *s, int want_rc, pw_time_us_t want)
{
    pw_time_us_t t = -7;
    char err[128] = "";
    int rc = pw_time_from_unix_text(s, strlen(s), &t, err, sizeof(err));
    if (rc != want_rc)
        print_error("input \"%s\": err \"%s\"\n", s, err);
    assert_int_equal(rc, want_rc);
    if (want_rc == 0)
        assert_int_equal(t, want);
    else
        assert_true(err[0] != '\0');
}

static void expect_rfc(const char *s, int want_rc, pw_time_us_t want)
{
    pw_time_us_t t = -7;
    char err[128] = "";
    int rc = pw_time_parse_rfc3339(s, strlen(s), &t, err, sizeof(err));
    if (rc != want_rc)
        print_error("input \"%s\": err \"%s\"\n", s, err);
    assert_int_equal(rc, want_rc);
    if (want_rc == 0)
        assert_int_equal(t, want);
    else
        assert_true(err[0] != '\0');
}

static void expect_double(double v, int want_rc, pw_time_us_t want)
{
    pw_time_us_t t = -7;
    char err[128] = "";
    assert_int_equal(pw_time_from_unix_double(v, &t, err, sizeof(err)), want_rc);
    if (want_rc == 0)
        assert_int_equal(t, want);
}

static void test_format_is_utc_whatever_tz(void **state)
{
    (void)state;
    /* A process TZ far from UTC must change nothing: the bug a localtime()-based formatter has. */
    setenv("TZ", "Asia/Kolkata", 1);
    tzset();
    expect_iso(1696329600 * S, "2023-10-03T10:40:00Z"); /* not 16:10:00 (local time with a Z) */
    expect_iso(1727951400 * S, "2024-10-03T10:30:00Z");
    expect_iso(1 * S, "1970-01-01T00:00:01Z");
    expect_iso(1727951400 * S + 999999, "2024-10-03T10:30:00Z"); /* seconds truncated, not rounded */
    expect_pg(1727951400 * S, "2024-10-03 10:30:00.000000+00");
    expect_pg(1727951400 * S + 123456, "2024-10-03 10:30:00.123456+00");
    expect_pg(1 * S + 1, "1970-01-01 00:00:01.000001+00");
    unsetenv("TZ");
    tzset();
}

static void test_format_leap_years_and_2038(void **state)
{
    (void)state;
    expect_iso(951782400 * S, "2000-02-29T00:00:00Z"); /* 2000 is a leap year (divisible by 400) */
    expect_iso(951868800 * S, "2000-03-01T00:00:00Z");
    expect_iso(1709164800 * S, "2024-02-29T00:00:00Z");
    expect_iso(1582934400 * S, "2020-02-29T00:00:00Z");
    expect_iso(4107542400 * S, "2100-03-01T00:00:00Z"); /* 2100 is not */
    expect_iso(4102444800 * S, "2100-01-01T00:00:00Z");
    expect_iso(2147483647 * S, "2038-01-19T03:14:07Z");
    expect_iso(2147483648 * S, "2038-01-19T03:14:08Z"); /* past the 32-bit time_t limit */
    expect_iso(99999999999 * S, "5138-11-16T09:46:39Z");
    expect_iso(253402300799 * S, "9999-12-31T23:59:59Z");
    expect_pg(253402300799 * S + 999999, "9999-12-31 23:59:59.999999+00");
}

static void test_format_clamps_out_of_range(void **state)
{
    (void)state;
    expect_iso(-5 * S, "1970-01-01T00:00:00Z");
    expect_iso(INT64_MAX, "9999-12-31T23:59:59Z");
}

static void test_unix_text_seconds(void **state)
{
    (void)state;
    expect_text("1702207800", 0, 1702207800 * S);
    expect_text("1696329600", 0, 1696329600 * S);
    expect_text("1", 0, 1 * S);
    expect_text("2147483648", 0, 2147483648 * S);
    expect_text("99999999999", 0, 99999999999 * S);         /* just under the threshold: still seconds */
    expect_text("253402300799", 0, 253402300 * S + 799000); /* >= 1e11: read as ms, so 1978, not 9999 */
    expect_text("0001702207800", 0, 1702207800 * S);        /* leading zeros carry no magnitude */
}

static void test_unix_text_milliseconds(void **state)
{
    (void)state;
    expect_text("100000000000", 0, 100000000 * S); /* the threshold itself is ms: 1973-03-03T09:46:40Z */
    expect_text("1702207800000", 0, 1702207800 * S);
    expect_text("1702207800123", 0, 1702207800 * S + 123000);
    expect_text("1702207800123.5", 0, 1702207800 * S + 123500);
    expect_text("253402300799999", 0, 253402300799 * S + 999000);
    expect_text("253402300800000", PW_ERANGE, 0);
}

static void test_unix_text_two_ways_to_be_wrong(void **state)
{
    pw_time_us_t t;
    char iso[21];
    (void)state;
    /* ms read as seconds would be the year 55910; seconds read as ms would be 1970-01-20. */
    assert_int_equal(pw_time_from_unix_text("1702207800000", 13, &t, NULL, 0), 0);
    pw_time_format_iso_seconds(t, iso);
    assert_string_equal(iso, "2023-12-10T11:30:00Z");
    assert_int_equal(pw_time_from_unix_text("1702207800", 10, &t, NULL, 0), 0);
    pw_time_format_iso_seconds(t, iso);
    assert_string_equal(iso, "2023-12-10T11:30:00Z");
    assert_string_not_equal(iso, "1970-01-20T16:50:07Z");
}

static void test_unix_text_fraction(void **state)
{
    (void)state;
    expect_text("1702207800.5", 0, 1702207800 * S + 500000);
    expect_text("1702207800.000001", 0, 1702207800 * S + 1);
    expect_text("1702207800.1234569", 0, 1702207800 * S + 123456); /* truncated to microseconds */
    expect_text("0.5", 0, 500000);
}

static void test_unix_text_rejects(void **state)
{
    (void)state;
    expect_text("", PW_EINVAL, 0);
    expect_text("-1702207800", PW_EINVAL, 0);
    expect_text("+1702207800", PW_EINVAL, 0);
    expect_text(" 1702207800", PW_EINVAL, 0);
    expect_text("1702207800 ", PW_EINVAL, 0);
    expect_text("1.7022078e9", PW_EINVAL, 0);
    expect_text("1702207800e0", PW_EINVAL, 0);
    expect_text("1702207800.", PW_EINVAL, 0);
    expect_text(".5", PW_EINVAL, 0);
    expect_text("17022a7800", PW_EINVAL, 0);
    expect_text("0x65", PW_EINVAL, 0);
    expect_text("2023-12-10T11:30:00Z", PW_EINVAL, 0);
    expect_text("0", PW_ERANGE, 0);
    expect_text("0.0", PW_ERANGE, 0);
    expect_text("99999999999999999999999", PW_ERANGE, 0);
}

static void test_unix_text_error_message(void **state)
{
    pw_time_us_t t;
    char err[128];
    (void)state;
    assert_int_equal(pw_time_from_unix_text("12ab", 4, &t, err, sizeof(err)), PW_EINVAL);
    assert_string_equal(err, "not a Unix time: \"12ab\"");
    assert_int_equal(pw_time_from_unix_text("0", 1, &t, err, sizeof(err)), PW_ERANGE);
    assert_string_equal(err, "time not after 1970-01-01T00:00:00Z");
    /* not NUL-terminated: only len bytes are read */
    assert_int_equal(pw_time_from_unix_text("17022078009999", 10, &t, err, sizeof(err)), 0);
    assert_int_equal(t, 1702207800 * S);
}

static void test_unix_double(void **state)
{
    (void)state;
    expect_double(1702207800.0, 0, 1702207800 * S);
    expect_double(1702207800.5, 0, 1702207800 * S + 500000);
    expect_double(1702207800000.0, 0, 1702207800 * S);
    expect_double(1702207800123.0, 0, 1702207800 * S + 123000);
    expect_double(99999999999.0, 0, 99999999999 * S);
    expect_double(100000000000.0, 0, 100000000 * S);
    expect_double(253402300799999.0, 0, 253402300799 * S + 999000);
    expect_double(253402300800000.0, PW_ERANGE, 0);
    expect_double(0, PW_ERANGE, 0);
    expect_double(-1702207800.0, PW_ERANGE, 0);
    expect_double(NAN, PW_EINVAL, 0);
    expect_double(INFINITY, PW_ERANGE, 0);
    expect_double(-INFINITY, PW_ERANGE, 0);
}

static void test_rfc3339_valid(void **state)
{
    (void)state;
    expect_rfc("2021-02-26T19:13:55.749Z", 0, 1614366835 * S + 749000);
    expect_rfc("2021-02-26T19:13:55Z", 0, 1614366835 * S);
    expect_rfc("2021-02-26T19:13:55.7Z", 0, 1614366835 * S + 700000);
    expect_rfc("2021-02-26T19:13:55.749123Z", 0, 1614366835 * S + 749123);
    expect_rfc("2021-02-26T19:13:55.749123999Z", 0, 1614366835 * S + 749123); /* 9 digits, truncated */
    expect_rfc("2021-02-26t19:13:55z", 0, 1614366835 * S);
    expect_rfc("2024-10-03T16:00:00+05:30", 0, 1727951400 * S); /* = 10:30:00Z */
    expect_rfc("2024-10-03T10:30:00+00:00", 0, 1727951400 * S);
    expect_rfc("2024-10-03T10:30:00-00:00", 0, 1727951400 * S);
    expect_rfc("2023-12-31T23:30:00-01:00", 0, 1704069000 * S); /* crosses into the next year */
    expect_rfc("2000-02-29T00:00:00Z", 0, 951782400 * S);
    expect_rfc("2024-02-29T12:00:00Z", 0, 1709208000 * S);
    expect_rfc("2038-01-19T03:14:08Z", 0, 2147483648 * S);
    expect_rfc("1970-01-01T00:00:00.000001Z", 0, 1);
    expect_rfc("9999-12-31T23:59:59Z", 0, 253402300799 * S);
}

static void test_rfc3339_rejects(void **state)
{
    (void)state;
    expect_rfc("", PW_EINVAL, 0);
    expect_rfc("2021-02-26T19:13:55", PW_EINVAL, 0); /* no offset: would mean local time */
    expect_rfc("2021-02-26 19:13:55Z", PW_EINVAL, 0);
    expect_rfc("2021-02-26T19:13:55.Z", PW_EINVAL, 0);
    expect_rfc("2021-02-26T19:13:55.1234567890Z", PW_EINVAL, 0); /* 10 digits */
    expect_rfc("2021-02-26T19:13:55Z ", PW_EINVAL, 0);
    expect_rfc("2021-02-26T19:13:55+0530", PW_EINVAL, 0);
    expect_rfc("2021-02-26T19:13:55+5:30", PW_EINVAL, 0);
    expect_rfc("2021-02-26T19:13:55+05:30:00", PW_EINVAL, 0);
    expect_rfc("2021-02-26T19:13:55+24:00", PW_EINVAL, 0);
    expect_rfc("2021-2-26T19:13:55Z", PW_EINVAL, 0);
    expect_rfc("+2021-02-26T19:13:55Z", PW_EINVAL, 0);
    expect_rfc("2021-02-30T00:00:00Z", PW_EINVAL, 0);
    expect_rfc("2100-02-29T00:00:00Z", PW_EINVAL, 0); /* 2100 is not a leap year */
    expect_rfc("2023-02-29T00:00:00Z", PW_EINVAL, 0);
    expect_rfc("2021-13-01T00:00:00Z", PW_EINVAL, 0);
    expect_rfc("2021-00-01T00:00:00Z", PW_EINVAL, 0);
    expect_rfc("2021-01-00T00:00:00Z", PW_EINVAL, 0);
    expect_rfc("2021-01-01T24:00:00Z", PW_EINVAL, 0);
    expect_rfc("2021-01-01T00:60:00Z", PW_EINVAL, 0);
    expect_rfc("2016-12-31T23:59:60Z", PW_EINVAL, 0);
    expect_rfc("1700000000", PW_EINVAL, 0);
    expect_rfc("1969-12-31T23:59:59Z", PW_ERANGE, 0);
    expect_rfc("1970-01-01T00:00:00Z", PW_ERANGE, 0);
    expect_rfc("0000-01-01T00:00:00Z", PW_ERANGE, 0);
    expect_rfc("9999-12-31T23:59:59-00:01", PW_ERANGE, 0);
}

static void test_rfc3339_round_trip(void **state)
{
    pw_time_us_t t;
    char iso[21];
    (void)state;
    assert_int_equal(pw_time_parse_rfc3339("2026-03-01T00:00:00+01:00", 25, &t, NULL, 0), 0);
    pw_time_format_iso_seconds(t, iso);
    assert_string_equal(iso, "2026-02-28T23:00:00Z");
    assert_int_equal(pw_time_parse_rfc3339("2024-03-01T00:59:59+01:00", 25, &t, NULL, 0), 0);
    pw_time_format_iso_seconds(t, iso);
    assert_string_equal(iso, "2024-02-29T23:59:59Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_is_utc_whatever_tz),
        cmocka_unit_test(test_format_leap_years_and_2038),
        cmocka_unit_test(test_format_clamps_out_of_range),
        cmocka_unit_test(test_unix_text_seconds),
        cmocka_unit_test(test_unix_text_milliseconds),
        cmocka_unit_test(test_unix_text_two_ways_to_be_wrong),
        cmocka_unit_test(test_unix_text_fraction),
        cmocka_unit_test(test_unix_text_rejects),
        cmocka_unit_test(test_unix_text_error_message),
        cmocka_unit_test(test_unix_double),
        cmocka_unit_test(test_rfc3339_valid),
        cmocka_unit_test(test_rfc3339_rejects),
        cmocka_unit_test(test_rfc3339_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
