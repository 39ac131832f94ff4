/* Encodes rows as fragments of PostgreSQL array literals, for the executor to join (worker/db.h). */
#include "worker/cols.h"

#include <assert.h>
#include <string.h>

#include "worker/util.h"

void pw_cols_begin(pw_cols_t *c, int ncols)
{
    assert(ncols > 0 && ncols <= PW_COLS_MAX);
    c->ncols = ncols;
    c->nrows = 0;
    c->replaced = 0;
    for (int i = 0; i < ncols; i++)
        pw_buf_reset(&c->col[i]);
}

void pw_cols_dispose(pw_cols_t *c)
{
    for (int i = 0; i < PW_COLS_MAX; i++)
        pw_buf_dispose(&c->col[i]);
    pw_buf_dispose(&c->record);
}

static pw_buf_t *next_elem(pw_cols_t *c, int i)
{
    assert(i >= 0 && i < c->ncols);
    pw_buf_t *b = &c->col[i];
    if (b->len > 0)
        pw_buf_appendc(b, ',');
    return b;
}

/* 1 for the bytes an array element cannot hold as they are: '"', '\\' and NUL. */
static const unsigned char QUOTE_STOP[256] = {['"'] = 1, ['\\'] = 1, [0] = 1};

/* Appends s quoted and escaped; NUL bytes become U+FFFD. */
static void append_quoted(pw_cols_t *c, pw_buf_t *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    pw_buf_reserve(b, n + n / 8 + 2);
    pw_buf_appendc(b, '"');
    size_t run = 0;
    for (size_t k = 0; k < n; k++) {
        /* Step over the bytes that need no escape four at a time; each run is copied whole. */
        while (k + 4 <= n && !(QUOTE_STOP[u[k]] | QUOTE_STOP[u[k + 1]] | QUOTE_STOP[u[k + 2]] | QUOTE_STOP[u[k + 3]]))
            k += 4;
        if (k >= n)
            break;
        char ch = s[k];
        if (!QUOTE_STOP[u[k]])
            continue;
        pw_buf_append(b, s + run, k - run);
        if (ch == '\0') {
            pw_buf_append(b, "\xEF\xBF\xBD", 3);
            c->replaced++;
        } else {
            pw_buf_appendc(b, '\\');
            pw_buf_appendc(b, ch);
        }
        run = k + 1;
    }
    pw_buf_append(b, s + run, n - run);
    pw_buf_appendc(b, '"');
}

void pw_cols_str(pw_cols_t *c, int i, pw_str_t s)
{
    pw_buf_t *b = next_elem(c, i);
    if (s.base == NULL)
        pw_buf_append(b, "NULL", 4);
    else
        append_quoted(c, b, s.base, s.len);
}

void pw_cols_cstr(pw_cols_t *c, int i, const char *s)
{
    pw_cols_str(c, i, s != NULL ? pw_str(s, strlen(s)) : PW_STR_NULL);
}

void pw_cols_time(pw_cols_t *c, int i, pw_time_us_t t)
{
    if (t == 0) {
        pw_cols_str(c, i, PW_STR_NULL);
        return;
    }
    char text[30];
    pw_time_format_pg(t, text);
    pw_cols_str(c, i, pw_str(text, strlen(text)));
}

void pw_cols_jsonb(pw_cols_t *c, int i, pw_str_t json)
{
    pw_cols_str(c, i, json);
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

void pw_cols_record(pw_cols_t *c, int i, const pw_str_t *fields, int n)
{
    /* The record literal first: a field in double quotes with '"' and '\\' escaped, nothing
       between two commas for NULL. Then that text as an array element (escaped again, NUL bytes
       replaced there). */
    pw_buf_t *r = &c->record;
    pw_buf_reset(r);
    pw_buf_appendc(r, '(');
    for (int k = 0; k < n; k++) {
        if (k > 0)
            pw_buf_appendc(r, ',');
        if (fields[k].base == NULL)
            continue;
        pw_buf_reserve(r, fields[k].len + 2);
        pw_buf_appendc(r, '"');
        for (size_t j = 0; j < fields[k].len; j++) {
            char ch = fields[k].base[j];
            if (ch == '"' || ch == '\\')
                pw_buf_appendc(r, '\\');
            pw_buf_appendc(r, ch);
        }
        pw_buf_appendc(r, '"');
    }
    pw_buf_appendc(r, ')');
    append_quoted(c, next_elem(c, i), r->base, r->len);
}

void pw_cols_bytea(pw_cols_t *c, int i, const void *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    pw_buf_t *b = next_elem(c, i);
    pw_buf_reserve(b, 2 * n + 6);
    /* In an array literal the element text \x... needs its backslash escaped. */
    pw_buf_append(b, "\"\\\\x", 4);
    const unsigned char *u = p;
    char *o = b->base + b->len;
    for (size_t k = 0; k < n; k++) {
        *o++ = hex[u[k] >> 4];
        *o++ = hex[u[k] & 15];
    }
    b->len += 2 * n;
    pw_buf_appendc(b, '"');
}

void pw_cols_id(pw_cols_t *c, int i, int64_t id)
{
    pw_buf_t *b = next_elem(c, i);
    if (id == 0)
        pw_buf_append(b, "NULL", 4);
    else
        pw_buf_appendf(b, "%lld", (long long)id);
}
