/* `worker redrive`: dead letters that today's parsers accept become rows, once; the rest stay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>

#include "tests/integration/harness.h"
#include "tests/integration/util.h"

#define SUB "projects/p/subscriptions/s"

/* `$PW_WORKER redrive ARGS` against the test database, with env ("NAME=value ..." or "") before it; its exit status, output in *out. */
static int redrive_env(const char *env, const char *args, char **out)
{
    char *cmd_args = pwt_xasprintf("redrive %s", args);
    int status = pwt_worker_command(env, NULL, cmd_args, out);
    free(cmd_args);
    return status;
}

static int redrive(const char *args, char **out)
{
    return redrive_env("", args, out);
}

/* `worker redrive args` must exit 0 and print summary. */
static void check_redrive(const char *args, const char *summary)
{
    char *out;
    assert_int_equal(redrive(args, &out), 0);
    pwt_assert_contains(out, summary);
    free(out);
}

/*
 * Two dead letters as an older version would have left them: a status push it did not
 * understand (today's parsers do; its receipt says dead_letter), and a push with broken base64
 * (still broken). A third was redriven already and must not be touched.
 */
static void seed_dead_letters(void)
{
    char *good = pwt_wrap_fixture("meta/status_read.json", "7001", SUB, "2024-03-06T05:00:00Z");
    const char *bad = "{\"message\":{\"data\":\"!!!!\",\"messageId\":\"7002\"},\"subscription\":\"" SUB "\"}";
    free(pwt_rows_p("INSERT INTO dead_letters (subscription, message_id, reason, body) VALUES"
               " ($1, '7001', 'payload: unsupported format (pushworker 0.1)', convert_to($2, 'UTF8')),"
               " ($1, '7002', 'envelope: message.data: invalid base64', convert_to($3, 'UTF8')),"
               " ($1, '7003', 'payload: unsupported format (pushworker 0.1)', convert_to($2, 'UTF8'))",
               PWT_LIST(SUB, good, bad)));
    pwt_exec("UPDATE dead_letters SET redriven_at = '2024-01-01Z' WHERE message_id = '7003'");
    pwt_exec("INSERT INTO pubsub_receipts (subscription, message_id, publish_time, outcome) VALUES"
             " ('" SUB "', '7001', '2024-03-06T05:00:00Z', 'dead_letter'),"
             " ('" SUB "', '7002', NULL, 'dead_letter')");
    free(good);
}

static void dry_run_counts_and_writes_nothing(void **state)
{
    (void)state;
    pwt_truncate_all();
    seed_dead_letters();
    check_redrive("--dry-run", "redrive: 2 examined, 1 would be written, 1 still rejected, 0 failed to write");
    pwt_assert_rows("SELECT count(*) FROM status_events", "0");
    pwt_assert_rows("SELECT message_id, redriven_at IS NOT NULL FROM dead_letters ORDER BY message_id", "7001|f\n7002|f\n7003|t");
}

static void accepted_dead_letter_becomes_rows_once_and_the_rejected_one_stays(void **state)
{
    (void)state;
    pwt_truncate_all();
    seed_dead_letters();
    check_redrive("", "redrive: 2 examined, 1 written, 1 still rejected, 0 failed to write");
    /* the rows a live push of meta/status_read.json writes (docs/rows.md) */
    pwt_assert_rows("SELECT bsp_msg_id, status, pubsub_message_id FROM status_events ORDER BY 1, 2",
                    "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA==|read|7001");
    pwt_assert_rows("SELECT current_status, whatsapp_status ? 'delivered' FROM message_logs", "read|t");
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts ORDER BY 1", "7001|stored\n7002|dead_letter");
    pwt_assert_rows("SELECT message_id, redriven_at IS NOT NULL FROM dead_letters ORDER BY message_id", "7001|t\n7002|f\n7003|t");

    /* Again: the written one is not written twice; the rejected one is examined and stays. */
    char *dump = pwt_dump_tables();
    check_redrive("", "redrive: 1 examined, 0 written, 1 still rejected, 0 failed to write");
    pwt_assert_tables_unchanged(dump);
}

static void filters_select_by_reason_and_time(void **state)
{
    (void)state;
    pwt_truncate_all();
    seed_dead_letters();
    /* case-insensitive: only 7002 */
    check_redrive("--reason BASE64", "redrive: 1 examined, 0 written, 1 still rejected, 0 failed to write");
    check_redrive("--since 2999-01-01Z", "redrive: 0 examined, 0 written, 0 still rejected, 0 failed to write");
    pwt_assert_rows("SELECT count(*) FROM status_events", "0");
    char *out;
    assert_int_equal(redrive("--bogus", &out), 2);
    free(out);
}

/* Redriven text arrives as UTF-8 even when the environment asks libpq for another client encoding. */
static void redriven_text_is_stored_as_sent_whatever_the_client_encoding_of_the_environment(void **state)
{
    (void)state;
    pwt_truncate_all();
    const char *wh = "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"value\":{"
                     "\"messaging_product\":\"whatsapp\",\"metadata\":{\"phone_number_id\":\"106540352242922\"},"
                     "\"messages\":[{\"from\":\"919812345678\",\"id\":\"wamid.REDRIVECAFE\",\"timestamp\":\"1709668800\","
                     "\"type\":\"text\",\"text\":{\"body\":\"caf\xC3\xA9 \xE2\x98\x95\"}}]},\"field\":\"messages\"}]}]}";
    char *body = pwt_wrap(wh, strlen(wh), "7010", SUB, "2024-03-06T05:00:00Z");
    free(pwt_rows_p("INSERT INTO dead_letters (subscription, message_id, reason, body)"
                    " VALUES ($1, '7010', 'payload: unsupported format (pushworker 0.1)', convert_to($2, 'UTF8'))",
                    PWT_LIST(SUB, body)));
    char *out;
    assert_int_equal(redrive_env("PGCLIENTENCODING=LATIN1", "", &out), 0);
    pwt_assert_contains(out, "redrive: 1 examined, 1 written, 0 still rejected, 0 failed to write");
    free(out);
    pwt_assert_rows("SELECT encode(convert_to(body, 'UTF8'), 'hex') FROM inbound_messages", "636166c3a920e29895");
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dry_run_counts_and_writes_nothing),
        cmocka_unit_test(accepted_dead_letter_becomes_rows_once_and_the_rejected_one_stays),
        cmocka_unit_test(filters_select_by_reason_and_time),
        cmocka_unit_test(redriven_text_is_stored_as_sent_whatever_the_client_encoding_of_the_environment),
    };
    return pwt_suite_run("integration/redrive", NULL, NULL, tests);
}
