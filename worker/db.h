/* The database inside an event loop: async libpq in pipeline mode, with group commit. */
#ifndef PW_DB_H
#define PW_DB_H

#define H2O_USE_EPOLL 1
#include <h2o.h>

#include "worker/config.h"
#include "worker/dispatch.h"
#include "worker/metrics.h"

typedef struct pw_db_job pw_db_job_t;

/* Called once per submitted job, on the loop thread, with 204 (committed) or 503 (not committed: retry). */
typedef void (*pw_db_done_cb)(pw_db_job_t *job, int http_status);

/* A unit of work: the caller allocates it (usually inside its own request object) and keeps it until on_done. */
struct pw_db_job {
    pw_push_t *push;     /* borrowed until on_done */
    pw_db_done_cb on_done;
    int abandoned;       /* set by the caller when it already answered (deadline): skip if not yet sent */
    /* private to db.c */
    pw_db_job_t *next;
    int attempts;
    int solo;
};

typedef struct pw_db pw_db_t;

/**
 * Creates the database side of one event loop (cfg->db_connections connections sharing one
 * queue) and starts connecting at once,
 * without blocking. cfg and metrics (this loop's) are borrowed for the life of the object.
 * Loop-thread only.
 */
pw_db_t *pw_db_new(h2o_loop_t *loop, const pw_config_t *cfg, pw_metrics_t *metrics);

/**
 * Queues job; it is written with whatever else is queued when the connection is next free, in
 * one transaction. on_done is always called later from the loop, never from inside this call.
 */
void pw_db_submit(pw_db_t *db, pw_db_job_t *job);

/* 1 when at least one connection is up and its statement prepared. */
int pw_db_ready(const pw_db_t *db);

/* Answers every job 503, closes the connection and frees db. Loop-thread only. */
void pw_db_free(pw_db_t *db);

#endif
