/* Redrives stored dead letters: decode again, write what is now understood, mark it redriven. */
#include "worker/redrive.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int exec_simple(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    int ok = ok_result(r, sql);
    PQclear(r);
    return ok;
}

/* Inside the caller's transaction: writes one decoded push with the live statement, after dropping
   its dead_letter receipt (which would make the statement treat it as a redelivery), and marks the
   dead letter redriven. Returns 1 when all of it succeeded. */
static int write_one(PGconn *pg, const char *id, pw_push_t *p)
{
    const pw_stmt_t *s = pw_dispatch_statement();
    pw_cols_t cols = {0};
    int ok = 1;
    if (p->message_id.base != NULL) {
        char *sub = pw_xstrndup(pw_push_receipt_sub(p).base, pw_push_receipt_sub(p).len);
        char *mid = pw_xstrndup(p->message_id.base, p->message_id.len);
        const char *params[2] = {sub, mid};
        PGresult *r = PQexecParams(pg,
                                   "DELETE FROM pubsub_receipts WHERE subscription = $1 AND message_id = $2"
                                   " AND outcome = 'dead_letter'",
                                   2, NULL, params, NULL, NULL, 0);
        ok = ok_result(r, "dropping the old receipt");
        PQclear(r);
        free(sub);
        free(mid);
        if (!ok)
            goto out;
    }
    p->batch_index = 0;
    pw_cols_begin(&cols, s->ncols);
    s->append(&cols, p);
    pw_cols_finish(&cols);
    const char *values[PW_COLS_MAX];
    for (int c = 0; c < s->ncols; c++)
        values[c] = cols.col[c].base;
    PGresult *r = PQexecParams(pg, s->sql, s->ncols, NULL, values, NULL, NULL, 0);
    ok = ok_result(r, "writing the rows");
    PQclear(r);
    if (!ok)
        goto out;
    const char *params[1] = {id};
    r = PQexecParams(pg, "UPDATE dead_letters SET redriven_at = now() WHERE id = $1", 1, NULL, params, NULL, NULL, 0);
    ok = ok_result(r, "marking the dead letter");
    PQclear(r);
out:
    pw_cols_dispose(&cols);
    return ok;
}

int pw_redrive_run(const char *conninfo, const pw_redrive_opts_t *opts)
{
    int rc = 1;
    size_t examined = 0, written = 0, rejected = 0, failed = 0;
    /* client_encoding after dbname, so it holds whatever the URL or PGCLIENTENCODING says (as the
       worker's and migrate's connections): the rows are UTF-8, and must arrive as such. */
    const char *keys[] = {"application_name", "dbname", "client_encoding", NULL};
    const char *vals[] = {"pushworker-redrive", conninfo, "UTF8", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    PGresult *list = NULL;
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "redrive: cannot connect to the database: %s", PQerrorMessage(pg));
        goto out;
    }
    /* The ids first: each dead letter is then taken in its own transaction, under a row lock
       (SKIP LOCKED: two redrives at once never write the same one twice). */
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
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(list, i, 0);
        const char *p1[1] = {id};
        if (!exec_simple(pg, "BEGIN"))
            goto out;
        /* One transaction per dead letter, under its row lock (SKIP LOCKED: two redrives at once
           never write the same one twice). */
        PGresult *row = PQexecParams(pg,
                                     "SELECT subscription, message_id, body FROM dead_letters"
                                     " WHERE id = $1 AND redriven_at IS NULL FOR UPDATE SKIP LOCKED",
                                     1, NULL, p1, NULL, NULL, 1);
        int done = 0;
        if (ok_result(row, "reading a dead letter") && PQntuples(row) == 1) {
            examined++;
            pw_unwrapped_meta_t meta = {0};
            if (!PQgetisnull(row, 0, 0))
                meta.subscription = pw_str(PQgetvalue(row, 0, 0), (size_t)PQgetlength(row, 0, 0));
            if (!PQgetisnull(row, 0, 1))
                meta.message_id = pw_str(PQgetvalue(row, 0, 1), (size_t)PQgetlength(row, 0, 1));
            pw_push_t p = {0};
            pw_push_decode(&p, PQgetvalue(row, 0, 2), (size_t)PQgetlength(row, 0, 2), &meta);
            if (p.dead_reason != NULL) {
                rejected++;
                char esc[300];
                printf("  %s: still rejected: %s\n", id, pw_log_escape(p.dead_reason, esc, sizeof esc));
            } else if (opts->dry_run) {
                written++;
                printf("  %s: would be written (%zu status(es), %zu inbound)\n", id, p.wh.n_statuses, p.wh.n_inbound);
            } else if (write_one(pg, id, &p)) {
                done = 1;
                written++;
                printf("  %s: written (%zu status(es), %zu inbound)\n", id, p.wh.n_statuses, p.wh.n_inbound);
            } else {
                failed++;
            }
            pw_push_dispose(&p);
        }
        PQclear(row);
        if (!exec_simple(pg, done ? "COMMIT" : "ROLLBACK"))
            goto out;
    }
    printf("redrive: %zu examined, %zu %s, %zu still rejected, %zu failed to write\n", examined, written,
           opts->dry_run ? "would be written" : "written", rejected, failed);
    rc = failed > 0 ? 1 : 0;
out:
    PQclear(list);
    PQfinish(pg);
    return rc;
}
