/* UTF-8 and escapes end to end: reasons that quote input stay valid text, escapes PostgreSQL cannot store, exact jsonb numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/integration/harness.h"

/* clang-format off */

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PUBLISH_TIME "2024-03-06T10:00:00.250Z"
#define PNID "106540352242922"
#define W_OK "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSVVRGOE9LMDAwMDAwMDAwMDAxAA=="
#define W_CUT "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSVVRGOENVVDAwMDAwMDAwMDAxAA=="
#define W_IN "wamid.HBgMOTE5ODc2NTQzMjEwFQIAEhgUVVRGOElOQk9VTkQwMDAwMDAwMDAA"
#define PARAMS PWT_LIST
#define ASSERT_EMPTY(table) pwt_assert_rows("SELECT t::text FROM " table " t", "")
#define LOSSY_REASON "payload: \\u0000 (NUL) or an unpaired surrogate in a string: stored with U+FFFD in its place; " \
    "the original is kept here"

static pwt_worker_t worker;

static long push(const char *payload, const char *message_id)
{
    return pwt_push(&worker, payload, strlen(payload), message_id, SUB, PUBLISH_TIME);
}

/*
 * A status whose timestamp is 39 'a' and a euro sign (42 bytes): the reason used to quote 40 bytes,
 * cutting the sign in half; PostgreSQL refused the dead letter (22021) and the push's valid status
 * was lost with it. Now the reason quotes whole characters only, and both are kept.
 */
static void reason_quoting_input_keeps_whole_characters(void **state)
{
    (void)state;
    char *payload = pwt_meta_webhook("\"statuses\":[{\"id\":\"" W_OK "\",\"status\":\"sent\",\"timestamp\":\"1709668800\","
                            "\"recipient_id\":\"919876543210\"},{\"id\":\"" W_CUT "\",\"status\":\"sent\",\"timestamp\":"
                            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xe2\x82\xac\"}]");
    pwt_assert_status(push(payload, "7001"), 204);
    pwt_assert_rows("SELECT bsp_msg_id, status, occurred_at, recipient_id, phone_number_id FROM status_events",
                    W_OK "|sent|2024-03-05 20:00:00+00|919876543210|" PNID);
    pwt_assert_rows("SELECT bsp_msg_id, to_phone, whatsapp_status, current_status FROM message_logs",
                    W_OK "|+919876543210|{\"sent\": \"2024-03-05T20:00:00Z\"}|sent");
    pwt_assert_rows("SELECT subscription, message_id, reason, octet_length(body) > 0 FROM dead_letters",
                    SUB "|7001|rejected 1 item(s): entry[0].changes[0].value.statuses[1].timestamp: not a Unix time: "
                    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"|t");
    pwt_assert_rows("SELECT subscription, message_id, outcome FROM pubsub_receipts", SUB "|7001|stored");
    free(payload);
}

/* Control characters in quoted input are escaped, so the reason reads on one line. */
static void reason_escapes_control_characters(void **state)
{
    (void)state;
    char *payload = pwt_meta_webhook("\"statuses\":[{\"id\":\"" W_CUT "\",\"status\":\"sent\",\"timestamp\":\"12\\n\\u0000\\u001b[31m\"}]");
    pwt_assert_status(push(payload, "7002"), 204);
    pwt_assert_rows("SELECT reason FROM dead_letters",
                    "rejected 1 item(s): entry[0].changes[0].value.statuses[0].timestamp: not a Unix time: "
                    "\"12\\n\\u0000\\u001b[31m\"");
    ASSERT_EMPTY("status_events");
    free(payload);
}

/* Python's json.dumps writes an emoji as a surrogate pair of escapes: a correct pair is stored, and
   the push is not kept as a dead letter (the old check flagged the pair's low half). */
static void paired_surrogate_escapes_are_not_a_dead_letter(void **state)
{
    (void)state;
    char *payload = pwt_meta_webhook("\"contacts\":[{\"profile\":{\"name\":\"N\\ud83d\\ude00\"},\"wa_id\":\"919876543210\"}],"
                            "\"messages\":[{\"from\":\"919876543210\",\"id\":\"" W_IN "\",\"timestamp\":\"1709668800\","
                            "\"type\":\"text\",\"text\":{\"body\":\"hi \\ud83d\\udc4d there\"}}]");
    pwt_assert_status(push(payload, "7003"), 204);
    pwt_assert_rows("SELECT wa_msg_id, contact_name, body, payload->'text'->>'body' FROM inbound_messages",
                    W_IN "|N\xf0\x9f\x98\x80|hi \xf0\x9f\x91\x8d there|hi \xf0\x9f\x91\x8d there");
    ASSERT_EMPTY("dead_letters");
    pwt_assert_rows("SELECT outcome FROM pubsub_receipts", "stored");
    free(payload);
}

/* \u0000 and half a pair cannot be stored: U+FFFD in their place (text and jsonb), and the push
   as it came is kept too. An escaped backslash before "u0000" is text, kept as it is. */
static void lossy_escapes_are_stored_with_ufffd_and_kept(void **state)
{
    (void)state;
    char *payload = pwt_meta_webhook("\"messages\":[{\"from\":\"919876543210\",\"id\":\"" W_IN "\",\"timestamp\":\"1709668800\","
                            "\"type\":\"text\",\"text\":{\"body\":\"a\\u0000b \\udc4d\\ud83d \\\\u0000\"}}]");
    pwt_assert_status(push(payload, "7004"), 204);
    pwt_assert_rows("SELECT body, payload->'text'->>'body' FROM inbound_messages",
                    "a\xef\xbf\xbd" "b \xef\xbf\xbd\xef\xbf\xbd \\u0000|a\xef\xbf\xbd" "b \xef\xbf\xbd\xef\xbf\xbd \\u0000");
    pwt_assert_rows("SELECT message_id, reason FROM dead_letters", "7004|" LOSSY_REASON);
    free(payload);
}

/* jsonb columns get the value's own text: a number too big for json-c's integers stays exact
   (json-c had written 18446744073709551615), and so do decimals. */
static void jsonb_columns_keep_numbers_exactly(void **state)
{
    (void)state;
    char *payload = pwt_meta_webhook("\"statuses\":[{\"id\":\"" W_OK "\",\"status\":\"failed\",\"timestamp\":\"1709668800\","
                            "\"pricing\":{\"n\":123456789012345678901234567890,\"rate\":0.10000000000000000000001},"
                            "\"errors\":[{\"code\":131049,\"big\":-99999999999999999999}]}]");
    pwt_assert_status(push(payload, "7005"), 204);
    pwt_assert_rows("SELECT pricing, errors FROM status_events",
                    "{\"n\": 123456789012345678901234567890, \"rate\": 0.10000000000000000000001}|"
                    "[{\"big\": -99999999999999999999, \"code\": 131049}]");
    pwt_assert_rows("SELECT last_error FROM message_logs", "[{\"big\": -99999999999999999999, \"code\": 131049}]");
    ASSERT_EMPTY("dead_letters");
    free(payload);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, pwt_suite_fresh, pwt_suite_alive)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(reason_quoting_input_keeps_whole_characters),
        T(reason_escapes_control_characters),
        T(paired_surrogate_escapes_are_not_a_dead_letter),
        T(lossy_escapes_are_stored_with_ufffd_and_kept),
        T(jsonb_columns_keep_numbers_exactly),
    };
    return pwt_suite_run("utf8", &worker, PARAMS("WORKER_THREADS=2"), tests);
}
/* clang-format on */
