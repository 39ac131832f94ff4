/*
 * The database of the process: async libpq in pipeline mode, with group commit. It lives in one
 * event loop (its home); every loop reaches it through a port: on the home loop a port calls it
 * directly, on the others jobs and their answers travel as h2o multithread messages. So a group
 * gathers the pushes of every loop, and the process opens DB_CONNECTIONS connections, not one set
 * per loop.
 */
#ifndef PW_DB_H
#define PW_DB_H

#define H2O_USE_EPOLL 1
#include <h2o.h>
#include <stdatomic.h>

#include "worker/config.h"
#include "worker/dispatch.h"
#include "worker/metrics.h"

typedef struct pw_db_job pw_db_job_t;

/* Called once per submitted job, on the loop that submitted it, with 204 (committed) or 503 (not committed: retry). */
typedef void (*pw_db_done_cb)(pw_db_job_t *job, int http_status);

/*
 * A unit of work: the caller allocates it zeroed (usually inside its own request object) and
 * keeps it, and leaves the push alone, until on_done.
 */
struct pw_db_job {
    pw_push_t *push;     /* borrowed until on_done */
    pw_db_done_cb on_done;
    _Atomic int abandoned; /* set by the caller when it already answered (deadline): skip if not yet sent */
    /* private to db.c */
    pw_db_job_t *next;
    int attempts;                  /* serialization failures or deadlocks of it alone */
    int solo;                      /* written alone (a group of it failed) */
    double due_ms;                 /* waiting for a retry after a conflict: when */
    int status;                    /* the answer, on its way back */
    struct pw_db_port *port;       /* where it came from; NULL: the home loop */
    h2o_multithread_message_t msg; /* carries it between loops */
};

typedef struct pw_db pw_db_t;
typedef struct pw_db_port pw_db_port_t;

/**
 * Creates the database on ctx's loop, its home (cfg->db_connections connections sharing one
 * queue), and starts connecting at once, without blocking. cfg and metrics (the home loop's) are
 * borrowed for the life of the object. Home-loop thread only.
 */
pw_db_t *pw_db_new(h2o_context_t *ctx, const pw_config_t *cfg, pw_metrics_t *metrics);

/** A loop's way to db (home: 1 for db's own loop). On ctx's thread; freed there, see pw_db_port_free. */
pw_db_port_t *pw_db_port_new(pw_db_t *db, h2o_context_t *ctx, int home);

/**
 * Queues job; it is written with whatever else is queued when a connection is next free, in
 * one transaction. on_done is always called later from port's loop, never from inside this call.
 */
void pw_db_submit(pw_db_port_t *port, pw_db_job_t *job);

/* Jobs submitted from every loop and not yet answered (any thread). */
long pw_db_outstanding(const pw_db_t *db);

/* 1 when at least one connection is up and its statement prepared (any thread). */
int pw_db_ready(const pw_db_t *db);

/* Frees a port once every job submitted through it has been answered. Its loop's thread. */
void pw_db_port_free(pw_db_port_t *port);

/**
 * Answers every job still queued or in flight 503 (on their loops), closes the connections and
 * frees db. Home-loop thread only, once no loop submits any more.
 */
void pw_db_free(pw_db_t *db);

#endif
