/* Inbound handler: a group's inbound messages become inbound_messages rows (announced with NOTIFY once committed) and contacts rows. */
#include "worker/handlers.h"

enum { M_ID, M_PNID, M_FROM, M_FROM_USER, M_NAME, M_TYPE, M_BODY, M_CONTEXT, M_SENT, M_PAYLOAD, M_PSMID, M_SUB, M_NCOLS };

/*
 * First write wins (a redelivery changes nothing). Only rows really inserted are announced, so a
 * listener hears each message once: the statement returns their payloads, and the executor
 * announces them after the group has committed (PW_HANDLERS_AFTER_SQL), never for a rolled-back
 * group.
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

enum { K_WA_ID, K_USER_ID, K_NAME, K_USERNAME, K_CC, K_FIRST, K_LAST, K_PSMID, K_SUB, K_NCOLS };

/*
 * A person is one contacts row, known by a phone number (wa_id), a business-scoped user id, or
 * both. A sighting showing both links them: the row of the one gets the other, and a row known
 * only by the user id is merged into the row of the phone number (deleted, its times and names
 * folded in). A later sighting of either finds that row. A phone number or user id already
 * linked to another identity stays linked (a recycled number: the user id, which is the person's,
 * takes the sighting; see docs/rows.md). Times only widen; the names follow the latest sighting.
 *
 * One statement per group, so: a group may hold several sightings of one person, by either
 * identity or both, and ON CONFLICT may touch a row once per statement. Hence
 *   ct_in    the sightings of pushes new to this transaction;
 *   ct_link  the (phone, user id) pairs the group shows, kept when one to one (the smallest user id
 *            of a phone whose smallest phone is that phone: each kept phone and user id in one pair);
 *   ct_key   each sighting under the identity it is stored by: its pair when its phone or user id
 *            is in one, else its user id alone (when it has one), else its phone alone;
 *   ct_g     the group's sightings of each identity folded into one;
 *   ct_p     where each goes: the row of its phone (a) when it has no user id, when a already has
 *            that user id (the usual case: b is then not even looked up), or when a has no user id
 *            and the user id's row (b), if any, no phone (then b is merged into a); else b; else a
 *            new row;
 *   ct_t     one row per row written: an existing row several identities reach is written once;
 *   ct_del   the merged rows, deleted first: ct_w's source waits for all of them (an InitPlan
 *            over ct_del, a one-time filter evaluated before its first row), so that a user id
 *            moves to its phone's row only once its old row is gone;
 *   ct_w     the rows that have a phone number (or a new one with a phone), upserted on wa_id;
 *   ct_u     the rows known only by a user id (possibly getting their phone), upserted on user_id.
 * Each row is written by one upsert, and each upsert's rows are in key order (lock order between
 * concurrent groups). Upserts rather than updates: a row a concurrent transaction inserted or
 * merged after this statement's snapshot is still found (ON CONFLICT sees it), so no sighting is
 * lost. A race that would put one identity on two rows (two groups linking the same user id at
 * once) fails with a unique violation; Db writes such a group's pushes again one by one.
 * No join with contacts but by its unique indexes (the plan is generic: see worker/db.c).
 */
#define CT_FIRST_BY_LAST(f) "(array_agg(" f " ORDER BY last DESC, " f ") FILTER (WHERE " f " IS NOT NULL))[1]"
#define CT_FOLD "min(first) AS first, max(last) AS last, " CT_FIRST_BY_LAST("name") " AS name, " \
    CT_FIRST_BY_LAST("uname") " AS uname, " CT_FIRST_BY_LAST("cc") " AS cc"
/* The merged row's value of a name column, when it is later than the group's (or the group has none). */
#define CT_MERGED(d, t) "CASE WHEN d." d " IS NOT NULL AND (t." t " IS NULL OR d.last_seen_at > t.last) THEN d." d " ELSE t." t " END"
/* The stored name follows the latest sighting; a sighting without it changes nothing. */
#define CT_LATEST(f) f " = CASE WHEN excluded." f " IS NOT NULL AND (c." f " IS NULL OR excluded.last_seen_at >= c.last_seen_at)" \
    " THEN excluded." f " ELSE c." f " END"
#define CT_NEWER(f) "(excluded." f " IS NOT NULL AND excluded." f " IS DISTINCT FROM c." f \
    " AND (c." f " IS NULL OR excluded.last_seen_at >= c.last_seen_at))"
#define CT_SET                                                                                                         \
    CT_LATEST("profile_name") ", " CT_LATEST("username") ", " CT_LATEST("country_code") ","                          \
    "  first_seen_at = least(c.first_seen_at, excluded.first_seen_at),"                                              \
    "  last_seen_at = greatest(c.last_seen_at, excluded.last_seen_at) "
/* Touched only when something changes (a redelivery changes nothing). */
#define CT_CHANGES                                                                                                     \
    "excluded.first_seen_at < c.first_seen_at OR excluded.last_seen_at > c.last_seen_at"                             \
    " OR c.first_seen_at IS NULL OR c.last_seen_at IS NULL"                                                           \
    " OR " CT_NEWER("profile_name") " OR " CT_NEWER("username") " OR " CT_NEWER("country_code")
/* Whether row t is written on its phone number: an existing row that has one, or a new row with one. */
#define CT_VIA_WA_ID(t) "CASE WHEN " t ".tid IS NOT NULL THEN " t ".rw IS NOT NULL ELSE " t ".tw IS NOT NULL END"

static const char contacts_ctes[] =
    "ct_in AS ("
    "  SELECT u.wa_id AS w, u.user_id AS uid, u.name, u.uname, u.cc, u.first, u.last"
    "  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[],"
    "              $8::text[], $9::text[])"
    "       AS u(wa_id, user_id, name, uname, cc, first, last, psmid, sub)"
    "  WHERE " PW_SQL_FROM_NEW_PUSH("u")
    "), ct_link AS ("
    "  SELECT w, uid FROM ("
    "    SELECT w, uid, min(uid) OVER (PARTITION BY w) AS w_uid, min(w) OVER (PARTITION BY uid) AS uid_w"
    "    FROM (SELECT DISTINCT w, uid FROM ct_in WHERE w IS NOT NULL AND uid IS NOT NULL) p) q"
    "  WHERE uid = w_uid AND w = uid_w"
    "), ct_key AS ("
    "  SELECT CASE WHEN s.uid IS NOT NULL THEN lu.w ELSE coalesce(lw.w, s.w) END AS kw,"
    "         CASE WHEN s.uid IS NOT NULL THEN s.uid ELSE lw.uid END AS ku,"
    "         s.name, s.uname, s.cc, s.first, s.last"
    "  FROM ct_in s"
    "  LEFT JOIN ct_link lu ON lu.uid = s.uid"
    "  LEFT JOIN ct_link lw ON lw.w = s.w AND s.uid IS NULL"
    "), ct_g AS ("
    "  SELECT kw, ku, " CT_FOLD " FROM ct_key GROUP BY kw, ku"
    "), ct_p AS ("
    "  SELECT g.*, x.*,"
    "         CASE WHEN x.tid = x.a_id THEN g.kw WHEN x.tid = x.b_id THEN x.b_w END AS rw,"
    "         CASE WHEN x.tid = x.a_id THEN g.kw"
    "              WHEN x.tid = x.b_id THEN coalesce(x.b_w, CASE WHEN x.a_id IS NULL THEN g.kw END)"
    "              WHEN x.a_id IS NULL THEN g.kw END AS tw,"
    "         CASE WHEN x.tid = x.a_id THEN coalesce(x.a_uid, g.ku) ELSE g.ku END AS tu,"
    "         CASE WHEN x.tid = x.a_id AND x.b_id <> x.a_id THEN x.b_id END AS del"
    "  FROM ct_g g"
    "  LEFT JOIN LATERAL (SELECT id, user_id FROM contacts WHERE wa_id = g.kw) a ON true"
    "  LEFT JOIN LATERAL (SELECT id, wa_id FROM contacts WHERE user_id = g.ku AND a.user_id IS DISTINCT FROM g.ku OFFSET 0) b ON true"
    "  CROSS JOIN LATERAL (SELECT a.id AS a_id, a.user_id AS a_uid, b.id AS b_id, b.wa_id AS b_w,"
    "      CASE WHEN a.id IS NOT NULL AND (g.ku IS NULL OR a.user_id = g.ku OR (a.user_id IS NULL AND b.wa_id IS NULL))"
    "           THEN a.id ELSE b.id END AS tid) x"
    "), ct_t AS ("
    "  SELECT tid, max(rw) AS rw, max(tw) AS tw, max(tu) AS tu, max(del) AS del, " CT_FOLD
    "  FROM ct_p GROUP BY tid, CASE WHEN tid IS NULL THEN tw END, CASE WHEN tid IS NULL THEN tu END"
    "), ct_del AS ("
    "  DELETE FROM contacts c USING ct_t t WHERE c.id = t.del AND c.wa_id IS NULL"
    "  RETURNING c.id, c.profile_name, c.username, c.country_code, c.first_seen_at, c.last_seen_at"
    "), ct_w AS ("
    "  INSERT INTO contacts AS c (wa_id, user_id, profile_name, username, country_code, first_seen_at, last_seen_at)"
    "  SELECT coalesce(t.rw, t.tw), t.tu, " CT_MERGED("profile_name", "name") ", " CT_MERGED("username", "uname") ","
    "         " CT_MERGED("country_code", "cc") ", least(t.first, d.first_seen_at), greatest(t.last, d.last_seen_at)"
    "  FROM ct_t t LEFT JOIN ct_del d ON d.id = t.del"
    "  WHERE " CT_VIA_WA_ID("t") " AND (SELECT count(*) FROM ct_del) >= 0"
    "  ORDER BY 1"
    "  ON CONFLICT (wa_id) DO UPDATE SET user_id = coalesce(c.user_id, excluded.user_id), " CT_SET
    "  WHERE " CT_CHANGES " OR (c.user_id IS NULL AND excluded.user_id IS NOT NULL)"
    "  RETURNING 1"
    "), ct_u AS ("
    "  INSERT INTO contacts AS c (wa_id, user_id, profile_name, username, country_code, first_seen_at, last_seen_at)"
    "  SELECT t.tw, t.tu, t.name, t.uname, t.cc, t.first, t.last FROM ct_t t"
    "  WHERE NOT " CT_VIA_WA_ID("t")
    "  ORDER BY t.tu"
    "  ON CONFLICT (user_id) DO UPDATE SET wa_id = coalesce(c.wa_id, excluded.wa_id), " CT_SET
    "  WHERE " CT_CHANGES " OR (c.wa_id IS NULL AND excluded.wa_id IS NOT NULL)"
    "  RETURNING 1"
    ")";

static void contacts_encode(pw_cols_t *c, int base, const pw_rows_t *v)
{
    for (size_t i = 0; i < v->wh->n_contacts; i++) {
        if (pw_rows_skip(v, PW_ITEM_CONTACT, i))
            continue;
        const pw_contact_t *k = &v->wh->contacts[i];
        pw_cols_str(c, base + K_WA_ID, k->wa_id);
        pw_cols_str(c, base + K_USER_ID, k->user_id);
        pw_cols_str(c, base + K_NAME, k->profile_name);
        pw_cols_str(c, base + K_USERNAME, k->username);
        pw_cols_str(c, base + K_CC, k->country_code);
        pw_cols_time(c, base + K_FIRST, k->first_seen_at);
        pw_cols_time(c, base + K_LAST, k->seen_at);
        pw_cols_str(c, base + K_PSMID, v->message_id);
        pw_cols_str(c, base + K_SUB, pw_rows_receipt_sub(v));
        pw_cols_end_row(c);
    }
}

const pw_section_t pw_contacts_section = {"contacts", contacts_ctes, K_NCOLS, contacts_encode};
