/* UTC timestamps from Unix seconds/milliseconds and RFC 3339, and back, by civil-calendar arithmetic (no TZ, no libc time). */
#include "time.h"

#include "pw_str.h"

#define US_PER_S 1000000LL
#define S_PER_DAY 86400LL

/*
 * Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil):
 * exact for every year we accept, and independent of the process's TZ, unlike mktime().
 */
/* A reason quoting (the start of) the input: whole characters, readable, valid UTF-8. */
static int quoted_err(char *err, size_t errlen, const char *what, const char *s, size_t len)
{
    char q[100];
    return pw_set_err(err, errlen, PW_EINVAL, "%s: \"%s\"", what, pw_str_quote(q, sizeof q, pw_str(s, len), 40));
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                   /* [0, 399] */
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int DAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : DAYS[m - 1];
}

/* The one range check every parser ends with: 0 means "absent" to our callers, so it is refused. */
static int check_range(pw_time_us_t us, pw_time_us_t *out, char *err, size_t errlen)
{
    if (us <= 0)
        return pw_set_err(err, errlen, PW_ERANGE, "time not after 1970-01-01T00:00:00Z");
    if (us / US_PER_S > PW_TIME_MAX_SECONDS)
        return pw_set_err(err, errlen, PW_ERANGE, "time after 9999-12-31T23:59:59Z");
    *out = us;
    return 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads up to 6 fraction digits as microseconds (scaled by unit_us per whole unit); the rest is truncated. */
static int64_t fraction_us(const char *s, size_t n, int64_t unit_us)
{
    int64_t v = 0, scale = unit_us;
    for (size_t i = 0; i < n && scale > 1; i++) {
        scale /= 10;
        v += (s[i] - '0') * scale;
    }
    return v;
}

int pw_time_from_unix_text(const char *s, size_t len, pw_time_us_t *out, char *err, size_t errlen)
{
    size_t i = 0, int_digits, frac_start, frac_len = 0, k = 0;
    int64_t whole = 0;

    while (i < len && is_digit(s[i]))
        i++;
    int_digits = i;
    frac_start = i + 1;
    if (i < len && s[i] == '.') {
        for (i++; i < len && is_digit(s[i]); i++)
            frac_len++;
        if (frac_len == 0)
            return pw_set_err(err, errlen, PW_EINVAL, "not a Unix time: no digit after '.'");
    }
    if (int_digits == 0 || i != len)
        return quoted_err(err, errlen, "not a Unix time", s, len);
    while (k + 1 < int_digits && s[k] == '0') /* leading zeros carry no magnitude */
        k++;
    /* 16 significant digits already exceed the largest millisecond value; stop before overflow. */
    if (int_digits - k > 15)
        return pw_set_err(err, errlen, PW_ERANGE, "time after 9999-12-31T23:59:59Z");
    for (; k < int_digits; k++)
        whole = whole * 10 + (s[k] - '0');
    if (whole >= PW_TIME_MS_THRESHOLD)
        return check_range(whole * 1000 + fraction_us(s + frac_start, frac_len, 1000), out, err, errlen);
    return check_range(whole * US_PER_S + fraction_us(s + frac_start, frac_len, US_PER_S), out, err, errlen);
}

int pw_time_from_unix_double(double v, pw_time_us_t *out, char *err, size_t errlen)
{
    if (v != v) /* NaN; the infinities fail the range checks below */
        return pw_set_err(err, errlen, PW_EINVAL, "not a Unix time: not a number");
    if (v <= 0)
        return pw_set_err(err, errlen, PW_ERANGE, "time not after 1970-01-01T00:00:00Z");
    if (v >= (double)PW_TIME_MAX_SECONDS * 1000 + 1000)
        return pw_set_err(err, errlen, PW_ERANGE, "time after 9999-12-31T23:59:59Z");

    /* Split before scaling: v * 1e6 would lose the whole-unit digits' exactness near the top. */
    int is_ms = v >= (double)PW_TIME_MS_THRESHOLD;
    int64_t unit_us = is_ms ? 1000 : US_PER_S;
    int64_t whole = (int64_t)v; /* truncation is floor: v > 0 */
    double frac = (v - (double)whole) * (double)unit_us;
    /* Rounded to the nearest microsecond: below that, a double's digits are noise. */
    return check_range(whole * unit_us + (int64_t)(frac + 0.5), out, err, errlen);
}

/* Reads exactly n digits at s into *v. */
static int read_digits(const char *s, size_t n, int *v)
{
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        *v = *v * 10 + (s[i] - '0');
    }
    return 0;
}

/* Reads "Z" or "+hh:mm"/"-hh:mm" filling the rest of the text; the offset is east of UTC. */
static int read_offset(const char *s, size_t n, int64_t *offset_s)
{
    int hh, mm;
    if (n == 1 && (s[0] == 'Z' || s[0] == 'z')) {
        *offset_s = 0;
        return 0;
    }
    if (n != 6 || (s[0] != '+' && s[0] != '-') || s[3] != ':' || read_digits(s + 1, 2, &hh) != 0 ||
        read_digits(s + 4, 2, &mm) != 0 || hh > 23 || mm > 59)
        return -1;
    *offset_s = (hh * 3600LL + mm * 60LL) * (s[0] == '-' ? -1 : 1);
    return 0;
}

int pw_time_parse_rfc3339(const char *s, size_t len, pw_time_us_t *out, char *err, size_t errlen)
{
    int y, mo, d, h, mi, sec;
    size_t i = 19, frac_len = 0;
    int64_t offset_s;

    /* "YYYY-MM-DDTHH:MM:SS" is fixed width; RFC 3339 allows a lower-case 't' and 'z'. */
    if (len < 20 || read_digits(s, 4, &y) != 0 || s[4] != '-' || read_digits(s + 5, 2, &mo) != 0 || s[7] != '-' ||
        read_digits(s + 8, 2, &d) != 0 || (s[10] != 'T' && s[10] != 't') || read_digits(s + 11, 2, &h) != 0 || s[13] != ':' ||
        read_digits(s + 14, 2, &mi) != 0 || s[16] != ':' || read_digits(s + 17, 2, &sec) != 0)
        goto malformed;
    if (s[i] == '.') {
        for (i++; i < len && is_digit(s[i]); i++)
            frac_len++;
        if (frac_len == 0 || frac_len > 9)
            goto malformed;
    }
    if (read_offset(s + i, len - i, &offset_s) != 0)
        goto malformed;
    /* No leap second: no source we read emits :60, and accepting it would need a rule for it. */
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59)
        return quoted_err(err, errlen, "not a valid date/time", s, len);

    int64_t secs = days_from_civil(y, mo, d) * S_PER_DAY + h * 3600LL + mi * 60LL + sec - offset_s;
    if (secs < 0)
        return pw_set_err(err, errlen, PW_ERANGE, "time not after 1970-01-01T00:00:00Z");
    return check_range(secs * US_PER_S + fraction_us(s + 20, frac_len, US_PER_S), out, err, errlen);

malformed:
    return quoted_err(err, errlen, "not an RFC 3339 time", s, len);
}

/* Writes v as exactly n decimal digits (v fits: callers pass in-range calendar fields). */
static char *put_digits(char *p, int64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + n;
}

typedef struct {
    int64_t year;
    int month, day, hour, minute, second, micro;
} civil_t;

/* Splits t into UTC calendar fields; t outside [0, 9999-12-31T23:59:59.999999Z] is clamped to that range. */
static civil_t to_civil(pw_time_us_t t)
{
    const pw_time_us_t max = PW_TIME_MAX_SECONDS * US_PER_S + (US_PER_S - 1);
    civil_t c;
    if (t < 0)
        t = 0;
    if (t > max)
        t = max;
    int64_t secs = t / US_PER_S, sod = secs % S_PER_DAY;
    c.micro = (int)(t % US_PER_S);
    civil_from_days(secs / S_PER_DAY, &c.year, &c.month, &c.day);
    c.hour = (int)(sod / 3600);
    c.minute = (int)(sod / 60 % 60);
    c.second = (int)(sod % 60);
    return c;
}

/* "YYYY-MM-DD?HH:MM:SS" with the given separator; returns the end. */
static char *put_date_time(char *p, const civil_t *c, char sep)
{
    p = put_digits(p, c->year, 4);
    *p++ = '-';
    p = put_digits(p, c->month, 2);
    *p++ = '-';
    p = put_digits(p, c->day, 2);
    *p++ = sep;
    p = put_digits(p, c->hour, 2);
    *p++ = ':';
    p = put_digits(p, c->minute, 2);
    *p++ = ':';
    return put_digits(p, c->second, 2);
}

void pw_time_format_iso_seconds(pw_time_us_t t, char out[21])
{
    civil_t c = to_civil(t);
    char *p = put_date_time(out, &c, 'T');
    *p++ = 'Z';
    *p = '\0';
}

void pw_time_format_pg(pw_time_us_t t, char out[30])
{
    civil_t c = to_civil(t);
    char *p = put_date_time(out, &c, ' ');
    *p++ = '.';
    p = put_digits(p, c.micro, 6);
    memcpy(p, "+00", 4);
}
