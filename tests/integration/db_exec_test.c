/*
 * Db, the group-commit executor (worker/db.h), driven in-process as h2o's own unit tests drive
 * theirs: worker/db.c is included here (its statics in reach, for waiting on its queue), and this
 * file runs the submitting event loops itself, on the test's thread and on threads of its own,
 * against the real PostgreSQL of tests/run. The executor is given a table and a statement of the
 * test's own (it knows no business table):
 *
 *   t (k text PRIMARY KEY, v int)
 *   WITH ins AS (INSERT INTO t SELECT * FROM unnest($1::text[], $2::int[]) ON CONFLICT DO NOTHING
 *   RETURNING k) SELECT k FROM ins
 *
 * so a job is one element of each array ("k", v) and its key is k: got_row says the row was new.
 *
 * Where a case needs jobs to meet in one group, it holds the executor's only connection busy with a
 * "blocker" job: another session holds a row lock (an uncommitted UPDATE of the row 'blocker'),
 * the blocker job's INSERT of that key waits on it (pg_stat_activity says so), the case's jobs are
 * submitted and reach the executor (db.c's in_jobs and queued_len), and the lock is let go: they are
 * then all queued when the connection frees, which db.h promises to write as one group. A SELECT
 * ... FOR UPDATE would not do: INSERT ... ON CONFLICT DO NOTHING does not wait on a row that is
 * only locked. How many transactions wrote the rows is read from the rows' xmin (one per
 * transaction), independently of the executor's own batch histogram, which is checked too.
 *
 * In tests/run's PgBouncer pass (PW_TEST_POOLER_URL) the executor goes through the pooler with
 * pooler_transaction set, as the worker does; the checks and the lock holder connect directly.
 */
#include "worker/db.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/util.h"

#define FAIL(...) pwt_fail(__FILE__, __LINE__, __VA_ARGS__)
#define WAIT_MS 20000 /* the most any wait here takes before it fails: far above what each needs */

static const pw_db_stmt_t stmt = {
    .name = "db_exec_test_insert",
    .sql = "WITH ins AS (INSERT INTO t SELECT * FROM unnest($1::text[], $2::int[]) ON CONFLICT DO NOTHING RETURNING k)"
           " SELECT k FROM ins",
    .ncols = 2,
    .check_sql = "SELECT k, v FROM t LIMIT 0",
};

/* The rows of t, "k|v" a line, in byte order of k. */
#define Q_ROWS "SELECT k, v FROM t ORDER BY k COLLATE \"C\""

/* ---- submitting loops ----------------------------------------------------------------------- */

/* An event loop that submits jobs through a port of its own and runs until they are answered. */
typedef struct {
    h2o_loop_t *loop;
    h2o_context_t ctx; /* only its loop and message queue (as worker/redrive.c): all a port needs */
    pw_db_port_t *port;
    pthread_t thread; /* the thread that opened it: answers must come back there */
    int submitted, answered;
    int in_submit;     /* inside pw_db_submit now */
    int answered_early; /* on_done calls from inside pw_db_submit (db.h: never) */
} tloop_t;

/* A job of the test: ("k", v) for the statement, the answer as on_done found it. */
typedef struct {
    pw_db_job_t job;
    tloop_t *lp;
    char frags[96];
    uint32_t ends[2];
    char k[48];
    int calls;        /* how many times on_done ran */
    int order;        /* its place among its loop's answers, from 1 */
    pthread_t thread; /* where on_done ran */
    double submitted_ms, done_ms;
} tjob_t;

static void tloop_open(tloop_t *l, pw_db_t *db)
{
    memset(l, 0, sizeof *l);
    l->loop = h2o_evloop_create();
    l->ctx.loop = l->loop;
    l->ctx.queue = h2o_multithread_create_queue(l->loop);
    l->port = pw_db_port_new(db, &l->ctx);
    l->thread = pthread_self();
}

/* Runs the loop until n jobs are answered or WAIT_MS passed; 1 when they were. */
static int tloop_run_until(tloop_t *l, int n)
{
    double until = pw_now_ms() + WAIT_MS;
    while (l->answered < n && pw_now_ms() < until)
        h2o_evloop_run(l->loop, 10);
    return l->answered >= n;
}

#define RUN_UNTIL(l, n)                                                                                                            \
    do {                                                                                                                           \
        if (!tloop_run_until((l), (n)))                                                                                           \
            FAIL("%d of %d job(s) answered after %d ms", (l)->answered, (n), WAIT_MS);                                           \
    } while (0)

/* Runs the loop for ms milliseconds (answers that should not come get their chance to). */
static void tloop_spin(tloop_t *l, int ms)
{
    double until = pw_now_ms() + ms;
    while (pw_now_ms() < until)
        h2o_evloop_run(l->loop, 10);
}

static void tloop_close(tloop_t *l)
{
    if (l->loop == NULL)
        return;
    h2o_evloop_run(l->loop, 0);
    pw_db_port_free(l->port);
    h2o_multithread_destroy_queue(l->ctx.queue);
    h2o_evloop_destroy(l->loop);
    l->loop = NULL;
}

static void on_done(pw_db_job_t *job)
{
    tjob_t *t = H2O_STRUCT_FROM_MEMBER(tjob_t, job, job);
    t->calls++;
    t->thread = pthread_self();
    t->done_ms = pw_now_ms();
    if (t->lp->in_submit)
        t->lp->answered_early++;
    t->order = ++t->lp->answered;
}

/* A job writing ("k", v): v is the array element as written ("1", "x", "NULL"); keyed: its key is k. */
static void tjob_init(tjob_t *t, const char *k, const char *v, int keyed, int flags)
{
    memset(t, 0, sizeof *t);
    snprintf(t->k, sizeof t->k, "%s", k);
    int n = snprintf(t->frags, sizeof t->frags, "\"%s\"", k);
    t->ends[0] = (uint32_t)n;
    n += snprintf(t->frags + n, sizeof t->frags - (size_t)n, "%s", v);
    t->ends[1] = (uint32_t)n;
    t->job.frags = t->frags;
    t->job.ends = t->ends;
    t->job.key = keyed ? pw_str(t->k, strlen(t->k)) : PW_STR_NULL;
    t->job.flags = flags;
    t->job.on_done = on_done;
}

static void submit(tloop_t *l, tjob_t *t)
{
    t->lp = l;
    t->submitted_ms = pw_now_ms();
    l->submitted++;
    l->in_submit = 1;
    pw_db_submit(l->port, &t->job);
    l->in_submit = 0;
}

/* Asserts a job's answer: called once, on its loop's thread, with result, SQLSTATE and got_row. */
#define ASSERT_ANSWER(t, res, state, row) assert_answer(__FILE__, __LINE__, (t), (res), (state), (row))
static void assert_answer(const char *file, int line, const tjob_t *t, int result, const char *sqlstate, int got_row)
{
    if (t->calls != 1 || !pthread_equal(t->thread, t->lp->thread) || t->job.result != result ||
        strcmp(t->job.sqlstate, sqlstate) != 0 || (got_row >= 0 && t->job.got_row != got_row))
        pwt_fail(file, line,
                 "job '%s': on_done ran %d time(s)%s; result %d (%s), sqlstate '%s', got_row %d, message '%s';"
                 " expected result %d (%s), sqlstate '%s', got_row %d",
                 t->k, t->calls, pthread_equal(t->thread, t->lp->thread) ? "" : " ON ANOTHER THREAD", t->job.result,
                 pw_strerror(t->job.result), t->job.sqlstate, t->job.got_row, t->job.message, result, pw_strerror(result),
                 sqlstate, got_row);
}

/* ---- the executor, the lock holder ------------------------------------------------------------ */

static struct {
    char url[2048]; /* the executor's DATABASE_URL: the test database, or it through the pooler */
    int pooled;
    pw_config_t cfg;
    pw_metrics_t metrics;
    pw_db_t *db;
    tloop_t loop;   /* this thread's submitting loop */
    PGconn *locker; /* another session, holding a row lock in an open transaction */
} T;

/* The test database's conninfo with host, port... of base (the pooler's URL): dbname replaced. */
static void conninfo_with_db(const char *base, const char *dbname, char *out, size_t outlen)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(base, &err);
    if (opts == NULL)
        FAIL("cannot parse '%s': %s", base, err != NULL ? err : "?");
    size_t n = 0;
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (o->val != NULL && *o->val != '\0' && strcmp(o->keyword, "dbname") != 0)
            n += (size_t)snprintf(out + n, n < outlen ? outlen - n : 0, "%s='%s' ", o->keyword, o->val);
    n += (size_t)snprintf(out + n, n < outlen ? outlen - n : 0, "dbname='%s'", dbname);
    PQconninfoFree(opts);
    if (n >= outlen)
        FAIL("conninfo too long");
}

/* The defaults of a case: one connection, limits far above what a case needs, long lock and statement timeouts. */
static void config_defaults(pw_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->database_url = T.url;
    cfg->db_connections = 1;
    cfg->batch_max = 256;
    cfg->batch_max_bytes = 1 << 20;
    cfg->queue_max = 4096;
    cfg->lock_timeout_ms = 30000;
    cfg->statement_timeout_ms = 30000;
    cfg->pooler_transaction = T.pooled;
}

static int db_conns_ready(pw_db_t *db)
{
    int n = 0;
    for (int i = 0; i < db->n_conns; i++) {
        db_state_t s = __atomic_load_n(&db->conns[i].state, __ATOMIC_RELAXED);
        n += s == DB_IDLE || s == DB_BUSY;
    }
    return n;
}

/* Starts T.db on T.cfg with statement st and this thread's loop, and waits until all its connections are up. */
static void start_db_with(const pw_db_stmt_t *st)
{
    memset(&T.metrics, 0, sizeof T.metrics);
    T.db = pw_db_new(&T.cfg, st, &T.metrics);
    tloop_open(&T.loop, T.db);
    double until = pw_now_ms() + WAIT_MS;
    while (!(pw_db_ready(T.db) && db_conns_ready(T.db) == T.cfg.db_connections) && pw_now_ms() < until)
        pwt_sleep_ms(10);
    if (!pw_db_ready(T.db) || db_conns_ready(T.db) != T.cfg.db_connections)
        FAIL("the executor is not ready after %d ms (%d of %d connections up)", WAIT_MS, db_conns_ready(T.db),
             T.cfg.db_connections);
}

/* Starts T.db with the test's statement (the table t). */
static void start_db(void)
{
    start_db_with(&stmt);
}

/* Jobs at the executor not yet sent: in its queues (written by its thread) and submitted but not yet taken. */
static size_t queued(pw_db_t *db)
{
    pthread_mutex_lock(&db->in_mutex);
    size_t n = db->in_len;
    pthread_mutex_unlock(&db->in_mutex);
    return n + __atomic_load_n(&db->queued_len, __ATOMIC_RELAXED);
}

/* How many times a submission has woken the executor's thread. */
static unsigned long bells(pw_db_t *db)
{
    return atomic_load(&db->bells);
}

#define WAIT_QUEUED(db, n) wait_queued(__FILE__, __LINE__, (db), (n))
static void wait_queued(const char *file, int line, pw_db_t *db, size_t n)
{
    double until = pw_now_ms() + WAIT_MS;
    while (queued(db) != n && pw_now_ms() < until)
        pwt_sleep_ms(5);
    if (queued(db) != n)
        pwt_fail(file, line, "%zu job(s) queued at the executor, expected %zu", queued(db), n);
}

/* Backends of the test database waiting on a lock. */
static long long lock_waiters(void)
{
    return pwt_scalar_int("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
}

#define WAIT_LOCK_WAITERS(n) wait_lock_waiters(__FILE__, __LINE__, (n))
static void wait_lock_waiters(const char *file, int line, long long n)
{
    double until = pw_now_ms() + WAIT_MS;
    while (lock_waiters() != n && pw_now_ms() < until)
        pwt_sleep_ms(10);
    if (lock_waiters() != n)
        pwt_fail(file, line, "%lld backend(s) waiting on a lock, expected %lld", lock_waiters(), n);
}

/* Another session locks the row of key k (which must exist) by updating it in a transaction left open. */
static void lock_row(const char *k)
{
    T.locker = PQconnectdb(pwt_db_url());
    if (PQstatus(T.locker) != CONNECTION_OK)
        FAIL("lock holder: cannot connect: %s", PQerrorMessage(T.locker));
    PGresult *r = PQexec(T.locker, "BEGIN");
    PQclear(r);
    const char *params[] = {k};
    r = PQexecParams(T.locker, "UPDATE t SET v = v WHERE k = $1", 1, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    if (!ok)
        FAIL("lock holder: could not lock the row '%s': %s", k, PQerrorMessage(T.locker));
}

/* The lock holder rolls back (the row unchanged) and leaves. */
static void unlock_row(void)
{
    if (T.locker == NULL)
        return;
    PGresult *r = PQexec(T.locker, "ROLLBACK");
    PQclear(r);
    PQfinish(T.locker);
    T.locker = NULL;
}

/* The job "blocker" in flight on the executor's connection, waiting for the row lock of 'blocker'. */
static void hold_connection(tjob_t *blocker)
{
    pwt_exec("INSERT INTO t VALUES ('blocker', 0)");
    lock_row("blocker");
    tjob_init(blocker, "blocker", "1", 1, 0);
    submit(&T.loop, blocker);
    WAIT_LOCK_WAITERS(1);
}

/* Submits t, a plain job writing (k, 1), and runs until the loop has answered `answered` jobs in all: t must be answered 0, its
 * row written. */
static void write_one(tjob_t *t, const char *k, int answered)
{
    tjob_init(t, k, "1", 1, 0);
    submit(&T.loop, t);
    RUN_UNTIL(&T.loop, answered);
    ASSERT_ANSWER(t, 0, "", 1);
}

/*
 * Queues jobs[0..n) behind a blocker (hold_connection), so that they wait together for the only connection; then releases it
 * and runs until all n + 1 are answered, the blocker with 0. The blocker's row is "blocker|0".
 */
static void run_queued_behind_blocker(tjob_t *jobs, int n)
{
    tjob_t blocker;
    hold_connection(&blocker);
    for (int i = 0; i < n; i++)
        submit(&T.loop, &jobs[i]);
    WAIT_QUEUED(T.db, (size_t)n);
    unlock_row();
    RUN_UNTIL(&T.loop, n + 1);
    ASSERT_ANSWER(&blocker, 0, "", 0);
}

typedef struct {
    uint64_t groups; /* transactions committed */
    double jobs;     /* jobs in them */
} batches_t;

static batches_t batches(void)
{
    return (batches_t){atomic_load(&T.metrics.batch_pushes.count), atomic_load(&T.metrics.batch_pushes.sum)};
}

/* Transactions that wrote the rows of t whose k is in keys, an array literal such as "{a1,a2}" (xmin: one per transaction). */
static int writers_of(const char *keys)
{
    char *n = pwt_rows_p("SELECT count(DISTINCT xmin::text) FROM t WHERE k = ANY ($1::text[])", PWT_LIST(keys));
    int writers = atoi(n);
    free(n);
    return writers;
}

/* ---- fixture -------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (pwt_db_create("db_exec") != 0)
        return -1;
    pwt_exec("SET client_min_messages = warning"); /* the checker: no NOTICE of DROP ... IF EXISTS */
    const char *pooler = getenv("PW_TEST_POOLER_URL");
    T.pooled = pooler != NULL && *pooler != '\0';
    if (T.pooled) {
        char *name = pwt_rows("SELECT current_database()");
        conninfo_with_db(pooler, name, T.url, sizeof T.url);
        free(name);
    } else {
        snprintf(T.url, sizeof T.url, "%s", pwt_db_url());
    }
    return 0;
}

/* A fresh table, no trigger; the default configuration. */
static int fresh(void **state)
{
    (void)state;
    pwt_exec("DROP TABLE IF EXISTS t");
    pwt_exec("DROP FUNCTION IF EXISTS t_conflict() CASCADE");
    pwt_exec("DROP SEQUENCE IF EXISTS conflict_hits");
    pwt_exec("CREATE TABLE t (k text PRIMARY KEY, v int)");
    pwt_exec("DROP TABLE IF EXISTS t_after");
    pwt_exec("CREATE TABLE t_after (v text NOT NULL CHECK (v <> 'after:boom'))");
    config_defaults(&T.cfg);
    return 0;
}

/* Lets go of the lock, then the loop and the executor (after a failure too: the answers may still come). */
static int cleanup(void **state)
{
    (void)state;
    unlock_row();
    if (T.loop.loop != NULL) {
        tloop_run_until(&T.loop, T.loop.submitted);
        if (T.loop.answered_early != 0) {
            fprintf(stderr, "%d job(s) answered from inside pw_db_submit\n", T.loop.answered_early);
            return -1;
        }
        if (T.loop.answered != T.loop.submitted) {
            /* a port may not be freed with jobs out: leave it all (the test has failed already) */
            fprintf(stderr, "%d job(s) never answered: the executor is left running\n", T.loop.submitted - T.loop.answered);
            T.loop.loop = NULL;
            T.db = NULL;
            return -1;
        }
        tloop_close(&T.loop);
    }
    if (T.db != NULL) {
        pw_db_free(T.db);
        T.db = NULL;
    }
    return 0;
}

/* ---- 1. ports --------------------------------------------------------------------------------- */

#define PORT_JOBS 8

typedef struct {
    pw_db_t *db;
    const char *prefix; /* "a" or "b" */
    int v0;             /* its values: v0 + 1 .. */
    const char *old_key; /* a key already in the table */
    int dup_v;          /* its value for the key "dup" both threads write */
    tjob_t jobs[PORT_JOBS];
    tloop_t loop;
    atomic_int *submitted; /* threads that have submitted */
    int all_answered;
} port_thread_t;

/* A submitting loop on a thread of its own: five new keys, one keyless job, one old key, "dup". */
static void *port_thread(void *arg)
{
    port_thread_t *p = arg;
    tloop_open(&p->loop, p->db);
    char k[32], v[16];
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof k, "%s%d", p->prefix, i + 1);
        snprintf(v, sizeof v, "%d", p->v0 + i + 1);
        tjob_init(&p->jobs[i], k, v, 1, 0);
    }
    snprintf(k, sizeof k, "%s-nokey", p->prefix);
    tjob_init(&p->jobs[5], k, "0", 0, 0);
    tjob_init(&p->jobs[6], p->old_key, "99", 1, 0);
    snprintf(v, sizeof v, "%d", p->dup_v);
    tjob_init(&p->jobs[7], "dup", v, 1, 0);
    for (int i = 0; i < PORT_JOBS; i++)
        submit(&p->loop, &p->jobs[i]);
    atomic_fetch_add(p->submitted, 1);
    p->all_answered = tloop_run_until(&p->loop, PORT_JOBS);
    if (p->all_answered) /* else the port cannot be freed: leave it (the test fails) */
        tloop_close(&p->loop);
    return NULL;
}

/*
 * Jobs from two loops on two threads, written in one group (behind the blocker): each answered
 * once, on its own loop's thread, 0; got_row 1 for a new key, 0 for a key already there and for a
 * job without key; of the two jobs with the key "dup", exactly one gets the row, the one whose
 * value was stored.
 */
static void test_ports_answer_each_loop_on_its_own_thread(void **state)
{
    (void)state;
    pwt_exec("INSERT INTO t VALUES ('old1', 10), ('old2', 20)");
    start_db();
    batches_t before = batches();
    tjob_t blocker;
    hold_connection(&blocker);

    atomic_int submitted = 0;
    port_thread_t a = {.db = T.db, .prefix = "a", .v0 = 0, .old_key = "old1", .dup_v = 1, .submitted = &submitted};
    port_thread_t b = {.db = T.db, .prefix = "b", .v0 = 10, .old_key = "old2", .dup_v = 2, .submitted = &submitted};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, port_thread, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, port_thread, &b), 0);
    double until = pw_now_ms() + WAIT_MS;
    while (atomic_load(&submitted) < 2 && pw_now_ms() < until)
        pwt_sleep_ms(5);
    WAIT_QUEUED(T.db, 2 * PORT_JOBS);
    unlock_row();
    RUN_UNTIL(&T.loop, 1);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_true(a.all_answered);
    assert_true(b.all_answered);

    ASSERT_ANSWER(&blocker, 0, "", 0); /* its key was there (the lock holder rolled back) */
    port_thread_t *threads[] = {&a, &b};
    for (int t = 0; t < 2; t++) {
        port_thread_t *p = threads[t];
        assert_false(pthread_equal(p->loop.thread, pthread_self()));
        assert_int_equal(p->loop.answered_early, 0);
        for (int i = 0; i < 5; i++)
            ASSERT_ANSWER(&p->jobs[i], 0, "", 1);
        ASSERT_ANSWER(&p->jobs[5], 0, "", 0); /* no key: its row is nobody's */
        ASSERT_ANSWER(&p->jobs[6], 0, "", 0); /* already there */
        ASSERT_ANSWER(&p->jobs[7], 0, "", -1);
    }
    assert_false(pthread_equal(a.loop.thread, b.loop.thread));
    assert_int_equal(a.jobs[7].job.got_row + b.jobs[7].job.got_row, 1);
    const char *dup_v = a.jobs[7].job.got_row ? "1" : "2"; /* the first "dup" of the group is stored and gets its row */
    char *expected = pwt_xasprintf("a-nokey|0\na1|1\na2|2\na3|3\na4|4\na5|5\nb-nokey|0\nb1|11\nb2|12\nb3|13\nb4|14\nb5|15\n"
                                   "blocker|0\ndup|%s\nold1|10\nold2|20",
                                   dup_v);
    pwt_assert_rows(Q_ROWS, expected);
    free(expected);
    /* one transaction wrote them all; the executor counts the blocker's and that one */
    assert_int_equal(writers_of("{a1,a2,a3,a4,a5,a-nokey,b1,b2,b3,b4,b5,b-nokey,dup}"), 1);
    batches_t after = batches();
    assert_int_equal(after.groups - before.groups, 2);
    assert_true(after.jobs - before.jobs == 1 + 2 * PORT_JOBS);
}

/* ---- 2. group commit -------------------------------------------------------------------------- */

#define GROUP_JOBS 200

/* GROUP_JOBS jobs submitted at once, nothing holding the connection: far fewer transactions than jobs. */
static void test_jobs_submitted_at_once_share_transactions(void **state)
{
    (void)state;
    start_db();
    batches_t before = batches();
    tjob_t *jobs = pwt_xmalloc(GROUP_JOBS * sizeof *jobs);
    for (int i = 0; i < GROUP_JOBS; i++) {
        char k[16], v[16];
        snprintf(k, sizeof k, "g%03d", i);
        snprintf(v, sizeof v, "%d", i);
        tjob_init(&jobs[i], k, v, 1, 0);
    }
    for (int i = 0; i < GROUP_JOBS; i++)
        submit(&T.loop, &jobs[i]);
    RUN_UNTIL(&T.loop, GROUP_JOBS);
    for (int i = 0; i < GROUP_JOBS; i++)
        ASSERT_ANSWER(&jobs[i], 0, "", 1);
    free(jobs);
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM t WHERE k ~ '^g[0-9]{3}$' AND v = substr(k, 2)::int"), GROUP_JOBS);
    long long txs = pwt_scalar_int("SELECT count(DISTINCT xmin::text) FROM t");
    batches_t after = batches();
    fprintf(stderr, "%d jobs submitted at once: written in %lld transaction(s)\n", GROUP_JOBS, txs);
    assert_int_equal(after.groups - before.groups, txs);
    assert_true(after.jobs - before.jobs == GROUP_JOBS);
    assert_in_range(txs, 1, GROUP_JOBS / 10);
}

/*
 * Jobs submitted while the only connection has a group in flight do not wake the executor's
 * thread: it has nothing to do with them until that group ends, and then takes them all as one
 * group. The job that finds the connection idle rings once. Before the bell, each job was a
 * message that woke the thread (a pipe write, an epoll_wait and a read) just to queue it.
 */
static void test_jobs_for_a_busy_connection_wait_without_waking_the_executor(void **state)
{
    (void)state;
    start_db();
    tjob_t blocker, jobs[20];
    unsigned long before = bells(T.db);
    hold_connection(&blocker); /* one job, sent at once: one ring */
    unsigned long held = bells(T.db);
    assert_int_equal(held - before, 1);
    for (int i = 0; i < 20; i++) {
        char k[16], v[16];
        snprintf(k, sizeof k, "w%02d", i);
        snprintf(v, sizeof v, "%d", i + 1);
        tjob_init(&jobs[i], k, v, 1, 0);
        submit(&T.loop, &jobs[i]);
    }
    WAIT_QUEUED(T.db, 20);
    assert_int_equal(bells(T.db) - held, 0);
    batches_t b0 = batches();
    unlock_row();
    RUN_UNTIL(&T.loop, 21);
    ASSERT_ANSWER(&blocker, 0, "", 0);
    for (int i = 0; i < 20; i++)
        ASSERT_ANSWER(&jobs[i], 0, "", 1);
    batches_t b1 = batches();
    assert_int_equal(b1.groups - b0.groups, 2); /* the blocker's, then the twenty together */
    assert_int_equal(pwt_scalar_int("SELECT count(DISTINCT xmin::text) FROM t WHERE k ~ '^w'"), 1);
    assert_int_equal(bells(T.db) - held, 0);
}

/* ---- 3. splitting ------------------------------------------------------------------------------ */

/* A group of five where one job's value is not an int (22P02): the four others 0 and stored, one by one; that one refused. */
static void test_a_refused_job_fails_only_itself(void **state)
{
    (void)state;
    start_db();
    batches_t before = batches();
    tjob_t jobs[5];
    tjob_init(&jobs[0], "s1", "1", 1, 0);
    tjob_init(&jobs[1], "s2", "2", 1, 0);
    tjob_init(&jobs[2], "sbad", "x", 1, 0);
    tjob_init(&jobs[3], "s3", "3", 1, 0);
    tjob_init(&jobs[4], "s4", "4", 1, 0);
    run_queued_behind_blocker(jobs, 5);

    for (int i = 0; i < 5; i++)
        if (i != 2)
            ASSERT_ANSWER(&jobs[i], 0, "", 1);
    ASSERT_ANSWER(&jobs[2], PW_EREFUSED, "22P02", 0);
    pwt_assert_contains(jobs[2].job.message, "integer");
    pwt_assert_rows(Q_ROWS, "blocker|0\ns1|1\ns2|2\ns3|3\ns4|4");
    /* the group failed as a whole, then each job was written alone */
    assert_int_equal(writers_of("{s1,s2,s3,s4}"), 4);
    batches_t after = batches();
    assert_int_equal(after.groups - before.groups, 1 + 4);
    assert_true(after.jobs - before.jobs == 1 + 4);
}

/* PW_DB_ALONE: a job so flagged, queued among others, is written in a transaction of its own; those before and after it are grouped. */
static void test_an_alone_job_is_never_grouped(void **state)
{
    (void)state;
    start_db();
    tjob_t jobs[5];
    tjob_init(&jobs[0], "x1", "1", 1, 0);
    tjob_init(&jobs[1], "x2", "2", 1, 0);
    tjob_init(&jobs[2], "solo", "3", 1, PW_DB_ALONE);
    tjob_init(&jobs[3], "x3", "4", 1, 0);
    tjob_init(&jobs[4], "x4", "5", 1, 0);
    run_queued_behind_blocker(jobs, 5);
    for (int i = 0; i < 5; i++)
        ASSERT_ANSWER(&jobs[i], 0, "", 1);
    pwt_assert_rows(Q_ROWS, "blocker|0\nsolo|3\nx1|1\nx2|2\nx3|4\nx4|5");
    assert_int_equal(writers_of("{x1,x2}"), 1);
    assert_int_equal(writers_of("{x3,x4}"), 1);
    assert_int_equal(writers_of("{x1,x2,solo,x3,x4}"), 3);
}

/* ---- 4. trials -------------------------------------------------------------------------------- */

/* PW_DB_TRIAL: data the statement accepts is answered 0 and not kept; data it refuses PW_EREFUSED; a plain job beside them is written. */
static void test_a_trial_is_rolled_back(void **state)
{
    (void)state;
    start_db();
    tjob_t good, bad, plain;
    tjob_init(&good, "tgood", "1", 1, PW_DB_TRIAL);
    tjob_init(&bad, "tbad", "x", 1, PW_DB_TRIAL);
    tjob_init(&plain, "plain", "1", 1, 0);
    submit(&T.loop, &good);
    submit(&T.loop, &bad);
    submit(&T.loop, &plain);
    RUN_UNTIL(&T.loop, 3);
    ASSERT_ANSWER(&good, 0, "", -1); /* db.h does not say what got_row is for a trial */
    ASSERT_ANSWER(&bad, PW_EREFUSED, "22P02", 0);
    ASSERT_ANSWER(&plain, 0, "", 1);
    pwt_assert_rows(Q_ROWS, "plain|1");

    /* a trial of a row that is there: still 0, nothing changed */
    tjob_t again;
    tjob_init(&again, "plain", "2", 1, PW_DB_TRIAL);
    submit(&T.loop, &again);
    RUN_UNTIL(&T.loop, 4);
    ASSERT_ANSWER(&again, 0, "", 0);
    pwt_assert_rows(Q_ROWS, "plain|1");
}

/* ---- 5. retry rules ----------------------------------------------------------------------------- */

/*
 * A trigger fails every insert of the key "conflict" with a serialization failure (40001),
 * counting its calls in a sequence (not rolled back): that job is answered PW_ECONFLICT after a
 * bounded number of attempts spread by a backoff, while the job submitted with it commits first.
 */
static void test_a_conflict_is_retried_alone_a_bounded_number_of_times(void **state)
{
    (void)state;
    pwt_exec("CREATE SEQUENCE conflict_hits");
    pwt_exec("CREATE FUNCTION t_conflict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
             " IF NEW.k = 'conflict' THEN PERFORM nextval('conflict_hits');"
             " RAISE EXCEPTION 'test: could not serialize %', NEW.k USING ERRCODE = '40001'; END IF;"
             " RETURN NEW; END $$");
    pwt_exec("CREATE TRIGGER t_conflict BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION t_conflict()");
    start_db();
    tjob_t conflict, calm;
    tjob_init(&conflict, "conflict", "1", 1, 0);
    tjob_init(&calm, "calm", "1", 1, 0);
    submit(&T.loop, &conflict);
    submit(&T.loop, &calm);
    RUN_UNTIL(&T.loop, 2);
    ASSERT_ANSWER(&calm, 0, "", 1);
    ASSERT_ANSWER(&conflict, PW_ECONFLICT, "40001", 0);
    assert_int_equal(calm.order, 1); /* not held back by the retries */
    pwt_assert_rows(Q_ROWS, "calm|1");
    long long hits = pwt_scalar_int("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM conflict_hits");
    double waited = conflict.done_ms - conflict.submitted_ms;
    fprintf(stderr, "the conflicting job: %lld attempt(s), answered after %.0f ms\n", hits, waited);
    /* alone: once and PW_DB_MAX_CONFLICT_RETRIES more; once more if it was first tried in a group with "calm" */
    assert_in_range(hits, 1 + PW_DB_MAX_CONFLICT_RETRIES, 2 + PW_DB_MAX_CONFLICT_RETRIES);
    assert_in_range(hits, 2, 10);
    assert_true(waited >= 500); /* the retries are spread out (about 50 + 100 + 200 + 400 + 800 ms, jittered) */
}

/* Another session holds a row lock; lock_timeout_ms is small: the job needing that row PW_ETIMEDOUT (55P03), the others 0. */
static void test_a_lock_timeout_fails_only_the_job_that_waits(void **state)
{
    (void)state;
    pwt_exec("INSERT INTO t VALUES ('locked', 7)");
    T.cfg.lock_timeout_ms = 300;
    start_db();
    lock_row("locked");
    tjob_t jobs[4];
    tjob_init(&jobs[0], "l1", "1", 1, 0);
    tjob_init(&jobs[1], "locked", "8", 1, 0);
    tjob_init(&jobs[2], "l2", "2", 1, 0);
    tjob_init(&jobs[3], "l3", "3", 1, 0);
    for (int i = 0; i < 4; i++)
        submit(&T.loop, &jobs[i]);
    RUN_UNTIL(&T.loop, 4);
    ASSERT_ANSWER(&jobs[0], 0, "", 1);
    ASSERT_ANSWER(&jobs[1], PW_ETIMEDOUT, "55P03", 0);
    ASSERT_ANSWER(&jobs[2], 0, "", 1);
    ASSERT_ANSWER(&jobs[3], 0, "", 1);
    unlock_row();
    pwt_assert_rows(Q_ROWS, "l1|1\nl2|2\nl3|3\nlocked|7");
}

/* ---- 6. down ------------------------------------------------------------------------------------ */

static int ready_at_some_point(pw_db_t *db, int ms)
{
    double until = pw_now_ms() + ms;
    int seen = pw_db_ready(db);
    while (!seen && pw_now_ms() < until) {
        pwt_sleep_ms(10);
        seen = pw_db_ready(db);
    }
    return seen;
}

/* A database nobody listens for: jobs answered PW_EUNAVAIL, never ready; an executor on the real one then becomes ready. */
static void test_a_database_that_is_down_answers_unavailable(void **state)
{
    (void)state;
    static char url[128]; /* borrowed by the executor until pw_db_free */
    int port = pwt_free_port();
    assert_true(port > 0);
    snprintf(url, sizeof url, "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2", port);
    T.cfg.database_url = url;
    T.cfg.db_connections = 2;
    T.cfg.pooler_transaction = 0;
    T.db = pw_db_new(&T.cfg, &stmt, &T.metrics);
    tloop_open(&T.loop, T.db);
    tjob_t first[3], later[2];
    for (int i = 0; i < 3; i++) {
        tjob_init(&first[i], i == 0 ? "d1" : i == 1 ? "d2" : "d3", "1", 1, 0);
        first[i].job.shard = (uint32_t)i;
        submit(&T.loop, &first[i]);
    }
    RUN_UNTIL(&T.loop, 3);
    for (int i = 0; i < 3; i++)
        ASSERT_ANSWER(&first[i], PW_EUNAVAIL, "", 0);
    assert_false(ready_at_some_point(T.db, 1500)); /* through the reconnect attempts */
    tjob_init(&later[0], "d4", "1", 1, 0);
    tjob_init(&later[1], "d5", "1", 1, PW_DB_TRIAL);
    submit(&T.loop, &later[0]);
    submit(&T.loop, &later[1]);
    RUN_UNTIL(&T.loop, 5);
    ASSERT_ANSWER(&later[0], PW_EUNAVAIL, "", 0);
    ASSERT_ANSWER(&later[1], PW_EUNAVAIL, "", 0);
    assert_int_equal(pw_db_ready(T.db), 0);

    /* a second executor, on the real database, beside it */
    static pw_config_t real; /* borrowed by the executor until pw_db_free */
    static pw_metrics_t metrics;
    config_defaults(&real);
    memset(&metrics, 0, sizeof metrics);
    pw_db_t *up = pw_db_new(&real, &stmt, &metrics);
    int became_ready = ready_at_some_point(up, WAIT_MS);
    tloop_t l2;
    tloop_open(&l2, up);
    tjob_t j;
    tjob_init(&j, "d6", "6", 1, 0);
    submit(&l2, &j);
    int answered = tloop_run_until(&l2, 1);
    int ready_down = pw_db_ready(T.db);
    if (answered) {
        tloop_close(&l2);
        pw_db_free(up);
    }
    assert_true(became_ready);
    assert_true(answered);
    ASSERT_ANSWER(&j, 0, "", 1);
    assert_int_equal(ready_down, 0);
    pwt_assert_rows(Q_ROWS, "d6|6");
}

/* ---- 7. abandoned -------------------------------------------------------------------------------- */

/* A queued job marked abandoned while the only connection is busy: answered PW_ECANCELED when it frees, and not written. */
static void test_an_abandoned_job_is_canceled(void **state)
{
    (void)state;
    start_db();
    tjob_t blocker, gone, kept;
    hold_connection(&blocker);
    tjob_init(&gone, "gone", "1", 1, 0);
    tjob_init(&kept, "kept", "1", 1, 0);
    submit(&T.loop, &gone);
    submit(&T.loop, &kept);
    WAIT_QUEUED(T.db, 2);
    atomic_store(&gone.job.abandoned, 1);
    tloop_spin(&T.loop, 200);
    assert_int_equal(T.loop.answered, 0); /* nothing answered before the connection frees */
    unlock_row();
    RUN_UNTIL(&T.loop, 3);
    ASSERT_ANSWER(&blocker, 0, "", 0);
    ASSERT_ANSWER(&gone, PW_ECANCELED, "", 0);
    ASSERT_ANSWER(&kept, 0, "", 1);
    pwt_assert_rows(Q_ROWS, "blocker|0\nkept|1");
}

/* ---- 8. shutdown --------------------------------------------------------------------------------- */

/*
 * A job stuck behind a lock and one queued behind it: pw_db_drain(now + 300 ms) answers both
 * PW_EUNAVAIL, not before the deadline and soon after it; the port and the executor then free
 * cleanly (the sanitizer and valgrind runs check that); the queued job was never written.
 */
static void test_drain_answers_what_is_stuck_at_the_deadline(void **state)
{
    (void)state;
    start_db();
    tjob_t stuck, behind;
    hold_connection(&stuck);
    tjob_init(&behind, "behind", "1", 1, 0);
    submit(&T.loop, &behind);
    WAIT_QUEUED(T.db, 1);
    double deadline = pw_now_ms() + 300;
    pw_db_drain(T.db, deadline);
    RUN_UNTIL(&T.loop, 2);
    ASSERT_ANSWER(&stuck, PW_EUNAVAIL, "", 0);
    ASSERT_ANSWER(&behind, PW_EUNAVAIL, "", 0);
    fprintf(stderr, "drain: answered %.0f and %.0f ms after the deadline\n", stuck.done_ms - deadline, behind.done_ms - deadline);
    assert_true(stuck.done_ms >= deadline && behind.done_ms >= deadline);
    assert_true(stuck.done_ms < deadline + 3000 && behind.done_ms < deadline + 3000);
    /* the connections close right after the answers go (ready may still be 1 when they arrive) */
    double until = pw_now_ms() + WAIT_MS;
    while (pw_db_ready(T.db) && pw_now_ms() < until)
        pwt_sleep_ms(5);
    assert_int_equal(pw_db_ready(T.db), 0);
    tloop_close(&T.loop);
    double t0 = pw_now_ms();
    pw_db_free(T.db);
    T.db = NULL;
    assert_true(pw_now_ms() - t0 < 3000);
    /* the server's side of the stuck job finishes once the lock goes (ON CONFLICT: nothing changes) */
    unlock_row();
    WAIT_LOCK_WAITERS(0);
    pwt_assert_rows(Q_ROWS, "blocker|0");
}

/* Before its deadline a drain changes nothing: a job submitted after it is written; pw_db_free does not wait for the deadline. */
static void test_jobs_submitted_after_a_drain_are_still_taken(void **state)
{
    (void)state;
    start_db();
    pw_db_drain(T.db, pw_now_ms() + 10000);
    tjob_t late;
    write_one(&late, "late", 1);
    pwt_assert_rows(Q_ROWS, "late|1");
    tloop_close(&T.loop);
    double t0 = pw_now_ms();
    pw_db_free(T.db);
    T.db = NULL;
    assert_true(pw_now_ms() - t0 < 3000);
}

/* ---- 9. shards ----------------------------------------------------------------------------------- */

/*
 * Two connections: a job of shard 0 stuck behind a lock holds connection 0 only. A job of shard 1
 * is written meanwhile; a job of shard 2 (connection 0 too) waits behind the stuck one until the
 * lock goes.
 */
static void test_shards_keep_to_their_connection(void **state)
{
    (void)state;
    T.cfg.db_connections = 2;
    start_db();
    tjob_t stuck, other, same;
    hold_connection(&stuck); /* shard 0 */
    tjob_init(&other, "shard1", "1", 1, 0);
    other.job.shard = 1;
    tjob_init(&same, "shard2", "2", 1, 0);
    same.job.shard = 2;
    submit(&T.loop, &same);
    submit(&T.loop, &other);
    RUN_UNTIL(&T.loop, 1);
    ASSERT_ANSWER(&other, 0, "", 1);
    assert_int_equal(queued(T.db), 1);
    tloop_spin(&T.loop, 200);
    assert_int_equal(same.calls, 0);
    unlock_row();
    RUN_UNTIL(&T.loop, 3);
    ASSERT_ANSWER(&stuck, 0, "", 0);
    ASSERT_ANSWER(&same, 0, "", 1);
    assert_int_equal(stuck.order, 2);
    assert_int_equal(same.order, 3); /* behind it, on its connection */
    pwt_assert_rows(Q_ROWS, "blocker|0\nshard1|1\nshard2|2");
}

/* ---- 10. a full queue -------------------------------------------------------------------------- */

/* queue_max jobs wait behind the busy connection: one more is answered PW_EUNAVAIL at once; those waiting are written. */
static void test_a_full_queue_answers_unavailable(void **state)
{
    (void)state;
    T.cfg.queue_max = 2;
    start_db();
    tjob_t blocker, q1, q2, over;
    hold_connection(&blocker); /* in flight: not in the queue */
    tjob_init(&q1, "q1", "1", 1, 0);
    tjob_init(&q2, "q2", "2", 1, 0);
    tjob_init(&over, "over", "3", 1, 0);
    submit(&T.loop, &q1);
    submit(&T.loop, &q2);
    WAIT_QUEUED(T.db, 2);
    submit(&T.loop, &over);
    RUN_UNTIL(&T.loop, 1);
    ASSERT_ANSWER(&over, PW_EUNAVAIL, "", 0);
    unlock_row();
    RUN_UNTIL(&T.loop, 4);
    ASSERT_ANSWER(&blocker, 0, "", 0);
    ASSERT_ANSWER(&q1, 0, "", 1);
    ASSERT_ANSWER(&q2, 0, "", 1);
    pwt_assert_rows(Q_ROWS, "blocker|0\nq1|1\nq2|2");
}

/* ---- 11. the watchdog and reconnecting -------------------------------------------------------------- */

/*
 * The server stops answering (the backend of the job in flight is stopped with SIGSTOP): the
 * watchdog drops the connection after statement_timeout_ms + its grace and answers the job
 * PW_EUNAVAIL (whether it committed is unknown); the executor connects again and writes the next
 * job. Skipped when the test may not signal the server's processes.
 */
static void test_a_server_that_stops_answering_is_left_and_reconnected(void **state)
{
    (void)state;
    T.cfg.statement_timeout_ms = 2000; /* far longer than it takes to find the backend and stop it */
    start_db();
    tjob_t blocker;
    hold_connection(&blocker);
    long long pid = pwt_scalar_int("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
    if (kill((pid_t)pid, SIGSTOP) != 0) {
        unlock_row();
        RUN_UNTIL(&T.loop, 1);
        skip();
    }
    double t0 = pw_now_ms();
    int answered = tloop_run_until(&T.loop, 1);
    double waited = pw_now_ms() - t0;
    kill((pid_t)pid, SIGCONT);
    unlock_row();
    if (!answered)
        FAIL("the job whose server stopped answering was not answered in %d ms", WAIT_MS);
    ASSERT_ANSWER(&blocker, PW_EUNAVAIL, "", 0);
    fprintf(stderr, "watchdog: answered %.0f ms after the server stopped\n", waited);
    assert_true(waited < 2000 + PW_DB_ANSWER_GRACE_MS + 3000);
    assert_int_equal(atomic_load(&T.metrics.db_reconnects), 1);
    assert_true(ready_at_some_point(T.db, WAIT_MS));
    tjob_t next;
    write_one(&next, "next", 2);
    pwt_assert_rows(Q_ROWS, "blocker|0\nnext|1");
}

/*
 * A job that arrives while the connection's idle probe is in flight waits for it, then is
 * written at once. The server's backends are stopped (SIGSTOP) once the connection is idle, so
 * the probe the watchdog sends after PW_DB_PROBE_IDLE_MS stays in flight; the job is submitted
 * then, and the backends continued well within the probe's limit (no reconnect). Before the
 * fix, the probe's answer left the job queued until another job came: never, here. Skipped when
 * the test may not signal the server's processes.
 */
static void test_a_job_that_arrives_during_a_probe_is_written_after_it(void **state)
{
    (void)state;
    start_db();
    tjob_t first, during;
    write_one(&first, "first", 1);
    char *pids = pwt_rows("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                          " AND backend_type = 'client backend' AND pid <> pg_backend_pid()");
    int stopped = 0;
    for (char *p = pids; *p != '\0';) {
        pid_t pid = (pid_t)strtol(p, &p, 10);
        if (pid > 0 && kill(pid, SIGSTOP) == 0)
            stopped++;
        while (*p == '\n')
            p++;
    }
    if (stopped == 0) {
        free(pids);
        skip();
    }
    /* The probe is sent (the connection busy with no group) within a second and a watchdog tick. */
    db_conn_t *c = &T.db->conns[0];
    double until = pw_now_ms() + 3000;
    while (!(__atomic_load_n(&c->state, __ATOMIC_RELAXED) == DB_BUSY && __atomic_load_n(&c->group_len, __ATOMIC_RELAXED) == 0) &&
           pw_now_ms() < until)
        pwt_sleep_ms(5);
    int probing = __atomic_load_n(&c->state, __ATOMIC_RELAXED) == DB_BUSY;
    if (probing) {
        tjob_init(&during, "during", "2", 1, 0);
        submit(&T.loop, &during);
        WAIT_QUEUED(T.db, 1);
    }
    for (char *p = pids; *p != '\0';) {
        pid_t pid = (pid_t)strtol(p, &p, 10);
        if (pid > 0)
            kill(pid, SIGCONT);
        while (*p == '\n')
            p++;
    }
    free(pids);
    if (!probing)
        FAIL("no probe was sent within 3 s of the connection going idle");
    RUN_UNTIL(&T.loop, 2);
    ASSERT_ANSWER(&during, 0, "", 1);
    assert_int_equal(atomic_load(&T.metrics.db_reconnects), 0);
    pwt_assert_rows(Q_ROWS, "during|2\nfirst|1");
}

/* ---- binary columns ---------------------------------------------------------------------- */

/*
 * The same table with a column of each type the worker sends in binary, the int column v still
 * sent as an array literal: a statement may mix both (db.h: element type 0 is a literal; the
 * worker's own statement has been binary in every column since its contacts' row type went).
 */
static const uint32_t bin_types[] = {25 /* text */, 0, 1184 /* timestamptz */, 3802 /* jsonb */, 20 /* bigint */,
                                     17 /* bytea */, 25};
static const pw_db_stmt_t bin_stmt = {
    .name = "db_exec_test_binary",
    .sql = "WITH ins AS (INSERT INTO t (k, v, at, j, n, b, s) SELECT * FROM unnest($1::text[], $2::int[],"
           " $3::timestamptz[], $4::jsonb[], $5::bigint[], $6::bytea[], $7::text[]) ON CONFLICT DO NOTHING RETURNING k)"
           " SELECT k FROM ins",
    .ncols = 7,
    .check_sql = "SELECT k, v, at, j, n, b, s FROM t LIMIT 0",
    .elem_types = bin_types,
};

/* A binary element written out by hand (db.h's format): its length in network order, then its bytes; len -1: NULL. */
static size_t put_element(char *o, const void *bytes, int32_t len)
{
    pw_put_be32(o, (uint32_t)len);
    if (len > 0)
        memcpy(o + 4, bytes, (size_t)len);
    return 4 + (len > 0 ? (size_t)len : 0);
}

/*
 * A job of bin_stmt: k (binary text) and v (a literal, "NULL" allowed), then the five binary
 * columns from elems[0..5): each {bytes, len} (len -1: NULL), or none at all when nelems is 0.
 */
typedef struct {
    const char *bytes;
    int32_t len;
} elem_t;

static void bjob_init(tjob_t *t, const char *k, const char *v, const elem_t *elems, int nelems)
{
    memset(t, 0, sizeof *t);
    snprintf(t->k, sizeof t->k, "%s", k);
    static char frags[8][256]; /* a job's frags live as long as the job: one slot per job of the case */
    static uint32_t ends[8][7];
    static int next;
    int slot = next++ % 8;
    char *f = frags[slot];
    size_t n = put_element(f, k, (int32_t)strlen(k));
    ends[slot][0] = (uint32_t)n;
    n += (size_t)snprintf(f + n, sizeof frags[slot] - n, "%s", v);
    ends[slot][1] = (uint32_t)n;
    for (int i = 0; i < 5; i++) {
        if (i < nelems)
            n += put_element(f + n, elems[i].bytes, elems[i].len);
        ends[slot][2 + i] = (uint32_t)n;
    }
    assert_true(n <= sizeof frags[slot]);
    t->job.frags = f;
    t->job.ends = ends[slot];
    t->job.key = pw_str(t->k, strlen(t->k));
    t->job.on_done = on_done;
}

/*
 * Columns sent in binary arrive as their types: a time to the microsecond (before 2000 too), jsonb
 * read from its text (a number kept exact), a bigint past what a double holds, bytes with a NUL,
 * text with the characters an array literal must escape; NULL elements; a job without elements
 * for those columns, last in its group (unnest fills its row with NULLs); and a group with none in
 * any binary column (the blocker alone: empty arrays). All in two transactions: the blocker's,
 * then one for the three jobs.
 */
static void test_binary_columns_reach_the_server_as_their_types(void **state)
{
    (void)state;
    pwt_exec("ALTER TABLE t ADD COLUMN at timestamptz, ADD COLUMN j jsonb, ADD COLUMN n bigint, ADD COLUMN b bytea,"
             " ADD COLUMN s text");
    start_db_with(&bin_stmt);
    pwt_exec("INSERT INTO t (k, v) VALUES ('blocker', 0)");
    lock_row("blocker");
    tjob_t blocker, jobs[3];
    bjob_init(&blocker, "blocker", "1", NULL, 0);
    submit(&T.loop, &blocker);
    WAIT_LOCK_WAITERS(1);

    /* 2023-10-03T10:40:00.123456Z and 1999-12-31T23:59:59.999999Z: microseconds from 2000-01-01, big-endian */
    static const char at_a[] = "\x00\x02\xA9\xCC\x48\x04\xE2\x40", at_b[] = "\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF";
    static const char json[] = "\1{\"x\": [1, 2.50, 12345678901234567890.5]}"; /* jsonb: version 1, then text */
    static const char big[] = "\x00\x20\x00\x00\x00\x00\x00\x01"; /* 2^53 + 1 */
    static const char text[] = "say \"hi\" \\ {x,y}";
    const elem_t a[] = {{at_a, 8}, {json, (int32_t)sizeof json - 1}, {big, 8}, {"\0\xff", 2}, {text, (int32_t)sizeof text - 1}};
    const elem_t b[] = {{at_b, 8}, {NULL, -1}, {NULL, -1}, {"", 0}, {NULL, -1}};
    bjob_init(&jobs[0], "a", "1", a, 5);
    bjob_init(&jobs[1], "b", "NULL", b, 5);
    bjob_init(&jobs[2], "c", "3", NULL, 0);
    for (int i = 0; i < 3; i++)
        submit(&T.loop, &jobs[i]);
    WAIT_QUEUED(T.db, 3);
    unlock_row();
    RUN_UNTIL(&T.loop, 4);
    ASSERT_ANSWER(&blocker, 0, "", 0);
    for (int i = 0; i < 3; i++)
        ASSERT_ANSWER(&jobs[i], 0, "", 1);
    pwt_assert_rows("SELECT k, v, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), j::text, n,"
                    " encode(b, 'hex'), s FROM t ORDER BY k COLLATE \"C\"",
                    "a|1|2023-10-03T10:40:00.123456|{\"x\": [1, 2.50, 12345678901234567890.5]}|9007199254740993|00ff|"
                    "say \"hi\" \\ {x,y}\n"
                    "b|NULL|1999-12-31T23:59:59.999999|NULL|NULL||NULL\n"
                    "blocker|0|NULL|NULL|NULL|NULL|NULL\n"
                    "c|3|NULL|NULL|NULL|NULL|NULL");
    assert_int_equal(writers_of("{a,b,c}"), 1);
}

/* ---- 8. the after statement ---------------------------------------------------------------- */

/*
 * The test's statement with an after statement: each new row's key comes back twice, as the
 * job's row and as "after:k" for the after statement, which stores what it is given in t_after
 * (whose CHECK refuses "after:boom", so that it can be made to fail).
 */
static const pw_db_stmt_t after_stmt = {
    .name = "db_exec_test_after",
    .sql = "WITH ins AS (INSERT INTO t SELECT * FROM unnest($1::text[], $2::int[]) ON CONFLICT DO NOTHING RETURNING k)"
           " SELECT k, NULL::text FROM ins UNION ALL SELECT NULL, 'after:' || k FROM ins",
    .ncols = 2,
    .check_sql = "SELECT k, v FROM t LIMIT 0",
    .after_sql = "INSERT INTO t_after SELECT unnest($1::text[])",
};

/* Waits until the after statement has run for done values and failed for failed ones, with none pending. */
#define WAIT_AFTER(done, failed) wait_after(__FILE__, __LINE__, (done), (failed))
static void wait_after(const char *file, int line, uint64_t done, uint64_t failed)
{
    double until = pw_now_ms() + WAIT_MS;
    for (;;) {
        uint64_t d = atomic_load(&T.metrics.after_done), f = atomic_load(&T.metrics.after_failed);
        int64_t pending = atomic_load(&T.metrics.after_pending);
        if (d == done && f == failed && pending == 0)
            return;
        if (d > done || f > failed || pw_now_ms() >= until)
            pwt_fail(file, line, "after statement: %llu value(s) done, %llu failed, %lld pending; expected %llu, %llu, 0",
                     (unsigned long long)d, (unsigned long long)f, (long long)pending, (unsigned long long)done,
                     (unsigned long long)failed);
        tloop_spin(&T.loop, 5);
    }
}

/* Rows of t_after whose transaction also wrote a row of t (the after statement must have its own). */
#define Q_AFTER_IN_GROUP "SELECT count(*) FROM t_after a JOIN t ON a.v = 'after:' || t.k WHERE a.xmin::text = t.xmin::text"

/*
 * A group's new rows reach the after statement once the group has committed, in a transaction of
 * its own, each once; the jobs were answered as usual (the blocker's row was there already: it
 * returned nothing). Jobs that come after, one at a time, reach it too.
 */
static void test_the_after_statement_runs_once_a_group_has_committed(void **state)
{
    (void)state;
    start_db_with(&after_stmt);
    tjob_t jobs[3];
    tjob_init(&jobs[0], "a1", "1", 1, 0);
    tjob_init(&jobs[1], "a2", "2", 1, 0);
    tjob_init(&jobs[2], "a3", "3", 1, 0);
    run_queued_behind_blocker(jobs, 3);
    for (int i = 0; i < 3; i++)
        ASSERT_ANSWER(&jobs[i], 0, "", 1);
    WAIT_AFTER(3, 0);
    pwt_assert_rows("SELECT v FROM t_after ORDER BY v", "after:a1\nafter:a2\nafter:a3");
    assert_int_equal(writers_of("{a1,a2,a3}"), 1);
    pwt_assert_rows(Q_AFTER_IN_GROUP, "0");

    tjob_t more[2];
    write_one(&more[0], "b1", 5);
    write_one(&more[1], "b2", 6);
    WAIT_AFTER(5, 0);
    pwt_assert_rows("SELECT v FROM t_after ORDER BY v", "after:a1\nafter:a2\nafter:a3\nafter:b1\nafter:b2");
    pwt_assert_rows(Q_AFTER_IN_GROUP, "0");
}

/*
 * A group that fails gives the after statement nothing: its jobs are written one by one, and only
 * what they commit is given, once (not again for the failed group). A trial, rolled back, gives
 * nothing either.
 */
static void test_a_group_that_does_not_commit_gives_the_after_statement_nothing(void **state)
{
    (void)state;
    start_db_with(&after_stmt);
    tjob_t jobs[3];
    tjob_init(&jobs[0], "f1", "1", 1, 0);
    tjob_init(&jobs[1], "fbad", "x", 1, 0);
    tjob_init(&jobs[2], "f2", "2", 1, 0);
    run_queued_behind_blocker(jobs, 3);
    ASSERT_ANSWER(&jobs[0], 0, "", 1);
    ASSERT_ANSWER(&jobs[1], PW_EREFUSED, "22P02", 0);
    ASSERT_ANSWER(&jobs[2], 0, "", 1);
    assert_int_equal(writers_of("{f1,f2}"), 2); /* the group failed, then each was written alone */

    tjob_t trial;
    tjob_init(&trial, "ftrial", "3", 1, PW_DB_TRIAL);
    submit(&T.loop, &trial);
    RUN_UNTIL(&T.loop, 5);
    ASSERT_ANSWER(&trial, 0, "", -1);
    WAIT_AFTER(2, 0);
    tloop_spin(&T.loop, 3 * PW_DB_AFTER_WAIT_MS); /* nothing more comes */
    WAIT_AFTER(2, 0);
    pwt_assert_rows("SELECT v FROM t_after ORDER BY v", "after:f1\nafter:f2");
}

/*
 * When the after statement fails, the jobs of its groups keep their answers and rows (they had
 * committed): its values are counted as failed, with an error, and the next group's are run as
 * usual.
 */
static void test_an_after_statement_that_fails_costs_no_job(void **state)
{
    (void)state;
    start_db_with(&after_stmt);
    uint64_t errors = atomic_load(&T.metrics.db_errors);
    tjob_t jobs[2];
    tjob_init(&jobs[0], "boom", "1", 1, 0);
    tjob_init(&jobs[1], "ok", "2", 1, 0);
    run_queued_behind_blocker(jobs, 2);
    ASSERT_ANSWER(&jobs[0], 0, "", 1);
    ASSERT_ANSWER(&jobs[1], 0, "", 1);
    WAIT_AFTER(0, 2);
    assert_int_equal(atomic_load(&T.metrics.db_errors) - errors, 1);
    pwt_assert_rows(Q_ROWS, "blocker|0\nboom|1\nok|2");
    pwt_assert_rows("SELECT count(*) FROM t_after", "0");

    tjob_t later;
    write_one(&later, "later", 4);
    WAIT_AFTER(1, 2);
    pwt_assert_rows("SELECT v FROM t_after", "after:later");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ports_answer_each_loop_on_its_own_thread, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_jobs_submitted_at_once_share_transactions, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_jobs_for_a_busy_connection_wait_without_waking_the_executor, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_a_refused_job_fails_only_itself, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_an_alone_job_is_never_grouped, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_a_trial_is_rolled_back, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_a_conflict_is_retried_alone_a_bounded_number_of_times, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_a_lock_timeout_fails_only_the_job_that_waits, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_a_database_that_is_down_answers_unavailable, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_an_abandoned_job_is_canceled, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_drain_answers_what_is_stuck_at_the_deadline, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_jobs_submitted_after_a_drain_are_still_taken, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_shards_keep_to_their_connection, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_a_full_queue_answers_unavailable, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_a_server_that_stops_answering_is_left_and_reconnected, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_a_job_that_arrives_during_a_probe_is_written_after_it, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_binary_columns_reach_the_server_as_their_types, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_the_after_statement_runs_once_a_group_has_committed, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_a_group_that_does_not_commit_gives_the_after_statement_nothing, fresh, cleanup),
        cmocka_unit_test_setup_teardown(test_an_after_statement_that_fails_costs_no_job, fresh, cleanup),
    };
    return cmocka_run_group_tests_name("db_exec", tests, group_setup, pwt_teardown_db);
}
