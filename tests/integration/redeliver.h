/*
 * A redelivering push client for integration tests: it behaves like Pub/Sub towards the worker.
 *
 * Given a set of pushes (request body, subscription and message id, and the rows each push must
 * leave), pwt_rd_run sends them with libcurl multi at a given concurrency to a target that a callback
 * names per request (tests restart workers, so the URL may change mid-run). Only 102, 200, 201, 202
 * and 204 acknowledge a push; any other status, a transport error or a timeout (per request) makes
 * it be sent again after a backoff (100 ms doubling to 2 s, jittered, per push), until every push is
 * acknowledged or the run's deadline passes. Each push records its attempts, its last answer and when
 * it was acknowledged; the run records counts per answer and the latency of every attempt.
 *
 * pwt_rd_check then compares the database (a connection of its own to pwt_db_url(), so it survives a
 * restarted server) with what the pushes carried: every acknowledged push present (its receipt, each
 * of its (wamid, status) in status_events, each of its inbound wamids in inbound_messages), nothing
 * doubled (count(*) = count(DISTINCT key) in every table), nothing that no push carried, and
 * message_logs consistent with status_events (a row per wamid with a status, and each row exactly what docs/rows.md
 * derives from that wamid's events: whatsapp_status with the implied keys and earliest times, current_status,
 * last_error, created_at, to_phone).
 *
 * Everything runs on the calling thread; the tick callback lets a test inject faults mid-run (stop the
 * database, signal the worker, hold a lock...) without threads. Names are prefixed pwt_rd_.
 */
#ifndef PWT_REDELIVER_H
#define PWT_REDELIVER_H

#include <stddef.h>

/* ---- the pushes ------------------------------------------------------------------------------------ */

typedef struct {
    /* what is sent (owned by the set) */
    char *body;
    size_t len;
    char *subscription; /* for the receipt check; NULL: no receipt expected */
    char *message_id;
    /* the rows it must leave (owned by the set) */
    size_t n_statuses, cap_statuses;
    char **status_wamid, **status_name;
    size_t n_inbound, cap_inbound;
    char **inbound_wamid;

    /* results of pwt_rd_run */
    int attempts;          /* requests started for it */
    long final_status;     /* the last answer: HTTP status, -1 transport error, -2 timeout, 0 never sent */
    int last_curl_code;    /* the last attempt's CURLcode (0: an HTTP answer came) */
    int acked;             /* 1 once answered 102/200/201/202/204 */
    double acked_at_ms;    /* when (ms since the run started); -1 when never */
    double first_sent_ms;  /* when its first attempt started; -1 when never */
    double max_latency_ms; /* its slowest attempt */
    int target;            /* the index passed to the target callback (pwt_rd_add sets it to the push's index) */

    /* internal */
    double next_at_ms;
    double backoff_ms;
    int in_flight;
} pwt_rd_push_t;

typedef struct {
    pwt_rd_push_t *pushes;
    size_t n, cap;
} pwt_rd_set_t;

/* An empty set; free with pwt_rd_set_free. */
pwt_rd_set_t *pwt_rd_set_new(void);
void pwt_rd_set_free(pwt_rd_set_t *set);

/* Adds a push (body copied) and returns its index. subscription/message_id may be NULL. */
size_t pwt_rd_add(pwt_rd_set_t *set, const char *subscription, const char *message_id, const void *body, size_t len);

/* Rows push i must leave once acknowledged. */
void pwt_rd_expect_status(pwt_rd_set_t *set, size_t i, const char *wamid, const char *status);
void pwt_rd_expect_inbound(pwt_rd_set_t *set, size_t i, const char *wamid);

/* Resets every push's results (for running the same set again). */
void pwt_rd_reset(pwt_rd_set_t *set);

/*
 * Adds n generated pushes: wrapped Meta webhooks with 1-3 statuses each (sent, delivered, read or
 * failed) of about n/2 outbound messages, shuffled so that the statuses of one message travel in
 * different pushes (concurrent merges); with inbound_every > 0, every inbound_every-th push also carries
 * one inbound text message and its contact. Message ids are "<prefix>-NNNNNN" and wamids contain
 * prefix, so runs with different prefixes never share keys. Deterministic for a given seed.
 */
void pwt_rd_generate(pwt_rd_set_t *set, const char *subscription, const char *prefix, size_t n, unsigned seed, int inbound_every);

/* ---- running them ------------------------------------------------------------------------------------- */

/* Counters of a run so far (also handed to the tick callback). */
typedef struct {
    double elapsed_ms;
    size_t n;         /* pushes in the set */
    size_t sent;      /* pushes sent at least once */
    size_t acked;     /* pushes acknowledged */
    size_t in_flight; /* requests in flight */
    long attempts;    /* requests started */
    long answered;    /* requests that got an HTTP answer */
    long n2xx;        /* acknowledging answers */
    long n503;
    long n401, n403;
    long other_status;     /* any other HTTP status */
    long transport_errors; /* connection refused/reset, empty reply... (the next two split them) */
    long refused;          /* of which: the connection could not be made (nothing listening) */
    long dropped;          /* of which: the connection was closed or reset without an answer */
    long timeouts;         /* no answer within the per-request timeout */
    double max_latency_ms; /* slowest answered (or timed out) attempt */
    double last_ack_ms;    /* when the latest acknowledgement came (ms since start), -1 before any */
    int deadline_passed;
} pwt_rd_stats_t;

/* The base URL ("http://127.0.0.1:PORT") for a request of push `target` (pwt_rd_push_t.target). */
typedef const char *(*pwt_rd_target_fn)(void *ctx, int target);
/* Called about every 10-50 ms during the run (and once before the first request). */
typedef void (*pwt_rd_tick_fn)(void *ctx, const pwt_rd_stats_t *stats);

typedef struct {
    pwt_rd_target_fn target; /* required */
    void *target_ctx;
    const char *path;           /* default "/" */
    int concurrency;            /* requests in flight at most; default 16 */
    long request_timeout_ms;    /* default 10000 */
    long backoff_min_ms;        /* default 100 */
    long backoff_max_ms;        /* default 2000 */
    long deadline_ms;           /* the whole run; default 120000 */
    double rate_per_s;          /* first attempts per second at most (retries are not limited); 0: no limit */
    const char *const *headers; /* extra request headers ("Name: value", NULL-terminated), e.g. Authorization */
    pwt_rd_tick_fn tick;
    void *tick_ctx;
    unsigned seed;     /* for the jitter */
    const char *label; /* for messages; default "redeliver" */
} pwt_rd_opts_t;

/*
 * Sends every push of set (previous results are reset) until all are acknowledged or the deadline
 * passes. Fills *stats (may be NULL). Returns the number of pushes left unacknowledged (0 = all).
 * Keeps every attempt's latency for pwt_rd_latency_ms.
 */
size_t pwt_rd_run(pwt_rd_set_t *set, const pwt_rd_opts_t *opts, pwt_rd_stats_t *stats);

/* The q-quantile (0..1) of the latencies of the last run's answered or timed-out attempts; -1 when none. */
double pwt_rd_latency_ms(double q);

/* Prints "# label: pushes N, sent S, acknowledged A, retried R (extra attempts) ..." on stdout. */
void pwt_rd_print_stats(const char *label, const pwt_rd_stats_t *stats);

/* ---- checking the database ---------------------------------------------------------------------------- */

typedef struct {
    /* what is stored */
    long long receipts, status_events, inbound, message_logs, dead_letters;
    /* what the acknowledged pushes carried (distinct keys) */
    long long want_receipts, want_statuses, want_inbound;
    /* problems */
    long long missing_receipts, missing_statuses, missing_inbound; /* acknowledged but absent */
    long long receipts_not_stored; /* receipt of an acknowledged push with an outcome other than 'stored' */
    long long doubled;             /* count(*) - count(DISTINCT key), summed over the tables */
    long long unexpected;          /* rows no push of the set carried */
    long long logs_inconsistent;   /* status wamids without a message_logs row, or rows not what their events imply */
    long long unacked;             /* pushes never acknowledged */
} pwt_rd_check_t;

/*
 * Compares the database with the set (see the top). Prints the stored counts and the first few
 * problems of each kind (stderr). With dead_letters_ok = 0 a dead letter counts as a problem.
 * Returns the number of problems (0 = exact). Fails the test only when the database cannot be reached.
 */
long long pwt_rd_check(const pwt_rd_set_t *set, const char *label, int dead_letters_ok, pwt_rd_check_t *out);

/* pwt_rd_check, then fails the test at the caller's line unless the run was exact and complete. */
#define pwt_rd_assert_exact(set, label) pwt_rd__assert_exact(__FILE__, __LINE__, (set), (label))
void pwt_rd__assert_exact(const char *file, int line, const pwt_rd_set_t *set, const char *label);

#endif
