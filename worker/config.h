/* Configuration from the environment, as Cloud Run passes it; a bad value stops start-up with one clear line. */
#ifndef PW_CONFIG_H
#define PW_CONFIG_H

#include <stddef.h>

/* The PUBSUB_SERVICE_ACCOUNT value that waives the email check in verify mode (local use only). */
#define PW_SERVICE_ACCOUNT_ANY "any"
#define PW_JWKS_STALE_MAX_DEFAULT_S 3600 /* an hour of a JWKS outage past max-age (about 6 h at Google) */

typedef enum { PW_AUTH_VERIFY = 0, PW_AUTH_CLAIMS, PW_AUTH_OFF } pw_auth_mode_t;

typedef struct {
    int port;                  /* PORT, default 8080 */
    const char *database_url;  /* DATABASE_URL (libpq conninfo or URI); "" means libpq's defaults */
    pw_auth_mode_t auth_mode;  /* PUBSUB_AUTH: verify | claims | off */
    const char *audience;      /* PUBSUB_AUDIENCE (required unless auth is off) */
    const char *service_account; /* PUBSUB_SERVICE_ACCOUNT: the push account's email, or NULL when the
                                    email is not checked: unset (claims and off modes only) or
                                    PW_SERVICE_ACCOUNT_ANY (then any_account is 1) */
    int any_account;           /* PUBSUB_SERVICE_ACCOUNT=any: tokens of every account accepted (local use) */
    const char *jwks_url;      /* OIDC_JWKS_URL, http:// or https:// */
    long jwks_min_refresh_ms;  /* JWKS_MIN_REFRESH_MS: at most one on-demand key fetch per this */
    long jwks_stale_max_s;     /* JWKS_STALE_MAX_SECONDS: keys kept this long past their cache
                                  lifetime while refreshes fail, then dropped (pushes 503) */
    const char *issuers;       /* OIDC_ISSUERS, comma-separated */
    int threads;               /* WORKER_THREADS, default: online CPUs */
    size_t max_body_bytes;     /* MAX_BODY_BYTES, default 16 MiB */
    size_t inflight_bytes_max; /* INFLIGHT_BYTES_MAX: request bodies held at once by all loops, default 64 MiB */
    int deadline_ms;           /* PUSH_DEADLINE_MS, default 8000 (below Pub/Sub's 10 s ack deadline) */
    int batch_max;             /* DB_BATCH_MAX pushes per transaction, default 256 */
    size_t batch_max_bytes;    /* DB_BATCH_MAX_BYTES, default 8 MiB of decoded payloads */
    int queue_max;             /* DB_QUEUE_MAX pushes waiting (all loops) before 503, default 4096 */
    int db_connections;        /* DB_CONNECTIONS of the process, default 1: groups in flight at once */
    int pooler_transaction;    /* DB_POOLER=transaction: behind a transaction-mode pooler (PgBouncer
                                  < 1.21, Supavisor :6543) named prepared statements do not survive
                                  a transaction, so each group is sent as an unnamed statement */
    int lock_timeout_ms;       /* DB_LOCK_TIMEOUT_MS, default 1000: a group waits this long for a row lock */
    int statement_timeout_ms;  /* DB_STATEMENT_TIMEOUT_MS, default 5000, below PUSH_DEADLINE_MS */
    int rollup_fold_ms;        /* ROLLUP_FOLD_MS, default 1000: the roll-ups' pending rows are folded
                                  this often on a connection of its own (worker/fold.h); 0: never */
    int log_level;             /* LOG_LEVEL */
} pw_config_t;

/**
 * Fills cfg from the environment. Every setting's syntax is checked whatever PUBSUB_AUTH is (a bad
 * value is a mistake even where it is unused). Returns 0, or -1 after writing one line naming the
 * variable, its value (never DATABASE_URL's: it holds a password) and what is accepted into err.
 */
int pw_config_load(pw_config_t *cfg, char *err, size_t errlen);

const char *pw_auth_mode_name(pw_auth_mode_t mode);

#endif
