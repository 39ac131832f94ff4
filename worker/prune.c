/* Prunes what the tables no longer need to remember, a small transaction at a time. */
#include "worker/prune.h"

#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker/log.h"

/* A batch waits at most this for a lock, and runs at most this long; then it is retried (RETRIES times in all). */
#define PRUNE_TX_SETTINGS "BEGIN; SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '60s'"
#define PRUNE_RETRIES 5
/* Progress lines on stderr: at most one per this many milliseconds (and one at each table's end). */
#define PRUNE_PROGRESS_MS 2000

int pw_prune_parse_age(const char *s, long long *seconds)
{
    if (strcmp(s, "off") == 0) {
        *seconds = -1;
        return 0;
    }
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    long long n = strtoll(s, &end, 10);
    long long unit;
    switch (*end) {
    case 'd': unit = 86400; break;
    case 'h': unit = 3600; break;
    case 'm': unit = 60; break;
    case 's': unit = 1; break;
    default: return -1;
    }
    if (errno != 0 || end[1] != '\0' || n > LLONG_MAX / unit / 2)
        return -1;
    *seconds = n * unit;
    return 0;
}

/* The value of option argv[*i]: "--name=value" or "--name value" (advancing *i); NULL when it has none. */
static const char *option_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

static int is_option(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

int pw_prune_parse_args(int argc, char **argv, int first, pw_prune_opts_t *opts, char *err, size_t errlen)
{
    memset(opts, 0, sizeof *opts);
    pw_prune_parse_age(PW_PRUNE_RECEIPTS_DEFAULT, &opts->receipts_s);
    pw_prune_parse_age(PW_PRUNE_DEAD_LETTERS_DEFAULT, &opts->dead_letters_s);
    opts->status_events_s = -1;
    opts->batch = PW_PRUNE_BATCH_DEFAULT;
    opts->pause_ms = PW_PRUNE_PAUSE_MS_DEFAULT;
    static const char *const ages[] = {"--receipts-older-than", "--dead-letters-older-than", "--status-events-older-than"};
    long long *targets[] = {&opts->receipts_s, &opts->dead_letters_s, &opts->status_events_s};
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--dry-run") == 0) {
            opts->dry_run = 1;
            continue;
        }
        int matched = 0;
        for (size_t k = 0; k < sizeof ages / sizeof ages[0] && !matched; k++) {
            if (!is_option(arg, ages[k]))
                continue;
            matched = 1;
            const char *v = option_value(argc, argv, &i, ages[k]);
            if (v == NULL || pw_prune_parse_age(v, targets[k]) != 0) {
                snprintf(err, errlen, "%s needs an age: a whole number and d, h, m or s (e.g. 35d), or off", ages[k]);
                return -1;
            }
        }
        if (matched)
            continue;
        if (is_option(arg, "--pause")) {
            const char *v = option_value(argc, argv, &i, "--pause");
            char *end = NULL;
            long n = v != NULL ? strtol(v, &end, 10) : -1;
            if (v == NULL || *v < '0' || *v > '9' || *end != '\0' || n < 0 || n > 60000) {
                snprintf(err, errlen, "--pause needs milliseconds, 0 to 60000");
                return -1;
            }
            opts->pause_ms = n;
            continue;
        }
        if (is_option(arg, "--batch")) {
            const char *v = option_value(argc, argv, &i, "--batch");
            char *end = NULL;
            long n = v != NULL ? strtol(v, &end, 10) : 0;
            if (v == NULL || *v < '0' || *v > '9' || *end != '\0' || n < 1 || n > 1000000) {
                snprintf(err, errlen, "--batch needs a number of rows, 1 to 1000000");
                return -1;
            }
            opts->batch = n;
            continue;
        }
        snprintf(err, errlen, "unknown or incomplete option '%.100s'", arg);
        return -1;
    }
    /* Pub/Sub redelivers for up to 7 days (a subscription's longest retention), and a seek can replay up to 31 (a
       topic's): a receipt younger than that may still stop a duplicate. */
    if (opts->receipts_s >= 0 && opts->receipts_s < 7 * 86400) {
        snprintf(err, errlen, "--receipts-older-than below 7d would forget receipts Pub/Sub can still redeliver");
        return -1;
    }
    return 0;
}

/*
 * One table's walk. Each statement takes $1 (where the last batch ended: a key, or the start value), $2 (the
 * cut-off time) and $3 (the batch size), and answers one row: the rows removed (or that would be) and the key to go
 * on from, NULL when the walk is over.
 */
typedef struct {
    const char *table;
    const char *age_option;
    const char *age_column;   /* for the messages: "received" or "redriven" */
    const char *start;        /* $1 of the first batch */
    const char *sql_delete;
    const char *sql_count;    /* the same rows, counted (--dry-run) */
} walk_t;

/*
 * Receipts: by received_at (its index, migrations/0006), oldest first; each batch deletes the rows it names by
 * ctid (a TID scan, no second index walk). The next batch starts at the last time deleted (>=: rows of one group
 * share a time, and those the last batch left are still there; those it took are gone). Counting cannot step over
 * rows it leaves, so it counts a batch's rows and every tie of the batch's last time (> the previous one).
 */
static const walk_t RECEIPTS = {
    "pubsub_receipts", "--receipts-older-than", "received", "-infinity",
    "WITH gone AS ("
    " DELETE FROM pubsub_receipts WHERE ctid = ANY(ARRAY("
    "   SELECT ctid FROM pubsub_receipts WHERE received_at >= $1::timestamptz AND received_at < $2::timestamptz"
    "   ORDER BY received_at LIMIT $3::int))"
    " AND received_at < $2::timestamptz"
    " RETURNING received_at)"
    " SELECT count(*), max(received_at)::text FROM gone",
    "WITH b AS ("
    " SELECT received_at FROM pubsub_receipts WHERE received_at > $1::timestamptz AND received_at < $2::timestamptz"
    " ORDER BY received_at LIMIT $3::int),"
    " m AS (SELECT max(received_at) AS last FROM b)"
    " SELECT (SELECT count(*) FROM pubsub_receipts, m"
    "         WHERE received_at > $1::timestamptz AND received_at <= m.last),"
    "        (SELECT last::text FROM m)",
};

/* Dead letters: only those redriven before the cut-off (redriven_at NULL never matches), in id order. */
static const walk_t DEAD_LETTERS = {
    "dead_letters", "--dead-letters-older-than", "redriven", "0",
    "WITH b AS ("
    " SELECT id FROM dead_letters WHERE id > $1::bigint AND redriven_at < $2::timestamptz ORDER BY id LIMIT $3::int),"
    " gone AS (DELETE FROM dead_letters WHERE id = ANY(ARRAY(SELECT id FROM b)) AND redriven_at < $2::timestamptz"
    "          RETURNING 1)"
    " SELECT (SELECT count(*) FROM gone), (SELECT max(id)::text FROM b)",
    "WITH b AS ("
    " SELECT id FROM dead_letters WHERE id > $1::bigint AND redriven_at < $2::timestamptz ORDER BY id LIMIT $3::int)"
    " SELECT count(*), max(id)::text FROM b",
};

/*
 * Status events: in id order (its primary key; no index on received_at is kept for this, the table is the
 * largest), up to the first batch holding no row old enough: ids are taken as rows are written, so the old rows
 * come first.
 */
static const walk_t STATUS_EVENTS = {
    "status_events", "--status-events-older-than", "received", "0",
    "WITH b AS ("
    " SELECT id, received_at < $2::timestamptz AS old FROM status_events WHERE id > $1::bigint ORDER BY id LIMIT $3::int),"
    " gone AS (DELETE FROM status_events WHERE id = ANY(ARRAY(SELECT id FROM b WHERE old))"
    "          AND received_at < $2::timestamptz RETURNING 1)"
    " SELECT (SELECT count(*) FROM gone), (SELECT CASE WHEN bool_or(old) THEN max(id)::text END FROM b)",
    "WITH b AS ("
    " SELECT id, received_at < $2::timestamptz AS old FROM status_events WHERE id > $1::bigint ORDER BY id LIMIT $3::int)"
    " SELECT count(*) FILTER (WHERE old), CASE WHEN bool_or(old) THEN max(id)::text END FROM b",
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void print_error(const char *table, const char *what, const char *msg)
{
    char esc[512];
    fprintf(stderr, "prune: %s: %s failed: %s\n", table, what, pw_log_escape(msg, esc, sizeof esc));
}

static int command_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok;
}

/* A failure worth another try: a lock or statement timeout, a deadlock, a serialization failure. */
static int retryable(const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return state != NULL && (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0 || strcmp(state, "40P01") == 0 ||
                             strcmp(state, "40001") == 0);
}

/*
 * One batch in a transaction of its own. Returns 0 with *n and next (key to go on from, "" when the walk is over),
 * or -1 (printed).
 */
static int run_batch(PGconn *pg, const walk_t *w, const char *sql, const char *const params[3], long long *n, char *next,
                     size_t nextlen)
{
    for (int attempt = 1;; attempt++) {
        PGresult *r = PQexec(pg, PRUNE_TX_SETTINGS);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            print_error(w->table, "BEGIN", PQresultErrorMessage(r));
            PQclear(r);
            return -1;
        }
        PQclear(r);
        r = PQexecParams(pg, sql, 3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            *n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
            snprintf(next, nextlen, "%s", PQgetisnull(r, 0, 1) ? "" : PQgetvalue(r, 0, 1));
            PQclear(r);
            r = PQexec(pg, "COMMIT");
            if (PQresultStatus(r) == PGRES_COMMAND_OK) {
                PQclear(r);
                return 0;
            }
        }
        /* The batch (or its commit) failed: nothing of it is kept. */
        int again = retryable(r) && attempt < PRUNE_RETRIES;
        if (!again || PQstatus(pg) != CONNECTION_OK)
            print_error(w->table, "a batch", PQresultErrorMessage(r));
        PQclear(r);
        if (PQstatus(pg) != CONNECTION_OK)
            return -1;
        command_ok(pg, "ROLLBACK");
        if (!again)
            return -1;
        fprintf(stderr, "prune: %s: batch timed out or deadlocked (attempt %d of %d), trying again\n", w->table, attempt,
                PRUNE_RETRIES);
        sleep_ms(500L * attempt);
    }
}

/* The cut-off now - seconds: the value passed back to the server (*value) and a UTC text to print (*shown). */
static int cutoff(PGconn *pg, long long seconds, char *value, size_t valuelen, char *shown, size_t shownlen)
{
    char secs[32];
    snprintf(secs, sizeof secs, "%lld", seconds);
    const char *params[1] = {secs};
    PGresult *r = PQexecParams(pg,
                               "SELECT c::text, to_char(c AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                               " FROM (SELECT now() - $1::bigint * interval '1 second' AS c) t",
                               1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        print_error("prune", "reading the time", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    snprintf(value, valuelen, "%s", PQgetvalue(r, 0, 0));
    snprintf(shown, shownlen, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    return 0;
}

static void format_age(long long s, char *out, size_t len)
{
    if (s % 86400 == 0)
        snprintf(out, len, "%lldd", s / 86400);
    else if (s % 3600 == 0)
        snprintf(out, len, "%lldh", s / 3600);
    else if (s % 60 == 0)
        snprintf(out, len, "%lldm", s / 60);
    else
        snprintf(out, len, "%llds", s);
}

/* Walks one table to its end. Returns 0 (the count in *total) or -1. */
static int walk_table(PGconn *pg, const walk_t *w, long long seconds, const pw_prune_opts_t *opts, long long *total)
{
    char cut[128], shown[64], age[32], key[128], next[128], batch[24];
    *total = 0;
    if (cutoff(pg, seconds, cut, sizeof cut, shown, sizeof shown) != 0)
        return -1;
    format_age(seconds, age, sizeof age);
    snprintf(batch, sizeof batch, "%ld", opts->batch);
    snprintf(key, sizeof key, "%s", w->start);
    const char *verb = opts->dry_run ? "counting" : "deleting";
    fprintf(stderr, "prune: %s: %s rows %s before %s (older than %s), %ld per transaction%s\n", w->table, verb,
            w->age_column, shown, age, opts->batch, opts->pause_ms > 0 ? ", pausing between them" : "");
    long long t0 = now_ms(), last_progress = t0, batches = 0;
    for (;;) {
        const char *params[3] = {key, cut, batch};
        long long n;
        if (run_batch(pg, w, opts->dry_run ? w->sql_count : w->sql_delete, params, &n, next, sizeof next) != 0) {
            fprintf(stderr, "prune: %s: stopped after %lld row(s) %s; running it again goes on\n", w->table, *total,
                    opts->dry_run ? "counted" : "deleted");
            return -1;
        }
        *total += n;
        batches++;
        if (next[0] == '\0')
            break;
        snprintf(key, sizeof key, "%s", next);
        if (opts->pause_ms > 0)
            sleep_ms(opts->pause_ms);
        long long t = now_ms();
        if (t - last_progress >= PRUNE_PROGRESS_MS) {
            fprintf(stderr, "prune: %s: %lld %s so far, %lld batch(es), %.1f s\n", w->table, *total,
                    opts->dry_run ? "counted" : "deleted", batches, (double)(t - t0) / 1000);
            last_progress = t;
        }
    }
    fprintf(stderr, "prune: %s: done in %lld batch(es), %.1f s\n", w->table, batches, (double)(now_ms() - t0) / 1000);
    return 0;
}

/*
 * The roll-ups' pending rows (migration 0014) folded, as the worker's folder does every
 * ROLLUP_FOLD_MS: a deployment whose workers fold nothing (ROLLUP_FOLD_MS=0, or none running) gets
 * them folded here. One transaction; 0 when another fold holds the lock (that one folds them).
 */
static int fold(PGconn *pg, int dry_run)
{
    const char *sql = dry_run ? "SELECT count(*) FROM message_rollup_pending" : "SELECT pw_rollup_fold()";
    fprintf(stderr, "prune: message_rollup_pending: %s the roll-ups' pending rows\n", dry_run ? "counting" : "folding");
    long long t0 = now_ms();
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        print_error("message_rollup_pending", dry_run ? "counting" : "folding", PQresultErrorMessage(r));
        PQclear(r);
        printf("prune: message_rollup_pending: stopped by an error\n");
        return 1;
    }
    printf("prune: message_rollup_pending: %s %s\n", PQgetvalue(r, 0, 0), dry_run ? "would be folded" : "folded");
    PQclear(r);
    fprintf(stderr, "prune: message_rollup_pending: done in %.1f s\n", (double)(now_ms() - t0) / 1000);
    return 0;
}

int pw_prune_run(const char *conninfo, const pw_prune_opts_t *opts)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* counts and progress interleave in order in a job's log */
    const char *keys[] = {"application_name", "dbname", "client_encoding", NULL};
    const char *vals[] = {"pushworker-prune", conninfo, "UTF8", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pg) != CONNECTION_OK) {
        char esc[512];
        fprintf(stderr, "prune: cannot connect to the database: %s\n", pw_log_escape(PQerrorMessage(pg), esc, sizeof esc));
        PQfinish(pg);
        return 1;
    }
    if (opts->dry_run)
        printf("prune: dry run: nothing is deleted\n");
    const struct {
        const walk_t *walk;
        long long seconds;
    } tables[] = {{&RECEIPTS, opts->receipts_s}, {&DEAD_LETTERS, opts->dead_letters_s}, {&STATUS_EVENTS, opts->status_events_s}};
    int rc = 0;
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        const walk_t *w = tables[i].walk;
        if (tables[i].seconds < 0) {
            printf("prune: %s: kept (%s off)\n", w->table, w->age_option);
            continue;
        }
        long long total;
        if (walk_table(pg, w, tables[i].seconds, opts, &total) != 0) {
            printf("prune: %s: %lld %s, then stopped by an error\n", w->table, total,
                   opts->dry_run ? "would be deleted" : "deleted");
            rc = 1;
            break;
        }
        printf("prune: %s: %lld %s\n", w->table, total, opts->dry_run ? "would be deleted" : "deleted");
    }
    if (rc == 0)
        rc = fold(pg, opts->dry_run);
    PQfinish(pg);
    return rc;
}
