/* The AiSensy project webhook: message.sender.user and message.status.updated into the Meta-shaped pw_webhook_t items. */
#include "webhook.h"

#include "pw_json.h"

#include <stdio.h>

/* Item-level failure: the reason is recorded in wh and the item is skipped (not a PW_E* code). */
#define SKIPPED (-1)

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int eq_ignore_case(pw_str_t s, const char *lower_lit)
{
    size_t n = strlen(lower_lit);
    if (s.base == NULL || s.len != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ascii_lower(s.base[i]) != lower_lit[i])
            return 0;
    return 1;
}

/* ---- times: ms, s, numeric strings or ISO strings, with AiSensy's "not yet" placeholders ---- */

/* "0", 0, "" and {} stand for "no time yet" (a third-party suite saw failed_at:"0"). */
static int is_placeholder(json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_null:
        return 1;
    case json_type_object:
        return json_object_object_length(v) == 0;
    case json_type_int:
        return json_object_get_int64(v) == 0;
    case json_type_double:
        return json_object_get_double(v) == 0;
    case json_type_string:
        return json_object_get_string_len(v) == 0 || pw_str_eq(pw_json_str(v), "0");
    default:
        return 0;
    }
}

static int is_numeric_text(pw_str_t s)
{
    for (size_t i = 0; i < s.len; i++)
        if ((s.base[i] < '0' || s.base[i] > '9') && s.base[i] != '.')
            return 0;
    return 1;
}

/* 1 when absent, 0 with *out set, or a negative PW_E* code with why. */
static int loose_time(json_object *v, pw_time_us_t *out, char *why, size_t why_len)
{
    if (is_placeholder(v))
        return 1;
    if (json_object_is_type(v, json_type_string)) {
        pw_str_t s = pw_json_str(v);
        if (is_numeric_text(s))
            return pw_time_from_unix_text(s.base, s.len, out, why, why_len);
        return pw_time_parse_rfc3339(s.base, s.len, out, why, why_len);
    }
    return pw__webhook_unix_time(v, out, why, why_len);
}

/* data.message.<key> when it holds a time, else the envelope's created_at (docs/rows.md). */
static int event_time(pw_webhook_t *wh, json_object *root, json_object *msg, const char *key, pw_time_us_t *out)
{
    char why[128];
    int rc;

    if ((rc = loose_time(pw_json_member(msg, key), out, why, sizeof(why))) == 0)
        return 0;
    if (rc < 0) {
        pw__webhook_reject(wh, "data.message.%s: not a time (%s)", key, why);
        return SKIPPED;
    }
    if ((rc = loose_time(pw_json_member(root, "created_at"), out, why, sizeof(why))) == 0)
        return 0;
    if (rc < 0)
        pw__webhook_reject(wh, "created_at: not a time (%s)", why);
    else
        pw__webhook_reject(wh, "data.message.%s: missing, and no created_at", key);
    return SKIPPED;
}

/* ---- fields ---- */

static int req_string(pw_webhook_t *wh, json_object *msg, const char *key, pw_str_t *out)
{
    const char *why = pw__webhook_req_string(msg, key, out);
    if (why == NULL)
        return 0;
    pw__webhook_reject(wh, "data.message.%s: %s", key, why);
    return SKIPPED;
}

/* countryCode as "91", "+91" or 91: its digits, "" when absent or unusable. */
static void country_code_digits(json_object *v, char out[16])
{
    size_t n = 0;
    if (json_object_is_type(v, json_type_int)) {
        snprintf(out, 16, "%lld", (long long)json_object_get_int64(v));
        if (out[0] == '-' || strcmp(out, "0") == 0)
            out[0] = '\0';
        return;
    }
    pw_str_t s = pw_json_str(v);
    for (size_t i = 0; i < s.len && n < 15; i++)
        if (s.base[i] >= '0' && s.base[i] <= '9')
            out[n++] = s.base[i];
    out[n] = '\0';
    if (strcmp(out, "0") == 0)
        out[0] = '\0';
}

/*
 * The user's number: phone_number, prefixed with the countryCode digits that AiSensy may send
 * apart, unless the number already starts with them or with '+' (then it is international).
 */
static int read_phone(pw_webhook_t *wh, json_object *msg, pw_str_t *out)
{
    char cc[16];
    const char *why = pw__webhook_opt_string(msg, "phone_number", out);

    if (why != NULL) {
        pw__webhook_reject(wh, "data.message.phone_number: %s", why);
        return SKIPPED;
    }
    if (out->base == NULL || out->base[0] == '+')
        return 0;
    country_code_digits(pw_json_member(msg, "countryCode"), cc);
    size_t cc_len = strlen(cc);
    if (cc_len > 0 && (out->len < cc_len || memcmp(out->base, cc, cc_len) != 0))
        *out = pw__webhook_keep_concat(wh, pw_str(cc, cc_len), *out);
    return 0;
}

/* docs/rows.md: AiSensy message_type to Meta's type; anything else lower-cased. */
static pw_str_t meta_type(pw_webhook_t *wh, pw_str_t type)
{
    static const struct {
        const char *aisensy, *meta;
    } TYPES[] = {
        {"text", "text"},
        {"image", "image"},
        {"video", "video"},
        {"audio", "audio"},
        {"file", "document"},
        {"document", "document"},
        {"sticker", "sticker"},
        {"location", "location"},
        {"contact", "contacts"},
        {"quick_reply", "button"},
        {"interactive", "interactive"},
        {"reaction", "reaction"},
    };
    for (size_t i = 0; i < sizeof(TYPES) / sizeof(TYPES[0]); i++)
        if (eq_ignore_case(type, TYPES[i].aisensy))
            return pw_str(TYPES[i].meta, strlen(TYPES[i].meta));
    return pw__webhook_keep_lower(wh, type);
}

static pw_str_t nonempty_text(json_object *o, const char *key)
{
    json_object *v = pw_json_member(o, key);
    return json_object_get_string_len(v) > 0 ? pw_json_str(v) : PW_STR_NULL;
}

static pw_str_t message_body(json_object *msg)
{
    json_object *content = pw_json_member(msg, "message_content");
    pw_str_t b = nonempty_text(content, "text");
    if (b.base == NULL)
        b = nonempty_text(content, "caption");
    if (b.base == NULL)
        b = nonempty_text(content, "title");
    return b;
}

/* ---- the two topics ---- */

static void read_inbound(pw_webhook_t *wh, json_object *root, json_object *msg)
{
    pw_inbound_t m = {0};
    pw_str_t raw_type;

    if (req_string(wh, msg, "messageId", &m.id) != 0 || req_string(wh, msg, "message_type", &raw_type) != 0 ||
        read_phone(wh, msg, &m.from) != 0 || event_time(wh, root, msg, "sent_at", &m.sent_at) != 0)
        return;
    m.type = meta_type(wh, raw_type);
    m.body = message_body(msg);
    m.contact_name = nonempty_text(msg, "userName");
    m.payload = msg;
    *pw__webhook_add_inbound(wh) = m;

    /* The sender is a sighting of the user, as value.contacts[] is for Meta. */
    if (m.from.base != NULL) {
        pw_contact_t *c = pw__webhook_add_contact(wh);
        c->wa_id = m.from;
        c->profile_name = m.contact_name;
        c->seen_at = c->first_seen_at = m.sent_at;
    }
}

/* [failureResponse] for a failure that says something; {} is AiSensy's "no failure" placeholder. */
static json_object *failure_errors(pw_webhook_t *wh, json_object *msg)
{
    json_object *fr = pw_json_member(msg, "failureResponse");
    if (!json_object_is_type(fr, json_type_object) || json_object_object_length(fr) == 0)
        return NULL;
    json_object *errors = pw__webhook_keep(wh, json_object_new_array());
    json_object_array_add(errors, json_object_get(fr)); /* cannot fail: a new array has room */
    return errors;
}

static void read_status(pw_webhook_t *wh, json_object *root, json_object *msg)
{
    pw_status_t s = {0};
    pw_str_t raw_status;
    char key[48];

    if (req_string(wh, msg, "messageId", &s.id) != 0 || req_string(wh, msg, "status", &raw_status) != 0 ||
        read_phone(wh, msg, &s.recipient_id) != 0)
        return;
    s.status = pw__webhook_known_status(raw_status, 1);
    if (s.status.base == NULL)
        s.status = pw__webhook_keep_lower(wh, raw_status);
    /* The time of a status sits in "<status>_at" (delivered_at...); a long odd status has none. */
    if (s.status.len + 4 > sizeof(key))
        snprintf(key, sizeof(key), "created_at");
    else
        snprintf(key, sizeof(key), "%.*s_at", (int)s.status.len, s.status.base);
    if (event_time(wh, root, msg, key, &s.occurred_at) != 0)
        return;
    if (pw_str_eq(s.status, "failed"))
        s.errors = failure_errors(wh, msg);
    *pw__webhook_add_status(wh) = s;
}

int pw__aisensy_parse(json_object *root, pw_webhook_t *wh, char *err, size_t errlen)
{
    pw_str_t topic = pw_json_str(pw_json_member(root, "topic"));
    int inbound = pw_str_eq(topic, "message.sender.user");
    json_object *msg;

    if (!inbound && !pw_str_eq(topic, "message.status.updated")) {
        /* message.created repeats message.sender.user; contact.* and payment.* are not ours. */
        wh->n_ignored++;
        return 0;
    }
    if (!json_object_is_type(msg = pw_json_member(pw_json_member(root, "data"), "message"), json_type_object))
        return pw_set_err(err, errlen, PW_EINVAL, "data.message: missing or not an object");
    if (inbound)
        read_inbound(wh, root, msg);
    else
        read_status(wh, root, msg);
    return 0;
}
