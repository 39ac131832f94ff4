/* A private PostgreSQL cluster for the tests that stop or freeze their database: scripts/dev-db and pg_ctl as child processes. */
#ifndef PWT_CLUSTER_H
#define PWT_CLUSTER_H

#include <limits.h>
#include <signal.h>
#include <sys/types.h>

typedef struct {
    char dev_db[PATH_MAX];          /* scripts/dev-db */
    char dir[256];                  /* the cluster's directory (scripts/dev-db's argument) */
    char data[300];                 /* dir/data */
    char log[300];                  /* dir/postgres.log: the server's own log */
    char cmd_log[300];              /* where the output of dev-db and pg_ctl goes */
    char url[512];                  /* its DATABASE_URL, once started */
    volatile sig_atomic_t running;  /* it may exist: stop it before removing dir */
} pwt_cluster_t;

/* Names the paths (dir need not exist; its parent must be reachable by `postgres` when root). 0, or -1 printed. */
int pwt_cluster_init(pwt_cluster_t *c, const char *dir, const char *cmd_log);

/* `scripts/dev-db start --fast dir`; fills c->url from its DATABASE_URL line. 0, or -1 with its output printed. */
int pwt_cluster_start(pwt_cluster_t *c);

/* `scripts/dev-db stop dir` when it runs (failures printed). Safe to call twice. */
void pwt_cluster_stop(pwt_cluster_t *c);

/* The same with async-signal-safe calls only, for fatal-signal handlers. */
void pwt_cluster_stop_in_handler(pwt_cluster_t *c);

/* pg_ctl args as the cluster's owner (`runuser -u postgres --` when root, as scripts/dev-db does), output to cmd_log; not
 * waited for: the pid, or -1. */
pid_t pwt_pg_ctl_spawn(const pwt_cluster_t *c, const char *const *args);

/* The same, waited for: pg_ctl's exit code. */
int pwt_pg_ctl(const pwt_cluster_t *c, const char *const *args);

#endif
