/* `worker prune`: old receipts and old redriven dead letters go, status events only when asked, in batches; nothing else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>

#include "tests/integration/harness.h"
#include "tests/integration/util.h"

#define SUB "projects/p/subscriptions/s"

static pwt_worker_t worker;

/* `$PW_WORKER prune ARGS` against the test database; its exit status, its output (stdout and stderr) in *out. */
static int prune(const char *args, char **out)
{
    char *cmd_args = pwt_xasprintf("prune %s", args);
    int status = pwt_worker_command("", NULL, cmd_args, out);
    free(cmd_args);
    return status;
}

/*
 * Rows of known ages (received_at = now() - age: the run's cut-off is a moment later, and no age is within a day of
 * one). Receipts r40 and r36 are older than the default 35 days, r34 and r1 are not. Dead letters: d40 was redriven
 * 40 days ago (goes by default), d10 10 days ago (stays), d400 was received 400 days ago and never redriven (stays
 * whatever its age). Status events received 400, 100 and 1 days ago.
 */
static void seed(void)
{
    pwt_exec("INSERT INTO pubsub_receipts (subscription, message_id, publish_time, outcome, received_at) VALUES"
             " ('" SUB "', 'r40', now() - interval '40 days', 'stored', now() - interval '40 days'),"
             " ('" SUB "', 'r36', NULL, 'duplicate', now() - interval '36 days'),"
             " ('" SUB "', 'r34', NULL, 'stored', now() - interval '34 days'),"
             " ('" SUB "', 'r1', NULL, 'dead_letter', now() - interval '1 day')");
    pwt_exec("INSERT INTO dead_letters (subscription, message_id, reason, body, received_at, redriven_at) VALUES"
             " ('" SUB "', 'd40', 'payload: x', '\\x01', now() - interval '50 days', now() - interval '40 days'),"
             " ('" SUB "', 'd10', 'payload: x', '\\x02', now() - interval '50 days', now() - interval '10 days'),"
             " ('" SUB "', 'd400', 'envelope: x', '\\x03', now() - interval '400 days', NULL)");
    pwt_exec("INSERT INTO status_events (bsp_msg_id, status, occurred_at, received_at) VALUES"
             " ('wamid.E400', 'sent', now() - interval '400 days', now() - interval '400 days'),"
             " ('wamid.E100', 'sent', now() - interval '100 days', now() - interval '100 days'),"
             " ('wamid.E1', 'sent', now() - interval '1 day', now() - interval '1 day')");
}

#define Q_RECEIPTS "SELECT message_id FROM pubsub_receipts ORDER BY received_at"
#define Q_DEAD "SELECT message_id, redriven_at IS NOT NULL FROM dead_letters ORDER BY id"
#define Q_EVENTS "SELECT bsp_msg_id FROM status_events ORDER BY id"

static void defaults_remove_old_receipts_and_old_redriven_dead_letters_only(void **state)
{
    (void)state;
    seed();
    char *out;
    assert_int_equal(prune("", &out), 0);
    pwt_assert_contains(out, "prune: pubsub_receipts: 2 deleted\n");
    pwt_assert_contains(out, "prune: dead_letters: 1 deleted\n");
    pwt_assert_contains(out, "prune: status_events: kept (--status-events-older-than off)\n");
    pwt_assert_contains(out, "(older than 35d), 5000 per transaction, pausing between them\n");
    pwt_assert_contains(out, "(older than 30d), 5000 per transaction, pausing between them\n");
    free(out);
    pwt_assert_rows(Q_RECEIPTS, "r34\nr1");
    pwt_assert_rows(Q_DEAD, "d10|t\nd400|f");
    pwt_assert_rows(Q_EVENTS, "wamid.E400\nwamid.E100\nwamid.E1");

    /* Again: nothing more to do. */
    assert_int_equal(prune("--pause 0", &out), 0);
    pwt_assert_contains(out, "(older than 35d), 5000 per transaction\n");
    pwt_assert_contains(out, "prune: pubsub_receipts: 0 deleted\n");
    pwt_assert_contains(out, "prune: dead_letters: 0 deleted\n");
    free(out);
    pwt_assert_rows(Q_RECEIPTS, "r34\nr1");
}

static void dry_run_counts_and_deletes_nothing(void **state)
{
    (void)state;
    seed();
    char *before = pwt_dump_tables();
    char *out;
    assert_int_equal(prune("--dry-run --status-events-older-than 90d --batch 1", &out), 0);
    pwt_assert_contains(out, "prune: dry run: nothing is deleted\n");
    pwt_assert_contains(out, "prune: pubsub_receipts: 2 would be deleted\n");
    pwt_assert_contains(out, "prune: dead_letters: 1 would be deleted\n");
    pwt_assert_contains(out, "prune: status_events: 2 would be deleted\n");
    free(out);
    pwt_assert_tables_unchanged(before);
}

static void status_events_go_only_when_asked(void **state)
{
    (void)state;
    seed();
    char *out;
    assert_int_equal(prune("--status-events-older-than 90d --receipts-older-than off --dead-letters-older-than=off", &out), 0);
    pwt_assert_contains(out, "prune: pubsub_receipts: kept (--receipts-older-than off)\n");
    pwt_assert_contains(out, "prune: dead_letters: kept (--dead-letters-older-than off)\n");
    pwt_assert_contains(out, "prune: status_events: 2 deleted\n");
    pwt_assert_contains(out, "(older than 90d), 5000 per transaction, pausing between them\n");
    free(out);
    pwt_assert_rows(Q_EVENTS, "wamid.E1");
    pwt_assert_rows(Q_RECEIPTS, "r40\nr36\nr34\nr1");
    pwt_assert_rows(Q_DEAD, "d40|t\nd10|t\nd400|f");
    /* message_logs is never pruned: its rolled-up statuses stay. */
}

/* Never a dead letter that was not redriven, however old, and never a younger redriven one. */
static void unredriven_dead_letters_are_never_removed(void **state)
{
    (void)state;
    pwt_exec("INSERT INTO dead_letters (subscription, message_id, reason, body, received_at, redriven_at)"
             " SELECT '" SUB "', 'n' || g, 'payload: x', '\\x00', now() - g * interval '100 days', NULL"
             " FROM generate_series(1, 7) g");
    pwt_exec("INSERT INTO dead_letters (subscription, message_id, reason, body, received_at, redriven_at)"
             " SELECT '" SUB "', 'y' || g, 'payload: x', '\\x00', now() - interval '900 days', now() - g * interval '7 days'"
             " FROM generate_series(1, 9) g");
    char *out;
    assert_int_equal(prune("--dead-letters-older-than 20d --batch 2", &out), 0);
    /* y3..y9 were redriven 21 to 63 days ago */
    pwt_assert_contains(out, "prune: dead_letters: 7 deleted\n");
    free(out);
    pwt_assert_rows("SELECT string_agg(message_id, ' ' ORDER BY id) FROM dead_letters", "n1 n2 n3 n4 n5 n6 n7 y1 y2");
}

/*
 * Batches much smaller than the data: 103 receipts, groups of them sharing one received_at (as the receipts of one
 * transaction do), and 57 status events, removed 4 or 5 per transaction; the counts are exact and the young rows stay.
 */
static void batches_smaller_than_the_data(void **state)
{
    (void)state;
    /* 100 old receipts in 10 groups of 10 identical times (36..45 days), 3 young ones. */
    pwt_exec("INSERT INTO pubsub_receipts (subscription, message_id, outcome, received_at)"
             " SELECT '" SUB "', 'old' || g, 'stored', date_trunc('second', now()) - (36 + g % 10) * interval '1 day'"
             " FROM generate_series(1, 100) g");
    pwt_exec("INSERT INTO pubsub_receipts (subscription, message_id, outcome, received_at)"
             " SELECT '" SUB "', 'new' || g, 'stored', now() - g * interval '1 day' FROM generate_series(1, 3) g");
    /* status events 1..57 received 56.5..0.5 days ago: ids in the order of their times, as the worker writes them */
    pwt_exec("INSERT INTO status_events (bsp_msg_id, status, occurred_at, received_at)"
             " SELECT 'wamid.S' || g, 'sent', now(), now() - (57 - g) * interval '1 day' - interval '12 hours'"
             " FROM generate_series(1, 57) g");
    char *out;
    assert_int_equal(prune("--dry-run --batch 4 --status-events-older-than 30d", &out), 0);
    pwt_assert_contains(out, "prune: pubsub_receipts: 100 would be deleted\n");
    pwt_assert_contains(out, "prune: status_events: 27 would be deleted\n");
    free(out);
    assert_int_equal(prune("--batch 4 --status-events-older-than 30d", &out), 0);
    pwt_assert_contains(out, "prune: pubsub_receipts: 100 deleted\n");
    /* 100 rows, 4 a batch, and the last (empty) batch that finds nothing more */
    pwt_assert_contains(out, "prune: pubsub_receipts: done in 26 batch(es)");
    /* 57 events from 27 old ones: 7 batches hold old ones (the 7th also the first young ones); the 8th none */
    pwt_assert_contains(out, "prune: status_events: 27 deleted\n");
    pwt_assert_contains(out, "prune: status_events: done in 8 batch(es)");
    free(out);
    pwt_assert_rows("SELECT string_agg(message_id, ' ' ORDER BY message_id) FROM pubsub_receipts", "new1 new2 new3");
    pwt_assert_rows("SELECT count(*), min(bsp_msg_id COLLATE \"C\") FROM status_events WHERE bsp_msg_id LIKE 'wamid.S%'", "30|wamid.S28");
    pwt_assert_rows("SELECT count(*) FROM status_events WHERE received_at < now() - interval '30 days'", "0");
}

static void bad_arguments_exit_2_and_delete_nothing(void **state)
{
    (void)state;
    seed();
    char *before = pwt_dump_tables();
    static const char *const bad[] = {"--receipts-older-than 3d", "--receipts-older-than", "--batch 0", "--batch x",
                                      "--status-events-older-than 10", "--status-events-older-than 5y", "--frobnicate",
                                      "--dead-letters-older-than -1d", "--pause", "--pause 1s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out;
        int status = prune(bad[i], &out);
        if (status != 2)
            pwt_fail(__FILE__, __LINE__, "prune %s: exit %d, expected 2; output:\n%s", bad[i], status, out);
        pwt_assert_contains(out, "worker prune: ");
        free(out);
    }
    pwt_assert_tables_unchanged(before);
}

static void an_unreachable_database_exits_1(void **state)
{
    (void)state;
    char *out;
    int port = pwt_free_port();
    char *url = pwt_xasprintf("postgresql://postgres@127.0.0.1:%d/none?connect_timeout=2", port);
    int status = pwt_worker_command("", url, "prune", &out);
    assert_int_equal(status, 1);
    pwt_assert_contains(out, "prune: cannot connect to the database");
    free(out);
    free(url);
}

/* A prune on a thread of its own, while the main thread pushes. */
typedef struct {
    int status;
    char *out;
    _Atomic int done;
} bg_prune_t;

static void *bg_prune(void *arg)
{
    bg_prune_t *p = arg;
    p->status = pwt_worker_command("", NULL, "prune --batch 50 --pause 0", &p->out);
    p->done = 1;
    return NULL;
}

/*
 * While the worker writes: 20000 old receipts pruned 50 at a time (no pause) while pushes keep arriving (at least 20, and on
 * until the prune is done); every push is answered 204 and keeps its receipt, every old receipt goes.
 */
static void safe_while_the_worker_writes(void **state)
{
    (void)state;
    pwt_exec("INSERT INTO pubsub_receipts (subscription, message_id, outcome, received_at)"
             " SELECT '" SUB "', 'old' || g, 'stored', now() - interval '40 days' - g * interval '1 second'"
             " FROM generate_series(1, 20000) g");
    bg_prune_t p = {0};
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, bg_prune, &p), 0);
    char *payload = pwt_read_fixture("meta/status_sent.json", NULL);
    int pushed = 0, during = 0;
    while (pushed < 20 || !p.done) {
        char id[32];
        snprintf(id, sizeof id, "live%d", pushed);
        during += !p.done;
        pwt_assert_status(pwt_push(&worker, payload, strlen(payload), id, SUB, "2024-03-06T05:00:00Z"), 204);
        pushed++;
    }
    pthread_join(tid, NULL);
    free(payload);
    if (p.status != 0)
        pwt_fail(__FILE__, __LINE__, "prune exited %d:\n%s", p.status, p.out);
    pwt_assert_contains(p.out, "prune: pubsub_receipts: 20000 deleted\n");
    free(p.out);
    print_message("%d pushes, %d of them sent while the prune ran\n", pushed, during);
    char *want = pwt_xasprintf("0|%d", pushed);
    pwt_assert_rows("SELECT count(*) FILTER (WHERE message_id LIKE 'old%'), count(*) FILTER (WHERE message_id LIKE 'live%')"
                    " FROM pubsub_receipts",
                    want);
    free(want);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, pwt_suite_fresh, pwt_suite_alive)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(defaults_remove_old_receipts_and_old_redriven_dead_letters_only),
        T(dry_run_counts_and_deletes_nothing),
        T(status_events_go_only_when_asked),
        T(unredriven_dead_letters_are_never_removed),
        T(batches_smaller_than_the_data),
        T(bad_arguments_exit_2_and_delete_nothing),
        T(an_unreachable_database_exits_1),
        T(safe_while_the_worker_writes),
    };
    return pwt_suite_run("prune", &worker, PWT_LIST("WORKER_THREADS=1"), tests);
}
