/* Upgrading in place: a database migrated to 0004 by an earlier release, with rows in every table, gets 0005-0014 from `worker migrate`; its rows keep every column and meaning, and the worker then links what it sees to them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/util.h"

/* clang-format off: expected rows are laid out by hand. */

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PUBLISH_TIME "2024-03-07T12:00:00Z"

/* The migrations the previous release applied, as its `worker migrate` did: each in a transaction, then recorded. */
static const char *const OLD_MIGRATIONS[] = {"0001_schema", "0002_analytics", "0003_redrive", "0004_dead_letter_key"};

/* Runs a script of several statements (the checker runs one statement per call) on a connection of its own. */
static void exec_script(const char *sql)
{
    PGconn *c = PQconnectdb(pwt_db_url());
    if (PQstatus(c) != CONNECTION_OK)
        pwt_fail(__FILE__, __LINE__, "cannot connect: %s", PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        pwt_fail(__FILE__, __LINE__, "script failed: %s", msg);
    }
    PQclear(r);
    PQfinish(c);
}

static void apply_migrations(const char *const *names, size_t n)
{
    pwt_exec("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
    for (size_t i = 0; i < n; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "migrations/%s.sql", names[i]);
        char *path = pwt_repo_path(rel);
        char *sql = path != NULL ? pwt_read_text(path) : NULL;
        if (sql == NULL)
            pwt_fail(__FILE__, __LINE__, "cannot read %s", rel);
        char *tx = pwt_xasprintf("BEGIN; %s\n; INSERT INTO schema_migrations (name) VALUES ('%s'); COMMIT", sql, names[i]);
        exec_script(tx);
        free(tx);
        free(sql);
        free(path);
    }
}

/* Rows as the previous release wrote them (its columns only). */
static const char OLD_ROWS[] =
    "INSERT INTO message_logs (bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at, updated_at) VALUES"
    " ('wamid.OLD1', '+919800000041', '{\"sent\": \"2024-03-01T10:00:00Z\", \"read\": \"2024-03-01T10:05:00Z\","
    "   \"delivered\": \"2024-03-01T10:05:00Z\"}', 'read', NULL, '2024-03-01 10:00:00+00', '2024-03-01 10:05:00+00'),"
    " ('wamid.OLD2', NULL, '{\"sent\": \"2024-03-01T11:00:00Z\"}', 'sent', NULL, '2024-03-01 11:00:00+00', '2024-03-01 11:00:00+00');"
    "INSERT INTO status_events (bsp_msg_id, status, occurred_at, recipient_id, phone_number_id, pubsub_message_id, received_at) VALUES"
    " ('wamid.OLD1', 'sent', '2024-03-01 10:00:00+00', '919800000041', '106540352242922', '101', '2024-03-01 10:00:01+00'),"
    " ('wamid.OLD1', 'read', '2024-03-01 10:05:00+00', '919800000041', '106540352242922', '102', '2024-03-01 10:05:01+00'),"
    " ('wamid.OLD2', 'sent', '2024-03-01 11:00:00+00', NULL, '106540352242922', '103', '2024-03-01 11:00:01+00');"
    "INSERT INTO inbound_messages (wa_msg_id, phone_number_id, from_phone, from_user_id, contact_name, msg_type, body, sent_at,"
    "                              payload, pubsub_message_id, received_at) VALUES"
    " ('wamid.IN1', '106540352242922', '+919800000041', NULL, 'Asha', 'text', 'hi', '2024-03-01 12:00:00+00', '{}', '104',"
    "  '2024-03-01 12:00:01+00'),"
    " ('wamid.IN2', '106540352242922', NULL, 'IN.41', 'Asha', 'text', 'yo', '2024-03-01 12:30:00+00', '{}', '105',"
    "  '2024-03-01 12:30:01+00');"
    "INSERT INTO contacts (wa_id, profile_name, first_seen_at, last_seen_at) VALUES"
    " ('919800000041', 'Asha', '2024-03-01 10:00:00+00', '2024-03-01 12:00:00+00'),"
    " ('919800000043', NULL, '2024-02-01 09:00:00+00', '2024-02-01 09:00:00+00');"
    "INSERT INTO pubsub_receipts (subscription, message_id, publish_time, outcome, received_at) VALUES"
    " ('" SUB "', '101', NULL, 'stored', '2024-03-01 10:00:01+00');"
    "INSERT INTO dead_letters (subscription, message_id, reason, body, received_at) VALUES"
    " ('" SUB "', '106', 'payload: not JSON', 'x', '2024-03-01 13:00:00+00')";

/* Every column the previous release had, of every table, in a fixed order. */
#define Q_OLD_COLUMNS                                                                                                  \
    "SELECT 'ml', bsp_msg_id, to_phone, whatsapp_status::text, current_status, last_error::text, created_at::text,"   \
    " updated_at::text FROM message_logs"                                                                               \
    " UNION ALL SELECT 'se', bsp_msg_id || status, occurred_at::text, recipient_id, phone_number_id, pubsub_message_id," \
    " received_at::text, NULL FROM status_events"                                                                       \
    " UNION ALL SELECT 'im', wa_msg_id, from_phone, from_user_id, contact_name, body, sent_at::text, received_at::text"  \
    " FROM inbound_messages"                                                                                            \
    " UNION ALL SELECT 'ct', wa_id, profile_name, first_seen_at::text, last_seen_at::text, NULL, NULL, NULL FROM contacts" \
    " UNION ALL SELECT 'pr', message_id, outcome, received_at::text, NULL, NULL, NULL, NULL FROM pubsub_receipts"        \
    " UNION ALL SELECT 'dl', message_id, reason, received_at::text, NULL, NULL, NULL, NULL FROM dead_letters"          \
    " ORDER BY 1, 2"

/* A new database as the previous release left it: 0001-0004 applied, OLD_ROWS in it. */
static void old_database_with_rows(void)
{
    pwt_db_drop();
    assert_int_equal(pwt_db_create("integration/upgrade"), 0);
    apply_migrations(OLD_MIGRATIONS, sizeof OLD_MIGRATIONS / sizeof OLD_MIGRATIONS[0]);
    exec_script(OLD_ROWS);
}

static void a_database_at_0004_with_rows_upgrades_in_place(void **state)
{
    (void)state;
    old_database_with_rows();
    char *before = pwt_rows(Q_OLD_COLUMNS);

    assert_int_equal(pwt_migrate(), 0);
    pwt_assert_rows("SELECT name FROM schema_migrations ORDER BY name",
                    "0001_schema\n0002_analytics\n0003_redrive\n0004_dead_letter_key\n0005_user_ids\n0006_prune\n0007_analytics_indexes\n0008_rollups\n"
                    "0009_status_times\n0010_window_indexes\n0011_gin_pending_list\n0012_rollup_in_trigger\n0013_status_instant_plpgsql\n"
                    "0014_rollup_fold");
    /* 0011 gave the guide's GIN index, made by 0001, its smaller pending list */
    pwt_assert_rows("SELECT reloptions::text FROM pg_class WHERE relname = 'idx_message_logs_whatsapp_status'",
                    "{gin_pending_list_limit=256}");
    /* 0008 computed its roll-ups from the rows that were there */
    pwt_assert_rows("SELECT day, messages, delivered, read, failed FROM message_status_daily ORDER BY day",
                    "2024-03-01|2|1|1|0");
    pwt_assert_rollups_consistent();
    /* 0009 stored each message's times */
    pwt_assert_rows("SELECT bsp_msg_id, sent_at, delivered_at, read_at, failed_at FROM message_logs ORDER BY 1",
                    "wamid.OLD1|2024-03-01 10:00:00+00|2024-03-01 10:05:00+00|2024-03-01 10:05:00+00|NULL\n"
                    "wamid.OLD2|2024-03-01 11:00:00+00|NULL|NULL|NULL");
    /* every old column holds what it held */
    pwt_assert_rows(Q_OLD_COLUMNS, before);
    free(before);
    /* the new columns are empty; each contact got an id, in the table's order */
    pwt_assert_rows("SELECT bsp_msg_id, recipient_user_id FROM message_logs ORDER BY 1", "wamid.OLD1|NULL\nwamid.OLD2|NULL");
    pwt_assert_rows("SELECT count(*), count(recipient_user_id) FROM status_events", "3|0");
    pwt_assert_rows("SELECT id, wa_id, user_id, username, country_code FROM contacts ORDER BY id",
                    "1|919800000041|NULL|NULL|NULL\n2|919800000043|NULL|NULL|NULL");
    /* the keys: id, and each identity unique when present */
    pwt_assert_rows("SELECT indexname FROM pg_indexes WHERE tablename = 'contacts' ORDER BY 1",
                    "contacts_pkey\ncontacts_user_id_key\ncontacts_wa_id_key");
    pwt_assert_rows("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
                    " WHERE i.indrelid = 'contacts'::regclass AND i.indisprimary", "id");

    /* the analytics over the old rows */
    pwt_assert_rows("SELECT * FROM pw_engaged_recipients('2024-03-01T00:00Z', '2024-03-02T00:00Z', 1)",
                    "+919800000041|1|1|1|100.00|+919800000041");
    pwt_assert_rows("SELECT bsp_msg_id, to_phone, recipient FROM pw_undelivered(5)", "wamid.OLD2|NULL|NULL");
    /* the second text came from a user id alone: a sender of its own until something links it */
    pwt_assert_rows("SELECT day, msg_type, messages, senders FROM inbound_messages_daily", "2024-03-01|text|2|2");

    /* a worker of the previous release keeps writing contacts during a rolling deploy: its upsert named ON CONFLICT (wa_id) */
    pwt_exec("INSERT INTO contacts AS c (wa_id, profile_name, first_seen_at, last_seen_at)"
             " VALUES ('919800000043', 'Cy', '2024-02-02 09:00:00+00', '2024-02-02 09:00:00+00')"
             " ON CONFLICT (wa_id) DO UPDATE SET profile_name = excluded.profile_name,"
             " last_seen_at = greatest(c.last_seen_at, excluded.last_seen_at)");

    /* this release links what it sees to the old rows */
    pwt_worker_t w;
    assert_int_equal(pwt_worker_start(&w, NULL), 0);
    char *members = pwt_xstrdup("\"contacts\":[{\"profile\":{\"name\":\"Asha\",\"username\":\"@asha\",\"country_code\":\"IN\"},"
                                "\"wa_id\":\"919800000041\",\"user_id\":\"IN.41\"},"
                                "{\"profile\":{\"name\":\"Bo\"},\"wa_id\":\"919800000042\",\"user_id\":\"IN.42\"}],"
                                "\"statuses\":[{\"id\":\"wamid.OLD2\",\"status\":\"delivered\",\"timestamp\":\"1709290800\","
                                "\"recipient_id\":\"\",\"recipient_user_id\":\"IN.42\"}]");
    char *webhook = pwt_meta_webhook(members);
    pwt_assert_status(pwt_push(&w, webhook, strlen(webhook), "201", SUB, PUBLISH_TIME), 204);
    free(webhook);
    free(members);
    /* (an older sighting: the times only widen, and the stored name stays; the username and country code were unknown) */
    pwt_assert_rows("SELECT CASE WHEN id <= 2 THEN id::text ELSE 'new' END, wa_id, user_id, profile_name, username, country_code,"
                    " first_seen_at, last_seen_at FROM contacts ORDER BY wa_id",
                    "1|919800000041|IN.41|Asha|@asha|IN|2024-03-01 10:00:00+00|2024-03-01 12:00:00+00\n"
                    "new|919800000042|IN.42|Bo|NULL|NULL|2024-03-01 11:00:00+00|2024-03-01 11:00:00+00\n"
                    "2|919800000043|NULL|Cy|NULL|NULL|2024-02-01 09:00:00+00|2024-02-02 09:00:00+00");
    pwt_assert_rows("SELECT bsp_msg_id, to_phone, recipient_user_id, current_status FROM message_logs ORDER BY 1",
                    "wamid.OLD1|+919800000041|NULL|read\nwamid.OLD2|NULL|IN.42|delivered");
    /* the old user-id-only sender and message now count under the phone the webhook linked */
    pwt_assert_rows("SELECT bsp_msg_id, recipient FROM message_status_times ORDER BY 1",
                    "wamid.OLD1|+919800000041\nwamid.OLD2|+919800000042");
    pwt_assert_rows("SELECT senders FROM inbound_messages_daily", "1");
    assert_int_equal(pwt_worker_stop(&w), 0);

    /* and migrating again changes nothing */
    char *after = pwt_dump_tables();
    assert_int_equal(pwt_migrate(), 0);
    pwt_assert_tables_unchanged(after);
}

/* A prototype's message_logs with a read_at of its own: 0009 refuses, names it, changes nothing; renamed, it applies. */
static void a_column_named_like_a_stored_time_stops_0009(void **state)
{
    (void)state;
    old_database_with_rows();
    pwt_exec("ALTER TABLE message_logs ADD COLUMN read_at text");
    pwt_exec("UPDATE message_logs SET read_at = 'by hand'");

    char *out = NULL;
    int rc = pwt_worker_command("", NULL, "migrate", &out);
    if (rc == 0 || strstr(out, "message_logs already has column(s) read_at that are not the stored times") == NULL)
        fail_msg("migrate exited %d:\n%s", rc, out);
    free(out);
    /* 0001-0008 applied, 0009 not; the column and its values are untouched */
    pwt_assert_rows("SELECT max(name) FROM schema_migrations", "0008_rollups");
    pwt_assert_rows("SELECT bsp_msg_id, read_at FROM message_logs ORDER BY 1", "wamid.OLD1|by hand\nwamid.OLD2|by hand");
    pwt_assert_rows("SELECT count(*) FROM pg_attribute WHERE attrelid = 'message_logs'::regclass"
                    " AND attname IN ('sent_at', 'delivered_at', 'failed_at')",
                    "0");

    pwt_exec("ALTER TABLE message_logs RENAME COLUMN read_at TO our_read_at");
    assert_int_equal(pwt_migrate(), 0);
    pwt_assert_rows("SELECT bsp_msg_id, our_read_at, read_at FROM message_logs ORDER BY 1",
                    "wamid.OLD1|by hand|2024-03-01 10:05:00+00\nwamid.OLD2|by hand|NULL");
}

/*
 * 0010's indexes built beforehand with the CONCURRENTLY statements of its header (run here as
 * written there): a valid one is taken as it is (renamed, not built again); one left invalid by a
 * failed build is dropped and built again, so no invalid index ends up under the name the views use.
 */
static void indexes_built_beforehand_for_0010_are_taken_or_built_again(void **state)
{
    (void)state;
    old_database_with_rows();
    assert_int_equal(pwt_migrate(), 0);
    /* back to 0009's state: its two indexes, 0010 not recorded */
    pwt_exec("DROP INDEX message_logs_sent_at");
    pwt_exec("CREATE INDEX message_logs_sent_at ON message_logs (sent_at) INCLUDE (delivered_at, read_at, failed_at)"
             " WHERE bsp_msg_id IS NOT NULL");
    pwt_exec("DROP INDEX inbound_messages_sent_day");
    pwt_exec("CREATE INDEX inbound_messages_sent_day ON inbound_messages (((sent_at AT TIME ZONE 'UTC')::date))");
    pwt_exec("DELETE FROM schema_migrations WHERE name = '0010_window_indexes'");

    char *path = pwt_repo_path("migrations/0010_window_indexes.sql");
    char *sql = path != NULL ? pwt_read_text(path) : NULL;
    if (sql == NULL)
        fail_msg("cannot read migrations/0010_window_indexes.sql");
    int built = 0;
    for (char *line = strstr(sql, "--   CREATE INDEX CONCURRENTLY"); line != NULL;
         line = strstr(line + 1, "--   CREATE INDEX CONCURRENTLY")) {
        char *end = strchr(line, '\n');
        char *stmt = pwt_xasprintf("%.*s", (int)(end != NULL ? end - line - 5 : (long)strlen(line) - 5), line + 5);
        pwt_exec(stmt); /* outside a transaction, as the header says */
        free(stmt);
        built++;
    }
    free(sql);
    free(path);
    assert_int_equal(built, 2);
    /* the inbound one as a failed CONCURRENTLY build leaves it */
    pwt_exec("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'inbound_messages_day_type'::regclass");
    char *valid_oid = pwt_rows("SELECT 'message_logs_sent_at_day'::regclass::oid");
    char *invalid_oid = pwt_rows("SELECT 'inbound_messages_day_type'::regclass::oid");

    assert_int_equal(pwt_migrate(), 0);
    pwt_assert_rows("SELECT 'message_logs_sent_at'::regclass::oid", valid_oid);
    char *gone = pwt_xasprintf("SELECT count(*) FROM pg_class WHERE oid = %s", invalid_oid);
    pwt_assert_rows(gone, "0");
    free(gone);
    pwt_assert_rows("SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE c.relname IN ('message_logs_sent_at', 'inbound_messages_sent_day') ORDER BY 1",
                    "inbound_messages_sent_day|t|CREATE INDEX inbound_messages_sent_day ON public.inbound_messages USING btree"
                    " ((((sent_at AT TIME ZONE 'UTC'::text))::date), msg_type) INCLUDE (sent_at, from_phone, from_user_id)\n"
                    "message_logs_sent_at|t|CREATE INDEX message_logs_sent_at ON public.message_logs USING btree"
                    " (sent_at, (((sent_at AT TIME ZONE 'UTC'::text))::date)) INCLUDE (delivered_at, read_at, failed_at)"
                    " WHERE (bsp_msg_id IS NOT NULL)");
    free(valid_oid);
    free(invalid_oid);
}

/* The daily views' answers, and a user's own view of a roll-up. */
#define Q_ROLLUP_ANSWERS                                                                                                           \
    "SELECT 'status', day::text, messages::text, delivered::text, read::text, failed::text FROM message_status_daily"              \
    " UNION ALL SELECT 'latency', day::text, delivered::text, avg_delivery_seconds::text, read::text, avg_read_seconds::text"      \
    " FROM message_latency_daily"                                                                                                  \
    " UNION ALL SELECT 'failures', day::text, error_code, error_title, messages::text, NULL FROM message_failures_daily"            \
    " UNION ALL SELECT 'mine', day::text, m::text, NULL, NULL, NULL FROM my_days ORDER BY 1, 2, 3"

/*
 * A database at 0013 whose roll-ups its triggers wrote, with a view of a user's over one of them:
 * 0014 renames the tables to *_folded and puts views of the same names in their place, and every
 * answer stays. The views over them, the daily ones and the user's, are defined again over the new
 * views, so they count what is pending too.
 */
static void a_database_at_0013_keeps_its_rollups_and_views_through_0014(void **state)
{
    (void)state;
    static const char *const TO_0013[] = {"0001_schema", "0002_analytics", "0003_redrive", "0004_dead_letter_key", "0005_user_ids",
                                          "0006_prune", "0007_analytics_indexes", "0008_rollups", "0009_status_times",
                                          "0010_window_indexes", "0011_gin_pending_list", "0012_rollup_in_trigger",
                                          "0013_status_instant_plpgsql"};
    pwt_db_drop();
    assert_int_equal(pwt_db_create("integration/upgrade"), 0);
    apply_migrations(TO_0013, sizeof TO_0013 / sizeof TO_0013[0]);
    exec_script(OLD_ROWS);
    pwt_exec("UPDATE message_logs SET last_error = '[{\"code\": 131026, \"title\": \"Message undeliverable\"}]',"
             " whatsapp_status = whatsapp_status || '{\"failed\": \"2024-03-01T11:01:00Z\"}' WHERE bsp_msg_id = 'wamid.OLD2'");
    pwt_exec("CREATE VIEW my_days AS SELECT day, sum(messages) AS m FROM message_status_rollup GROUP BY day");
    pwt_assert_rows("SELECT sum(messages), sum(failed) FROM message_status_rollup", "2|1"); /* the tables, written by 0013's triggers */
    char *before = pwt_rows(Q_ROLLUP_ANSWERS);

    assert_int_equal(pwt_migrate(), 0);
    pwt_assert_rows("SELECT max(name) FROM schema_migrations", "0014_rollup_fold");
    pwt_assert_rows("SELECT relname, relkind FROM pg_class WHERE relname LIKE 'message\\_%\\_rollup%' ORDER BY 1",
                    "message_failure_rollup|v\nmessage_failure_rollup_folded|r\nmessage_failure_rollup_folded_pkey|i\n"
                    "message_latency_rollup|v\nmessage_latency_rollup_folded|r\nmessage_latency_rollup_folded_pkey|i\n"
                    "message_status_rollup|v\nmessage_status_rollup_folded|r\nmessage_status_rollup_folded_pkey|i");
    pwt_assert_rows(Q_ROLLUP_ANSWERS, before);
    pwt_assert_rows(Q_ROLLUP_ANSWERS,
                    "failures|2024-03-01|131026|Message undeliverable|1|NULL\n"
                    "latency|2024-03-01|1|300.00|1|0.00\n"
                    "mine|2024-03-01|2|NULL|NULL|NULL\n"
                    "status|2024-03-01|2|1|1|1");
    free(before);
    pwt_assert_rollups_consistent();

    /* a message written now is pending, and every view counts it, the user's too */
    pwt_exec("INSERT INTO message_logs (bsp_msg_id, whatsapp_status, created_at)"
             " VALUES ('wamid.NEW1', '{\"sent\": \"2024-03-01T12:00:00Z\"}', '2024-03-01 12:00:00+00')");
    pwt_assert_rows("SELECT count(*) FROM message_rollup_pending", "1");
    pwt_assert_rows("SELECT m FROM my_days", "3");
    pwt_assert_rows("SELECT messages FROM message_status_daily", "3");
    pwt_assert_rows("SELECT pw_rollup_fold()", "1");
    pwt_assert_rows("SELECT m FROM my_days", "3");
    pwt_assert_rollups_consistent();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_database_at_0004_with_rows_upgrades_in_place),
        cmocka_unit_test(a_column_named_like_a_stored_time_stops_0009),
        cmocka_unit_test(indexes_built_beforehand_for_0010_are_taken_or_built_again),
        cmocka_unit_test(a_database_at_0013_keeps_its_rollups_and_views_through_0014),
    };
    return pwt_db_suite_run("integration/upgrade", tests);
}
