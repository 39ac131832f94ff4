/*
 * Db: a group-commit executor of one statement. It knows no table, no push and no HTTP status:
 * it is given a statement whose parameters are arrays, and jobs that each bring their elements
 * of those arrays already encoded (fragments, see pw_db_job_t). It runs on a thread and
 * event loop of its own with DB_CONNECTIONS pipelined libpq connections, joins the fragments of
 * the jobs waiting into one execution of the statement (one transaction: group commit), and
 * answers each job with 0 or a negative PW_E* code (proto/pw_str.h), the SQLSTATE and the result
 * row addressed to it. The generic parts are its own: reconnecting with backoff, a watchdog that
 * drops a connection that stopped answering, splitting a failed group into single jobs,
 * retrying serialization failures and deadlocks alone with backoff, and the ports through which
 * every event loop submits jobs and gets their answers back on its own thread.
 */
#ifndef PW_DB_H
#define PW_DB_H

#define H2O_USE_EPOLL 1
#include <h2o.h>
#include <stdatomic.h>
#include <stdint.h>

#include "proto/pw_str.h"
#include "worker/config.h"
#include "worker/metrics.h"

/* The most array parameters a statement may have. */
#define PW_DB_COLS_MAX 48

/*
 * The statement: its SQL, whose parameters $1..$ncols are arrays (typed by casts in the SQL),
 * and a query that only reads the tables it needs (checked on connecting, so that a missing
 * migration is one clear error). Its result's first column, when not NULL, addresses a row to a
 * job: see pw_db_job_t.key.
 */
typedef struct pw_db_stmt {
    const char *name;      /* the prepared statement's name */
    const char *sql;
    int ncols;             /* <= PW_DB_COLS_MAX */
    const char *check_sql; /* run instead of preparing behind a transaction-mode pooler */
    /*
     * How each column's array is sent (NULL: every one as text). elem_types[k] == 0: as text, an
     * array literal. Else as one binary parameter, an array whose elements are of the type with
     * that OID (the same type as the cast in the SQL, or the server refuses it).
     */
    const uint32_t *elem_types;

    /*
     * Optional variants (nparts 0: none). The columns fall into nparts consecutive parts, part p
     * ending before column part_end[p] (the last is ncols). A group in which every column of a
     * part is empty runs the variant without that part: variant(parts) returns its SQL (bit p
     * set: part p kept; the result stays valid for the life of the process, from any thread),
     * whose parameters are the kept parts' columns, in order. Parts in keep are always kept.
     * Each connection prepares a variant the first time one of its groups needs it, as "name_XX"
     * (XX: the parts in hex); the statement with every part is prepared on connecting, as name.
     * Starting a statement costs the server for every part it has, rows or none (a
     * data-modifying part opens its table's indexes and fires its statement triggers).
     */
    int nparts;             /* <= PW_DB_PARTS_MAX */
    const int *part_end;
    unsigned keep;
    const char *(*variant)(unsigned parts);
    /*
     * The variants a new connection also prepares and runs once with every array empty, after
     * the statement itself, when it has nothing else to do (the warm-up, one a turn: see
     * worker/db.c): their parts (keep is added), most common first, ended by 0. NULL: none.
     */
    const unsigned *warm;
    /*
     * Optional (NULL: none): a statement for work that must not be part of a group's commit. It
     * runs after a group's transaction has committed, in a transaction of its own, with one
     * parameter: a text[] of the values in the second column of the group's result rows, from
     * the rows whose first column is NULL (a group that failed or was rolled back gives none).
     * A connection runs it once for the values of every group it committed in PW_DB_AFTER_WAIT_MS
     * (worker/db.c) from the first: at the head of the pipeline of the first group sent after
     * that, before the group, or alone when none is; and at once, before the jobs are answered,
     * when a group that committed was all the executor had in hand. It is no job's business: the jobs were
     * answered when their group committed. Its error is logged and counted (metrics' after_failed, db_errors), and a
     * connection lost before it has run loses it (counted as failed too).
     */
    const char *after_sql;
} pw_db_stmt_t;

/* The most parts a statement's variants may have (each connection keeps a 64-bit set of the variants it prepared). */
#define PW_DB_PARTS_MAX 6

typedef struct pw_db_job pw_db_job_t;

/* Called once per submitted job, on the thread of the port it was submitted through, never from inside pw_db_submit. */
typedef void (*pw_db_done_cb)(pw_db_job_t *job);

/* Job flags. */
#define PW_DB_ALONE 1 /* never in a group with another job */
#define PW_DB_TRIAL 2 /* run alone and rolled back whatever happens: 0 means the statement accepted the data */

/*
 * A unit of work. The caller allocates it zeroed (usually inside its own object), fills the
 * first block, and leaves it and everything it points to alone until on_done.
 *
 * frags holds the job's elements of every array parameter: column k is frags[ends[k-1] ..
 * ends[k]) (from 0 for k = 0), empty when the job has none for that column. A text column's
 * fragment is a comma-separated list of array elements as PostgreSQL's array input reads them
 * (quoted, or NULL); the executor joins a group's fragments into "{a,b,...}". A binary column's
 * (pw_db_stmt_t.elem_types) is its elements in PostgreSQL's binary array format, one after the
 * other: a 4-byte length in network byte order (-1 for NULL), then that many bytes of the
 * element type's binary form; the executor puts the array's header before the group's elements.
 */
struct pw_db_job {
    const char *frags;
    const uint32_t *ends; /* ncols entries */
    pw_str_t key;         /* the result row it wants: see below; base NULL: none */
    uint32_t shard;       /* jobs of one shard go through one connection (shard % DB_CONNECTIONS) while it is up */
    int flags;            /* PW_DB_ALONE, PW_DB_TRIAL */
    pw_db_done_cb on_done;
    _Atomic int abandoned; /* set by the caller once it gave up: answered PW_ECANCELED if not yet sent */

    /*
     * The answer, set before on_done: result is 0 (committed; for a trial: accepted and rolled
     * back), PW_EREFUSED (the data itself refused: only for a job that ran alone, since a group
     * that is refused is split), PW_ECONFLICT, PW_ETIMEDOUT (lock_timeout or statement_timeout,
     * for a job alone), PW_ECANCELED or PW_EUNAVAIL (no connection, a connection lost or dropped
     * by the watchdog, the queue full, the drain deadline passed).
     * sqlstate and message say what PostgreSQL said, when it said something (message is valid
     * UTF-8, cut at a whole character). got_row is 1 when a row of the result had key as its
     * first column: each such row goes to the first job of the group with that key that has no
     * row yet. A trial's rows are routed too (got_row says what the statement returned before
     * it was rolled back).
     */
    int result;
    int got_row;
    char sqlstate[6];
    char message[200];

    /* private to db.c */
    h2o_linklist_t link;           /* in a queue of the executor (the first: pw_db_t.in_jobs) */
    h2o_multithread_message_t msg; /* carries its answer back to its port's thread */
    struct pw_db_port *port;
    int attempts; /* conflicts of it alone */
    int solo;     /* written alone (a group of it failed) */
    double due_ms; /* waiting for a retry after a conflict: when */
    double queued_ms; /* submitted: when (0 once its first group was sent) */
};

typedef struct pw_db pw_db_t;
typedef struct pw_db_port pw_db_port_t;

/**
 * Starts the executor: its thread and loop, and cfg->db_connections connections to
 * cfg->database_url, without waiting for them. stmt, cfg and metrics are borrowed for the life
 * of the object (metrics: counters written by the executor's thread). Call from one thread;
 * pw_db_free stops it.
 */
pw_db_t *pw_db_new(const pw_config_t *cfg, const pw_db_stmt_t *stmt, pw_metrics_t *metrics);

/* A loop's way to db: answers come back to ctx's thread. Create and free on that thread. */
pw_db_port_t *pw_db_port_new(pw_db_t *db, h2o_context_t *ctx);

/**
 * Queues job: it is written with whatever else is queued when a connection is next free, in one
 * transaction. Its on_done is always called later on port's thread.
 */
void pw_db_submit(pw_db_port_t *port, pw_db_job_t *job);

/* 1 when at least one connection is up, its statement prepared, and it answers (any thread). */
int pw_db_ready(const pw_db_t *db);

/**
 * Sets the drain deadline (pw_now_ms() clock). Until deadline_ms jobs are taken and written as
 * usual; at deadline_ms whatever is still queued or in flight is answered PW_EUNAVAIL without
 * waiting for the server (what committed by then is answered 0), the connections are closed, and
 * every job submitted from then on is answered PW_EUNAVAIL at once. Any thread.
 */
void pw_db_drain(pw_db_t *db, double deadline_ms);

/* Frees a port once every job submitted through it has been answered. Its loop's thread. */
void pw_db_port_free(pw_db_port_t *port);

/**
 * Stops the executor's thread (answering PW_EUNAVAIL whatever is still queued or in flight),
 * closes the connections and frees db. Call once no port submits any more and every port has
 * been freed: a stop drains first (pw_db_drain), and each loop waits for its answers.
 */
void pw_db_free(pw_db_t *db);

#endif
