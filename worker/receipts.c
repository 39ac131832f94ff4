/* Receipts and dead letters handler: a group's pubsub_receipts rows (which make redeliveries change nothing) and dead_letters rows. */
#include "worker/handlers.h"

/*
 * rc inserts the receipts; RETURNING gives the pushes new to this transaction, and only their
 * rows are written (PW_SQL_FROM_NEW_PUSH), so a redelivered push changes nothing. Two copies of
 * one message in one group make one receipt: one new push and one redelivery.
 * rr is `worker redrive`'s: a dead letter written again (its id in $5) replaces its receipt's
 * outcome dead_letter, which makes it new to this transaction too; a receipt whose outcome is
 * no longer dead_letter (another redrive got there first) makes it a redelivery. For live
 * pushes $5 is all NULL and rr touches nothing.
 */
static const char receipts_ctes[] = "rc AS ("
                                    " INSERT INTO pubsub_receipts (subscription, message_id, publish_time, outcome)"
                                    " SELECT s, m, p, o FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])"
                                    "   AS u(s, m, p, o)"
                                    " ON CONFLICT DO NOTHING"
                                    " RETURNING subscription, message_id), "
                                    "rr AS ("
                                    " UPDATE pubsub_receipts AS r SET outcome = u.o"
                                    " FROM unnest($1::text[], $2::text[], $4::text[], $5::bigint[]) AS u(s, m, o, d)"
                                    " WHERE u.d IS NOT NULL AND r.subscription = u.s AND r.message_id = u.m"
                                    "   AND r.outcome = 'dead_letter'"
                                    " RETURNING r.subscription, r.message_id)";

static void receipts_encode(pw_cols_t *c, int base, const pw_rows_t *v)
{
    if (v->message_id.base == NULL)
        return; /* an unwrapped push without metadata has no identity to record */
    pw_cols_str(c, base + 0, pw_rows_receipt_sub(v));
    pw_cols_str(c, base + 1, v->message_id);
    pw_cols_time(c, base + 2, v->publish_time);
    pw_cols_cstr(c, base + 3, v->outcome);
    pw_cols_id(c, base + 4, v->redrive_id);
    pw_cols_end_row(c);
}

const pw_section_t pw_receipts_section = {"receipts", receipts_ctes, 5, receipts_encode};

/* The dead letters `worker redrive` wrote again are marked, in the same transaction as their rows. */
static const char redriven_ctes[] = "dr AS ("
                                    " UPDATE dead_letters SET redriven_at = now()"
                                    " WHERE id = ANY($1::bigint[]) AND redriven_at IS NULL RETURNING 1)";

static void redriven_encode(pw_cols_t *c, int base, const pw_rows_t *v)
{
    if (v->redrive_id == 0)
        return;
    pw_cols_id(c, base, v->redrive_id);
    pw_cols_end_row(c);
}

const pw_section_t pw_redriven_section = {"redriven", redriven_ctes, 1, redriven_encode};

/* Kept once per push: the key of migrations/0004, where a push without a message id is known by its body. */
static const char dead_ctes[] = "dl AS ("
                                " INSERT INTO dead_letters (subscription, message_id, reason, body)"
                                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])"
                                " ON CONFLICT ((coalesce(subscription, '')), (coalesce(message_id, '')),"
                                "  (CASE WHEN message_id IS NULL THEN sha256(body) ELSE '\\x'::bytea END)) DO NOTHING"
                                " RETURNING 1)";

static void dead_encode(pw_cols_t *c, int base, const pw_rows_t *v)
{
    if (v->dead_reason == NULL)
        return;
    pw_cols_str(c, base + 0, v->subscription);
    pw_cols_str(c, base + 1, v->message_id);
    pw_cols_cstr(c, base + 2, v->dead_reason);
    pw_cols_bytea(c, base + 3, v->raw, v->raw_len);
    pw_cols_end_row(c);
}

const pw_section_t pw_dead_letters_section = {"dead_letters", dead_ctes, 4, dead_encode};
