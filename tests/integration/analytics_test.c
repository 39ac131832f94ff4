/* Analytics tests: the views and functions of migrations/0002_analytics.sql (docs/analytics.md) over a known data set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/integration/util.h"

/* clang-format off: expected rows are laid out by hand, one result row per source line. */

/*
 * Every check runs in each of these session time zones (then the checker goes back to UTC): a day
 * is the UTC day and a number does not depend on the zone. The data set has times between 18:30
 * and 24:00 UTC (the next day in Kolkata and Kiritimati) and between 00:00 and 08:00 UTC (the day
 * before in Los Angeles).
 */
static const char *const zones[] = {"UTC", "Asia/Kolkata", "America/Los_Angeles", "Pacific/Kiritimati", NULL};

#define PARAMS PWT_LIST

static pwt_worker_t worker;

/* ---- the known data set ------------------------------------------------------------------------ */

/*
 * 17 outbound messages over three UTC days to four recipients (A = +919800000001, B = ...02,
 * C = ...03, D = ...04), written as the worker writes them (current_status from pw_current_status).
 * Latencies in seconds: d = delivered - sent, r = read - delivered, rs = read - sent.
 *
 * 2024-10-01: m01 A d=2 r=60 rs=62; m02 A d=4 r=600 rs=604; m03 B d=10; m04 C failed 131049 at 20:00
 *             (Kolkata: 10-02); m05 B sent 23:59:59, delivered the next day, d=10.
 * 2024-10-02: m06 A sent 00:30 (Los Angeles: 10-01) d=1 r=300 rs=301; m07 A d=3 r=30 rs=33;
 *             m08 C failed with two errors 131026 + 131000; m09 C failed with an AiSensy error
 *             (code + reason, no title); m10 D sent 19:00 (Kolkata: 10-03) d=7 r=120 rs=127;
 *             m11 A failed 131026 then delivered d=300; m12 D played (implies delivered) d=5.
 * 2024-10-03: m13 B sent only; m14 C failed without a sent key or errors (sent at = created_at,
 *             23:00); m15 A d=6 r=10 rs=16; m16 without to_phone d=4; m17 B with unreadable times
 *             (no zone: sent at = created_at 07:00, never delivered).
 */
static const char load_messages_sql[] =
    "INSERT INTO message_logs (bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at) "
    "SELECT id, phone, ws::jsonb, pw_current_status(ws::jsonb), err::jsonb, created::timestamptz FROM (VALUES "
    "('m01', '+919800000001', '{\"sent\": \"2024-10-01T09:00:00Z\", \"delivered\": \"2024-10-01T09:00:02Z\", \"read\": \"2024-10-01T09:01:02Z\"}', NULL, '2024-10-01 09:00:00+00'),"
    "('m02', '+919800000001', '{\"sent\": \"2024-10-01T10:00:00Z\", \"delivered\": \"2024-10-01T10:00:04Z\", \"read\": \"2024-10-01T10:10:04Z\"}', NULL, '2024-10-01 10:00:00+00'),"
    "('m03', '+919800000002', '{\"sent\": \"2024-10-01T12:00:00Z\", \"delivered\": \"2024-10-01T12:00:10Z\"}', NULL, '2024-10-01 12:00:00+00'),"
    "('m04', '+919800000003', '{\"sent\": \"2024-10-01T20:00:00Z\", \"failed\": \"2024-10-01T20:00:05Z\"}', "
    "  '[{\"code\": 131049, \"title\": \"This message was not delivered to maintain healthy ecosystem engagement.\", \"message\": \"Not delivered.\"}]', '2024-10-01 20:00:00+00'),"
    "('m05', '+919800000002', '{\"sent\": \"2024-10-01T23:59:59Z\", \"delivered\": \"2024-10-02T00:00:09Z\"}', NULL, '2024-10-01 23:59:59+00'),"
    "('m06', '+919800000001', '{\"sent\": \"2024-10-02T00:30:00Z\", \"delivered\": \"2024-10-02T00:30:01Z\", \"read\": \"2024-10-02T00:35:01Z\"}', NULL, '2024-10-02 00:30:00+00'),"
    "('m07', '+919800000001', '{\"sent\": \"2024-10-02T08:00:00Z\", \"delivered\": \"2024-10-02T08:00:03Z\", \"read\": \"2024-10-02T08:00:33Z\"}', NULL, '2024-10-02 08:00:00+00'),"
    "('m08', '+919800000003', '{\"sent\": \"2024-10-02T09:00:00Z\", \"failed\": \"2024-10-02T09:00:01Z\"}', "
    "  '[{\"code\": 131026, \"title\": \"Message undeliverable\"}, {\"code\": 131000, \"title\": \"Something went wrong\"}]', '2024-10-02 09:00:00+00'),"
    "('m09', '+919800000003', '{\"sent\": \"2024-10-02T09:30:00Z\", \"failed\": \"2024-10-02T09:30:02Z\"}', "
    "  '[{\"code\": 131047, \"reason\": \"Re-engagement message\"}]', '2024-10-02 09:30:00+00'),"
    "('m10', '+919800000004', '{\"sent\": \"2024-10-02T19:00:00Z\", \"delivered\": \"2024-10-02T19:00:07Z\", \"read\": \"2024-10-02T19:02:07Z\"}', NULL, '2024-10-02 19:00:00+00'),"
    "('m11', '+919800000001', '{\"sent\": \"2024-10-02T11:00:00Z\", \"failed\": \"2024-10-02T11:00:03Z\", \"delivered\": \"2024-10-02T11:05:00Z\"}', "
    "  '[{\"code\": 131026, \"title\": \"Message undeliverable\"}]', '2024-10-02 11:00:00+00'),"
    "('m12', '+919800000004', '{\"sent\": \"2024-10-02T12:00:00Z\", \"delivered\": \"2024-10-02T12:00:05Z\", \"played\": \"2024-10-02T12:10:00Z\"}', NULL, '2024-10-02 12:00:00+00'),"
    "('m13', '+919800000002', '{\"sent\": \"2024-10-03T10:00:00Z\"}', NULL, '2024-10-03 10:00:00+00'),"
    "('m14', '+919800000003', '{\"failed\": \"2024-10-03T23:00:00Z\"}', NULL, '2024-10-03 23:00:00+00'),"
    "('m15', '+919800000001', '{\"sent\": \"2024-10-03T05:00:00Z\", \"delivered\": \"2024-10-03T05:00:06Z\", \"read\": \"2024-10-03T05:00:16Z\"}', NULL, '2024-10-03 05:00:00+00'),"
    "('m16', NULL, '{\"sent\": \"2024-10-03T06:00:00Z\", \"delivered\": \"2024-10-03T06:00:04Z\"}', NULL, '2024-10-03 06:00:00+00'),"
    "('m17', '+919800000002', '{\"sent\": \"garbage\", \"delivered\": \"2024-10-03T07:00:05\"}', NULL, '2024-10-03 07:00:00+00')"
    ") v(id, phone, ws, err, created)";

/* The failed events behind the last_error values above, as the worker keeps them. */
static const char load_events_sql[] =
    "INSERT INTO status_events (bsp_msg_id, status, occurred_at, recipient_id, errors) "
    "SELECT bsp_msg_id, 'failed', (whatsapp_status->>'failed')::timestamptz, substr(to_phone, 2), last_error "
    "FROM message_logs WHERE whatsapp_status ? 'failed'";

/*
 * Inbound: 2024-10-01 text x2 from one sender (10:00, and 18:45 = Kolkata 10-02), image at 23:59:59;
 * 2024-10-02 text at 00:00:00 (Los Angeles: 10-01) and 14:00 from two senders (one known only by
 * user id), button, reaction.
 */
static const char load_inbound_sql[] =
    "INSERT INTO inbound_messages (wa_msg_id, phone_number_id, from_phone, from_user_id, msg_type, body, sent_at, payload) "
    "SELECT id, '106540352242922', phone, uid, type, NULL, sent::timestamptz, '{}' FROM (VALUES "
    "('i1', '+919811111111', NULL, 'text', '2024-10-01 10:00:00+00'),"
    "('i2', '+919811111111', NULL, 'text', '2024-10-01 18:45:00+00'),"
    "('i3', '+919822222222', NULL, 'image', '2024-10-01 23:59:59+00'),"
    "('i4', '+919822222222', NULL, 'text', '2024-10-02 00:00:00+00'),"
    "('i5', NULL, 'US.1234567890', 'button', '2024-10-02 12:00:00+00'),"
    "('i6', '+919811111111', NULL, 'reaction', '2024-10-02 13:00:00+00'),"
    "('i7', NULL, 'US.1234567890', 'text', '2024-10-02 14:00:00+00')"
    ") v(id, phone, uid, type, sent)";

static void load_known_data(void)
{
    pwt_exec(load_messages_sql);
    pwt_exec(load_events_sql);
    pwt_exec(load_inbound_sql);
}

/* ---- queries ----------------------------------------------------------------------------------- */

#define Q_STATUS_DAILY "SELECT * FROM message_status_daily ORDER BY day"
#define Q_LATENCY_DAILY "SELECT * FROM message_latency_daily ORDER BY day"
#define Q_FAILURES_DAILY "SELECT * FROM message_failures_daily ORDER BY day, error_code COLLATE \"C\", error_title COLLATE \"C\""
#define Q_INBOUND_DAILY "SELECT * FROM inbound_messages_daily ORDER BY day, msg_type COLLATE \"C\""
/* $1, $2: the window; times printed in UTC whatever the session's zone. */
#define Q_SUMMARY "SELECT * FROM pw_message_summary($1, $2)"
/* The columns of 0002 (0005 added recipient, which is to_phone here: these messages all have one). */
#define Q_ENGAGED "SELECT to_phone, messages, delivered, read, read_rate FROM pw_engaged_recipients($1, $2, $3::int)"
#define Q_UNDELIVERED(args)                                                                                            \
    "SELECT bsp_msg_id, to_phone, current_status, to_char(sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), "      \
    "last_error FROM pw_undelivered(" args ")"

/* ---- helpers ----------------------------------------------------------------------------------- */

static void set_zone(const char *zone)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SET TIME ZONE '%s'", zone);
    pwt_exec(sql);
}

/* pwt_assert_rows_p in every zone of zones[], naming the zone on failure. */
#define assert_rows_everywhere(sql, params, expected) assert_rows_in_zones(__FILE__, __LINE__, (sql), (params), (expected))

static void assert_rows_in_zones(const char *file, int line, const char *sql, const char *const *params,
                                 const char *expected)
{
    for (int i = 0; zones[i] != NULL; i++) {
        set_zone(zones[i]);
        char *actual = pwt_rows_p(sql, params);
        if (strcmp(actual, expected) != 0) {
            set_zone("UTC");
            pwt_fail(file, line, "with TimeZone %s:\n  %s\nexpected:\n%s\nactual:\n%s", zones[i], sql, expected, actual);
        }
        free(actual);
    }
    set_zone("UTC");
}

/* ---- fixtures (cmocka) ------------------------------------------------------------------------- */

/* Before each test: the checker in UTC (a failed check may have left another zone), empty tables. */
static int fresh_tables(void **state)
{
    (void)state;
    set_zone("UTC");
    pwt_truncate_all();
    return 0;
}

/* ---- the objects the migration creates ------------------------------------------------------------ */

static void migration_creates_the_views_with_their_columns(void **state)
{
    (void)state;
    pwt_assert_rows("SELECT table_name, string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) "
                    "FROM information_schema.columns WHERE table_schema = 'public' AND table_name IN "
                    "('message_status_times', 'message_status_daily', 'message_latency_daily', "
                    "'message_failures_daily', 'inbound_messages_daily') "
                    "GROUP BY table_name ORDER BY table_name COLLATE \"C\"",
        "inbound_messages_daily|day date, msg_type text, messages bigint, senders bigint\n"
        "message_failures_daily|day date, error_code text, error_title text, messages bigint\n"
        "message_latency_daily|day date, delivered bigint, avg_delivery_seconds numeric, p50_delivery_seconds numeric, "
            "p90_delivery_seconds numeric, read bigint, avg_read_seconds numeric, p50_read_seconds numeric, "
            "p90_read_seconds numeric, avg_read_after_sent_seconds numeric, p50_read_after_sent_seconds numeric, "
            "p90_read_after_sent_seconds numeric\n"
        "message_status_daily|day date, messages bigint, delivered bigint, read bigint, failed bigint, "
            "delivery_rate numeric, read_rate numeric\n"
        "message_status_times|bsp_msg_id text, to_phone text, current_status text, sent_at timestamp with time zone, "
            "sent_day date, delivered_at timestamp with time zone, read_at timestamp with time zone, "
            "failed_at timestamp with time zone, played_at timestamp with time zone, delivery_seconds double precision, "
            "read_seconds double precision, read_after_sent_seconds double precision, last_error jsonb, "
            "recipient_user_id text, recipient text");
    pwt_assert_rows("SELECT to_regprocedure('pw_message_summary(timestamptz, timestamptz)') IS NOT NULL, "
                    "to_regprocedure('pw_undelivered(int, boolean)') IS NOT NULL, "
                    "to_regprocedure('pw_engaged_recipients(timestamptz, timestamptz, int)') IS NOT NULL, "
                    "to_regprocedure('pw_status_time(text)') IS NOT NULL",
                    "t|t|t|t");
}

static void empty_tables_give_empty_views_and_a_zero_summary(void **state)
{
    (void)state;
    assert_rows_everywhere(Q_STATUS_DAILY, NULL, "");
    assert_rows_everywhere(Q_LATENCY_DAILY, NULL, "");
    assert_rows_everywhere(Q_FAILURES_DAILY, NULL, "");
    assert_rows_everywhere(Q_INBOUND_DAILY, NULL, "");
    assert_rows_everywhere(Q_UNDELIVERED("0"), NULL, "");
    assert_rows_everywhere(Q_ENGAGED, PARAMS("2024-10-01T00:00:00Z", "2024-10-04T00:00:00Z", "1"), "");
    assert_rows_everywhere(Q_SUMMARY, PARAMS("2024-10-01T00:00:00Z", "2024-10-04T00:00:00Z"),
                           "0|0|0|0|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL");
}

/* ---- the known data set ------------------------------------------------------------------------ */

static void status_times_read_whatsapp_status_in_utc(void **state)
{
    (void)state;
    load_known_data();
    assert_rows_everywhere(
        "SELECT bsp_msg_id, to_char(sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), sent_day, "
        "to_char(delivered_at AT TIME ZONE 'UTC', 'HH24:MI:SS'), to_char(read_at AT TIME ZONE 'UTC', 'HH24:MI:SS'), "
        "to_char(failed_at AT TIME ZONE 'UTC', 'HH24:MI:SS'), to_char(played_at AT TIME ZONE 'UTC', 'HH24:MI:SS'), "
        "delivery_seconds, read_seconds, read_after_sent_seconds "
        "FROM message_status_times WHERE bsp_msg_id IN ('m05', 'm10', 'm11', 'm12', 'm14', 'm17') ORDER BY bsp_msg_id",
        NULL,
        "m05|2024-10-01 23:59:59|2024-10-01|00:00:09|NULL|NULL|NULL|10|NULL|NULL\n"
        "m10|2024-10-02 19:00:00|2024-10-02|19:00:07|19:02:07|NULL|NULL|7|120|127\n"
        "m11|2024-10-02 11:00:00|2024-10-02|11:05:00|NULL|11:00:03|NULL|300|NULL|NULL\n"
        "m12|2024-10-02 12:00:00|2024-10-02|12:00:05|NULL|NULL|12:10:00|5|NULL|NULL\n"
        "m14|2024-10-03 23:00:00|2024-10-03|NULL|NULL|23:00:00|NULL|NULL|NULL|NULL\n"
        "m17|2024-10-03 07:00:00|2024-10-03|NULL|NULL|NULL|NULL|NULL|NULL|NULL");
    pwt_assert_rows("SELECT count(*) FROM message_status_times", "17");
}

static void status_daily_counts_and_rates_per_utc_sent_day(void **state)
{
    (void)state;
    load_known_data();
    /* day | messages | delivered | read | failed | delivery_rate % | read_rate % (of delivered) */
    assert_rows_everywhere(Q_STATUS_DAILY, NULL,
        "2024-10-01|5|4|2|1|80.00|50.00\n"
        "2024-10-02|7|5|3|3|71.43|60.00\n"
        "2024-10-03|5|2|1|1|40.00|50.00");
    /* The views answer the usual windowed question, e.g. one day. */
    assert_rows_everywhere("SELECT messages, delivery_rate FROM message_status_daily WHERE day = '2024-10-02'", NULL,
                           "7|71.43");
}

static void latency_daily_average_and_percentiles_in_seconds(void **state)
{
    (void)state;
    load_known_data();
    /*
     * day | delivered | avg, p50, p90 of delivered - sent | read | avg, p50, p90 of read - delivered
     *     | avg, p50, p90 of read - sent. Day 1: d = 2, 4, 10, 10; r = 60, 600; rs = 62, 604.
     * Day 2: d = 1, 3, 5, 7, 300; r = 30, 120, 300; rs = 33, 127, 301. Day 3: d = 4, 6; r = 10; rs = 16.
     */
    assert_rows_everywhere(Q_LATENCY_DAILY, NULL,
        "2024-10-01|4|6.50|7.00|10.00|2|330.00|330.00|546.00|333.00|333.00|549.80\n"
        "2024-10-02|5|63.20|5.00|182.80|3|150.00|120.00|264.00|153.67|127.00|266.20\n"
        "2024-10-03|2|5.00|5.00|5.80|1|10.00|10.00|10.00|16.00|16.00|16.00");
}

static void summary_covers_a_window_of_sent_times(void **state)
{
    (void)state;
    load_known_data();
    /* The three days: rates and percentiles over all 17 messages, not averages of the daily values. */
    assert_rows_everywhere(Q_SUMMARY, PARAMS("2024-10-01T00:00:00Z", "2024-10-04T00:00:00Z"),
                           "17|11|6|5|64.71|54.55|32.00|5.00|10.00|186.67|90.00|450.00|190.50|94.50|452.50");
    /* One UTC day equals its daily rows. */
    assert_rows_everywhere(Q_SUMMARY, PARAMS("2024-10-02T00:00:00Z", "2024-10-03T00:00:00Z"),
                           "7|5|3|3|71.43|60.00|63.20|5.00|182.80|150.00|120.00|264.00|153.67|127.00|266.20");
    /* since is inclusive, until exclusive: m05 was sent at 23:59:59, m06 at 00:30:00. */
    assert_rows_everywhere("SELECT messages, delivered, avg_delivery_seconds FROM pw_message_summary($1, $2)",
                           PARAMS("2024-10-01T23:59:59Z", "2024-10-02T00:30:00Z"), "1|1|10.00");
    /* The same instants written with another offset. */
    assert_rows_everywhere("SELECT messages FROM pw_message_summary($1, $2)",
                           PARAMS("2024-10-02 05:29:59+05:30", "2024-10-02 06:00:01+05:30"), "2");
}

static void failures_daily_by_error_code_and_title(void **state)
{
    (void)state;
    load_known_data();
    /* m08 has two errors (counted under both); m09's AiSensy error has a reason instead of a title;
       m11 failed and was delivered later; m14 failed without errors. */
    assert_rows_everywhere(Q_FAILURES_DAILY, NULL,
        "2024-10-01|131049|This message was not delivered to maintain healthy ecosystem engagement.|1\n"
        "2024-10-02|131000|Something went wrong|1\n"
        "2024-10-02|131026|Message undeliverable|2\n"
        "2024-10-02|131047|Re-engagement message|1\n"
        "2024-10-03|NULL|NULL|1");
    /* last_error is the failed event's errors, so the view agrees with status_events. */
    pwt_assert_rows("SELECT count(*) FROM message_logs m JOIN status_events e ON e.bsp_msg_id = m.bsp_msg_id "
                    "AND e.status = 'failed' WHERE e.errors IS DISTINCT FROM m.last_error", "0");
}

static void undelivered_lists_messages_never_delivered_oldest_first(void **state)
{
    (void)state;
    load_known_data();
    assert_rows_everywhere(Q_UNDELIVERED("5"), NULL,
        "m04|+919800000003|failed|2024-10-01 20:00:00|[{\"code\": 131049, \"title\": \"This message was not delivered "
            "to maintain healthy ecosystem engagement.\", \"message\": \"Not delivered.\"}]\n"
        "m08|+919800000003|failed|2024-10-02 09:00:00|[{\"code\": 131026, \"title\": \"Message undeliverable\"}, "
            "{\"code\": 131000, \"title\": \"Something went wrong\"}]\n"
        "m09|+919800000003|failed|2024-10-02 09:30:00|[{\"code\": 131047, \"reason\": \"Re-engagement message\"}]\n"
        "m17|+919800000002|delivered|2024-10-03 07:00:00|NULL\n"
        "m13|+919800000002|sent|2024-10-03 10:00:00|NULL\n"
        "m14|+919800000003|failed|2024-10-03 23:00:00|NULL");
    assert_rows_everywhere("SELECT bsp_msg_id FROM pw_undelivered(5, include_failed => false)", NULL, "m17\nm13");
    pwt_assert_rows("SELECT bool_and(minutes_waiting > 1000000) FROM pw_undelivered(5)", "t");
}

static void undelivered_respects_the_minutes_threshold(void **state)
{
    (void)state;
    /* Sent 3 minutes ago (whatsapp_status in the worker's format), one delivered, one failed. */
    pwt_exec("INSERT INTO message_logs (bsp_msg_id, to_phone, whatsapp_status, current_status, created_at) "
             "SELECT id, '+919800000009', ws, pw_current_status(ws), now() - interval '3 minutes' FROM ("
             " SELECT 'recent' AS id, jsonb_build_object('sent', t) AS ws FROM (SELECT to_char((now() - interval "
             "'3 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') t) a UNION ALL"
             " SELECT 'recent-delivered', jsonb_build_object('sent', t, 'delivered', t) FROM (SELECT to_char((now() - "
             "interval '3 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') t) b UNION ALL"
             " SELECT 'recent-failed', jsonb_build_object('sent', t, 'failed', t) FROM (SELECT to_char((now() - "
             "interval '3 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') t) c) v");
    assert_rows_everywhere("SELECT bsp_msg_id FROM pw_undelivered(5)", NULL, "");
    assert_rows_everywhere("SELECT bsp_msg_id, current_status, minutes_waiting FROM pw_undelivered(2) "
                           "ORDER BY bsp_msg_id COLLATE \"C\"", NULL,
                           "recent|sent|3\nrecent-failed|failed|3");
    assert_rows_everywhere("SELECT bsp_msg_id FROM pw_undelivered(2, false)", NULL, "recent");
}

static void engaged_recipients_by_read_rate_over_a_window(void **state)
{
    (void)state;
    load_known_data();
    /* to_phone | messages | delivered | read | read_rate (read / messages, %); m16 has no to_phone. */
    assert_rows_everywhere(Q_ENGAGED, PARAMS("2024-10-01T00:00:00Z", "2024-10-04T00:00:00Z", "1"),
        "+919800000001|6|6|5|83.33\n"
        "+919800000004|2|2|1|50.00\n"
        "+919800000002|4|2|0|0.00\n"
        "+919800000003|4|0|0|0.00");
    assert_rows_everywhere("SELECT count(*) FILTER (WHERE recipient = to_phone), count(*) FROM pw_engaged_recipients($1, $2, $3::int)",
                           PARAMS("2024-10-01T00:00:00Z", "2024-10-04T00:00:00Z", "1"), "4|4");
    /* min_messages is inclusive. */
    assert_rows_everywhere("SELECT to_phone FROM pw_engaged_recipients($1, $2, $3::int)",
                           PARAMS("2024-10-01T00:00:00Z", "2024-10-04T00:00:00Z", "4"),
                           "+919800000001\n+919800000002\n+919800000003");
    assert_rows_everywhere("SELECT to_phone FROM pw_engaged_recipients($1, $2, $3::int)",
                           PARAMS("2024-10-01T00:00:00Z", "2024-10-04T00:00:00Z", "6"), "+919800000001");
    assert_rows_everywhere("SELECT to_phone FROM pw_engaged_recipients($1, $2, $3::int)",
                           PARAMS("2024-10-01T00:00:00Z", "2024-10-04T00:00:00Z", "7"), "");
    /* The default min_messages is 5. */
    assert_rows_everywhere("SELECT to_phone FROM pw_engaged_recipients($1, $2)",
                           PARAMS("2024-10-01T00:00:00Z", "2024-10-04T00:00:00Z"), "+919800000001");
    /* One UTC day. */
    assert_rows_everywhere(Q_ENGAGED, PARAMS("2024-10-02T00:00:00Z", "2024-10-03T00:00:00Z", "1"),
        "+919800000001|3|3|2|66.67\n"
        "+919800000004|2|2|1|50.00\n"
        "+919800000003|2|0|0|0.00");
    /* since inclusive, until exclusive. */
    assert_rows_everywhere(Q_ENGAGED, PARAMS("2024-10-01T09:00:00Z", "2024-10-01T10:00:00Z", "1"),
                           "+919800000001|1|1|1|100.00");
}

static void inbound_daily_by_type_with_senders(void **state)
{
    (void)state;
    load_known_data();
    /* day | msg_type | messages | senders (from_phone, else from_user_id) */
    assert_rows_everywhere(Q_INBOUND_DAILY, NULL,
        "2024-10-01|image|1|1\n"
        "2024-10-01|text|2|1\n"
        "2024-10-02|button|1|1\n"
        "2024-10-02|reaction|1|1\n"
        "2024-10-02|text|2|2");
}

/* ---- scripts/stats ------------------------------------------------------------------------------- */

/*
 * Runs scripts/stats (found next to PW_FIXTURES: <repo>/tests/fixtures -> <repo>/scripts/stats) with
 * --database-url url and args; returns its output (stdout and stderr) with every run of spaces squeezed
 * to one, and its exit status in *status.
 */
static char *run_stats(const char *url, const char *args, int *status)
{
    char *script = pwt_repo_path("scripts/stats");
    assert_non_null(script);
    char *q_script = pwt_shell_quote(script), *q_url = pwt_shell_quote(url);
    char *cmd = pwt_xasprintf("%s %s --database-url %s 2>&1", q_script, args, q_url);
    char *out;
    *status = pwt_popen_read(cmd, &out);
    /* Squeeze every run of spaces to one. */
    char *o = out;
    for (const char *p = out; *p; p++)
        if (!(*p == ' ' && o > out && o[-1] == ' '))
            *o++ = *p;
    *o = '\0';
    free(cmd);
    free(q_url);
    free(q_script);
    free(script);
    return out;
}

static void stats_script_prints_the_known_numbers(void **state)
{
    (void)state;
    load_known_data();
    int status;
    char *out = run_stats(pwt_db_url(), "--since 2024-10-01 --until 2024-10-04 --min-messages 2 --top 3", &status);
    if (status != 0)
        pwt_fail(__FILE__, __LINE__, "scripts/stats exited with %d:\n%s", status, out);
    pwt_assert_contains(out, "pushworker stats, UTC days 2024-10-01 to 2024-10-03");
    pwt_assert_contains(out, "\n2024-10-01 5 4 2 1 80.00 50.00\n2024-10-02 7 5 3 3 71.43 60.00\n"
                         "2024-10-03 5 2 1 1 40.00 50.00\ntotal 17 11 6 5 64.71 54.55\n");
    pwt_assert_contains(out, "\n2024-10-02 5 63.20 5.00 182.80 3 150.00 120.00 264.00 153.67 127.00 266.20\n");
    pwt_assert_contains(out, "\ntotal 11 32.00 5.00 10.00 6 186.67 90.00 450.00 190.50 94.50 452.50\n");
    pwt_assert_contains(out, "\n2024-10-02 131026 Message undeliverable 2\n");
    pwt_assert_contains(out, "\ntotal 131026 Message undeliverable 2\n");
    pwt_assert_contains(out, "6 message(s) sent in the window and not delivered: 4 failed, 2 without a failure");
    pwt_assert_contains(out, "\nm14 +919800000003 failed 2024-10-03 23:00:00 ");
    pwt_assert_contains(out, "\n+919800000001 6 6 5 83.33\n+919800000004 2 2 1 50.00\n+919800000002 4 2 0 0.00\n");
    pwt_assert_contains(out, "\n2024-10-02 text 2 2\n");
    pwt_assert_contains(out, "\ntotal text 4 -\n");
    free(out);

    /* A database without the views, and one that cannot be reached. */
    out = run_stats(getenv("PW_TEST_DATABASE_URL"), "", &status);
    assert_int_equal(status, 1);
    pwt_assert_contains(out, "run `worker migrate`");
    free(out);
    out = run_stats("postgresql://postgres@127.0.0.1:1/nowhere", "", &status);
    assert_int_equal(status, 1);
    pwt_assert_contains(out, "stats: cannot query the database");
    free(out);
    out = run_stats(pwt_db_url(), "--since 2024-10-04 --until 2024-10-01", &status);
    assert_int_equal(status, 2);
    free(out);
}

/* ---- through the worker ------------------------------------------------------------------------ */

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define W_A "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA=="
#define W_FAIL "wamid.HBgMOTE5ODc2NTQzMjExFQIAERgSRkFJTEVEMDAwMDAwMDAwMDAxAA=="
#define W_B2 "wamid.HBgMOTE5ODc2NTQzMjE1FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAyAA=="

static void push_fixture(const char *rel, const char *message_id)
{
    pwt_assert_status(pwt_push_fixture(&worker, rel, message_id, SUB, "2024-03-06T10:00:00Z"), 204);
}

static void pushes_through_the_worker_show_up_in_the_views(void **state)
{
    (void)state;
    /* W_A: sent 2024-03-05 20:00:00 UTC (01:30 the next day in Kolkata), delivered +5 s, read +60 s, pushed
       out of order; W_FAIL: failed at 20:05 with 131049; statuses_batch: B1 sent 21:00:00 and delivered
       +3 s, B2 sent 21:00:01; three inbound texts on 2024-03-06 from two senders. */
    push_fixture("meta/status_read.json", "a103");
    push_fixture("meta/status_sent.json", "a101");
    push_fixture("meta/status_delivered.json", "a102");
    push_fixture("meta/status_failed.json", "a104");
    push_fixture("meta/statuses_batch.json", "a105");
    push_fixture("meta/text_with_contact.json", "a106");
    push_fixture("meta/messages_same_contact.json", "a107");
    /* Redeliveries change nothing. */
    push_fixture("meta/status_failed.json", "a104");
    push_fixture("meta/messages_same_contact.json", "a107");

    assert_rows_everywhere(Q_STATUS_DAILY, NULL, "2024-03-05|4|2|1|1|50.00|50.00");
    assert_rows_everywhere(Q_LATENCY_DAILY, NULL, "2024-03-05|2|4.00|4.00|4.80|1|55.00|55.00|55.00|60.00|60.00|60.00");
    assert_rows_everywhere(Q_SUMMARY, PARAMS("2024-03-05T00:00:00Z", "2024-03-06T00:00:00Z"),
                           "4|2|1|1|50.00|50.00|4.00|4.00|4.80|55.00|55.00|55.00|60.00|60.00|60.00");
    assert_rows_everywhere(Q_FAILURES_DAILY, NULL,
                           "2024-03-05|131049|This message was not delivered to maintain healthy ecosystem engagement.|1");
    assert_rows_everywhere("SELECT bsp_msg_id, to_phone, current_status, to_char(sent_at AT TIME ZONE 'UTC', "
                           "'YYYY-MM-DD HH24:MI:SS') FROM pw_undelivered(5)", NULL,
                           W_FAIL "|+919876543211|failed|2024-03-05 20:05:00\n"
                           W_B2 "|+919876543215|sent|2024-03-05 21:00:01");
    assert_rows_everywhere(Q_ENGAGED, PARAMS("2024-03-05T00:00:00Z", "2024-03-06T00:00:00Z", "1"),
                           "+919876543210|1|1|1|100.00\n"
                           "+919876543211|1|0|0|0.00\n"
                           "+919876543214|1|1|0|0.00\n"
                           "+919876543215|1|0|0|0.00");
    assert_rows_everywhere(Q_INBOUND_DAILY, NULL, "2024-03-06|text|3|2");
    pwt_assert_rows("SELECT bsp_msg_id, delivery_seconds, read_seconds FROM message_status_times WHERE read_at IS NOT NULL",
                    W_A "|5|55");
}

#define T(fn) cmocka_unit_test_setup(fn, fresh_tables)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(migration_creates_the_views_with_their_columns),
        T(empty_tables_give_empty_views_and_a_zero_summary),
        T(status_times_read_whatsapp_status_in_utc),
        T(status_daily_counts_and_rates_per_utc_sent_day),
        T(latency_daily_average_and_percentiles_in_seconds),
        T(summary_covers_a_window_of_sent_times),
        T(failures_daily_by_error_code_and_title),
        T(undelivered_lists_messages_never_delivered_oldest_first),
        T(undelivered_respects_the_minutes_threshold),
        T(engaged_recipients_by_read_rate_over_a_window),
        T(inbound_daily_by_type_with_senders),
        T(stats_script_prints_the_known_numbers),
        T(pushes_through_the_worker_show_up_in_the_views),
    };
    return pwt_suite_run("analytics", &worker, PARAMS("WORKER_THREADS=1"), tests);
}
/* clang-format on */
