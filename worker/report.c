/* `worker report`: the analytics of a window as one self-contained HTML file, its charts inline SVG drawn here. */
#include "worker/report.h"

#include <errno.h>
#include <libpq-fe.h>
#include <math.h> /* isnan, NAN: macros, no libm */
#include <stdarg.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker/util.h"

#define US_PER_DAY (86400LL * 1000000LL)
#define BULLET "\xe2\x80\xa2" /* U+2022, the masking character */
/* Rows of the ranked lists shown at most (failures, inbound types); recipients: --top. */
#define LIST_MAX 15

/* ---- arguments -------------------------------------------------------------------------------- */

static int set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int pw_report_parse_time(const char *s, pw_time_us_t *out, char *err, size_t errlen)
{
    static const char expected[] = "expected an ISO 8601 date (2024-10-01, midnight UTC) or time "
                                   "(2024-10-01T12:00:00Z, 2024-10-01T17:30+05:30; no zone: UTC)";
    size_t len = strlen(s);
    char t[64];
    if (len < 10 || len > 40)
        return set_err(err, errlen, "'%s': %s", s, expected);
    if (len == 10) {
        snprintf(t, sizeof t, "%sT00:00:00Z", s);
    } else {
        memcpy(t, s, len + 1);
        if (t[10] == ' ' || t[10] == 't')
            t[10] = 'T';
        /* HH:MM without seconds: insert ":00". */
        if (len >= 16 && t[16] != ':') {
            memmove(t + 19, t + 16, len - 16 + 1);
            memcpy(t + 16, ":00", 3);
            len += 3;
        }
        /* No zone after the seconds (and their fraction): UTC. */
        size_t i = 19;
        if (i < len && t[i] == '.')
            for (i++; i < len && t[i] >= '0' && t[i] <= '9'; i++)
                ;
        if (i == len && len + 1 < sizeof t) {
            t[len++] = 'Z';
            t[len] = '\0';
        }
    }
    char why[128];
    if (pw_time_parse_rfc3339(t, strlen(t), out, why, sizeof why) != 0)
        return set_err(err, errlen, "'%s': %s", s, expected);
    return 0;
}

static int parse_count(const char *name, const char *s, int min, int max, int *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return set_err(err, errlen, "%s '%s': expected a whole number from %d to %d", name, s, min, max);
    *out = (int)v;
    return 0;
}

int pw_report_parse_args(int argc, char **argv, pw_time_us_t now_us, pw_report_opts_t *opts, char *err, size_t errlen)
{
    const char *since = NULL, *until = NULL;
    memset(opts, 0, sizeof *opts);
    opts->top = 10;
    opts->min_messages = 5;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int known = strcmp(a, "--since") == 0 || strcmp(a, "--until") == 0 || strcmp(a, "--out") == 0 || strcmp(a, "--top") == 0 ||
                    strcmp(a, "--min-messages") == 0;
        if (!known)
            return set_err(err, errlen, "unknown option '%s'", a);
        if (i + 1 >= argc)
            return set_err(err, errlen, "%s needs a value", a);
        const char *v = argv[++i];
        if (strcmp(a, "--since") == 0)
            since = v;
        else if (strcmp(a, "--until") == 0)
            until = v;
        else if (strcmp(a, "--out") == 0)
            opts->out = v;
        else if (strcmp(a, "--top") == 0 && parse_count(a, v, 1, 1000, &opts->top, err, errlen) != 0)
            return -1;
        else if (strcmp(a, "--min-messages") == 0 && parse_count(a, v, 1, 1000000, &opts->min_messages, err, errlen) != 0)
            return -1;
    }
    if (opts->out == NULL || opts->out[0] == '\0')
        return set_err(err, errlen, "--out FILE is required (- for standard output)");
    char why[256];
    if (until != NULL) {
        if (pw_report_parse_time(until, &opts->until, why, sizeof why) != 0)
            return set_err(err, errlen, "--until %s", why);
    } else {
        opts->until = (now_us / US_PER_DAY + 1) * US_PER_DAY;
    }
    if (since != NULL) {
        if (pw_report_parse_time(since, &opts->since, why, sizeof why) != 0)
            return set_err(err, errlen, "--since %s", why);
    } else {
        opts->since = opts->until - 7 * US_PER_DAY;
    }
    if (opts->since >= opts->until)
        return set_err(err, errlen, "--since must be before --until (the window is since <= t < until)");
    if (opts->until - opts->since > PW_REPORT_MAX_DAYS * US_PER_DAY)
        return set_err(err, errlen, "the window is longer than %d days", PW_REPORT_MAX_DAYS);
    return 0;
}

/* ---- masking ---------------------------------------------------------------------------------- */

/* Digits of the ITU country code that digits (of an E.164 number) start with: 1, 2 or 3. */
static size_t country_code_len(const char *d)
{
    static const char two[] = " 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58"
                              " 60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98 ";
    if (d[0] == '1' || d[0] == '7')
        return 1;
    char k[5] = {' ', d[0], d[1], ' ', '\0'};
    return strstr(two, k) != NULL ? 2 : 3;
}

static void put(char *out, size_t cap, size_t *n, const char *s, size_t len)
{
    if (*n + len + 1 > cap)
        return;
    memcpy(out + *n, s, len);
    *n += len;
    out[*n] = '\0';
}

char *pw_report_mask(const char *r, char *out, size_t cap)
{
    size_t n = 0, len = strlen(r);
    if (cap == 0)
        return out;
    out[0] = '\0';
    size_t digits = len > 1 && r[0] == '+' ? strspn(r + 1, "0123456789") : 0;
    if (digits > 0 && digits == len - 1) {
        size_t cc = digits >= 4 ? country_code_len(r + 1) : 0;
        size_t keep = digits >= cc + 6 ? 2 : 0; /* a short number keeps no digit of its own */
        put(out, cap, &n, r, 1 + cc);
        put(out, cap, &n, " ", 1);
        for (size_t i = 0; i < digits - cc - keep; i++)
            put(out, cap, &n, BULLET, strlen(BULLET));
        put(out, cap, &n, r + len - keep, keep);
        return out;
    }
    /* A user id ("US.1349..."): its country prefix, a fixed run of bullets (the length is not shown), the last 2. */
    const char *dot = strchr(r, '.');
    size_t prefix = dot != NULL && dot - r <= 3 ? (size_t)(dot - r) + 1 : 0;
    put(out, cap, &n, r, prefix);
    put(out, cap, &n, BULLET BULLET BULLET BULLET, 4 * strlen(BULLET));
    if (len >= prefix + 6)
        put(out, cap, &n, r + len - 2, 2);
    return out;
}

/* ---- HTML ------------------------------------------------------------------------------------- */

/* s as HTML text or attribute content: & < > " ' escaped, C0 controls (but tab and newline) as spaces. */
static void esc(pw_buf_t *b, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '&':
            pw_buf_append(b, "&amp;", 5);
            break;
        case '<':
            pw_buf_append(b, "&lt;", 4);
            break;
        case '>':
            pw_buf_append(b, "&gt;", 4);
            break;
        case '"':
            pw_buf_append(b, "&quot;", 6);
            break;
        case '\'':
            pw_buf_append(b, "&#39;", 5);
            break;
        default:
            pw_buf_appendc(b, c < 0x20 && c != '\t' && c != '\n' ? ' ' : (char)c);
        }
    }
}

/* The first max_chars characters of s (UTF-8), with an ellipsis when cut, escaped. */
static void esc_cut(pw_buf_t *b, const char *s, size_t max_chars)
{
    size_t chars = 0, i = 0;
    for (; s[i] != '\0'; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80 && chars++ == max_chars)
            break;
    }
    if (s[i] == '\0') {
        esc(b, s);
        return;
    }
    char *cut = pw_xstrndup(s, i);
    esc(b, cut);
    free(cut);
    pw_buf_append(b, "\xe2\x80\xa6", 3);
}

/* A result value: "" for NULL (attributes carry "" for "no value"). */
static const char *val(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col);
}

static double num(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NAN : strtod(PQgetvalue(r, row, col), NULL);
}

/* A count as shown: "1,234". */
static void fmt_count(char *out, size_t cap, double v)
{
    char d[32];
    snprintf(d, sizeof d, "%.0f", v);
    size_t len = strlen(d), n = 0;
    for (size_t i = 0; i < len && n + 2 < cap; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            out[n++] = ',';
        out[n++] = d[i];
    }
    out[n] = '\0';
}

/* A duration in seconds as shown: "4 s", "1.5 min", "2.25 h", "3 d"; "–" for none. */
static void fmt_duration(char *out, size_t cap, double s)
{
    if (isnan(s))
        snprintf(out, cap, "\xe2\x80\x93");
    else if (s < 60)
        snprintf(out, cap, "%.3g s", s);
    else if (s < 3600)
        snprintf(out, cap, "%.3g min", s / 60);
    else if (s < 86400)
        snprintf(out, cap, "%.3g h", s / 3600);
    else
        snprintf(out, cap, "%.1f d", s / 86400);
}

typedef void (*fmt_fn)(char *out, size_t cap, double v);

/* ceil(x) for x >= 0, without libm. */
static double ceil_pos(double x)
{
    double i = (double)(long long)x;
    return i < x ? i + 1 : i;
}

/* An axis step near max/4 from 1-2-5 steps (counts: at least 1), or from clock-friendly ones (durations). */
static double axis_step(double max, int duration)
{
    static const double clock[] = {0.1, 0.2, 0.5, 1,    2,    5,    10,    15,    30,    60,   120,
                                   300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400};
    double raw = max / 4;
    if (duration) {
        for (size_t i = 0; i < sizeof clock / sizeof clock[0]; i++)
            if (clock[i] >= raw)
                return clock[i];
        return 86400 * ceil_pos(raw / 86400);
    }
    if (raw <= 1)
        return 1;
    double mag = 1;
    while (mag * 10 <= raw)
        mag *= 10;
    double f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/* ---- charts ----------------------------------------------------------------------------------- */

/*
 * A column chart: groups (UTC days) along x, a column per series in each group. Each group is a
 * <g data-row=KIND data-day=... data-KEY=...> carrying its numbers as the query gave them ("" for
 * none), each column a <rect class="bar KEY"> with a <title>.
 */
typedef struct {
    const char *id, *title;
    const char *kind; /* data-row of the groups */
    int groups, series;
    const char *const *keys;  /* per series: CSS class and data- attribute name */
    const char *const *names; /* per series: as shown */
    char (*days)[11];         /* per group */
    const char *const *texts; /* [group * series + s]: value as the query gave it */
    const double *values;     /* [group * series + s]: NAN for none */
    const char *extra;        /* per group extra attributes (already escaped), or NULL */
    size_t extra_stride;
    int duration; /* values are seconds */
} columns_t;

#define COL_W 720
#define COL_H 260
#define COL_LEFT 56
#define COL_RIGHT 8
#define COL_TOP 12
#define COL_BOTTOM 44

static void legend(pw_buf_t *b, int n, const char *const *keys, const char *const *names)
{
    pw_buf_appendf(b, "<ul class=\"legend\">");
    for (int s = 0; s < n; s++)
        pw_buf_appendf(b, "<li><span class=\"sw %s\"></span>%s</li>", keys[s], names[s]);
    pw_buf_appendf(b, "</ul>\n");
}

static void column_chart(pw_buf_t *b, const columns_t *c)
{
    fmt_fn fmt = c->duration ? fmt_duration : fmt_count;
    double max = 0;
    for (int i = 0; i < c->groups * c->series; i++)
        if (!isnan(c->values[i]) && c->values[i] > max)
            max = c->values[i];
    double step = axis_step(max, c->duration), top = step * ceil_pos(max / step);
    if (top <= 0)
        top = step * 4;
    const double pw = COL_W - COL_LEFT - COL_RIGHT, ph = COL_H - COL_TOP - COL_BOTTOM;
    const double gw = pw / c->groups, bw = gw * 0.8 / c->series;
    char t[64];
    legend(b, c->series, c->keys, c->names);
    pw_buf_appendf(b,
                   "<div class=\"scroll\"><svg class=\"chart wide\" id=\"%s\" viewBox=\"0 0 %d %d\" role=\"img\" "
                   "aria-label=\"%s\" data-chart=\"%s\">\n",
                   c->id, COL_W, COL_H, c->title, c->kind);
    /* Grid lines and y labels. */
    int ticks = (int)(top / step + 0.5);
    for (int i = 0; i <= ticks; i++) {
        double v = i * step, y = COL_TOP + ph - v / top * ph;
        fmt(t, sizeof t, v);
        pw_buf_appendf(b, "<line class=\"grid\" x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\"/>", COL_LEFT, COL_W - COL_RIGHT, y, y);
        pw_buf_appendf(b, "<text class=\"ylab\" x=\"%d\" y=\"%.1f\">%s</text>\n", COL_LEFT - 6, y + 4, t);
    }
    /* Day labels: at most about 16 along the axis. */
    int every = (c->groups + 15) / 16;
    for (int g = 0; g < c->groups; g++) {
        double x0 = COL_LEFT + g * gw + gw * 0.1;
        pw_buf_appendf(b, "<g data-row=\"%s\" data-day=\"%s\"", c->kind, c->days[g]);
        for (int s = 0; s < c->series; s++) {
            pw_buf_appendf(b, " data-%s=\"", c->keys[s]);
            esc(b, c->texts[g * c->series + s]);
            pw_buf_appendc(b, '"');
        }
        if (c->extra != NULL)
            pw_buf_appendf(b, "%s", c->extra + g * c->extra_stride);
        pw_buf_appendf(b, ">");
        for (int s = 0; s < c->series; s++) {
            double v = c->values[g * c->series + s];
            double h = isnan(v) ? 0 : v / top * ph;
            fmt(t, sizeof t, v);
            pw_buf_appendf(
                b, "<rect class=\"bar %s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"><title>%s %s: %s</title></rect>",
                c->keys[s], x0 + s * bw, COL_TOP + ph - h, bw * 0.92, h, c->days[g], c->names[s], t);
            if (bw >= 16 && !isnan(v) && (c->duration || v > 0))
                pw_buf_appendf(b, "<text class=\"val\" x=\"%.1f\" y=\"%.1f\">%s</text>", x0 + s * bw + bw * 0.46,
                               COL_TOP + ph - h - 3, t);
        }
        if (g % every == 0)
            pw_buf_appendf(b, "<text class=\"xlab\" x=\"%.1f\" y=\"%d\">%.5s</text>", COL_LEFT + g * gw + gw / 2,
                           COL_H - COL_BOTTOM + 18, c->days[g] + 5);
        pw_buf_appendf(b, "</g>\n");
    }
    pw_buf_appendf(b, "<line class=\"axis\" x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\"/>", COL_LEFT, COL_W - COL_RIGHT,
                   COL_TOP + ph, COL_TOP + ph);
    pw_buf_appendf(b, "<text class=\"xlab\" x=\"%.1f\" y=\"%d\">UTC day (MM-DD)</text>", COL_LEFT + pw / 2, COL_H - 6);
    if (max <= 0)
        pw_buf_appendf(b, "<text class=\"empty\" x=\"%.1f\" y=\"%.1f\">no messages in this window</text>", COL_LEFT + pw / 2,
                       COL_TOP + ph / 2);
    pw_buf_appendf(b, "</svg></div>\n");
}

/*
 * A horizontal bar chart: a row per item (label above its bar, so it stays readable on a narrow
 * screen), the bar of value[0], and over it that of value[1] when there are two series. Each row is
 * a <g data-row=KIND ...attrs> whose attributes the caller wrote (escaped).
 */
typedef struct {
    const char *id, *title, *kind, *empty;
    int rows, series;
    const char *const *keys;
    const char *const *labels; /* per row: shown (cut to 48 characters), in full in the <title> */
    const char *const *attrs;  /* per row: data- attributes, escaped */
    const char *const *right;  /* per row: text at the bar's end */
    const double *values;      /* [row * series + s] */
} bars_t;

#define BAR_W 480
#define BAR_ROW 40

/* The rows of a bar chart as the report builds them: every string owned (freed by bar_rows_free). */
typedef struct {
    int n;
    char **labels, **attrs, **right;
    double *v; /* [row * series + s] */
} bar_rows_t;

static void bar_rows_new(bar_rows_t *r, int n, int series)
{
    r->n = n;
    r->labels = pw_xcalloc((size_t)n + 1, sizeof *r->labels);
    r->attrs = pw_xcalloc((size_t)n + 1, sizeof *r->attrs);
    r->right = pw_xcalloc((size_t)n + 1, sizeof *r->right);
    r->v = pw_xcalloc((size_t)n * (size_t)series + 1, sizeof *r->v);
}

static void bar_rows_free(bar_rows_t *r)
{
    for (int k = 0; k < r->n; k++) {
        free(r->labels[k]);
        free(r->attrs[k]);
        free(r->right[k]);
    }
    free(r->labels);
    free(r->attrs);
    free(r->right);
    free(r->v);
}

static void bar_chart(pw_buf_t *b, const bars_t *c)
{
    double max = 0;
    for (int i = 0; i < c->rows * c->series; i++)
        if (c->values[i] > max)
            max = c->values[i];
    int h = c->rows > 0 ? c->rows * BAR_ROW + 4 : 60;
    const double full = BAR_W - 8 - 140; /* room for the text at the right */
    pw_buf_appendf(b, "<svg class=\"chart\" id=\"%s\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\" data-chart=\"%s\">\n",
                   c->id, BAR_W, h, c->title, c->kind);
    for (int r = 0; r < c->rows; r++) {
        double y = r * BAR_ROW;
        pw_buf_appendf(b, "<g data-row=\"%s\"%s><text class=\"lab\" x=\"4\" y=\"%.1f\">", c->kind, c->attrs[r], y + 14);
        esc_cut(b, c->labels[r], 48);
        pw_buf_appendf(b, "<title>");
        esc(b, c->labels[r]);
        pw_buf_appendf(b, "</title></text>");
        double end = 4;
        for (int s = 0; s < c->series; s++) {
            double v = c->values[r * c->series + s], w = max > 0 ? v / max * full : 0;
            if (w > 0 && w < 1)
                w = 1; /* a non-zero value stays visible */
            pw_buf_appendf(b, "<rect class=\"bar %s\" x=\"4\" y=\"%.1f\" width=\"%.1f\" height=\"16\"/>", c->keys[s], y + 19, w);
            if (4 + w > end)
                end = 4 + w;
        }
        pw_buf_appendf(b, "<text class=\"num\" x=\"%.1f\" y=\"%.1f\">", end + 6, y + 32);
        esc(b, c->right[r]);
        pw_buf_appendf(b, "</text></g>\n");
    }
    if (c->rows == 0)
        pw_buf_appendf(b, "<text class=\"empty\" x=\"%d\" y=\"34\">%s</text>", BAR_W / 2, c->empty);
    pw_buf_appendf(b, "</svg>\n");
}

/* Draws c with the rows of r, and says how many rows (of `total`) were left out, as `what`. */
static void bar_section(pw_buf_t *b, bars_t *c, const bar_rows_t *r, int total, const char *what)
{
    c->rows = r->n;
    c->labels = (const char *const *)r->labels;
    c->attrs = (const char *const *)r->attrs;
    c->right = (const char *const *)r->right;
    c->values = r->v;
    bar_chart(b, c);
    if (total > r->n)
        pw_buf_appendf(b, "<p class=\"note\">and %d more %s</p>", total - r->n, what);
}

/* ---- the queries ------------------------------------------------------------------------------ */

/*
 * $1, $2: the window (timestamptz text with its zone). Everything goes through the views of
 * migrations 0002 and 0005 (docs/analytics.md): message_status_times (the sent-at, day and latency
 * rules, the recipient rule), pw_message_summary, pw_engaged_recipients; the daily rows are the
 * formulas of message_status_daily and message_latency_daily over the window's rows, and the
 * failures those of message_failures_daily, so a window that is not whole days is counted right.
 */
static const char q_days[] =
    "WITH d AS (SELECT day::date FROM generate_series(($1::timestamptz AT TIME ZONE 'UTC')::date::timestamp,"
    "             (($2::timestamptz - interval '1 microsecond') AT TIME ZONE 'UTC')::date::timestamp, interval '1 day') day),"
    " t AS (SELECT * FROM message_status_times WHERE sent_at >= $1::timestamptz AND sent_at < $2::timestamptz)"
    " SELECT to_char(d.day, 'YYYY-MM-DD'), count(t.sent_at), count(t.delivered_at), count(t.read_at), count(t.failed_at),"
    "  round((percentile_cont(0.5) WITHIN GROUP (ORDER BY t.delivery_seconds))::numeric, 2),"
    "  round((percentile_cont(0.9) WITHIN GROUP (ORDER BY t.delivery_seconds))::numeric, 2),"
    "  count(t.delivery_seconds),"
    "  round((percentile_cont(0.5) WITHIN GROUP (ORDER BY t.read_seconds))::numeric, 2),"
    "  round((percentile_cont(0.9) WITHIN GROUP (ORDER BY t.read_seconds))::numeric, 2),"
    "  count(t.read_seconds)"
    " FROM d LEFT JOIN t ON t.sent_day = d.day GROUP BY d.day ORDER BY d.day";

static const char q_summary[] =
    "SELECT messages, delivered, read, failed, delivery_rate, read_rate, p50_delivery_seconds, p90_delivery_seconds,"
    " p50_read_seconds, p90_read_seconds FROM pw_message_summary($1::timestamptz, $2::timestamptz)";

static const char q_failures[] =
    "SELECT code, title, messages FROM ("
    " SELECT e.value->>'code' AS code, coalesce(e.value->>'title', e.value->>'message', e.value->>'reason') AS title,"
    "  count(DISTINCT t.bsp_msg_id) AS messages"
    " FROM message_status_times t"
    " LEFT JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(t.last_error) WHEN 'array' THEN t.last_error"
    "   WHEN 'object' THEN jsonb_build_array(t.last_error) ELSE '[]'::jsonb END) e ON true"
    " WHERE t.failed_at IS NOT NULL AND t.sent_at >= $1::timestamptz AND t.sent_at < $2::timestamptz"
    " GROUP BY 1, 2) f ORDER BY messages DESC, code COLLATE \"C\" NULLS LAST, title COLLATE \"C\" NULLS LAST";

static const char q_inbound[] =
    "SELECT msg_type, count(*) FROM inbound_messages WHERE sent_at >= $1::timestamptz AND sent_at < $2::timestamptz"
    " GROUP BY msg_type ORDER BY 2 DESC, msg_type COLLATE \"C\"";

static const char q_engaged[] = "SELECT recipient, messages, delivered, read, read_rate"
                                " FROM pw_engaged_recipients($1::timestamptz, $2::timestamptz, $3::int) LIMIT $4::int";

typedef struct {
    PGconn *pg;
    const char *params[4];
} query_ctx_t;

/* Runs sql with the window's parameters; NULL (printed) on error. */
static PGresult *query(query_ctx_t *q, const char *sql, int nparams, const char *what)
{
    PGresult *r = PQexecParams(q->pg, sql, nparams, NULL, q->params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK)
        return r;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    fprintf(stderr, "worker report: %s failed: %s", what, PQresultErrorMessage(r));
    if (state != NULL && (strcmp(state, "42P01") == 0 || strcmp(state, "42883") == 0 || strcmp(state, "42703") == 0))
        fprintf(stderr, "worker report: the analytics views are missing or old: run `worker migrate`\n");
    PQclear(r);
    return NULL;
}

/* ---- the page --------------------------------------------------------------------------------- */

/*
 * The page's only script: on load it writes each chart's rendered size and its count of drawn
 * (non-zero) bars into data-rendered, and whether the page fits the viewport's width into the
 * root's data-fits, so that a headless browser's DOM dump shows what was laid out (the test reads
 * it). The Content-Security-Policy allows this script by its hash, and nothing from anywhere.
 */
static const char script[] =
    "document.querySelectorAll('svg.chart').forEach(function(s){var r=s.getBoundingClientRect(),n=0;"
    "s.querySelectorAll('.bar').forEach(function(b){var q=b.getBoundingClientRect();if(q.width>0&&q.height>0)n++});"
    "s.setAttribute('data-rendered',Math.round(r.width)+'x'+Math.round(r.height)+' '+n)});"
    "var d=document.documentElement;d.setAttribute('data-fits',d.scrollWidth<=d.clientWidth?'yes':'no');";

static const char style[] =
    ":root{--sent:#4e79a7;--delivered:#59a14f;--read:#b07aa1;--failed:#e15759;--p50:#76b7b2;--p90:#2f6f6a;"
    "--inbound:#f28e2b;--ink:#1f2328;--muted:#59636e;--line:#d8dee4}"
    "*{box-sizing:border-box}"
    "body{margin:0 auto;max-width:1100px;padding:16px;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
    "color:var(--ink);background:#fff}"
    "h1{font-size:1.4em;margin:0 0 4px}h2{font-size:1.1em;margin:0 0 4px}"
    ".sub,.note{color:var(--muted);margin:0 0 8px;font-size:.9em}"
    ".kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:8px;margin:12px 0}"
    ".kpi{border:1px solid var(--line);border-radius:8px;padding:8px 10px}"
    ".kpi b{display:block;font-size:1.35em}.kpi span{color:var(--muted);font-size:.85em}"
    ".grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:12px}"
    ".card{border:1px solid var(--line);border-radius:8px;padding:12px;margin:12px 0;min-width:0}"
    ".grid2 .card{margin:0}"
    ".scroll{overflow-x:auto}"
    "svg.chart{display:block;width:100%;max-width:100%;height:auto}"
    "svg text{font-size:13px;fill:var(--ink)}svg.wide text{font-size:12px}"
    ".ylab{text-anchor:end;fill:var(--muted)}.xlab{text-anchor:middle;fill:var(--muted)}"
    ".val{text-anchor:middle;font-size:10px}.num{font-size:12px;fill:var(--muted)}"
    ".empty{text-anchor:middle;fill:var(--muted)}"
    ".grid{stroke:var(--line);stroke-width:1}.axis{stroke:var(--muted);stroke-width:1}"
    ".legend{list-style:none;padding:0;margin:0 0 6px;display:flex;flex-wrap:wrap;gap:4px 14px;font-size:.9em}"
    ".sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}"
    ".sent{fill:var(--sent);background:var(--sent)}.delivered{fill:var(--delivered);background:var(--delivered)}"
    ".read{fill:var(--read);background:var(--read)}.failed{fill:var(--failed);background:var(--failed)}"
    ".p50{fill:var(--p50);background:var(--p50)}.p90{fill:var(--p90);background:var(--p90)}"
    ".messages{fill:var(--sent);background:var(--sent)}.inbound{fill:var(--inbound);background:var(--inbound)}"
    "footer{color:var(--muted);font-size:.85em;margin-top:16px}"
    "@media (max-width:600px){body{padding:8px;font-size:14px}svg.wide{min-width:540px}.card{padding:8px}}"
    "@media print{body{max-width:none;padding:0;font-size:10.5pt}"
    "*{-webkit-print-color-adjust:exact;print-color-adjust:exact}"
    ".card,.kpis{break-inside:avoid;page-break-inside:avoid}.scroll{overflow:visible}svg.wide{min-width:0}"
    ".grid2{display:block}.grid2 .card{margin:8px 0}}";

/* The Content-Security-Policy source of script: 'sha256-<base64>'. */
static void script_hash(char out[64])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(script, strlen(script), md, &n, EVP_sha256(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)n);
}

static void kpi(pw_buf_t *b, const char *key, const char *value_attr, const char *shown, const char *label)
{
    pw_buf_appendf(b, "<div class=\"kpi\" data-kpi=\"%s\" data-value=\"", key);
    esc(b, value_attr);
    pw_buf_appendf(b, "\"><b>");
    esc(b, shown);
    pw_buf_appendf(b, "</b><span>%s</span></div>\n", label);
}

static void render(pw_buf_t *b, const pw_report_opts_t *o, const char *since_s, const char *until_s, PGresult *days, PGresult *sum,
                   PGresult *fail, PGresult *inb, PGresult *eng)
{
    char h[64], t[64], t2[64];
    script_hash(h);
    pw_buf_appendf(b,
                   "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                   "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                   "style-src 'unsafe-inline'; script-src 'sha256-%s'\">\n"
                   "<title>WhatsApp messages %s to %s (UTC)</title>\n<style>%s</style>\n</head>\n<body>\n",
                   h, since_s, until_s, style);
    pw_buf_appendf(b,
                   "<header><h1>WhatsApp messages</h1><p class=\"sub\" data-since=\"%s\" data-until=\"%s\">"
                   "Sent from %s to %s (UTC; the end excluded). Outbound messages count on the UTC day they were sent.</p>"
                   "</header>\n",
                   since_s, until_s, since_s, until_s);

    /* Key numbers of the whole window. */
    pw_buf_appendf(b, "<section class=\"kpis\">\n");
    fmt_count(t, sizeof t, num(sum, 0, 0));
    kpi(b, "messages", val(sum, 0, 0), t, "messages sent");
    snprintf(t, sizeof t, "%s%s", PQgetisnull(sum, 0, 4) ? "\xe2\x80\x93" : val(sum, 0, 4), PQgetisnull(sum, 0, 4) ? "" : "%");
    kpi(b, "delivery_rate", val(sum, 0, 4), t, "delivered");
    snprintf(t, sizeof t, "%s%s", PQgetisnull(sum, 0, 5) ? "\xe2\x80\x93" : val(sum, 0, 5), PQgetisnull(sum, 0, 5) ? "" : "%");
    kpi(b, "read_rate", val(sum, 0, 5), t, "read (of delivered)");
    fmt_count(t, sizeof t, num(sum, 0, 3));
    kpi(b, "failed", val(sum, 0, 3), t, "failed");
    fmt_duration(t, sizeof t, num(sum, 0, 6));
    kpi(b, "p50_delivery_seconds", val(sum, 0, 6), t, "median delivery time");
    fmt_duration(t, sizeof t, num(sum, 0, 9));
    kpi(b, "p90_read_seconds", val(sum, 0, 9), t, "p90 time to read (after delivery)");
    double inbound_total = 0;
    for (int r = 0; r < PQntuples(inb); r++)
        inbound_total += num(inb, r, 1);
    fmt_count(t, sizeof t, inbound_total);
    snprintf(t2, sizeof t2, "%.0f", inbound_total);
    kpi(b, "inbound", t2, t, "inbound messages");
    pw_buf_appendf(b, "</section>\n");

    int n = PQntuples(days);
    char(*day)[11] = pw_xcalloc((size_t)n, sizeof *day);
    const char **texts = pw_xcalloc((size_t)n * 4, sizeof *texts);
    double *values = pw_xcalloc((size_t)n * 4, sizeof *values);
    for (int g = 0; g < n; g++)
        snprintf(day[g], sizeof day[g], "%s", val(days, g, 0));

    /* The funnel. */
    static const char *const fkeys[] = {"sent", "delivered", "read", "failed"};
    for (int g = 0; g < n; g++)
        for (int s = 0; s < 4; s++) {
            texts[g * 4 + s] = val(days, g, 1 + s);
            values[g * 4 + s] = num(days, g, 1 + s);
        }
    pw_buf_appendf(b, "<section class=\"card\"><h2>Daily funnel</h2><p class=\"note\">Messages by the UTC day they were "
                      "sent: how many were sent, delivered (or read, or played), read, and failed.</p>\n");
    columns_t funnel = {"funnel", "Messages sent, delivered, read and failed per UTC day",
                        "funnel", n,
                        4,        fkeys,
                        fkeys,    day,
                        texts,    values,
                        NULL,     0,
                        0};
    column_chart(b, &funnel);
    pw_buf_appendf(b, "</section>\n");

    /* Latencies: delivery (delivered - sent) and read (read - delivered), p50 and p90. */
    static const char *const lkeys[] = {"p50", "p90"};
    static const char *const lnames[] = {"p50 (median)", "p90"};
    char *extra = pw_xcalloc((size_t)n, 40);
    for (int pass = 0; pass < 2; pass++) {
        int c0 = pass == 0 ? 5 : 8;
        for (int g = 0; g < n; g++) {
            for (int s = 0; s < 2; s++) {
                texts[g * 2 + s] = val(days, g, c0 + s);
                values[g * 2 + s] = num(days, g, c0 + s);
            }
            snprintf(extra + (size_t)g * 40, 40, " data-count=\"%s\"", val(days, g, c0 + 2));
        }
        pw_buf_appendf(b, "<section class=\"card\"><h2>%s</h2><p class=\"note\">%s</p>\n",
                       pass == 0 ? "Delivery time" : "Read time",
                       pass == 0 ? "Seconds from sent to delivered, per UTC sent day: median (p50) and p90."
                                 : "Seconds from delivered to read, per UTC sent day: median (p50) and p90.");
        columns_t lat = {pass == 0 ? "latency-delivery" : "latency-read",
                         pass == 0 ? "Delivery time per UTC day, p50 and p90" : "Read time per UTC day, p50 and p90",
                         pass == 0 ? "latency-delivery" : "latency-read",
                         n,
                         2,
                         lkeys,
                         lnames,
                         day,
                         texts,
                         values,
                         extra,
                         40,
                         1};
        column_chart(b, &lat);
        pw_buf_appendf(b, "</section>\n");
    }
    free(extra);
    free(values);
    free(texts);
    free(day);

    pw_buf_appendf(b, "<div class=\"grid2\">\n");
    /* Failures by error code. */
    {
        int rows = PQntuples(fail), shown = rows < LIST_MAX ? rows : LIST_MAX;
        bar_rows_t br;
        bar_rows_new(&br, shown, 1);
        for (int r = 0; r < shown; r++) {
            pw_buf_t a = {0}, l = {0};
            pw_buf_appendf(&a, " data-code=\"");
            esc(&a, val(fail, r, 0));
            pw_buf_appendf(&a, "\" data-title=\"");
            esc(&a, val(fail, r, 1));
            pw_buf_appendf(&a, "\" data-messages=\"%s\"", val(fail, r, 2));
            pw_buf_appendf(&l, "%s%s%s", PQgetisnull(fail, r, 0) ? "(no code)" : val(fail, r, 0),
                           PQgetisnull(fail, r, 1) ? "" : " ", val(fail, r, 1));
            br.labels[r] = l.base;
            br.attrs[r] = a.base;
            br.v[r] = num(fail, r, 2);
            fmt_count(t, sizeof t, br.v[r]);
            br.right[r] = pw_xstrndup(t, strlen(t));
        }
        static const char *const keys[] = {"failed"};
        pw_buf_appendf(b, "<section class=\"card\"><h2>Failures by error code</h2><p class=\"note\">Failed messages "
                          "sent in the window, by error (a message with two errors counts under both).</p>\n");
        bars_t c = {.id = "failures", .title = "Failed messages by error code", .kind = "failure",
                    .empty = "no failures in this window", .series = 1, .keys = keys};
        bar_section(b, &c, &br, rows, "errors");
        pw_buf_appendf(b, "</section>\n");
        bar_rows_free(&br);
    }
    /* Inbound by type. */
    {
        int rows = PQntuples(inb), shown = rows < LIST_MAX ? rows : LIST_MAX;
        bar_rows_t br;
        bar_rows_new(&br, shown, 1);
        for (int r = 0; r < shown; r++) {
            pw_buf_t a = {0};
            pw_buf_appendf(&a, " data-type=\"");
            esc(&a, val(inb, r, 0));
            pw_buf_appendf(&a, "\" data-messages=\"%s\"", val(inb, r, 1));
            br.attrs[r] = a.base;
            br.labels[r] = pw_xstrndup(val(inb, r, 0), strlen(val(inb, r, 0)));
            br.v[r] = num(inb, r, 1);
            fmt_count(t, sizeof t, br.v[r]);
            br.right[r] = pw_xstrndup(t, strlen(t));
        }
        static const char *const keys[] = {"inbound"};
        pw_buf_appendf(b, "<section class=\"card\"><h2>Inbound messages by type</h2><p class=\"note\">Messages received, "
                          "by their time sent, per WhatsApp message type.</p>\n");
        bars_t c = {.id = "inbound", .title = "Inbound messages by type", .kind = "inbound",
                    .empty = "no inbound messages in this window", .series = 1, .keys = keys};
        bar_section(b, &c, &br, rows, "types");
        pw_buf_appendf(b, "</section>\n");
        bar_rows_free(&br);
    }
    /* Most engaged recipients: messages, and read over them. */
    {
        int rows = PQntuples(eng);
        bar_rows_t br;
        bar_rows_new(&br, rows, 2);
        for (int r = 0; r < rows; r++) {
            char m[128];
            pw_report_mask(val(eng, r, 0), m, sizeof m);
            pw_buf_t a = {0}, rt = {0};
            pw_buf_appendf(&a, " data-recipient=\"");
            esc(&a, m);
            pw_buf_appendf(&a, "\" data-messages=\"%s\" data-delivered=\"%s\" data-read=\"%s\" data-read-rate=\"%s\"",
                           val(eng, r, 1), val(eng, r, 2), val(eng, r, 3), val(eng, r, 4));
            pw_buf_appendf(&rt, "%s/%s read (%s%%)", val(eng, r, 3), val(eng, r, 1), val(eng, r, 4));
            br.attrs[r] = a.base;
            br.right[r] = rt.base;
            br.labels[r] = pw_xstrndup(m, strlen(m));
            br.v[r * 2] = num(eng, r, 1);
            br.v[r * 2 + 1] = num(eng, r, 3);
        }
        static const char *const keys[] = {"messages", "read"};
        static const char *const names[] = {"messages sent", "read"};
        pw_buf_appendf(b,
                       "<section class=\"card\"><h2>Most engaged recipients</h2><p class=\"note\">Recipients of at least "
                       "%d messages in the window, highest read rate (read / sent) first; top %d. Phone numbers "
                       "are masked.</p>\n",
                       o->min_messages, o->top);
        legend(b, 2, keys, names);
        bars_t c = {.id = "engaged", .title = "Most engaged recipients", .kind = "recipient",
                    .empty = "no recipient reached the minimum", .series = 2, .keys = keys};
        bar_section(b, &c, &br, rows, "recipients");
        pw_buf_appendf(b, "</section>\n</div>\n");
        bar_rows_free(&br);
    }
    pw_buf_appendf(b, "<footer>pushworker report. Definitions: docs/analytics.md (delivered counts delivered, read or played; "
                      "a failed message that was delivered later counts in both).</footer>\n");
    pw_buf_appendf(b, "<script>%s</script>\n</body>\n</html>\n", script);
}

static int write_out(const char *path, const pw_buf_t *b)
{
    if (strcmp(path, "-") == 0)
        return fwrite(b->base, 1, b->len, stdout) == b->len && fflush(stdout) == 0 ? 0 : -1;
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    int ok = fwrite(b->base, 1, b->len, f) == b->len;
    if (fclose(f) != 0 || !ok) {
        remove(path);
        return -1;
    }
    return 0;
}

int pw_report_run(const char *conninfo, const pw_report_opts_t *o)
{
    int rc = 1;
    PGresult *days = NULL, *sum = NULL, *fail = NULL, *inb = NULL, *eng = NULL, *r;
    pw_buf_t html = {0};
    /* client_encoding after dbname, so it holds whatever the URL says: text comes as UTF-8. */
    const char *keys[] = {"application_name", "dbname", "client_encoding", NULL};
    const char *vals[] = {"pushworker-report", conninfo, "UTF8", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "worker report: cannot connect to the database: %s", PQerrorMessage(pg));
        goto out;
    }
    char since_pg[30], until_pg[30], since_s[21], until_s[21], top[16], min[16];
    pw_time_format_pg(o->since, since_pg);
    pw_time_format_pg(o->until, until_pg);
    pw_time_format_iso_seconds(o->since, since_s);
    pw_time_format_iso_seconds(o->until, until_s);
    snprintf(top, sizeof top, "%d", o->top);
    snprintf(min, sizeof min, "%d", o->min_messages);
    query_ctx_t q = {pg, {since_pg, until_pg, min, top}};
    /* One snapshot: the charts agree with each other. */
    r = PQexec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    PQclear(r);
    if ((days = query(&q, q_days, 2, "daily counts")) == NULL || (sum = query(&q, q_summary, 2, "summary")) == NULL ||
        (fail = query(&q, q_failures, 2, "failures")) == NULL || (inb = query(&q, q_inbound, 2, "inbound")) == NULL ||
        (eng = query(&q, q_engaged, 4, "engaged recipients")) == NULL)
        goto out;
    r = PQexec(pg, "COMMIT");
    PQclear(r);
    if (PQntuples(sum) != 1) {
        fprintf(stderr, "worker report: pw_message_summary gave %d rows\n", PQntuples(sum));
        goto out;
    }
    render(&html, o, since_s, until_s, days, sum, fail, inb, eng);
    if (write_out(o->out, &html) != 0) {
        fprintf(stderr, "worker report: cannot write %s: %s\n", o->out, strerror(errno));
        goto out;
    }
    if (strcmp(o->out, "-") != 0)
        fprintf(stderr, "worker report: wrote %s (%zu bytes; %s to %s, %d days)\n", o->out, html.len, since_s, until_s,
                PQntuples(days));
    rc = 0;
out:
    pw_buf_dispose(&html);
    PQclear(days);
    PQclear(sum);
    PQclear(fail);
    PQclear(inb);
    PQclear(eng);
    PQfinish(pg);
    return rc;
}
