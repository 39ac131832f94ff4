/* The Meta Cloud API webhook: every entry[] x changes[] x statuses[]/messages[]/contacts[] into pw_webhook_t items. */
#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>

/*
 * What the items of one "messages" change share. Fields of an item fall in two kinds: the ones a
 * row cannot do without or stores verbatim (ids, type, status, times, numbers, errors...) must
 * have the right type or the item is rejected; the ones derived for convenience (body,
 * context_id, contact_name, phone_number_id) are simply NULL when they do not fit.
 */
typedef struct contact_key contact_key_t;
typedef struct {
    contact_key_t *keys; /* sorted by key then position; NULL until built */
    size_t n;
} contact_index_t;

typedef struct {
    pw_webhook_t *wh;
    size_t entry, change;     /* where the value is: entry[E].changes[C].value (PATH_FMT) */
    pw_str_t phone_number_id; /* value.metadata.phone_number_id */
    pw_jval_t contacts;       /* value.contacts[], PW_J_NONE when absent */
    size_t n_contacts;        /* its length */
    contact_index_t by_wa_id; /* its entries by wa_id, and by user_id: built on first use */
    contact_index_t by_user_id;
    pw_time_us_t earliest;    /* the earliest accepted status/message time so far; 0 before any */
    pw_time_us_t latest;      /* the latest one */
} change_t;

/* ---- field readers (pw__webhook_opt_string and _req_string in webhook.c): NULL when fine, else why not ---- */

static const char *opt_typed(const pw_jval_t *v, pw_jtype_t type)
{
    if (v->type == PW_J_NONE || v->type == type)
        return NULL;
    return type == PW_J_ARRAY ? "not an array" : "not an object";
}

/* Reads a required Unix time; why_buf receives the time parser's reason. */
static const char *req_time(pw_webhook_t *wh, const pw_jval_t *v, pw_time_us_t *out, char *why_buf, size_t why_len)
{
    if (v->type == PW_J_NONE)
        return "missing";
    if (pw__webhook_unix_time(wh, v, out, why_buf, why_len) != 0)
        return why_buf;
    return NULL;
}

/* A change's place in the webhook, and an item's in it: formatted only when a reason names them
   (an snprintf per item cost about 1,500 instructions per push, for reasons almost never said). */
#define PATH_FMT "entry[%zu].changes[%zu].value"
#define PATH_ARGS(ch) (ch)->entry, (ch)->change
typedef struct {
    const char *array; /* "statuses", "messages", "contacts" */
    size_t index;
} item_at_t;

/* Always returns 0: a bad item is counted and skipped, never fatal to the webhook. */
static int reject(change_t *ch, const item_at_t *at, const char *key, const char *why)
{
    pw__webhook_reject(ch->wh, PATH_FMT ".%s[%zu]%s%s: %s", PATH_ARGS(ch), at->array, at->index, key != NULL ? "." : "",
                       key != NULL ? key : "", why);
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

enum { S_ID, S_STATUS, S_TIMESTAMP, S_RECIPIENT, S_RECIPIENT_USER, S_CONVERSATION, S_PRICING, S_ERRORS, S_BIZ, S_COUNT };
static const char *const STATUS_KEYS[S_COUNT] = {"id",      "status",       "timestamp", "recipient_id", "recipient_user_id",
                                                 "conversation", "pricing", "errors",    "biz_opaque_callback_data"};

static int read_status(change_t *ch, const pw_jval_t *item, const item_at_t *at)
{
    pw_webhook_t *wh = ch->wh;
    pw_status_t s = {0};
    pw_jval_t f[S_COUNT];
    char tbuf[128];
    const char *why;

    if (item->type != PW_J_OBJECT)
        return reject(ch, at, NULL, "not an object");
    pw__webhook_members(wh, item, STATUS_KEYS, S_COUNT, f);
    if ((why = pw__webhook_req_string(wh, &f[S_ID], &s.id)) != NULL)
        return reject(ch, at, "id", why);
    if ((why = pw__webhook_req_string(wh, &f[S_STATUS], &s.status)) != NULL)
        return reject(ch, at, "status", why);
    if ((why = req_time(wh, &f[S_TIMESTAMP], &s.occurred_at, tbuf, sizeof(tbuf))) != NULL)
        return reject(ch, at, "timestamp", why);
    if ((why = pw__webhook_opt_string(wh, &f[S_RECIPIENT], &s.recipient_id)) != NULL)
        return reject(ch, at, "recipient_id", why);
    /* A message sent to a business-scoped user id has an empty recipient_id and this instead. */
    if ((why = pw__webhook_opt_string(wh, &f[S_RECIPIENT_USER], &s.recipient_user_id)) != NULL)
        return reject(ch, at, "recipient_user_id", why);
    if ((why = opt_typed(&f[S_CONVERSATION], PW_J_OBJECT)) != NULL)
        return reject(ch, at, "conversation", why);
    if ((why = opt_typed(&f[S_PRICING], PW_J_OBJECT)) != NULL)
        return reject(ch, at, "pricing", why);
    if ((why = opt_typed(&f[S_ERRORS], PW_J_ARRAY)) != NULL)
        return reject(ch, at, "errors", why);
    if ((why = pw__webhook_opt_string(wh, &f[S_BIZ], &s.biz_opaque_callback_data)) != NULL)
        return reject(ch, at, "biz_opaque_callback_data", why);

    pw_str_t known = pw__webhook_known_status(s.status, 0);
    if (known.base != NULL)
        s.status = known; /* the static literal: callers may compare pointers or keep it past dispose */
    s.conversation = pw__webhook_json(wh, &f[S_CONVERSATION]);
    s.pricing = pw__webhook_json(wh, &f[S_PRICING]);
    if (pw__webhook_count(wh, &f[S_ERRORS]) > 0)
        s.errors = pw__webhook_json(wh, &f[S_ERRORS]);
    s.phone_number_id = ch->phone_number_id;
    *pw__webhook_add_status(wh) = s;
    saw_time(ch, s.occurred_at);
    return 0;
}

/* ---- messages[] ---- */

/* docs/rows.md "body": what a person would read, by type. */
static pw_str_t message_body(pw_webhook_t *wh, const pw_jval_t *msg, pw_str_t type)
{
    static const struct {
        const char *type, *field;
    } RULES[] = {
        {"text", "body"},      {"image", "caption"}, {"video", "caption"}, {"document", "caption"}, {"button", "text"},
        {"reaction", "emoji"}, {"location", "name"}, {"order", "text"},    {"system", "body"},
    };
    for (size_t i = 0; i < sizeof(RULES) / sizeof(RULES[0]); i++)
        if (pw_str_eq(type, RULES[i].type)) {
            pw_jval_t v = pw__webhook_member(wh, msg, RULES[i].type);
            return pw__webhook_text_at(wh, &v, RULES[i].field);
        }
    if (pw_str_eq(type, "interactive")) {
        static const char *const KINDS[] = {"button_reply", "list_reply", "nfm_reply"};
        pw_jval_t in = pw__webhook_member(wh, msg, "interactive"), r[3];
        pw__webhook_members(wh, &in, KINDS, 3, r);
        pw_str_t b = pw__webhook_text_at(wh, &r[0], "title");
        if (b.base == NULL)
            b = pw__webhook_text_at(wh, &r[1], "title");
        if (b.base == NULL)
            b = pw__webhook_text_at(wh, &r[2], "body");
        return b;
    }
    return PW_STR_NULL;
}

/* A contacts[] entry whose wa_id (or user_id) is a non-empty string, by it then position. */
struct contact_key {
    pw_str_t key;
    size_t index;
    pw_jval_t item;
};

static int compare_contacts(const void *pa, const void *pb)
{
    const contact_key_t *a = pa, *b = pb;
    size_t n = a->key.len < b->key.len ? a->key.len : b->key.len;
    int c = n > 0 ? memcmp(a->key.base, b->key.base, n) : 0;
    if (c != 0)
        return c;
    if (a->key.len != b->key.len)
        return a->key.len < b->key.len ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* Sorted once per change, so that matching each message's sender costs a binary search (a
   change may hold tens of thousands of messages and contacts). */
static void index_contacts(change_t *ch, contact_index_t *ix, const char *field)
{
    pw__jiter_t it;
    pw_jval_t item;
    size_t i = 0;

    ix->keys = PW_XMALLOC((ch->n_contacts > 0 ? ch->n_contacts : 1) * sizeof *ix->keys);
    pw__webhook_iter(ch->wh, &ch->contacts, &it);
    while (pw__webhook_next(&it, &item)) {
        pw_str_t key = pw__webhook_text_at(ch->wh, &item, field);
        if (key.base != NULL)
            ix->keys[ix->n++] = (contact_key_t){key, i, item};
        i++;
    }
    qsort(ix->keys, ix->n, sizeof *ix->keys, compare_contacts);
}

/* The profile of the first contacts[] entry whose field (wa_id, user_id) equals want; PW_J_NONE when none. */
static pw_jval_t find_profile(change_t *ch, contact_index_t *ix, const char *field, pw_str_t want)
{
    if (ix->keys == NULL)
        index_contacts(ch, ix, field);
    contact_key_t probe = {want, 0, {0}};
    size_t lo = 0, hi = ix->n;
    while (lo < hi) { /* the first entry not before (want, 0) */
        size_t mid = lo + (hi - lo) / 2;
        if (compare_contacts(&ix->keys[mid], &probe) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < ix->n && ix->keys[lo].key.len == want.len && memcmp(ix->keys[lo].key.base, want.base, want.len) == 0)
        return pw__webhook_member(ch->wh, &ix->keys[lo].item, "profile");
    return (pw_jval_t){0};
}

/* docs/rows.md: profile.name of the (first) contacts[] entry whose wa_id equals from, else whose
   user_id equals from_user_id, else of the only entry. */
static pw_str_t contact_name(change_t *ch, pw_str_t from, pw_str_t from_user_id)
{
    if (ch->n_contacts == 0)
        return PW_STR_NULL;
    pw_jval_t profile = {0};
    if (from.base != NULL)
        profile = find_profile(ch, &ch->by_wa_id, "wa_id", from);
    if (profile.type == PW_J_NONE && from_user_id.base != NULL)
        profile = find_profile(ch, &ch->by_user_id, "user_id", from_user_id);
    if (profile.type != PW_J_NONE)
        return pw__webhook_text_at(ch->wh, &profile, "name");
    if (ch->n_contacts == 1) {
        pw__jiter_t it;
        pw_jval_t only;
        pw__webhook_iter(ch->wh, &ch->contacts, &it);
        pw__webhook_next(&it, &only);
        profile = pw__webhook_member(ch->wh, &only, "profile");
        return pw__webhook_text_at(ch->wh, &profile, "name");
    }
    return PW_STR_NULL;
}

enum { M_ID, M_TYPE, M_TIMESTAMP, M_FROM, M_FROM_USER_ID, M_CONTEXT, M_COUNT };
static const char *const MESSAGE_KEYS[M_COUNT] = {"id", "type", "timestamp", "from", "from_user_id", "context"};

static int read_message(change_t *ch, const pw_jval_t *item, const item_at_t *at)
{
    pw_webhook_t *wh = ch->wh;
    pw_inbound_t m = {0};
    pw_jval_t f[M_COUNT];
    char tbuf[128];
    const char *why;

    if (item->type != PW_J_OBJECT)
        return reject(ch, at, NULL, "not an object");
    pw__webhook_members(wh, item, MESSAGE_KEYS, M_COUNT, f);
    if ((why = pw__webhook_req_string(wh, &f[M_ID], &m.id)) != NULL)
        return reject(ch, at, "id", why);
    if ((why = pw__webhook_req_string(wh, &f[M_TYPE], &m.type)) != NULL)
        return reject(ch, at, "type", why);
    if ((why = req_time(wh, &f[M_TIMESTAMP], &m.sent_at, tbuf, sizeof(tbuf))) != NULL)
        return reject(ch, at, "timestamp", why);
    /* from is absent for username-only users (and on some system messages): not an error. */
    if ((why = pw__webhook_opt_string(wh, &f[M_FROM], &m.from)) != NULL)
        return reject(ch, at, "from", why);
    if ((why = pw__webhook_opt_string(wh, &f[M_FROM_USER_ID], &m.from_user_id)) != NULL)
        return reject(ch, at, "from_user_id", why);

    m.phone_number_id = ch->phone_number_id;
    m.contact_name = contact_name(ch, m.from, m.from_user_id);
    m.body = message_body(wh, item, m.type);
    m.context_id = pw__webhook_text_at(wh, &f[M_CONTEXT], "id");
    m.payload = pw__webhook_json(wh, item);
    *pw__webhook_add_inbound(wh) = m;
    saw_time(ch, m.sent_at);
    return 0;
}

/* ---- contacts[] ---- */

static int read_contact(change_t *ch, const pw_jval_t *item, const item_at_t *at)
{
    static const char *const KEYS[] = {"wa_id", "user_id", "profile"};
    pw_contact_t c = {0};
    pw_jval_t f[3];
    const char *why;

    if (item->type != PW_J_OBJECT)
        return reject(ch, at, NULL, "not an object");
    pw__webhook_members(ch->wh, item, KEYS, 3, f);
    /* The identities are stored verbatim: the wrong type is a broken item. wa_id is empty for a
       user who hides the number behind a username, user_id is absent before business-scoped ids. */
    if ((why = pw__webhook_opt_string(ch->wh, &f[0], &c.wa_id)) != NULL)
        return reject(ch, at, "wa_id", why);
    if ((why = pw__webhook_opt_string(ch->wh, &f[1], &c.user_id)) != NULL)
        return reject(ch, at, "user_id", why);
    /* Known by neither, or in a change with nothing timed (no sighting time): nothing to store. */
    if ((c.wa_id.base == NULL && c.user_id.base == NULL) || ch->latest == 0)
        return 0;
    /* The profile is for convenience: what does not fit is NULL. */
    c.profile_name = pw__webhook_text_at(ch->wh, &f[2], "name");
    c.username = pw__webhook_text_at(ch->wh, &f[2], "username");
    c.country_code = pw__webhook_text_at(ch->wh, &f[2], "country_code");
    c.seen_at = ch->latest;
    c.first_seen_at = ch->earliest;
    *pw__webhook_add_contact(ch->wh) = c;
    return 0;
}

/* ---- the skeleton ---- */

typedef int (*item_reader_t)(change_t *ch, const pw_jval_t *item, const item_at_t *at);

static void read_items(change_t *ch, const pw_jval_t *arr, const char *key, item_reader_t reader)
{
    pw__jiter_t it;
    pw_jval_t item;
    item_at_t at = {key, 0};

    pw__webhook_iter(ch->wh, arr, &it);
    while (pw__webhook_next(&it, &item)) {
        reader(ch, &item, &at);
        at.index++;
    }
}

/* value.<key> must be an array when present: anything else means we misread the whole change. The
   items are counted (a scan, nothing allocated) before any of them is read. */
static int count_array(change_t *ch, const pw_jval_t *v, const char *key, size_t *n_items, size_t *n, char *err,
                       size_t errlen)
{
    if (opt_typed(v, PW_J_ARRAY) != NULL)
        return pw_set_err(err, errlen, PW_EINVAL, PATH_FMT ".%s: not an array", PATH_ARGS(ch), key);
    *n = pw__webhook_count(ch->wh, v);
    *n_items += *n;
    return 0;
}

enum { V_STATUSES, V_MESSAGES, V_CONTACTS, V_ERRORS, V_METADATA, V_COUNT };
static const char *const VALUE_KEYS[V_COUNT] = {"statuses", "messages", "contacts", "errors", "metadata"};

static int read_messages_value(change_t *ch, const pw_jval_t *value, size_t *n_items, char *err, size_t errlen)
{
    pw_jval_t f[V_COUNT];
    size_t n[V_COUNT];
    int rc;

    pw__webhook_members(ch->wh, value, VALUE_KEYS, V_COUNT, f);
    for (int k = V_STATUSES; k <= V_ERRORS; k++)
        if ((rc = count_array(ch, &f[k], VALUE_KEYS[k], n_items, &n[k], err, errlen)) != 0)
            return rc;
    /* Checked before this change's items are read: no more than the limit is ever allocated. */
    if (*n_items > PW_WEBHOOK_MAX_ITEMS)
        return pw_set_err(err, errlen, PW_ETOOBIG, "more than %d items in one webhook", PW_WEBHOOK_MAX_ITEMS);
    ch->phone_number_id = pw__webhook_text_at(ch->wh, &f[V_METADATA], "phone_number_id");
    ch->contacts = f[V_CONTACTS];
    ch->n_contacts = n[V_CONTACTS];
    /* value.errors[] are account-level errors without a message: recognised, nothing to store. */
    ch->wh->n_ignored += n[V_ERRORS];
    read_items(ch, &f[V_STATUSES], "statuses", read_status);
    read_items(ch, &f[V_MESSAGES], "messages", read_message);
    read_items(ch, &f[V_CONTACTS], "contacts", read_contact); /* last: needs the change's latest time */
    return 0;
}

static int read_change(pw_webhook_t *wh, const pw_jval_t *change, size_t e, size_t c, size_t *n_items, char *err, size_t errlen)
{
    static const char *const KEYS[] = {"field", "value"};
    change_t ch = {.wh = wh};
    pw_jval_t f[2];
    int rc;

    if (change->type != PW_J_OBJECT)
        return pw_set_err(err, errlen, PW_EINVAL, "entry[%zu].changes[%zu]: not an object", e, c);
    pw__webhook_members(wh, change, KEYS, 2, f);
    pw_str_t field = pw__webhook_str(wh, &f[0]);
    if (field.base == NULL)
        return pw_set_err(err, errlen, PW_EINVAL, "entry[%zu].changes[%zu].field: missing or not a string", e, c);
    if (!pw_str_eq(field, "messages")) {
        wh->n_ignored++; /* template status, account updates...: other shapes, not ours to store */
        return 0;
    }
    ch.entry = e;
    ch.change = c;
    if (f[1].type != PW_J_OBJECT)
        return pw_set_err(err, errlen, PW_EINVAL, PATH_FMT ": missing or not an object", PATH_ARGS(&ch));
    rc = read_messages_value(&ch, &f[1], n_items, err, errlen);
    free(ch.by_wa_id.keys);
    free(ch.by_user_id.keys);
    return rc;
}

int pw__whatsapp_parse(pw_webhook_t *wh, const pw_jval_t *root, char *err, size_t errlen)
{
    pw_jval_t entries = pw__webhook_member(wh, root, "entry"), entry, change;
    pw__jiter_t e_it, c_it;
    size_t n_items = 0, e = 0;
    int rc;

    if (entries.type != PW_J_ARRAY)
        return pw_set_err(err, errlen, PW_EINVAL, "entry: missing or not an array");
    pw__webhook_iter(wh, &entries, &e_it);
    for (; pw__webhook_next(&e_it, &entry); e++) {
        if (entry.type != PW_J_OBJECT)
            return pw_set_err(err, errlen, PW_EINVAL, "entry[%zu]: not an object", e);
        pw_jval_t changes = pw__webhook_member(wh, &entry, "changes");
        if (changes.type != PW_J_ARRAY)
            return pw_set_err(err, errlen, PW_EINVAL, "entry[%zu].changes: missing or not an array", e);
        pw__webhook_iter(wh, &changes, &c_it);
        for (size_t c = 0; pw__webhook_next(&c_it, &change); c++)
            if ((rc = read_change(wh, &change, e, c, &n_items, err, errlen)) != 0)
                return rc;
    }
    return 0;
}
