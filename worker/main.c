/*
 * pushworker: Pub/Sub push -> WhatsApp events -> PostgreSQL. The Face: the command line (serve
 * (default), migrate, redrive, prune, report, sql, --help, --version). serve assembles the process: the metrics
 * registry, the database executor (worker/db.h) with the statement Dispatch writes pushes with,
 * the Dispatch over it, the roll-up folder (worker/fold.h) beside them, and Http, which is given
 * the Dispatch and never sees the executor.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "worker/config.h"
#include "worker/db.h"
#include "worker/dispatch.h"
#include "worker/fold.h"
#include "worker/handlers.h"
#include "worker/http.h"
#include "worker/jwks.h"
#include "worker/log.h"
#include "worker/metrics.h"
#include "worker/migrate.h"
#include "worker/prune.h"
#include "worker/redrive.h"
#include "worker/report.h"

#ifndef PW_VERSION
#define PW_VERSION "unknown"
#endif

static const char usage[] =
    "usage: worker [serve | migrate | redrive [--since TIME] [--reason TEXT] [--dry-run]\n"
    "               | report --out FILE [--since TIME] [--until TIME] [--top N] [--min-messages N]\n"
    "               | prune [--receipts-older-than AGE] [--dead-letters-older-than AGE]\n"
    "                     [--status-events-older-than AGE] [--batch N] [--pause MS] [--dry-run]\n"
    "               | sql [NAME] | --help | --version]\n"
    "\n"
    "  serve      (default) receive Pub/Sub pushes on 0.0.0.0:$PORT and store them in PostgreSQL\n"
    "  migrate    apply the migrations compiled into this binary that $DATABASE_URL lacks, then exit\n"
    "  redrive    run the dead letters not yet redriven through today's parsers: write those now\n"
    "             understood (as a live push would be), mark them redriven, leave the rest; print\n"
    "             counts. --since: received at or after TIME (timestamptz text); --reason: whose\n"
    "             reason contains TEXT; --dry-run: only count\n"
    "  report     write one self-contained HTML file of charts (FILE, or - for stdout): daily sent /\n"
    "             delivered / read / failed, delivery and read time (p50, p90), failures by error code,\n"
    "             inbound messages by type, the most engaged recipients (masked). Messages sent at or\n"
    "             after --since and before --until: ISO 8601 dates or times, UTC unless a zone is given\n"
    "             [the 7 UTC days up to today]; --top [10] recipients of at least --min-messages [5].\n"
    "             Exit 0 written, 1 database or file error, 2 bad arguments\n"
    "  prune      delete what the tables no longer need, oldest first, in transactions of --batch rows\n"
    "             [" PW_PRUNE_BATCH_DEFAULT_TEXT "]: pubsub_receipts received longer ago than --receipts-older-than [" PW_PRUNE_RECEIPTS_DEFAULT "]\n"
    "             (Pub/Sub redelivers for at most 31 days; below 7d is refused), dead_letters redriven\n"
    "             longer ago than --dead-letters-older-than [" PW_PRUNE_DEAD_LETTERS_DEFAULT "] (never one not redriven),\n"
    "             status_events received longer ago than --status-events-older-than [off]. AGE: a whole\n"
    "             number and d, h, m or s (35d), or off. --pause: sleep MS between batches\n"
    "             [" PW_PRUNE_PAUSE_MS_DEFAULT_TEXT "] (0: full speed). Then it folds the roll-ups' pending rows (as serve does\n"
    "             every ROLLUP_FOLD_MS). --dry-run: only count. Progress on stderr, a count per table on\n"
    "             stdout; exit 0 done, 1 database error (run it again: it goes on), 2 usage\n"
    "  sql        name the statement a group of pushes is written with, and its sections; sql NAME\n"
    "             prints its SQL (parameters $1.. are arrays, one element per row), e.g. for pgbench or\n"
    "             EXPLAIN; sql NAME SECTION... the variant with only those sections (and the receipts),\n"
    "             which a group with rows for those sections only runs\n"
    "\n"
    "HTTP: POST / (or /push) a push; GET /livez (or /healthz); GET /readyz; GET /metrics.\n"
    "  204 committed (stored, duplicate, ignored or kept in dead_letters), 401 bad or missing token,\n"
    "  403 token of another service account, 413 body too large,\n"
    "  503 database unavailable, no signing keys, over INFLIGHT_BYTES_MAX or deadline passed (Pub/Sub redelivers).\n"
    "\n"
    "Environment (defaults in brackets):\n"
    "  PORT [8080]              listening port\n"
    "  DATABASE_URL             libpq conninfo or URI [libpq defaults: PGHOST, PGDATABASE...]\n"
    "  PUBSUB_AUTH [verify]     verify: check the Google OIDC token fully (RS256 signature, claims);\n"
    "                           claims: behind Cloud Run IAM, which strips the signature: check claims;\n"
    "                           off: no checks (local emulator only), logged as a warning at start\n"
    "  PUBSUB_AUDIENCE          the token audience, compared exactly; required unless PUBSUB_AUTH=off\n"
    "  PUBSUB_SERVICE_ACCOUNT   the push subscription's account: the token's email must equal it (else 403)\n"
    "                           and email_verified be true (else 401); required with PUBSUB_AUTH=verify;\n"
    "                           " PW_SERVICE_ACCOUNT_ANY ": accept every account (local use only, logged as a warning)\n"
    "  OIDC_JWKS_URL [https://www.googleapis.com/oauth2/v3/certs]  signing keys, cached per Cache-Control\n"
    "  OIDC_ISSUERS [accounts.google.com,https://accounts.google.com]  accepted issuers\n"
    "  JWKS_MIN_REFRESH_MS [30000]  an unknown key id triggers at most one key fetch per this\n"
    "  JWKS_STALE_MAX_SECONDS [3600]  while key refreshes fail, keys are kept this long past their\n"
    "                           cache lifetime (max-age), then dropped: /readyz and pushes 503\n"
    "  WORKER_THREADS [CPUs]    event loops\n"
    "  DB_CONNECTIONS [1]       database connections, shared by every event loop (groups in flight at once)\n"
    "  MAX_BODY_BYTES [16777216]  larger pushes are answered 413\n"
    "  INFLIGHT_BYTES_MAX [67108864]  request bodies held at once (all loops); a push that would\n"
    "                           go over is answered 503 + Retry-After before its body is read\n"
    "                           (one push alone is always taken, up to MAX_BODY_BYTES)\n"
    "  PUSH_DEADLINE_MS [8000]  a push not committed by then is answered 503\n"
    "  DB_BATCH_MAX [256], DB_BATCH_MAX_BYTES [8388608]  the most pushes/bytes in one transaction\n"
    "  DB_QUEUE_MAX [4096]      pushes waiting for the database (all loops) before new ones get 503\n"
    "  DB_POOLER [none]         transaction: DATABASE_URL is a transaction-mode pooler (PgBouncer,\n"
    "                           Supabase :6543): statements are sent unprepared (migrate directly)\n"
    "  DB_LOCK_TIMEOUT_MS [1000]  a group waits at most this for a row lock; then its pushes are\n"
    "                           written one by one, and the one whose row is locked is answered 503\n"
    "  DB_STATEMENT_TIMEOUT_MS [5000, or PUSH_DEADLINE_MS - 1000 if less]  the server cancels a group\n"
    "                           after this; must be below PUSH_DEADLINE_MS\n"
    "  ROLLUP_FOLD_MS [1000]    fold the roll-ups' pending rows (pw_rollup_fold) this often, on a\n"
    "                           connection of its own; 0: never (worker prune folds them)\n"
    "  LOG_LEVEL [info]         debug | info | warning | error (JSON lines on stderr)\n"
    "  GOOGLE_CLOUD_PROJECT     names the project in the logs' trace field\n";

static int load_config(pw_config_t *cfg)
{
    char err[512];
    if (pw_config_load(cfg, err, sizeof err) != 0) {
        pw_log(PW_LOG_CRITICAL, NULL, "configuration: %s", err);
        return -1;
    }
    pw_log_set_level((pw_log_level_t)cfg->log_level);
    return 0;
}

/* Many idle or slow connections must not exhaust descriptors: raise the soft limit to the hard one. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int cmd_serve(void)
{
    pw_config_t cfg;
    if (load_config(&cfg) != 0)
        return 2;
    if (cfg.auth_mode == PW_AUTH_OFF)
        pw_log_warning("PUBSUB_AUTH=off: pushes are NOT authenticated; anyone who can reach this port can write data");
    if (cfg.any_account && cfg.auth_mode != PW_AUTH_OFF)
        pw_log_warning("PUBSUB_SERVICE_ACCOUNT=" PW_SERVICE_ACCOUNT_ANY ": tokens of ANY Google service account for this "
                       "audience are accepted, and anyone can mint one: for local use only, never in production");
    raise_fd_limit();
    /* Before any thread exists (the JWKS fetcher is the first): every thread inherits the mask,
       so SIGTERM and SIGINT reach only the sigwait in pw_http_serve, never a default action. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 0;
    if (cfg.auth_mode == PW_AUTH_VERIFY) {
        char err[256];
        if (pw_keys_start(cfg.jwks_url, cfg.jwks_min_refresh_ms, cfg.jwks_stale_max_s, err, sizeof err) != 0) {
            pw_log(PW_LOG_CRITICAL, NULL, "configuration: %s", err);
            rc = 2;
            goto out;
        }
    }
    {
        /* A metrics slot per loop, then the executor's thread's, then the roll-up folder's. */
        pw_metrics_registry_t *metrics = pw_metrics_registry_new((size_t)cfg.threads + 2);
        pw_db_t *db = pw_db_new(&cfg, pw_dispatch_statement(), pw_metrics_slot(metrics, (size_t)cfg.threads));
        pw_fold_t *fold = pw_fold_start(&cfg, pw_metrics_slot(metrics, (size_t)cfg.threads + 1));
        pw_dispatch_t *dispatch = pw_dispatch_new(db);
        /* The port opens once the first key fetch has ended (the database connects meanwhile), or
           after PW_JWKS_FIRST_WAIT_MS: Cloud Run's default startup probe sends pushes as soon as
           the port accepts, and one refused for want of keys waits for Pub/Sub's backoff (10 s
           and more) before it is delivered again. */
        if (cfg.auth_mode == PW_AUTH_VERIFY)
            pw_keys_wait_first(PW_JWKS_FIRST_WAIT_MS);
        rc = pw_http_serve(&cfg, dispatch, metrics) == 0 ? 0 : 1;
        /* No loop submits any more, and each has freed its Dispatch loop. */
        pw_fold_stop(fold);
        pw_dispatch_free(dispatch);
        pw_db_free(db);
        pw_metrics_registry_free(metrics);
    }
out:
    pw_keys_stop();
    curl_global_cleanup();
    return rc;
}

static int cmd_migrate(void)
{
    pw_config_t cfg;
    char err[512];
    /* Migrations need only the database: do not insist on serving settings. */
    if (pw_config_load(&cfg, err, sizeof err) != 0 && strstr(err, "DATABASE_URL") != NULL) {
        pw_log(PW_LOG_CRITICAL, NULL, "configuration: %s", err);
        return 2;
    }
    const char *url = getenv("DATABASE_URL");
    return pw_migrate_run(url != NULL ? url : "") == 0 ? 0 : 1;
}

/* worker sql [NAME [SECTION...]]: the statement's name, or its SQL, or that of its variant with
   only the sections named (the receipts always: see worker/handlers.c). */
static int cmd_sql(int argc, char **argv)
{
    const pw_db_stmt_t *s = pw_dispatch_statement();
    if (argc < 3) {
        printf("%s\t%d parameters\tsections:", s->name, s->ncols);
        for (unsigned i = 0; pw_handlers_section_name(i) != NULL; i++)
            printf(" %s", pw_handlers_section_name(i));
        putchar('\n');
        return 0;
    }
    if (strcmp(argv[2], s->name) != 0) {
        fprintf(stderr, "worker: no statement named '%s' (try: worker sql)\n", argv[2]);
        return 2;
    }
    if (argc == 3)
        return puts(s->sql) >= 0 ? 0 : 1;
    unsigned parts = PW_HANDLERS_KEEP;
    for (int a = 3; a < argc; a++) {
        unsigned i = 0;
        while (pw_handlers_section_name(i) != NULL && strcmp(pw_handlers_section_name(i), argv[a]) != 0)
            i++;
        if (pw_handlers_section_name(i) == NULL) {
            fprintf(stderr, "worker: %s has no section named '%s' (try: worker sql)\n", s->name, argv[a]);
            return 2;
        }
        parts |= 1u << i;
    }
    return puts(pw_handlers_variant_sql(parts)) >= 0 ? 0 : 1;
}

static int cmd_redrive(int argc, char **argv)
{
    pw_redrive_opts_t opts = {0};
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--dry-run") == 0) {
            opts.dry_run = 1;
        } else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
            opts.since = argv[++i];
        } else if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc) {
            opts.reason = argv[++i];
        } else {
            fprintf(stderr, "worker redrive: unknown or incomplete option '%s'\n\n%s", argv[i], usage);
            return 2;
        }
    }
    const char *url = getenv("DATABASE_URL");
    return pw_redrive_run(url != NULL ? url : "", &opts);
}

static int cmd_report(int argc, char **argv)
{
    pw_report_opts_t opts;
    char err[512];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (pw_report_parse_args(argc - 2, argv + 2, (pw_time_us_t)now.tv_sec * 1000000 + now.tv_nsec / 1000, &opts, err,
                             sizeof err) != 0) {
        fprintf(stderr, "worker report: %s (try: worker --help)\n", err);
        return 2;
    }
    const char *url = getenv("DATABASE_URL");
    return pw_report_run(url != NULL ? url : "", &opts);
}

static int cmd_prune(int argc, char **argv)
{
    pw_prune_opts_t opts;
    char err[256];
    if (pw_prune_parse_args(argc, argv, 2, &opts, err, sizeof err) != 0) {
        fprintf(stderr, "worker prune: %s\n\n%s", err, usage);
        return 2;
    }
    const char *url = getenv("DATABASE_URL");
    return pw_prune_run(url != NULL ? url : "", &opts);
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (strcmp(cmd, "redrive") == 0)
        return cmd_redrive(argc, argv);
    if (strcmp(cmd, "report") == 0)
        return cmd_report(argc, argv);
    if (strcmp(cmd, "prune") == 0)
        return cmd_prune(argc, argv);
    if (strcmp(cmd, "sql") == 0)
        return cmd_sql(argc, argv);
    if (argc > 2) {
        fputs(usage, stderr);
        return 2;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("pushworker %s\n", PW_VERSION);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve();
    if (strcmp(cmd, "migrate") == 0)
        return cmd_migrate();
    fprintf(stderr, "worker: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}
