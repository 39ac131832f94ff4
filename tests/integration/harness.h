/* Integration-test harness: a fresh database, the real worker as a child process, HTTP over libcurl, row checks over libpq. */
#ifndef PWT_HARNESS_H
#define PWT_HARNESS_H

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Environment (set by tests/run): PW_TEST_DATABASE_URL (superuser URL of a throwaway cluster),
 * PW_WORKER (the worker binary), PW_FIXTURES (tests/fixtures). PWT_KEEP_LOGS=1 keeps the workers'
 * log files after the run (their directory is printed).
 *
 * Everything here runs on the test's single thread. A harness failure (no database, a worker that
 * does not come up, a SQL error in a check) fails the current cmocka test with its context printed:
 * the failing call, and the last lines of every running worker's log.
 */

/* A NULL-terminated list literal for the env, headers and params arguments below: PWT_LIST("A=1", "B=2"). */
#define PWT_LIST(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- the database of this test binary ---------------------------------------------------------- */

/**
 * Creates the database pwt_<name>_<pid> on PW_TEST_DATABASE_URL's cluster and opens the checker
 * connection to it (time zone UTC, so timestamptz columns print as "2024-03-05 20:00:00+00" whatever
 * TZ/PGTZ say). Returns 0, or -1 with the reason printed. Call once, from a group setup.
 */
int pwt_db_create(const char *name);

/* Closes the checker connection and drops the database (WITH (FORCE)). Safe to call twice. */
void pwt_db_drop(void);

/* The libpq conninfo of the test database (what workers get as DATABASE_URL). Borrowed. */
const char *pwt_db_url(void);

/* Runs `$PW_WORKER migrate` against the test database; returns its exit status (0 = success). */
int pwt_migrate(void);

/* Runs sql on the cluster's own database (PW_TEST_DATABASE_URL, a connection of its own), failing the test on error. */
void pwt_admin_exec(const char *sql);

/* ---- workers --------------------------------------------------------------------------------- */

typedef struct {
    pid_t pid; /* 0 when not running */
    int port;
    char base_url[64];  /* "http://127.0.0.1:<port>" */
    char log_path[512]; /* the worker's stderr and stdout */
} pwt_worker_t;

/**
 * Starts `$PW_WORKER serve` on a free loopback port with DATABASE_URL, PORT, PUBSUB_AUTH=off and
 * LOG_LEVEL=debug, then env: a NULL-terminated list of "NAME=value" that add to or override those
 * (NULL for none). Waits up to 15 s for GET /readyz to answer 200. Returns 0, or -1 (the worker is
 * then stopped, and its log printed). Several workers may run at once.
 */
int pwt_worker_start(pwt_worker_t *w, const char *const *env);

/* pwt_worker_start on port (0: a free one; else one attempt only), waiting for ready_path (e.g. "/healthz" when /readyz may
 * stay 503) to answer 200. */
int pwt_worker_start_at(pwt_worker_t *w, int port, const char *ready_path, const char *const *env);

/**
 * Sends SIGTERM and waits up to 10 s (then SIGKILL). Returns the exit status, 128 + signal when it
 * was killed by a signal, or -1 when it was not running. Safe to call twice.
 */
int pwt_worker_stop(pwt_worker_t *w);

/* 1 while the worker process is alive (reaps it when it has died). */
int pwt_worker_alive(pwt_worker_t *w);

/* Prints the last max_lines lines of the worker's log to stderr, under a header. */
void pwt_worker_print_log(const pwt_worker_t *w, int max_lines);

/* The whole log as a malloc'd NUL-terminated string ("" when unreadable). */
char *pwt_worker_log(const pwt_worker_t *w);

/**
 * Runs `env DATABASE_URL=url $PW_WORKER args 2>&1` through the shell (env: "NAME=value ..." or ""; url NULL: the test
 * database) and waits. Returns its exit status; *out gets its output (malloc'd).
 */
int pwt_worker_command(const char *env, const char *url, const char *args, char **out);

/* ---- the usual fixture of a test binary: its database and one worker ---------------------------- */

/* pwt_db_create(name) and pwt_migrate(), then pwt_worker_start(w, env) unless w is NULL. 0 or -1: for a group setup. */
int pwt_suite_start(const char *name, pwt_worker_t *w, const char *const *env);

/* Stops w unless NULL (an exit status other than 0 printed), then pwt_db_drop. Returns w's pwt_worker_stop status (0 for NULL). */
int pwt_suite_stop(pwt_worker_t *w);

/* A cmocka group teardown for binaries without a shared worker: pwt_db_drop, 0. */
int pwt_teardown_db(void **state);

/* Names the fixture of the cmocka callbacks below: database name, the shared worker (NULL: none) and its env. Call in main. */
void pwt_suite_init(const char *name, pwt_worker_t *w, const char *const *env);
int pwt_suite_setup(void **state);    /* group setup: pwt_suite_start */
int pwt_suite_teardown(void **state); /* group teardown: pwt_suite_stop, -1 unless the worker exited 0 */
int pwt_suite_teardown_any_exit(void **state); /* the same, 0 whatever the worker's exit status */
int pwt_suite_fresh(void **state);    /* per-test setup: the worker restarted if it died, every table emptied */
int pwt_suite_alive(void **state);    /* per-test teardown: pwt_worker_check_alive */

/* main's last line: pwt_suite_init, then the cmocka group `tests` with pwt_suite_setup and pwt_suite_teardown. */
#define pwt_suite_run(name, w, env, tests)                                                                                         \
    (pwt_suite_init((name), (w), (env)), cmocka_run_group_tests_name((name), (tests), pwt_suite_setup, pwt_suite_teardown))

/* For binaries that migrate (or not) themselves: pwt_db_create(the name given to pwt_suite_init), 0 or -1: a group setup. */
int pwt_setup_db(void **state);

/* main's last line for those: the cmocka group `tests` with pwt_setup_db (an empty database, no worker) and pwt_teardown_db. */
#define pwt_db_suite_run(name, tests)                                                                                              \
    (pwt_suite_init((name), NULL, NULL), cmocka_run_group_tests_name((name), (tests), pwt_setup_db, pwt_teardown_db))

/* Restarts w with env when it has died (printing its log first). 0 or -1: for a per-test setup. */
int pwt_worker_ensure(pwt_worker_t *w, const char *const *env);

/* 0 while w runs; else -1, with its log printed: for a per-test teardown (a crash fails the test that caused it). */
int pwt_worker_check_alive(pwt_worker_t *w);

/* ---- HTTP ------------------------------------------------------------------------------------ */

typedef struct {
    long status;   /* HTTP status, or -1 when the request failed at the transport level */
    char *headers; /* raw response header block, malloc'd */
    char *body;    /* response body, malloc'd and NUL-terminated */
    size_t body_len;
} pwt_response_t;

/**
 * One request to the worker. body may be NULL (no body). headers: NULL-terminated list of
 * "Name: value" lines sent in addition to (or replacing) the defaults, which are
 * "Content-Type: application/json" and no "Expect". Returns the status (or -1, printed); when resp is
 * not NULL it receives the answer, to be released with pwt_response_free.
 */
long pwt_request(const pwt_worker_t *w, const char *method, const char *path, const void *body, size_t len,
                 const char *const *headers, pwt_response_t *resp);

/* POST path with body; see pwt_request. */
long pwt_post(const pwt_worker_t *w, const char *path, const void *body, size_t len, const char *const *headers,
              pwt_response_t *resp);

/* GET path; see pwt_request. */
long pwt_get(const pwt_worker_t *w, const char *path, pwt_response_t *resp);

/* Value of header name in resp (case-insensitive), malloc'd; NULL when absent. */
char *pwt_response_header(const pwt_response_t *resp, const char *name);

void pwt_response_free(pwt_response_t *resp);

/* The value of the /metrics line "sample value" (sample e.g. "pushworker_inflight_bytes"); -1 when absent or not answered 200. */
long long pwt_metric(const pwt_worker_t *w, const char *sample);

/* Waits up to 20 s (400 polls, 50 ms apart) for sample to equal value (or with _at_least, reach it); else fails at the caller's line. */
#define pwt_wait_metric(w, sample, value) pwt__wait_metric(__FILE__, __LINE__, (w), (sample), (value), 0)
#define pwt_wait_metric_at_least(w, sample, value) pwt__wait_metric(__FILE__, __LINE__, (w), (sample), (value), 1)
void pwt__wait_metric(const char *file, int line, const pwt_worker_t *w, const char *sample, long long value, int at_least);

/* A POST of body to w's "/" on a thread of its own (for pushes that wait on a lock). */
typedef struct {
    pthread_t tid;
    const pwt_worker_t *w;
    char *body;
    long status;
} pwt_bg_post_t;

/* Starts it; the post owns body (malloc'd) from now on. */
void pwt_bg_post_start(pwt_bg_post_t *p, const pwt_worker_t *w, char *body);
/* Waits for it, frees the body; the status. */
long pwt_bg_post_join(pwt_bg_post_t *p);

/* ---- pushes and fixtures --------------------------------------------------------------------- */

/**
 * Wraps payload as Pub/Sub does: {"message":{"data":<base64>,"messageId":id,"message_id":id,
 * "publishTime":t,"publish_time":t},"subscription":s}. A NULL message_id, subscription or
 * publish_time leaves that member out. Returns a malloc'd NUL-terminated string.
 */
char *pwt_wrap(const void *payload, size_t len, const char *message_id, const char *subscription, const char *publish_time);

/* pwt_wrap(payload, len, message_id, subscription, publish_time) POSTed to w's "/": the status. */
long pwt_push(const pwt_worker_t *w, const void *payload, size_t len, const char *message_id, const char *subscription,
              const char *publish_time);

/* pwt_wrap of the fixture rel (see pwt_read_fixture): malloc'd. */
char *pwt_wrap_fixture(const char *rel, const char *message_id, const char *subscription, const char *publish_time);

/* pwt_push of the fixture rel (see pwt_read_fixture). */
long pwt_push_fixture(const pwt_worker_t *w, const char *rel, const char *message_id, const char *subscription,
                      const char *publish_time);

/**
 * A Meta webhook: account 104996335712345, one "messages" change whose value is the metadata of phone number id
 * 106540352242922 (display 15550783881) followed by value_members (JSON members as text, e.g. "\"statuses\":[...]"). Malloc'd.
 */
char *pwt_meta_webhook(const char *value_members);

/* json (malloc'd text of an object, taken) with spaces before its final '}' to exactly len bytes; fails the test when longer. */
#define pwt_pad_json(json, len) pwt__pad_json(__FILE__, __LINE__, (json), (len))
char *pwt__pad_json(const char *file, int line, char *json, size_t len);

/* Standard padded base64 of len bytes, malloc'd. */
char *pwt_base64(const void *data, size_t len);

/* Reads $PW_FIXTURES/rel (e.g. "meta/status_sent.json"), malloc'd and NUL-terminated; len may be NULL. Fails the test when missing.
 */
char *pwt_read_fixture(const char *rel, size_t *len);

/* ---- database checks (checker connection, time zone UTC) -------------------------------------- */

/**
 * Runs sql (with $1.. params: NULL-terminated list of text values; NULL for none) and returns every
 * row as one malloc'd string: columns joined by '|', rows by '\n', SQL NULL printed as "NULL",
 * "" for no rows. A SQL error fails the test.
 */
char *pwt_rows_p(const char *sql, const char *const *params);
char *pwt_rows(const char *sql);

/* The contract's columns of message_logs, status_events and pubsub_receipts, in a fixed order (see docs/rows.md). */
#define PWT_Q_LOGS                                                                                                                 \
    "SELECT bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at FROM message_logs "                      \
    "ORDER BY bsp_msg_id COLLATE \"C\""
#define PWT_Q_EVENTS                                                                                                               \
    "SELECT bsp_msg_id, status, occurred_at, recipient_id, phone_number_id, conversation, pricing, errors, "                       \
    "biz_opaque_callback_data, pubsub_message_id FROM status_events ORDER BY bsp_msg_id COLLATE \"C\", status COLLATE \"C\""
#define PWT_Q_RECEIPTS                                                                                                             \
    "SELECT subscription, message_id, publish_time, outcome FROM pubsub_receipts "                                                 \
    "ORDER BY subscription COLLATE \"C\", message_id COLLATE \"C\""

/* The single integer value of sql (fails the test unless exactly one non-NULL integer). */
long long pwt_scalar_int(const char *sql);

/* Runs sql, failing the test on error. */
void pwt_exec(const char *sql);

/* TRUNCATE ... RESTART IDENTITY of every table the worker writes (not schema_migrations). */
void pwt_truncate_all(void);

/* Every row of every table the worker writes, all columns, in a fixed order: for before/after comparisons. */
char *pwt_dump_tables(void);

/* Asserts pwt_dump_tables() equals before (printing both on mismatch), then frees before. */
#define pwt_assert_tables_unchanged(before) pwt__assert_tables_unchanged(__FILE__, __LINE__, (before))
void pwt__assert_tables_unchanged(const char *file, int line, char *before);

/* The rows of sql (formatted as pwt_rows) on a connection of its own to conninfo, in time zone UTC; NULL (printed) when the
 * database cannot be reached or the SQL fails. Malloc'd. For databases that restart under the test. */
char *pwt_rows_at(const char *conninfo, const char *sql);

/* Asserts that pwt_rows_at(conninfo, sql) equals expected exactly. */
#define pwt_assert_rows_at(conninfo, sql, expected) pwt__assert_rows_at(__FILE__, __LINE__, (conninfo), (sql), (expected))
void pwt__assert_rows_at(const char *file, int line, const char *conninfo, const char *sql, const char *expected);

/**
 * Asserts that the rows of sql equal expected exactly (see pwt_rows_p). On mismatch prints the SQL,
 * both values and the log tail of every running worker, then fails the test at the caller's line.
 */
#define pwt_assert_rows(sql, expected) pwt__assert_rows(__FILE__, __LINE__, (sql), NULL, (expected))
#define pwt_assert_rows_p(sql, params, expected) pwt__assert_rows(__FILE__, __LINE__, (sql), (params), (expected))

/*
 * Asserts that migration 0009's stored times of message_logs are its whatsapp_status's, and that
 * migration 0008's roll-ups (message_status_rollup, message_latency_rollup,
 * message_failure_rollup) are what message_status_times says of the rows there are.
 */
#define pwt_assert_rollups_consistent() pwt__assert_rollups_consistent(__FILE__, __LINE__)
void pwt__assert_rollups_consistent(const char *file, int line);

/* Asserts two texts are equal (e.g. pwt_dump_tables before/after), printing both in full on mismatch. */
#define pwt_assert_text(actual, expected) pwt__assert_text(__FILE__, __LINE__, (actual), (expected))

/* Asserts an HTTP status, printing both values and the workers' log tails on mismatch. */
#define pwt_assert_status(actual, expected) pwt__assert_status(__FILE__, __LINE__, (actual), (expected))

/* Fails the current test at file:line after printing msg and the workers' log tails. */
void pwt_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

void pwt__assert_rows(const char *file, int line, const char *sql, const char *const *params, const char *expected);
void pwt__assert_status(const char *file, int line, long actual, long expected);
void pwt__assert_text(const char *file, int line, const char *actual, const char *expected);

#endif
