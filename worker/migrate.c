/* Applies the embedded migrations: one transaction each, recorded in schema_migrations. */
#include "worker/migrate.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "worker/log.h"

/* An arbitrary constant naming pushworker's migration lock among other advisory locks. */
#define PW_MIGRATE_LOCK_KEY 7253726950214411L

static int exec_ok(PGconn *pg, const char *sql, const char *what)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        char esc[512];
        pw_log_error("migrate: %s failed: %s", what, pw_log_escape(PQresultErrorMessage(r), esc, sizeof esc));
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* The worker stores UTF-8 text as it came: a database in another encoding would change or refuse it. */
static int check_encoding(PGconn *pg)
{
    PGresult *r = PQexec(pg, "SELECT current_setting('server_encoding')");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        pw_log_error("migrate: reading the server encoding failed: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    int ok = strcmp(PQgetvalue(r, 0, 0), "UTF8") == 0;
    if (!ok) {
        char esc[64];
        pw_log_error("migrate: the database's server encoding is %s, not UTF8: pushworker stores WhatsApp text as"
                     " UTF-8 and refuses this database; create it with ENCODING 'UTF8' (e.g. CREATE DATABASE ..."
                     " ENCODING 'UTF8' TEMPLATE template0)",
                     pw_log_escape(PQgetvalue(r, 0, 0), esc, sizeof esc));
    }
    PQclear(r);
    return ok ? 0 : -1;
}

static int is_applied(PGconn *pg, const char *name, int *applied)
{
    const char *params[1] = {name};
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE name = $1", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        pw_log_error("migrate: reading schema_migrations failed: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    *applied = PQntuples(r) > 0;
    PQclear(r);
    return 0;
}

static int apply_one(PGconn *pg, const pw_migration_t *m)
{
    if (exec_ok(pg, "BEGIN", "BEGIN") != 0)
        return -1;
    if (exec_ok(pg, m->sql, m->name) != 0)
        goto rollback;
    const char *params[1] = {m->name};
    PGresult *r = PQexecParams(pg, "INSERT INTO schema_migrations (name) VALUES ($1)", 1, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok)
        goto rollback;
    if (exec_ok(pg, "COMMIT", "COMMIT") != 0)
        return -1;
    pw_log_info("migrate: applied %s", m->name);
    return 0;
rollback:
    exec_ok(pg, "ROLLBACK", "ROLLBACK");
    return -1;
}

int pw_migrate_run(const char *conninfo)
{
    int rc = -1;
    unsigned applied_now = 0;
    /* client_encoding after dbname, so it holds whatever the URL says (as the worker's connections). */
    const char *keys[] = {"application_name", "dbname", "client_encoding", NULL};
    const char *vals[] = {"pushworker-migrate", conninfo, "UTF8", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pg) != CONNECTION_OK) {
        char esc[512];
        pw_log_error("migrate: cannot connect to the database: %s", pw_log_escape(PQerrorMessage(pg), esc, sizeof esc));
        goto out;
    }
    if (check_encoding(pg) != 0)
        goto out;
    /* Quiet the NOTICEs of IF NOT EXISTS on a second run. */
    if (exec_ok(pg, "SET client_min_messages = warning", "SET") != 0)
        goto out;
    char lock_sql[96];
    snprintf(lock_sql, sizeof lock_sql, "SELECT pg_advisory_lock(%ld)", PW_MIGRATE_LOCK_KEY);
    if (exec_ok(pg, lock_sql, "taking the migration lock") != 0)
        goto out;
    if (exec_ok(pg,
                "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())",
                "creating schema_migrations") != 0)
        goto out;
    for (unsigned i = 0; i < pw_migrations_count; i++) {
        int applied;
        if (is_applied(pg, pw_migrations[i].name, &applied) != 0)
            goto out;
        if (applied)
            continue;
        if (apply_one(pg, &pw_migrations[i]) != 0)
            goto out;
        applied_now++;
    }
    pw_log_info("migrate: %u applied now, %u in total, schema up to date", applied_now, pw_migrations_count);
    rc = 0;
out:
    PQfinish(pg); /* ends the session, which releases the advisory lock */
    return rc;
}
