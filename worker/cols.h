/* Statement parameters as fragments of PostgreSQL array literals: one per column, one element per row. */
#ifndef PW_COLS_H
#define PW_COLS_H

#include <stdint.h>

#include "proto/pw_str.h"
#include "proto/time.h"
#include "worker/util.h"

#define PW_COLS_MAX 40

/*
 * Many pushes' rows go into one statement as arrays (`unnest($1::text[], ...)`), so a group of
 * pushes costs one round trip. Elements are always double-quoted with '"' and '\' escaped, or
 * the bare word NULL. Text cannot hold NUL bytes: each one becomes U+FFFD and is counted in
 * `replaced`. Buffers are kept between batches to avoid reallocating.
 */
typedef struct {
    pw_buf_t col[PW_COLS_MAX];
    int ncols;
    size_t nrows;
    size_t replaced; /* NUL bytes replaced by U+FFFD */
    pw_buf_t record; /* scratch for pw_cols_record */
} pw_cols_t;

/* Starts ncols empty columns. Each column is then a fragment of an array literal: its elements,
   comma-separated, without the braces (the executor joins fragments: worker/db.h). */
void pw_cols_begin(pw_cols_t *c, int ncols);
/* Frees the buffers. Idempotent. */
void pw_cols_dispose(pw_cols_t *c);

/* Appends one element to column i. s.base == NULL appends NULL. */
void pw_cols_str(pw_cols_t *c, int i, pw_str_t s);
void pw_cols_cstr(pw_cols_t *c, int i, const char *s);
/* A timestamptz element; 0 appends NULL. */
void pw_cols_time(pw_cols_t *c, int i, pw_time_us_t t);
/* A jsonb element from JSON text, written as it is: proto/ gives the value's text as received, with
   what jsonb refuses (\u0000, half a surrogate pair) already replaced (pw_status_t). NULL appends NULL. */
void pw_cols_jsonb(pw_cols_t *c, int i, pw_str_t json);
/* A phone number as '+' followed by its digits; NULL when absent or without digits. */
void pw_cols_phone(pw_cols_t *c, int i, pw_str_t raw);
/* An element of a row type (a composite: the SQL casts the array to `sometype[]`): PostgreSQL's
   record literal "(a,b,...)" of n fields, each text or NULL (base == NULL), quoted as one element. */
void pw_cols_record(pw_cols_t *c, int i, const pw_str_t *fields, int n);
/* A bigint element; 0 appends NULL (ids start at 1). */
void pw_cols_id(pw_cols_t *c, int i, int64_t id);
/* A bytea element in hex form. */
void pw_cols_bytea(pw_cols_t *c, int i, const void *p, size_t n);
/* Counts a row; every column must have received one element. */
static inline void pw_cols_end_row(pw_cols_t *c)
{
    c->nrows++;
}

#endif
