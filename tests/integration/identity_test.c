/* Identity after usernames: business-scoped user ids through the real worker (statuses, contacts linked and merged, username and country code) and the analytics' one recipient/sender rule, row by row. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/integration/harness.h"
#include "tests/integration/util.h"

/* clang-format off: expected rows are laid out by hand, one table row per source line where it fits. */

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PUBLISH_TIME "2024-03-07T12:00:00Z"
#define PARAMS PWT_LIST

/* Meta's documented examples (tests/fixtures/meta/bsuid_*.json). */
#define F_TO_PHONE "meta/bsuid_status_delivered_to_phone.json"
#define F_TO_USER "meta/bsuid_status_delivered_to_user_id.json"
#define F_FROM_USERNAME "meta/bsuid_text_from_username_user.json"
#define W_META "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
#define W_META_IN "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
#define PABLO "user.9373795779eb6441c8adb2eaee5b848e7dd174ddd302d7db62142f4722d574b6"
#define SHEENA "user.93737..."
#define T_META "2025-06-15 23:27:53+00"     /* 1750030073 */
#define T_META_ISO "2025-06-15T23:27:53Z"
#define T_META_IN "2025-06-08 20:59:43+00"  /* 1749416383 */

/* Times of the webhooks built here: 2024-03-07 10:00:00 UTC plus minutes. */
#define T0 1709805600L
#define AT(min) "2024-03-07 10:" #min ":00+00"

#define Q_CONTACTS                                                                                                     \
    "SELECT wa_id, user_id, profile_name, username, country_code, first_seen_at, last_seen_at FROM contacts ORDER BY id"
#define Q_CONTACTS_BY_IDENTITY                                                                                         \
    "SELECT wa_id, user_id, profile_name, username, country_code, first_seen_at, last_seen_at FROM contacts "        \
    "ORDER BY wa_id COLLATE \"C\", user_id COLLATE \"C\""
#define Q_EVENTS                                                                                                       \
    "SELECT bsp_msg_id, status, occurred_at, recipient_id, recipient_user_id, pubsub_message_id FROM status_events "  \
    "ORDER BY bsp_msg_id COLLATE \"C\", status COLLATE \"C\""
#define Q_LOGS                                                                                                         \
    "SELECT bsp_msg_id, to_phone, recipient_user_id, whatsapp_status, current_status FROM message_logs "              \
    "ORDER BY bsp_msg_id COLLATE \"C\""
#define Q_INBOUND                                                                                                      \
    "SELECT wa_msg_id, from_phone, from_user_id, contact_name, sent_at FROM inbound_messages ORDER BY sent_at, wa_msg_id"
#define ASSERT_EMPTY(table) pwt_assert_rows("SELECT t::text FROM " table " t", "")

static pwt_worker_t worker;

/* ---- webhooks --------------------------------------------------------------------------------- */

static long push(const char *payload, const char *message_id)
{
    return pwt_push(&worker, payload, strlen(payload), message_id, SUB, PUBLISH_TIME);
}

static void push_ok(const char *payload, const char *message_id)
{
    pwt_assert_status(push(payload, message_id), 204);
}

static void push_fixture_ok(const char *rel, const char *message_id)
{
    pwt_assert_status(pwt_push_fixture(&worker, rel, message_id, SUB, PUBLISH_TIME), 204);
}

/* One value.contacts[] entry (malloc'd); NULL leaves a member out, "" is sent as the empty string (as Meta does). */
static char *contact(const char *wa_id, const char *user_id, const char *name, const char *username, const char *country)
{
    char *u = username ? pwt_xasprintf(",\"username\":\"%s\"", username) : pwt_xstrdup("");
    char *c = country ? pwt_xasprintf(",\"country_code\":\"%s\"", country) : pwt_xstrdup("");
    char *w = wa_id ? pwt_xasprintf(",\"wa_id\":\"%s\"", wa_id) : pwt_xstrdup("");
    char *i = user_id ? pwt_xasprintf(",\"user_id\":\"%s\"", user_id) : pwt_xstrdup("");
    char *s = pwt_xasprintf("{\"profile\":{\"name\":\"%s\"%s%s}%s%s}", name, u, c, w, i);
    free(u);
    free(c);
    free(w);
    free(i);
    return s;
}

/* Entries joined with ',' (each taken), for a webhook's contacts[]. */
static char *contacts_of(int n, ...)
{
    va_list ap;
    char *all = pwt_xstrdup("");
    va_start(ap, n);
    for (int k = 0; k < n; k++) {
        char *one = va_arg(ap, char *);
        char *next = pwt_xasprintf("%s%s%s", all, k > 0 ? "," : "", one);
        free(all);
        free(one);
        all = next;
    }
    va_end(ap);
    return all;
}

/* pwt_meta_webhook of "contacts":[<contacts>] (members of the array, taken; NULL: no "contacts" member) then members (taken). */
static char *webhook_with_contacts(char *contacts, char *members)
{
    char *all = contacts ? pwt_xasprintf("\"contacts\":[%s],%s", contacts, members) : pwt_xstrdup(members);
    char *s = pwt_meta_webhook(all);
    free(all);
    free(members);
    free(contacts);
    return s;
}

/* A webhook of contacts entries (a JSON array's members, taken) and one status at T0 + minutes. */
static char *status_webhook(char *contacts, const char *wamid, const char *status, int minutes, const char *recipient_id,
                            const char *recipient_user_id)
{
    char *rid = recipient_id ? pwt_xasprintf(",\"recipient_id\":\"%s\"", recipient_id) : pwt_xstrdup("");
    char *ruid = recipient_user_id ? pwt_xasprintf(",\"recipient_user_id\":\"%s\"", recipient_user_id) : pwt_xstrdup("");
    char *members = pwt_xasprintf("\"statuses\":[{\"id\":\"%s\",\"status\":\"%s\",\"timestamp\":\"%ld\"%s%s}]", wamid, status,
                                  T0 + 60L * minutes, rid, ruid);
    free(rid);
    free(ruid);
    return webhook_with_contacts(contacts, members);
}

/* A webhook of contacts entries (taken) and one text message at T0 + minutes from `from` and/or `from_user_id`. */
static char *text_webhook(char *contacts, const char *wamid, int minutes, const char *from, const char *from_user_id)
{
    char *f = from ? pwt_xasprintf("\"from\":\"%s\",", from) : pwt_xstrdup("");
    char *fu = from_user_id ? pwt_xasprintf("\"from_user_id\":\"%s\",", from_user_id) : pwt_xstrdup("");
    char *members = pwt_xasprintf("\"messages\":[{%s%s\"id\":\"%s\",\"timestamp\":\"%ld\",\"type\":\"text\","
                                  "\"text\":{\"body\":\"hello\"}}]",
                                  f, fu, wamid, T0 + 60L * minutes);
    free(f);
    free(fu);
    return webhook_with_contacts(contacts, members);
}

static void push_status(char *contacts, const char *wamid, const char *status, int minutes, const char *recipient_id,
                        const char *recipient_user_id, const char *message_id)
{
    char *s = status_webhook(contacts, wamid, status, minutes, recipient_id, recipient_user_id);
    push_ok(s, message_id);
    free(s);
}

static void push_text(char *contacts, const char *wamid, int minutes, const char *from, const char *from_user_id,
                      const char *message_id)
{
    char *s = text_webhook(contacts, wamid, minutes, from, from_user_id);
    push_ok(s, message_id);
    free(s);
}

/* A contacts entry's sighting alone, in a status webhook of its own message (wamid "wamid.S<message_id>"). */
static void push_sighting(char *contacts, int minutes, const char *message_id)
{
    char wamid[64];
    snprintf(wamid, sizeof wamid, "wamid.S%s", message_id);
    push_status(contacts, wamid, "sent", minutes, NULL, NULL, message_id);
}

/* ---- Meta's documented examples ------------------------------------------------------------------ */

static void status_sent_to_a_user_id_keeps_it_and_a_contact_known_only_by_it(void **state)
{
    (void)state;
    push_fixture_ok(F_TO_USER, "5001");
    pwt_assert_rows(Q_EVENTS, W_META "|delivered|" T_META "|NULL|" PABLO "|5001");
    pwt_assert_rows(Q_LOGS, W_META "|NULL|" PABLO "|{\"sent\": \"" T_META_ISO "\", \"delivered\": \"" T_META_ISO "\"}|delivered");
    pwt_assert_rows(Q_CONTACTS, "NULL|" PABLO "|Pablo M.|@pablomorales|US|" T_META "|" T_META);
    pwt_assert_rows(PWT_Q_RECEIPTS, SUB "|5001|2024-03-07 12:00:00+00|stored");
    ASSERT_EMPTY("dead_letters");
    ASSERT_EMPTY("inbound_messages");
}

static void status_sent_to_a_phone_links_the_contacts_phone_and_user_id(void **state)
{
    (void)state;
    push_fixture_ok(F_TO_PHONE, "5002");
    pwt_assert_rows(Q_EVENTS, W_META "|delivered|" T_META "|16505551234|NULL|5002");
    pwt_assert_rows(Q_LOGS, W_META "|+16505551234|NULL|{\"sent\": \"" T_META_ISO "\", \"delivered\": \"" T_META_ISO "\"}|delivered");
    pwt_assert_rows(Q_CONTACTS, "16505551234|" PABLO "|Pablo M.|@pablomorales|US|" T_META "|" T_META);
    ASSERT_EMPTY("dead_letters");
}

static void text_from_a_username_user_has_no_phone_and_a_contact_by_user_id(void **state)
{
    (void)state;
    push_fixture_ok(F_FROM_USERNAME, "5003");
    pwt_assert_rows(Q_INBOUND, W_META_IN "|NULL|" SHEENA "|Sheena Nelson|" T_META_IN);
    pwt_assert_rows(Q_CONTACTS, "NULL|" SHEENA "|Sheena Nelson|@realsheenanelson|US|" T_META_IN "|" T_META_IN);
    ASSERT_EMPTY("dead_letters");
    ASSERT_EMPTY("message_logs");
}

/* Meta's two examples (the same event, sent to the phone, then to the user id), then a text by the user id alone, then one
   by the phone alone: one contacts row throughout, and the message log keeps both identities. */
static void both_identities_then_either_one_find_the_same_contact(void **state)
{
    (void)state;
    push_fixture_ok(F_TO_PHONE, "5011");
    push_fixture_ok(F_TO_USER, "5012");
    /* status_events keeps the first event of (message, delivered): same time, no errors, smaller push id */
    pwt_assert_rows(Q_EVENTS, W_META "|delivered|" T_META "|16505551234|NULL|5011");
    pwt_assert_rows(Q_LOGS, W_META "|+16505551234|" PABLO "|{\"sent\": \"" T_META_ISO "\", \"delivered\": \"" T_META_ISO "\"}|delivered");
    pwt_assert_rows(Q_CONTACTS, "16505551234|" PABLO "|Pablo M.|@pablomorales|US|" T_META "|" T_META);

    /* later: a text by the user id only (from and wa_id empty), named differently */
    push_text(contact("", PABLO, "Pablo", "@pablomorales", "US"), "wamid.IN1", 5, "", PABLO, "5013");
    pwt_assert_rows(Q_CONTACTS, "16505551234|" PABLO "|Pablo M.|@pablomorales|US|" AT(05) "|" T_META);
    /* then one by the phone only (the shape before user ids), even earlier: the name is not the latest */
    push_text(contact("16505551234", NULL, "P. Morales", NULL, NULL), "wamid.IN2", 1, "16505551234", NULL, "5014");
    pwt_assert_rows(Q_CONTACTS, "16505551234|" PABLO "|Pablo M.|@pablomorales|US|" AT(01) "|" T_META);
    pwt_assert_rows(Q_INBOUND, "wamid.IN2|+16505551234|NULL|P. Morales|" AT(01) "\n"
                               "wamid.IN1|NULL|" PABLO "|Pablo|" AT(05));
    pwt_assert_rows("SELECT count(*), count(DISTINCT id) FROM contacts", "1|1");
    ASSERT_EMPTY("dead_letters");
}

/* ---- linking and merging ------------------------------------------------------------------------ */

/* A user known first by the user id alone, then (another row) by the phone alone, then a webhook shows both: the user id's
   row is merged into the phone's row (which keeps its id), with the earliest first sighting and the latest names. */
static void rows_of_a_user_id_and_a_phone_merge_when_a_webhook_shows_both(void **state)
{
    (void)state;
    push_fixture_ok(F_FROM_USERNAME, "5021"); /* 2025-06-08: (NULL, SHEENA) */
    push_text(contact("16505550000", NULL, "Sheena N.", NULL, NULL), "wamid.IN3", 10, "16505550000", NULL, "5022");
    pwt_assert_rows(Q_CONTACTS, "NULL|" SHEENA "|Sheena Nelson|@realsheenanelson|US|" T_META_IN "|" T_META_IN "\n"
                                "16505550000|NULL|Sheena N.|NULL|NULL|" AT(10) "|" AT(10));
    long long phone_row = pwt_scalar_int("SELECT id FROM contacts WHERE wa_id = '16505550000'");

    /* a later status (2025-06-20) of a message sent to her phone shows both */
    char *s = status_webhook(contact("16505550000", SHEENA, "Sheena", "@sheena", NULL), "wamid.OUT1", "read",
                             (int)((1750377600L - T0) / 60), "16505550000", NULL);
    push_ok(s, "5023");
    free(s);
    pwt_assert_rows(Q_CONTACTS, "16505550000|" SHEENA "|Sheena|@sheena|US|2024-03-07 10:10:00+00|2025-06-20 00:00:00+00");
    assert_int_equal(pwt_scalar_int("SELECT id FROM contacts"), phone_row);

    /* either identity alone now finds that row */
    push_text(contact("", SHEENA, "Sheena", NULL, NULL), "wamid.IN4", 2, "", SHEENA, "5024");
    push_sighting(contact("16505550000", NULL, "Sheena", NULL, NULL), 3, "5025");
    pwt_assert_rows(Q_CONTACTS, "16505550000|" SHEENA "|Sheena|@sheena|US|2024-03-07 10:02:00+00|2025-06-20 00:00:00+00");
    ASSERT_EMPTY("dead_letters");
}

/* One webhook holding one person three ways (phone alone, user id alone, both), another known by the phone alone and a third
   by the user id alone: a row each, the first linked, each written once although the statement sees it several times. */
static void several_sightings_of_one_person_in_one_push_make_one_row(void **state)
{
    (void)state;
    char *contacts = contacts_of(5, contact("919800000001", NULL, "Asha", NULL, NULL), contact(NULL, "IN.1", "Asha V", "@asha", "IN"),
                                 contact("919800000001", "IN.1", "Asha Verma", NULL, NULL), contact("919800000002", NULL, "Bo", NULL, NULL),
                                 contact("", "IN.3", "Cy", "@cy", "IN"));
    push_sighting(contacts, 7, "5031");
    /* (the statement's two upserts may run in either order: ids do not give the order here) */
    pwt_assert_rows(Q_CONTACTS_BY_IDENTITY, "919800000001|IN.1|Asha|@asha|IN|" AT(07) "|" AT(07) "\n"
                                "919800000002|NULL|Bo|NULL|NULL|" AT(07) "|" AT(07) "\n"
                                "NULL|IN.3|Cy|@cy|IN|" AT(07) "|" AT(07));
    ASSERT_EMPTY("dead_letters");

    /* the same again in a new push changes nothing */
    char *before = pwt_dump_tables();
    contacts = contacts_of(2, contact("919800000001", "IN.1", "Asha", "@asha", "IN"), contact(NULL, "IN.3", "Cy", "@cy", "IN"));
    char *s = status_webhook(contacts, "wamid.S5031", "sent", 7, NULL, NULL);
    push_ok(s, "5032");
    free(s);
    /* the push is new (its receipt is the only change) */
    pwt_exec("DELETE FROM pubsub_receipts WHERE message_id = '5032'");
    pwt_assert_tables_unchanged(before);
}

/* Names follow the latest sighting that has them; an older sighting, or one without the field (a sent status), keeps them. */
static void username_and_country_code_follow_the_latest_sighting(void **state)
{
    (void)state;
    push_sighting(contact("919800000010", "IN.10", "A", "@a", "IN"), 10, "5041");
    push_sighting(contact("919800000010", "IN.10", "B", "@b", NULL), 30, "5042");
    pwt_assert_rows(Q_CONTACTS, "919800000010|IN.10|B|@b|IN|" AT(10) "|" AT(30));
    push_sighting(contact("919800000010", "IN.10", "Z", "@z", "GB"), 20, "5043"); /* older than the last: times widen only */
    pwt_assert_rows(Q_CONTACTS, "919800000010|IN.10|B|@b|IN|" AT(10) "|" AT(30));
    push_sighting(contact(NULL, "IN.10", "D", NULL, NULL), 40, "5044"); /* no username, no country: kept */
    pwt_assert_rows(Q_CONTACTS, "919800000010|IN.10|D|@b|IN|" AT(10) "|" AT(40));
    push_sighting(contact("919800000010", NULL, "E", NULL, "GB"), 50, "5045");
    pwt_assert_rows(Q_CONTACTS, "919800000010|IN.10|E|@b|GB|" AT(10) "|" AT(50));
}

/* A phone already linked to one user id, seen with another (a recycled number): the new user id gets its row, the old link
   stays, and each identity alone keeps finding its row. */
static void a_phone_linked_to_another_user_id_stays_linked(void **state)
{
    (void)state;
    push_sighting(contact("919800000020", "IN.20", "Old", NULL, NULL), 10, "5051");
    push_sighting(contact("919800000020", "IN.21", "New", NULL, NULL), 20, "5052");
    pwt_assert_rows(Q_CONTACTS, "919800000020|IN.20|Old|NULL|NULL|" AT(10) "|" AT(10) "\n"
                                "NULL|IN.21|New|NULL|NULL|" AT(20) "|" AT(20));
    push_sighting(contact("", "IN.21", "New", NULL, NULL), 30, "5053");
    push_sighting(contact("919800000020", NULL, "Old", NULL, NULL), 40, "5054");
    pwt_assert_rows(Q_CONTACTS, "919800000020|IN.20|Old|NULL|NULL|" AT(10) "|" AT(40) "\n"
                                "NULL|IN.21|New|NULL|NULL|" AT(20) "|" AT(30));
    ASSERT_EMPTY("dead_letters");
}

/* 8 people, each seen 3 ways (phone alone, user id alone, both) at different times, pushed all at once: whatever the grouping
   and interleaving, one linked row each, first and last seen the extremes of its sightings. */
static void concurrent_sightings_of_the_same_people_make_one_row_each(void **state)
{
    (void)state;
    enum { PEOPLE = 8, FORMS = 3, N = PEOPLE * FORMS };
    pwt_bg_post_t posts[N];
    for (int i = 0; i < N; i++) {
        int who = i % PEOPLE, form = i / PEOPLE;
        char phone[32], uid[32], id[16], wamid[32];
        snprintf(phone, sizeof phone, "9198000001%02d", who);
        snprintf(uid, sizeof uid, "IN.1%02d", who);
        snprintf(id, sizeof id, "61%02d", i);
        snprintf(wamid, sizeof wamid, "wamid.C%02d", i);
        char *s = status_webhook(contact(form != 1 ? phone : NULL, form != 0 ? uid : NULL, "P", NULL, NULL), wamid, "sent",
                                 10 + form * 10 + who, NULL, NULL);
        pwt_bg_post_start(&posts[i], &worker, pwt_wrap(s, strlen(s), id, SUB, PUBLISH_TIME));
        free(s);
    }
    for (int i = 0; i < N; i++)
        pwt_assert_status(pwt_bg_post_join(&posts[i]), 204);
    char expected[4096] = "";
    for (int who = 0; who < PEOPLE; who++) {
        char row[200];
        snprintf(row, sizeof row, "%s9198000001%02d|IN.1%02d|2024-03-07 10:%02d:00+00|2024-03-07 10:%02d:00+00", who ? "\n" : "", who,
                 who, 10 + who, 30 + who);
        strcat(expected, row);
    }
    pwt_assert_rows("SELECT wa_id, user_id, first_seen_at, last_seen_at FROM contacts ORDER BY wa_id", expected);
    ASSERT_EMPTY("dead_letters");
}

/* ---- analytics: one identity rule ------------------------------------------------------------- */

#define P1 "919800000031"
#define P3 "919800000033"
#define WINDOW PARAMS("2024-03-07T00:00Z", "2024-03-08T00:00Z", "1")
#define Q_ENGAGED "SELECT * FROM pw_engaged_recipients($1, $2, $3::int)"

/* Messages to a phone, to the user id of that phone (linked by contacts only later), to an unlinked user id, to another phone;
   texts from the same people. Every view counts a person once, by phone, else by the linked phone, else by user id. */
static void every_view_counts_a_person_by_phone_else_linked_phone_else_user_id(void **state)
{
    (void)state;
    push_status(NULL, "wamid.A1", "read", 1, P1, NULL, "5061");            /* to the phone of person 1 */
    push_status(NULL, "wamid.A2", "delivered", 2, "", "IN.31", "5062");    /* to person 1's user id */
    push_status(NULL, "wamid.A3", "sent", 3, "", "IN.32", "5063");         /* to an unlinked user id */
    push_status(NULL, "wamid.A4", "read", 4, P3, NULL, "5064");            /* to another phone */
    push_text(NULL, "wamid.T1", 5, P1, NULL, "5065");
    push_text(NULL, "wamid.T2", 6, "", "IN.31", "5066");
    push_text(NULL, "wamid.T3", 7, "", "IN.32", "5067");

    /* before anything links IN.31 to a phone, it is a recipient and a sender of its own */
    pwt_assert_rows_p(Q_ENGAGED, WINDOW, "+" P1 "|1|1|1|100.00|+" P1 "\n"
                                         "+" P3 "|1|1|1|100.00|+" P3 "\n"
                                         "NULL|1|1|0|0.00|IN.31\n"
                                         "NULL|1|0|0|0.00|IN.32");
    pwt_assert_rows("SELECT senders FROM inbound_messages_daily", "3");

    /* a webhook shows person 1's phone and user id together */
    push_sighting(contact(P1, "IN.31", "One", NULL, NULL), 8, "5068");
    pwt_assert_rows("SELECT bsp_msg_id, to_phone, recipient_user_id, recipient FROM message_status_times ORDER BY bsp_msg_id",
                    "wamid.A1|+" P1 "|NULL|+" P1 "\n"
                    "wamid.A2|NULL|IN.31|+" P1 "\n"
                    "wamid.A3|NULL|IN.32|IN.32\n"
                    "wamid.A4|+" P3 "|NULL|+" P3 "\n"
                    "wamid.S5068|NULL|NULL|NULL");
    pwt_assert_rows_p(Q_ENGAGED, WINDOW, "+" P3 "|1|1|1|100.00|+" P3 "\n"
                                         "+" P1 "|2|2|1|50.00|+" P1 "\n"
                                         "NULL|1|0|0|0.00|IN.32");
    pwt_assert_rows("SELECT day, msg_type, messages, senders FROM inbound_messages_daily", "2024-03-07|text|3|2");
    pwt_assert_rows("SELECT bsp_msg_id, to_phone, recipient FROM pw_undelivered(5) ORDER BY bsp_msg_id",
                    "wamid.A3|NULL|IN.32\nwamid.S5068|NULL|NULL");
    /* the guide's queries read the same tables as before */
    pwt_assert_rows("SELECT to_phone, count(*) FROM message_logs WHERE bsp_msg_id IS NOT NULL GROUP BY to_phone "
                    "ORDER BY to_phone COLLATE \"C\"",
                    "+" P1 "|1\n+" P3 "|1\nNULL|3");
    ASSERT_EMPTY("dead_letters");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, pwt_suite_fresh, pwt_suite_alive)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(status_sent_to_a_user_id_keeps_it_and_a_contact_known_only_by_it),
        T(status_sent_to_a_phone_links_the_contacts_phone_and_user_id),
        T(text_from_a_username_user_has_no_phone_and_a_contact_by_user_id),
        T(both_identities_then_either_one_find_the_same_contact),
        T(rows_of_a_user_id_and_a_phone_merge_when_a_webhook_shows_both),
        T(several_sightings_of_one_person_in_one_push_make_one_row),
        T(username_and_country_code_follow_the_latest_sighting),
        T(a_phone_linked_to_another_user_id_stays_linked),
        T(concurrent_sightings_of_the_same_people_make_one_row_each),
        T(every_view_counts_a_person_by_phone_else_linked_phone_else_user_id),
    };
    return pwt_suite_run("identity", &worker, PARAMS("WORKER_THREADS=2"), tests);
}
