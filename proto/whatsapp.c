/* The Meta Cloud API webhook: every entry[] x changes[] x statuses[]/messages[]/contacts[] into pw_webhook_t items. */
#include "webhook.h"

#include "pw_json.h"

#include <stdio.h>

/*
 * What the items of one "messages" change share. Fields of an item fall in two kinds: the ones a
 * row cannot do without or stores verbatim (ids, type, status, times, numbers, errors...) must
 * have the right type or the item is rejected; the ones derived for convenience (body,
 * context_id, contact_name, phone_number_id) are simply NULL when they do not fit.
 */
typedef struct {
    pw_webhook_t *wh;
    char path[80];            /* "entry[0].changes[1].value" */
    pw_str_t phone_number_id; /* value.metadata.phone_number_id */
    json_object *contacts;    /* value.contacts[], NULL when absent */
    pw_time_us_t earliest;    /* the earliest accepted status/message time so far; 0 before any */
    pw_time_us_t latest;      /* the latest one */
} change_t;

/* ---- field readers (pw__webhook_opt_string and _req_string in webhook.c): NULL when fine, else why not ---- */

static const char *opt_typed(json_object *o, const char *key, json_type type, json_object **out)
{
    json_object *v = pw_json_member(o, key);
    *out = NULL;
    if (v == NULL)
        return NULL;
    if (!json_object_is_type(v, type))
        return type == json_type_array ? "not an array" : "not an object";
    *out = v;
    return NULL;
}

/* Reads a required Unix time; why_buf receives the time parser's reason. */
static const char *req_time(json_object *o, const char *key, pw_time_us_t *out, char *why_buf, size_t why_len)
{
    json_object *v = pw_json_member(o, key);
    if (v == NULL)
        return "missing";
    if (pw__webhook_unix_time(v, out, why_buf, why_len) != 0)
        return why_buf;
    return NULL;
}

/* Always returns 0: a bad item is counted and skipped, never fatal to the webhook. */
static int reject(change_t *ch, const char *where, const char *key, const char *why)
{
    pw__webhook_reject(ch->wh, "%s%s%s: %s", where, key != NULL ? "." : "", key != NULL ? key : "", why);
    return 0;
}

static void saw_time(change_t *ch, pw_time_us_t t)
{
    if (ch->earliest == 0 || t < ch->earliest)
        ch->earliest = t;
    if (t > ch->latest)
        ch->latest = t;
}

/* ---- statuses[] ---- */

static int read_status(change_t *ch, json_object *item, const char *where)
{
    pw_status_t s = {0};
    char tbuf[128];
    const char *why;

    if (!json_object_is_type(item, json_type_object))
        return reject(ch, where, NULL, "not an object");
    if ((why = pw__webhook_req_string(item, "id", &s.id)) != NULL)
        return reject(ch, where, "id", why);
    if ((why = pw__webhook_req_string(item, "status", &s.status)) != NULL)
        return reject(ch, where, "status", why);
    if ((why = req_time(item, "timestamp", &s.occurred_at, tbuf, sizeof(tbuf))) != NULL)
        return reject(ch, where, "timestamp", why);
    if ((why = pw__webhook_opt_string(item, "recipient_id", &s.recipient_id)) != NULL)
        return reject(ch, where, "recipient_id", why);
    if ((why = opt_typed(item, "conversation", json_type_object, &s.conversation)) != NULL)
        return reject(ch, where, "conversation", why);
    if ((why = opt_typed(item, "pricing", json_type_object, &s.pricing)) != NULL)
        return reject(ch, where, "pricing", why);
    if ((why = opt_typed(item, "errors", json_type_array, &s.errors)) != NULL)
        return reject(ch, where, "errors", why);
    if ((why = pw__webhook_opt_string(item, "biz_opaque_callback_data", &s.biz_opaque_callback_data)) != NULL)
        return reject(ch, where, "biz_opaque_callback_data", why);

    pw_str_t known = pw__webhook_known_status(s.status, 0);
    if (known.base != NULL)
        s.status = known; /* the static literal: callers may compare pointers or keep it past dispose */
    if (s.errors != NULL && json_object_array_length(s.errors) == 0)
        s.errors = NULL;
    s.phone_number_id = ch->phone_number_id;
    *pw__webhook_add_status(ch->wh) = s;
    saw_time(ch, s.occurred_at);
    return 0;
}

/* ---- messages[] ---- */

/* A string worth showing: non-empty, else NULL ("" is how a reaction removal may look). */
static pw_str_t text_at(json_object *o, const char *key)
{
    json_object *v = pw_json_member(o, key);
    return json_object_get_string_len(v) > 0 ? pw_json_str(v) : PW_STR_NULL;
}

/* docs/rows.md "body": what a person would read, by type. */
static pw_str_t message_body(json_object *msg, pw_str_t type)
{
    static const struct {
        const char *type, *field;
    } RULES[] = {
        {"text", "body"},      {"image", "caption"}, {"video", "caption"}, {"document", "caption"}, {"button", "text"},
        {"reaction", "emoji"}, {"location", "name"}, {"order", "text"},    {"system", "body"},
    };
    for (size_t i = 0; i < sizeof(RULES) / sizeof(RULES[0]); i++)
        if (pw_str_eq(type, RULES[i].type))
            return text_at(pw_json_member(msg, RULES[i].type), RULES[i].field);
    if (pw_str_eq(type, "interactive")) {
        json_object *in = pw_json_member(msg, "interactive");
        pw_str_t b = text_at(pw_json_member(in, "button_reply"), "title");
        if (b.base == NULL)
            b = text_at(pw_json_member(in, "list_reply"), "title");
        if (b.base == NULL)
            b = text_at(pw_json_member(in, "nfm_reply"), "body");
        return b;
    }
    return PW_STR_NULL;
}

static int same(pw_str_t a, pw_str_t b)
{
    return a.base != NULL && b.base != NULL && a.len == b.len && memcmp(a.base, b.base, a.len) == 0;
}

/* docs/rows.md: profile.name of the contacts[] entry whose wa_id equals from, else of the only entry. */
static pw_str_t contact_name(json_object *contacts, pw_str_t from)
{
    size_t n = contacts != NULL ? json_object_array_length(contacts) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(contacts, i);
        if (same(pw_json_str(pw_json_member(c, "wa_id")), from))
            return text_at(pw_json_member(c, "profile"), "name");
    }
    if (n == 1)
        return text_at(pw_json_member(json_object_array_get_idx(contacts, 0), "profile"), "name");
    return PW_STR_NULL;
}

static int read_message(change_t *ch, json_object *item, const char *where)
{
    pw_inbound_t m = {0};
    char tbuf[128];
    const char *why;

    if (!json_object_is_type(item, json_type_object))
        return reject(ch, where, NULL, "not an object");
    if ((why = pw__webhook_req_string(item, "id", &m.id)) != NULL)
        return reject(ch, where, "id", why);
    if ((why = pw__webhook_req_string(item, "type", &m.type)) != NULL)
        return reject(ch, where, "type", why);
    if ((why = req_time(item, "timestamp", &m.sent_at, tbuf, sizeof(tbuf))) != NULL)
        return reject(ch, where, "timestamp", why);
    /* from is absent for username-only users (and on some system messages): not an error. */
    if ((why = pw__webhook_opt_string(item, "from", &m.from)) != NULL)
        return reject(ch, where, "from", why);
    if ((why = pw__webhook_opt_string(item, "from_user_id", &m.from_user_id)) != NULL)
        return reject(ch, where, "from_user_id", why);

    m.phone_number_id = ch->phone_number_id;
    m.contact_name = contact_name(ch->contacts, m.from);
    m.body = message_body(item, m.type);
    m.context_id = text_at(pw_json_member(item, "context"), "id");
    m.payload = item;
    *pw__webhook_add_inbound(ch->wh) = m;
    saw_time(ch, m.sent_at);
    return 0;
}

/* ---- contacts[] ---- */

static int read_contact(change_t *ch, json_object *item, const char *where)
{
    pw_contact_t c = {0};
    const char *why;

    if (!json_object_is_type(item, json_type_object))
        return reject(ch, where, NULL, "not an object");
    if ((why = pw__webhook_opt_string(item, "wa_id", &c.wa_id)) != NULL)
        return reject(ch, where, "wa_id", why);
    /* A username-only user has no wa_id; a change with nothing timed gives no sighting time. */
    if (c.wa_id.base == NULL || ch->latest == 0)
        return 0;
    c.profile_name = text_at(pw_json_member(item, "profile"), "name");
    c.seen_at = ch->latest;
    c.first_seen_at = ch->earliest;
    *pw__webhook_add_contact(ch->wh) = c;
    return 0;
}

/* ---- the skeleton ---- */

typedef int (*item_reader_t)(change_t *ch, json_object *item, const char *where);

static void read_items(change_t *ch, json_object *arr, const char *key, item_reader_t reader)
{
    char where[128];
    size_t n = arr != NULL ? json_object_array_length(arr) : 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(where, sizeof(where), "%s.%s[%zu]", ch->path, key, i);
        reader(ch, json_object_array_get_idx(arr, i), where);
    }
}

/* value.<key> must be an array when present: anything else means we misread the whole change. */
static int get_array(change_t *ch, json_object *value, const char *key, json_object **out, size_t *n_items, char *err,
                     size_t errlen)
{
    if (opt_typed(value, key, json_type_array, out) != NULL)
        return pw_set_err(err, errlen, PW_EINVAL, "%s.%s: not an array", ch->path, key);
    *n_items += *out != NULL ? json_object_array_length(*out) : 0;
    return 0;
}

static int read_messages_value(change_t *ch, json_object *value, size_t *n_items, char *err, size_t errlen)
{
    json_object *statuses, *messages, *errors;
    int rc;

    if ((rc = get_array(ch, value, "statuses", &statuses, n_items, err, errlen)) != 0 ||
        (rc = get_array(ch, value, "messages", &messages, n_items, err, errlen)) != 0 ||
        (rc = get_array(ch, value, "contacts", &ch->contacts, n_items, err, errlen)) != 0 ||
        (rc = get_array(ch, value, "errors", &errors, n_items, err, errlen)) != 0)
        return rc;
    /* Checked before this change's items are read: no more than the limit is ever allocated. */
    if (*n_items > PW_WEBHOOK_MAX_ITEMS)
        return pw_set_err(err, errlen, PW_ETOOBIG, "more than %d items in one webhook", PW_WEBHOOK_MAX_ITEMS);
    ch->phone_number_id = text_at(pw_json_member(value, "metadata"), "phone_number_id");
    /* value.errors[] are account-level errors without a message: recognised, nothing to store. */
    ch->wh->n_ignored += errors != NULL ? json_object_array_length(errors) : 0;
    read_items(ch, statuses, "statuses", read_status);
    read_items(ch, messages, "messages", read_message);
    read_items(ch, ch->contacts, "contacts", read_contact); /* last: needs the change's latest time */
    return 0;
}

static int read_change(pw_webhook_t *wh, json_object *change, size_t e, size_t c, size_t *n_items, char *err, size_t errlen)
{
    change_t ch = {.wh = wh};
    json_object *value;

    if (!json_object_is_type(change, json_type_object))
        return pw_set_err(err, errlen, PW_EINVAL, "entry[%zu].changes[%zu]: not an object", e, c);
    pw_str_t field = pw_json_str(pw_json_member(change, "field"));
    if (field.base == NULL)
        return pw_set_err(err, errlen, PW_EINVAL, "entry[%zu].changes[%zu].field: missing or not a string", e, c);
    if (!pw_str_eq(field, "messages")) {
        wh->n_ignored++; /* template status, account updates...: other shapes, not ours to store */
        return 0;
    }
    snprintf(ch.path, sizeof(ch.path), "entry[%zu].changes[%zu].value", e, c);
    if (!json_object_is_type(value = pw_json_member(change, "value"), json_type_object))
        return pw_set_err(err, errlen, PW_EINVAL, "%s: missing or not an object", ch.path);
    return read_messages_value(&ch, value, n_items, err, errlen);
}

int pw__whatsapp_parse(json_object *root, pw_webhook_t *wh, char *err, size_t errlen)
{
    json_object *entries = pw_json_member(root, "entry");
    size_t n_items = 0;
    int rc;

    if (!json_object_is_type(entries, json_type_array))
        return pw_set_err(err, errlen, PW_EINVAL, "entry: missing or not an array");
    for (size_t e = 0; e < json_object_array_length(entries); e++) {
        json_object *entry = json_object_array_get_idx(entries, e);
        json_object *changes = pw_json_member(entry, "changes");
        if (!json_object_is_type(entry, json_type_object))
            return pw_set_err(err, errlen, PW_EINVAL, "entry[%zu]: not an object", e);
        if (!json_object_is_type(changes, json_type_array))
            return pw_set_err(err, errlen, PW_EINVAL, "entry[%zu].changes: missing or not an array", e);
        for (size_t c = 0; c < json_object_array_length(changes); c++)
            if ((rc = read_change(wh, json_object_array_get_idx(changes, c), e, c, &n_items, err, errlen)) != 0)
                return rc;
    }
    return 0;
}
