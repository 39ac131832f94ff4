/* Integration-test harness: a fresh database, the real worker as a child process, HTTP over libcurl, row checks over libpq. */
#ifndef PWT_HARNESS_H
#define PWT_HARNESS_H

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

/* ---- pushes and fixtures --------------------------------------------------------------------- */

/**
 * Wraps payload as Pub/Sub does: {"message":{"data":<base64>,"messageId":id,"message_id":id,
 * "publishTime":t,"publish_time":t},"subscription":s}. A NULL message_id, subscription or
 * publish_time leaves that member out. Returns a malloc'd NUL-terminated string.
 */
char *pwt_wrap(const void *payload, size_t len, const char *message_id, const char *subscription, const char *publish_time);

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

/* The single integer value of sql (fails the test unless exactly one non-NULL integer). */
long long pwt_scalar_int(const char *sql);

/* Runs sql, failing the test on error. */
void pwt_exec(const char *sql);

/* TRUNCATE ... RESTART IDENTITY of every table the worker writes (not schema_migrations). */
void pwt_truncate_all(void);

/* Every row of every table the worker writes, all columns, in a fixed order: for before/after comparisons. */
char *pwt_dump_tables(void);

/**
 * Asserts that the rows of sql equal expected exactly (see pwt_rows_p). On mismatch prints the SQL,
 * both values and the log tail of every running worker, then fails the test at the caller's line.
 */
#define pwt_assert_rows(sql, expected) pwt__assert_rows(__FILE__, __LINE__, (sql), NULL, (expected))
#define pwt_assert_rows_p(sql, params, expected) pwt__assert_rows(__FILE__, __LINE__, (sql), (params), (expected))

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
