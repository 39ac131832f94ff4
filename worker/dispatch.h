/* A push decoded into what it means (rows to write, or a dead letter), and the statements that write it. */
#ifndef PW_DISPATCH_H
#define PW_DISPATCH_H

#include "proto/pubsub.h"
#include "proto/webhook.h"
#include "worker/cols.h"

typedef enum {
    PW_OUTCOME_STORED = 0, /* rows written (or already there) */
    PW_OUTCOME_IGNORED,    /* recognised, nothing to store */
    PW_OUTCOME_DEAD_LETTER /* not understood: kept in dead_letters */
} pw_outcome_t;

typedef struct pw_ladder pw_ladder_t;

/*
 * Everything the database needs for one push, owned by the push (nothing borrows from the
 * request, so it outlives a client that went away). Built once on the request path; read by
 * the statements' append functions when a group of pushes is written.
 */
typedef struct {
    pw_str_t subscription;  /* NULL when the push names none */
    pw_str_t message_id;    /* NULL for an unwrapped push without metadata */
    pw_time_us_t publish_time; /* 0 when unknown */
    pw_envelope_t env;      /* the decoded envelope (zeroed when it could not be decoded) */
    char *salvage;          /* owns the ids recovered (unescaped) from an envelope that failed to decode */
    char *id_copies;        /* owns the ids recovered from the headers of an unwrapped push that failed */
    pw_webhook_t wh;        /* parsed events; zeroed when the payload was not understood */
    pw_outcome_t outcome;
    char *dead_reason;      /* why it is a dead letter (owned), or NULL */
    unsigned char *raw;     /* the request body (owned), written to dead_letters when needed */
    size_t raw_len;
    int batch_index;        /* its place in the group being written (set by db.c) */
    int new_receipt;        /* 1 when the group's statement inserted its receipt (0: a redelivery) */
    /* What a write leaves out, set by pw_push_next_rung once PostgreSQL refused the push: */
    unsigned char *skip;    /* per item (see pw_push_skips), 1 = not written; NULL = every item is */
    int skip_dead_letter;   /* 1: the dead letter is not written */
    int dry_run;            /* 1: the write is a trial, rolled back whatever happens (worker/db.c) */
    pw_ladder_t *ladder;    /* the search for what PostgreSQL refuses (owned), NULL until then */
} pw_push_t;

/* A push's items, numbered statuses first, then inbound messages, then contacts. */
typedef enum { PW_ITEM_STATUS = 0, PW_ITEM_INBOUND, PW_ITEM_CONTACT } pw_item_kind_t;

/* 1 when this write of p leaves item i of kind out (the handlers' append loops skip it). */
static inline int pw_push_skips(const pw_push_t *p, pw_item_kind_t kind, size_t i)
{
    if (p->skip == NULL)
        return 0;
    size_t at = i;
    if (kind >= PW_ITEM_INBOUND)
        at += p->wh.n_statuses;
    if (kind >= PW_ITEM_CONTACT)
        at += p->wh.n_inbound;
    return p->skip[at];
}

/**
 * Decodes a request body into p (which the caller zeroes). Never fails: a push that cannot be
 * understood becomes a dead letter with the reason. meta is the unwrapped push's headers (used
 * only when the body is not a wrapped envelope). Release with pw_push_dispose.
 */
void pw_push_decode(pw_push_t *p, const char *body, size_t len, const pw_unwrapped_meta_t *meta);

/* Turns p into a dead letter (its rows are dropped) with reason. */
void pw_push_make_dead_letter(pw_push_t *p, const char *reason);

/**
 * The ladder for a push PostgreSQL refuses (a data error, SQLSTATE class 22, 23 or 54), so a
 * refusal never costs the push what can be kept. Called by the executor each time p, written
 * alone, was refused (accepted = 0, with the error's SQLSTATE and message) or a trial was
 * accepted (accepted = 1). The rungs:
 *   1. find the refused items by trials (dry runs, rolled back) that bisect the items;
 *   2. write the other items, and p as a dead letter whose reason names the refused items and the error;
 *   3. if refused: the same items, and the dead letter with a fixed ASCII reason (and the SQLSTATE);
 *   4. if refused: the dead letter alone (the raw body), with that fixed reason.
 * Changes p for its next write (skip, skip_dead_letter, dry_run, dead_reason, outcome) and
 * returns 1; returns 0 when the last rung was refused too (nothing can be kept: answer 503).
 * Reasons are valid UTF-8. Trials are bounded (PW_LADDER_MAX_TRIALS).
 */
int pw_push_next_rung(pw_push_t *p, int accepted, const char *sqlstate, const char *message);

/* Releases what p owns. Idempotent. */
void pw_push_dispose(pw_push_t *p);

/* The subscription as pubsub_receipts keys it: '' when the push names none. */
static inline pw_str_t pw_push_receipt_sub(const pw_push_t *p)
{
    return p->subscription.base != NULL ? p->subscription : PW_STR_LIT("");
}

/* The statement a group of pushes is written with: its SQL (parameters are arrays, one element per row) and the function that adds a push's rows. */
typedef struct {
    const char *name; /* prepared statement name */
    const char *sql;
    int ncols;
    void (*append)(pw_cols_t *cols, const pw_push_t *p);
} pw_stmt_t;

/*
 * The one statement that writes a whole group of pushes (built on first use; any thread). It
 * returns one row: the number of inbound messages announced, and the batch_index values of the
 * pushes whose receipts it inserted, comma-separated (NULL when none).
 */
const pw_stmt_t *pw_dispatch_statement(void);

#endif
