/* Statement parameters as fragments of PostgreSQL arrays: one per column, one element per row. */
#ifndef PW_COLS_H
#define PW_COLS_H

#include <stdint.h>

#include "proto/pw_str.h"
#include "proto/time.h"
#include "worker/util.h"

#define PW_COLS_MAX 48

/* The element types a column may have: PostgreSQL's OIDs of them (fixed in its catalog). */
#define PW_OID_BYTEA 17u
#define PW_OID_INT8 20u
#define PW_OID_TEXT 25u
#define PW_OID_TIMESTAMPTZ 1184u
#define PW_OID_JSONB 3802u

/*
 * Many pushes' rows go into one statement as arrays (`unnest($1::text[], ...)`), so a group of
 * pushes costs one round trip. Each column is sent in PostgreSQL's binary array format: each
 * element is its length (4 bytes, network order; -1 for NULL) and its bytes, so neither side
 * quotes or parses anything (text as it is, a timestamptz as 8 bytes). Text cannot hold NUL
 * bytes: each one becomes U+FFFD and is counted in `replaced`. Buffers are kept between batches
 * to avoid reallocating.
 */
typedef struct {
    pw_buf_t col[PW_COLS_MAX];
    const uint32_t *types; /* ncols element types, borrowed */
    int ncols;
    size_t nrows;
    size_t replaced; /* NUL bytes replaced by U+FFFD */
} pw_cols_t;

/* Starts ncols empty columns of the element types types[0..ncols) (borrowed until the next
   begin). Each column is then a fragment of an array: its elements (the executor joins fragments
   and knows the same types: worker/db.h). */
void pw_cols_begin(pw_cols_t *c, int ncols, const uint32_t *types);
/* Frees the buffers. Idempotent. */
void pw_cols_dispose(pw_cols_t *c);

/* Each appends one element to column i, which must be of the type named (asserted). */
/* text; s.base == NULL appends NULL. */
void pw_cols_str(pw_cols_t *c, int i, pw_str_t s);
void pw_cols_cstr(pw_cols_t *c, int i, const char *s);
/* timestamptz; 0 appends NULL. */
void pw_cols_time(pw_cols_t *c, int i, pw_time_us_t t);
/* jsonb from JSON text, written as it is: proto/ gives the value's text as received, with what
   jsonb refuses (\u0000, half a surrogate pair) already replaced (pw_status_t). NULL appends NULL. */
void pw_cols_jsonb(pw_cols_t *c, int i, pw_str_t json);
/* text: a phone number as '+' followed by its digits; NULL when absent or without digits. */
void pw_cols_phone(pw_cols_t *c, int i, pw_str_t raw);
/* bigint; 0 appends NULL (ids start at 1). */
void pw_cols_id(pw_cols_t *c, int i, int64_t id);
/* bytea. */
void pw_cols_bytea(pw_cols_t *c, int i, const void *p, size_t n);
/* Counts a row; every column must have received one element. */
static inline void pw_cols_end_row(pw_cols_t *c)
{
    c->nrows++;
}

#endif
