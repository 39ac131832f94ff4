/* The roll-ups' folder: see worker/fold.h. */
#include "worker/fold.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker/log.h"
#include "worker/util.h"

struct pw_fold {
    const pw_config_t *cfg;
    pw_metrics_t *metrics;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stopping;        /* under lock */
    int busy;            /* under lock: a fold's statement is in progress */
    PGcancel *cancel;    /* under lock: the connection's, while it is open */
    PGconn *pg;          /* the folder's thread only */
    int failing;         /* the folder's thread only: the last attempt failed (logged once per run of failures) */
};

/* The same keywords as the executor's connections (worker/db.c), under another application_name. */
static const char *const fold_keys[] = {"application_name", "connect_timeout", "keepalives", "keepalives_idle",
                                        "keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname",
                                        "client_encoding", NULL};

static void set_cancel(pw_fold_t *f, PGcancel *c)
{
    pthread_mutex_lock(&f->lock);
    PGcancel *old = f->cancel;
    f->cancel = c;
    pthread_mutex_unlock(&f->lock);
    if (old != NULL)
        PQfreeCancel(old);
}

static void disconnect(pw_fold_t *f)
{
    set_cancel(f, NULL);
    if (f->pg != NULL)
        PQfinish(f->pg);
    f->pg = NULL;
}

/* A failed attempt: counted, and logged when it is the first of a run (what libpq said, never the URL). */
static void failed(pw_fold_t *f, const char *what, const char *detail)
{
    pw_metrics_inc(&f->metrics->rollup_fold_errors, 1);
    if (!f->failing) {
        char esc[300];
        pw_log_warning("roll-up fold: %s: %s (the rows stay pending and the roll-up views count them; retried every %d ms)",
                       what, pw_log_escape(detail, esc, sizeof esc), f->cfg->rollup_fold_ms);
    }
    f->failing = 1;
}

/*
 * One fold, in a transaction whose commit does not wait for its WAL to reach the disk:
 * synchronous_commit is set off for this transaction only (set_config's is_local), which is the
 * statement's own, so it holds behind a transaction-mode pooler too. A crash can lose only a whole
 * fold: its rows are then pending again, as if it had not run, and every view answers the same.
 * Measured (BENCHMARKS.md, "The roll-ups folded off the write path"): paced at 3,000 pushes/s,
 * p99 7.7-43.6 ms with the fold's commit waiting for its flush, 8.6-8.8 ms without.
 */
#define FOLD_SQL "SELECT set_config('synchronous_commit', 'off', true), pw_rollup_fold()"

static void fold_once(pw_fold_t *f)
{
    if (f->pg == NULL) {
        const char *vals[] = {"pushworker-fold", "5", "1", "5", "2", "3", "10000", f->cfg->database_url, "UTF8", NULL};
        f->pg = PQconnectdbParams(fold_keys, vals, 1);
        if (f->pg == NULL || PQstatus(f->pg) != CONNECTION_OK) {
            failed(f, "cannot connect", f->pg != NULL ? PQerrorMessage(f->pg) : "out of memory");
            disconnect(f);
            return;
        }
        set_cancel(f, PQgetCancel(f->pg));
    }
    double t0 = pw_now_ms();
    pthread_mutex_lock(&f->lock);
    f->busy = 1;
    pthread_mutex_unlock(&f->lock);
    PGresult *r = PQexec(f->pg, FOLD_SQL);
    pthread_mutex_lock(&f->lock);
    f->busy = 0;
    pthread_mutex_unlock(&f->lock);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        long long rows = atoll(PQgetvalue(r, 0, 1));
        pw_metrics_inc(&f->metrics->rollup_folded_rows, (uint64_t)rows);
        pw_metrics_observe_seconds(&f->metrics->rollup_fold_seconds, (pw_now_ms() - t0) / 1000.0);
        if (f->failing)
            pw_log_info("roll-up fold: working again (%lld rows folded)", rows);
        f->failing = 0;
    } else {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        failed(f, state != NULL && strcmp(state, "42883") == 0 ? "the database lacks migration 0014 (run worker migrate)"
                                                                : "pw_rollup_fold() failed",
               PQresultErrorMessage(r));
        if (PQstatus(f->pg) != CONNECTION_OK)
            disconnect(f);
    }
    PQclear(r);
}

static void *fold_main(void *arg)
{
    pw_fold_t *f = arg;
    pthread_mutex_lock(&f->lock);
    while (!f->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        long long ns = until.tv_nsec + (long long)f->cfg->rollup_fold_ms * 1000000;
        until.tv_sec += (time_t)(ns / 1000000000);
        until.tv_nsec = (long)(ns % 1000000000);
        while (!f->stopping && pthread_cond_timedwait(&f->wake, &f->lock, &until) == 0) {
        }
        if (f->stopping)
            break;
        pthread_mutex_unlock(&f->lock);
        fold_once(f);
        pthread_mutex_lock(&f->lock);
    }
    pthread_mutex_unlock(&f->lock);
    disconnect(f);
    return NULL;
}

pw_fold_t *pw_fold_start(const pw_config_t *cfg, pw_metrics_t *metrics)
{
    if (cfg->rollup_fold_ms <= 0)
        return NULL;
    pw_fold_t *f = calloc(1, sizeof *f);
    if (f == NULL)
        abort();
    f->cfg = cfg;
    f->metrics = metrics;
    pthread_mutex_init(&f->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&f->thread, NULL, fold_main, f) != 0) {
        pw_log_error("roll-up fold: cannot start its thread: the roll-ups are folded by `worker prune` only");
        pthread_cond_destroy(&f->wake);
        pthread_mutex_destroy(&f->lock);
        free(f);
        return NULL;
    }
    return f;
}

void pw_fold_stop(pw_fold_t *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->lock);
    f->stopping = 1;
    if (f->busy && f->cancel != NULL) {
        char err[256];
        PQcancel(f->cancel, err, sizeof err); /* a fold in progress ends now, rolled back */
    }
    pthread_cond_signal(&f->wake);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->wake);
    pthread_mutex_destroy(&f->lock);
    free(f);
}
