/* Status handler: a group's status events become status_events rows and merged message_logs rows, in one statement. */
#include "worker/handlers.h"

enum {
    C_ID, C_STATUS, C_AT, C_RECIPIENT, C_TO_PHONE, C_PNID, C_CONV, C_PRICING, C_ERRORS, C_BIZ, C_PSMID, C_SUB,
    C_RECIPIENT_USER, /* last: added by migration 0005 */
    C_NCOLS
};

/*
 * Why SQL and not C: the merge must not read-modify-write (two pushes for the same message at
 * once would lose one), and a group may hold several events of one message, which
 * `ON CONFLICT DO UPDATE` may touch only once per statement. So the statement:
 *   s    one row per (message, status), the first in PW_EVENT_ORDER, from pushes new to this
 *        transaction (see PW_SQL_FROM_NEW_PUSH);
 *   ev   upserts status_events, replacing a row only by an event before it in that order;
 *   imp  adds the implied statuses (read => delivered => sent; played => delivered => sent);
 *   m    folds them per message into {"status": "YYYY-MM-DDTHH:MM:SSZ"} keeping the earliest,
 *        with the recipient (phone number and user id) and the failure's errors (no join: the plan must not depend on
 *        row estimates, since the session uses generic plans, see worker/db.c);
 *   then upserts message_logs, merging the maps (earliest per key, see PW_MERGE) and keeping the
 *   errors of the failed event status_events keeps (PW_FAILED_BEFORE), and touches the row only
 *   when something changed, so a duplicate changes nothing, not even updated_at.
 * Rows are written in key order so that concurrent groups take row locks in the same order.
 */
/*
 * The merge of two status maps A and B (pw_status_merge in migrations/0001: per key the earliest
 * time), written out here rather than called: PostgreSQL does not inline these functions (one is
 * IMMUTABLE around STABLE jsonb_build_object, the other gets a non-trivial argument), and a SQL
 * function that is not inlined is parsed and planned again on every execution of the statement
 * (fmgr_sql), which cost a fifth of the database's time per group. Maps holding only the usual
 * statuses are merged key by key; any other key takes the general pw_status_merge.
 */
#define PW_USUAL_STATUSES "'{sent,delivered,read,played,failed}'::text[]"
#define PW_ONLY_USUAL(a) "(" a " - " PW_USUAL_STATUSES ") = '{}'::jsonb"
#define PW_LEAST_KEY(a, b, k) "'" k "', least(" a "->>'" k "', " b "->>'" k "')"
#define PW_MERGE(a, b)                                                                                                   \
    "(CASE WHEN " PW_ONLY_USUAL(a) " AND " PW_ONLY_USUAL(b) " THEN jsonb_strip_nulls(jsonb_build_object("               \
    PW_LEAST_KEY(a, b, "sent") ", " PW_LEAST_KEY(a, b, "delivered") ", " PW_LEAST_KEY(a, b, "read") ", "              \
    PW_LEAST_KEY(a, b, "played") ", " PW_LEAST_KEY(a, b, "failed") ")) ELSE pw_status_merge(" a ", " b ") END)"
/* B brings key k, or an earlier time for it. */
#define PW_KEY_CHANGES(a, b, k) "(" b " ? '" k "' AND (NOT " a " ? '" k "' OR " b "->>'" k "' < " a "->>'" k "'))"
/* Whether merging B into A changes A: A IS DISTINCT FROM PW_MERGE(A, B) for maps of times as the worker writes them. */
#define PW_MERGE_CHANGES(a, b)                                                                                           \
    "(CASE WHEN " PW_ONLY_USUAL(a) " AND " PW_ONLY_USUAL(b) " THEN " PW_KEY_CHANGES(a, b, "sent") " OR "              \
    PW_KEY_CHANGES(a, b, "delivered") " OR " PW_KEY_CHANGES(a, b, "read") " OR " PW_KEY_CHANGES(a, b, "played")          \
    " OR " PW_KEY_CHANGES(a, b, "failed") " ELSE " a " IS DISTINCT FROM pw_status_merge(" a ", " b ") END)"
/* pw_current_status of a map, given the test "the map has key k" and the map for the fallback. */
#define PW_CURRENT_STATUS_BY(has, map)                                                                                   \
    "(CASE WHEN " has("played") " THEN 'played' WHEN " has("read") " THEN 'read' WHEN " has("delivered")                \
    " THEN 'delivered' WHEN " has("failed") " THEN 'failed' WHEN " has("sent") " THEN 'sent' ELSE pw_first_key(" map    \
    ") END)"
#define PW_WS_HAS(k) "ws ? '" k "'"
/*
 * Which of two events of one (message, status) status_events keeps, and so whose errors are the
 * message's last_error: the earlier; at one time the one with errors, then the smaller errors
 * (jsonb order), then the smaller push id. Every step is a property of the event, not of its
 * arrival, so any order and grouping of the same events keeps the same one (a push id alone would
 * not do: message_logs does not hold it, and two events of one push share it).
 */
#define PW_EVENT_ORDER "at, errors NULLS LAST, coalesce(psmid, '')"
/* That order as a row of status_events t, for a row comparison. */
#define PW_EVENT_KEY(t)                                                                                                  \
    "(" t ".occurred_at, " t ".errors IS NULL, coalesce(" t ".errors, 'null'), coalesce(" t ".pubsub_message_id, ''))"
/* Message_logs row B brings a failed event before A's, in that order without the push id. */
#define PW_FAILED_KEY(t) "(" t ".whatsapp_status->>'failed', " t ".last_error IS NULL, coalesce(" t ".last_error, 'null'))"
#define PW_FAILED_BEFORE(a, b)                                                                                         \
    "(" b ".whatsapp_status ? 'failed' AND (NOT " a ".whatsapp_status ? 'failed' OR " PW_FAILED_KEY(b) " < "            \
    PW_FAILED_KEY(a) "))"
#define PW_EITHER_HAS(k) "l.whatsapp_status ? '" k "' OR excluded.whatsapp_status ? '" k "'"

static const char status_ctes[] =
    "s AS ("
    "  SELECT DISTINCT ON (id, status) *"
    "  FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],"
    "              $7::jsonb[], $8::jsonb[], $9::jsonb[], $10::text[], $11::text[], $12::text[], $13::text[])"
    "       AS u(id, status, at, recipient, to_phone, pnid, conv, pricing, errors, biz, psmid, sub, recipient_user)"
    "  WHERE " PW_SQL_FROM_NEW_PUSH("u")
    "  ORDER BY id, status, " PW_EVENT_ORDER
    "), ev AS ("
    "  INSERT INTO status_events AS e (bsp_msg_id, status, occurred_at, recipient_id, phone_number_id,"
    "                                  conversation, pricing, errors, biz_opaque_callback_data, pubsub_message_id,"
    "                                  recipient_user_id)"
    "  SELECT id, status, at, recipient, pnid, conv, pricing, errors, biz, psmid, recipient_user FROM s ORDER BY id, status"
    "  ON CONFLICT (bsp_msg_id, status) DO UPDATE SET"
    "    occurred_at = excluded.occurred_at, recipient_id = excluded.recipient_id,"
    "    recipient_user_id = excluded.recipient_user_id,"
    "    phone_number_id = excluded.phone_number_id, conversation = excluded.conversation,"
    "    pricing = excluded.pricing, errors = excluded.errors,"
    "    biz_opaque_callback_data = excluded.biz_opaque_callback_data,"
    "    pubsub_message_id = excluded.pubsub_message_id, received_at = now()"
    "  WHERE " PW_EVENT_KEY("excluded") " < " PW_EVENT_KEY("e")
    "  RETURNING 1"
    "), imp AS ("
    "  SELECT s.id, k.status, min(s.at) AS at, min(s.to_phone) AS to_phone, min(s.recipient_user) AS recipient_user,"
    "         (array_agg(s.errors) FILTER (WHERE s.status = 'failed'))[1] AS errors"
    "  FROM s CROSS JOIN LATERAL unnest(CASE s.status"
    "      WHEN 'read' THEN ARRAY['read', 'delivered', 'sent']"
    "      WHEN 'played' THEN ARRAY['played', 'delivered', 'sent']"
    "      WHEN 'delivered' THEN ARRAY['delivered', 'sent']"
    "      ELSE ARRAY[s.status] END) AS k(status)"
    "  GROUP BY s.id, k.status"
    "), m AS ("
    "  SELECT id, jsonb_object_agg(status, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) AS ws,"
    "         min(at) AS first_at, min(to_phone) AS to_phone, min(recipient_user) AS recipient_user,"
    "         (array_agg(errors) FILTER (WHERE status = 'failed'))[1] AS err"
    "  FROM imp GROUP BY id"
    "), ml AS ("
    " INSERT INTO message_logs AS l (bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at, updated_at,"
    "                                recipient_user_id)"
    " SELECT id, to_phone, ws, " PW_CURRENT_STATUS_BY(PW_WS_HAS, "ws") ", err, least(first_at, now()), now(), recipient_user"
    " FROM m ORDER BY id "
    "ON CONFLICT (bsp_msg_id) DO UPDATE SET"
    "  whatsapp_status = " PW_MERGE("l.whatsapp_status", "excluded.whatsapp_status") ","
        /* the merge's keys are those of both maps */
    "  current_status = " PW_CURRENT_STATUS_BY(PW_EITHER_HAS, "l.whatsapp_status || excluded.whatsapp_status") ","
    "  to_phone = coalesce(l.to_phone, excluded.to_phone),"
    "  recipient_user_id = coalesce(l.recipient_user_id, excluded.recipient_user_id),"
    "  last_error = CASE WHEN " PW_FAILED_BEFORE("l", "excluded") " THEN excluded.last_error ELSE l.last_error END,"
    "  created_at = least(l.created_at, excluded.created_at),"
    "  updated_at = now() "
    "WHERE " PW_MERGE_CHANGES("l.whatsapp_status", "excluded.whatsapp_status")
    "   OR (l.to_phone IS NULL AND excluded.to_phone IS NOT NULL)"
    "   OR (l.recipient_user_id IS NULL AND excluded.recipient_user_id IS NOT NULL)"
    "   OR excluded.created_at < l.created_at"
    "   OR " PW_FAILED_BEFORE("l", "excluded")
    " RETURNING 1"
    ")";

static void status_encode(pw_cols_t *c, int base, const pw_rows_t *v)
{
    for (size_t i = 0; i < v->wh->n_statuses; i++) {
        if (pw_rows_skip(v, PW_ITEM_STATUS, i))
            continue;
        const pw_status_t *st = &v->wh->statuses[i];
        pw_cols_str(c, base + C_ID, st->id);
        pw_cols_str(c, base + C_STATUS, st->status);
        pw_cols_time(c, base + C_AT, st->occurred_at);
        pw_cols_str(c, base + C_RECIPIENT, st->recipient_id);
        pw_cols_phone(c, base + C_TO_PHONE, st->recipient_id);
        pw_cols_str(c, base + C_PNID, st->phone_number_id);
        pw_cols_jsonb(c, base + C_CONV, st->conversation);
        pw_cols_jsonb(c, base + C_PRICING, st->pricing);
        pw_cols_jsonb(c, base + C_ERRORS, st->errors);
        pw_cols_str(c, base + C_BIZ, st->biz_opaque_callback_data);
        pw_cols_str(c, base + C_PSMID, v->message_id);
        pw_cols_str(c, base + C_SUB, pw_rows_receipt_sub(v));
        pw_cols_str(c, base + C_RECIPIENT_USER, st->recipient_user_id);
        pw_cols_end_row(c);
    }
}

const pw_section_t pw_status_section = {"status", status_ctes, C_NCOLS, status_encode};
