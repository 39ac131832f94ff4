/*
 * Fault injection under load: nothing acknowledged is lost, nothing is doubled.
 *
 * Every test drives the real worker with the redelivering client of redeliver.h (Pub/Sub's
 * behaviour: only 102/200/201/202/204 acknowledge, everything else is resent with backoff), injects
 * one fault mid-run, and ends by comparing the database with what the acknowledged pushes carried
 * (pwt_rd_check). Each test prints the client's counts (sent, acknowledged, retried, stored).
 *
 *   - PostgreSQL stopped with `pg_ctl -m immediate` a third of the way in, started again 3 s later
 *   - SIGTERM to the worker mid-load (drain, exit 0 within 10 s), a new worker on the same port
 *   - a stalled database (a lock the worker's statement needs, held 6 s) with PUSH_DEADLINE_MS=2000
 *   - the worker's backend terminated (pg_terminate_backend) while it runs a group, again and again
 *   - a stuck database (every PostgreSQL process stopped with SIGSTOP): /readyz 503 within seconds
 *   - the JWKS endpoint failing (500, garbage, down, hanging) with keys cached, and with none yet
 *   - a second SIGTERM during the drain of a verify-mode worker (the default mode)
 *   - 2,000 idle connections and slowloris clients while normal pushes flow
 * and first, that the checker itself reports a lost, an unexpected and an inconsistent row.
 *
 * The binary runs its own PostgreSQL cluster (scripts/dev-db start --fast in a temporary directory),
 * so stopping it never disturbs other tests; PW_TEST_DATABASE_URL is pointed at it before the
 * harness creates the test database. Under tests/run's PgBouncer pass (PW_TEST_POOLER_URL) and its
 * TZ=Asia/Kolkata pass every test is skipped with a message (faults are tested once; nothing here
 * depends on the time zone), and so they are under PW_TEST_VALGRIND (the worker under valgrind is too slow for the
 * deadlines asserted here). PWT_FAULTS_ALL_TZ=1 runs the Kolkata pass anyway; PWT_FAULTS_FILTER=pattern (cmocka's
 * wildcards, e.g. '*jwks*') runs only the matching tests; PWT_KEEP_LOGS=1 keeps the scratch directory (worker logs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"
#include "tests/integration/cluster.h"
#include "tests/integration/httpc.h"
#include "tests/integration/jwks.h"
#include "tests/integration/proc.h"
#include "tests/integration/util.h"
#include "tests/integration/redeliver.h"

#define SUB "projects/pw-test/subscriptions/faults-push"
#define AUD "https://pushworker-faults-7q2x9b4k3a-el.a.run.app/push"
#define SA "whatsapp-push@pw-test.iam.gserviceaccount.com"
#define KID "test-key-1"
#define KID_UNKNOWN "unknown-kid-7"
#define PG_BIN "/usr/lib/postgresql/15/bin"
#define GARBAGE_JWKS "{\"keys\": [{\"kty\": \"RSA\", \"kid\": \"test-key-1\", \"n\": "

/* ---- small helpers ------------------------------------------------------------------------------- */

/* The file's text, "" when it cannot be read. */
static char *slurp(const char *path)
{
    char *text = pwt_read_text(path);
    return text != NULL ? text : pwt_xstrdup("");
}

/* One quiet request (POST when body is not NULL); the status or -1. */
static long quiet_request(const char *base_url, const char *path, const char *body, const char *auth_header, long timeout_ms)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", base_url, path);
    return pwt_http_request(body != NULL ? "POST" : "GET", url, body, auth_header != NULL ? PWT_LIST(auth_header) : NULL, timeout_ms,
                            NULL);
}

/* ---- this binary's directory, its PostgreSQL cluster, its child processes ------------------------------- */

static const char *skip_reason; /* set in the group setup: every test is skipped with it */
static char work_dir[64];       /* /tmp/pwt-faults-XXXXXX (0755: the cluster runs as `postgres`) */
static char logs_dir[128], hang_py[160];
static pwt_cluster_t cluster; /* work_dir/pg; its dev-db and pg_ctl output in work_dir/commands.log */
static int keep_files; /* a test failed: keep work_dir's logs (not the cluster) at exit */

/* Workers started by this binary (not the harness): killed on any exit. */
#define MAX_WORKERS 12
static pwt_worker_t workers[MAX_WORKERS];

/* JWKS servers (scripts/mint-token serve, or the hanging one): each in its own process group. */
#define MAX_SERVERS 8
static pwt_jwks_server_t servers[MAX_SERVERS];

static void resume_postgres(void);

static void kill_children_now(void)
{
    resume_postgres();
    for (int i = 0; i < MAX_WORKERS; i++)
        if (workers[i].pid > 0)
            kill(workers[i].pid, SIGKILL);
    pwt_jwks_kill_all_now();
}

static void on_fatal_signal(int sig)
{
    kill_children_now();
    pwt_cluster_stop_in_handler(&cluster);
    if (work_dir[0] != '\0' && getenv("PWT_KEEP_LOGS") == NULL) {
        char *const rm[] = {"/bin/rm", "-rf", work_dir, NULL};
        pwt_run_in_handler(rm);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void cleanup_at_exit(void)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (workers[i].pid > 0)
            pwt_worker_stop(&workers[i]);
    for (int i = 0; i < MAX_SERVERS; i++)
        pwt_jwks_stop(&servers[i]);
    pwt_cluster_stop(&cluster);
    if (work_dir[0] != '\0') {
        if (getenv("PWT_KEEP_LOGS") != NULL || keep_files) {
            fprintf(stderr, "faults_test: worker, JWKS server and pg_ctl logs kept in %s\n", work_dir);
        } else {
            pwt_rm_rf(work_dir);
        }
        work_dir[0] = '\0';
    }
}

static const char *const PG_STOP_IMMEDIATE[] = {"-D", cluster.data, "-m", "immediate", "-w", "-t", "30", "stop", NULL};
static const char *const PG_START[] = {"-D", cluster.data, "-l", cluster.log, "-w", "-t", "30", "start", NULL};
static const char *const PG_STATUS[] = {"-D", cluster.data, "status", NULL};

/* Makes sure the private cluster runs (after a test that failed while it was down). */
static void ensure_pg_up(void)
{
    if (!cluster.running || pwt_pg_ctl(&cluster, PG_STATUS) == 0)
        return;
    fprintf(stderr, "faults_test: the private cluster is down; starting it again\n");
    if (pwt_pg_ctl(&cluster, PG_START) != 0)
        fprintf(stderr, "faults_test: pg_ctl start failed (see %s)\n", cluster.cmd_log);
}

/* SQL on a fresh connection to the test database (the harness's checker does not survive a restart). */
static void db_exec(const char *sql)
{
    char *rows = pwt_rows_at(pwt_db_url(), sql);
    if (rows == NULL)
        fail_msg("SQL failed (see above)");
    free(rows);
}

static void truncate_tables(void)
{
    db_exec("TRUNCATE message_logs, status_events, inbound_messages, contacts, pubsub_receipts, dead_letters RESTART IDENTITY");
}

/* ---- workers -------------------------------------------------------------------------------------------- */

static void print_worker_logs(void)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (workers[i].log_path[0] != '\0' && (workers[i].pid > 0 || workers[i].port > 0))
            pwt_worker_print_log(&workers[i], 30);
}

/* Fails the test after printing the logs of this test's workers (and keeping all logs at exit). */
#define FAULT_FAIL(...)                                                                                                            \
    do {                                                                                                                           \
        keep_files = 1;                                                                                                            \
        print_worker_logs();                                                                                                       \
        pwt_fail(__FILE__, __LINE__, __VA_ARGS__);                                                                                 \
    } while (0)

static pwt_worker_t *new_worker(void)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (workers[i].pid <= 0 && workers[i].port == 0)
            return &workers[i];
    fail_msg("faults_test: too many workers");
    return NULL;
}

/*
 * Starts `$PW_WORKER serve` on port (0: a free one) with the harness's settings, LOG_LEVEL=info, WORKER_THREADS=2,
 * then env (NULL-terminated "NAME=value", overriding). Waits up to 15 s for /readyz 200 (wait_ready) or /healthz 200.
 * Returns 0, or -1 when it exited (e.g. the port was taken) or never answered (it is then stopped).
 */
static int start_worker(pwt_worker_t *w, int port, const char *const *env, int wait_ready)
{
    const char *all[24] = {"LOG_LEVEL=info", "WORKER_THREADS=2"};
    for (size_t i = 0, k = 2; env != NULL && env[i] != NULL && k < 23; i++)
        all[k++] = env[i];
    return pwt_worker_start_at(w, port, wait_ready ? "/readyz" : "/healthz", all);
}

static pwt_worker_t *must_start_worker(const char *const *env, int wait_ready)
{
    pwt_worker_t *w = new_worker();
    if (start_worker(w, 0, env, wait_ready) != 0)
        FAULT_FAIL("a worker did not start");
    return w;
}

/* Stops every worker of the test (SIGTERM, up to 10 s); returns how many did not exit with 0. */
static int stop_workers(void)
{
    int bad = 0;
    for (int i = 0; i < MAX_WORKERS; i++) {
        if (workers[i].pid > 0) {
            int code = pwt_worker_stop(&workers[i]);
            if (code != 0) {
                fprintf(stderr, "faults_test: worker on port %d exited with %d after SIGTERM (expected 0)\n", workers[i].port,
                        code);
                pwt_worker_print_log(&workers[i], 30);
                bad++;
            }
        }
        memset(&workers[i], 0, sizeof workers[i]);
    }
    return bad;
}

/* The targets of a run: push t goes to w[t % n]; the pointers may change mid-run (a restarted worker). */
typedef struct {
    pwt_worker_t *w[8];
    int n;
} targets_t;

static const char *target_of(void *ctx, int t)
{
    targets_t *ts = ctx;
    pwt_worker_t *w = ts->w[t % ts->n];
    return w != NULL ? w->base_url : NULL;
}

/* A new set of n generated pushes to SUB (pwt_rd_generate: message ids "<prefix>-NNNNNN", seed, inbound_every). */
static pwt_rd_set_t *generated_set(const char *prefix, size_t n, unsigned seed, int inbound_every)
{
    pwt_rd_set_t *set = pwt_rd_set_new();
    pwt_rd_generate(set, SUB, prefix, n, seed, inbound_every);
    return set;
}

/*
 * Sends set to the workers of tg (pwt_rd_run): concurrency requests at most (0: its default), rate_per_s first attempts a
 * second (0: no limit), within deadline_ms; headers (NULL: none) on every request; tick(tick_ctx) injects the fault (NULL:
 * none); seed for the jitter, label for messages. Fills *st; returns the pushes left unacknowledged.
 */
static size_t run_load(pwt_rd_set_t *set, targets_t *tg, int concurrency, double rate_per_s, long deadline_ms,
                       const char *const *headers, pwt_rd_tick_fn tick, void *tick_ctx, unsigned seed, const char *label,
                       pwt_rd_stats_t *st)
{
    pwt_rd_opts_t o = {.target = target_of,
                       .target_ctx = tg,
                       .concurrency = concurrency,
                       .rate_per_s = rate_per_s,
                       .deadline_ms = deadline_ms,
                       .headers = headers,
                       .tick = tick,
                       .tick_ctx = tick_ctx,
                       .seed = seed,
                       .label = label};
    return pwt_rd_run(set, &o, st);
}

/* A value of the worker's /metrics (first sample of name), or -1. */
static long long metric(const pwt_worker_t *w, const char *name)
{
    pwt_response_t r = {0};
    long long v = -1;
    if (pwt_get(w, "/metrics", &r) == 200 && r.body != NULL) {
        size_t n = strlen(name);
        for (const char *p = r.body; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
            if (strncmp(p, name, n) == 0 && (p[n] == ' ' || p[n] == '{')) {
                const char *sp = strchr(p, ' ');
                if (sp != NULL)
                    v = atoll(sp + 1);
                break;
            }
        }
    }
    pwt_response_free(&r);
    return v;
}

/* pwt_rd_check (counts printed), failing the test with the workers' logs unless the run was complete and exact. */
#define ASSERT_EXACT(set, label)                                                                                                   \
    do {                                                                                                                           \
        pwt_rd_check_t k_;                                                                                                         \
        long long problems_ = pwt_rd_check((set), (label), 0, &k_);                                                                \
        if (problems_ != 0 || k_.unacked != 0)                                                                                     \
            FAULT_FAIL("%s: not exact: %lld pushes unacknowledged; missing %lld receipts, %lld statuses, %lld inbound;"            \
                       " %lld receipts not stored, %lld doubled, %lld unexpected, %lld message_logs inconsistencies"               \
                       " (%lld problems in all, details above)",                                                                   \
                       (label), k_.unacked, k_.missing_receipts, k_.missing_statuses, k_.missing_inbound, k_.receipts_not_stored,  \
                       k_.doubled, k_.unexpected, k_.logs_inconsistent, problems_);                                                \
    } while (0)

/* Expects every push answered; fails with the counts otherwise. */
static void assert_all_acked(size_t left, const pwt_rd_stats_t *st, const char *label)
{
    if (left != 0)
        FAULT_FAIL("%s: %zu of %zu pushes never acknowledged within the run's deadline", label, left, st->n);
}

/* ---- per-test setup -------------------------------------------------------------------------------------- */

static int test_setup(void **state)
{
    (void)state;
    if (skip_reason != NULL)
        return 0;
    ensure_pg_up();
    truncate_tables();
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    if (skip_reason != NULL)
        return 0;
    resume_postgres();
    int bad = stop_workers();
    for (int i = 0; i < MAX_SERVERS; i++)
        pwt_jwks_stop(&servers[i]);
    ensure_pg_up();
    return bad == 0 ? 0 : -1;
}

#define SKIP_IF_NEEDED()                                                                                                           \
    do {                                                                                                                           \
        if (skip_reason != NULL) {                                                                                                 \
            printf("# skipped: %s\n", skip_reason);                                                                                \
            skip();                                                                                                                \
        }                                                                                                                          \
    } while (0)

/* ---- 1. PostgreSQL stopped (immediate) mid-load, started 3 s later ----------------------------------------- */

typedef struct {
    int state; /* 0 loading, 1 stopping, 2 down, 3 starting, 4 back */
    size_t stop_at_acked;
    pid_t cmd;
    int stop_rc, start_rc;
    double t_stop_begin, t_down, t_start_begin, t_up, t_first_ack_after;
    long n503_at_stop, n503_at_up, transport_at_stop, transport_at_up;
    size_t acked_at_stop, acked_at_up;
} pg_fault_t;

static void pg_fault_tick(void *ctx, const pwt_rd_stats_t *st)
{
    pg_fault_t *f = ctx;
    int code;
    switch (f->state) {
    case 0:
        if (st->acked >= f->stop_at_acked) {
            f->cmd = pwt_pg_ctl_spawn(&cluster, PG_STOP_IMMEDIATE);
            f->t_stop_begin = st->elapsed_ms;
            f->n503_at_stop = st->n503;
            f->transport_at_stop = st->transport_errors;
            f->acked_at_stop = st->acked;
            f->state = 1;
        }
        break;
    case 1:
        if (pwt_reap(f->cmd, &code)) {
            f->stop_rc = code;
            f->t_down = st->elapsed_ms;
            f->state = 2;
        }
        break;
    case 2:
        if (st->elapsed_ms - f->t_down >= 3000) {
            f->cmd = pwt_pg_ctl_spawn(&cluster, PG_START);
            f->t_start_begin = st->elapsed_ms;
            f->state = 3;
        }
        break;
    case 3:
        if (pwt_reap(f->cmd, &code)) {
            f->start_rc = code;
            f->t_up = st->elapsed_ms;
            f->n503_at_up = st->n503;
            f->transport_at_up = st->transport_errors;
            f->acked_at_up = st->acked;
            f->state = 4;
        }
        break;
    case 4:
        if (f->t_first_ack_after == 0 && st->acked > f->acked_at_up)
            f->t_first_ack_after = st->last_ack_ms;
        break;
    }
}

static void test_postgres_stopped_immediately_mid_load_and_restarted_loses_and_doubles_nothing(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    pwt_worker_t *w = must_start_worker(PWT_LIST("LOG_LEVEL=info"), 1);
    pid_t pid = w->pid;
    pwt_rd_set_t *set = generated_set("pgstop", 3000, 1, 10);
    pg_fault_t f = {.stop_at_acked = 1000};
    targets_t tg = {.w = {w}, .n = 1};
    pwt_rd_stats_t st;
    size_t left = run_load(set, &tg, 32, 600, 90000, NULL, pg_fault_tick, &f, 1, "pg stop", &st);
    pwt_rd_print_stats("pg stop", &st);
    if (f.state != 4) {
        if (f.state == 1 || f.state == 3)
            waitpid(f.cmd, NULL, 0);
        FAULT_FAIL("the fault did not complete during the run (state %d: 0 loading, 1 stopping, 2 down, 3 starting)", f.state);
    }
    printf("# pg stop: `pg_ctl stop -m immediate` at %zu acknowledged (%.0f ms), down at %.0f ms, `pg_ctl start` at %.0f ms,"
           " up at %.0f ms; while down: %ld answers 503, %ld transport errors; first acknowledgement after the restart"
           " %.0f ms after it\n",
           f.acked_at_stop, f.t_stop_begin, f.t_down, f.t_start_begin, f.t_up, f.n503_at_up - f.n503_at_stop,
           f.transport_at_up - f.transport_at_stop, f.t_first_ack_after > 0 ? f.t_first_ack_after - f.t_up : -1.0);
    if (f.stop_rc != 0 || f.start_rc != 0) {
        char *t = slurp(cluster.cmd_log);
        fprintf(stderr, "pg_ctl output:\n%s\n", t);
        free(t);
        FAULT_FAIL("pg_ctl stop exited with %d, pg_ctl start with %d", f.stop_rc, f.start_rc);
    }
    if (f.n503_at_up - f.n503_at_stop <= 0)
        FAULT_FAIL("the worker answered no 503 while its database was down");
    if (!pwt_worker_alive(w) || w->pid != pid)
        FAULT_FAIL("the worker did not survive the database restart");
    assert_all_acked(left, &st, "pg stop");
    if (st.timeouts != 0)
        FAULT_FAIL("%ld requests got no answer within 10 s", st.timeouts);
    char *log = pwt_worker_log(w);
    printf("# pg stop: worker log: %d 'connection unavailable', %d 'connected and ready' lines\n",
           pwt_count_substr(log, "connection unavailable"), pwt_count_substr(log, "connected and ready"));
    free(log);
    ASSERT_EXACT(set, "pg stop");
    pwt_rd_set_free(set);
}

/* ---- 2. SIGTERM mid-load ----------------------------------------------------------------------------------- */

typedef struct {
    targets_t *tg;
    pwt_rd_set_t *set;
    size_t *in_flight; /* the pushes in flight when SIGTERM was sent */
    long *outcome;     /* and how that attempt ended: HTTP status, -1 refused, -3 dropped, -2 timeout, 0 not yet */
    size_t n_in_flight;
    pwt_worker_t *old;
    int state; /* 0 loading, 1 draining, 2 replaced */
    size_t term_at_acked;
    pid_t old_pid;
    int exit_code, same_port, killed;
    double t_term, t_exit;
    long long replace_ms; /* how long starting the replacement took */
    pwt_rd_stats_t at_term, at_exit;
} term_fault_t;

static void term_fault_tick(void *ctx, const pwt_rd_stats_t *st)
{
    term_fault_t *f = ctx;
    if (f->state == 0 && st->acked >= f->term_at_acked) {
        f->old_pid = f->old->pid;
        kill(f->old_pid, SIGTERM);
        f->t_term = st->elapsed_ms;
        f->at_term = *st;
        f->state = 1;
        f->in_flight = calloc(f->set->n, sizeof *f->in_flight);
        f->outcome = calloc(f->set->n, sizeof *f->outcome);
        for (size_t i = 0; i < f->set->n; i++)
            if (f->set->pushes[i].in_flight)
                f->in_flight[f->n_in_flight++] = i;
        return;
    }
    /* How the attempts in flight at SIGTERM ended (a finished one is not resent before its backoff, after this tick). */
    for (size_t j = 0; f->state >= 1 && j < f->n_in_flight; j++) {
        const pwt_rd_push_t *p = &f->set->pushes[f->in_flight[j]];
        if (f->outcome[j] == 0 && !p->in_flight)
            f->outcome[j] = p->final_status >= 0                         ? p->final_status
                            : p->final_status == -2                      ? -2
                            : p->last_curl_code == CURLE_COULDNT_CONNECT ? -1
                                                                         : -3;
    }
    if (f->state == 1) {
        int code;
        int done = pwt_reap(f->old_pid, &code);
        if (!done && st->elapsed_ms - f->t_term > 10000) { /* record it; the test fails after the run */
            kill(f->old_pid, SIGKILL);
            while (waitpid(f->old_pid, NULL, 0) < 0 && errno == EINTR)
                ;
            code = 128 + SIGKILL;
            f->killed = 1;
            done = 1;
        }
        if (!done)
            return;
        f->exit_code = code;
        f->t_exit = st->elapsed_ms;
        f->at_exit = *st;
        f->old->pid = 0;
        /* A new worker on the same port (SO_REUSEADDR); if that fails, on another port the client switches to. */
        pwt_worker_t *nw = new_worker();
        long long ts = pwt_now_ms();
        if (start_worker(nw, f->old->port, PWT_LIST("LOG_LEVEL=info"), 1) == 0) {
            f->same_port = 1;
        } else {
            memset(nw, 0, sizeof *nw);
            if (start_worker(nw, 0, PWT_LIST("LOG_LEVEL=info"), 1) != 0)
                FAULT_FAIL("the replacement worker did not start");
        }
        f->tg->w[0] = nw;
        f->replace_ms = pwt_now_ms() - ts;
        f->state = 2;
    }
}

static void test_sigterm_mid_load_drains_exits_0_within_10_s_and_a_new_worker_finishes_exactly(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    pwt_worker_t *w = must_start_worker(PWT_LIST("LOG_LEVEL=info"), 1);
    pwt_rd_set_t *set = generated_set("sigterm", 3000, 2, 10);
    targets_t tg = {.w = {w}, .n = 1};
    term_fault_t f = {.tg = &tg, .set = set, .old = w, .term_at_acked = 1000};
    pwt_rd_stats_t st;
    size_t left = run_load(set, &tg, 32, 0, 90000, NULL, term_fault_tick, &f, 2, "sigterm", &st);
    pwt_rd_print_stats("sigterm", &st);
    if (f.state != 2)
        FAULT_FAIL("SIGTERM was not sent or the worker was not replaced during the run (state %d)", f.state);
    printf("# sigterm: sent at %zu acknowledged (%.0f ms); the worker exited with %d after %.0f ms%s; during the drain:"
           " %ld acknowledged, %ld answers 503, %ld connections refused, %ld dropped without an answer; replacement ready %lld ms "
           "after the exit, %s\n",
           f.at_term.acked, f.t_term, f.exit_code, f.t_exit - f.t_term, f.killed ? " (KILLED after 10 s)" : "",
           f.at_exit.n2xx - f.at_term.n2xx, f.at_exit.n503 - f.at_term.n503, f.at_exit.refused - f.at_term.refused,
           f.at_exit.dropped - f.at_term.dropped, f.replace_ms,
           f.same_port ? "on the same port" : "on ANOTHER port (the same one could not be bound)");
    long in_204 = 0, in_503 = 0, in_refused = 0, in_dropped = 0, in_other = 0;
    for (size_t j = 0; j < f.n_in_flight; j++) {
        long oc = f.outcome[j];
        if (oc == 204)
            in_204++;
        else if (oc == 503)
            in_503++;
        else if (oc == -1)
            in_refused++;
        else if (oc == -3)
            in_dropped++;
        else
            in_other++;
    }
    printf("# sigterm: %zu requests in flight at SIGTERM ended: 204 %ld, 503 %ld, refused %ld, dropped without an answer %ld,"
           " other %ld\n",
           f.n_in_flight, in_204, in_503, in_refused, in_dropped, in_other);
    free(f.in_flight);
    free(f.outcome);
    char *old_log = pwt_worker_log(w); /* w's log_path is kept after the exit */
    int drain_lines = pwt_count_substr(old_log, "draining"), stopped_lines = pwt_count_substr(old_log, "\"stopped\"");
    free(old_log);
    printf("# sigterm: old worker's log: %d 'draining' line(s), %d 'stopped' line(s)\n", drain_lines, stopped_lines);
    if (f.killed)
        FAULT_FAIL("the worker did not exit within 10 s of SIGTERM (killed)");
    if (f.exit_code != 0)
        FAULT_FAIL("the worker exited with %d after SIGTERM (expected 0)", f.exit_code);
    if (f.t_exit - f.t_term > 10000)
        FAULT_FAIL("the worker took %.0f ms to exit after SIGTERM (more than 10 s)", f.t_exit - f.t_term);
    assert_all_acked(left, &st, "sigterm");
    if (st.timeouts != 0 || st.max_latency_ms >= 10000)
        FAULT_FAIL("%ld requests got no answer within 10 s (slowest %.0f ms)", st.timeouts, st.max_latency_ms);
    ASSERT_EXACT(set, "sigterm");
    pwt_rd_set_free(set);
}

/* ---- 3. a stalled database: a lock the worker's statement needs ------------------------------------------------ */

typedef struct {
    int state; /* 0 before, 1 locked, 2 released */
    PGconn *conn;
    double lock_at, hold_ms, t_locked, t_released;
    pwt_rd_stats_t at_lock, at_release;
    char err[300];
} lock_fault_t;

static void lock_fault_tick(void *ctx, const pwt_rd_stats_t *st)
{
    lock_fault_t *f = ctx;
    if (f->state == 0 && st->elapsed_ms >= f->lock_at) {
        f->conn = PQconnectdb(pwt_db_url());
        PGresult *r = NULL;
        if (PQstatus(f->conn) == CONNECTION_OK)
            r = PQexec(f->conn, "BEGIN; LOCK TABLE message_logs IN ACCESS EXCLUSIVE MODE");
        if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK)
            snprintf(f->err, sizeof f->err, "taking the lock: %s", PQerrorMessage(f->conn));
        PQclear(r);
        f->t_locked = st->elapsed_ms;
        f->at_lock = *st;
        f->state = 1;
    } else if (f->state == 1 && st->elapsed_ms - f->t_locked >= f->hold_ms) {
        PGresult *r = PQexec(f->conn, "ROLLBACK");
        if (PQresultStatus(r) != PGRES_COMMAND_OK && f->err[0] == '\0')
            snprintf(f->err, sizeof f->err, "releasing the lock: %s", PQerrorMessage(f->conn));
        PQclear(r);
        PQfinish(f->conn);
        f->conn = NULL;
        f->t_released = st->elapsed_ms;
        f->at_release = *st;
        f->state = 2;
    }
}

static void test_stalled_database_answers_503_by_the_push_deadline_and_recovers_exactly(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    pwt_worker_t *w = must_start_worker(PWT_LIST("LOG_LEVEL=info", "PUSH_DEADLINE_MS=2000"), 1);
    pwt_rd_set_t *set = generated_set("stall", 1500, 3, 10);
    lock_fault_t f = {.lock_at = 2000, .hold_ms = 6000};
    targets_t tg = {.w = {w}, .n = 1};
    pwt_rd_stats_t st;
    size_t left = run_load(set, &tg, 16, 150, 90000, NULL, lock_fault_tick, &f, 3, "stalled database", &st);
    if (f.conn != NULL) {
        PQfinish(f.conn);
        f.conn = NULL;
    }
    pwt_rd_print_stats("stalled database", &st);
    if (f.err[0] != '\0')
        FAULT_FAIL("%s", f.err);
    if (f.state != 2)
        FAULT_FAIL("the lock was not taken and released during the run (state %d)", f.state);
    size_t acked_after = 0;
    for (size_t i = 0; i < set->n; i++)
        acked_after += set->pushes[i].acked && set->pushes[i].acked_at_ms > f.t_released;
    printf("# stalled database: LOCK TABLE message_logs IN ACCESS EXCLUSIVE MODE held from %.0f to %.0f ms;"
           " while held: %ld acknowledged, %ld answers 503, %ld transport errors, %ld timeouts;"
           " %zu pushes acknowledged after the release; slowest answer %.0f ms (deadline 2000 ms)\n",
           f.t_locked, f.t_released, f.at_release.n2xx - f.at_lock.n2xx, f.at_release.n503 - f.at_lock.n503,
           f.at_release.transport_errors - f.at_lock.transport_errors, f.at_release.timeouts - f.at_lock.timeouts, acked_after,
           st.max_latency_ms);
    if (f.at_release.n503 - f.at_lock.n503 <= 0)
        FAULT_FAIL("no push was answered 503 while the database was stalled");
    if (st.timeouts != 0)
        FAULT_FAIL("%ld requests hung (no answer within 10 s)", st.timeouts);
    if (st.max_latency_ms >= 3000)
        FAULT_FAIL("slowest answer %.0f ms: not within PUSH_DEADLINE_MS=2000 + 1 s", st.max_latency_ms);
    if (st.transport_errors != 0)
        FAULT_FAIL("%ld requests failed at the transport level", st.transport_errors);
    if (acked_after == 0)
        FAULT_FAIL("no push was acknowledged after the lock was released");
    assert_all_acked(left, &st, "stalled database");
    /* Recovered: a fresh push is committed at once (it joins the set for the check). */
    size_t probe = set->n;
    pwt_rd_generate(set, SUB, "stall-after", 1, 4, 1);
    long code = quiet_request(w->base_url, "/", set->pushes[probe].body, NULL, 10000);
    set->pushes[probe].attempts = 1;
    set->pushes[probe].final_status = code;
    set->pushes[probe].acked = code == 204;
    if (code != 204)
        FAULT_FAIL("a push after the stall was answered %ld (expected 204)", code);
    ASSERT_EXACT(set, "stalled database");
    pwt_rd_set_free(set);
}

/* ---- 3b. the worker's backend terminated while a group is in flight ------------------------------------------- */

typedef struct {
    PGconn *conn;
    double next_at;
    int tries, kills;
    char err[300];
} backend_kill_t;

/* Every 400 ms (8 times), terminates the worker's backend if it is running a group (not idle). */
static void backend_kill_tick(void *ctx, const pwt_rd_stats_t *st)
{
    backend_kill_t *f = ctx;
    if (f->tries >= 8 || st->elapsed_ms < f->next_at || f->err[0] != '\0')
        return;
    PGresult *r = PQexec(f->conn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                  " WHERE application_name = 'pushworker' AND datname = current_database() AND state <> 'idle'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(f->err, sizeof f->err, "pg_terminate_backend: %s", PQerrorMessage(f->conn));
    } else if (atoi(PQgetvalue(r, 0, 0)) > 0) {
        f->kills++;
        f->tries++;
        f->next_at = st->elapsed_ms + 400;
    }
    PQclear(r);
}

static void test_backend_terminated_mid_group_every_push_is_stored_or_answered_503_and_stored_on_redelivery(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    pwt_worker_t *w = must_start_worker(PWT_LIST("LOG_LEVEL=info"), 1);
    pwt_rd_set_t *set = generated_set("termbackend", 2000, 5, 10);
    backend_kill_t f = {.conn = PQconnectdb(pwt_db_url()), .next_at = 1000};
    if (PQstatus(f.conn) != CONNECTION_OK)
        FAULT_FAIL("cannot connect: %s", PQerrorMessage(f.conn));
    /* Every group spends at least 50 ms on the server, so a backend is caught mid-group whatever
       the machine's speed (a fast group is idle nearly all the time, and the kills were luck). */
    /* (On this test's own connection: an earlier test restarted the server under the harness's.) */
    PGresult *slow = PQexec(f.conn, "CREATE FUNCTION pwt_slow_group() RETURNS trigger LANGUAGE plpgsql AS"
                                    " $$BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END$$;"
                                    " CREATE TRIGGER pwt_slow_group AFTER INSERT ON pubsub_receipts FOR EACH STATEMENT"
                                    " EXECUTE FUNCTION pwt_slow_group()");
    if (PQresultStatus(slow) != PGRES_COMMAND_OK)
        FAULT_FAIL("cannot slow the groups down: %s", PQerrorMessage(f.conn));
    PQclear(slow);
    targets_t tg = {.w = {w}, .n = 1};
    pwt_rd_stats_t st;
    size_t left = run_load(set, &tg, 32, 500, 90000, NULL, backend_kill_tick, &f, 5, "backend terminated", &st);
    PQclear(PQexec(f.conn, "DROP TRIGGER pwt_slow_group ON pubsub_receipts; DROP FUNCTION pwt_slow_group()"));
    PQfinish(f.conn);
    pwt_rd_print_stats("backend terminated", &st);
    printf("# backend terminated: %d backends terminated while running a group\n", f.kills);
    if (f.err[0] != '\0')
        FAULT_FAIL("%s", f.err);
    if (f.kills < 3)
        FAULT_FAIL("only %d backends were terminated mid-group (expected at least 3)", f.kills);
    if (!pwt_worker_alive(w))
        FAULT_FAIL("the worker died");
    assert_all_acked(left, &st, "backend terminated");
    ASSERT_EXACT(set, "backend terminated");
    pwt_rd_set_free(set);
}

/* ---- 3c. a stuck database (every PostgreSQL process stopped with SIGSTOP) ---------------------------------------- */

#define MAX_STOPPED 64
static pid_t stopped[MAX_STOPPED];
static volatile sig_atomic_t n_stopped;

/* SIGCONT to every process stopped by stop_postgres (async-signal-safe). */
static void resume_postgres(void)
{
    for (int i = 0; i < n_stopped; i++)
        kill(stopped[i], SIGCONT);
    n_stopped = 0;
}

/* SIGSTOP to the postmaster (first: it forks no more), then to each of its children. Returns how many. */
static int stop_postgres(void)
{
    char path[340];
    snprintf(path, sizeof path, "%s/postmaster.pid", cluster.data);
    char *text = slurp(path);
    pid_t pm = (pid_t)atol(text);
    free(text);
    if (pm <= 1 || kill(pm, SIGSTOP) != 0)
        return 0;
    stopped[n_stopped++] = pm;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL && n_stopped < MAX_STOPPED) {
        pid_t pid = (pid_t)atol(e->d_name);
        if (pid <= 1)
            continue;
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        char *stat = slurp(path);
        const char *close_paren = strrchr(stat, ')');
        int ppid = 0;
        if (close_paren != NULL && sscanf(close_paren + 1, " %*c %d", &ppid) == 1 && ppid == pm && kill(pid, SIGSTOP) == 0)
            stopped[n_stopped++] = pid;
        free(stat);
    }
    if (d != NULL)
        closedir(d);
    return n_stopped;
}

static void test_stuck_database_makes_readyz_503_within_seconds_and_recovers(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    pwt_worker_t *w = must_start_worker(PWT_LIST("LOG_LEVEL=info"), 1);
    pwt_sleep_ms(1500);
    if (quiet_request(w->base_url, "/readyz", NULL, NULL, 2000) != 200)
        FAULT_FAIL("/readyz was not 200 before the fault");
    int n = stop_postgres();
    long long t0 = pwt_now_ms();
    if (n < 2)
        FAULT_FAIL("could not stop the cluster's processes (%d stopped)", n);
    long long t_unready = -1;
    while (pwt_now_ms() - t0 < 20000) {
        if (quiet_request(w->base_url, "/readyz", NULL, NULL, 2000) == 503) {
            t_unready = pwt_now_ms() - t0;
            break;
        }
        pwt_sleep_ms(200);
    }
    pwt_rd_set_t *set = generated_set("stuck", 2, 6, 1);
    long stuck_code = quiet_request(w->base_url, "/", set->pushes[0].body, NULL, 12000);
    resume_postgres();
    long long t1 = pwt_now_ms(), t_ready = -1;
    while (pwt_now_ms() - t1 < 20000) {
        if (quiet_request(w->base_url, "/readyz", NULL, NULL, 2000) == 200) {
            t_ready = pwt_now_ms() - t1;
            break;
        }
        pwt_sleep_ms(200);
    }
    printf("# stuck database: %d processes stopped; /readyz 503 after %lld ms; a push while stopped: %ld;"
           " /readyz 200 again %lld ms after SIGCONT\n",
           n, t_unready, stuck_code, t_ready);
    if (t_unready < 0 || t_unready > 8000)
        FAULT_FAIL("/readyz did not say 503 within 8 s of the database being stopped (%lld ms)", t_unready);
    if (stuck_code != 503)
        FAULT_FAIL("a push while the database was stopped was answered %ld (expected 503)", stuck_code);
    if (t_ready < 0)
        FAULT_FAIL("/readyz did not say 200 within 20 s of the database resuming");
    long code = quiet_request(w->base_url, "/", set->pushes[1].body, NULL, 10000);
    if (code != 204)
        FAULT_FAIL("a push after the database resumed was answered %ld (expected 204)", code);
    set->pushes[1].acked = 1;
    set->pushes[1].attempts = 1;
    set->pushes[1].final_status = 204;
    /* The first push may or may not have been committed when it was answered 503: only check the second. */
    pwt_rd_check_t k;
    pwt_rd_check(set, "stuck", 0, &k);
    if (k.missing_receipts != 0 || k.missing_statuses != 0 || k.doubled != 0)
        FAULT_FAIL("after the stuck database: %lld receipts missing, %lld statuses missing, %lld doubled", k.missing_receipts,
                   k.missing_statuses, k.doubled);
    pwt_rd_set_free(set);
}

/* ---- 4. JWKS endpoint failures ---------------------------------------------------------------------------------- */

static char keys_dir[200], other_dir[200];
static char *token, *token_unknown_kid;

static pwt_jwks_server_t *new_server(void)
{
    for (int i = 0; i < MAX_SERVERS; i++)
        if (servers[i].pid <= 0) {
            memset(&servers[i], 0, sizeof servers[i]);
            return &servers[i];
        }
    fail_msg("faults_test: too many servers");
    return NULL;
}

/* A directory serving the key set (a copy of keys_dir's jwks.json). */
static void make_jwks_dir(const char *name, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", work_dir, name);
    if (mkdir(out, 0755) != 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", out, strerror(errno));
    char from[260], to[260];
    snprintf(from, sizeof from, "%s/jwks.json", keys_dir);
    snprintf(to, sizeof to, "%s/jwks.json", out);
    char *text = slurp(from);
    if (text[0] == '\0' || pwt_write_text(to, text) != 0)
        fail_msg("copying %s to %s failed", from, to);
    free(text);
}

static void dir_file(const char *dir, const char *name, const char *text)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (text == NULL) {
        unlink(path);
    } else if (pwt_write_text(path, text) != 0) {
        fail_msg("write %s: %s", path, strerror(errno));
    }
}

/* `scripts/mint-token serve dir port` (hang = 0) or the hanging server (hang = 1) on port (0: free). Waits until it listens. */
static void server_start(pwt_jwks_server_t *s, const char *dir, int port, int hang)
{
    char prefix[200];
    snprintf(prefix, sizeof prefix, "%s/%s", logs_dir, hang ? "hang-server" : "jwks-server");
    if (pwt_jwks_start(s, hang ? PWT_LIST("python3", "-u", hang_py) : NULL, dir, port, NULL, prefix) != 0)
        fail_msg("a JWKS server did not start");
}

static char *mint_token(const char *dir, const char *kid)
{
    char *out = pwt__mint_sign(__FILE__, __LINE__, dir, PWT_LIST("--kid", kid, "--aud", AUD, "--email", SA, "--exp-in", "3600"));
    char *h = pwt_xasprintf("Authorization: Bearer %s", out);
    free(out);
    return h;
}

static void ensure_keys(void)
{
    if (token != NULL)
        return;
    snprintf(keys_dir, sizeof keys_dir, "%s/keys", work_dir);
    snprintf(other_dir, sizeof other_dir, "%s/other", work_dir);
    int rc1 = pwt_mint_keygen(keys_dir, KID), rc2 = pwt_mint_keygen(other_dir, KID_UNKNOWN);
    if (rc1 != 0 || rc2 != 0)
        fail_msg("mint-token keygen failed (%d, %d)", rc1, rc2);
    token = mint_token(keys_dir, KID);
    token_unknown_kid = mint_token(other_dir, KID_UNKNOWN);
}

/* One push (not part of any checked set) with a token whose kid no key set has: makes the worker refetch keys. */
static long push_unknown_kid(const pwt_worker_t *w)
{
    static int seq;
    char mid[48], body_src[64];
    snprintf(mid, sizeof mid, "unknown-kid-%d", ++seq);
    snprintf(body_src, sizeof body_src, "{\"object\":\"whatsapp_business_account\",\"entry\":[]}");
    char *body = pwt_wrap(body_src, strlen(body_src), mid, SUB, "2024-03-05T10:00:00.123Z");
    long code = quiet_request(w->base_url, "/", body, token_unknown_kid, 10000);
    free(body);
    return code;
}

typedef struct {
    pwt_jwks_server_t *s_mint; /* W1's server: 500, then garbage, then down */
    pwt_jwks_server_t *s_hang; /* W2's server: hangs */
    pwt_worker_t *w1, *w2;
    int step;
    long unknown_answers[8];
    int n_unknown;
} cached_fault_t;

static void cached_tick(void *ctx, const pwt_rd_stats_t *st)
{
    cached_fault_t *f = ctx;
    if (f->step == 0 && st->elapsed_ms >= 2000) {
        dir_file(f->s_mint->dir, "fail", NULL);
        dir_file(f->s_mint->dir, "jwks.json", GARBAGE_JWKS);
        f->unknown_answers[f->n_unknown++] = push_unknown_kid(f->w1);
        f->step = 1;
    } else if (f->step == 1 && st->elapsed_ms >= 4000) {
        pwt_jwks_stop(f->s_mint);
        f->unknown_answers[f->n_unknown++] = push_unknown_kid(f->w1);
        f->unknown_answers[f->n_unknown++] = push_unknown_kid(f->w2);
        f->step = 2;
    }
}

typedef struct {
    const char *mode;
    pwt_jwks_server_t *server; /* NULL for "down" until fixed */
    int down_port;
    char dir[200];
    pwt_worker_t *w;
    int fixed;
    double t_fixed;
    long long last_look;
} nokeys_t;

typedef struct {
    nokeys_t *k;
    int n;
    long long last_look;
} nokeys_fault_t;

/* Two seconds into the run (pushes meanwhile get 503), repairs each key source once its worker has logged failed
 * fetches (two; one for the hanging server, whose fetches take the worker's 5 s timeout). */
static void nokeys_tick(void *ctx, const pwt_rd_stats_t *st)
{
    nokeys_fault_t *f = ctx;
    long long now = pwt_now_ms();
    if (st->elapsed_ms < 2000 || now - f->last_look < 200)
        return;
    f->last_look = now;
    for (int i = 0; i < f->n; i++) {
        nokeys_t *k = &f->k[i];
        if (k->fixed)
            continue;
        char *log = pwt_worker_log(k->w);
        int failed = pwt_count_substr(log, "no keys yet");
        free(log);
        int hang = strcmp(k->mode, "hang") == 0;
        if (failed < (hang ? 1 : 2))
            continue;
        if (strcmp(k->mode, "down") == 0) {
            k->server = new_server();
            server_start(k->server, k->dir, k->down_port, 0);
        } else if (strcmp(k->mode, "500") == 0) {
            dir_file(k->dir, "fail", NULL);
        } else if (strcmp(k->mode, "garbage") == 0) {
            char name[64];
            snprintf(name, sizeof name, "jwks-nokeys-%s", k->mode);
            make_jwks_dir(name, k->dir, sizeof k->dir);
        } else {
            dir_file(k->dir, "hang", NULL);
        }
        k->fixed = 1;
        k->t_fixed = st->elapsed_ms;
    }
}

static void test_jwks_down_slow_or_garbage_keeps_cached_keys_and_without_keys_answers_503_until_they_load(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    ensure_keys();
    const char *auth_headers[] = {token, NULL};

    /* (a) Keys cached: W1's JWKS answers 500, then garbage, then is down; W2's hangs. Pushes keep getting 204. */
    char dir_a[200], dir_h[200];
    make_jwks_dir("jwks-cached-a", dir_a, sizeof dir_a);
    make_jwks_dir("jwks-cached-h", dir_h, sizeof dir_h);
    pwt_jwks_server_t *sa = new_server();
    server_start(sa, dir_a, 0, 0);
    pwt_jwks_server_t *sh = new_server();
    server_start(sh, dir_h, 0, 1);
    const char *common[] = {"PUBSUB_AUTH=verify",      "PUBSUB_AUDIENCE=" AUD, "PUBSUB_SERVICE_ACCOUNT=" SA,
                            "JWKS_MIN_REFRESH_MS=500", "WORKER_THREADS=1",     "LOG_LEVEL=info"};
    pwt_worker_t *w1 =
        must_start_worker(PWT_LIST(common[0], common[1], common[2], common[3], common[4], common[5], sa->url_env), 1);
    pwt_worker_t *w2 =
        must_start_worker(PWT_LIST(common[0], common[1], common[2], common[3], common[4], common[5], sh->url_env), 1);
    /* Let the key sets age past JWKS_MIN_REFRESH_MS (the worker counts whole seconds): an unknown kid then triggers a refetch. */
    pwt_sleep_ms(2100);
    dir_file(dir_a, "fail", "");
    dir_file(dir_h, "hang", "");
    cached_fault_t cf = {.s_mint = sa, .s_hang = sh, .w1 = w1, .w2 = w2};
    cf.unknown_answers[cf.n_unknown++] = push_unknown_kid(w1);
    cf.unknown_answers[cf.n_unknown++] = push_unknown_kid(w2);

    pwt_rd_set_t *set = generated_set("jwks-cached", 600, 5, 10);
    targets_t tg = {.w = {w1, w2}, .n = 2};
    pwt_rd_stats_t st;
    size_t left = run_load(set, &tg, 8, 100, 60000, auth_headers, cached_tick, &cf, 5, "jwks cached", &st);
    pwt_rd_print_stats("jwks, keys cached", &st);
    /* The hanging fetch ends with the worker's 5 s fetch timeout: wait for it to be counted. */
    long long deadline = pwt_now_ms() + 8000;
    while (metric(w2, "pushworker_jwks_fetch_failures_total") < 1 && pwt_now_ms() < deadline)
        pwt_sleep_ms(100);
    long long f1 = metric(w1, "pushworker_jwks_fetch_failures_total"), f2 = metric(w2, "pushworker_jwks_fetch_failures_total");
    long long k1 = metric(w1, "pushworker_jwks_keys"), k2 = metric(w2, "pushworker_jwks_keys");
    printf("# jwks, keys cached: failed fetches: W1 (500, garbage, down) %lld, W2 (hanging) %lld; keys still loaded: %lld, %lld;"
           " JWKS requests: W1's server %d (500: %d), W2's server %d hung; unknown-kid pushes answered",
           f1, f2, k1, k2, pwt_jwks_count(sa, "jwks-request"), pwt_jwks_count(sa, " 500"), pwt_jwks_count(sh, "hang-request"));
    for (int i = 0; i < cf.n_unknown; i++)
        printf(" %ld", cf.unknown_answers[i]);
    printf("\n");
    assert_all_acked(left, &st, "jwks cached");
    if (st.timeouts != 0)
        FAULT_FAIL("%ld requests got no answer within 10 s", st.timeouts);
    if (st.attempts != (long)st.n || st.n2xx != (long)st.n)
        FAULT_FAIL("with keys cached every push must be acknowledged at once: %ld attempts for %zu pushes (503: %ld, 401: %ld)",
                   st.attempts, st.n, st.n503, st.n401);
    if (f1 < 3 || f2 < 1)
        FAULT_FAIL("the failing key sources were not exercised (W1 %lld failed fetches, expected >= 3; W2 %lld, expected >= 1)", f1,
                   f2);
    if (k1 < 1 || k2 < 1)
        FAULT_FAIL("a worker dropped its cached keys after failed refreshes (%lld, %lld)", k1, k2);
    if (quiet_request(w1->base_url, "/readyz", NULL, NULL, 2000) != 200 ||
        quiet_request(w2->base_url, "/readyz", NULL, NULL, 2000) != 200)
        FAULT_FAIL("/readyz is not 200 with cached keys");
    ASSERT_EXACT(set, "jwks, keys cached");
    pwt_rd_set_free(set);
    if (stop_workers() != 0)
        FAULT_FAIL("a worker did not exit with 0 after SIGTERM");
    pwt_jwks_stop(sh);
    truncate_tables();

    /* (b) No keys yet: workers started while their JWKS is down, answers 500, serves garbage, or hangs. */
    /* "down" last: its worker's fetch backoff (1, 2, 4, 8 s...) then lines up best with the repair 2 s into the run. */
    nokeys_t k[4] = {{.mode = "500"}, {.mode = "garbage"}, {.mode = "hang"}, {.mode = "down"}};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "jwks-nokeys-%s", k[i].mode);
        make_jwks_dir(name, k[i].dir, sizeof k[i].dir);
        char *url_env;
        if (strcmp(k[i].mode, "down") == 0) {
            k[i].down_port = pwt_free_port();
            url_env = pwt_xasprintf("OIDC_JWKS_URL=http://127.0.0.1:%d/oauth2/v3/certs", k[i].down_port);
        } else {
            if (strcmp(k[i].mode, "500") == 0)
                dir_file(k[i].dir, "fail", "");
            else if (strcmp(k[i].mode, "garbage") == 0)
                dir_file(k[i].dir, "jwks.json", GARBAGE_JWKS);
            else
                dir_file(k[i].dir, "hang", "");
            k[i].server = new_server();
            server_start(k[i].server, k[i].dir, 0, strcmp(k[i].mode, "hang") == 0);
            url_env = pwt_xasprintf("%s", k[i].server->url_env);
        }
        k[i].w = must_start_worker(PWT_LIST(common[0], common[1], common[2], common[3], common[4], common[5], url_env), 0);
        free(url_env);
    }
    for (int i = 0; i < 4; i++) {
        long ready = quiet_request(k[i].w->base_url, "/readyz", NULL, NULL, 2000);
        long health = quiet_request(k[i].w->base_url, "/healthz", NULL, NULL, 2000);
        pwt_rd_set_t *one = generated_set("jwks-probe", 1, 6, 0);
        long push = quiet_request(k[i].w->base_url, "/", one->pushes[0].body, token, 5000);
        pwt_rd_set_free(one);
        printf("# jwks, no keys (%s): /readyz %ld, /healthz %ld, a valid push %ld\n", k[i].mode, ready, health, push);
        if (ready != 503 || health != 200 || push != 503)
            FAULT_FAIL("JWKS %s, no keys: /readyz %ld (want 503), /healthz %ld (want 200), push %ld (want 503, never 401)",
                       k[i].mode, ready, health, push);
    }
    set = generated_set("jwks-nokeys", 400, 7, 10);
    targets_t tg4 = {.w = {k[0].w, k[1].w, k[2].w, k[3].w}, .n = 4};
    nokeys_fault_t nf = {.k = k, .n = 4};
    left = run_load(set, &tg4, 8, 0, 60000, auth_headers, nokeys_tick, &nf, 7, "jwks no keys", &st);
    pwt_rd_print_stats("jwks, no keys until repaired", &st);
    double first_ack[4];
    long refused[4];
    for (int i = 0; i < 4; i++) {
        first_ack[i] = -1;
        refused[i] = 0;
        for (size_t j = (size_t)i; j < set->n; j += 4) {
            const pwt_rd_push_t *p = &set->pushes[j];
            refused[i] += p->attempts - (p->acked ? 1 : 0);
            if (p->acked && (first_ack[i] < 0 || p->acked_at_ms < first_ack[i]))
                first_ack[i] = p->acked_at_ms;
        }
        char *log = pwt_worker_log(k[i].w);
        printf("# jwks, no keys (%s): %d failed fetches logged; source repaired at %.0f ms into the run; first push"
               " acknowledged at %.0f ms; %ld attempts refused\n",
               k[i].mode, pwt_count_substr(log, "no keys yet"), k[i].fixed ? k[i].t_fixed : -1.0, first_ack[i], refused[i]);
        free(log);
    }
    for (int i = 0; i < 4; i++)
        if (!k[i].fixed || first_ack[i] < k[i].t_fixed || refused[i] == 0)
            FAULT_FAIL("JWKS %s: a push was acknowledged before the key source was repaired, or none was refused"
                       " (repaired %d at %.0f ms, first acknowledgement at %.0f ms, %ld refused)",
                       k[i].mode, k[i].fixed, k[i].t_fixed, first_ack[i], refused[i]);
    if (st.timeouts != 0 || st.transport_errors != 0)
        FAULT_FAIL("without keys: %ld requests got no answer within 10 s, %ld failed at the transport level", st.timeouts,
                   st.transport_errors);
    if (st.n401 != 0 || st.n403 != 0 || st.other_status != 0)
        FAULT_FAIL("without keys pushes must get 503, never 401/403: %ld x 401, %ld x 403, %ld other", st.n401, st.n403,
                   st.other_status);
    if (st.n503 == 0)
        FAULT_FAIL("no push was answered 503 while the workers had no keys");
    for (int i = 0; i < 4; i++) {
        if (!pwt_worker_alive(k[i].w))
            FAULT_FAIL("the worker whose JWKS was %s died", k[i].mode);
        if (quiet_request(k[i].w->base_url, "/healthz", NULL, NULL, 2000) != 200 ||
            quiet_request(k[i].w->base_url, "/readyz", NULL, NULL, 2000) != 200)
            FAULT_FAIL("the worker whose JWKS was %s is not healthy and ready after the repair", k[i].mode);
    }
    assert_all_acked(left, &st, "jwks no keys");
    ASSERT_EXACT(set, "jwks, no keys until repaired");
    pwt_rd_set_free(set);
}

/* ---- 4b. a second SIGTERM during the drain (verify mode, the default) ----------------------------------------------- */

/*
 * Cloud Run sends one SIGTERM, but `docker stop` after a Ctrl-C, an impatient operator or a supervisor may send a second
 * one while the worker drains. It must not cut the drain short: the in-flight push still gets its answer (204 once the
 * stall ends) and the worker exits 0. A push is held in flight by a lock on message_logs; SIGTERM is sent twice, 300 ms
 * apart; the lock is released 2 s later.
 */
static void test_a_second_sigterm_during_the_drain_does_not_kill_a_verify_mode_worker(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    ensure_keys();
    char dir[200];
    make_jwks_dir("jwks-sigterm", dir, sizeof dir);
    pwt_jwks_server_t *js = new_server();
    server_start(js, dir, 0, 0);
    pwt_worker_t *w = must_start_worker(
        PWT_LIST("PUBSUB_AUTH=verify", "PUBSUB_AUDIENCE=" AUD, "PUBSUB_SERVICE_ACCOUNT=" SA, "WORKER_THREADS=1", js->url_env), 1);

    PGconn *lock = PQconnectdb(pwt_db_url());
    PGresult *r = PQexec(lock, "BEGIN; LOCK TABLE message_logs IN ACCESS EXCLUSIVE MODE");
    int locked = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!locked) {
        fprintf(stderr, "%s", PQerrorMessage(lock));
        PQfinish(lock);
        FAULT_FAIL("could not lock message_logs");
    }

    pwt_rd_set_t *set = generated_set("sigterm2", 1, 10, 1);
    /* The push, from a child process (so this thread can signal and watch): its exit status says how it was answered. */
    fflush(NULL);
    pid_t client = fork();
    if (client == 0) {
        long code = quiet_request(w->base_url, "/", set->pushes[0].body, token, 15000);
        _exit(code == 204 ? 0 : code == 503 ? 1 : code < 0 ? 2 : 3);
    }
    pwt_sleep_ms(500);
    long long t_term = pwt_now_ms();
    kill(w->pid, SIGTERM);
    pwt_sleep_ms(300);
    kill(w->pid, SIGTERM);
    int worker_code = -1, client_code = -1, released = 0;
    long long exited_after = -1;
    while (pwt_now_ms() - t_term < 12000) {
        if (!released && pwt_now_ms() - t_term >= 2000) {
            PQclear(PQexec(lock, "ROLLBACK"));
            released = 1;
        }
        if (exited_after < 0 && pwt_reap(w->pid, &worker_code))
            exited_after = pwt_now_ms() - t_term;
        if (exited_after >= 0 && released)
            break;
        pwt_sleep_ms(20);
    }
    PQfinish(lock);
    if (exited_after < 0) {
        kill(w->pid, SIGKILL);
        waitpid(w->pid, NULL, 0);
    }
    w->pid = 0;
    int st;
    if (waitpid(client, &st, 0) == client && WIFEXITED(st))
        client_code = WEXITSTATUS(st);
    static const char *const answers[] = {"204", "503", "no answer (connection closed or reset)", "another status"};
    const char *answer = client_code >= 0 && client_code <= 3 ? answers[client_code] : "?";
    char *log = pwt_worker_log(w);
    printf("# second SIGTERM (verify mode): the worker exited with %d %lld ms after the first SIGTERM ('stopped' logged: %s);"
           " the push in flight got %s\n",
           worker_code, exited_after, strstr(log, "\"stopped\"") ? "yes" : "no", answer);
    free(log);
    if (worker_code != 0 || client_code > 1)
        FAULT_FAIL("a second SIGTERM during the drain: worker exit %d (want 0; 143 = killed by SIGTERM), in-flight push: %s"
                   " (want 204 or 503)",
                   worker_code, answer);
    pwt_rd_set_free(set);
}

/* ---- 5. connection floods ------------------------------------------------------------------------------------------- */

#define IDLE_CONNECTIONS 2000
#define SLOW_CONNECTIONS 20

typedef struct {
    int *fds;
    int n;
    size_t sent;    /* bytes of the request sent on each so far */
    long long last; /* when the last byte went */
    long long start;
    int closed_by_server;
} slowloris_t;

static const char SLOW_REQUEST[] = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                   "X-Slowloris: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";

static void slowloris_tick(void *ctx, const pwt_rd_stats_t *st)
{
    (void)st;
    slowloris_t *s = ctx;
    long long now = pwt_now_ms();
    if (now - s->start > 10000 || now - s->last < 200 || s->sent >= sizeof SLOW_REQUEST - 1)
        return;
    s->last = now;
    for (int i = 0; i < s->n; i++) {
        if (s->fds[i] < 0)
            continue;
        if (send(s->fds[i], SLOW_REQUEST + s->sent, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) {
            close(s->fds[i]);
            s->fds[i] = -1;
            s->closed_by_server++;
        }
    }
    s->sent++;
}

/* Opens n connections to port (non-blocking connects, then waits up to 5 s); returns how many are established. */
static int open_connections(int port, int *fds, int n)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons((uint16_t)port)};
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fds[i] < 0)
            continue;
        if (connect(fds[i], (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
    struct pollfd *p = calloc((size_t)n, sizeof *p);
    int ok = 0;
    long long deadline = pwt_now_ms() + 5000;
    for (;;) {
        int pending = 0;
        for (int i = 0; i < n; i++) {
            p[i].fd = fds[i];
            p[i].events = POLLOUT;
            p[i].revents = 0;
        }
        poll(p, (nfds_t)n, 100);
        ok = 0;
        for (int i = 0; i < n; i++) {
            if (fds[i] < 0)
                continue;
            int err = 0;
            socklen_t len = sizeof err;
            if (p[i].revents & (POLLOUT | POLLERR | POLLHUP)) {
                getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len);
                if (err == 0)
                    ok++;
            } else {
                pending++;
            }
        }
        if (pending == 0 || pwt_now_ms() > deadline)
            break;
    }
    free(p);
    return ok;
}

/* How many of fds the peer has closed (a read gives 0 or an error other than EAGAIN). */
static int count_closed(const int *fds, int n)
{
    int closed = 0;
    for (int i = 0; i < n; i++) {
        if (fds[i] < 0) {
            closed++;
            continue;
        }
        char c;
        ssize_t r = recv(fds[i], &c, 1, MSG_DONTWAIT | MSG_PEEK);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            closed++;
    }
    return closed;
}

static void test_idle_connection_flood_and_slowloris_do_not_starve_normal_pushes(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t before = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            printf("# flood: RLIMIT_NOFILE raised from %llu to %llu\n", (unsigned long long)before,
                   (unsigned long long)rl.rlim_cur);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < IDLE_CONNECTIONS + SLOW_CONNECTIONS + 200)
        FAULT_FAIL("RLIMIT_NOFILE is %llu: too low for %d connections", (unsigned long long)rl.rlim_cur, IDLE_CONNECTIONS);

    pwt_worker_t *w = must_start_worker(PWT_LIST("LOG_LEVEL=info"), 1);
    int *idle = malloc(IDLE_CONNECTIONS * sizeof *idle);
    int *slow = malloc(SLOW_CONNECTIONS * sizeof *slow);
    long long t_open = pwt_now_ms();
    int idle_ok = open_connections(w->port, idle, IDLE_CONNECTIONS);
    int slow_ok = open_connections(w->port, slow, SLOW_CONNECTIONS);
    printf("# flood: %d of %d idle connections and %d of %d slowloris connections established in %lld ms\n", idle_ok,
           IDLE_CONNECTIONS, slow_ok, SLOW_CONNECTIONS, pwt_now_ms() - t_open);
    if (idle_ok < IDLE_CONNECTIONS * 9 / 10)
        FAULT_FAIL("only %d of %d connections could be opened", idle_ok, IDLE_CONNECTIONS);

    slowloris_t sl = {.fds = slow, .n = SLOW_CONNECTIONS, .start = pwt_now_ms()};
    pwt_rd_set_t *set = generated_set("flood", 2000, 8, 10);
    targets_t tg = {.w = {w}, .n = 1};
    pwt_rd_stats_t st;
    size_t left = run_load(set, &tg, 16, 200, 60000, NULL, slowloris_tick, &sl, 8, "flood", &st);
    pwt_rd_print_stats("flood", &st);
    double p99 = pwt_rd_latency_ms(0.99);
    int idle_closed = count_closed(idle, IDLE_CONNECTIONS), slow_closed = count_closed(slow, SLOW_CONNECTIONS);
    printf("# flood: after %.1f s: %d of %d idle connections closed by the worker; slowloris: %zu header bytes sent one per"
           " 200 ms, %d of %d connections closed by the worker (%d while sending)\n",
           st.elapsed_ms / 1000.0, idle_closed, IDLE_CONNECTIONS, sl.sent, slow_closed, SLOW_CONNECTIONS, sl.closed_by_server);
    long health = quiet_request(w->base_url, "/healthz", NULL, NULL, 2000);
    for (int i = 0; i < IDLE_CONNECTIONS; i++)
        if (idle[i] >= 0)
            close(idle[i]);
    for (int i = 0; i < SLOW_CONNECTIONS; i++)
        if (slow[i] >= 0)
            close(slow[i]);
    free(idle);
    free(slow);
    if (!pwt_worker_alive(w) || health != 200)
        FAULT_FAIL("the worker did not survive the flood (/healthz %ld)", health);
    assert_all_acked(left, &st, "flood");
    if (st.timeouts != 0)
        FAULT_FAIL("%ld pushes got no answer within 10 s during the flood", st.timeouts);
    if (p99 >= 1000)
        FAULT_FAIL("p99 latency %.0f ms during the flood (want < 1000 ms)", p99);
    ASSERT_EXACT(set, "flood");
    pwt_rd_set_free(set);
}

/* ---- 0. the checker itself notices a lost, an unexpected and an inconsistent row ------------------------------------- */

static void test_the_checker_notices_lost_unexpected_and_inconsistent_rows(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    pwt_worker_t *w = must_start_worker(PWT_LIST("LOG_LEVEL=info"), 1);
    pwt_rd_set_t *set = generated_set("checker", 60, 9, 3);
    targets_t tg = {.w = {w}, .n = 1};
    pwt_rd_stats_t st;
    size_t left = run_load(set, &tg, 4, 0, 30000, NULL, NULL, NULL, 9, "checker", &st);
    assert_all_acked(left, &st, "checker");
    pwt_rd_check_t k;
    if (pwt_rd_check(set, "checker (untouched)", 0, &k) != 0)
        FAULT_FAIL("a clean run is not exact");
    /* One of each kind of damage; each must be reported. */
    db_exec("DELETE FROM pubsub_receipts WHERE message_id = 'checker-000001';"
            "DELETE FROM status_events WHERE id = (SELECT min(id) FROM status_events);"
            "DELETE FROM inbound_messages WHERE wa_msg_id = 'wamid.PWRDIN.checker.000003';"
            "INSERT INTO pubsub_receipts (subscription, message_id, publish_time, outcome)"
            " VALUES ('" SUB "', 'nobody-sent-this', now(), 'stored');"
            "UPDATE message_logs SET whatsapp_status = '{}' WHERE id = (SELECT min(id) FROM message_logs"
            " WHERE bsp_msg_id IN (SELECT bsp_msg_id FROM status_events));"
            "INSERT INTO dead_letters (subscription, message_id, reason, body) VALUES ('" SUB "', 'dl-1', 'test', 'x')");
    long long problems = pwt_rd_check(set, "checker (damaged on purpose: the problems above are expected)", 0, &k);
    printf("# checker: after damage: %lld problems: missing %lld receipts, %lld statuses, %lld inbound; %lld unexpected;"
           " %lld message_logs inconsistencies\n",
           problems, k.missing_receipts, k.missing_statuses, k.missing_inbound, k.unexpected, k.logs_inconsistent);
    if (k.missing_receipts != 1 || k.missing_statuses != 1 || k.missing_inbound != 1 || k.unexpected < 1 ||
        k.logs_inconsistent < 1 || problems < 6)
        FAULT_FAIL("the checker missed damage it was shown");
    /* A subtler one: a current_status that disagrees with whatsapp_status (all keys present, times right). */
    long long before = k.logs_inconsistent;
    db_exec("UPDATE message_logs SET current_status = 'sent' WHERE id = (SELECT min(id) FROM message_logs"
            " WHERE current_status = 'read' AND whatsapp_status <> '{}')");
    pwt_rd_check(set, "checker (a wrong current_status on purpose: one more inconsistency expected)", 0, &k);
    printf("# checker: a wrong current_status: %lld message_logs inconsistencies (was %lld)\n", k.logs_inconsistent, before);
    if (k.logs_inconsistent != before + 1)
        FAULT_FAIL("the checker missed a wrong current_status");
    pwt_rd_set_free(set);
}

/* ---- group setup ------------------------------------------------------------------------------------------------- */

static const char HANG_SERVER_PY[] =
    "# A JWKS server that hangs (30 s, longer than the worker's fetch timeout) while DIR/hang exists,\n"
    "# and otherwise serves DIR/jwks.json like scripts/mint-token serve.\n"
    "import http.server, os, sys, time\n"
    "d, port = sys.argv[1], int(sys.argv[2])\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def do_GET(self):\n"
    "        if os.path.exists(os.path.join(d, 'hang')):\n"
    "            print('hang-request GET %s' % self.path, flush=True)\n"
    "            time.sleep(30)\n"
    "            return\n"
    "        with open(os.path.join(d, 'jwks.json'), 'rb') as f:\n"
    "            body = f.read()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Type', 'application/json')\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.send_header('Cache-Control', 'public, max-age=3600')\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "        print('jwks-request GET %s 200' % self.path, flush=True)\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "class S(http.server.ThreadingHTTPServer):\n"
    "    daemon_threads = True\n"
    "srv = S(('127.0.0.1', port), H)\n"
    "print('hang-serve listening on 127.0.0.1:%d' % port, flush=True)\n"
    "srv.serve_forever()\n";

static int group_setup(void **state)
{
    (void)state;
    const char *pooler = getenv("PW_TEST_POOLER_URL");
    const char *tz = getenv("TZ");
    if (getenv("PW_TEST_VALGRIND") != NULL && *getenv("PW_TEST_VALGRIND") != '\0') {
        skip_reason = "the worker runs under valgrind: the deadlines and latencies asserted here mean nothing at that speed"
                      " (make test-faults runs them)";
    } else if (pooler != NULL && *pooler != '\0') {
        skip_reason = "the PgBouncer pass: this binary runs its own PostgreSQL cluster, and faults are tested once";
    } else if (tz != NULL && strcmp(tz, "Asia/Kolkata") == 0 && getenv("PWT_FAULTS_ALL_TZ") == NULL) {
        skip_reason = "the TZ=Asia/Kolkata pass: nothing here depends on the time zone, and faults are tested once"
                      " (PWT_FAULTS_ALL_TZ=1 runs them)";
    }
    if (skip_reason != NULL) {
        printf("# faults: skipping every test: %s\n", skip_reason);
        return 0;
    }

    atexit(cleanup_at_exit);
    pwt_on_fatal_signals(on_fatal_signal);
    signal(SIGPIPE, SIG_IGN);

    if (pwt_make_work_dir("pwt-faults", work_dir, sizeof work_dir) != 0)
        return -1;
    char pg_dir[128], cmd_log[128], mint_err[200];
    snprintf(pg_dir, sizeof pg_dir, "%s/pg", work_dir);
    snprintf(cmd_log, sizeof cmd_log, "%s/commands.log", work_dir);
    snprintf(logs_dir, sizeof logs_dir, "%s/logs", work_dir);
    snprintf(hang_py, sizeof hang_py, "%s/hang_server.py", work_dir);
    snprintf(mint_err, sizeof mint_err, "%s/mint-token.stderr", logs_dir);
    if (mkdir(logs_dir, 0755) != 0 || pwt_write_text(hang_py, HANG_SERVER_PY) != 0) {
        fprintf(stderr, "faults_test: cannot prepare %s\n", work_dir);
        return -1;
    }
    if (pwt_cluster_init(&cluster, pg_dir, cmd_log) != 0 || pwt_mint_init(mint_err) != 0)
        return -1;

    long long t0 = pwt_now_ms();
    if (pwt_cluster_start(&cluster) != 0)
        return -1;
    printf("# faults: private PostgreSQL cluster in %s started in %lld ms\n", pg_dir, pwt_now_ms() - t0);
    setenv("PW_TEST_DATABASE_URL", cluster.url, 1);
    return pwt_suite_start("faults", NULL, NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    if (skip_reason != NULL)
        return 0;
    stop_workers();
    for (int i = 0; i < MAX_SERVERS; i++)
        pwt_jwks_stop(&servers[i]);
    ensure_pg_up();
    pwt_db_drop();
    free(token);
    free(token_unknown_kid);
    token = token_unknown_kid = NULL;
    cleanup_at_exit();
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *filter = getenv("PWT_FAULTS_FILTER"); /* e.g. "*sigterm*": run only the matching tests */
    if (filter != NULL && *filter != '\0')
        cmocka_set_test_filter(filter);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_the_checker_notices_lost_unexpected_and_inconsistent_rows, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_postgres_stopped_immediately_mid_load_and_restarted_loses_and_doubles_nothing,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_mid_load_drains_exits_0_within_10_s_and_a_new_worker_finishes_exactly,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_stalled_database_answers_503_by_the_push_deadline_and_recovers_exactly, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(
            test_backend_terminated_mid_group_every_push_is_stored_or_answered_503_and_stored_on_redelivery, test_setup,
            test_teardown),
        cmocka_unit_test_setup_teardown(test_stuck_database_makes_readyz_503_within_seconds_and_recovers, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(
            test_jwks_down_slow_or_garbage_keeps_cached_keys_and_without_keys_answers_503_until_they_load, test_setup,
            test_teardown),
        cmocka_unit_test_setup_teardown(test_a_second_sigterm_during_the_drain_does_not_kill_a_verify_mode_worker, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_idle_connection_flood_and_slowloris_do_not_starve_normal_pushes, test_setup,
                                        test_teardown),
    };
    return cmocka_run_group_tests_name("faults", tests, group_setup, group_teardown);
}
