/* A strict, allocation-free JSON scanner: validates in one pass and reports where values are, without building a tree. */
#ifndef PW_JSCAN_H
#define PW_JSCAN_H

#include <stddef.h>

#include "pw_str.h"

/*
 * For the documents of a push (the Pub/Sub envelope, the webhook payload): json-c builds a tree
 * of hashed objects, which costs far more than reading the few members we need (and a hundred
 * times its size for a hostile payload of empty objects). The grammar is RFC 8259's:
 * no comments, no single quotes, no NaN, no trailing commas, strings without raw control
 * characters, \u escapes with proper surrogate pairs (or, with lone_surrogates_ok, halves that
 * read as U+FFFD), nesting up to a limit. UTF-8 validity is the caller's check
 * (pw_json_utf8_invalid_at), done once over the whole input; pw_json_validate does both.
 */

/*
 * Where a container is: recorded by a validating read (pw_json_validate_spans), in the order of
 * the containers' opening brackets, so that a trusted read of the same text steps over one in a
 * lookup instead of walking its brackets again. The webhook reader steps over the same
 * containers many times (each object is read once per lookup of its members, the root once per
 * level below it): walking them was a third of the worker's instructions per push.
 */
typedef struct {
    size_t start;   /* the opening bracket's offset */
    size_t end;     /* just past the closing bracket */
    size_t n_lossy; /* strings and keys inside that hold a lossy escape */
} pw_jspan_t;

/* Deepest JSON nesting accepted anywhere in a push (envelope or payload). */
#define PW_JSON_MAX_DEPTH 64

/**
 * Validates exactly len bytes as one strict JSON value without building anything: not blank,
 * valid UTF-8, RFC 8259 grammar, nesting <= PW_JSON_MAX_DEPTH, nothing but whitespace after the
 * value. Returns 0, PW_EINVAL ("invalid JSON at offset 12: unexpected character", "nesting too
 * deep (over 64 levels)", "empty JSON input", "invalid JSON at offset 3: invalid UTF-8") or
 * PW_ETOOBIG (len over INT_MAX). Unpaired surrogate escapes are accepted; *n_lossy (when not
 * NULL) counts the strings and keys holding one or a \u0000, which PostgreSQL cannot store as
 * they are. No allocation; thread-safe.
 */
int pw_json_validate(const char *s, size_t len, size_t *n_lossy, char *err, size_t errlen);

/*
 * pw_json_validate, which also records the spans of the first cap containers (by their opening
 * brackets' order) into spans, and their number into *n_spans (0 on an error). A trusted scanner
 * given them (sc->spans, sc->n_spans) reads exactly as without them, only faster.
 */
int pw_json_validate_spans(const char *s, size_t len, size_t *n_lossy, pw_jspan_t *spans, size_t cap, size_t *n_spans,
                           char *err, size_t errlen);

/* The offset of the first byte that is not well-formed UTF-8 (no overlongs, no surrogates, nothing
   above U+10FFFF), or len when all of s is. */
size_t pw_json_utf8_invalid_at(const char *s, size_t len);

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

/*
 * Where a value is: for a string, the bytes between the quotes (escaped = 1 when they hold a
 * backslash); for the others, the value's whole text. lossy = 1 when the value (a string, or any
 * string or key inside a container) holds an escape that PostgreSQL cannot store: \u0000, or a
 * surrogate escape without its other half (accepted only with lone_surrogates_ok).
 */
typedef struct {
    pw_jtype_t type;
    size_t start, end;
    int escaped;
    int lossy;
} pw_jval_t;

typedef struct {
    const char *s;
    size_t len;
    size_t i;       /* the read position */
    int depth;
    int max_depth;
    int lone_surrogates_ok; /* accept a \\u escape of half a surrogate pair (unescaped as U+FFFD) */
    size_t n_lossy;         /* strings (keys included) read so far that hold a lossy escape */
    /* The text was validated (pw_json_validate, same lone_surrogates_ok): pw_jscan_value steps
       over an object or array by its brackets alone, without validating it again. Extents,
       lossy flags and n_lossy come out as a validating read gives them. */
    int trusted;
    /* Trusted reads: the containers whose span is known (sorted by start; any may be missing). */
    const pw_jspan_t *spans;
    size_t n_spans;
    /* Validating reads: where each container read is recorded while n_recorded < record_cap. */
    pw_jspan_t *record;
    size_t n_recorded, record_cap;
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

/*
 * Iterates an array the same way: *first = 1 before the '['. Returns 1 with the next element read
 * (and validated) into *elem, 0 after the closing ']', -1 on error.
 */
int pw_jscan_array_next(pw_jscan_t *sc, int *first, pw_jval_t *elem);

/* Checks that only whitespace is left; -1 (with sc->why) otherwise. */
int pw_jscan_end(pw_jscan_t *sc);

/* The type of the value at the read position, without consuming it (PW_J_NONE at the end). */
pw_jtype_t pw_jscan_peek(pw_jscan_t *sc);

/* 1 when the string value v equals lit once unescaped. */
int pw_jscan_string_is(const pw_jscan_t *sc, const pw_jval_t *v, const char *lit);

/*
 * Unescapes string v into out (which must hold v->end - v->start bytes); returns the length
 * written. \u0000 gives a NUL byte; half a surrogate pair gives U+FFFD.
 */
size_t pw_jscan_unescape(const pw_jscan_t *sc, const pw_jval_t *v, char *out);

/*
 * Copies the text of value v (already scanned) into out (v->end - v->start bytes: the copy has
 * exactly that length) with every lossy escape (\u0000, half a surrogate pair) replaced by
 * \ufffd, so that PostgreSQL's jsonb accepts it. Returns the length.
 */
size_t pw_jscan_sanitize(const pw_jscan_t *sc, const pw_jval_t *v, char *out);

#endif
