/* pw_webhook_parse: strict JSON without a tree, format sniffing and dispatch, plus the readers and builders both format parsers share. */
#include "webhook.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- memory the webhook owns: blocks that never move, so slices into them stay valid ---- */

#define ARENA_BLOCK 4096

struct pw__arena {
    struct pw__arena *next;
    size_t used, cap;
    char data[];
};

char *pw__webhook_alloc(pw_webhook_t *wh, size_t n)
{
    struct pw__arena *a = wh->arena;
    if (a != NULL && a->cap - a->used >= n) {
        a->used += n;
        return a->data + a->used - n;
    }
    /* A large request gets a block of its own, linked behind the current one so that the
       current one keeps serving small requests. */
    size_t cap = n > ARENA_BLOCK / 2 ? n : ARENA_BLOCK;
    struct pw__arena *b = PW_XMALLOC(sizeof *b + cap);
    b->used = n;
    b->cap = cap;
    if (a != NULL && cap == n) {
        b->next = a->next;
        a->next = b;
    } else {
        b->next = a;
        wh->arena = b;
    }
    return b->data;
}

/* ---- reading values of wh->text ---- */

/* A scanner over value v of the (already validated) payload. */
static void scan_at(const pw_webhook_t *wh, const pw_jval_t *v, pw_jscan_t *sc)
{
    pw_jscan_init(sc, wh->text.base, v->end, PW_JSON_MAX_DEPTH);
    sc->i = v->start;
    sc->lone_surrogates_ok = 1;
    sc->trusted = 1; /* pw_webhook_parse validated the whole text first */
    sc->spans = wh->spans;
    sc->n_spans = wh->n_spans;
}

/* The key unescaped equals lit, as json-c compared keys: up to the key's first NUL. */
static int key_is(const pw_jscan_t *sc, const pw_jval_t *key, const char *lit, size_t lit_len)
{
    size_t raw = key->end - key->start;
    if (!key->escaped)
        return raw == lit_len && memcmp(sc->s + key->start, lit, lit_len) == 0;
    /* Only the first lit_len + 1 bytes matter, and each comes from at most 12 escaped bytes: a
       longer key is read that far (an escape cut there is read whole, from the text after it). */
    char buf[512];
    pw_jval_t head = *key;
    if (12 * (lit_len + 1) > sizeof buf - 16)
        return 0; /* no key of ours is that long */
    if (raw > 12 * (lit_len + 1))
        head.end = head.start + 12 * (lit_len + 1);
    size_t n = pw_jscan_unescape(sc, &head, buf);
    const char *nul = memchr(buf, '\0', n);
    if (nul != NULL)
        n = (size_t)(nul - buf);
    return n == lit_len && memcmp(buf, lit, n) == 0;
}

void pw__webhook_members(const pw_webhook_t *wh, const pw_jval_t *obj, const char *const keys[], size_t n, pw_jval_t out[])
{
    size_t lens[16];
    pw_jscan_t sc;
    pw_jval_t key, v;
    int first = 1;

    assert(n <= sizeof lens / sizeof lens[0]);
    for (size_t k = 0; k < n; k++) {
        out[k] = (pw_jval_t){0};
        lens[k] = strlen(keys[k]);
    }
    if (obj->type != PW_J_OBJECT)
        return;
    scan_at(wh, obj, &sc);
    while (pw_jscan_object_next(&sc, &first, &key) == 1) {
        size_t k;
        for (k = 0; k < n; k++)
            if (key_is(&sc, &key, keys[k], lens[k]))
                break;
        if (pw_jscan_value(&sc, &v) != 0)
            return; /* cannot happen: validated */
        if (k < n) {
            if (v.type == PW_J_NULL)
                memset(&v, 0, sizeof v); /* null reads as absent */
            out[k] = v;                  /* the last one counts */
        }
    }
}

pw_jval_t pw__webhook_member(const pw_webhook_t *wh, const pw_jval_t *obj, const char *key)
{
    pw_jval_t v;
    pw__webhook_members(wh, obj, &key, 1, &v);
    return v;
}

void pw__webhook_iter(const pw_webhook_t *wh, const pw_jval_t *arr, pw__jiter_t *it)
{
    if (arr->type != PW_J_ARRAY) {
        pw_jscan_init(&it->sc, "", 0, 1);
        it->first = 0;
        return;
    }
    scan_at(wh, arr, &it->sc);
    it->first = 1;
}

int pw__webhook_next(pw__jiter_t *it, pw_jval_t *elem)
{
    if (it->sc.len == 0)
        return 0;
    return pw_jscan_array_next(&it->sc, &it->first, elem) == 1;
}

size_t pw__webhook_count(const pw_webhook_t *wh, const pw_jval_t *v)
{
    pw_jscan_t sc;
    pw_jval_t x;
    int first = 1;
    size_t n = 0;

    if (v->type == PW_J_ARRAY) {
        scan_at(wh, v, &sc);
        while (pw_jscan_array_next(&sc, &first, &x) == 1)
            n++;
    } else if (v->type == PW_J_OBJECT) {
        scan_at(wh, v, &sc);
        while (pw_jscan_object_next(&sc, &first, &x) == 1 && pw_jscan_value(&sc, &x) == 0)
            n++;
    }
    return n;
}

pw_str_t pw__webhook_str(pw_webhook_t *wh, const pw_jval_t *v)
{
    if (v->type != PW_J_STRING)
        return PW_STR_NULL;
    if (!v->escaped)
        return pw_str(wh->text.base + v->start, v->end - v->start);
    /* Unescaped text is never longer than the escaped: the copies total at most the payload. */
    pw_jscan_t sc;
    scan_at(wh, v, &sc);
    char *buf = pw__webhook_alloc(wh, v->end - v->start);
    return pw_str(buf, pw_jscan_unescape(&sc, v, buf));
}

pw_str_t pw__webhook_json(pw_webhook_t *wh, const pw_jval_t *v)
{
    if (v->type == PW_J_NONE)
        return PW_STR_NULL;
    size_t start = v->type == PW_J_STRING ? v->start - 1 : v->start;
    size_t end = v->type == PW_J_STRING ? v->end + 1 : v->end;
    if (!v->lossy)
        return pw_str(wh->text.base + start, end - start);
    pw_jscan_t sc;
    pw_jval_t whole = *v;
    whole.start = start;
    whole.end = end;
    scan_at(wh, &whole, &sc);
    char *buf = pw__webhook_alloc(wh, end - start);
    return pw_str(buf, pw_jscan_sanitize(&sc, &whole, buf));
}

int pw__webhook_number(const pw_webhook_t *wh, const pw_jval_t *v, int64_t *i, double *d)
{
    if (v->type != PW_J_NUMBER)
        return -1;
    const char *p = wh->text.base + v->start;
    size_t n = v->end - v->start;
    if (memchr(p, '.', n) == NULL && memchr(p, 'e', n) == NULL && memchr(p, 'E', n) == NULL) {
        /* json-c: an integer, saturated at the ends of int64 (a larger one becomes a uint64 that
           json_object_get_int64 reads as INT64_MAX). */
        int neg = p[0] == '-';
        uint64_t u = 0;
        int big = 0;
        for (size_t k = (size_t)neg; k < n; k++) {
            unsigned digit = (unsigned)(p[k] - '0');
            if (u > (UINT64_MAX - digit) / 10)
                big = 1;
            else
                u = u * 10 + digit;
        }
        if (neg)
            *i = big || u > (uint64_t)INT64_MAX + 1 ? INT64_MIN : u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
        else
            *i = big || u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
        return 1;
    }
    char small[64], *buf = n < sizeof small ? small : PW_XMALLOC(n + 1);
    memcpy(buf, p, n);
    buf[n] = '\0';
    *d = strtod(buf, NULL);
    if (buf != small)
        free(buf);
    return 0;
}

const char *pw__webhook_opt_string(pw_webhook_t *wh, const pw_jval_t *v, pw_str_t *out)
{
    *out = PW_STR_NULL;
    if (v->type == PW_J_NONE)
        return NULL;
    if (v->type != PW_J_STRING)
        return "not a string";
    if (v->end > v->start)
        *out = pw__webhook_str(wh, v);
    return NULL;
}

const char *pw__webhook_req_string(pw_webhook_t *wh, const pw_jval_t *v, pw_str_t *out)
{
    const char *why = pw__webhook_opt_string(wh, v, out);
    if (why == NULL && out->base == NULL)
        why = v->type == PW_J_NONE ? "missing" : "empty";
    return why;
}

pw_str_t pw__webhook_text_at(pw_webhook_t *wh, const pw_jval_t *obj, const char *key)
{
    pw_jval_t v = pw__webhook_member(wh, obj, key);
    return v.type == PW_J_STRING && v.end > v.start ? pw__webhook_str(wh, &v) : PW_STR_NULL;
}

int pw__webhook_unix_time(pw_webhook_t *wh, const pw_jval_t *v, pw_time_us_t *out, char *err, size_t errlen)
{
    int64_t n;
    double d;

    if (v->type == PW_J_STRING) {
        pw_str_t s = pw__webhook_str(wh, v);
        return pw_time_from_unix_text(s.base, s.len, out, err, errlen);
    }
    switch (pw__webhook_number(wh, v, &n, &d)) {
    case 1:
        /* Exact through the double: every value we accept is far below 2^53. */
        if (n <= 0)
            return pw_set_err(err, errlen, PW_ERANGE, "time not after 1970-01-01T00:00:00Z");
        return pw_time_from_unix_double((double)n, out, err, errlen);
    case 0:
        return pw_time_from_unix_double(d, out, err, errlen);
    default:
        return pw_set_err(err, errlen, PW_EINVAL, "not a string or number");
    }
}

/* ---- parsing ---- */

/* Meta: a top-level "entry" array, or the object name Meta documents. AiSensy: topic + data. */
static int sniff_format(const pw_webhook_t *wh, const pw_jval_t *root)
{
    static const char *const KEYS[] = {"entry", "object", "topic", "data"};
    pw_jval_t m[4];
    pw_jscan_t sc;

    pw__webhook_members(wh, root, KEYS, 4, m);
    scan_at(wh, root, &sc);
    if (m[0].type == PW_J_ARRAY || pw_jscan_string_is(&sc, &m[1], "whatsapp_business_account"))
        return PW_FORMAT_META;
    if (m[2].type == PW_J_STRING && m[3].type == PW_J_OBJECT)
        return PW_FORMAT_AISENSY;
    return 0;
}

int pw_webhook_parse(const char *body, size_t len, pw_webhook_t *wh, char *err, size_t errlen)
{
    int rc;

    memset(wh, 0, sizeof(*wh));
    /* A first pass validates everything (syntax, UTF-8, depth) without allocating: the reading
       pass below then never meets an error of syntax, and skips what it does not store, each of
       the first PW_WEBHOOK_SPANS containers in one step (a webhook has a few dozen; a hostile
       payload of more is read as well, its other containers by their brackets). */
    pw_jspan_t spans[PW_WEBHOOK_SPANS];
    size_t n_spans;
    if ((rc = pw_json_validate_spans(body, len, &wh->n_lossy, spans, PW_WEBHOOK_SPANS, &n_spans, err, errlen)) != 0) {
        memset(wh, 0, sizeof(*wh));
        return rc;
    }
    wh->text = pw_str(body, len);
    if (n_spans > 0) {
        /* The arena's first allocation, at the start of a fresh block: aligned as malloc aligns. */
        pw_jspan_t *kept = (pw_jspan_t *)(void *)pw__webhook_alloc(wh, n_spans * sizeof *kept);
        memcpy(kept, spans, n_spans * sizeof *kept);
        wh->spans = kept;
        wh->n_spans = n_spans;
    }
    pw_jscan_t sc;
    pw_jval_t root, whole = {.type = PW_J_NONE, .start = 0, .end = len};
    scan_at(wh, &whole, &sc);
    pw_jscan_value(&sc, &root); /* validated above: only locates the root */
    switch (wh->format = sniff_format(wh, &root)) {
    case PW_FORMAT_META:
        rc = pw__whatsapp_parse(wh, &root, err, errlen);
        break;
    case PW_FORMAT_AISENSY:
        rc = pw__aisensy_parse(wh, &root, err, errlen);
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
    for (struct pw__arena *a = wh->arena, *next; a != NULL; a = next) {
        next = a->next;
        free(a);
    }
    memset(wh, 0, sizeof(*wh));
}

/* ---- building ---- */

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
    pw_str_trim_utf8(wh->reject_reason); /* a cut at the buffer's end must not split a character */
}

pw_str_t pw__webhook_keep_concat(pw_webhook_t *wh, pw_str_t a, pw_str_t b)
{
    char *buf = pw__webhook_alloc(wh, a.len + b.len);
    if (a.len > 0)
        memcpy(buf, a.base, a.len);
    if (b.len > 0)
        memcpy(buf + a.len, b.base, b.len);
    return pw_str(buf, a.len + b.len);
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

pw_str_t pw__webhook_keep_lower(pw_webhook_t *wh, pw_str_t s)
{
    char *buf = pw__webhook_alloc(wh, s.len);
    for (size_t i = 0; i < s.len; i++)
        buf[i] = ascii_lower(s.base[i]);
    return pw_str(buf, s.len);
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
