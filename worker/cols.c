/* Encodes rows as fragments of PostgreSQL arrays, for the executor to join (worker/db.h). */
#include "worker/cols.h"

#include <assert.h>
#include <string.h>

#include "worker/util.h"

void pw_cols_begin(pw_cols_t *c, int ncols, const uint32_t *types)
{
    assert(ncols > 0 && ncols <= PW_COLS_MAX && types != NULL);
    c->ncols = ncols;
    c->types = types;
    c->nrows = 0;
    c->replaced = 0;
    for (int i = 0; i < ncols; i++)
        pw_buf_reset(&c->col[i]);
}

void pw_cols_dispose(pw_cols_t *c)
{
    for (int i = 0; i < PW_COLS_MAX; i++)
        pw_buf_dispose(&c->col[i]);
}

/* Column i, which must be of element type `type`. */
static pw_buf_t *column(pw_cols_t *c, int i, uint32_t type)
{
    assert(i >= 0 && i < c->ncols && c->types[i] == type);
    (void)type;
    return &c->col[i];
}

/*
 * The binary array format: per element a length in network order (-1: NULL), then its bytes.
 * wrote: n bytes were written after b's len (reserved before); they are now b's, with the NUL
 * after them that pw_buf_t keeps.
 */
static void wrote(pw_buf_t *b, size_t n)
{
    b->len += n;
    b->base[b->len] = '\0';
}

static void append_null(pw_buf_t *b)
{
    pw_buf_reserve(b, 4);
    pw_put_be32(b->base + b->len, UINT32_MAX); /* -1 */
    wrote(b, 4);
}

static void append_int64(pw_buf_t *b, int64_t v)
{
    pw_buf_reserve(b, 12);
    char *o = b->base + b->len;
    pw_put_be32(o, 8);
    pw_put_be32(o + 4, (uint32_t)((uint64_t)v >> 32));
    pw_put_be32(o + 8, (uint32_t)v);
    wrote(b, 12);
}

/* An element of prefix (0 or 1 byte: jsonb's version) then s, NUL bytes replaced by U+FFFD. */
static void append_text(pw_cols_t *c, pw_buf_t *b, const char *prefix, size_t np, const char *s, size_t n)
{
    size_t nuls = 0;
    for (const char *p = s, *end = s + n; p < end && (p = memchr(p, '\0', (size_t)(end - p))) != NULL; p++)
        nuls++;
    size_t len = np + n + 2 * nuls;
    assert(len <= INT32_MAX); /* MAX_BODY_BYTES is at most 1 GiB */
    pw_buf_reserve(b, 4 + len);
    char *o = b->base + b->len;
    pw_put_be32(o, (uint32_t)len);
    o += 4;
    memcpy(o, prefix, np);
    o += np;
    if (nuls == 0) {
        memcpy(o, s, n);
    } else {
        for (size_t k = 0; k < n; k++) {
            if (s[k] != '\0') {
                *o++ = s[k];
                continue;
            }
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3;
        }
        c->replaced += nuls;
    }
    wrote(b, 4 + len);
}

void pw_cols_str(pw_cols_t *c, int i, pw_str_t s)
{
    pw_buf_t *b = column(c, i, PW_OID_TEXT);
    if (s.base == NULL)
        append_null(b);
    else
        append_text(c, b, "", 0, s.base, s.len);
}

void pw_cols_cstr(pw_cols_t *c, int i, const char *s)
{
    pw_cols_str(c, i, s != NULL ? pw_str(s, strlen(s)) : PW_STR_NULL);
}

/* PostgreSQL's timestamps count microseconds from 2000-01-01T00:00:00Z. */
#define PG_EPOCH_US INT64_C(946684800000000)

void pw_cols_time(pw_cols_t *c, int i, pw_time_us_t t)
{
    pw_buf_t *b = column(c, i, PW_OID_TIMESTAMPTZ);
    if (t == 0)
        append_null(b);
    else
        append_int64(b, t - PG_EPOCH_US);
}

void pw_cols_jsonb(pw_cols_t *c, int i, pw_str_t json)
{
    pw_buf_t *b = column(c, i, PW_OID_JSONB);
    if (json.base == NULL)
        append_null(b);
    else
        append_text(c, b, "\1", 1, json.base, json.len); /* jsonb's binary form: version 1, then the text */
}

void pw_cols_phone(pw_cols_t *c, int i, pw_str_t raw)
{
    char digits[64];
    size_t n = 0;
    digits[n++] = '+';
    for (size_t k = 0; raw.base != NULL && k < raw.len && n < sizeof digits; k++)
        if (raw.base[k] >= '0' && raw.base[k] <= '9')
            digits[n++] = raw.base[k];
    pw_cols_str(c, i, n > 1 ? pw_str(digits, n) : PW_STR_NULL);
}

void pw_cols_id(pw_cols_t *c, int i, int64_t id)
{
    pw_buf_t *b = column(c, i, PW_OID_INT8);
    if (id == 0)
        append_null(b);
    else
        append_int64(b, id);
}

void pw_cols_bytea(pw_cols_t *c, int i, const void *p, size_t n)
{
    pw_buf_t *b = column(c, i, PW_OID_BYTEA);
    assert(n <= INT32_MAX);
    pw_buf_reserve(b, 4 + n);
    pw_put_be32(b->base + b->len, (uint32_t)n);
    if (n > 0)
        memcpy(b->base + b->len + 4, p, n);
    wrote(b, 4 + n);
}
