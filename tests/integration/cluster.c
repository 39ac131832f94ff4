/* A private PostgreSQL cluster for the tests that stop or freeze their database: scripts/dev-db and pg_ctl as child processes. */
#include "tests/integration/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/integration/proc.h"
#include "tests/integration/util.h"

#define PG_BIN "/usr/lib/postgresql/15/bin"

int pwt_cluster_init(pwt_cluster_t *c, const char *dir, const char *cmd_log)
{
    memset(c, 0, sizeof *c);
    char *dev_db = pwt_repo_path("scripts/dev-db");
    if (dev_db == NULL)
        return -1;
    snprintf(c->dev_db, sizeof c->dev_db, "%s", dev_db);
    free(dev_db);
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    snprintf(c->data, sizeof c->data, "%s/data", dir);
    snprintf(c->log, sizeof c->log, "%s/postgres.log", dir);
    snprintf(c->cmd_log, sizeof c->cmd_log, "%s", cmd_log);
    return 0;
}

int pwt_cluster_start(pwt_cluster_t *c)
{
    char out[320];
    snprintf(out, sizeof out, "%s.start.out", c->dir);
    const char *argv[] = {c->dev_db, "start", "--fast", c->dir, NULL};
    c->running = 1;
    int rc = pwt_run(argv, NULL, out);
    char *text = pwt_read_text(out);
    const char *line = text != NULL ? strstr(text, "DATABASE_URL=") : NULL;
    c->url[0] = '\0';
    if (line != NULL)
        snprintf(c->url, sizeof c->url, "%.*s", (int)strcspn(line + 13, "\r\n"), line + 13);
    if (rc != 0 || c->url[0] == '\0') {
        fprintf(stderr, "test: scripts/dev-db start %s failed (%d):\n%s\n", c->dir, rc, text != NULL ? text : "");
        free(text);
        return -1;
    }
    free(text);
    return 0;
}

void pwt_cluster_stop(pwt_cluster_t *c)
{
    if (!c->running)
        return;
    const char *argv[] = {c->dev_db, "stop", c->dir, NULL};
    if (pwt_run(argv, NULL, c->cmd_log) != 0) {
        fprintf(stderr, "test: `scripts/dev-db stop %s` failed\n", c->dir);
        pwt_print_file_tail("dev-db/pg_ctl output", c->cmd_log, 20);
    }
    c->running = 0;
}

void pwt_cluster_stop_in_handler(pwt_cluster_t *c)
{
    if (!c->running)
        return;
    char *const stop[] = {c->dev_db, "stop", c->dir, NULL};
    pwt_run_in_handler(stop);
}

pid_t pwt_pg_ctl_spawn(const pwt_cluster_t *c, const char *const *args)
{
    const char *argv[24];
    int n = 0;
    if (geteuid() == 0) {
        argv[n++] = "runuser";
        argv[n++] = "-u";
        argv[n++] = "postgres";
        argv[n++] = "--";
    }
    argv[n++] = PG_BIN "/pg_ctl";
    for (int i = 0; args[i] != NULL && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return pwt_spawn(argv, NULL, c->cmd_log, 0);
}

int pwt_pg_ctl(const pwt_cluster_t *c, const char *const *args)
{
    return pwt_wait(pwt_pg_ctl_spawn(c, args));
}
