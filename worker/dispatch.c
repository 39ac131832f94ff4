/* Decodes a push (envelope -> base64 -> webhook) and routes it: rows for the handlers, or a dead letter. */
#include "worker/dispatch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/handlers.h"
#include "worker/util.h"

static void set_dead(pw_push_t *p, const char *step, const char *why)
{
    free(p->dead_reason);
    size_t n = strlen(step) + strlen(why) + 3;
    p->dead_reason = pw_xmalloc(n);
    snprintf(p->dead_reason, n, "%s: %s", step, why);
}

/* Reads a string member of o, or NULL. */
static pw_str_t string_member(json_object *o, const char *key)
{
    json_object *v;
    if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        return pw_str(json_object_get_string(v), (size_t)json_object_get_string_len(v));
    return PW_STR_NULL;
}

/*
 * An envelope that failed to decode (bad base64, a member of the wrong type...) may still name its
 * subscription and message id: recover them, so the dead letter is kept once and a redelivery
 * is recognised.
 */
static void salvage_ids(pw_push_t *p, const char *body, size_t len)
{
    json_tokener *tok = json_tokener_new_ex(PW_JSON_MAX_DEPTH);
    json_object *root = json_tokener_parse_ex(tok, body, (int)(len > INT32_MAX ? INT32_MAX : len));
    json_tokener_free(tok);
    json_object *msg;
    if (root == NULL || !json_object_is_type(root, json_type_object) || !json_object_object_get_ex(root, "message", &msg) ||
        !json_object_is_type(msg, json_type_object)) {
        json_object_put(root);
        return;
    }
    p->salvage = root;
    p->subscription = string_member(root, "subscription");
    p->message_id = string_member(msg, "messageId");
    if (p->message_id.base == NULL)
        p->message_id = string_member(msg, "message_id");
    pw_str_t t = string_member(msg, "publishTime");
    if (t.base == NULL)
        t = string_member(msg, "publish_time");
    if (t.base != NULL && pw_time_parse_rfc3339(t.base, t.len, &p->publish_time, NULL, 0) != 0)
        p->publish_time = 0;
}

void pw_push_decode(pw_push_t *p, const char *body, size_t len, const pw_unwrapped_meta_t *meta)
{
    char err[256] = "";
    p->raw = pw_xmalloc(len + 1);
    if (len > 0)
        memcpy(p->raw, body, len);
    p->raw_len = len;
    p->outcome = PW_OUTCOME_DEAD_LETTER;

    int rc;
    if (pw_envelope_is_wrapped(body, len))
        rc = pw_envelope_parse_wrapped(body, len, &p->env, err, sizeof err);
    else
        rc = pw_envelope_from_unwrapped(body, len, meta, &p->env, err, sizeof err);
    if (rc != 0) {
        memset(&p->env, 0, sizeof p->env);
        set_dead(p, "envelope", err[0] != '\0' ? err : pw_strerror(rc));
        if (len > 0)
            salvage_ids(p, body, len);
        return;
    }
    p->subscription = p->env.subscription;
    p->message_id = p->env.message_id;
    p->publish_time = p->env.publish_time;
    if (p->env.data == NULL || p->env.data_len == 0) {
        set_dead(p, "payload", "empty: the message has no data");
        return;
    }
    rc = pw_webhook_parse((const char *)p->env.data, p->env.data_len, &p->wh, err, sizeof err);
    if (rc != 0) {
        memset(&p->wh, 0, sizeof p->wh);
        set_dead(p, "payload", err[0] != '\0' ? err : pw_strerror(rc));
        return;
    }
    if (p->wh.n_rejected > 0) {
        /* Keep the good items and the whole push, so nothing is lost. */
        char step[48];
        snprintf(step, sizeof step, "rejected %zu item(s)", p->wh.n_rejected);
        set_dead(p, step, p->wh.reject_reason);
    }
    p->outcome = pw_push_items(p) + p->wh.n_contacts > 0 ? PW_OUTCOME_STORED : PW_OUTCOME_IGNORED;
}

void pw_push_make_dead_letter(pw_push_t *p, const char *reason)
{
    pw_webhook_dispose(&p->wh);
    memset(&p->wh, 0, sizeof p->wh);
    set_dead(p, "database", reason);
    p->outcome = PW_OUTCOME_DEAD_LETTER;
}

void pw_push_dispose(pw_push_t *p)
{
    pw_webhook_dispose(&p->wh);
    pw_envelope_dispose(&p->env);
    json_object_put(p->salvage);
    p->salvage = NULL;
    free(p->dead_reason);
    free(p->raw);
    p->dead_reason = NULL;
    p->raw = NULL;
}

size_t pw_push_items(const pw_push_t *p)
{
    return p->wh.n_statuses + p->wh.n_inbound;
}

static const char *const outcome_names[] = {"stored", "ignored", "dead_letter"};

/* A redelivered push finds its receipt and adds nothing; its rows are idempotent as well. */
static const char receipts_sql[] = "INSERT INTO pubsub_receipts (subscription, message_id, publish_time, outcome) "
                                   "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) "
                                   "ON CONFLICT DO NOTHING";

static void receipts_append(pw_cols_t *c, const pw_push_t *p)
{
    if (p->message_id.base == NULL)
        return; /* an unwrapped push without metadata has no identity to record */
    pw_cols_str(c, 0, pw_push_receipt_sub(p));
    pw_cols_str(c, 1, p->message_id);
    pw_cols_time(c, 2, p->publish_time);
    pw_cols_cstr(c, 3, outcome_names[p->outcome]);
    pw_cols_end_row(c);
}

static const char dead_sql[] = "INSERT INTO dead_letters (subscription, message_id, reason, body) "
                               "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) "
                               "ON CONFLICT (subscription, message_id) DO NOTHING";

static void dead_append(pw_cols_t *c, const pw_push_t *p)
{
    if (p->dead_reason == NULL)
        return;
    pw_cols_str(c, 0, p->subscription);
    pw_cols_str(c, 1, p->message_id);
    pw_cols_cstr(c, 2, p->dead_reason);
    pw_cols_bytea(c, 3, p->raw, p->raw_len);
    pw_cols_end_row(c);
}

static const pw_stmt_t receipts_stmt = {"pw_receipts", receipts_sql, 4, receipts_append};
static const pw_stmt_t dead_stmt = {"pw_dead", dead_sql, 4, dead_append};

static const pw_stmt_t *const all_stmts[] = {&receipts_stmt, &pw_status_stmt, &pw_inbound_stmt, &pw_contacts_stmt, &dead_stmt};

const pw_stmt_t *const *pw_dispatch_statements(size_t *n)
{
    *n = sizeof all_stmts / sizeof all_stmts[0];
    return all_stmts;
}
