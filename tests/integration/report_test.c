/* `worker report`: the real command over a known data set; the HTML's numbers against SQL, then the file in headless Chromium. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/integration/util.h"

/* clang-format off: the data set and expected rows are laid out by hand, one row per source line. */

/*
 * 20 outbound messages. The window is 2024-10-01 .. 2024-10-05 (until excluded): r18 (09-30
 * 23:59:59) and r19 (10-05 00:00:00) are outside it, and 10-04 has no message. Recipients:
 * A = +919800000001 (also reached as user id US.555, which contacts links to A's phone: r09),
 * B = +14155550123, C = +447700900123, U = US.13491208655302741918 (a user id only).
 * Latencies (delivered - sent, read - delivered) in seconds:
 *   10-01: r01 A 2/60, r02 A 4/600, r03 B 10, r04 C failed 131049, r05 U 3/30
 *   10-02: r06 A 1/5, r07 B 20/120, r08 C failed 131026 + 131000 (a title full of HTML), r09 A 6/40,
 *          r10 U 8, r11 B sent 23:59:59 delivered the next day 10
 *   10-03: r12 A 3, r13 U 2/15, r14 C failed only (sent at = created_at) 131049, r15 B failed 131026
 *          then delivered 300, r16 U sent only, r17 B 5/50, r20 U 4/20
 */
static const char load_contacts_sql[] =
    "INSERT INTO contacts (wa_id, user_id, profile_name) VALUES ('919800000001', 'US.555', 'A')";
static const char load_messages_sql[] =
    "INSERT INTO message_logs (bsp_msg_id, to_phone, recipient_user_id, whatsapp_status, current_status, last_error, created_at) "
    "SELECT id, phone, uid, ws::jsonb, pw_current_status(ws::jsonb), err::jsonb, created::timestamptz FROM (VALUES "
    "('r01', '+919800000001', NULL, '{\"sent\": \"2024-10-01T09:00:00Z\", \"delivered\": \"2024-10-01T09:00:02Z\", \"read\": \"2024-10-01T09:01:02Z\"}', NULL, '2024-10-01 09:00:00+00'),"
    "('r02', '+919800000001', NULL, '{\"sent\": \"2024-10-01T10:00:00Z\", \"delivered\": \"2024-10-01T10:00:04Z\", \"read\": \"2024-10-01T10:10:04Z\"}', NULL, '2024-10-01 10:00:00+00'),"
    "('r03', '+14155550123', NULL, '{\"sent\": \"2024-10-01T11:00:00Z\", \"delivered\": \"2024-10-01T11:00:10Z\"}', NULL, '2024-10-01 11:00:00+00'),"
    "('r04', '+447700900123', NULL, '{\"sent\": \"2024-10-01T12:00:00Z\", \"failed\": \"2024-10-01T12:00:05Z\"}', "
    "  '[{\"code\": 131049, \"title\": \"This message was not delivered to maintain healthy ecosystem engagement.\"}]', '2024-10-01 12:00:00+00'),"
    "('r05', NULL, 'US.13491208655302741918', '{\"sent\": \"2024-10-01T13:00:00Z\", \"delivered\": \"2024-10-01T13:00:03Z\", \"read\": \"2024-10-01T13:00:33Z\"}', NULL, '2024-10-01 13:00:00+00'),"
    "('r06', '+919800000001', NULL, '{\"sent\": \"2024-10-02T08:00:00Z\", \"delivered\": \"2024-10-02T08:00:01Z\", \"read\": \"2024-10-02T08:00:06Z\"}', NULL, '2024-10-02 08:00:00+00'),"
    "('r07', '+14155550123', NULL, '{\"sent\": \"2024-10-02T09:00:00Z\", \"delivered\": \"2024-10-02T09:00:20Z\", \"read\": \"2024-10-02T09:02:20Z\"}', NULL, '2024-10-02 09:00:00+00'),"
    "('r08', '+447700900123', NULL, '{\"sent\": \"2024-10-02T10:00:00Z\", \"failed\": \"2024-10-02T10:00:01Z\"}', "
    "  '[{\"code\": 131026, \"title\": \"Message undeliverable\"}, {\"code\": 131000, \"title\": \"<b>Something</b> & \\\"went\\\" wrong\"}]', '2024-10-02 10:00:00+00'),"
    "('r09', NULL, 'US.555', '{\"sent\": \"2024-10-02T11:00:00Z\", \"delivered\": \"2024-10-02T11:00:06Z\", \"read\": \"2024-10-02T11:00:46Z\"}', NULL, '2024-10-02 11:00:00+00'),"
    "('r10', NULL, 'US.13491208655302741918', '{\"sent\": \"2024-10-02T12:00:00Z\", \"delivered\": \"2024-10-02T12:00:08Z\"}', NULL, '2024-10-02 12:00:00+00'),"
    "('r11', '+14155550123', NULL, '{\"sent\": \"2024-10-02T23:59:59Z\", \"delivered\": \"2024-10-03T00:00:09Z\"}', NULL, '2024-10-02 23:59:59+00'),"
    "('r12', '+919800000001', NULL, '{\"sent\": \"2024-10-03T07:00:00Z\", \"delivered\": \"2024-10-03T07:00:03Z\"}', NULL, '2024-10-03 07:00:00+00'),"
    "('r13', NULL, 'US.13491208655302741918', '{\"sent\": \"2024-10-03T08:00:00Z\", \"delivered\": \"2024-10-03T08:00:02Z\", \"read\": \"2024-10-03T08:00:17Z\"}', NULL, '2024-10-03 08:00:00+00'),"
    "('r14', '+447700900123', NULL, '{\"failed\": \"2024-10-03T09:00:00Z\"}', "
    "  '[{\"code\": 131049, \"title\": \"This message was not delivered to maintain healthy ecosystem engagement.\"}]', '2024-10-03 09:00:00+00'),"
    "('r15', '+14155550123', NULL, '{\"sent\": \"2024-10-03T10:00:00Z\", \"failed\": \"2024-10-03T10:00:01Z\", \"delivered\": \"2024-10-03T10:05:00Z\"}', "
    "  '[{\"code\": 131026, \"title\": \"Message undeliverable\"}]', '2024-10-03 10:00:00+00'),"
    "('r16', NULL, 'US.13491208655302741918', '{\"sent\": \"2024-10-03T11:00:00Z\"}', NULL, '2024-10-03 11:00:00+00'),"
    "('r17', '+14155550123', NULL, '{\"sent\": \"2024-10-03T12:00:00Z\", \"delivered\": \"2024-10-03T12:00:05Z\", \"read\": \"2024-10-03T12:00:55Z\"}', NULL, '2024-10-03 12:00:00+00'),"
    "('r18', '+919800000001', NULL, '{\"sent\": \"2024-09-30T23:59:59Z\", \"delivered\": \"2024-10-01T00:00:00Z\"}', NULL, '2024-09-30 23:59:59+00'),"
    "('r19', '+919800000001', NULL, '{\"sent\": \"2024-10-05T00:00:00Z\", \"delivered\": \"2024-10-05T00:00:01Z\"}', NULL, '2024-10-05 00:00:00+00'),"
    "('r20', NULL, 'US.13491208655302741918', '{\"sent\": \"2024-10-03T13:00:00Z\", \"delivered\": \"2024-10-03T13:00:04Z\", \"read\": \"2024-10-03T13:00:24Z\"}', NULL, '2024-10-03 13:00:00+00')"
    ") v(id, phone, uid, ws, err, created)";
/* Inbound: i7 at the window's last second, i8 and i9 just outside it. */
static const char load_inbound_sql[] =
    "INSERT INTO inbound_messages (wa_msg_id, phone_number_id, from_phone, from_user_id, msg_type, body, sent_at, payload) "
    "SELECT id, '106540352242922', phone, uid, type, NULL, sent::timestamptz, '{}' FROM (VALUES "
    "('i1', '+919811111111', NULL, 'text', '2024-10-01 10:00:00+00'),"
    "('i2', '+919811111111', NULL, 'text', '2024-10-02 11:00:00+00'),"
    "('i3', '+919822222222', NULL, 'image', '2024-10-02 12:00:00+00'),"
    "('i4', NULL, 'US.777', 'image', '2024-10-03 09:00:00+00'),"
    "('i5', '+919822222222', NULL, 'button', '2024-10-03 10:00:00+00'),"
    "('i6', '+919811111111', NULL, 'reaction', '2024-10-03 11:00:00+00'),"
    "('i7', '+919833333333', NULL, 'text', '2024-10-04 23:59:59+00'),"
    "('i8', '+919833333333', NULL, 'text', '2024-10-05 00:00:00+00'),"
    "('i9', '+919833333333', NULL, 'text', '2024-09-30 23:59:59+00')"
    ") v(id, phone, uid, type, sent)";

/* The numbers worked out by hand (p50/p90: percentile_cont, interpolated). */
static const char expect_funnel[] =
    "2024-10-01|5|4|3|1\n"
    "2024-10-02|6|5|3|1\n"
    "2024-10-03|7|5|3|2\n"
    "2024-10-04|0|0|0|0";
static const char expect_delivery[] =
    "2024-10-01|3.50|8.20|4\n"
    "2024-10-02|8.00|16.00|5\n"
    "2024-10-03|4.00|182.00|5\n"
    "2024-10-04|||0";
static const char expect_read[] =
    "2024-10-01|60.00|492.00|3\n"
    "2024-10-02|40.00|104.00|3\n"
    "2024-10-03|20.00|44.00|3\n"
    "2024-10-04|||0";
static const char expect_failures[] =
    "131026|Message undeliverable|2\n"
    "131049|This message was not delivered to maintain healthy ecosystem engagement.|2\n"
    "131000|<b>Something</b> & \"went\" wrong|1";
static const char expect_inbound[] =
    "text|3\n"
    "image|2\n"
    "button|1\n"
    "reaction|1";
static const char expect_recipients[] =
    "+91 \xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2" "01|5|5|4|80.00\n"
    "US.\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2" "18|5|4|3|60.00\n"
    "+1 \xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2" "23|5|5|2|40.00";
static const char expect_kpis[] =
    "messages|18\n"
    "delivery_rate|77.78\n"
    "read_rate|64.29\n"
    "failed|4\n"
    "p50_delivery_seconds|4.50\n"
    "p90_read_seconds|216.00\n"
    "inbound|7";

/*
 * The same numbers from the views of migrations 0002/0005 (docs/analytics.md), for the whole days
 * of the window, with a row for each day (the report draws empty days too). NULL as "".
 */
#define DAYS "generate_series('2024-10-01'::timestamp, '2024-10-04'::timestamp, interval '1 day') d"
#define SQL_FUNNEL                                                                                                     \
    "SELECT to_char(d, 'YYYY-MM-DD'), coalesce(s.messages, 0), coalesce(s.delivered, 0), coalesce(s.read, 0), "        \
    "coalesce(s.failed, 0) FROM " DAYS " LEFT JOIN message_status_daily s ON s.day = d::date ORDER BY 1"
#define SQL_LATENCY(kind, count)                                                                                       \
    "SELECT to_char(d, 'YYYY-MM-DD'), coalesce(p50_" kind "_seconds::text, ''), coalesce(p90_" kind "_seconds::text, ''), " \
    "coalesce(l." count ", 0) FROM " DAYS " LEFT JOIN message_latency_daily l ON l.day = d::date ORDER BY 1"
#define SQL_FAILURES                                                                                                   \
    "SELECT coalesce(error_code, ''), coalesce(error_title, ''), sum(messages) FROM message_failures_daily "          \
    "WHERE day >= '2024-10-01' AND day < '2024-10-05' GROUP BY 1, 2 ORDER BY 3 DESC, coalesce(error_code, '') COLLATE \"C\", " \
    "coalesce(error_title, '') COLLATE \"C\""
#define SQL_INBOUND                                                                                                    \
    "SELECT msg_type, sum(messages) FROM inbound_messages_daily WHERE day >= '2024-10-01' AND day < '2024-10-05' "    \
    "GROUP BY 1 ORDER BY 2 DESC, msg_type COLLATE \"C\""
#define SQL_RECIPIENTS                                                                                                 \
    "SELECT messages, delivered, read, read_rate FROM pw_engaged_recipients('2024-10-01T00:00Z', '2024-10-05T00:00Z', 5) LIMIT 10"
#define SQL_KPIS                                                                                                       \
    "SELECT 'messages|' || messages || E'\\ndelivery_rate|' || delivery_rate || E'\\nread_rate|' || read_rate || "   \
    "E'\\nfailed|' || failed || E'\\np50_delivery_seconds|' || p50_delivery_seconds || E'\\np90_read_seconds|' || "   \
    "p90_read_seconds || E'\\ninbound|' || (SELECT sum(messages) FROM inbound_messages_daily "                         \
    "WHERE day >= '2024-10-01' AND day < '2024-10-05') FROM pw_message_summary('2024-10-01T00:00Z', '2024-10-05T00:00Z')"

/* clang-format on */

static char work_dir[256];

/* ---- reading the numbers out of the HTML ------------------------------------------------------- */

/* Appends the HTML attribute value [p, end) decoded (the entities a serializer writes). */
static void decode_into(char **out, size_t *len, const char *p, const char *end)
{
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&#39;", '\''}, {"&#x27;", '\''}, {"&nbsp;", ' '}};
    *out = pwt_xrealloc(*out, *len + (size_t)(end - p) + 2);
    while (p < end) {
        size_t i = 0;
        if (*p == '&')
            for (; i < sizeof ents / sizeof ents[0]; i++)
                if (strncmp(p, ents[i].ent, strlen(ents[i].ent)) == 0)
                    break;
        if (*p == '&' && i < sizeof ents / sizeof ents[0]) {
            (*out)[(*len)++] = ents[i].c;
            p += strlen(ents[i].ent);
        } else {
            (*out)[(*len)++] = *p++;
        }
    }
    (*out)[*len] = '\0';
}

/* The value of attribute name in the tag starting at tag ('<'), as [*v, *v_end); 0 or -1 when absent. */
static int tag_attr(const char *tag, const char *name, const char **v, const char **v_end)
{
    const char *p = tag + 1;
    p += strcspn(p, " \t\n/>");
    for (;;) {
        p += strspn(p, " \t\n/");
        if (*p == '>' || *p == '\0')
            return -1;
        const char *n = p;
        p += strcspn(p, " \t\n=/>");
        size_t nlen = (size_t)(p - n);
        const char *vs = p, *ve = p;
        if (*p == '=') {
            char q = p[1];
            if (q == '"' || q == '\'') {
                vs = p + 2;
                ve = strchr(vs, q);
                if (ve == NULL)
                    return -1;
                p = ve + 1;
            } else {
                vs = p + 1;
                p = ve = vs + strcspn(vs, " \t\n>");
            }
        }
        if (nlen == strlen(name) && strncmp(n, name, nlen) == 0) {
            *v = vs;
            *v_end = ve;
            return 0;
        }
    }
}

/*
 * For each element whose attribute mark equals value (in document order): the values of attrs,
 * '|' joined, one line each ("" for an absent attribute). Malloc'd.
 */
static char *rows_of(const char *html, const char *mark, const char *value, const char *const *attrs)
{
    char *needle = pwt_xasprintf("%s=\"%s\"", mark, value);
    char *out = pwt_xstrdup("");
    size_t len = 0;
    for (const char *hit = strstr(html, needle); hit != NULL; hit = strstr(hit + 1, needle)) {
        const char *tag = hit;
        while (tag > html && *tag != '<')
            tag--;
        if (len > 0)
            decode_into(&out, &len, "\n", "\n" + 1);
        for (int i = 0; attrs[i] != NULL; i++) {
            const char *v, *ve;
            if (i > 0)
                decode_into(&out, &len, "|", "|" + 1);
            if (tag_attr(tag, attrs[i], &v, &ve) == 0)
                decode_into(&out, &len, v, ve);
        }
    }
    free(needle);
    return out;
}

#define FUNNEL_ATTRS PWT_LIST("data-day", "data-sent", "data-delivered", "data-read", "data-failed")
#define LATENCY_ATTRS PWT_LIST("data-day", "data-p50", "data-p90", "data-count")
#define FAILURE_ATTRS PWT_LIST("data-code", "data-title", "data-messages")
#define INBOUND_ATTRS PWT_LIST("data-type", "data-messages")
#define RECIPIENT_ATTRS PWT_LIST("data-recipient", "data-messages", "data-delivered", "data-read", "data-read-rate")
#define RECIPIENT_NUMBERS PWT_LIST("data-messages", "data-delivered", "data-read", "data-read-rate")

static void assert_rows_of(const char *html, const char *kind, const char *const *attrs, const char *expected)
{
    char *actual = rows_of(html, "data-row", kind, attrs);
    pwt_assert_text(actual, expected);
    free(actual);
}

/* Every number the page shows equals the hand-worked values and the views' SQL over the same data. */
static void assert_numbers(const char *html)
{
    assert_rows_of(html, "funnel", FUNNEL_ATTRS, expect_funnel);
    assert_rows_of(html, "latency-delivery", LATENCY_ATTRS, expect_delivery);
    assert_rows_of(html, "latency-read", LATENCY_ATTRS, expect_read);
    assert_rows_of(html, "failure", FAILURE_ATTRS, expect_failures);
    assert_rows_of(html, "inbound", INBOUND_ATTRS, expect_inbound);
    assert_rows_of(html, "recipient", RECIPIENT_ATTRS, expect_recipients);
    char *kpis = rows_of(html, "class", "kpi", PWT_LIST("data-kpi", "data-value"));
    pwt_assert_text(kpis, expect_kpis);
    free(kpis);

    const struct {
        const char *kind, *sql;
        const char *const *attrs;
    } vs_sql[] = {
        {"funnel", SQL_FUNNEL, FUNNEL_ATTRS},
        {"latency-delivery", SQL_LATENCY("delivery", "delivered"), LATENCY_ATTRS},
        {"latency-read", SQL_LATENCY("read", "read"), LATENCY_ATTRS},
        {"failure", SQL_FAILURES, FAILURE_ATTRS},
        {"inbound", SQL_INBOUND, INBOUND_ATTRS},
        {"recipient", SQL_RECIPIENTS, RECIPIENT_NUMBERS},
    };
    for (size_t i = 0; i < sizeof vs_sql / sizeof vs_sql[0]; i++) {
        char *sql = pwt_rows(vs_sql[i].sql);
        assert_rows_of(html, vs_sql[i].kind, vs_sql[i].attrs, sql);
        free(sql);
    }
    char *sql = pwt_rows(SQL_KPIS);
    kpis = rows_of(html, "class", "kpi", PWT_LIST("data-kpi", "data-value"));
    pwt_assert_text(kpis, sql);
    free(kpis);
    free(sql);
}

/* Runs `worker report ARGS` on the test database; its exit status, its output in *out. */
static int report(const char *url, const char *args, char **out)
{
    return pwt_worker_command("", url, args, out);
}

static char *report_path(const char *name)
{
    return pwt_xasprintf("%s/%s", work_dir, name);
}

/* The sample report: the known data, the window 2024-10-01 .. 2024-10-05. Malloc'd HTML; its path in *path. */
static char *sample_report(char **path)
{
    *path = report_path("report.html");
    char *q = pwt_shell_quote(*path);
    char *args = pwt_xasprintf("report --since 2024-10-01 --until 2024-10-05T00:00:00Z --out %s", q);
    char *out = NULL;
    int rc = report(NULL, args, &out);
    if (rc != 0)
        pwt_fail(__FILE__, __LINE__, "worker report exited %d:\n%s", rc, out);
    pwt_assert_contains(out, "worker report: wrote ");
    free(out);
    free(args);
    free(q);
    char *html = pwt_read_text(*path);
    if (html == NULL)
        pwt_fail(__FILE__, __LINE__, "%s was not written", *path);
    return html;
}

static int group_setup(void **state)
{
    if (pwt_suite_setup(state) != 0 || pwt_make_work_dir("pw-report", work_dir, sizeof work_dir) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    if (work_dir[0] != '\0' && getenv("PWT_KEEP_LOGS") == NULL)
        pwt_rm_rf(work_dir);
    return pwt_suite_teardown(state);
}

static int load_data(void **state)
{
    (void)state;
    pwt_truncate_all();
    pwt_exec(load_contacts_sql);
    pwt_exec(load_messages_sql);
    pwt_exec(load_inbound_sql);
    return 0;
}

/* ---- the file itself --------------------------------------------------------------------------- */

static void test_numbers_in_the_html(void **state)
{
    (void)state;
    char *path;
    char *html = sample_report(&path);
    assert_numbers(html);

    /* Self-contained: nothing is fetched from anywhere, and the policy says so. */
    const char *const outside[] = {"http:", "https:", "//", "<link", " src=", "@import", "url(", NULL};
    for (int i = 0; outside[i] != NULL; i++)
        if (strstr(html, outside[i]) != NULL)
            pwt_fail(__FILE__, __LINE__, "the report refers to something outside it: '%s'", outside[i]);
    pwt_assert_contains(html, "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; ");
    pwt_assert_contains(html, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    pwt_assert_contains(html, "@media print{");
    assert_int_equal(pwt_count_substr(html, "<svg class=\"chart"), 6);
    assert_int_equal(pwt_count_substr(html, "viewBox=\"0 0 "), 6);
    /* Phone numbers and user ids never appear whole; text from the database is escaped. */
    const char *const secrets[] = {"919800000001", "14155550123", "447700900123", "13491208655302741918", "9800000001",
                                   "US.555", NULL};
    for (int i = 0; secrets[i] != NULL; i++)
        if (strstr(html, secrets[i]) != NULL)
            pwt_fail(__FILE__, __LINE__, "the report shows the identity '%s' unmasked", secrets[i]);
    if (strstr(html, "<b>Something") != NULL || strstr(html, "\"went\"") != NULL)
        pwt_fail(__FILE__, __LINE__, "a database value reached the HTML unescaped");
    pwt_assert_contains(html, "&lt;b&gt;Something&lt;/b&gt; &amp; &quot;went&quot; wrong");
    free(html);

    /* The same window given as times in another zone: the same numbers. */
    char *q = pwt_shell_quote(path);
    char *args = pwt_xasprintf("report --since '2024-10-01T05:30+05:30' --until '2024-10-04 16:00:00-08:00' --out %s", q);
    char *out = NULL;
    assert_int_equal(report(NULL, args, &out), 0);
    html = pwt_read_text(path);
    assert_non_null(html);
    assert_numbers(html);
    free(html);
    free(out);
    free(args);
    free(q);
    free(path);
}

/* A window that is not whole days counts only the messages sent in it (the day rows stay UTC days). */
static void test_partial_days(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(report(NULL, "report --since 2024-10-02T09:00 --until 2024-10-03T08:00 --out - --min-messages 1 --top 2", &out), 0);
    assert_rows_of(out, "funnel", FUNNEL_ATTRS, "2024-10-02|5|4|2|1\n2024-10-03|1|1|0|0");
    assert_rows_of(out, "failure", FAILURE_ATTRS,
                   "131000|<b>Something</b> & \"went\" wrong|1\n131026|Message undeliverable|1");
    assert_rows_of(out, "inbound", INBOUND_ATTRS, "image|1\ntext|1");
    /* B: r07 read, r11; A: r09 read (its user id is linked to A's phone), r12; then U and C (no read): the top 2,
       tied on read rate and read, in recipient order. */
    assert_rows_of(out, "recipient", RECIPIENT_ATTRS,
                   "+1 \xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2" "23|2|2|1|50.00\n"
                   "+91 \xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2" "01|2|2|1|50.00");
    free(out);
}

/* An empty window still draws every chart, with zeros and "no ..." notes. */
static void test_empty_window(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(report(NULL, "report --since 2023-01-01 --until 2023-01-03 --out -", &out), 0);
    assert_rows_of(out, "funnel", FUNNEL_ATTRS, "2023-01-01|0|0|0|0\n2023-01-02|0|0|0|0");
    assert_rows_of(out, "failure", FAILURE_ATTRS, "");
    pwt_assert_contains(out, "no failures in this window");
    pwt_assert_contains(out, "no inbound messages in this window");
    assert_int_equal(pwt_count_substr(out, "<svg class=\"chart"), 6);
    free(out);
}

static void assert_report_fails(const char *url, const char *args, int code, const char *message)
{
    char *out = NULL;
    int rc = report(url, args, &out);
    if (rc != code || strstr(out, message) == NULL)
        pwt_fail(__FILE__, __LINE__, "worker %s: expected exit %d and '%s', got %d:\n%s", args, code, message, rc, out);
    free(out);
}

static void test_bad_arguments_and_errors(void **state)
{
    (void)state;
    assert_report_fails(NULL, "report", 2, "worker report: --out FILE is required");
    assert_report_fails(NULL, "report --out x --since 2024-13-01", 2, "--since '2024-13-01': expected an ISO 8601 date");
    assert_report_fails(NULL, "report --out x --until yesterday", 2, "--until 'yesterday': expected an ISO 8601 date");
    assert_report_fails(NULL, "report --out x --since 2024-10-05 --until 2024-10-01", 2, "--since must be before --until");
    assert_report_fails(NULL, "report --out x --since 2020-01-01 --until 2024-01-01", 2, "longer than 366 days");
    assert_report_fails(NULL, "report --out x --top 0", 2, "--top '0': expected a whole number");
    assert_report_fails(NULL, "report --out x --colour red", 2, "unknown option '--colour'");
    assert_report_fails(NULL, "report --out x --since", 2, "--since needs a value");
    assert_report_fails("postgresql://postgres@127.0.0.1:1/nothing", "report --out -", 1, "cannot connect to the database");
    /* The cluster's own database was never migrated: no views. */
    assert_report_fails(getenv("PW_TEST_DATABASE_URL"), "report --out -", 1, "run `worker migrate`");
    char *args = pwt_xasprintf("report --out %s/no/such/dir/r.html", work_dir);
    assert_report_fails(NULL, args, 1, "cannot write");
    free(args);
    /* --help names the command and its exit codes. */
    char *out = NULL;
    assert_int_equal(report(NULL, "--help", &out), 0);
    pwt_assert_contains(out, "report --out FILE [--since TIME] [--until TIME]");
    pwt_assert_contains(out, "Exit 0 written, 1 database or file error, 2 bad arguments");
    free(out);
}

/* ---- in a real browser ------------------------------------------------------------------------- */

/* Headless Chromium's DOM of path after load, at a window width, with its log in *log. NULL when it failed. */
static char *chromium_dom(const char *path, int width, char **log)
{
    char profile[256], size[64];
    if (pwt_make_work_dir("pw-report-chromium", profile, sizeof profile) != 0)
        return NULL;
    char *profile_arg = pwt_xasprintf("--user-data-dir=%s", profile);
    char *url = pwt_xasprintf("file://%s", path);
    char *err_path = pwt_xasprintf("%s/chromium-%d.log", work_dir, width);
    snprintf(size, sizeof size, "--window-size=%d,2000", width);
    const char *const argv[] = {"timeout", "-k", "5", "120", "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                                "--disable-quic", "--no-first-run", "--disable-background-networking",
                                "--disable-component-update", "--disable-sync", profile_arg, "--enable-logging=stderr",
                                "--v=0", "--hide-scrollbars", size, "--dump-dom", url, NULL};
    char *dom = NULL;
    remove(err_path);
    int rc = pwt_run_capture(argv, err_path, &dom);
    *log = pwt_read_text(err_path);
    if (*log == NULL)
        *log = pwt_xstrdup("");
    if (rc != 0) {
        fprintf(stderr, "chromium exited %d:\n%s\n", rc, *log);
        free(dom);
        dom = NULL;
    }
    pwt_rm_rf(profile);
    free(err_path);
    free(url);
    free(profile_arg);
    return dom;
}

static int have_chromium(void)
{
    char *out = NULL;
    int rc = pwt_popen_read("command -v chromium", &out);
    free(out);
    return rc == 0;
}

/* Bars with a value above 0 in the rows of kind (its attrs from the second on are the values). */
static int bars_with_value(const char *html, const char *kind, const char *const *attrs, int first)
{
    char *rows = rows_of(html, "data-row", kind, attrs);
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(rows, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        int col = 0;
        for (char *p = line; p != NULL; col++) {
            char *bar = strchr(p, '|');
            if (col >= first && atof(p) > 0)
                n++;
            p = bar != NULL ? bar + 1 : NULL;
        }
    }
    free(rows);
    return n;
}

static void test_in_chromium(void **state)
{
    (void)state;
    if (!have_chromium()) {
        const char *ci = getenv("CI");
        if (ci != NULL && strcmp(ci, "true") == 0)
            pwt_fail(__FILE__, __LINE__, "chromium is not installed, and CI=true: scripts/setup installs it (Debian package chromium)");
        fprintf(stderr, "SKIPPED: chromium is not installed (Debian package chromium; scripts/setup installs it): "
                        "the report was not opened in a browser\n");
        skip();
    }
    char *path;
    char *html = sample_report(&path);
    /* Expected drawn bars per chart: the values above 0 (p50/p90 of a day with one message may be 0 s: none here). */
    const struct {
        const char *chart, *kind;
        const char *const *attrs;
    } charts[] = {
        {"funnel", "funnel", FUNNEL_ATTRS},
        {"latency-delivery", "latency-delivery", PWT_LIST("data-day", "data-p50", "data-p90")},
        {"latency-read", "latency-read", PWT_LIST("data-day", "data-p50", "data-p90")},
        {"failures", "failure", PWT_LIST("data-code", "data-messages")},
        {"inbound", "inbound", PWT_LIST("data-type", "data-messages")},
        {"engaged", "recipient", PWT_LIST("data-recipient", "data-messages", "data-read")},
    };
    /* A desktop window, then a phone's. */
    const int widths[] = {1100, 390};
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        char *log = NULL;
        char *dom = chromium_dom(path, widths[w], &log);
        if (dom == NULL)
            pwt_fail(__FILE__, __LINE__, "chromium could not open %s", path);
        /* Any console message is a failure: the page logs nothing, so one is an error (a script
           error, a resource refused by the Content-Security-Policy, ...). */
        if (strstr(log, "CONSOLE") != NULL || strstr(log, "Uncaught") != NULL)
            pwt_fail(__FILE__, __LINE__, "console output at width %d:\n%s", widths[w], log);
        /* The script ran and found the page no wider than the window. */
        char *fits = rows_of(dom, "lang", "en", PWT_LIST("data-fits"));
        if (strcmp(fits, "yes") != 0)
            pwt_fail(__FILE__, __LINE__, "at width %d the page is wider than the window (data-fits=\"%s\")", widths[w], fits);
        free(fits);
        /* Every chart laid out with a size, and every bar with a value drawn with one. */
        for (size_t c = 0; c < sizeof charts / sizeof charts[0]; c++) {
            char *r = rows_of(dom, "id", charts[c].chart, PWT_LIST("data-rendered"));
            int cw = 0, ch = 0, drawn = -1;
            int expected = bars_with_value(html, charts[c].kind, charts[c].attrs, 1);
            if (sscanf(r, "%dx%d %d", &cw, &ch, &drawn) != 3 || cw <= 0 || ch <= 0 || drawn != expected)
                pwt_fail(__FILE__, __LINE__, "chart %s at width %d: data-rendered=\"%s\", expected a size and %d bars drawn",
                         charts[c].chart, widths[w], r, expected);
            free(r);
        }
        /* The numbers the browser shows are those of the SQL. */
        assert_numbers(dom);
        free(dom);
        free(log);
    }
    free(html);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_numbers_in_the_html, load_data),
        cmocka_unit_test_setup(test_partial_days, load_data),
        cmocka_unit_test_setup(test_empty_window, load_data),
        cmocka_unit_test_setup(test_bad_arguments_and_errors, load_data),
        cmocka_unit_test_setup(test_in_chromium, load_data),
    };
    pwt_suite_init("report", NULL, NULL);
    return cmocka_run_group_tests_name("report", tests, group_setup, group_teardown);
}
