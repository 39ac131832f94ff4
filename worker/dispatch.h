/*
 * Dispatch: what a push means and what becomes of it. It decodes a push (proto/: envelope,
 * base64, webhook), has the handlers encode its rows on the event loop that received it, submits
 * them to the executor (worker/db.h) and, from the answer, decides the push's outcome: stored,
 * duplicate, ignored or dead letter. When PostgreSQL refuses a push's data it finds what can be
 * kept (the refusal ladder, pw_push_next_rung) and resubmits. Http and `worker redrive` both
 * write pushes through it.
 */
#ifndef PW_DISPATCH_H
#define PW_DISPATCH_H

#define H2O_USE_EPOLL 1
#include <h2o.h>
#include <stdint.h>

#include "proto/pubsub.h"
#include "proto/webhook.h"

typedef enum {
    PW_OUTCOME_STORED = 0,  /* rows written (a part rejected kept in dead_letters too: dead_reason says) */
    PW_OUTCOME_IGNORED,     /* recognised, nothing to store */
    PW_OUTCOME_DEAD_LETTER, /* not understood: kept in dead_letters */
    PW_OUTCOME_DUPLICATE    /* its receipt was already there (a redelivery): nothing written */
} pw_outcome_t;

typedef struct pw_push pw_push_t;
typedef struct pw_dispatch pw_dispatch_t;
typedef struct pw_dispatch_loop pw_dispatch_loop_t;
typedef struct pw_ladder pw_ladder_t;
typedef struct pw_push_write pw_push_write_t;

/* Called once per submitted push, on the loop it was submitted from: result 0 (committed: see p->outcome) or a PW_E* code (nothing committed). */
typedef void (*pw_push_done_cb)(pw_push_t *p, int result);

/*
 * A push: owned by whoever decoded it, and left alone between pw_dispatch_submit and its
 * callback. Nothing borrows from the request, so it outlives a client that went away.
 */
struct pw_push {
    pw_str_t subscription;     /* NULL when the push names none */
    pw_str_t message_id;       /* NULL for an unwrapped push without metadata */
    pw_time_us_t publish_time; /* 0 when unknown */
    pw_envelope_t env;         /* the decoded envelope (zeroed when it could not be decoded) */
    pw_webhook_t wh;           /* parsed events; zeroed when the payload was not understood */
    pw_outcome_t outcome;      /* as decoded; after a commit, what the commit made of it (duplicate...) */
    char *dead_reason;         /* why (a part of) it is a dead letter (owned), or NULL */
    unsigned char *raw;        /* the request body (owned), written to dead_letters when needed */
    size_t raw_len;
    int64_t redrive_id;        /* set by `worker redrive`: the dead letter this push is written again from (0: a live push) */

    /* private to dispatch.c */
    char *id_copies;           /* owns the ids recovered from a push that failed to decode */
    pw_push_write_t *write;    /* its encoded rows and the executor's job, while submitted */
    pw_ladder_t *ladder;       /* the search for what PostgreSQL refuses, NULL until then */
    unsigned char *skip;       /* per item (statuses, inbound, contacts): 1 = not written; NULL = all are */
    int skip_dead_letter;      /* 1: the dead letter is not written */
    int trial;                 /* 1: the write is a trial, rolled back whatever happens */
    int abandoned;             /* the submitter gave up on it (pw_dispatch_abandon) */
    pw_dispatch_loop_t *loop;
    pw_push_done_cb on_done;
};

/**
 * Decodes a request body into p (which the caller zeroes). Never fails: a push that cannot be
 * understood becomes a dead letter with the reason. meta is the unwrapped push's headers (used
 * only when the body is not a wrapped envelope). Release with pw_push_dispose.
 */
void pw_push_decode(pw_push_t *p, const char *body, size_t len, const pw_unwrapped_meta_t *meta);

/* Releases what p owns. Idempotent. Not while submitted. */
void pw_push_dispose(pw_push_t *p);

struct pw_db;      /* worker/db.h: Http, which includes this, never names them */
struct pw_db_stmt;

/**
 * The process's dispatch, over the executor db (created by the Face with pw_dispatch_statement();
 * borrowed). Any thread.
 */
pw_dispatch_t *pw_dispatch_new(struct pw_db *db);
void pw_dispatch_free(pw_dispatch_t *d);

/* The statement every push is written with (the handlers' sections, worker/handlers.h), for the Face to create the executor with. */
const struct pw_db_stmt *pw_dispatch_statement(void);

/* One per event loop: the loop's encoding buffers and its port to the executor (which uses only ctx's message queue). On ctx's thread. */
pw_dispatch_loop_t *pw_dispatch_loop_new(pw_dispatch_t *d, h2o_context_t *ctx);
/* Once every push submitted through it has been answered. Its thread. */
void pw_dispatch_loop_free(pw_dispatch_loop_t *dl);

/**
 * Encodes p's rows on this loop and submits them; on_done(p, result) is called later, on this
 * loop, never from inside this call. Everything of p stays p's; while submitted, leave it alone.
 */
void pw_dispatch_submit(pw_dispatch_loop_t *dl, pw_push_t *p, pw_push_done_cb on_done);

/* The submitter gave up on p (its deadline answered it): not sent if still queued. Its callback still comes. */
void pw_dispatch_abandon(pw_push_t *p);

/* 1 when pushes can be written now (a database connection is up and answering). Any thread. */
int pw_dispatch_ready(const pw_dispatch_t *d);

/* A stop: what is not committed by deadline_ms (pw_now_ms() clock) is answered PW_EUNAVAIL then. Any thread. */
void pw_dispatch_drain(pw_dispatch_t *d, double deadline_ms);

/**
 * The ladder for a push PostgreSQL refuses (a data error, SQLSTATE class 22, 23 or 54), so a
 * refusal never costs the push what can be kept. Called each time p, written alone, was refused
 * (accepted = 0, with the error's SQLSTATE and message) or a trial was accepted (accepted = 1).
 * The rungs:
 *   1. find the refused items by trials (rolled back) that bisect the items;
 *   2. write the other items, and p as a dead letter whose reason names the refused items and the error;
 *   3. if refused: the same items, and the dead letter with a fixed ASCII reason (and the SQLSTATE);
 *   4. if refused: the dead letter alone (the raw body), with that fixed reason.
 * Changes p for its next write (skip, skip_dead_letter, trial, dead_reason, outcome) and
 * returns 1; returns 0 when the last rung was refused too (nothing can be kept: answer 503).
 * Reasons are valid UTF-8. Trials are bounded (PW_LADDER_MAX_TRIALS). Exposed for tests.
 */
int pw_push_next_rung(pw_push_t *p, int accepted, const char *sqlstate, const char *message);

#endif
