/* Redrives stored dead letters: decode again and write what is now understood through Dispatch, as a live push is written. */
#include "worker/redrive.h"

#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/db.h"
#include "worker/dispatch.h"
#include "worker/log.h"

static int ok_result(PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return 1;
    char esc[512];
    fprintf(stderr, "redrive: %s failed: %s\n", what, pw_log_escape(PQresultErrorMessage(r), esc, sizeof esc));
    return 0;
}

/*
 * The writer: the same executor, statement and Dispatch as the server's, on an event loop of
 * this command's own, one push at a time. The statement itself replaces the push's dead_letter
 * receipt and marks its dead letter redriven, in the push's transaction (worker/receipts.c).
 */
typedef struct {
    pw_config_t cfg;
    pw_metrics_t metrics;
    pw_db_t *db;
    pw_dispatch_t *dispatch;
    h2o_loop_t *loop;
    h2o_context_t ctx; /* only its loop and message queue: all the executor's answers need */
    pw_dispatch_loop_t *dl;
} writer_t;

typedef struct {
    int done;
    int result;
} answer_t;

static answer_t *answer_of; /* the push being written (one at a time) */

static void writer_open(writer_t *w, const char *conninfo)
{
    memset(w, 0, sizeof *w);
    w->cfg.database_url = conninfo;
    w->cfg.db_connections = 1;
    w->cfg.batch_max = 1;
    w->cfg.batch_max_bytes = SIZE_MAX;
    w->cfg.queue_max = 1;
    w->cfg.lock_timeout_ms = 10000;
    w->cfg.statement_timeout_ms = 60000;
    w->db = pw_db_new(&w->cfg, pw_dispatch_statement(), &w->metrics);
    w->dispatch = pw_dispatch_new(w->db);
    w->loop = h2o_evloop_create();
    w->ctx.loop = w->loop;
    w->ctx.queue = h2o_multithread_create_queue(w->loop);
    w->dl = pw_dispatch_loop_new(w->dispatch, &w->ctx);
}

static void writer_close(writer_t *w)
{
    if (w->db == NULL)
        return;
    pw_dispatch_loop_free(w->dl);
    pw_dispatch_free(w->dispatch);
    pw_db_free(w->db);
    h2o_multithread_destroy_queue(w->ctx.queue);
    h2o_evloop_destroy(w->loop);
    w->db = NULL;
}

static void on_written(pw_push_t *p, int result)
{
    (void)p;
    answer_of->done = 1;
    answer_of->result = result;
}

/* Writes p and waits for its answer (the loop sleeps until the executor's message comes). */
static int write_push(writer_t *w, pw_push_t *p)
{
    answer_t a = {0};
    answer_of = &a;
    pw_dispatch_submit(w->dl, p, on_written);
    while (!a.done)
        h2o_evloop_run(w->loop, INT32_MAX);
    answer_of = NULL;
    return a.result;
}

int pw_redrive_run(const char *conninfo, const pw_redrive_opts_t *opts)
{
    int rc = 1;
    size_t examined = 0, written = 0, rejected = 0, failed = 0;
    writer_t w = {0};
    /* client_encoding after dbname, so it holds whatever the URL or PGCLIENTENCODING says (as the
       worker's and migrate's connections): the bodies are read as stored. */
    const char *keys[] = {"application_name", "dbname", "client_encoding", NULL};
    const char *vals[] = {"pushworker-redrive", conninfo, "UTF8", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    PGresult *list = NULL;
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "redrive: cannot connect to the database: %s", PQerrorMessage(pg));
        goto out;
    }
    const char *params[2] = {opts->since, opts->reason};
    list = PQexecParams(pg,
                        "SELECT id FROM dead_letters WHERE redriven_at IS NULL"
                        " AND ($1::timestamptz IS NULL OR received_at >= $1::timestamptz)"
                        " AND ($2::text IS NULL OR reason ILIKE '%' || $2 || '%') ORDER BY id",
                        2, NULL, params, NULL, NULL, 0);
    if (!ok_result(list, "listing dead letters"))
        goto out;
    int n = PQntuples(list);
    printf("redrive: %d dead letter(s) to examine%s\n", n, opts->dry_run ? " (dry run: nothing is written)" : "");
    if (!opts->dry_run && n > 0)
        writer_open(&w, conninfo);
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(list, i, 0);
        const char *p1[1] = {id};
        PGresult *row = PQexecParams(pg, "SELECT subscription, message_id, body FROM dead_letters WHERE id = $1 AND redriven_at IS NULL",
                                     1, NULL, p1, NULL, NULL, 1);
        if (!ok_result(row, "reading a dead letter")) {
            PQclear(row);
            goto out;
        }
        if (PQntuples(row) != 1) {
            PQclear(row); /* redriven meanwhile by another run */
            continue;
        }
        examined++;
        pw_unwrapped_meta_t meta = {0};
        if (!PQgetisnull(row, 0, 0))
            meta.subscription = pw_str(PQgetvalue(row, 0, 0), (size_t)PQgetlength(row, 0, 0));
        if (!PQgetisnull(row, 0, 1))
            meta.message_id = pw_str(PQgetvalue(row, 0, 1), (size_t)PQgetlength(row, 0, 1));
        pw_push_t p = {0};
        pw_push_decode(&p, PQgetvalue(row, 0, 2), (size_t)PQgetlength(row, 0, 2), &meta);
        PQclear(row);
        if (p.dead_reason != NULL) {
            rejected++;
            char esc[300];
            printf("  %s: still rejected: %s\n", id, pw_log_escape(p.dead_reason, esc, sizeof esc));
        } else if (opts->dry_run) {
            written++;
            printf("  %s: would be written (%zu status(es), %zu inbound)\n", id, p.wh.n_statuses, p.wh.n_inbound);
        } else {
            p.redrive_id = strtoll(id, NULL, 10);
            int result = write_push(&w, &p);
            if (result != 0) {
                failed++;
                printf("  %s: not written: %s\n", id, pw_strerror(result));
            } else if (p.outcome == PW_OUTCOME_DUPLICATE) {
                printf("  %s: written already by another redrive\n", id);
            } else {
                written++;
                printf("  %s: written (%zu status(es), %zu inbound)\n", id, p.wh.n_statuses, p.wh.n_inbound);
            }
        }
        pw_push_dispose(&p);
    }
    printf("redrive: %zu examined, %zu %s, %zu still rejected, %zu failed to write\n", examined, written,
           opts->dry_run ? "would be written" : "written", rejected, failed);
    rc = failed > 0 ? 1 : 0;
out:
    writer_close(&w);
    PQclear(list);
    PQfinish(pg);
    return rc;
}
