/*
 * Handlers: all the SQL of the write path. Each handler is a section of the one statement a
 * group of pushes is written with (status.c: status_events and message_logs; inbound.c:
 * inbound_messages and contacts; receipts.c: pubsub_receipts and dead_letters), and encodes a
 * push's rows for its section. handlers.c assembles the statement. They read a push through
 * pw_rows_t, a view of their own: they know nothing of Dispatch, Http or the executor.
 */
#ifndef PW_HANDLERS_H
#define PW_HANDLERS_H

#include <stdint.h>

#include "proto/webhook.h"
#include "worker/cols.h"

/* A push as the handlers see it: what its rows are made of. Everything is borrowed. */
typedef struct {
    pw_str_t subscription;     /* NULL when the push names none */
    pw_str_t message_id;       /* NULL: no identity, so no receipt (an unwrapped push without metadata) */
    pw_time_us_t publish_time; /* 0 when unknown */
    const char *outcome;       /* what pubsub_receipts.outcome records: "stored", "ignored" or "dead_letter" */
    const pw_webhook_t *wh;    /* the events (never NULL: zeroed when there are none) */
    const unsigned char *skip; /* NULL, or per item (statuses, then inbound, then contacts): 1 = left out */
    const char *dead_reason;   /* NULL: no dead letter */
    const unsigned char *raw;  /* the body kept with the dead letter */
    size_t raw_len;
    int64_t redrive_id;        /* `worker redrive`: the dead letter written again (dead_letters.id); 0 for a live push */
} pw_rows_t;

/* The item kinds, in the order pw_rows_t.skip numbers them. */
typedef enum { PW_ITEM_STATUS = 0, PW_ITEM_INBOUND, PW_ITEM_CONTACT } pw_item_kind_t;

/* 1 when this write leaves item i of kind out. */
static inline int pw_rows_skip(const pw_rows_t *v, pw_item_kind_t kind, size_t i)
{
    if (v->skip == NULL)
        return 0;
    size_t at = i;
    if (kind >= PW_ITEM_INBOUND)
        at += v->wh->n_statuses;
    if (kind >= PW_ITEM_CONTACT)
        at += v->wh->n_inbound;
    return v->skip[at];
}

/* The subscription as pubsub_receipts keys it: '' when the push names none. */
static inline pw_str_t pw_rows_receipt_sub(const pw_rows_t *v)
{
    return v->subscription.base != NULL ? v->subscription : PW_STR_LIT("");
}

/*
 * A section of the statement: entries of its WITH list that read array parameters $1..$ncols
 * (numbered from 1 within the section; handlers.c renumbers them when it puts the sections
 * together) and the function that adds one push's rows.
 */
typedef struct {
    const char *name;
    const char *ctes;
    int ncols;
    void (*encode)(pw_cols_t *cols, int base, const pw_rows_t *v);
} pw_section_t;

/* status.c: status_events and message_logs. */
extern const pw_section_t pw_status_section;
/* inbound.c: inbound_messages (CTE "ins" returns the new ones, announced with NOTIFY after the commit) and contacts. */
extern const pw_section_t pw_inbound_section;
extern const pw_section_t pw_contacts_section;
/* receipts.c: pubsub_receipts (CTEs "rc" and "rr" return the receipts this statement made new),
   dead_letters, and the marks of the dead letters `worker redrive` wrote again. */
extern const pw_section_t pw_receipts_section;
extern const pw_section_t pw_dead_letters_section;
extern const pw_section_t pw_redriven_section;

/*
 * SQL condition: the row (with columns sub, psmid) comes from a push whose receipt this very
 * statement inserted (CTE "rc"; or redrove: "rr"), or from a push without a message id. A
 * redelivered push, whose receipt an earlier transaction wrote, changes nothing, even if its
 * content differed.
 */
#define PW_SQL_FROM_NEW_PUSH(alias)                                                                                            \
    "(" alias ".psmid IS NULL OR (" alias ".sub, " alias ".psmid) IN (SELECT subscription, message_id FROM rc"                \
    " UNION ALL SELECT subscription, message_id FROM rr))"

/* The NOTIFY channel announcing each new inbound message (payload: small JSON). */
#define PW_INBOUND_CHANNEL "pushworker_inbound"

/*
 * The announcements, the statement's after statement (pw_db_stmt_t.after_sql): run by the
 * executor once a group has committed, in a transaction of its own, with the payloads the
 * group's result gave (a row per inbound message it inserted). Not in the group's transaction:
 * a transaction that notifies takes, at its commit, a lock of the whole database cluster that
 * it keeps until its commit record is flushed, so every writer's commits (every worker's, and
 * any other client's that notifies) would wait for each other's WAL flush; this one commits
 * without waiting for its flush (synchronous_commit off: it writes no rows, and the rows it
 * announces are already durable), so it holds that lock for microseconds (BENCHMARKS.md,
 * "Announcements after the commit"). Its failure costs the announcements of its batch, never
 * the messages (the statement leaves out a payload NOTIFY would refuse: see handlers.c).
 */
#define PW_HANDLERS_AFTER_SQL                                                                                                  \
    "SELECT set_config('synchronous_commit', 'off', true), count(pg_notify('" PW_INBOUND_CHANNEL "', p))"                      \
    " FROM unnest($1::text[]) AS p"

/* ---- the statement (handlers.c) ---- */

/* Its name as prepared, its SQL and how many array parameters it has (built on first use; any thread). */
#define PW_HANDLERS_STATEMENT "pw_batch"
const char *pw_handlers_sql(int *ncols);
/* The element type of each of its ncols array parameters, as the SQL's first cast of it names it
   ("$3::timestamptz[]": PW_OID_TIMESTAMPTZ). Any thread. */
const uint32_t *pw_handlers_types(void);

/*
 * The sections are the statement's parts for the executor's variants (see pw_db_stmt_t in
 * worker/db.h): the statement with only some sections, for a group that has no rows for the
 * others. Returns how many sections there are and, in column_ends, where each one's array
 * parameters end (the last: ncols). Any thread.
 */
int pw_handlers_sections(const int **column_ends);
/* The statement with only the sections in parts (bit i: section i), its parameters numbered in
   order; valid for the life of the process. parts must hold PW_HANDLERS_KEEP. Any thread. */
const char *pw_handlers_variant_sql(unsigned parts);
/* The sections every variant has: the receipts (the others read its CTEs "rc" and "rr"). */
#define PW_HANDLERS_KEEP 1u
/* The variants a new connection warms up after the statement itself (pw_db_stmt_t.warm): statuses;
   inbound messages with their contacts; both; statuses with contacts. Ended by 0. */
const unsigned *pw_handlers_warm_variants(void);
/* Section i's name ("receipts", "status"...), NULL past the last. */
const char *pw_handlers_section_name(unsigned i);

/* A query that reads every table the statement writes and nothing else: run on connecting behind a pooler. */
#define PW_HANDLERS_CHECK_SQL                                                                                                  \
    "SELECT 1 FROM pubsub_receipts, dead_letters, status_events, message_logs, inbound_messages, contacts LIMIT 0"

/* Encodes a push's rows, every section's, into cols (begun with the statement's ncols and types). */
void pw_handlers_encode(pw_cols_t *cols, const pw_rows_t *v);

/*
 * The statement returns one row per receipt it made new (inserted, or redrove), whose only column is this key of the
 * receipt's push: "<bytes of the subscription>:<subscription><message id>". Appends it to out;
 * returns 0, or -1 (nothing appended) when the push has no message id (no receipt).
 */
int pw_handlers_receipt_key(pw_buf_t *out, const pw_rows_t *v);

#endif
