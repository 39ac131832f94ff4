/*
 * The write statement reaches every table by key, never by reading it whole.
 *
 * The worker prepares its statement once per connection and runs it with a generic plan. That
 * plan is made at the connection's first group, perhaps while the tables are empty, when a
 * sequential scan costs the planner nothing; it then stays for the connection's life while the
 * tables grow, and every group pays for a read of the whole table (a receipts table of millions
 * of rows read once per group). So these tests start a worker on emptied tables, send it every
 * kind of push (statuses, inbound messages with contacts, a redelivery, a dead letter), run
 * `worker redrive`, and read PostgreSQL's own count of sequential scans (pg_stat_user_tables,
 * flushed when the worker's backends exit): it must not move on any table the statement writes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/harness.h"
#include "tests/integration/util.h"

#define SUB "projects/p/subscriptions/s"
#define PUBLISH_TIME "2024-03-06T05:00:00Z"

/* The tables the write statement touches. */
#define TABLES "'pubsub_receipts', 'status_events', 'message_logs', 'inbound_messages', 'contacts', 'dead_letters'"
#define Q_SEQ_SCANS "SELECT relname || ' ' || seq_scan FROM pg_stat_user_tables WHERE relname IN (" TABLES ") ORDER BY relname"

/* Every fixture of tests/fixtures/meta and aisensy that the worker stores (statuses, inbound, contacts). */
static const char *const FIXTURES[] = {
    "meta/status_sent.json", "meta/status_delivered.json", "meta/status_read.json", "meta/status_failed.json",
    "meta/statuses_batch.json", "meta/status_played.json", "meta/image_caption.json", "meta/messages_same_contact.json",
    "meta/interactive_button_reply.json", "meta/reaction.json", "meta/bsuid_text_from_username_user.json",
    "meta/bsuid_status_delivered_to_user_id.json", "meta/bsuid_status_delivered_to_phone.json",
};
#define N_FIXTURES (sizeof FIXTURES / sizeof FIXTURES[0])

/*
 * Waits until no other client backend is connected to the test database (a backend flushes its
 * statistics when it exits), then has the checker's own connection flush what its earlier checks
 * counted (pg_stat_force_next_flush: at its next idle moment, which comes before the next query).
 */
static void wait_for_backends_to_exit(void)
{
    for (int i = 0; i < 100; i++) {
        if (pwt_scalar_int("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                           " AND backend_type = 'client backend' AND pid <> pg_backend_pid()") == 0) {
            pwt_exec("SELECT pg_stat_force_next_flush()");
            pwt_exec("SELECT pg_stat_clear_snapshot()");
            return;
        }
        pwt_sleep_ms(50);
    }
    char *who = pwt_rows("SELECT pid, application_name, state, left(query, 60) FROM pg_stat_activity"
                         " WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()");
    pwt_fail(__FILE__, __LINE__, "the worker's database connections did not end within 5 s:\n%s", who);
}

/* The counts as "relname n" lines; the listed tables, each once. */
static char *seq_scans(void)
{
    pwt_exec("SELECT pg_stat_clear_snapshot()");
    return pwt_rows(Q_SEQ_SCANS);
}

static void serve_on_empty_tables_never_scans_a_table_whole(void **state)
{
    (void)state;
    pwt_worker_t w = {0};
    pwt_truncate_all();
    wait_for_backends_to_exit();
    char *before = seq_scans();
    /* One loop and one connection, straight to PostgreSQL (also in tests/run's PgBouncer pass: through a
       pooler the statement is sent unprepared and planned afresh each time, and the pooler's server
       connections outlive the worker): the first group prepares the statement on empty tables. */
    char *url = pwt_xasprintf("DATABASE_URL=%s", pwt_db_url());
    if (pwt_worker_start(&w, PWT_LIST("WORKER_THREADS=1", "DB_CONNECTIONS=1", "DB_POOLER=none", url)) != 0)
        fail_msg("the worker did not start");
    free(url);
    for (size_t k = 0; k < N_FIXTURES; k++) {
        char mid[32];
        snprintf(mid, sizeof mid, "plan-%zu", k);
        pwt_assert_status(pwt_push_fixture(&w, FIXTURES[k], mid, SUB, PUBLISH_TIME), 204);
        pwt_assert_status(pwt_push_fixture(&w, FIXTURES[k], mid, SUB, PUBLISH_TIME), 204); /* a redelivery */
    }
    const char *bad = "{\"message\":{\"data\":\"!!!!\",\"messageId\":\"plan-bad\"},\"subscription\":\"" SUB "\"}";
    pwt_assert_status(pwt_post(&w, "/", bad, strlen(bad), NULL, NULL), 204); /* kept as a dead letter */
    assert_int_equal(pwt_worker_stop(&w), 0);
    wait_for_backends_to_exit();
    char *after = seq_scans();
    pwt_assert_text(after, before);
    /* and the pushes were written (so the statement did run every part) */
    pwt_assert_rows("SELECT count(*) > 0 FROM status_events", "t");
    pwt_assert_rows("SELECT count(*) > 0 FROM inbound_messages", "t");
    pwt_assert_rows("SELECT count(*) > 0 FROM contacts", "t");
    pwt_assert_rows("SELECT count(*) FROM dead_letters", "1");
    char *want = pwt_xasprintf("%zu", N_FIXTURES + 1);
    pwt_assert_rows("SELECT count(*) FROM pubsub_receipts", want);
    free(want);
    free(before);
    free(after);
}

/*
 * `worker redrive` writes through the same statement (its receipt update and its dead-letter mark
 * included); how it reads its backlog of dead letters is its own business, not checked here.
 */
static void redrive_reaches_rows_by_key(void **state)
{
    (void)state;
    pwt_truncate_all();
    char *good = pwt_wrap_fixture("meta/status_read.json", "7001", SUB, PUBLISH_TIME);
    free(pwt_rows_p("INSERT INTO dead_letters (subscription, message_id, reason, body) VALUES"
                    " ($1, '7001', 'payload: unsupported format (pushworker 0.1)', convert_to($2, 'UTF8'))",
                    PWT_LIST(SUB, good)));
    pwt_exec("INSERT INTO pubsub_receipts (subscription, message_id, publish_time, outcome) VALUES"
             " ('" SUB "', '7001', '" PUBLISH_TIME "', 'dead_letter')");
    free(good);
    wait_for_backends_to_exit();
    char *before = seq_scans();
    char *out = NULL;
    int status = pwt_worker_command("", NULL, "redrive", &out);
    if (status != 0)
        pwt_fail(__FILE__, __LINE__, "redrive exited %d:\n%s", status, out);
    pwt_assert_contains(out, "redrive: 1 examined, 1 written, 0 still rejected, 0 failed to write");
    free(out);
    wait_for_backends_to_exit();
    /* dead_letters apart: redrive reads its backlog as it likes */
    pwt_exec("CREATE TEMP TABLE before_scans (line text)");
    free(pwt_rows_p("INSERT INTO before_scans SELECT unnest(string_to_array($1, E'\\n'))", PWT_LIST(before)));
    pwt_assert_rows("SELECT s.relname, s.seq_scan - split_part(b.line, ' ', 2)::bigint FROM pg_stat_user_tables s"
                    " JOIN before_scans b ON split_part(b.line, ' ', 1) = s.relname WHERE s.relname <> 'dead_letters' ORDER BY 1",
                    "contacts|0\ninbound_messages|0\nmessage_logs|0\npubsub_receipts|0\nstatus_events|0");
    pwt_exec("DROP TABLE before_scans");
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts", "7001|stored");
    pwt_assert_rows("SELECT message_id, redriven_at IS NOT NULL FROM dead_letters", "7001|t");
    free(before);
}

/* Calls of message_logs' roll-up trigger function counted so far (track_functions, flushed when a
   backend exits); and, in *apply, of pw_rollup_apply. */
static long long rollup_trigger_calls(long long *apply)
{
    pwt_exec("SELECT pg_stat_clear_snapshot()");
    *apply = pwt_scalar_int("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = 'pw_rollup_apply'");
    return pwt_scalar_int("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = 'pw_rollup_trigger'");
}

/* Sends the pushes of fixtures (NULL-terminated; "bad": a push that is kept as a dead letter) to a
   worker of its own, stops it, and returns how many more calls the roll-up trigger got (and, in
   *apply, pw_rollup_apply). */
static long long rollup_calls_for(const char *const *fixtures, const char *mid_prefix, long long *apply)
{
    wait_for_backends_to_exit();
    long long apply_before;
    long long before = rollup_trigger_calls(&apply_before);
    pwt_worker_t w = {0};
    char *url = pwt_xasprintf("DATABASE_URL=%s", pwt_db_url());
    if (pwt_worker_start(&w, PWT_LIST("WORKER_THREADS=1", "DB_CONNECTIONS=1", "DB_POOLER=none", url)) != 0)
        fail_msg("the worker did not start");
    free(url);
    for (size_t k = 0; fixtures[k] != NULL; k++) {
        char mid[64];
        snprintf(mid, sizeof mid, "%s-%zu", mid_prefix, k);
        if (strcmp(fixtures[k], "bad") == 0) {
            char *bad = pwt_xasprintf("{\"message\":{\"data\":\"!!!!\",\"messageId\":\"%s\"},\"subscription\":\"" SUB "\"}", mid);
            pwt_assert_status(pwt_post(&w, "/", bad, strlen(bad), NULL, NULL), 204);
            free(bad);
        } else {
            pwt_assert_status(pwt_push_fixture(&w, fixtures[k], mid, SUB, PUBLISH_TIME), 204);
        }
    }
    assert_int_equal(pwt_worker_stop(&w), 0);
    wait_for_backends_to_exit();
    long long calls = rollup_trigger_calls(apply);
    *apply -= apply_before;
    return calls - before;
}

/* Every table the statement and its triggers write, with its row count. */
#define Q_WRITTEN                                                                                                              \
    "SELECT (SELECT count(*) FROM pubsub_receipts) || ' ' || (SELECT count(*) FROM status_events) || ' '"                     \
    " || (SELECT count(*) FROM message_logs) || ' ' || (SELECT count(*) FROM inbound_messages) || ' '"                         \
    " || (SELECT count(*) FROM contacts) || ' ' || (SELECT count(*) FROM dead_letters) || ' '"                                 \
    " || (SELECT count(*) FROM message_status_rollup) || ' ' || (SELECT count(*) FROM message_latency_rollup) || ' '"          \
    " || (SELECT count(*) FROM message_failure_rollup)"

/*
 * A new connection runs the statement once, with every array empty, as soon as it is ready and
 * has nothing else to do, then the variants of its warm list (statuses; inbound messages with
 * contacts; both; statuses with contacts), one a turn (the warm-up): the server then builds their
 * plans, loads its caches and compiles the trigger functions before later pushes wait for them.
 * Each run that has the statuses section fires the statement triggers of message_logs (its INSERT
 * and its UPDATE of ON CONFLICT DO UPDATE: 2 calls of the roll-up function), so 4 x 2, and the
 * warm-up writes nothing. (The harness waits until the warm-up is done before it starts a test.)
 *
 * Then: a group runs the statement without the sections it has no rows for. Starting a section
 * costs the server even with no rows: each of its writing CTEs opens its table and indexes, and
 * fires its statement triggers, such as message_logs' roll-up trigger on empty transition
 * tables. So pushes with no status (inbound messages with their contacts, a dead letter) call the
 * roll-up function no more than a worker that gets no push; one status calls it twice more,
 * which shows that the count counts. And since 0012 the trigger writes the roll-ups in one
 * statement of its own, without calling pw_rollup_apply (which 0009's trigger called every time).
 */
static void a_group_runs_only_the_sections_it_has_rows_for(void **state)
{
    (void)state;
    pwt_truncate_all();
    pwt_exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET track_functions = ''pl''', current_database()); END $$");
    static const char *const nothing[] = {NULL};
    long long apply[3];
    long long at_start = rollup_calls_for(nothing, "sections-none", &apply[0]);
    printf("# roll-up trigger calls of a worker that got no push: %lld (pw_rollup_apply: %lld)\n", at_start, apply[0]);
    pwt_assert_rows(Q_WRITTEN, "0 0 0 0 0 0 0 0 0");
    static const char *const no_status[] = {"meta/image_caption.json", "meta/interactive_button_reply.json", "bad", NULL};
    long long calls = rollup_calls_for(no_status, "sections-in", &apply[1]);
    printf("# ... for 2 inbound messages and 1 dead letter (3 groups): %lld (%lld)\n", calls, apply[1]);
    static const char *const one_status[] = {"meta/status_sent.json", NULL};
    long long status_calls = rollup_calls_for(one_status, "sections-st", &apply[2]);
    printf("# ... for 1 status (1 group): %lld (%lld)\n", status_calls, apply[2]);
    pwt_exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET track_functions', current_database()); END $$");
    assert_int_equal(at_start, 8);
    assert_int_equal(calls, at_start);
    assert_int_equal(status_calls, at_start + 2);
    /* The triggers write the roll-ups themselves (0012), with no call of pw_rollup_apply each. */
    assert_int_equal(apply[0] + apply[1] + apply[2], 0);
    /* receipts, status events, messages, inbound, contacts (two senders), dead letters, one status roll-up row */
    pwt_assert_rows(Q_WRITTEN, "4 1 1 2 2 1 1 0 0");
}

/* Test triggers: a statement on status_events that inserted rows, and any INSERT statement on
   dead_letters (a table a group of statuses does not touch, which the warm-up's statement does), each
   noted in test_order in the order the server ran them; or with fail, an error instead of the note. */
static void add_test_triggers(int fail)
{
    pwt_exec("SET client_min_messages = warning");
    pwt_exec("DROP TABLE IF EXISTS test_order");
    pwt_exec("DROP FUNCTION IF EXISTS test_note() CASCADE");
    pwt_exec("CREATE TABLE test_order (n bigserial PRIMARY KEY, what text NOT NULL)");
    char *fn = pwt_xasprintf("CREATE FUNCTION test_note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN %s RETURN NULL; END $$",
                             fail ? "IF TG_TABLE_NAME = 'dead_letters' THEN RAISE EXCEPTION 'test trigger: no dead letters';"
                                    " END IF;"
                                  : "INSERT INTO test_order (what) SELECT TG_TABLE_NAME"
                                    " WHERE TG_TABLE_NAME = 'dead_letters' OR EXISTS (SELECT FROM new_rows);");
    pwt_exec(fn);
    free(fn);
    pwt_exec("CREATE TRIGGER test_note AFTER INSERT ON status_events REFERENCING NEW TABLE AS new_rows"
             " FOR EACH STATEMENT EXECUTE FUNCTION test_note()");
    pwt_exec("CREATE TRIGGER test_note AFTER INSERT ON dead_letters REFERENCING NEW TABLE AS new_rows"
             " FOR EACH STATEMENT EXECUTE FUNCTION test_note()");
}

static void drop_test_triggers(void)
{
    pwt_exec("DROP FUNCTION test_note() CASCADE");
    pwt_exec("DROP TABLE test_order");
    pwt_exec("RESET client_min_messages");
}

/*
 * The warm-up never goes ahead of pushes: a push that waited for the connection to come up is
 * written first, and pays only its own part of a new session's work (BENCHMARKS.md: exec to first
 * ack). Here the connection's PREPARE waits on a lock while a status push comes in; the test
 * triggers then show the order in which the server ran the push's group and the warm-up.
 */
static void a_push_that_waited_for_the_connection_goes_before_the_warm_up(void **state)
{
    (void)state;
    pwt_truncate_all();
    add_test_triggers(0);
    pwt_exec("BEGIN");
    pwt_exec("LOCK TABLE pubsub_receipts IN ACCESS EXCLUSIVE MODE");
    pwt_worker_t w = {0};
    char *url = pwt_xasprintf("DATABASE_URL=%s", pwt_db_url());
    if (pwt_worker_start_at(&w, 0, "/livez", PWT_LIST("WORKER_THREADS=1", "DB_CONNECTIONS=1", "DB_POOLER=none", url)) != 0)
        fail_msg("the worker did not start");
    free(url);
    pwt_bg_post_t push;
    pwt_bg_post_start(&push, &w, pwt_wrap_fixture("meta/status_sent.json", "order-1", SUB, PUBLISH_TIME));
    pwt_wait_metric(&w, "pushworker_in_flight_pushes", 1);
    pwt_assert_rows("SELECT count(*) FROM test_order", "0");
    pwt_exec("COMMIT");
    pwt_assert_status(pwt_bg_post_join(&push), 204);
    for (int i = 0; i < 100 && pwt_scalar_int("SELECT count(*) FROM test_order") < 2; i++)
        pwt_sleep_ms(50); /* the warm-up comes after the answer */
    pwt_assert_rows("SELECT string_agg(what, ' ' ORDER BY n) FROM test_order", "status_events dead_letters");
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts", "order-1|stored");
    assert_int_equal(pwt_worker_stop(&w), 0);
    drop_test_triggers();
}

/*
 * The warm-up only spares the first groups work: when it fails (here the test trigger on
 * dead_letters raises an error), the failure is logged and counted, the connection stays, and
 * pushes are written.
 */
static void a_warm_up_that_fails_costs_no_push(void **state)
{
    (void)state;
    pwt_truncate_all();
    add_test_triggers(1);
    pwt_worker_t w = {0};
    char *url = pwt_xasprintf("DATABASE_URL=%s", pwt_db_url());
    if (pwt_worker_start(&w, PWT_LIST("WORKER_THREADS=1", "DB_CONNECTIONS=1", "DB_POOLER=none", url)) != 0)
        fail_msg("the worker did not start");
    free(url);
    /* (pwt_worker_start has waited for the end of the warm-up: this line, here) */
    char *log = pwt_worker_log(&w);
    pwt_assert_contains(log, "database: warming up the statement failed (P0001: test trigger: no dead letters)");
    free(log);
    pwt_assert_status(pwt_push_fixture(&w, "meta/status_delivered.json", "warm-1", SUB, PUBLISH_TIME), 204);
    pwt_assert_rows("SELECT message_id, outcome FROM pubsub_receipts", "warm-1|stored");
    pwt_assert_rows("SELECT current_status FROM message_logs", "delivered");
    assert_int_equal(pwt_metric(&w, "pushworker_db_errors_total"), 1);
    assert_int_equal(pwt_metric(&w, "pushworker_db_reconnects_total"), 0);
    pwt_response_t r;
    pwt_assert_status(pwt_get(&w, "/readyz", &r), 200);
    pwt_response_free(&r);
    assert_int_equal(pwt_worker_stop(&w), 0);
    drop_test_triggers();
}

/*
 * The guide's GIN index on message_logs.whatsapp_status (0001) keeps the entries of new row versions
 * in a pending list and moves them into the index proper when the list passes the index's
 * gin_pending_list_limit, inside whichever write passes it. With PostgreSQL's 4 MB that was one
 * group in about 41,000 pushes taking 45-70 ms instead of 2 (600-700 kB of WAL for a few dozen rows),
 * and every push behind it waiting: the paced benchmark's "stall" at 13.8 s (BENCHMARKS.md). 0011
 * gives the index a 256 kB list, so the same work comes in steps sixteen times smaller. Here 10,000
 * statuses of new messages, through the worker, leave about 0.55 MB of entries: more than 256 kB and
 * less than 4 MB, so the list must have been emptied on the way (autovacuum, which also empties it,
 * is off for the table meanwhile).
 */
#define GIN_PUSHES 100
#define GIN_STATUSES 100
#define Q_GIN_PENDING "SELECT pending_pages FROM pgstatginindex('idx_message_logs_whatsapp_status')"
static void the_gin_index_moves_its_pending_list_in_small_steps(void **state)
{
    (void)state;
    pwt_truncate_all();
    pwt_exec("CREATE EXTENSION IF NOT EXISTS pgstattuple");
    pwt_exec("ALTER TABLE message_logs SET (autovacuum_enabled = off)");
    pwt_worker_t w = {0};
    char *url = pwt_xasprintf("DATABASE_URL=%s", pwt_db_url());
    if (pwt_worker_start(&w, PWT_LIST("WORKER_THREADS=1", "DB_CONNECTIONS=1", url)) != 0)
        fail_msg("the worker did not start");
    free(url);
    for (int p = 0; p < GIN_PUSHES; p++) {
        char *statuses = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&statuses, &len);
        assert_non_null(f);
        for (int i = 0; i < GIN_STATUSES; i++)
            fprintf(f, "%s{\"id\":\"wamid.gin.%02d.%03d\",\"status\":\"sent\",\"timestamp\":\"%d\",\"recipient_id\":\"9198765%05d\"}",
                    i > 0 ? "," : "", p, i, 1709701200 + p * GIN_STATUSES + i, p * GIN_STATUSES + i);
        fclose(f);
        char *members = pwt_xasprintf("\"statuses\":[%s]", statuses);
        char *webhook = pwt_meta_webhook(members);
        char mid[32];
        snprintf(mid, sizeof mid, "gin-%02d", p);
        pwt_assert_status(pwt_push(&w, webhook, strlen(webhook), mid, SUB, PUBLISH_TIME), 204);
        free(webhook);
        free(members);
        free(statuses);
    }
    assert_int_equal(pwt_worker_stop(&w), 0);
    long long pending = pwt_scalar_int(Q_GIN_PENDING);
    pwt_exec("ALTER TABLE message_logs RESET (autovacuum_enabled)");
    pwt_assert_rows("SELECT count(*) FROM message_logs", "10000");
    printf("# GIN pending list after %d statuses: %lld pages\n", GIN_PUSHES * GIN_STATUSES, pending);
    assert_in_range(pending, 0, 256 / 8 + 1); /* 8 kB pages; the one being filled may pass the limit */
    pwt_assert_rows("SELECT reloptions::text FROM pg_class WHERE relname = 'idx_message_logs_whatsapp_status'",
                    "{gin_pending_list_limit=256}");
}

/*
 * PostgreSQL keeps no plan for the expressions it stores with a table's rows: at every statement
 * that writes the table it reads its generated columns, CHECK constraints and trigger conditions
 * back from the catalog and plans them again. Planning an expression inlines each LANGUAGE sql
 * function it calls, by parsing and analysing the function's text: 0009's stored times called
 * pw_status_instant, a SQL function, and each group of pushes parsed it once per stored column
 * (23% of the server's time for a group of one push; 0013 made it PL/pgSQL, which is compiled once
 * per session). So none of these expressions may call a SQL function, on any table of the schema;
 * and pw_status_instant keeps pw_status_time's answers.
 */
#define Q_SQL_CALLS_PLANNED_PER_STATEMENT                                                                                      \
    "SELECT c.relname || ' ' || x.what || ' calls ' || p.proname FROM ("                                                       \
    " SELECT d.adrelid AS rel, 'column ' || a.attname AS what, dep.refobjid AS fn"                                            \
    " FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"                                  \
    " JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid AND dep.refclassid = 'pg_proc'::regclass" \
    " WHERE a.attgenerated = 's'"                                                                                              \
    " UNION ALL SELECT k.conrelid, 'constraint ' || k.conname, dep.refobjid FROM pg_constraint k"                              \
    " JOIN pg_depend dep ON dep.classid = 'pg_constraint'::regclass AND dep.objid = k.oid AND dep.refclassid = 'pg_proc'::regclass" \
    " WHERE k.contype = 'c'"                                                                                                   \
    " UNION ALL SELECT t.tgrelid, 'trigger ' || t.tgname, dep.refobjid FROM pg_trigger t"                                      \
    " JOIN pg_depend dep ON dep.classid = 'pg_trigger'::regclass AND dep.objid = t.oid AND dep.refclassid = 'pg_proc'::regclass" \
    " WHERE t.tgqual IS NOT NULL AND dep.refobjid <> t.tgfoid"                                                                 \
    ") x JOIN pg_class c ON c.oid = x.rel JOIN pg_proc p ON p.oid = x.fn JOIN pg_language l ON l.oid = p.prolang"            \
    " WHERE c.relnamespace = 'public'::regnamespace AND l.lanname = 'sql' ORDER BY 1"
static void no_expression_planned_at_every_write_calls_a_sql_function(void **state)
{
    (void)state;
    pwt_assert_rows(Q_SQL_CALLS_PLANNED_PER_STATEMENT, "");
    /* the query sees what it looks for: the stored times do call pw_status_instant */
    pwt_assert_rows("SELECT count(DISTINCT d.adnum) FROM pg_attrdef d JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass"
                    " AND dep.objid = d.oid AND dep.refobjid = 'pw_status_instant'::regproc"
                    " WHERE d.adrelid = 'message_logs'::regclass",
                    "4");
    /* the worker's times, other ISO-8601 times with a zone, text that is no time, NULL */
    pwt_assert_rows("SELECT count(*), count(*) FILTER (WHERE pw_status_instant(t) IS NOT DISTINCT FROM pw_status_time(t)),"
                    " count(pw_status_instant(t))"
                    " FROM unnest(ARRAY['2024-03-06T05:00:01Z', '2024-02-29T23:59:59Z', '2024-03-06T05:00:01.5+05:30',"
                    " '2024-03-06 05:00:01-02', '2024-03-06T05:00:01', 'yesterday', '', NULL]) t",
                    "8|8|4");
    /* and a worker-shaped but impossible time is refused, as before */
    pwt_exec("DO $$ BEGIN PERFORM pw_status_instant('2024-13-01T00:00:00Z'); RAISE EXCEPTION 'an impossible time was accepted';"
             " EXCEPTION WHEN datetime_field_overflow THEN NULL; END $$");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(serve_on_empty_tables_never_scans_a_table_whole),
        cmocka_unit_test(redrive_reaches_rows_by_key),
        cmocka_unit_test(a_group_runs_only_the_sections_it_has_rows_for),
        cmocka_unit_test(a_push_that_waited_for_the_connection_goes_before_the_warm_up),
        cmocka_unit_test(a_warm_up_that_fails_costs_no_push),
        cmocka_unit_test(the_gin_index_moves_its_pending_list_in_small_steps),
        cmocka_unit_test(no_expression_planned_at_every_write_calls_a_sql_function),
    };
    return pwt_suite_run("plan", NULL, NULL, tests);
}
