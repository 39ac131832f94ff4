/* The AiSensy project webhook: message.sender.user and message.status.updated into the Meta-shaped pw_webhook_t items. */
#include "webhook.h"

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

/* "0", 0, "" and {} stand for "no time yet" (a third-party suite saw failed_at:"0"); so do null and absence. */
static int is_placeholder(pw_webhook_t *wh, const pw_jval_t *v)
{
    int64_t i;
    double d;
    switch (v->type) {
    case PW_J_NONE:
    case PW_J_NULL:
        return 1;
    case PW_J_OBJECT:
        return pw__webhook_count(wh, v) == 0;
    case PW_J_NUMBER:
        return pw__webhook_number(wh, v, &i, &d) == 1 ? i == 0 : d == 0;
    case PW_J_STRING:
        return v->end == v->start || pw_str_eq(pw__webhook_str(wh, v), "0");
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
static int loose_time(pw_webhook_t *wh, const pw_jval_t *v, pw_time_us_t *out, char *why, size_t why_len)
{
    if (is_placeholder(wh, v))
        return 1;
    if (v->type == PW_J_STRING) {
        pw_str_t s = pw__webhook_str(wh, v);
        if (is_numeric_text(s))
            return pw_time_from_unix_text(s.base, s.len, out, why, why_len);
        return pw_time_parse_rfc3339(s.base, s.len, out, why, why_len);
    }
    return pw__webhook_unix_time(wh, v, out, why, why_len);
}

/* data.message.<key> when it holds a time, else the envelope's created_at (docs/rows.md). */
static int event_time(pw_webhook_t *wh, const pw_jval_t *root, const pw_jval_t *msg, const char *key, pw_time_us_t *out)
{
    char why[128], quoted[128];
    int rc;

    pw_jval_t v = pw__webhook_member(wh, msg, key);
    if ((rc = loose_time(wh, &v, out, why, sizeof(why))) == 0)
        return 0;
    /* The key holds an odd status as received ("<status>_at"): quoted as readable text. */
    pw_str_quote(quoted, sizeof quoted, pw_str(key, strlen(key)), sizeof quoted);
    if (rc < 0) {
        pw__webhook_reject(wh, "data.message.%s: not a time (%s)", quoted, why);
        return SKIPPED;
    }
    v = pw__webhook_member(wh, root, "created_at");
    if ((rc = loose_time(wh, &v, out, why, sizeof(why))) == 0)
        return 0;
    if (rc < 0)
        pw__webhook_reject(wh, "created_at: not a time (%s)", why);
    else
        pw__webhook_reject(wh, "data.message.%s: missing, and no created_at", quoted);
    return SKIPPED;
}

/* ---- fields ---- */

static int req_string(pw_webhook_t *wh, const pw_jval_t *msg, const char *key, pw_str_t *out)
{
    pw_jval_t v = pw__webhook_member(wh, msg, key);
    const char *why = pw__webhook_req_string(wh, &v, out);
    if (why == NULL)
        return 0;
    pw__webhook_reject(wh, "data.message.%s: %s", key, why);
    return SKIPPED;
}

/* countryCode as "91", "+91" or 91: its digits, "" when absent or unusable. */
static void country_code_digits(pw_webhook_t *wh, const pw_jval_t *v, char out[16])
{
    size_t n = 0;
    int64_t i;
    double d;
    if (pw__webhook_number(wh, v, &i, &d) == 1) { /* json-c's int: saturated, and cut to 15 digits */
        snprintf(out, 16, "%lld", (long long)i);
        if (out[0] == '-' || strcmp(out, "0") == 0)
            out[0] = '\0';
        return;
    }
    pw_str_t s = pw__webhook_str(wh, v);
    for (size_t k = 0; k < s.len && n < 15; k++)
        if (s.base[k] >= '0' && s.base[k] <= '9')
            out[n++] = s.base[k];
    out[n] = '\0';
    if (strcmp(out, "0") == 0)
        out[0] = '\0';
}

/*
 * The user's number: phone_number, prefixed with the countryCode digits that AiSensy may send
 * apart, unless the number already starts with them or with '+' (then it is international).
 */
static int read_phone(pw_webhook_t *wh, const pw_jval_t *msg, pw_str_t *out)
{
    char cc[16];
    pw_jval_t v = pw__webhook_member(wh, msg, "phone_number");
    const char *why = pw__webhook_opt_string(wh, &v, out);

    if (why != NULL) {
        pw__webhook_reject(wh, "data.message.phone_number: %s", why);
        return SKIPPED;
    }
    if (out->base == NULL || out->base[0] == '+')
        return 0;
    v = pw__webhook_member(wh, msg, "countryCode");
    country_code_digits(wh, &v, cc);
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

static pw_str_t message_body(pw_webhook_t *wh, const pw_jval_t *msg)
{
    static const char *const FIELDS[] = {"text", "caption", "title"};
    pw_jval_t content = pw__webhook_member(wh, msg, "message_content"), f[3];
    pw__webhook_members(wh, &content, FIELDS, 3, f);
    for (int k = 0; k < 3; k++)
        if (f[k].type == PW_J_STRING && f[k].end > f[k].start)
            return pw__webhook_str(wh, &f[k]);
    return PW_STR_NULL;
}

/* ---- the two topics ---- */

static void read_inbound(pw_webhook_t *wh, const pw_jval_t *root, const pw_jval_t *msg)
{
    pw_inbound_t m = {0};
    pw_str_t raw_type;

    if (req_string(wh, msg, "messageId", &m.id) != 0 || req_string(wh, msg, "message_type", &raw_type) != 0 ||
        read_phone(wh, msg, &m.from) != 0 || event_time(wh, root, msg, "sent_at", &m.sent_at) != 0)
        return;
    m.type = meta_type(wh, raw_type);
    m.body = message_body(wh, msg);
    m.contact_name = pw__webhook_text_at(wh, msg, "userName");
    m.payload = pw__webhook_json(wh, msg);
    *pw__webhook_add_inbound(wh) = m;

    /* The sender is a sighting of the user, as value.contacts[] is for Meta. */
    if (m.from.base != NULL) {
        pw_contact_t *c = pw__webhook_add_contact(wh);
        c->wa_id = m.from;
        c->profile_name = m.contact_name;
        c->seen_at = c->first_seen_at = m.sent_at;
    }
}

/* [failureResponse] for a failure that says something; {} is AiSensy's "no failure" placeholder.
   Built as JSON text around the object's own text, so its numbers stay exactly as received. */
static pw_str_t failure_errors(pw_webhook_t *wh, const pw_jval_t *msg)
{
    pw_jval_t fr = pw__webhook_member(wh, msg, "failureResponse");
    if (fr.type != PW_J_OBJECT || pw__webhook_count(wh, &fr) == 0)
        return PW_STR_NULL;
    pw_str_t obj = pw__webhook_json(wh, &fr);
    char *buf = pw__webhook_alloc(wh, obj.len + 2);
    buf[0] = '[';
    memcpy(buf + 1, obj.base, obj.len);
    buf[obj.len + 1] = ']';
    return pw_str(buf, obj.len + 2);
}

static void read_status(pw_webhook_t *wh, const pw_jval_t *root, const pw_jval_t *msg)
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

int pw__aisensy_parse(pw_webhook_t *wh, const pw_jval_t *root, char *err, size_t errlen)
{
    static const char *const KEYS[] = {"topic", "data"};
    pw_jval_t f[2];
    pw__webhook_members(wh, root, KEYS, 2, f);
    pw_str_t topic = pw__webhook_str(wh, &f[0]);
    int inbound = pw_str_eq(topic, "message.sender.user");

    if (!inbound && !pw_str_eq(topic, "message.status.updated")) {
        /* message.created repeats message.sender.user; contact.* and payment.* are not ours. */
        wh->n_ignored++;
        return 0;
    }
    pw_jval_t msg = pw__webhook_member(wh, &f[1], "message");
    if (msg.type != PW_J_OBJECT)
        return pw_set_err(err, errlen, PW_EINVAL, "data.message: missing or not an object");
    if (inbound)
        read_inbound(wh, root, &msg);
    else
        read_status(wh, root, &msg);
    return 0;
}
