/* Inbound handler: a group's inbound messages become inbound_messages rows (announced with NOTIFY) and contacts rows. */
#include "worker/handlers.h"

enum { M_ID, M_PNID, M_FROM, M_FROM_USER, M_NAME, M_TYPE, M_BODY, M_CONTEXT, M_SENT, M_PAYLOAD, M_PSMID, M_SUB, M_NCOLS };

/*
 * First write wins (a redelivery changes nothing). Only rows really inserted are announced, so a
 * listener hears each message once; NOTIFY is delivered at COMMIT, never for a rolled-back group.
 */
static const char inbound_ctes[] =
    "im AS ("
    "  SELECT DISTINCT ON (id) *"
    "  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
    "              $8::text[], $9::timestamptz[], $10::jsonb[], $11::text[], $12::text[])"
    "       AS u(id, pnid, from_phone, from_user_id, contact_name, msg_type, body, context_id, sent_at, payload, psmid, sub)"
    "  WHERE " PW_SQL_FROM_NEW_PUSH("u")
    "  ORDER BY id, psmid"
    "), ins AS ("
    "  INSERT INTO inbound_messages (wa_msg_id, phone_number_id, from_phone, from_user_id, contact_name, msg_type,"
    "                                body, context_msg_id, sent_at, payload, pubsub_message_id)"
    "  SELECT id, pnid, from_phone, from_user_id, contact_name, msg_type, body, context_id, sent_at, payload, psmid"
    "  FROM im ORDER BY id"
    "  ON CONFLICT (wa_msg_id) DO NOTHING"
    "  RETURNING wa_msg_id, phone_number_id, msg_type, sent_at"
    ")";

static void inbound_encode(pw_cols_t *c, int base, const pw_rows_t *v)
{
    for (size_t i = 0; i < v->wh->n_inbound; i++) {
        if (pw_rows_skip(v, PW_ITEM_INBOUND, i))
            continue;
        const pw_inbound_t *m = &v->wh->inbound[i];
        pw_cols_str(c, base + M_ID, m->id);
        pw_cols_str(c, base + M_PNID, m->phone_number_id);
        pw_cols_phone(c, base + M_FROM, m->from);
        pw_cols_str(c, base + M_FROM_USER, m->from_user_id);
        pw_cols_str(c, base + M_NAME, m->contact_name);
        pw_cols_str(c, base + M_TYPE, m->type);
        pw_cols_str(c, base + M_BODY, m->body);
        pw_cols_str(c, base + M_CONTEXT, m->context_id);
        pw_cols_time(c, base + M_SENT, m->sent_at);
        pw_cols_jsonb(c, base + M_PAYLOAD, m->payload);
        pw_cols_str(c, base + M_PSMID, v->message_id);
        pw_cols_str(c, base + M_SUB, pw_rows_receipt_sub(v));
        pw_cols_end_row(c);
    }
}

const pw_section_t pw_inbound_section = {"inbound", inbound_ctes, M_NCOLS, inbound_encode};

enum { K_WA_ID, K_NAME, K_FIRST, K_LAST, K_PSMID, K_SUB, K_NCOLS };

/* The profile name follows the latest sighting; first/last seen only widen. */
static const char contacts_ctes[] =
    "ct AS (INSERT INTO contacts AS c (wa_id, profile_name, first_seen_at, last_seen_at) "
    "SELECT wa_id, (array_agg(profile_name ORDER BY last_seen DESC, profile_name)"
    "               FILTER (WHERE profile_name IS NOT NULL))[1], min(first_seen), max(last_seen) "
    "FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[])"
    "     AS u(wa_id, profile_name, first_seen, last_seen, psmid, sub) "
    "WHERE " PW_SQL_FROM_NEW_PUSH("u") " "
    "GROUP BY wa_id ORDER BY wa_id "
    "ON CONFLICT (wa_id) DO UPDATE SET"
    "  profile_name = CASE WHEN excluded.profile_name IS NOT NULL"
    "                       AND (c.profile_name IS NULL OR excluded.last_seen_at >= c.last_seen_at)"
    "                      THEN excluded.profile_name ELSE c.profile_name END,"
    "  first_seen_at = least(c.first_seen_at, excluded.first_seen_at),"
    "  last_seen_at = greatest(c.last_seen_at, excluded.last_seen_at) "
    "WHERE excluded.first_seen_at < c.first_seen_at OR excluded.last_seen_at > c.last_seen_at"
    "   OR c.first_seen_at IS NULL OR c.last_seen_at IS NULL"
    "   OR (excluded.profile_name IS NOT NULL AND excluded.profile_name IS DISTINCT FROM c.profile_name"
    "       AND (c.profile_name IS NULL OR excluded.last_seen_at >= c.last_seen_at))"
    " RETURNING 1)";

static void contacts_encode(pw_cols_t *c, int base, const pw_rows_t *v)
{
    for (size_t i = 0; i < v->wh->n_contacts; i++) {
        if (pw_rows_skip(v, PW_ITEM_CONTACT, i))
            continue;
        const pw_contact_t *k = &v->wh->contacts[i];
        pw_cols_str(c, base + K_WA_ID, k->wa_id);
        pw_cols_str(c, base + K_NAME, k->profile_name);
        pw_cols_time(c, base + K_FIRST, k->first_seen_at);
        pw_cols_time(c, base + K_LAST, k->seen_at);
        pw_cols_str(c, base + K_PSMID, v->message_id);
        pw_cols_str(c, base + K_SUB, pw_rows_receipt_sub(v));
        pw_cols_end_row(c);
    }
}

const pw_section_t pw_contacts_section = {"contacts", contacts_ctes, K_NCOLS, contacts_encode};
