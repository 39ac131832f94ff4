/* pw_webhook_parse: strict JSON, format sniffing and dispatch, plus the builders both format parsers share. */
#include "webhook.h"

#include "pw_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>


static void *check_alloc(void *p, const char *file, int line)
{
    if (p == NULL) {
        fprintf(stderr, "%s:%d: out of memory\n", file, line);
        abort();
    }
    return p;
}

/* Meta: a top-level "entry" array, or the object name Meta documents. AiSensy: topic + data. */
static int sniff_format(json_object *root)
{
    if (json_object_is_type(pw_json_member(root, "entry"), json_type_array) ||
        pw_str_eq(pw_json_str(pw_json_member(root, "object")), "whatsapp_business_account"))
        return PW_FORMAT_META;
    if (json_object_is_type(pw_json_member(root, "topic"), json_type_string) &&
        json_object_is_type(pw_json_member(root, "data"), json_type_object))
        return PW_FORMAT_AISENSY;
    return 0;
}

int pw_webhook_parse(const char *body, size_t len, pw_webhook_t *wh, char *err, size_t errlen)
{
    int rc;

    memset(wh, 0, sizeof(*wh));
    if ((rc = pw_json_parse_strict(body, len, &wh->root, err, errlen)) != 0)
        return rc;
    switch (wh->format = sniff_format(wh->root)) {
    case PW_FORMAT_META:
        rc = pw__whatsapp_parse(wh->root, wh, err, errlen);
        break;
    case PW_FORMAT_AISENSY:
        rc = pw__aisensy_parse(wh->root, wh, err, errlen);
        break;
    default:
        rc = pw_set_err(err, errlen, PW_EUNSUPP, "neither a Meta nor an AiSensy webhook");
        break;
    }
    if (rc != 0)
        pw_webhook_dispose(wh);
    return rc;
}

void pw_webhook_dispose(pw_webhook_t *wh)
{
    free(wh->statuses);
    free(wh->inbound);
    free(wh->contacts);
    json_object_put(wh->scratch);
    json_object_put(wh->root);
    memset(wh, 0, sizeof(*wh));
}

/*
 * Makes room for item n of an array of n items. The capacity is not stored: it is always the next
 * power of two at or above n, so the array grows exactly when n is 0 or a power of two.
 */
static void *grow(void *base, size_t n, size_t size)
{
    if (n == 0 || (n & (n - 1)) == 0)
        base = PW_XREALLOC(base, (n == 0 ? 1 : 2 * n) * size);
    memset((char *)base + n * size, 0, size);
    return base;
}

pw_status_t *pw__webhook_add_status(pw_webhook_t *wh)
{
    wh->statuses = grow(wh->statuses, wh->n_statuses, sizeof(*wh->statuses));
    return &wh->statuses[wh->n_statuses++];
}

pw_inbound_t *pw__webhook_add_inbound(pw_webhook_t *wh)
{
    wh->inbound = grow(wh->inbound, wh->n_inbound, sizeof(*wh->inbound));
    return &wh->inbound[wh->n_inbound++];
}

pw_contact_t *pw__webhook_add_contact(pw_webhook_t *wh)
{
    wh->contacts = grow(wh->contacts, wh->n_contacts, sizeof(*wh->contacts));
    return &wh->contacts[wh->n_contacts++];
}

void pw__webhook_reject(pw_webhook_t *wh, const char *fmt, ...)
{
    va_list ap;

    /* Only the first reason is kept: the dead letter carries the whole body for the rest. */
    if (wh->n_rejected++ > 0)
        return;
    va_start(ap, fmt);
    vsnprintf(wh->reject_reason, sizeof(wh->reject_reason), fmt, ap);
    va_end(ap);
}

json_object *pw__webhook_keep(pw_webhook_t *wh, json_object *o)
{
    check_alloc(o, __FILE__, __LINE__);
    if (wh->scratch == NULL)
        wh->scratch = check_alloc(json_object_new_array(), __FILE__, __LINE__);
    if (json_object_array_add(wh->scratch, o) != 0)
        check_alloc(NULL, __FILE__, __LINE__);
    return o;
}

/* A json string's buffer does not move once made, so slices into it stay valid until dispose. */
static pw_str_t keep_string(pw_webhook_t *wh, const char *s, size_t len)
{
    json_object *o = pw__webhook_keep(wh, json_object_new_string_len(s, (int)len));
    return pw_json_str(o);
}

pw_str_t pw__webhook_keep_concat(pw_webhook_t *wh, pw_str_t a, pw_str_t b)
{
    char *buf = PW_XREALLOC(NULL, a.len + b.len);
    memcpy(buf, a.base, a.len);
    memcpy(buf + a.len, b.base, b.len);
    pw_str_t kept = keep_string(wh, buf, a.len + b.len);
    free(buf);
    return kept;
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

pw_str_t pw__webhook_keep_lower(pw_webhook_t *wh, pw_str_t s)
{
    char *buf = PW_XREALLOC(NULL, s.len);
    for (size_t i = 0; i < s.len; i++)
        buf[i] = ascii_lower(s.base[i]);
    pw_str_t kept = keep_string(wh, buf, s.len);
    free(buf);
    return kept;
}

static int same_text(pw_str_t s, const char *lit, int ignore_case)
{
    size_t n = strlen(lit);
    if (s.base == NULL || s.len != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((ignore_case ? ascii_lower(s.base[i]) : s.base[i]) != lit[i])
            return 0;
    return 1;
}

pw_str_t pw__webhook_known_status(pw_str_t s, int ignore_case)
{
    static const char *const KNOWN[] = {"sent", "delivered", "read", "failed", "played"};
    for (size_t i = 0; i < sizeof(KNOWN) / sizeof(KNOWN[0]); i++)
        if (same_text(s, KNOWN[i], ignore_case))
            return pw_str(KNOWN[i], strlen(KNOWN[i]));
    return PW_STR_NULL;
}

const char *pw__webhook_opt_string(json_object *o, const char *key, pw_str_t *out)
{
    json_object *v = pw_json_member(o, key);
    *out = PW_STR_NULL;
    if (v == NULL)
        return NULL;
    if (!json_object_is_type(v, json_type_string))
        return "not a string";
    if (json_object_get_string_len(v) > 0)
        *out = pw_json_str(v);
    return NULL;
}

const char *pw__webhook_req_string(json_object *o, const char *key, pw_str_t *out)
{
    const char *why = pw__webhook_opt_string(o, key, out);
    if (why == NULL && out->base == NULL)
        why = pw_json_member(o, key) == NULL ? "missing" : "empty";
    return why;
}

int pw__webhook_unix_time(json_object *v, pw_time_us_t *out, char *err, size_t errlen)
{
    switch (json_object_get_type(v)) {
    case json_type_string:
        return pw_time_from_unix_text(json_object_get_string(v), (size_t)json_object_get_string_len(v), out, err, errlen);
    case json_type_int: {
        /* Exact through the double: every value we accept is far below 2^53. */
        int64_t n = json_object_get_int64(v);
        if (n <= 0)
            return pw_set_err(err, errlen, PW_ERANGE, "time not after 1970-01-01T00:00:00Z");
        return pw_time_from_unix_double((double)n, out, err, errlen);
    }
    case json_type_double:
        return pw_time_from_unix_double(json_object_get_double(v), out, err, errlen);
    default:
        return pw_set_err(err, errlen, PW_EINVAL, "not a string or number");
    }
}
