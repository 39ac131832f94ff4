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
} pw_push_t;

/**
 * Decodes a request body into p (which the caller zeroes). Never fails: a push that cannot be
 * understood becomes a dead letter with the reason. meta is the unwrapped push's headers (used
 * only when the body is not a wrapped envelope). Release with pw_push_dispose.
 */
void pw_push_decode(pw_push_t *p, const char *body, size_t len, const pw_unwrapped_meta_t *meta);

/* Turns p into a dead letter (its rows are dropped) with reason; used when the database rejects its rows. */
void pw_push_make_dead_letter(pw_push_t *p, const char *reason);

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
