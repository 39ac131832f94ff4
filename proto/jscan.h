/* A strict, allocation-free JSON scanner: validates in one pass and reports where values are, without building a tree. */
#ifndef PW_JSCAN_H
#define PW_JSCAN_H

#include <stddef.h>

#include "pw_str.h"

/*
 * For the hot, fixed-shape documents (the Pub/Sub envelope): json-c builds a tree of hashed
 * objects, which costs far more than reading the few members we need. The grammar is RFC 8259's:
 * no comments, no single quotes, no NaN, no trailing commas, strings without raw control
 * characters, \u escapes with proper surrogate pairs, nesting up to a limit. UTF-8 validity is
 * the caller's check (pw_json_utf8_invalid_at), done once over the whole input.
 */

typedef enum {
    PW_J_NONE = 0, /* absent */
    PW_J_OBJECT,
    PW_J_ARRAY,
    PW_J_STRING,
    PW_J_NUMBER,
    PW_J_TRUE,
    PW_J_FALSE,
    PW_J_NULL,
} pw_jtype_t;

/* Where a value is: for a string, the bytes between the quotes (escaped = 1 when they hold a backslash). */
typedef struct {
    pw_jtype_t type;
    size_t start, end;
    int escaped;
} pw_jval_t;

typedef struct {
    const char *s;
    size_t len;
    size_t i;       /* the read position */
    int depth;
    int max_depth;
    int lone_surrogates_ok; /* accept a \\u escape of half a surrogate pair (json-c makes it U+FFFD) */
    const char *why; /* the first error: "unexpected character", "unexpected end of data", ... */
    size_t at;       /* and its offset */
} pw_jscan_t;

void pw_jscan_init(pw_jscan_t *sc, const char *s, size_t len, int max_depth);

/* Reads (and fully validates) the next value; -1 on a syntax error (sc->why, sc->at). */
int pw_jscan_value(pw_jscan_t *sc, pw_jval_t *out);

/*
 * Iterates an object: call with *first = 1 when positioned before the '{'. Returns 1 with the
 * key (a string pw_jval_t) when a member follows (the scanner is then at its value: read it with
 * pw_jscan_value or walk into it with pw_jscan_object_next), 0 after the closing '}', -1 on error.
 */
int pw_jscan_object_next(pw_jscan_t *sc, int *first, pw_jval_t *key);

/* Checks that only whitespace is left; -1 (with sc->why) otherwise. */
int pw_jscan_end(pw_jscan_t *sc);

/* The type of the value at the read position, without consuming it (PW_J_NONE at the end). */
pw_jtype_t pw_jscan_peek(pw_jscan_t *sc);

/* 1 when the string value v equals lit once unescaped. */
int pw_jscan_string_is(const pw_jscan_t *sc, const pw_jval_t *v, const char *lit);

/* Unescapes string v into out (which must hold v->end - v->start bytes); returns the length written. */
size_t pw_jscan_unescape(const pw_jscan_t *sc, const pw_jval_t *v, char *out);

#endif
