/* Pipeline tests: pushes through the real worker over HTTP into a real PostgreSQL, checked row by row against docs/rows.md. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "tests/integration/harness.h"
#include "tests/integration/util.h"

/* clang-format off: expected rows are laid out by hand, one table row per source line where it fits. */

/* ---- what the pushes carry --------------------------------------------------------------------- */

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PUBLISH_TIME "2024-03-06T10:00:00.250Z"
#define PUBLISH_TIME_PG "2024-03-06 10:00:00.25+00"
#define SUB_DOCS "projects/myproject/subscriptions/mysubscription"
#define PNID "106540352242922"

/* A receipt row of a push made by push() / push_fixture(). */
#define RECEIPT(id, outcome) SUB "|" id "|" PUBLISH_TIME_PG "|" outcome

/* Outbound wamids of tests/fixtures/meta/status_*.json and friends. */
#define W_A "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA=="
#define W_FAIL "wamid.HBgMOTE5ODc2NTQzMjExFQIAERgSRkFJTEVEMDAwMDAwMDAwMDAxAA=="
#define W_VOICE "wamid.HBgMOTE5ODc2NTQzMjEyFQIAERgSVk9JQ0UwMDAwMDAwMDAwMDAxAA=="
#define W_DEL "wamid.HBgMOTE5ODc2NTQzMjEzFQIAERgSREVMRVRFRDAwMDAwMDAwMDAxAA=="
#define W_B1 "wamid.HBgMOTE5ODc2NTQzMjE0FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAxAA=="
#define W_B2 "wamid.HBgMOTE5ODc2NTQzMjE1FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAyAA=="
#define W_NUM "wamid.HBgMOTE5ODc2NTQzMjE2FQIAERgSTlVNRVJJQzAwMDAwMDAwMDAxAA=="
#define W_MIX "wamid.HBgMOTE5ODc2NTQzMjE3FQIAERgSTUlYRUQwMDAwMDAwMDAwMDAxAA=="
#define W_BAD1 "wamid.HBgMOTE5ODc2NTQzMjE4FQIAERgSR09PRDAwMDAwMDAwMDAwMDAxAA=="
#define W_BAD3 "wamid.HBgMOTE5ODc2NTQzMjE5FQIAERgSR09PRDAwMDAwMDAwMDAwMDAyAA=="
#define W_ENV "wamid.HBgMOTE5ODc2NTQzMjIwFQIAERgSRU5WRUxPUEUwMDAwMDAwMDAxAA=="
#define W_PULL "wamid.HBgMOTE5ODc2NTQzMjIxFQIAERgSUFVMTDAwMDAwMDAwMDAwMDAxAA=="
#define W_SYN "wamid.HBgMOTE5ODc2NTQzMjMwFQIAERgSU1lOVEhFVElDMDAwMDAwMDAxAA=="
#define WA_AIS_IN1 "wamid.HBgMOTE5ODc2NTAwMDAxFQIAEhgUM0E5QjRDMkQ1RTZGN0EwQjFDMkQA"
#define WA_AIS_IN2 "wamid.HBgMOTE5ODc2NTAwMDAyFQIAEhgUM0E5QjRDMkQ1RTZGN0EwQjFDMkUA"
#define WA_AIS_OUT "wamid.HBgMOTE5ODEyMzQ1Njc4FQIAERgSQUlTRU5TWTAwMDAwMDAwMDAxAA=="
#define WA_AIS_FAIL "wamid.HBgMOTE5ODEyMzQ1Njc5FQIAERgSQUlTRU5TWTAwMDAwMDAwMDAyAA=="
/* Inbound wamids: "wamid.HBgMOTE5ODEyMzQwMDAxFQIAEhgg" + base64(fixture name, unpadded) + "AA==" (the tag). */
#define WI(tag) "wamid.HBgMOTE5ODEyMzQwMDAxFQIAEhgg" tag

/* jsonb as PostgreSQL prints it (keys by length, then bytes) for the fixtures' sub-objects. */
#define CONV_SENT "{\"id\": \"6ceb9d929c2a3e5e36d7d6a2b8ab7b2c\", \"origin\": {\"type\": \"marketing\"}, \"expiration_timestamp\": \"1709755200\"}"
#define CONV "{\"id\": \"6ceb9d929c2a3e5e36d7d6a2b8ab7b2c\", \"origin\": {\"type\": \"marketing\"}}"
#define PRICING "{\"type\": \"regular\", \"billable\": true, \"category\": \"marketing\", \"pricing_model\": \"PMP\"}"
#define ERR_131049                                                                                                     \
    "[{\"code\": 131049, \"href\": \"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/\", "  \
    "\"title\": \"This message was not delivered to maintain healthy ecosystem engagement.\", \"message\": \"This "    \
    "message was not delivered to maintain healthy ecosystem engagement.\", \"error_data\": {\"details\": \"In order " \
    "to maintain a healthy ecosystem engagement, the message failed to be delivered.\"}}]"
#define ERR_AIS_131047 "[{\"code\": 131047, \"reason\": \"Re-engagement message\"}]"

/* ---- the contract's columns, ordered deterministically (times print in UTC: the checker's zone) -- */

#define Q_LOGS PWT_Q_LOGS
#define Q_EVENTS PWT_Q_EVENTS
#define Q_INBOUND                                                                                                      \
    "SELECT wa_msg_id, phone_number_id, from_phone, from_user_id, contact_name, msg_type, body, context_msg_id, "      \
    "sent_at, pubsub_message_id FROM inbound_messages ORDER BY wa_msg_id COLLATE \"C\""
#define Q_CONTACTS "SELECT wa_id, profile_name, first_seen_at, last_seen_at FROM contacts ORDER BY wa_id COLLATE \"C\""
#define Q_RECEIPTS PWT_Q_RECEIPTS
/* $1 = the request body: the last column says whether the stored raw bytes equal it. */
#define Q_DEAD                                                                                                         \
    "SELECT subscription, message_id, split_part(reason, ': ', 1), body = convert_to($1, 'UTF8') FROM dead_letters "  \
    "ORDER BY id"
/* $1 = a Meta webhook: how many inbound rows do not hold exactly their message object from it. */
#define Q_META_PAYLOAD_MISMATCHES                                                                                      \
    "SELECT count(*) FROM inbound_messages m WHERE m.payload IS DISTINCT FROM (SELECT f FROM "                         \
    "jsonb_path_query($1::jsonb, '$.entry[*].changes[*].value.messages[*]') f WHERE f->>'id' = m.wa_msg_id)"

#define PARAMS PWT_LIST
#define ASSERT_EMPTY(table) pwt_assert_rows("SELECT t::text FROM " table " t", "")

/* The status sequence of meta/status_{sent,delivered,read}.json, stored whatever the order. */
#define SEQ_LOG W_A "|+919876543210|{\"read\": \"2024-03-05T20:01:00Z\", \"sent\": \"2024-03-05T20:00:00Z\", " \
    "\"delivered\": \"2024-03-05T20:00:05Z\"}|read|NULL|2024-03-05 20:00:00+00"
#define SEQ_EVENTS                                                                                                     \
    W_A "|delivered|2024-03-05 20:00:05+00|919876543210|" PNID "|" CONV "|" PRICING "|NULL|NULL|1102\n"               \
    W_A "|read|2024-03-05 20:01:00+00|919876543210|" PNID "|NULL|NULL|NULL|NULL|1103\n"                               \
    W_A "|sent|2024-03-05 20:00:00+00|919876543210|" PNID "|" CONV_SENT "|" PRICING "|NULL|campaign=spring24|1101"
#define NEHA_CONTACT "919876543210|Neha Kulkarni|2024-03-05 20:01:00+00|2024-03-05 20:01:00+00"

static pwt_worker_t worker; /* the worker most tests talk to */

/* ---- helpers --------------------------------------------------------------------------------- */

/* Wraps payload as a push (SUB, PUBLISH_TIME, the given message id) and posts it to the worker. */
static long push(const char *payload, size_t len, const char *message_id)
{
    return pwt_push(&worker, payload, len, message_id, SUB, PUBLISH_TIME);
}

static long push_fixture(const char *rel, const char *message_id)
{
    return pwt_push_fixture(&worker, rel, message_id, SUB, PUBLISH_TIME);
}

/* Posts a fixture as the raw request body (an envelope fixture, or an unwrapped push). */
static long post_fixture(const char *rel, const char *const *headers)
{
    size_t len;
    char *body = pwt_read_fixture(rel, &len);
    long status = pwt_post(&worker, "/", body, len, headers, NULL);
    free(body);
    return status;
}

/* A Meta webhook with one status of W-id wamid; recipient NULL leaves recipient_id out. */
static char *status_webhook(const char *wamid, const char *status, const char *unix_seconds, const char *recipient)
{
    char *recipient_member = recipient ? pwt_xasprintf(",\"recipient_id\":\"%s\"", recipient) : pwt_xasprintf("%s", "");
    char *members = pwt_xasprintf("\"statuses\":[{\"id\":\"%s\",\"status\":\"%s\",\"timestamp\":\"%s\"%s}]", wamid, status,
                                  unix_seconds, recipient_member);
    char *s = pwt_meta_webhook(members);
    free(members);
    free(recipient_member);
    return s;
}

static long push_status(const char *wamid, const char *status, const char *unix_seconds, const char *recipient,
                        const char *message_id)
{
    char *payload = status_webhook(wamid, status, unix_seconds, recipient);
    long http = push(payload, strlen(payload), message_id);
    free(payload);
    return http;
}

/* A Meta webhook with one text message from `from` (profile name `name`). */
static char *text_webhook(const char *wamid, const char *from, const char *name, const char *unix_seconds,
                          const char *text)
{
    char *members = pwt_xasprintf("\"contacts\":[{\"profile\":{\"name\":\"%s\"},\"wa_id\":\"%s\"}],"
                                  "\"messages\":[{\"from\":\"%s\",\"id\":\"%s\",\"timestamp\":\"%s\",\"type\":\"text\","
                                  "\"text\":{\"body\":\"%s\"}}]",
                                  name, from, from, wamid, unix_seconds, text);
    char *s = pwt_meta_webhook(members);
    free(members);
    return s;
}

static void assert_no_status_rows(void)
{
    ASSERT_EMPTY("message_logs");
    ASSERT_EMPTY("status_events");
}

static void assert_no_inbound_rows(void)
{
    ASSERT_EMPTY("inbound_messages");
    ASSERT_EMPTY("contacts");
}

static void assert_nothing_stored(void)
{
    assert_no_status_rows();
    assert_no_inbound_rows();
    ASSERT_EMPTY("pubsub_receipts");
    ASSERT_EMPTY("dead_letters");
}

/*
 * One inbound fixture pushed once: the exact inbound row(s), each payload equal to its message object
 * in the fixture, the exact contacts, a stored receipt, and nothing else.
 */
static void check_meta_inbound(const char *fixture, const char *message_id, const char *expected_inbound,
                               const char *expected_contacts, const char *expected_receipt)
{
    char *webhook = pwt_read_fixture(fixture, NULL);
    pwt_assert_status(push(webhook, strlen(webhook), message_id), 204);
    pwt_assert_rows(Q_INBOUND, expected_inbound);
    pwt_assert_rows_p(Q_META_PAYLOAD_MISMATCHES, PARAMS(webhook), "0");
    pwt_assert_rows(Q_CONTACTS, expected_contacts);
    pwt_assert_rows(Q_RECEIPTS, expected_receipt);
    assert_no_status_rows();
    ASSERT_EMPTY("dead_letters");
    free(webhook);
}

/* ---- HTTP surface ----------------------------------------------------------------------------- */

static void healthz_answers_200(void **state)
{
    (void)state;
    pwt_assert_status(pwt_get(&worker, "/healthz", NULL), 200);
}

static void readyz_answers_200_with_database_up(void **state)
{
    (void)state;
    pwt_assert_status(pwt_get(&worker, "/readyz", NULL), 200);
}

static void unknown_path_answers_404_and_stores_nothing(void **state)
{
    (void)state;
    pwt_assert_status(pwt_get(&worker, "/nope", NULL), 404);
    char *body = pwt_wrap_fixture("meta/status_sent.json", "1001", SUB, PUBLISH_TIME);
    pwt_assert_status(pwt_post(&worker, "/nope", body, strlen(body), NULL, NULL), 404);
    free(body);
    assert_nothing_stored();
}

static void other_methods_on_root_answer_405(void **state)
{
    (void)state;
    char *body = pwt_wrap_fixture("meta/status_sent.json", "1001", SUB, PUBLISH_TIME);
    pwt_assert_status(pwt_request(&worker, "PUT", "/", body, strlen(body), NULL, NULL), 405);
    pwt_assert_status(pwt_get(&worker, "/", NULL), 405);
    pwt_assert_status(pwt_request(&worker, "DELETE", "/", NULL, 0, NULL, NULL), 405);
    free(body);
    assert_nothing_stored();
}

/* ---- Meta statuses ---------------------------------------------------------------------------- */

static void status_sent_stores_event_log_and_receipt(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_sent.json", "1101"), 204);
    pwt_assert_rows(Q_EVENTS, W_A "|sent|2024-03-05 20:00:00+00|919876543210|" PNID "|" CONV_SENT "|" PRICING
                                  "|NULL|campaign=spring24|1101");
    pwt_assert_rows(Q_LOGS, W_A "|+919876543210|{\"sent\": \"2024-03-05T20:00:00Z\"}|sent|NULL|2024-03-05 20:00:00+00");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1101", "stored"));
    assert_no_inbound_rows();
    ASSERT_EMPTY("dead_letters");
}

static void status_delivered_alone_implies_sent_at_same_time(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_delivered.json", "1102"), 204);
    pwt_assert_rows(Q_EVENTS,
                    W_A "|delivered|2024-03-05 20:00:05+00|919876543210|" PNID "|" CONV "|" PRICING "|NULL|NULL|1102");
    pwt_assert_rows(Q_LOGS, W_A "|+919876543210|{\"sent\": \"2024-03-05T20:00:05Z\", \"delivered\": "
                                "\"2024-03-05T20:00:05Z\"}|delivered|NULL|2024-03-05 20:00:05+00");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1102", "stored"));
    assert_no_inbound_rows();
    ASSERT_EMPTY("dead_letters");
}

static void status_read_alone_implies_delivered_and_sent_and_records_contact(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_read.json", "1103"), 204);
    pwt_assert_rows(Q_EVENTS, W_A "|read|2024-03-05 20:01:00+00|919876543210|" PNID "|NULL|NULL|NULL|NULL|1103");
    pwt_assert_rows(Q_LOGS, W_A "|+919876543210|{\"read\": \"2024-03-05T20:01:00Z\", \"sent\": \"2024-03-05T20:01:00Z\", "
                                "\"delivered\": \"2024-03-05T20:01:00Z\"}|read|NULL|2024-03-05 20:01:00+00");
    pwt_assert_rows(Q_CONTACTS, NEHA_CONTACT);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1103", "stored"));
    ASSERT_EMPTY("inbound_messages");
    ASSERT_EMPTY("dead_letters");
}

/* Pushes sent/delivered/read (Pub/Sub ids 1101/1102/1103) in the order given by three indexes. */
static void push_status_sequence(const int order[3])
{
    static const char *const fixtures[] = {"meta/status_sent.json", "meta/status_delivered.json",
                                           "meta/status_read.json"};
    static const char *const ids[] = {"1101", "1102", "1103"};
    for (int i = 0; i < 3; i++)
        pwt_assert_status(push_fixture(fixtures[order[i]], ids[order[i]]), 204);
}

static void assert_status_sequence_rows(void)
{
    pwt_assert_rows(Q_LOGS, SEQ_LOG);
    pwt_assert_rows(Q_EVENTS, SEQ_EVENTS);
    pwt_assert_rows(Q_CONTACTS, NEHA_CONTACT);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1101", "stored") "\n" RECEIPT("1102", "stored") "\n" RECEIPT("1103", "stored"));
    ASSERT_EMPTY("inbound_messages");
    ASSERT_EMPTY("dead_letters");
}

static void statuses_sent_delivered_read_in_order_roll_up_to_read(void **state)
{
    (void)state;
    push_status_sequence((const int[]){0, 1, 2});
    assert_status_sequence_rows();
}

static void statuses_in_reverse_order_give_the_same_rows(void **state)
{
    (void)state;
    push_status_sequence((const int[]){2, 1, 0});
    assert_status_sequence_rows();
}

static void statuses_in_every_order_give_the_same_rows(void **state)
{
    (void)state;
    static const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int i = 0; i < 6; i++) {
        pwt_truncate_all();
        push_status_sequence(orders[i]);
        assert_status_sequence_rows();
    }
}

static void read_before_delivered_is_implied_then_lowered_by_real_events(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_read.json", "1201"), 204);
    pwt_assert_rows(Q_LOGS, W_A "|+919876543210|{\"read\": \"2024-03-05T20:01:00Z\", \"sent\": \"2024-03-05T20:01:00Z\", "
                                "\"delivered\": \"2024-03-05T20:01:00Z\"}|read|NULL|2024-03-05 20:01:00+00");
    char *updated_1 = pwt_rows("SELECT updated_at FROM message_logs");

    pwt_assert_status(push_fixture("meta/status_delivered.json", "1202"), 204);
    pwt_assert_rows(Q_LOGS, W_A "|+919876543210|{\"read\": \"2024-03-05T20:01:00Z\", \"sent\": \"2024-03-05T20:00:05Z\", "
                                "\"delivered\": \"2024-03-05T20:00:05Z\"}|read|NULL|2024-03-05 20:00:05+00");
    pwt_assert_rows_p("SELECT updated_at > $1::timestamptz FROM message_logs", PARAMS(updated_1), "t");

    pwt_assert_status(push_fixture("meta/status_sent.json", "1203"), 204);
    pwt_assert_rows(Q_LOGS, W_A "|+919876543210|{\"read\": \"2024-03-05T20:01:00Z\", \"sent\": \"2024-03-05T20:00:00Z\", "
                                "\"delivered\": \"2024-03-05T20:00:05Z\"}|read|NULL|2024-03-05 20:00:00+00");
    pwt_assert_rows(Q_EVENTS, W_A "|delivered|2024-03-05 20:00:05+00|919876543210|" PNID "|" CONV "|" PRICING
                                  "|NULL|NULL|1202\n" W_A "|read|2024-03-05 20:01:00+00|919876543210|" PNID
                                  "|NULL|NULL|NULL|NULL|1201\n" W_A "|sent|2024-03-05 20:00:00+00|919876543210|" PNID
                                  "|" CONV_SENT "|" PRICING "|NULL|campaign=spring24|1203");
    free(updated_1);
}

static void duplicate_status_in_a_new_push_changes_no_row(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_sent.json", "1301"), 204);
    char *logs_before = pwt_rows("SELECT t::text FROM message_logs t");
    char *events_before = pwt_rows("SELECT t::text FROM status_events t");

    pwt_assert_status(push_fixture("meta/status_sent.json", "1302"), 204);
    pwt_assert_rows("SELECT t::text FROM message_logs t", logs_before); /* updated_at included */
    pwt_assert_rows("SELECT t::text FROM status_events t", events_before);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1301", "stored") "\n" RECEIPT("1302", "stored"));
    free(logs_before);
    free(events_before);
}

static void repeated_status_keeps_the_earliest_event(void **state)
{
    (void)state;
    /* sent at 20:00:30 first, then the fixture's sent at 20:00:00, then one at 20:00:45 */
    pwt_assert_status(push_status(W_A, "sent", "1709668830", "919876543210", "1401"), 204);
    pwt_assert_rows(Q_EVENTS, W_A "|sent|2024-03-05 20:00:30+00|919876543210|" PNID "|NULL|NULL|NULL|NULL|1401");
    pwt_assert_status(push_fixture("meta/status_sent.json", "1402"), 204);
    pwt_assert_status(push_status(W_A, "sent", "1709668845", "919876543210", "1403"), 204);
    pwt_assert_rows(Q_EVENTS, W_A "|sent|2024-03-05 20:00:00+00|919876543210|" PNID "|" CONV_SENT "|" PRICING
                                  "|NULL|campaign=spring24|1402");
    pwt_assert_rows(Q_LOGS, W_A "|+919876543210|{\"sent\": \"2024-03-05T20:00:00Z\"}|sent|NULL|2024-03-05 20:00:00+00");
}

static void failed_status_stores_errors_and_last_error(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_failed.json", "1501"), 204);
    pwt_assert_rows(Q_EVENTS,
                    W_FAIL "|failed|2024-03-05 20:05:00+00|919876543211|" PNID "|NULL|NULL|" ERR_131049 "|NULL|1501");
    pwt_assert_rows(Q_LOGS, W_FAIL "|+919876543211|{\"failed\": \"2024-03-05T20:05:00Z\"}|failed|" ERR_131049
                                   "|2024-03-05 20:05:00+00");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1501", "stored"));
    assert_no_inbound_rows();
    ASSERT_EMPTY("dead_letters");
}

static void failed_and_later_delivered_in_either_order_is_delivered_keeping_last_error(void **state)
{
    (void)state;
    static const char expected_log[] =
        W_FAIL "|+919876543211|{\"sent\": \"2024-03-05T20:06:00Z\", \"failed\": \"2024-03-05T20:05:00Z\", \"delivered\": "
               "\"2024-03-05T20:06:00Z\"}|delivered|" ERR_131049 "|2024-03-05 20:05:00+00";
    pwt_assert_status(push_fixture("meta/status_failed.json", "1601"), 204);
    pwt_assert_status(push_status(W_FAIL, "delivered", "1709669160", "919876543211", "1602"), 204);
    pwt_assert_rows(Q_LOGS, expected_log);

    pwt_truncate_all();
    pwt_assert_status(push_status(W_FAIL, "delivered", "1709669160", "919876543211", "1602"), 204);
    pwt_assert_status(push_fixture("meta/status_failed.json", "1601"), 204);
    pwt_assert_rows(Q_LOGS, expected_log);
    pwt_assert_rows(Q_EVENTS, W_FAIL "|delivered|2024-03-05 20:06:00+00|919876543211|" PNID "|NULL|NULL|NULL|NULL|1602\n"
                    W_FAIL "|failed|2024-03-05 20:05:00+00|919876543211|" PNID "|NULL|NULL|" ERR_131049 "|NULL|1601");
}

static void played_status_implies_delivered_and_sent(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_played.json", "1701"), 204);
    pwt_assert_rows(Q_EVENTS, W_VOICE "|played|2024-03-05 20:10:00+00|919876543212|" PNID "|NULL|NULL|NULL|NULL|1701");
    pwt_assert_rows(Q_LOGS, W_VOICE "|+919876543212|{\"sent\": \"2024-03-05T20:10:00Z\", \"played\": "
                                    "\"2024-03-05T20:10:00Z\", \"delivered\": \"2024-03-05T20:10:00Z\"}|played|NULL|"
                                    "2024-03-05 20:10:00+00");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1701", "stored"));
}

static void unknown_status_value_is_kept_as_received(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_deleted.json", "1801"), 204);
    pwt_assert_rows(Q_EVENTS, W_DEL "|deleted|2024-03-05 20:15:00+00|919876543213|" PNID "|NULL|NULL|NULL|NULL|1801");
    pwt_assert_rows(Q_LOGS,
                    W_DEL "|+919876543213|{\"deleted\": \"2024-03-05T20:15:00Z\"}|deleted|NULL|2024-03-05 20:15:00+00");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1801", "stored"));
    ASSERT_EMPTY("dead_letters");
}

/*
 * The merge with a status outside sent/delivered/read/played/failed on an existing row (the
 * general pw_status_merge branch of the statement): keys united, earliest time per key, the
 * current status by rank, or the alphabetically first unusual key; a repeat changes nothing.
 */
static void unusual_status_merges_with_an_existing_row(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_deleted.json", "1811"), 204);          /* deleted 20:15:00 */
    pwt_assert_status(push_status(W_DEL, "warning", "1709669760", "919876543213", "1812"), 204); /* 20:16:00 */
    pwt_assert_rows(Q_LOGS, W_DEL "|+919876543213|{\"deleted\": \"2024-03-05T20:15:00Z\", \"warning\": "
                            "\"2024-03-05T20:16:00Z\"}|deleted|NULL|2024-03-05 20:15:00+00");
    /* An earlier "warning" replaces the later one; "sent" (earlier still) outranks both. */
    pwt_assert_status(push_status(W_DEL, "warning", "1709669640", "919876543213", "1813"), 204); /* 20:14:00 */
    pwt_assert_status(push_status(W_DEL, "sent", "1709669580", "919876543213", "1814"), 204);    /* 20:13:00 */
    pwt_assert_rows(Q_LOGS, W_DEL "|+919876543213|{\"sent\": \"2024-03-05T20:13:00Z\", \"deleted\": "
                            "\"2024-03-05T20:15:00Z\", \"warning\": \"2024-03-05T20:14:00Z\"}|sent|NULL|"
                            "2024-03-05 20:13:00+00");
    /* A later "deleted" in a new push: nothing to change, not even updated_at. */
    char *before = pwt_rows("SELECT t::text FROM message_logs t");
    pwt_assert_status(push_status(W_DEL, "deleted", "1709669900", "919876543213", "1815"), 204);
    pwt_assert_rows("SELECT t::text FROM message_logs t", before);
    free(before);
    ASSERT_EMPTY("dead_letters");
}

static void several_statuses_in_one_body_are_all_stored(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/statuses_batch.json", "1901"), 204);
    pwt_assert_rows(Q_EVENTS, W_B1 "|delivered|2024-03-05 21:00:03+00|919876543214|" PNID "|NULL|NULL|NULL|NULL|1901\n"
                    W_B1 "|sent|2024-03-05 21:00:00+00|919876543214|" PNID "|NULL|" PRICING "|NULL|NULL|1901\n"
                    W_B2 "|sent|2024-03-05 21:00:01+00|919876543215|" PNID "|NULL|NULL|NULL|NULL|1901");
    pwt_assert_rows(Q_LOGS, W_B1 "|+919876543214|{\"sent\": \"2024-03-05T21:00:00Z\", \"delivered\": "
                                 "\"2024-03-05T21:00:03Z\"}|delivered|NULL|2024-03-05 21:00:00+00\n"
                    W_B2 "|+919876543215|{\"sent\": \"2024-03-05T21:00:01Z\"}|sent|NULL|2024-03-05 21:00:01+00");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1901", "stored"));
    assert_no_inbound_rows();
    ASSERT_EMPTY("dead_letters");
}

static void numeric_timestamp_and_plus_recipient_are_accepted(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_numeric_timestamp.json", "2001"), 204);
    pwt_assert_rows(Q_EVENTS, W_NUM "|delivered|2024-03-05 21:05:00+00|+919876543216|" PNID "|NULL|NULL|NULL|NULL|2001");
    pwt_assert_rows(Q_LOGS, W_NUM "|+919876543216|{\"sent\": \"2024-03-05T21:05:00Z\", \"delivered\": "
                                  "\"2024-03-05T21:05:00Z\"}|delivered|NULL|2024-03-05 21:05:00+00");
}

static void to_phone_is_plus_and_digits_and_set_once(void **state)
{
    (void)state;
    /* no recipient: NULL; then a spaced recipient: '+' + digits; then another: unchanged */
    pwt_assert_status(push_status(W_SYN, "sent", "1709679600", NULL, "2101"), 204);
    pwt_assert_rows("SELECT to_phone FROM message_logs", "NULL");
    pwt_assert_status(push_status(W_SYN, "delivered", "1709679605", "+91 98765-43230", "2102"), 204);
    pwt_assert_rows("SELECT to_phone FROM message_logs", "+919876543230");
    pwt_assert_status(push_status(W_SYN, "read", "1709679610", "919876543231", "2103"), 204);
    pwt_assert_rows(Q_LOGS, W_SYN "|+919876543230|{\"read\": \"2024-03-05T23:00:10Z\", \"sent\": \"2024-03-05T23:00:00Z\", "
                                  "\"delivered\": \"2024-03-05T23:00:05Z\"}|read|NULL|2024-03-05 23:00:00+00");
    pwt_assert_rows(Q_EVENTS,
                    W_SYN "|delivered|2024-03-05 23:00:05+00|+91 98765-43230|" PNID "|NULL|NULL|NULL|NULL|2102\n"
                    W_SYN "|read|2024-03-05 23:00:10+00|919876543231|" PNID "|NULL|NULL|NULL|NULL|2103\n"
                    W_SYN "|sent|2024-03-05 23:00:00+00|NULL|" PNID "|NULL|NULL|NULL|NULL|2101");
}

static void one_malformed_status_is_dead_lettered_and_the_others_stored(void **state)
{
    (void)state;
    char *body = pwt_wrap_fixture("meta/statuses_one_bad_timestamp.json", "2201", SUB, PUBLISH_TIME);
    pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), NULL, NULL), 204);
    pwt_assert_rows(Q_EVENTS, W_BAD1 "|sent|2024-03-05 21:10:00+00|919876543218|" PNID "|NULL|NULL|NULL|NULL|2201\n"
                    W_BAD3 "|delivered|2024-03-05 21:10:05+00|919876543219|" PNID "|NULL|NULL|NULL|NULL|2201");
    pwt_assert_rows(Q_LOGS, W_BAD1 "|+919876543218|{\"sent\": \"2024-03-05T21:10:00Z\"}|sent|NULL|2024-03-05 21:10:00+00\n"
                    W_BAD3 "|+919876543219|{\"sent\": \"2024-03-05T21:10:05Z\", \"delivered\": "
                           "\"2024-03-05T21:10:05Z\"}|delivered|NULL|2024-03-05 21:10:05+00");
    pwt_assert_rows_p(Q_DEAD, PARAMS(body), SUB "|2201|rejected 1 item(s)|t");
    pwt_assert_rows("SELECT position('statuses[1]' in reason) > 0 FROM dead_letters", "t");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("2201", "stored"));
    assert_no_inbound_rows();
    free(body);
}

static void value_with_only_errors_is_ignored(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/value_errors_only.json", "2301"), 204);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("2301", "ignored"));
    assert_no_status_rows();
    assert_no_inbound_rows();
    ASSERT_EMPTY("dead_letters");
}

static void template_status_update_is_ignored(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/template_status_update.json", "2302"), 204);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("2302", "ignored"));
    assert_no_status_rows();
    assert_no_inbound_rows();
    ASSERT_EMPTY("dead_letters");
}

static void every_entry_and_change_is_read(void **state)
{
    (void)state;
    char *webhook = pwt_read_fixture("meta/multi_entry_changes.json", NULL);
    pwt_assert_status(push(webhook, strlen(webhook), "2401"), 204);
    pwt_assert_rows(Q_EVENTS, W_MIX "|sent|2024-03-05 22:00:00+00|919876543217|" PNID "|NULL|NULL|NULL|NULL|2401");
    pwt_assert_rows(Q_LOGS, W_MIX "|+919876543217|{\"sent\": \"2024-03-05T22:00:00Z\"}|sent|NULL|2024-03-05 22:00:00+00");
    pwt_assert_rows(Q_INBOUND, WI("bXVsdGlfZW50cnkAA==") "|106540352299999|+919812340021|NULL|Farah Khan|text|Second "
                               "number, same webhook|NULL|2024-03-05 22:00:30+00|2401");
    pwt_assert_rows_p(Q_META_PAYLOAD_MISMATCHES, PARAMS(webhook), "0");
    pwt_assert_rows(Q_CONTACTS, "919812340021|Farah Khan|2024-03-05 22:00:30+00|2024-03-05 22:00:30+00");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("2401", "stored"));
    ASSERT_EMPTY("dead_letters");
    free(webhook);
}

/* ---- Meta inbound messages -------------------------------------------------------------------- */

#define CONTACT(wa_id, name, t) wa_id "|" name "|" t "|" t

static void inbound_text_has_body_and_contact_name(void **state)
{
    (void)state;
    check_meta_inbound("meta/text_with_contact.json", "3001",
                       WI("dGV4dF93aXRoX2NvbnRhY3QAA==") "|" PNID "|+919812340001|NULL|Priya Sharma|text|Hi! Is my order "
                       "#4521 shipped? 🙏|NULL|2024-03-06 00:00:00+00|3001",
                       CONTACT("919812340001", "Priya Sharma", "2024-03-06 00:00:00+00"), RECEIPT("3001", "stored"));
}

static void inbound_image_body_is_caption(void **state)
{
    (void)state;
    check_meta_inbound("meta/image_caption.json", "3002",
                       WI("aW1hZ2VfY2FwdGlvbgAA==") "|" PNID "|+919812340002|NULL|Rahul Mehta|image|Damaged box on "
                       "arrival|NULL|2024-03-06 00:01:00+00|3002",
                       CONTACT("919812340002", "Rahul Mehta", "2024-03-06 00:01:00+00"), RECEIPT("3002", "stored"));
}

static void inbound_video_body_is_caption(void **state)
{
    (void)state;
    check_meta_inbound("meta/video.json", "3003",
                       WI("dmlkZW8AA==") "|" PNID "|+919812340003|NULL|Anita Desai|video|Unboxing the "
                       "mixer|NULL|2024-03-06 00:02:00+00|3003",
                       CONTACT("919812340003", "Anita Desai", "2024-03-06 00:02:00+00"), RECEIPT("3003", "stored"));
}

static void inbound_voice_audio_has_no_body(void **state)
{
    (void)state;
    check_meta_inbound("meta/audio_voice.json", "3004",
                       WI("YXVkaW9fdm9pY2UAA==") "|" PNID "|+919812340004|NULL|Vikram Rao|audio|NULL|NULL|"
                       "2024-03-06 00:03:00+00|3004",
                       CONTACT("919812340004", "Vikram Rao", "2024-03-06 00:03:00+00"), RECEIPT("3004", "stored"));
}

static void inbound_document_body_is_caption_not_filename(void **state)
{
    (void)state;
    check_meta_inbound("meta/document_filename.json", "3005",
                       WI("ZG9jdW1lbnRfZmlsZW5hbWUAA==") "|" PNID "|+919812340005|NULL|Meera Iyer|document|March "
                       "invoice|NULL|2024-03-06 00:04:00+00|3005",
                       CONTACT("919812340005", "Meera Iyer", "2024-03-06 00:04:00+00"), RECEIPT("3005", "stored"));
}

static void inbound_sticker_has_no_body(void **state)
{
    (void)state;
    check_meta_inbound("meta/sticker.json", "3006",
                       WI("c3RpY2tlcgAA==") "|" PNID "|+919812340006|NULL|Arjun Nair|sticker|NULL|NULL|"
                       "2024-03-06 00:05:00+00|3006",
                       CONTACT("919812340006", "Arjun Nair", "2024-03-06 00:05:00+00"), RECEIPT("3006", "stored"));
}

static void inbound_location_body_is_its_name(void **state)
{
    (void)state;
    check_meta_inbound("meta/location.json", "3007",
                       WI("bG9jYXRpb24AA==") "|" PNID "|+919812340007|NULL|Kavya Reddy|location|Cubbon Park|NULL|"
                       "2024-03-06 00:06:00+00|3007",
                       CONTACT("919812340007", "Kavya Reddy", "2024-03-06 00:06:00+00"), RECEIPT("3007", "stored"));
}

static void inbound_contacts_card_has_no_body_and_adds_only_the_sender(void **state)
{
    (void)state;
    check_meta_inbound("meta/contacts_card.json", "3008",
                       WI("Y29udGFjdHNfY2FyZAAA==") "|" PNID "|+919812340008|NULL|Rohan Gupta|contacts|NULL|NULL|"
                       "2024-03-06 00:07:00+00|3008",
                       CONTACT("919812340008", "Rohan Gupta", "2024-03-06 00:07:00+00"), RECEIPT("3008", "stored"));
}

static void inbound_button_reply_body_is_title_with_context(void **state)
{
    (void)state;
    check_meta_inbound("meta/interactive_button_reply.json", "3009",
                       WI("aW50ZXJhY3RpdmVfYnV0dG9uX3JlcGx5AA==") "|" PNID "|+919812340009|NULL|Sneha Pillai|"
                       "interactive|Yes, confirm|wamid.HBgMOTE5ODEyMzQwMDA5FQIAERgSQVNLQ09ORklSTTAwMDAwMDAxAA==|"
                       "2024-03-06 00:08:00+00|3009",
                       CONTACT("919812340009", "Sneha Pillai", "2024-03-06 00:08:00+00"), RECEIPT("3009", "stored"));
}

static void inbound_list_reply_body_is_title(void **state)
{
    (void)state;
    check_meta_inbound("meta/interactive_list_reply.json", "3010",
                       WI("aW50ZXJhY3RpdmVfbGlzdF9yZXBseQAA==") "|" PNID "|+919812340010|NULL|Karan Malhotra|"
                       "interactive|Tomorrow 10-11 AM|NULL|2024-03-06 00:09:00+00|3010",
                       CONTACT("919812340010", "Karan Malhotra", "2024-03-06 00:09:00+00"), RECEIPT("3010", "stored"));
}

static void inbound_flow_nfm_reply_body_is_its_body(void **state)
{
    (void)state;
    check_meta_inbound("meta/interactive_nfm_reply.json", "3011",
                       WI("aW50ZXJhY3RpdmVfbmZtX3JlcGx5AA==") "|" PNID "|+919812340011|NULL|Divya Menon|interactive|"
                       "Sent|NULL|2024-03-06 00:10:00+00|3011",
                       CONTACT("919812340011", "Divya Menon", "2024-03-06 00:10:00+00"), RECEIPT("3011", "stored"));
}

static void inbound_template_button_body_is_text_with_context(void **state)
{
    (void)state;
    check_meta_inbound("meta/button_template_reply.json", "3012",
                       WI("YnV0dG9uX3RlbXBsYXRlX3JlcGx5AA==") "|" PNID "|+919812340012|NULL|Aditya Joshi|button|Stop "
                       "promotions|wamid.HBgMOTE5ODEyMzQwMDEyFQIAERgSVEVNUExBVEUwMDAwMDAwMDAxAA==|"
                       "2024-03-06 00:11:00+00|3012",
                       CONTACT("919812340012", "Aditya Joshi", "2024-03-06 00:11:00+00"), RECEIPT("3012", "stored"));
}

static void inbound_reaction_body_is_emoji(void **state)
{
    (void)state;
    check_meta_inbound("meta/reaction.json", "3013",
                       WI("cmVhY3Rpb24AA==") "|" PNID "|+919812340013|NULL|Pooja Bansal|reaction|👍|NULL|"
                       "2024-03-06 00:12:00+00|3013",
                       CONTACT("919812340013", "Pooja Bansal", "2024-03-06 00:12:00+00"), RECEIPT("3013", "stored"));
}

static void inbound_removed_reaction_has_no_body(void **state)
{
    (void)state;
    check_meta_inbound("meta/reaction_removed.json", "3014",
                       WI("cmVhY3Rpb25fcmVtb3ZlZAAA==") "|" PNID "|+919812340013|NULL|Pooja Bansal|reaction|NULL|NULL|"
                       "2024-03-06 00:13:00+00|3014",
                       CONTACT("919812340013", "Pooja Bansal", "2024-03-06 00:13:00+00"), RECEIPT("3014", "stored"));
}

static void inbound_order_body_is_order_text(void **state)
{
    (void)state;
    check_meta_inbound("meta/order.json", "3015",
                       WI("b3JkZXIAA==") "|" PNID "|+919812340014|NULL|Nikhil Saxena|order|Please deliver after 6 pm|"
                       "NULL|2024-03-06 00:14:00+00|3015",
                       CONTACT("919812340014", "Nikhil Saxena", "2024-03-06 00:14:00+00"), RECEIPT("3015", "stored"));
}

static void inbound_system_changed_number_body_is_system_body(void **state)
{
    (void)state;
    check_meta_inbound("meta/system_user_changed_number.json", "3016",
                       WI("c3lzdGVtX3VzZXJfY2hhbmdlZF9udW1iZXIAA==") "|" PNID "|+919812340015|NULL|NULL|system|User A "
                       "changed from 919812340015 to 919812349999|NULL|2024-03-06 00:15:00+00|3016",
                       "", RECEIPT("3016", "stored"));
}

static void inbound_unsupported_is_stored_without_body(void **state)
{
    (void)state;
    check_meta_inbound("meta/unsupported.json", "3017",
                       WI("dW5zdXBwb3J0ZWQAA==") "|" PNID "|+919812340016|NULL|Ishaan Kumar|unsupported|NULL|NULL|"
                       "2024-03-06 00:16:00+00|3017",
                       CONTACT("919812340016", "Ishaan Kumar", "2024-03-06 00:16:00+00"), RECEIPT("3017", "stored"));
}

static void inbound_ad_referral_text_is_stored_with_referral_in_payload(void **state)
{
    (void)state;
    check_meta_inbound("meta/referral_ctwa.json", "3018",
                       WI("cmVmZXJyYWxfY3R3YQAA==") "|" PNID "|+919812340017|NULL|Tanvi Shah|text|Hi, I saw your ad "
                       "for the monsoon sale|NULL|2024-03-06 00:17:00+00|3018",
                       CONTACT("919812340017", "Tanvi Shah", "2024-03-06 00:17:00+00"), RECEIPT("3018", "stored"));
    pwt_assert_rows("SELECT payload->'referral'->>'ctwa_clid' IS NOT NULL FROM inbound_messages", "t");
}

static void inbound_username_only_user_has_user_id_and_a_contact_without_phone(void **state)
{
    (void)state;
    check_meta_inbound("meta/username_only.json", "3019",
                       WI("dXNlcm5hbWVfb25seQAA==") "|" PNID "|NULL|US.13491208655302741918|chai_lover|text|Hello "
                       "from a username|NULL|2024-03-06 00:18:00+00|3019",
                       CONTACT("NULL", "chai_lover", "2024-03-06 00:18:00+00"), RECEIPT("3019", "stored"));
    pwt_assert_rows("SELECT wa_id, user_id FROM contacts", "NULL|US.13491208655302741918");
}

static void inbound_forwarded_has_no_context_message_id(void **state)
{
    (void)state;
    check_meta_inbound("meta/forwarded.json", "3020",
                       WI("Zm9yd2FyZGVkAA==") "|" PNID "|+919812340019|NULL|Gaurav Sethi|text|Look at this offer|NULL|"
                       "2024-03-06 00:19:00+00|3020",
                       CONTACT("919812340019", "Gaurav Sethi", "2024-03-06 00:19:00+00"), RECEIPT("3020", "stored"));
}

static void inbound_two_messages_of_one_contact_set_first_and_last_seen(void **state)
{
    (void)state;
    check_meta_inbound("meta/messages_same_contact.json", "3021",
                       WI("c2FtZV9jb250YWN0XzEAA==") "|" PNID "|+919812340020|NULL|Lakshmi Narayan|text|Good morning|"
                       "NULL|2024-03-06 00:20:00+00|3021\n"
                       WI("c2FtZV9jb250YWN0XzIAA==") "|" PNID "|+919812340020|NULL|Lakshmi Narayan|text|Can I change "
                       "my delivery address?|NULL|2024-03-06 00:20:45+00|3021",
                       "919812340020|Lakshmi Narayan|2024-03-06 00:20:00+00|2024-03-06 00:20:45+00",
                       RECEIPT("3021", "stored"));
}

static void inbound_first_write_wins_on_redelivery_in_a_new_push(void **state)
{
    (void)state;
    char *webhook = pwt_read_fixture("meta/text_with_contact.json", NULL);
    pwt_assert_status(push(webhook, strlen(webhook), "3101"), 204);
    char *inbound_before = pwt_rows("SELECT t::text FROM inbound_messages t");
    pwt_assert_status(push(webhook, strlen(webhook), "3102"), 204);
    pwt_assert_rows("SELECT t::text FROM inbound_messages t", inbound_before);
    pwt_assert_rows("SELECT pubsub_message_id FROM inbound_messages", "3101");
    pwt_assert_rows(Q_CONTACTS, CONTACT("919812340001", "Priya Sharma", "2024-03-06 00:00:00+00"));
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("3101", "stored") "\n" RECEIPT("3102", "stored"));
    free(inbound_before);
    free(webhook);
}

static void contact_tracks_first_and_latest_sighting_and_latest_name(void **state)
{
    (void)state;
    char *first = text_webhook(WI("c2lnaHRpbmdfMQAA=="), "919812340030", "Ravi", "1709690400", "hello");
    char *later = text_webhook(WI("c2lnaHRpbmdfMgAA=="), "919812340030", "Ravi Kumar", "1709694000", "again");
    char *earlier = text_webhook(WI("c2lnaHRpbmdfMAAA=="), "919812340030", "R.", "1709686800", "oldest");
    pwt_assert_status(push(first, strlen(first), "3201"), 204);
    pwt_assert_rows(Q_CONTACTS, CONTACT("919812340030", "Ravi", "2024-03-06 02:00:00+00"));
    pwt_assert_status(push(later, strlen(later), "3202"), 204);
    pwt_assert_rows(Q_CONTACTS, "919812340030|Ravi Kumar|2024-03-06 02:00:00+00|2024-03-06 03:00:00+00");
    /* an older sighting arriving last lowers first_seen_at but does not rename the contact */
    pwt_assert_status(push(earlier, strlen(earlier), "3203"), 204);
    pwt_assert_rows(Q_CONTACTS, "919812340030|Ravi Kumar|2024-03-06 01:00:00+00|2024-03-06 03:00:00+00");
    pwt_assert_rows("SELECT count(*) FROM inbound_messages", "3");
    free(first);
    free(later);
    free(earlier);
}

/* ---- AiSensy ---------------------------------------------------------------------------------- */

#define Q_AISENSY_PAYLOAD_MISMATCHES                                                                                   \
    "SELECT count(*) FROM inbound_messages WHERE payload IS DISTINCT FROM ($1::jsonb) #> '{data,message}'"

static void aisensy_user_text_becomes_inbound_with_country_code(void **state)
{
    (void)state;
    char *webhook = pwt_read_fixture("aisensy/sender_user_text.json", NULL);
    pwt_assert_status(push(webhook, strlen(webhook), "4001"), 204);
    pwt_assert_rows(Q_INBOUND, WA_AIS_IN1 "|NULL|+919876500001|NULL|Asha Verma|text|Do you deliver to Pune?|NULL|"
                               "2024-03-06 00:59:55+00|4001");
    pwt_assert_rows_p(Q_AISENSY_PAYLOAD_MISMATCHES, PARAMS(webhook), "0");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("4001", "stored"));
    /* docs/rows.md: the AiSensy sender is also a contact. */
    pwt_assert_rows("SELECT wa_id, user_id, profile_name, username, country_code, first_seen_at, last_seen_at FROM contacts",
                    "919876500001|NULL|Asha Verma|NULL|NULL|2024-03-06 00:59:55+00|2024-03-06 00:59:55+00");
    assert_no_status_rows();
    ASSERT_EMPTY("dead_letters");
    free(webhook);
}

static void aisensy_user_image_uses_caption_and_iso_created_at(void **state)
{
    (void)state;
    char *webhook = pwt_read_fixture("aisensy/sender_user_image.json", NULL);
    pwt_assert_status(push(webhook, strlen(webhook), "4002"), 204);
    pwt_assert_rows(Q_INBOUND, WA_AIS_IN2 "|NULL|+919876500002|NULL|NULL|image|Is this the right size?|NULL|"
                               "2024-03-06 01:05:00+00|4002");
    pwt_assert_rows_p(Q_AISENSY_PAYLOAD_MISMATCHES, PARAMS(webhook), "0");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("4002", "stored"));
    assert_no_status_rows();
    ASSERT_EMPTY("dead_letters");
    free(webhook);
}

static void aisensy_sent_with_zero_time_uses_envelope_created_at(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("aisensy/status_sent.json", "4101"), 204);
    pwt_assert_rows(Q_EVENTS, WA_AIS_OUT "|sent|2024-03-06 02:00:00+00|919812345678|NULL|NULL|NULL|NULL|NULL|4101");
    pwt_assert_rows(Q_LOGS, WA_AIS_OUT "|+919812345678|{\"sent\": \"2024-03-06T02:00:00Z\"}|sent|NULL|"
                                       "2024-03-06 02:00:00+00");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("4101", "stored"));
    assert_no_inbound_rows();
    ASSERT_EMPTY("dead_letters");
}

static void aisensy_delivered_uses_delivered_at_ms_and_adds_country_code(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("aisensy/status_delivered.json", "4102"), 204);
    pwt_assert_rows(Q_EVENTS,
                    WA_AIS_OUT "|delivered|2024-03-06 02:00:10+00|919812345678|NULL|NULL|NULL|NULL|NULL|4102");
    pwt_assert_rows(Q_LOGS, WA_AIS_OUT "|+919812345678|{\"sent\": \"2024-03-06T02:00:10Z\", \"delivered\": "
                                       "\"2024-03-06T02:00:10Z\"}|delivered|NULL|2024-03-06 02:00:10+00");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("4102", "stored"));
}

static void aisensy_read_with_string_ms_and_empty_failure_has_no_errors(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("aisensy/status_read.json", "4103"), 204);
    pwt_assert_rows(Q_EVENTS, WA_AIS_OUT "|read|2024-03-06 02:01:10+00|919812345678|NULL|NULL|NULL|NULL|NULL|4103");
    pwt_assert_rows(Q_LOGS, WA_AIS_OUT "|+919812345678|{\"read\": \"2024-03-06T02:01:10Z\", \"sent\": "
                                       "\"2024-03-06T02:01:10Z\", \"delivered\": \"2024-03-06T02:01:10Z\"}|read|NULL|"
                                       "2024-03-06 02:01:10+00");
}

static void aisensy_status_sequence_rolls_up_like_meta(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("aisensy/status_read.json", "4103"), 204);
    pwt_assert_status(push_fixture("aisensy/status_sent.json", "4101"), 204);
    pwt_assert_status(push_fixture("aisensy/status_delivered.json", "4102"), 204);
    pwt_assert_rows(Q_LOGS, WA_AIS_OUT "|+919812345678|{\"read\": \"2024-03-06T02:01:10Z\", \"sent\": "
                                       "\"2024-03-06T02:00:00Z\", \"delivered\": \"2024-03-06T02:00:10Z\"}|read|NULL|"
                                       "2024-03-06 02:00:00+00");
    pwt_assert_rows("SELECT count(*) FROM status_events", "3");
}

static void aisensy_failed_stores_failure_response_as_errors(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("aisensy/status_failed.json", "4201"), 204);
    pwt_assert_rows(Q_EVENTS, WA_AIS_FAIL "|failed|2024-03-06 03:00:00+00|919812345679|NULL|NULL|NULL|" ERR_AIS_131047
                                          "|NULL|4201");
    pwt_assert_rows(Q_LOGS, WA_AIS_FAIL "|+919812345679|{\"failed\": \"2024-03-06T03:00:00Z\"}|failed|" ERR_AIS_131047
                                        "|2024-03-06 03:00:00+00");
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("4201", "stored"));
}

static void aisensy_other_topics_are_ignored(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("aisensy/contact_created.json", "4301"), 204);
    pwt_assert_status(push_fixture("aisensy/message_created.json", "4302"), 204);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("4301", "ignored") "\n" RECEIPT("4302", "ignored"));
    assert_no_status_rows();
    assert_no_inbound_rows();
    ASSERT_EMPTY("dead_letters");
}

/* ---- envelopes -------------------------------------------------------------------------------- */

static void envelope_with_both_id_spellings_is_stored(void **state)
{
    (void)state;
    pwt_assert_status(post_fixture("envelopes/minimal_both_spellings.json", NULL), 204);
    pwt_assert_rows(Q_RECEIPTS, SUB_DOCS "|2070443601311540|2021-02-26 19:13:55.749+00|stored");
    pwt_assert_rows(Q_EVENTS,
                    W_ENV "|sent|2024-03-06 05:00:00+00|919876543220|" PNID "|NULL|NULL|NULL|NULL|2070443601311540");
    pwt_assert_rows(Q_LOGS, W_ENV "|+919876543220|{\"sent\": \"2024-03-06T05:00:00Z\"}|sent|NULL|2024-03-06 05:00:00+00");
    assert_no_inbound_rows();
    ASSERT_EMPTY("dead_letters");
}

static void envelope_with_camel_case_only_is_stored(void **state)
{
    (void)state;
    pwt_assert_status(post_fixture("envelopes/camel_case_only.json", NULL), 204);
    pwt_assert_rows(Q_RECEIPTS, SUB_DOCS "|2070443601311541|2024-03-06 05:00:04.123456+00|stored");
    pwt_assert_rows(Q_EVENTS,
                    W_ENV "|delivered|2024-03-06 05:00:04+00|919876543220|" PNID "|NULL|NULL|NULL|NULL|2070443601311541");
    ASSERT_EMPTY("dead_letters");
}

static void envelope_with_snake_case_only_is_stored(void **state)
{
    (void)state;
    pwt_assert_status(post_fixture("envelopes/snake_case_only.json", NULL), 204);
    pwt_assert_rows(Q_RECEIPTS, SUB_DOCS "|2070443601311542|2024-03-06 05:00:09+00|stored");
    pwt_assert_rows(Q_EVENTS,
                    W_ENV "|read|2024-03-06 05:00:09+00|919876543220|" PNID "|NULL|NULL|NULL|NULL|2070443601311542");
    ASSERT_EMPTY("dead_letters");
}

static void envelope_with_attributes_ordering_key_and_delivery_attempt_is_stored(void **state)
{
    (void)state;
    pwt_assert_status(post_fixture("envelopes/attributes_ordering_key.json", NULL), 204);
    pwt_assert_rows(Q_RECEIPTS, SUB_DOCS "|2070443601311543|2024-03-06 05:10:00.123456+00|stored");
    pwt_assert_rows(Q_INBOUND, WA_AIS_IN1 "|NULL|+919876500001|NULL|Asha Verma|text|Do you deliver to Pune?|NULL|"
                               "2024-03-06 00:59:55+00|2070443601311543");
    assert_no_status_rows();
    ASSERT_EMPTY("dead_letters");
}

static void wrapped_push_without_subscription_has_empty_subscription(void **state)
{
    (void)state;
    char *body = pwt_wrap_fixture("meta/status_sent.json", "5001", NULL, PUBLISH_TIME);
    pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), NULL, NULL), 204);
    pwt_assert_rows(Q_RECEIPTS, "|5001|" PUBLISH_TIME_PG "|stored");
    pwt_assert_rows("SELECT subscription = '' FROM pubsub_receipts", "t");
    pwt_assert_rows("SELECT pubsub_message_id FROM status_events", "5001");
    free(body);
}

static void wrapped_push_without_message_id_is_stored_without_receipt(void **state)
{
    (void)state;
    char *body = pwt_wrap_fixture("meta/status_sent.json", NULL, SUB, PUBLISH_TIME);
    pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), NULL, NULL), 204);
    pwt_assert_rows(Q_EVENTS, W_A "|sent|2024-03-05 20:00:00+00|919876543210|" PNID "|" CONV_SENT "|" PRICING
                                  "|NULL|campaign=spring24|NULL");
    pwt_assert_rows("SELECT count(*) FROM message_logs", "1");
    ASSERT_EMPTY("pubsub_receipts");
    ASSERT_EMPTY("dead_letters");
    free(body);
}

static void unwrapped_push_takes_metadata_from_headers(void **state)
{
    (void)state;
    pwt_assert_status(post_fixture("meta/status_sent.json",
                                   PARAMS("x-goog-pubsub-message-id: 5101",
                                          "x-goog-pubsub-publish-time: 2024-03-06T07:00:00.5Z",
                                          "x-goog-pubsub-subscription-name: projects/acme-prod/subscriptions/wa-nowrap")),
                      204);
    pwt_assert_rows(Q_RECEIPTS, "projects/acme-prod/subscriptions/wa-nowrap|5101|2024-03-06 07:00:00.5+00|stored");
    pwt_assert_rows(Q_EVENTS, W_A "|sent|2024-03-05 20:00:00+00|919876543210|" PNID "|" CONV_SENT "|" PRICING
                                  "|NULL|campaign=spring24|5101");
    pwt_assert_rows(Q_LOGS, W_A "|+919876543210|{\"sent\": \"2024-03-05T20:00:00Z\"}|sent|NULL|2024-03-05 20:00:00+00");
    ASSERT_EMPTY("dead_letters");
}

static void unwrapped_push_without_metadata_is_stored_without_receipt(void **state)
{
    (void)state;
    pwt_assert_status(post_fixture("meta/text_with_contact.json", NULL), 204);
    pwt_assert_rows(Q_INBOUND, WI("dGV4dF93aXRoX2NvbnRhY3QAA==") "|" PNID "|+919812340001|NULL|Priya Sharma|text|Hi! Is "
                               "my order #4521 shipped? 🙏|NULL|2024-03-06 00:00:00+00|NULL");
    pwt_assert_rows(Q_CONTACTS, CONTACT("919812340001", "Priya Sharma", "2024-03-06 00:00:00+00"));
    ASSERT_EMPTY("pubsub_receipts");
    ASSERT_EMPTY("dead_letters");
}

static void pull_output_replayed_as_pushes_is_stored(void **state)
{
    (void)state;
    char *text = pwt_read_fixture("pull/two_messages.json", NULL);
    json_object *pulled = json_tokener_parse(text);
    assert_non_null(pulled);
    assert_int_equal(json_object_array_length(pulled), 2);
    for (size_t i = 0; i < json_object_array_length(pulled); i++) {
        json_object *message = NULL;
        assert_true(json_object_object_get_ex(json_object_array_get_idx(pulled, i), "message", &message));
        json_object *push_body = json_object_new_object();
        json_object_object_add(push_body, "message", json_object_get(message));
        json_object_object_add(push_body, "subscription", json_object_new_string(SUB));
        const char *body = json_object_to_json_string_ext(push_body, JSON_C_TO_STRING_PLAIN);
        pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), NULL, NULL), 204);
        json_object_put(push_body);
    }
    json_object_put(pulled);
    pwt_assert_rows(Q_RECEIPTS, SUB "|10923840012345671|2024-03-06 06:01:00.5+00|stored\n" SUB
                                    "|10923840012345672|2024-03-06 06:01:00.75+00|stored");
    pwt_assert_rows(Q_LOGS, W_PULL "|+919876543221|{\"read\": \"2024-03-06T06:01:00Z\", \"sent\": "
                                   "\"2024-03-06T06:00:00Z\", \"delivered\": \"2024-03-06T06:01:00Z\"}|read|NULL|"
                                   "2024-03-06 06:00:00+00");
    pwt_assert_rows(Q_EVENTS,
                    W_PULL "|read|2024-03-06 06:01:00+00|919876543221|" PNID "|NULL|NULL|NULL|NULL|10923840012345671\n"
                    W_PULL "|sent|2024-03-06 06:00:00+00|919876543221|" PNID "|NULL|NULL|NULL|NULL|10923840012345672");
    free(text);
}

/* ---- dead letters ----------------------------------------------------------------------------- */

/* Posts an envelope fixture (twice: a redelivery) and checks the one dead letter and its receipt. */
static void check_dead_lettered_envelope(const char *fixture, const char *expected_dead, const char *expected_receipt)
{
    char *body = pwt_read_fixture(fixture, NULL);
    pwt_assert_status(post_fixture(fixture, NULL), 204);
    pwt_assert_status(post_fixture(fixture, NULL), 204);
    pwt_assert_rows_p(Q_DEAD, PARAMS(body), expected_dead);
    pwt_assert_rows(Q_RECEIPTS, expected_receipt);
    assert_no_status_rows();
    assert_no_inbound_rows();
    free(body);
}

static void invalid_base64_is_dead_lettered_once_with_raw_body(void **state)
{
    (void)state;
    check_dead_lettered_envelope("envelopes/invalid_base64.json", SUB_DOCS "|2070443601311544|envelope|t",
                                 SUB_DOCS "|2070443601311544|2024-03-06 05:20:00+00|dead_letter");
}

static void envelope_data_of_wrong_type_is_dead_lettered(void **state)
{
    (void)state;
    check_dead_lettered_envelope("bad/envelope_data_not_string.json", SUB_DOCS "|2070443601311546|envelope|t",
                                 SUB_DOCS "|2070443601311546|2024-03-06 05:22:00+00|dead_letter");
}

static void payload_not_json_is_dead_lettered(void **state)
{
    (void)state;
    check_dead_lettered_envelope("envelopes/data_not_json.json", SUB_DOCS "|2070443601311545|payload|t",
                                 SUB_DOCS "|2070443601311545|2024-03-06 05:21:00+00|dead_letter");
}

static void payload_in_neither_format_is_dead_lettered(void **state)
{
    (void)state;
    check_dead_lettered_envelope("bad/payload_neither_format.json", SUB_DOCS "|2070443601311547|payload|t",
                                 SUB_DOCS "|2070443601311547|2024-03-06 05:23:00+00|dead_letter");
}

static void meta_webhook_with_broken_skeleton_is_dead_lettered(void **state)
{
    (void)state;
    check_dead_lettered_envelope("bad/meta_entry_not_array.json", SUB_DOCS "|2070443601311548|payload|t",
                                 SUB_DOCS "|2070443601311548|2024-03-06 05:24:00+00|dead_letter");
}

/* A body that is not JSON at all cannot say whether it was meant as an envelope: either step may be named. */
static void unparseable_body_without_metadata_is_dead_lettered_without_receipt(void **state)
{
    (void)state;
    static const char *const fixtures[] = {"bad/not_json.txt", "bad/truncated_envelope.json"};
    for (int i = 0; i < 2; i++) {
        pwt_truncate_all();
        char *body = pwt_read_fixture(fixtures[i], NULL);
        pwt_assert_status(post_fixture(fixtures[i], NULL), 204);
        pwt_assert_rows_p("SELECT subscription, message_id, reason ~ '^(envelope|payload): .', body = convert_to($1, "
                          "'UTF8') FROM dead_letters",
                          PARAMS(body), "NULL|NULL|t|t");
        ASSERT_EMPTY("pubsub_receipts");
        assert_no_status_rows();
        assert_no_inbound_rows();
        free(body);
    }
}

static void unwrapped_garbage_with_metadata_is_dead_lettered_under_its_id(void **state)
{
    (void)state;
    char *body = pwt_read_fixture("bad/not_json.txt", NULL);
    pwt_assert_status(post_fixture("bad/not_json.txt",
                                   PARAMS("x-goog-pubsub-message-id: 6001",
                                          "x-goog-pubsub-publish-time: 2024-03-06T07:30:00Z",
                                          "x-goog-pubsub-subscription-name: " SUB)),
                      204);
    pwt_assert_rows_p(Q_DEAD, PARAMS(body), SUB "|6001|payload|t");
    pwt_assert_rows(Q_RECEIPTS, SUB "|6001|2024-03-06 07:30:00+00|dead_letter");
    assert_no_status_rows();
    assert_no_inbound_rows();
    free(body);
}

/* ---- redelivery ------------------------------------------------------------------------------- */

static void redelivered_push_changes_nothing(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_read.json", "7001"), 204);
    pwt_assert_status(push_fixture("meta/text_with_contact.json", "7002"), 204);
    char *before = pwt_dump_tables();
    pwt_assert_status(push_fixture("meta/status_read.json", "7001"), 204);
    pwt_assert_status(push_fixture("meta/text_with_contact.json", "7002"), 204);
    pwt_assert_tables_unchanged(before);
}

static void same_message_id_with_other_content_is_not_applied(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_sent.json", "7101"), 204);
    char *before = pwt_dump_tables();
    pwt_assert_status(push_fixture("meta/status_read.json", "7101"), 204);
    pwt_assert_tables_unchanged(before);
}

static void same_message_id_in_another_subscription_is_a_new_push(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_sent.json", "7201"), 204);
    char *body = pwt_wrap_fixture("meta/status_read.json", "7201", "projects/acme-prod/subscriptions/whatsapp-events-backfill", PUBLISH_TIME);
    pwt_assert_status(pwt_post(&worker, "/", body, strlen(body), NULL, NULL), 204);
    pwt_assert_rows(Q_RECEIPTS, "projects/acme-prod/subscriptions/whatsapp-events-backfill|7201|" PUBLISH_TIME_PG
                                "|stored\n" RECEIPT("7201", "stored"));
    pwt_assert_rows("SELECT current_status FROM message_logs", "read");
    free(body);
}

/* ---- limits and lifecycle ---------------------------------------------------------------------- */

/* A wrapped push padded with JSON whitespace to exactly len bytes (len >= its natural size). */
static char *push_of_exact_size(size_t len, const char *message_id)
{
    char *payload = status_webhook(W_SYN, "sent", "1709679600", "919876543230");
    char *body = pwt_pad_json(pwt_wrap(payload, strlen(payload), message_id, SUB, PUBLISH_TIME), len);
    free(payload);
    return body;
}

static void body_over_max_body_bytes_is_413_and_stores_nothing(void **state)
{
    (void)state;
    static pwt_worker_t small; /* static: the harness tracks it while it runs */
    assert_int_equal(pwt_worker_start(&small, PARAMS("MAX_BODY_BYTES=2048", "WORKER_THREADS=1")), 0);

    char *over = push_of_exact_size(2049, "8001");
    pwt_assert_status(pwt_post(&small, "/", over, 2049, NULL, NULL), 413);
    assert_nothing_stored();

    char *at_limit = push_of_exact_size(2048, "8002");
    pwt_assert_status(pwt_post(&small, "/", at_limit, 2048, NULL, NULL), 204);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("8002", "stored"));
    pwt_assert_rows("SELECT bsp_msg_id, current_status FROM message_logs", W_SYN "|sent");

    assert_int_equal(pwt_worker_stop(&small), 0);
    free(over);
    free(at_limit);
}

static void worker_exits_0_on_sigterm(void **state)
{
    (void)state;
    pwt_worker_t w;
    assert_int_equal(pwt_worker_start(&w, NULL), 0);
    pwt_assert_status(pwt_get(&w, "/healthz", NULL), 200);
    assert_int_equal(pwt_worker_stop(&w), 0);
}

static void migrate_again_is_a_no_op(void **state)
{
    (void)state;
    pwt_assert_status(push_fixture("meta/status_sent.json", "9001"), 204);
    char *before = pwt_dump_tables();
    long long migrations = pwt_scalar_int("SELECT count(*) FROM schema_migrations");
    assert_int_equal(pwt_migrate(), 0);
    pwt_assert_tables_unchanged(before);
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM schema_migrations"), migrations);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, pwt_suite_fresh, pwt_suite_alive)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(healthz_answers_200),
        T(readyz_answers_200_with_database_up),
        T(unknown_path_answers_404_and_stores_nothing),
        T(other_methods_on_root_answer_405),

        T(status_sent_stores_event_log_and_receipt),
        T(status_delivered_alone_implies_sent_at_same_time),
        T(status_read_alone_implies_delivered_and_sent_and_records_contact),
        T(statuses_sent_delivered_read_in_order_roll_up_to_read),
        T(statuses_in_reverse_order_give_the_same_rows),
        T(statuses_in_every_order_give_the_same_rows),
        T(read_before_delivered_is_implied_then_lowered_by_real_events),
        T(duplicate_status_in_a_new_push_changes_no_row),
        T(repeated_status_keeps_the_earliest_event),
        T(failed_status_stores_errors_and_last_error),
        T(failed_and_later_delivered_in_either_order_is_delivered_keeping_last_error),
        T(played_status_implies_delivered_and_sent),
        T(unknown_status_value_is_kept_as_received),
        T(unusual_status_merges_with_an_existing_row),
        T(several_statuses_in_one_body_are_all_stored),
        T(numeric_timestamp_and_plus_recipient_are_accepted),
        T(to_phone_is_plus_and_digits_and_set_once),
        T(one_malformed_status_is_dead_lettered_and_the_others_stored),
        T(value_with_only_errors_is_ignored),
        T(template_status_update_is_ignored),
        T(every_entry_and_change_is_read),

        T(inbound_text_has_body_and_contact_name),
        T(inbound_image_body_is_caption),
        T(inbound_video_body_is_caption),
        T(inbound_voice_audio_has_no_body),
        T(inbound_document_body_is_caption_not_filename),
        T(inbound_sticker_has_no_body),
        T(inbound_location_body_is_its_name),
        T(inbound_contacts_card_has_no_body_and_adds_only_the_sender),
        T(inbound_button_reply_body_is_title_with_context),
        T(inbound_list_reply_body_is_title),
        T(inbound_flow_nfm_reply_body_is_its_body),
        T(inbound_template_button_body_is_text_with_context),
        T(inbound_reaction_body_is_emoji),
        T(inbound_removed_reaction_has_no_body),
        T(inbound_order_body_is_order_text),
        T(inbound_system_changed_number_body_is_system_body),
        T(inbound_unsupported_is_stored_without_body),
        T(inbound_ad_referral_text_is_stored_with_referral_in_payload),
        T(inbound_username_only_user_has_user_id_and_a_contact_without_phone),
        T(inbound_forwarded_has_no_context_message_id),
        T(inbound_two_messages_of_one_contact_set_first_and_last_seen),
        T(inbound_first_write_wins_on_redelivery_in_a_new_push),
        T(contact_tracks_first_and_latest_sighting_and_latest_name),

        T(aisensy_user_text_becomes_inbound_with_country_code),
        T(aisensy_user_image_uses_caption_and_iso_created_at),
        T(aisensy_sent_with_zero_time_uses_envelope_created_at),
        T(aisensy_delivered_uses_delivered_at_ms_and_adds_country_code),
        T(aisensy_read_with_string_ms_and_empty_failure_has_no_errors),
        T(aisensy_status_sequence_rolls_up_like_meta),
        T(aisensy_failed_stores_failure_response_as_errors),
        T(aisensy_other_topics_are_ignored),

        T(envelope_with_both_id_spellings_is_stored),
        T(envelope_with_camel_case_only_is_stored),
        T(envelope_with_snake_case_only_is_stored),
        T(envelope_with_attributes_ordering_key_and_delivery_attempt_is_stored),
        T(wrapped_push_without_subscription_has_empty_subscription),
        T(wrapped_push_without_message_id_is_stored_without_receipt),
        T(unwrapped_push_takes_metadata_from_headers),
        T(unwrapped_push_without_metadata_is_stored_without_receipt),
        T(pull_output_replayed_as_pushes_is_stored),

        T(invalid_base64_is_dead_lettered_once_with_raw_body),
        T(envelope_data_of_wrong_type_is_dead_lettered),
        T(payload_not_json_is_dead_lettered),
        T(payload_in_neither_format_is_dead_lettered),
        T(meta_webhook_with_broken_skeleton_is_dead_lettered),
        T(unparseable_body_without_metadata_is_dead_lettered_without_receipt),
        T(unwrapped_garbage_with_metadata_is_dead_lettered_under_its_id),

        T(redelivered_push_changes_nothing),
        T(same_message_id_with_other_content_is_not_applied),
        T(same_message_id_in_another_subscription_is_a_new_push),

        T(body_over_max_body_bytes_is_413_and_stores_nothing),
        T(worker_exits_0_on_sigterm),
        T(migrate_again_is_a_no_op),
    };
    return pwt_suite_run("pipeline", &worker, PARAMS("WORKER_THREADS=2"), tests);
}
/* clang-format on */
