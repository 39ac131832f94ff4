/*
 * The roll-ups folded off the write path (migration 0014): a group's transaction appends the signed
 * rows of what it changed in message_logs to message_rollup_pending and writes no roll-up row;
 * pw_rollup_fold moves them into the folded roll-ups (the worker's folder every ROLLUP_FOLD_MS,
 * `worker prune`); the roll-up views and the daily views count both, so every answer is exact
 * before, during and after a fold.
 */
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

/* The message of status_sent/delivered/read.json (sent 2024-03-05T20:00:00Z, delivered 5 s, read 60 s later), and of status_failed.json. */
#define Q_DAILY "SELECT day, messages, delivered, read, failed FROM message_status_daily ORDER BY day"
#define DAILY "2024-03-05|2|1|1|1"
#define Q_LATENCY "SELECT day, delivered, avg_delivery_seconds, read, avg_read_seconds FROM message_latency_daily ORDER BY day"
#define LATENCY "2024-03-05|1|5.00|1|55.00"
#define Q_FAILURES "SELECT day, error_code, messages FROM message_failures_daily ORDER BY day, error_code"
#define FAILURES "2024-03-05|131049|1"
/* What the folded tables hold, summed over their slots. */
#define Q_FOLDED                                                                                                                   \
    "SELECT (SELECT coalesce(sum(messages), 0) || '/' || coalesce(sum(delivered), 0) || '/' || coalesce(sum(read), 0) || '/'"      \
    " || coalesce(sum(failed), 0) FROM message_status_rollup_folded) || ' ' || (SELECT coalesce(sum(n), 0)"                       \
    " FROM message_latency_rollup_folded) || ' ' || (SELECT coalesce(sum(messages), 0) FROM message_failure_rollup_folded)"

static const char *const STATUSES[] = {"meta/status_sent.json", "meta/status_delivered.json", "meta/status_read.json",
                                       "meta/status_failed.json", NULL};

static pwt_worker_t *start_worker(pwt_worker_t *w, const char *fold_ms)
{
    char *url = pwt_xasprintf("DATABASE_URL=%s", pwt_db_url());
    char *fold = pwt_xasprintf("ROLLUP_FOLD_MS=%s", fold_ms);
    if (pwt_worker_start(w, PWT_LIST("WORKER_THREADS=1", "DB_CONNECTIONS=1", url, fold)) != 0)
        fail_msg("the worker did not start");
    free(url);
    free(fold);
    return w;
}

/* The four statuses, one push (one group) each, in order. */
static void push_statuses(pwt_worker_t *w, const char *mid_prefix)
{
    for (size_t k = 0; STATUSES[k] != NULL; k++) {
        char mid[64];
        snprintf(mid, sizeof mid, "%s-%zu", mid_prefix, k);
        pwt_assert_status(pwt_push_fixture(w, STATUSES[k], mid, SUB, PUBLISH_TIME), 204);
    }
}

static void assert_answers(void)
{
    pwt_assert_rows(Q_DAILY, DAILY);
    pwt_assert_rows(Q_LATENCY, LATENCY);
    pwt_assert_rows(Q_FAILURES, FAILURES);
    pwt_assert_rollups_consistent();
}

/*
 * With the folder off, a group writes no roll-up row: each message_logs row it inserted is one
 * pending row (+1), each it updated two (-1 as it was, +1 as it is), and a failed message's error
 * is kept with it alone. The views already count them; one fold moves them all and changes no
 * answer; a second has nothing to fold.
 */
static void a_group_appends_to_the_pending_rows_and_a_fold_moves_them(void **state)
{
    (void)state;
    pwt_truncate_all();
    pwt_worker_t w;
    push_statuses(start_worker(&w, "0"), "pend");
    assert_int_equal(pwt_worker_stop(&w), 0);

    pwt_assert_rows(Q_FOLDED, "0/0/0/0 0 0");
    pwt_assert_rows("SELECT sign, sent_at, delivered_at IS NOT NULL, read_at IS NOT NULL, failed_at IS NOT NULL,"
                    " last_error->0->>'code' FROM message_rollup_pending ORDER BY ctid",
                    "1|2024-03-05 20:00:00+00|f|f|f|NULL\n"
                    "-1|2024-03-05 20:00:00+00|f|f|f|NULL\n"
                    "1|2024-03-05 20:00:00+00|t|f|f|NULL\n"
                    "-1|2024-03-05 20:00:00+00|t|f|f|NULL\n"
                    "1|2024-03-05 20:00:00+00|t|t|f|NULL\n"
                    "1|2024-03-05 20:05:00+00|f|f|t|131049");
    /* the views read them in slot -1 */
    pwt_assert_rows("SELECT slot, messages, delivered, read, failed FROM message_status_rollup", "-1|2|1|1|1");
    assert_answers();

    pwt_assert_rows("SELECT pw_rollup_fold()", "6");
    pwt_assert_rows("SELECT count(*) FROM message_rollup_pending", "0");
    pwt_assert_rows(Q_FOLDED, "2/1/1/1 3 1");
    pwt_assert_rows("SELECT count(*) FROM message_status_rollup WHERE slot = -1", "0");
    assert_answers();
    pwt_assert_rows("SELECT pw_rollup_fold()", "0");
    assert_answers();
}

/* Opens a connection to the test database, or fails. */
static PGconn *connect_or_fail(void)
{
    PGconn *c = PQconnectdb(pwt_db_url());
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("cannot connect: %s", PQerrorMessage(c));
    return c;
}

static char *scalar_on(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    char *v = pwt_xstrdup(PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return v;
}

/*
 * A fold holds the folded roll-up rows of its days until it commits, and no push waits for it:
 * pushes of the same day are committed meanwhile (a second fold returns 0 at once rather than
 * waiting), the views count each row once whether it is folded, being folded, or pending, and a
 * fold that is rolled back leaves its rows pending.
 */
static void pushes_and_a_second_fold_do_not_wait_for_a_fold_in_progress(void **state)
{
    (void)state;
    pwt_truncate_all();
    pwt_worker_t w;
    start_worker(&w, "0");
    pwt_assert_status(pwt_push_fixture(&w, "meta/status_sent.json", "hold-0", SUB, PUBLISH_TIME), 204);
    pwt_assert_status(pwt_push_fixture(&w, "meta/status_failed.json", "hold-1", SUB, PUBLISH_TIME), 204);

    /* a fold that is rolled back folds nothing */
    PGconn *a = connect_or_fail();
    free(scalar_on(a, "BEGIN"));
    char *n = scalar_on(a, "SELECT pw_rollup_fold()");
    assert_string_equal(n, "2");
    free(n);
    free(scalar_on(a, "ROLLBACK"));
    pwt_assert_rows("SELECT count(*) FROM message_rollup_pending", "2");
    pwt_assert_rows(Q_FOLDED, "0/0/0/0 0 0");

    /* one in progress, holding the 2024-03-05 rows of its slot */
    free(scalar_on(a, "BEGIN"));
    n = scalar_on(a, "SELECT pw_rollup_fold()");
    assert_string_equal(n, "2");
    free(n);
    PGconn *b = connect_or_fail();
    free(scalar_on(b, "SET statement_timeout = '2s'"));
    n = scalar_on(b, "SELECT pw_rollup_fold()");
    assert_string_equal(n, "0");
    free(n);
    /* the worker's lock timeout is 1 s: a push that waited on a roll-up row would be answered 503 */
    pwt_assert_status(pwt_push_fixture(&w, "meta/status_delivered.json", "hold-2", SUB, PUBLISH_TIME), 204);
    pwt_assert_status(pwt_push_fixture(&w, "meta/status_read.json", "hold-3", SUB, PUBLISH_TIME), 204);
    /* the fold's rows are still pending to everyone else; the new ones too */
    pwt_assert_rows("SELECT count(*) FROM message_rollup_pending", "6");
    assert_answers();
    free(scalar_on(a, "COMMIT"));
    pwt_assert_rows("SELECT count(*) FROM message_rollup_pending", "4");
    pwt_assert_rows(Q_FOLDED, "2/0/0/1 0 1");
    assert_answers();
    n = scalar_on(b, "SELECT pw_rollup_fold()");
    assert_string_equal(n, "4");
    free(n);
    pwt_assert_rows(Q_FOLDED, "2/1/1/1 3 1");
    assert_answers();
    PQfinish(a);
    PQfinish(b);
    assert_int_equal(pwt_worker_stop(&w), 0);
}

/* The worker folds on its own every ROLLUP_FOLD_MS, and counts what it folded in /metrics. */
static void the_worker_folds_every_interval(void **state)
{
    (void)state;
    pwt_truncate_all();
    pwt_worker_t w;
    push_statuses(start_worker(&w, "100"), "auto");
    pwt_wait_metric(&w, "pushworker_rollup_folded_rows_total", 6);
    pwt_assert_rows("SELECT count(*) FROM message_rollup_pending", "0");
    pwt_assert_rows(Q_FOLDED, "2/1/1/1 3 1");
    assert_answers();
    assert_int_equal(pwt_metric(&w, "pushworker_rollup_fold_errors_total"), 0);
    assert_int_equal(pwt_worker_stop(&w), 0);
}

/* While pw_rollup_fold fails (here: it is not there), pushes are committed, the rows stay pending, the views count them, and the failure is counted and logged once. */
static void a_failing_fold_loses_nothing(void **state)
{
    (void)state;
    pwt_truncate_all();
    pwt_exec("ALTER FUNCTION pw_rollup_fold() RENAME TO pw_rollup_fold_away");
    pwt_worker_t w;
    push_statuses(start_worker(&w, "50"), "fail");
    pwt_wait_metric_at_least(&w, "pushworker_rollup_fold_errors_total", 3);
    pwt_assert_rows("SELECT count(*) FROM message_rollup_pending", "6");
    assert_answers();
    char *log = pwt_worker_log(&w);
    const char *first = strstr(log, "the database lacks migration 0014 (run worker migrate)");
    if (first == NULL || strstr(first + 1, "the database lacks migration 0014") != NULL)
        fail_msg("expected the failure logged once:\n%s", log);
    free(log);
    pwt_exec("ALTER FUNCTION pw_rollup_fold_away() RENAME TO pw_rollup_fold");
    pwt_wait_metric(&w, "pushworker_rollup_folded_rows_total", 6);
    pwt_assert_rows(Q_FOLDED, "2/1/1/1 3 1");
    assert_answers();
    assert_int_equal(pwt_worker_stop(&w), 0);
    log = pwt_worker_log(&w);
    if (strstr(log, "roll-up fold: working again (6 rows folded)") == NULL)
        fail_msg("expected the recovery logged:\n%s", log);
    free(log);
}

/* `worker prune` folds too (a deployment may run its workers with ROLLUP_FOLD_MS=0); --dry-run counts. */
static void prune_folds_the_pending_rows(void **state)
{
    (void)state;
    pwt_truncate_all();
    pwt_worker_t w;
    push_statuses(start_worker(&w, "0"), "prune");
    assert_int_equal(pwt_worker_stop(&w), 0);
    char *out = NULL;
    int rc = pwt_worker_command("", NULL, "prune --dry-run", &out);
    if (rc != 0 || strstr(out, "prune: message_rollup_pending: 6 would be folded\n") == NULL)
        fail_msg("prune --dry-run exited %d:\n%s", rc, out);
    free(out);
    pwt_assert_rows("SELECT count(*) FROM message_rollup_pending", "6");
    rc = pwt_worker_command("", NULL, "prune", &out);
    if (rc != 0 || strstr(out, "prune: message_rollup_pending: 6 folded\n") == NULL)
        fail_msg("prune exited %d:\n%s", rc, out);
    free(out);
    pwt_assert_rows("SELECT count(*) FROM message_rollup_pending", "0");
    pwt_assert_rows(Q_FOLDED, "2/1/1/1 3 1");
    assert_answers();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_group_appends_to_the_pending_rows_and_a_fold_moves_them),
        cmocka_unit_test(pushes_and_a_second_fold_do_not_wait_for_a_fold_in_progress),
        cmocka_unit_test(the_worker_folds_every_interval),
        cmocka_unit_test(a_failing_fold_loses_nothing),
        cmocka_unit_test(prune_folds_the_pending_rows),
    };
    return pwt_suite_run("fold", NULL, NULL, tests);
}
